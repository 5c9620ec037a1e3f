//! Every compose file of the corpora (awesome-compose, a dozen real self-hosted apps) loads
//! and normalises; the variables they require are set here, as their READMEs ask.

use std::collections::BTreeMap;
use std::path::Path;

use atoll_compose::load::{Options, load};
use atoll_compose::model::normalise;

#[test]
fn every_corpus_file_normalises() {
    let files = atoll_testkit::compose_corpus();
    assert!(files.len() >= 51, "{} files", files.len());
    let environ: BTreeMap<String, String> =
        [("DOMAIN", "example.org"), ("DATABASE_PASSWORD", "pw"), ("DATABASE_ROOT_PASSWORD", "rootpw"), ("HOME", "/root")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let read = |p: &Path| {
        if p == Path::new("/pds/pds.env") {
            return Ok(String::new());
        }
        std::fs::read_to_string(p)
    };
    let mut failures = Vec::new();
    for f in &files {
        let opts =
            Options { files: vec![f.clone()], workdir: f.parent().unwrap().to_owned(), environ: environ.clone(), ..Default::default() };
        let r = load(&opts, &read).map_err(|e| format!("{e:#?}")).and_then(|l| normalise(&l, &read).map_err(|e| format!("{e:#?}")));
        match r {
            Ok(p) => {
                let has_build = p.config["services"].as_object().unwrap().values().any(|s| s.get("build").is_some());
                if has_build {
                    assert!(p.warnings.iter().any(|w| w.contains("`build`")), "{}: no build warning", f.display());
                }
            }
            Err(e) => failures.push(format!("{}: {e}", f.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
