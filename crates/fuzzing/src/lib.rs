//! One function per parser of outside input, each of which must never panic, whatever the
//! bytes, and must keep its promises (a layer never writes outside its directory). `fuzz/`
//! drives them with libFuzzer; `tests/regressions.rs` replays `fuzz/regressions/<target>/*`.
#![forbid(unsafe_code)]

use std::path::Path;

mod dns;
pub use dns::dns_message;

/// A target: bytes in, panics on a broken promise.
pub type Target = fn(&[u8]);

/// The targets, by name (as in `fuzz/fuzz_targets/` and `fuzz/regressions/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("reference", reference),
    ("manifest", manifest),
    ("image_config", image_config),
    ("tar_layer", tar_layer),
    ("compose", compose),
    ("api_bodies", api_bodies),
    ("dns_message", dns_message),
];

/// Image references as users and registries write them.
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(r) = s.parse::<atoll_image::Reference>() {
        // What parses prints back to something that parses to the same reference.
        let again: atoll_image::Reference = r.to_string().parse().expect("a printed reference parses");
        assert_eq!(again, r);
        let _ = (r.familiar_name(), r.manifest_ref(), r.api_host());
    }
}

/// Manifests and indexes, under each media type a registry may claim.
pub fn manifest(data: &[u8]) {
    let digest = atoll_image::Digest::of(data);
    for mt in [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "text/plain",
    ] {
        match atoll_image::manifest::parse_document(data, mt, &digest) {
            Ok(atoll_image::manifest::Document::Index(i)) => {
                let _ = atoll_image::manifest::pick_platform(&i, &atoll_image::Platform::host(), &digest);
            }
            Ok(atoll_image::manifest::Document::Manifest(m)) => {
                let _ = atoll_image::manifest::manifest_info(&m);
            }
            Err(_) => {}
        }
    }
}

/// Image configurations.
pub fn image_config(data: &[u8]) {
    let digest = atoll_image::Digest::of(data);
    if let Ok(c) = atoll_image::manifest::parse_config(data, &digest) {
        for layers in [0, 1, 3] {
            let _ = atoll_image::manifest::diff_ids(&c, &digest, layers);
        }
    }
}

/// Tar layers against the containment rules: whatever the archive, nothing appears outside
/// the layer's directory.
pub fn tar_layer(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(outside.join("canary"), b"untouched").expect("canary");
    let _ = atoll_image::unpack::unpack_layer(data, &root);
    let beside: Vec<_> = std::fs::read_dir(dir.path()).expect("read").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(beside.len(), 2, "the layer wrote beside its root: {beside:?}");
    let names: Vec<_> = std::fs::read_dir(&outside).expect("read").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names, ["canary"], "the layer wrote outside its root");
    assert_eq!(std::fs::read(outside.join("canary")).expect("canary"), b"untouched");
}

/// Compose files: loaded, normalised and planned, with an env file beside them; what `config`
/// prints of them loads again as the same project.
pub fn compose(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let read = |p: &Path| match p.to_str() {
        Some("/p/app/compose.yaml") => Ok(text.to_owned()),
        Some("/p/app/.env") => Ok("A=1\nB=two words\n".to_owned()),
        _ => Err(std::io::ErrorKind::NotFound.into()),
    };
    let opts = atoll_compose::load::Options { workdir: "/p/app".into(), ..Default::default() };
    let Ok(loaded) = atoll_compose::load::load(&opts, &read) else { return };
    let Ok(project) = atoll_compose::model::normalise(&loaded, &read) else { return };
    // What `config` prints loads again as the same project.
    let printed = atoll_compose::yaml::emit(&atoll_compose::model::printable(&project.config));
    let reread = |p: &Path| match p.to_str() {
        Some("/p/app/compose.yaml") => Ok(printed.clone()),
        _ => read(p),
    };
    let again = atoll_compose::load::load(&opts, &reread)
        .map_err(|e| e.to_string())
        .and_then(|l| atoll_compose::model::normalise(&l, &reread).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| panic!("config output does not load: {e}\n{printed}"));
    assert_eq!(again.config, project.config, "config output loads as another project:\n{printed}");
    let _ = atoll_compose::plan::desired(&project);
}

/// API request bodies: the container and network specs (the API's structured bodies; the
/// others are a string or two, and the HTTP fuzzer covers them against the live daemon), and
/// the parsers behind the CLI's flags.
pub fn api_bodies(data: &[u8]) {
    if let Ok(spec) = serde_json::from_slice::<atoll_spec::ContainerSpec>(data) {
        let _ = spec.validate();
    }
    if let Ok(spec) = serde_json::from_slice::<atoll_spec::NetworkSpec>(data) {
        let _ = spec.validate();
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = atoll_spec::network::parse_publish(s);
        let _ = atoll_spec::network::parse_expose(s);
        let _ = atoll_spec::Mount::parse_volume(s);
        let _ = atoll_spec::Mount::parse_tmpfs(s);
        let _ = atoll_spec::units::parse_duration(s);
        let _ = atoll_spec::units::parse_size(s);
        let _ = atoll_spec::units::parse_cpus(s);
        let _ = s.parse::<atoll_spec::RestartPolicy>();
        let _ = atoll_spec::container::parse_signal(s);
        let _ = atoll_compose::interpolate::interpolate(s, &|k| (k.len() % 2 == 0).then(|| k.to_owned()));
        let _ = atoll_compose::dotenv::parse(s, &|_| None);
    }
}
