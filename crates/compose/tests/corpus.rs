//! Every compose file of the corpora (awesome-compose, a dozen real self-hosted apps) loads
//! and normalises; the variables they require are set here, as their READMEs ask.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use atoll_compose::load::{Options, load};
use atoll_compose::model::normalise;

fn compose_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            compose_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(p);
        }
    }
}

#[test]
fn every_corpus_file_normalises() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files = Vec::new();
    compose_files(&root, &mut files);
    files.sort();
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
