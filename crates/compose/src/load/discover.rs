//! Where a project's files are and which env files set its variables, as docker compose
//! (compose-go's `cli` options) decides: `-f`, `$COMPOSE_FILE`, discovery upwards with the
//! override file, `-f -`, `--project-directory`, `.env`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{LoadError, Options, ReadFn, lexical_join};

/// The file names `compose` looks for, in compose-go's order.
pub const DISCOVERY: &[&str] = &["compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml"];
/// The override file merged over the one found (whichever of these exists first).
pub const OVERRIDES: &[&str] =
    &["compose.override.yml", "compose.override.yaml", "docker-compose.override.yml", "docker-compose.override.yaml"];
/// The `-f` name of standard input.
pub const STDIN: &str = "-";
/// Where the files are, as docker compose finds them (compose-go's `cli` options): `-f`
/// files, else `$COMPOSE_FILE` split by `$COMPOSE_PATH_SEPARATOR` (`:`), else the first of
/// [`DISCOVERY`] in the working directory or the nearest parent that has one, with the first
/// of [`OVERRIDES`] beside it. `-f -` is standard input (the read function's `-`).
pub(super) fn find_files(
    opts: &Options,
    start: &Path,
    env: &BTreeMap<String, String>,
    read: ReadFn<'_>,
) -> Result<(Vec<PathBuf>, Vec<String>), LoadError> {
    let abs = |f: &Path| if f == Path::new(STDIN) { f.to_owned() } else { lexical_join(&opts.workdir, &f.to_string_lossy()) };
    if !opts.files.is_empty() {
        return Ok((opts.files.iter().map(|f| abs(f)).collect(), Vec::new()));
    }
    if let Some(list) = env.get("COMPOSE_FILE").filter(|f| !f.is_empty()) {
        let sep = env.get("COMPOSE_PATH_SEPARATOR").filter(|s| !s.is_empty()).map_or(":", String::as_str);
        return Ok((list.split(sep).map(|f| abs(Path::new(f))).collect(), Vec::new()));
    }
    let exists = |p: &PathBuf| read(p).is_ok();
    let mut warnings = Vec::new();
    let mut dir = start.to_owned();
    loop {
        let found: Vec<PathBuf> = DISCOVERY.iter().map(|n| dir.join(n)).filter(exists).collect();
        if let Some(first) = found.first() {
            let mut files = vec![first.clone()];
            if found.len() > 1 {
                warnings.push(format!("found multiple config files with supported names: {}; using {}", join(&found), first.display()));
            }
            let overrides: Vec<PathBuf> = OVERRIDES.iter().map(|n| dir.join(n)).filter(exists).collect();
            if let Some(o) = overrides.first() {
                if overrides.len() > 1 {
                    warnings.push(format!(
                        "found multiple override files with supported names: {}; using {}",
                        join(&overrides),
                        o.display()
                    ));
                }
                files.push(o.clone());
            }
            return Ok((files, warnings));
        }
        if !dir.pop() {
            return Err(LoadError::NotFound { dir: start.to_owned() });
        }
    }
}

