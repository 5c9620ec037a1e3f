//! `mkimage`: writes OCI image layouts for the demo and the benchmarks.
//!
//! ```text
//! mkimage busybox OUT_DIR TAG                 busybox-static as a one-layer image
//! mkimage bulk OUT_DIR TAG LAYERS MIB_PER_LAYER   generated files, gzip, for pull benchmarks
//! mkimage app [NAME...]                       Debian-built application images (postgres, redis,
//!                                             nginx, notes; all by default), cached: prints each
//!                                             one's layout directory (tag `latest`)
//! ```

use std::path::PathBuf;

use atoll_testkit::apps::{self, App};
use atoll_testkit::oci::{Compression, Image, LayerBuilder, generated_layer, write_layout};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: mkimage busybox OUT TAG | mkimage bulk OUT TAG LAYERS MIB_PER_LAYER | mkimage app [postgres|redis|nginx|notes...]";
    if args.first().map(String::as_str) == Some("app") {
        let apps: Vec<App> = if args.len() == 1 {
            App::ALL.to_vec()
        } else {
            args[1..].iter().map(|n| App::from_name(n).unwrap_or_else(|| panic!("no such app: {n}\n{usage}"))).collect()
        };
        let (built, resolve_secs) = apps::ensure(&apps);
        eprintln!("{resolve_secs:.1} s to ask the mirror for the package versions");
        for b in built {
            let how = if b.built { format!("built in {:.1} s", b.build_secs) } else { "cached".to_owned() };
            eprintln!("{}: {how}; {} MiB unpacked, {} MiB stored", b.app.name(), b.tar_bytes >> 20, b.blob_bytes >> 20);
            println!("{}", b.layout.display());
        }
        return;
    }
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
