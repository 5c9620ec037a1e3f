//! Every compose file of the corpora (awesome-compose, a dozen real self-hosted apps) loads
//! and normalises, and what `config` prints of it (YAML and JSON) loads again as the same
//! project; the variables they require are set here, as their READMEs ask.

use std::collections::BTreeMap;
use std::path::Path;

use atoll_compose::load::{Options, load};
use atoll_compose::model::{Project, normalise, printable};

fn environ() -> BTreeMap<String, String> {
    [("DOMAIN", "example.org"), ("DATABASE_PASSWORD", "pw"), ("DATABASE_ROOT_PASSWORD", "rootpw"), ("HOME", "/root")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn read(p: &Path) -> std::io::Result<String> {
    if p == Path::new("/pds/pds.env") {
        return Ok(String::new());
    }
    std::fs::read_to_string(p)
}

fn load_file(f: &Path, read: &dyn Fn(&Path) -> std::io::Result<String>) -> Result<Project, String> {
    let opts = Options { files: vec![f.to_owned()], workdir: f.parent().unwrap().to_owned(), environ: environ(), ..Default::default() };
    load(&opts, read).map_err(|e| format!("{e:#?}")).and_then(|l| normalise(&l, read).map_err(|e| format!("{e:#?}")))
}

/// load → config (YAML, then JSON) → load gives the same normalised project: the printed
/// file stands where the original did, with the original's .env and neighbours around it.
#[test]
fn config_output_of_every_corpus_file_loads_as_the_same_project() {
    let files = atoll_testkit::compose_corpus();
    let mut failures = Vec::new();
    for f in &files {
        let first = load_file(f, &read).unwrap();
        let printed = printable(&first.config);
        for (format, text) in [("yaml", atoll_compose::yaml::emit(&printed)), ("json", serde_json::to_string_pretty(&printed).unwrap())] {
            let printed_read = |p: &Path| if p == f.as_path() { Ok(text.clone()) } else { read(p) };
            match load_file(f, &printed_read) {
                Ok(again) if again.config == first.config => {}
                Ok(again) => failures.push(format!("{} ({format}): differs:\n{}\n---\n{}", f.display(), first.config, again.config)),
                Err(e) => failures.push(format!("{} ({format}): {e}\n{text}", f.display())),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_corpus_file_normalises() {
    let files = atoll_testkit::compose_corpus();
    assert!(files.len() >= 51, "{} files", files.len());
    let mut failures = Vec::new();
    for f in &files {
        match load_file(f, &read) {
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