fn join(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// The project directory: `--project-directory`, else the first file's directory (not
/// stdin's), else the working directory.
pub(super) fn project_dir(opts: &Options, files: &[PathBuf]) -> PathBuf {
    if let Some(d) = &opts.project_directory {
        return lexical_join(&opts.workdir, &d.to_string_lossy());
    }
    files
        .iter()
        .find(|f| f.as_path() != Path::new(STDIN))
        .map(|f| lexical_join(&opts.workdir, &f.to_string_lossy()).parent().unwrap_or(Path::new("/")).to_owned())
        .unwrap_or_else(|| opts.workdir.clone())
}

/// Adds the variables of the env files (`--env-file`, else `<dir>/.env` unless
/// `COMPOSE_DISABLE_ENV_FILE` is true) that `env` does not set yet.
pub(super) fn add_env_files(opts: &Options, dir: &Path, env: &mut BTreeMap<String, String>, read: ReadFn<'_>) -> Result<(), LoadError> {
    let files: Vec<PathBuf> = if !opts.env_files.is_empty() {
        opts.env_files.iter().map(|f| lexical_join(&opts.workdir, &f.to_string_lossy())).collect()
    } else if opts.environ.get("COMPOSE_DISABLE_ENV_FILE").is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
    {
        Vec::new()
    } else {
        let dotenv = dir.join(".env");
        if read(&dotenv).is_ok() { vec![dotenv] } else { vec![] }
    };
    let mut found = BTreeMap::new();
    for f in &files {
        let text = read(f).map_err(|source| LoadError::Read { path: f.clone(), source })?;
        let lookup = |k: &str| env.get(k).cloned().or_else(|| found.get(k).cloned());
        let pairs = crate::dotenv::parse(&text, &lookup).map_err(|source| LoadError::Dotenv { path: f.clone(), source })?;
        found.extend(pairs);
    }
    for (k, v) in found {
        env.entry(k).or_insert(v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fs, opts};
    use super::super::{Loaded, Options, load};

    fn files_of(l: &Loaded) -> Vec<&str> {
        l.files.iter().map(|f| f.to_str().unwrap()).collect()
    }

    /// With no -f, docker compose merges the override file found beside the compose file.
    #[test]
    fn discovery_merges_the_override_file() {
        let read = fs(&[
            ("/p/app/compose.yaml", "services:\n  web: {image: a, ports: ['80:80']}\n"),
            ("/p/app/compose.override.yaml", "services:\n  web: {image: b}\n"),
        ]);
        let l = load(&opts(&[]), &read).unwrap();
        assert_eq!(files_of(&l), ["/p/app/compose.yaml", "/p/app/compose.override.yaml"]);
        assert_eq!(l.doc.to_json()["services"]["web"], serde_json::json!({"image":"b","ports":["80:80"]}));
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        // Named with -f, only the files named are read.
        assert_eq!(files_of(&load(&opts(&["compose.yaml"]), &read).unwrap()), ["/p/app/compose.yaml"]);

        let read = fs(&[
            ("/p/app/docker-compose.yml", "services:\n  web: {image: a}\n"),
            ("/p/app/docker-compose.override.yml", "services:\n  web: {image: b}\n"),
        ]);
        assert_eq!(files_of(&load(&opts(&[]), &read).unwrap()), ["/p/app/docker-compose.yml", "/p/app/docker-compose.override.yml"]);
    }

    /// compose-go's order (`docker-compose.yml` before `.yaml`), and a warning naming them
    /// when several exist.
    #[test]
    fn discovery_takes_the_first_name_and_warns_about_the_others() {
        let read = fs(&[
            ("/p/app/docker-compose.yaml", "services: {}\n"),
            ("/p/app/docker-compose.yml", "services: {}\n"),
            ("/p/app/compose.override.yml", "services: {}\n"),
            ("/p/app/docker-compose.override.yaml", "services: {}\n"),
        ]);
        let l = load(&opts(&[]), &read).unwrap();
        assert_eq!(files_of(&l), ["/p/app/docker-compose.yml", "/p/app/compose.override.yml"]);
        assert_eq!(
            l.warnings,
            [
                "found multiple config files with supported names: /p/app/docker-compose.yml, /p/app/docker-compose.yaml; using /p/app/docker-compose.yml",
                "found multiple override files with supported names: /p/app/compose.override.yml, /p/app/docker-compose.override.yaml; using /p/app/compose.override.yml",
            ]
        );
    }

    #[test]
    fn discovery_climbs_to_the_nearest_parent_with_a_compose_file() {
        let read = fs(&[
            ("/p/compose.yaml", "services:\n  far: {image: x}\n"),
            ("/p/app/compose.yml", "services:\n  web: {image: \"x:${TAG}\", volumes: ['./data:/data']}\n"),
            ("/p/app/.env", "TAG=7\n"),
        ]);
        let mut o = opts(&[]);
        o.workdir = "/p/app/src/deep".into();
        let l = load(&o, &read).unwrap();
        assert_eq!(files_of(&l), ["/p/app/compose.yml"]);
        assert_eq!((l.name.as_str(), l.dir.to_str().unwrap()), ("app", "/p/app"));
        let web = l.doc.to_json()["services"]["web"].clone();
        assert_eq!(web, serde_json::json!({"image":"x:7","volumes":["/p/app/data:/data"]}));
        o.workdir = "/q".into();
        let e = load(&o, &read).unwrap_err();
        assert!(e.to_string().starts_with("no compose file in /q or its parents: looked for compose.yaml"), "{e}");
    }

    #[test]
    fn compose_file_lists_files_with_its_separator_even_from_dotenv() {
        let read = fs(&[
            ("/p/app/a.yaml", "services:\n  web: {image: a}\n"),
            ("/p/app/conf/b.yaml", "services:\n  web: {image: b}\n"),
            ("/p/app/compose.yaml", "services:\n  web: {image: default}\n"),
        ]);
        let mut o = opts(&[]);
        o.environ.insert("COMPOSE_FILE".into(), "a.yaml:conf/b.yaml".into());
        let l = load(&o, &read).unwrap();
        assert_eq!(files_of(&l), ["/p/app/a.yaml", "/p/app/conf/b.yaml"]);
        assert_eq!(l.doc.to_json()["services"]["web"]["image"], "b");
        o.environ.insert("COMPOSE_FILE".into(), "a.yaml;/p/app/conf/b.yaml".into());
        o.environ.insert("COMPOSE_PATH_SEPARATOR".into(), ";".into());
        assert_eq!(files_of(&load(&o, &read).unwrap()), ["/p/app/a.yaml", "/p/app/conf/b.yaml"]);
        // -f wins over COMPOSE_FILE.
        assert_eq!(files_of(&load(&Options { files: vec!["compose.yaml".into()], ..o }, &read).unwrap()), ["/p/app/compose.yaml"]);
        // The working directory's .env may set it.
        let read = fs(&[("/p/app/.env", "COMPOSE_FILE=a.yaml\n"), ("/p/app/a.yaml", "services:\n  web: {image: a}\n")]);
        assert_eq!(files_of(&load(&opts(&[]), &read).unwrap()), ["/p/app/a.yaml"]);
    }

    #[test]
    fn stdin_and_the_project_directory() {
        let read = fs(&[("-", "services:\n  web: {image: a, env_file: web.env}\n"), ("/p/app/compose.yaml", "services: {}\n")]);
        let l = load(&opts(&["-"]), &read).unwrap();
        assert_eq!((files_of(&l), l.dir.to_str().unwrap(), l.name.as_str()), (vec!["-"], "/p/app", "app"));
        assert_eq!(l.doc.to_json()["services"]["web"]["env_file"], "/p/app/web.env");
        let mut o = opts(&["-"]);
        o.project_directory = Some("../other".into());
        let l = load(&o, &read).unwrap();
        assert_eq!((l.dir.to_str().unwrap(), l.name.as_str()), ("/p/other", "other"));
        assert_eq!(l.doc.to_json()["services"]["web"]["env_file"], "/p/other/web.env");
        // Discovery starts in the project directory; its .env is read.
        let read = fs(&[("/srv/x/compose.yaml", "services:\n  web: {image: \"a:${T}\"}\n"), ("/srv/x/.env", "T=1\n")]);
        let mut o = opts(&[]);
        o.project_directory = Some("/srv/x".into());
        let l = load(&o, &read).unwrap();
        assert_eq!((files_of(&l), l.doc.to_json()["services"]["web"]["image"].as_str()), (vec!["/srv/x/compose.yaml"], Some("a:1")));
    }
}
