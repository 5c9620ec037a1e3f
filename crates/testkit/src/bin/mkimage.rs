//! `mkimage`: writes OCI image layouts for the demo and the benchmarks.
//!
//! ```text
//! mkimage busybox OUT_DIR TAG                 busybox-static as a one-layer image
//! mkimage bulk OUT_DIR TAG LAYERS MIB_PER_LAYER   generated files, gzip, for pull benchmarks
//! ```

use std::path::PathBuf;

use atoll_testkit::oci::{Compression, Image, LayerBuilder, generated_layer, write_layout};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: mkimage busybox OUT TAG | mkimage bulk OUT TAG LAYERS MIB_PER_LAYER";
    let digest = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["busybox", out, tag] => {
            let layer = LayerBuilder::new().busybox().build(Compression::Gzip);
            write_layout(&PathBuf::from(out), tag, &Image::new(vec![layer]).cmd(&["/bin/sh", "-c", "echo hello from busybox on atoll"]))
        }
        ["bulk", out, tag, layers, mib] => {
            let layers: u64 = layers.parse().expect(usage);
            let mib: usize = mib.parse().expect(usage);
            let ls = (0..layers).map(|i| generated_layer(i + 1, mib << 20, 16, Compression::Gzip)).collect();
            write_layout(&PathBuf::from(out), tag, &Image::new(ls))
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    println!("{digest}");
}
