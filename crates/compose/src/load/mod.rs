//! From `-f` files (or discovery) to one merged, interpolated, validated document: reads the
//! `.env` file, parses and interpolates each file, resolves relative paths against the file's
//! project directory, checks each against the schema, expands `include`, merges the files in
//! order, resolves `extends`, applies profiles and settles the project name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod discover;

pub use discover::{DISCOVERY, OVERRIDES, STDIN};
use discover::{add_env_files, find_files, project_dir};

use crate::interpolate::{InterpolateError, interpolate};
use crate::merge::{merge_documents, merge_services, strip_resets};
use crate::yaml::{Node, Value, YamlError};

const MAX_INCLUDE_DEPTH: usize = 16;

/// Reads a file; the CLI passes `std::fs::read_to_string`, tests a map.
pub type ReadFn<'a> = &'a dyn Fn(&Path) -> std::io::Result<String>;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `-f` files, relative to `workdir` unless absolute (`-` is standard input); empty
    /// means `$COMPOSE_FILE` or discovery.
    pub files: Vec<PathBuf>,
    /// The process's working directory.
    pub workdir: PathBuf,
    /// `--project-directory` [default: the first file's directory].
    pub project_directory: Option<PathBuf>,
    /// `-p`.
    pub project_name: Option<String>,
    /// `--env-file`; empty means `<project dir>/.env` if it exists.
    pub env_files: Vec<PathBuf>,
    /// `--profile`.
    pub profiles: Vec<String>,
    /// Services named on the command line: enabled whatever their profiles.
    pub services: Vec<String>,
    /// The process environment (it wins over env files).
    pub environ: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    /// The interpolation environment (`.env` under the process environment).
    pub env: BTreeMap<String, String>,
    pub doc: Node,
    /// Every profile the files define (`config --profiles`).
    pub profiles: BTreeSet<String>,
    /// Services no active profile enables, with their profiles.
    pub disabled: BTreeMap<String, Vec<String>>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no compose file in {dir} or its parents: looked for {}; give one with -f", DISCOVERY.join(", "))]
    NotFound { dir: PathBuf },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Yaml {
        path: PathBuf,
        #[source]
        source: YamlError,
    },
    #[error("{path}:{line}:{col}")]
    Schema {
        path: PathBuf,
        line: u32,
        col: u32,
        #[source]
        source: crate::schema::SchemaError,
    },
    #[error("{path}:{line}")]
    Interpolate {
        path: PathBuf,
        line: u32,
        #[source]
        source: InterpolateError,
    },
    #[error("{path}")]
    Dotenv {
        path: PathBuf,
        #[source]
        source: crate::dotenv::DotenvError,
    },
    #[error("{path}: the compose file must be a mapping")]
    NotAMapping { path: PathBuf },
    #[error("{path}: includes nest deeper than {MAX_INCLUDE_DEPTH} or include themselves")]
    IncludeCycle { path: PathBuf },
    #[error("{path}: {kind} {name:?} is defined both here and in the included {other}")]
    IncludeConflict { path: PathBuf, kind: String, name: String, other: PathBuf },
    #[error("service {service:?} extends {base:?}, which {file} does not define")]
    ExtendsMissing { service: String, base: String, file: String },
    #[error("service {0:?}: its extends chain loops")]
    ExtendsCycle(String),
    #[error("invalid project name {0:?}: use lowercase letters, digits, '-' and '_', starting with a letter or digit")]
    ProjectName(String),
}

struct Loader<'a> {
    read: ReadFn<'a>,
    env: BTreeMap<String, String>,
    files: Vec<PathBuf>,
    warnings: Vec<String>,
    unset: BTreeSet<String>,
    include_stack: Vec<PathBuf>,
}

/// Lowercases and drops what a project name may not hold, as docker compose does for
/// directory names.
pub fn normalise_project_name(s: &str) -> String {
    let s: String = s.to_ascii_lowercase().chars().filter(|c| c.is_ascii_alphanumeric() || "_-".contains(*c)).collect();
    s.trim_start_matches(['_', '-']).to_owned()
}

fn valid_project_name(s: &str) -> bool {
    !s.is_empty() && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) && normalise_project_name(s) == s
}

fn absolute(base: &Path, p: &str, home: Option<&str>) -> String {
    if let (Some(rest), Some(home)) = (p.strip_prefix('~'), home)
        && (rest.is_empty() || rest.starts_with('/'))
    {
        return format!("{home}{rest}");
    }
    if p.starts_with('/') {
        return p.to_owned();
    }
    lexical_join(base, p).to_string_lossy().into_owned()
}

/// `base/p` with `.` and `..` folded away (paths need not exist).
pub fn lexical_join(base: &Path, p: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(p).components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

fn map_entries(n: &mut Node) -> Option<&mut Vec<(String, Node)>> {
    match &mut n.value {
        Value::Map(m) => Some(m),
        _ => None,
    }
}

fn set_str(n: &mut Node, f: impl Fn(&str) -> String) {
    if let Value::Str(s) = &mut n.value {
        *s = f(s);
    }
}

/// Makes the relative paths of one file absolute against `base`.
fn resolve_paths(doc: &mut Node, base: &Path, home: Option<&str>) {
    let abs = |s: &str| absolute(base, s, home);
    let Some(top) = map_entries(doc) else { return };
    for (k, section) in top.iter_mut() {
        match k.as_str() {
            "services" => {
                for (_, svc) in map_entries(section).into_iter().flatten() {
                    for (sk, v) in map_entries(svc).into_iter().flatten() {
                        match sk.as_str() {
                            "env_file" | "label_file" => match &mut v.value {
                                Value::Str(_) => set_str(v, abs),
                                Value::Seq(items) => {
                                    for i in items {
                                        set_str(i, abs);
                                        if let Some(p) = map_entries(i).and_then(|m| m.iter_mut().find(|(k, _)| k == "path")) {
                                            set_str(&mut p.1, abs);
                                        }
                                    }
                                }
                                _ => {}
                            },
                            "volumes" => {
                                let Value::Seq(items) = &mut v.value else { continue };
                                for i in items {
                                    match &mut i.value {
                                        Value::Str(s) if s.starts_with(['.', '~']) && s.contains(':') => {
                                            let (src, rest) = s.split_once(':').expect("checked");
                                            *s = format!("{}:{rest}", abs(src));
                                        }
                                        Value::Map(m) => {
                                            let bind = m.iter().any(|(k, v)| k == "type" && v.as_str() == Some("bind"));
                                            if let Some((_, src)) = m.iter_mut().find(|(k, _)| k == "source")
                                                && bind
                                            {
                                                set_str(src, abs);
                                            }
                                        }
                                        _ => {}
                                    }
                                }
                            }
                            "build" => {
                                let remote = |s: &str| s.contains("://") || s.starts_with("git@");
                                let ctx = match &mut v.value {
                                    Value::Str(_) => Some(&mut *v),
                                    Value::Map(m) => m.iter_mut().find(|(k, _)| k == "context").map(|(_, c)| c),
                                    _ => None,
                                };
                                if let Some(c) = ctx
                                    && !c.as_str().is_some_and(remote)
                                {
                                    set_str(c, abs);
                                }
                            }
                            "extends" => {
                                if let Some((_, f)) = map_entries(v).and_then(|m| m.iter_mut().find(|(k, _)| k == "file")) {
                                    set_str(f, abs);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            "configs" | "secrets" => {
                for (_, item) in map_entries(section).into_iter().flatten() {
                    if let Some((_, f)) = map_entries(item).and_then(|m| m.iter_mut().find(|(k, _)| k == "file")) {
                        set_str(f, abs);
                    }
                }
            }
            "include" => {
                let Value::Seq(items) = &mut section.value else { continue };
                for i in items {
                    set_str(i, abs);
                    for (k, v) in map_entries(i).into_iter().flatten() {
                        if matches!(k.as_str(), "path" | "env_file" | "project_directory") {
                            set_str(v, abs);
                            if let Value::Seq(ps) = &mut v.value {
                                ps.iter_mut().for_each(|p| set_str(p, abs));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

impl Loader<'_> {
    fn read(&self, path: &Path) -> Result<String, LoadError> {
        (self.read)(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })
    }

    fn interpolate_node(&mut self, n: &mut Node, path: &Path) -> Result<(), LoadError> {
        match &mut n.value {
            Value::Str(s) if s.contains('$') => {
                let env = &self.env;
                let r = interpolate(s, &|k| env.get(k).cloned()).map_err(|source| LoadError::Interpolate {
                    path: path.to_owned(),
                    line: n.pos.line,
                    source,
                })?;
                self.unset.extend(r.unset);
                *s = r.value;
            }
            Value::Seq(items) => {
                for i in items {
                    self.interpolate_node(i, path)?;
                }
            }
            Value::Map(m) => {
                for (_, v) in m {
                    self.interpolate_node(v, path)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads, parses, interpolates, resolves paths in and validates one file. Several YAML
    /// documents in it (`---`) are layers merged in order, as compose-go reads them.
    fn file(&mut self, path: &Path, base: &Path) -> Result<Node, LoadError> {
        let text = self.read(path)?;
        let index = self.files.len() as u32;
        self.files.push(path.to_owned());
        let docs = crate::yaml::parse_stream(&text, index).map_err(|source| LoadError::Yaml { path: path.to_owned(), source })?;
        let mut merged: Option<Node> = None;
        for mut doc in docs {
            if doc.value == Value::Null {
                doc.value = Value::Map(Vec::new());
            }
            if !matches!(doc.value, Value::Map(_)) {
                return Err(LoadError::NotAMapping { path: path.to_owned() });
            }
            self.interpolate_node(&mut doc, path)?;
            resolve_paths(&mut doc, base, self.env.get("HOME").map(String::as_str));
            crate::schema::validate(&doc).map_err(|source| LoadError::Schema {
                path: path.to_owned(),
                line: source.pos.line,
                col: source.pos.col,
                source,
            })?;
            self.include(&mut doc, path)?;
            merged = Some(match merged {
                None => doc,
                Some(m) => merge_documents(m, doc),
            });
        }
        Ok(merged.expect("a stream has at least one document"))
    }

    fn include(&mut self, doc: &mut Node, path: &Path) -> Result<(), LoadError> {
        let Some(top) = map_entries(doc) else { return Ok(()) };
        let Some(i) = top.iter().position(|(k, _)| k == "include") else { return Ok(()) };
        let (_, includes) = top.remove(i);
        let Value::Seq(items) = includes.value else { return Ok(()) };
        if self.include_stack.len() >= MAX_INCLUDE_DEPTH || self.include_stack.iter().any(|p| p == path) {
            return Err(LoadError::IncludeCycle { path: path.to_owned() });
        }
        self.include_stack.push(path.to_owned());
        for item in items {
            let (paths, dir): (Vec<String>, Option<String>) = match &item.value {
                Value::Str(s) => (vec![s.clone()], None),
                _ => {
                    let p = item.get("path");
                    let paths = match p.map(|p| &p.value) {
                        Some(Value::Seq(ps)) => ps.iter().filter_map(Node::scalar_text).collect(),
                        _ => p.and_then(Node::scalar_text).into_iter().collect(),
                    };
                    (paths, item.get("project_directory").and_then(Node::scalar_text))
                }
            };
            let Some(first) = paths.first() else { continue };
            let base = dir.map(PathBuf::from).unwrap_or_else(|| Path::new(first).parent().unwrap_or(Path::new("/")).to_owned());
            let mut merged: Option<Node> = None;
            for p in &paths {
                let d = self.file(Path::new(p), &base)?;
                merged = Some(match merged {
                    None => d,
                    Some(m) => merge_documents(m, d),
                });
            }
            let Some(included) = merged else { continue };
            let Value::Map(sections) = included.value else { continue };
            let top = map_entries(doc).expect("checked a mapping");
            for (section, content) in sections {
                if !matches!(section.as_str(), "services" | "networks" | "volumes" | "configs" | "secrets") {
                    continue;
                }
                let Value::Map(entries) = content.value else { continue };
                let target = match top.iter().position(|(k, _)| *k == section) {
                    Some(i) => &mut top[i].1,
                    None => {
                        top.push((section.clone(), Node::new(Value::Map(Vec::new()), content.pos)));
                        &mut top.last_mut().expect("just pushed").1
                    }
                };
                let Some(t) = map_entries(target) else { continue };
                for (name, v) in entries {
                    if t.iter().any(|(k, _)| *k == name) {
                        return Err(LoadError::IncludeConflict {
                            path: path.to_owned(),
                            kind: section.trim_end_matches('s').to_owned(),
                            name,
                            other: PathBuf::from(first),
                        });
                    }
                    t.push((name, v));
                }
            }
        }
        self.include_stack.pop();
        Ok(())
    }

    /// Resolves `extends` of every service of `doc` (whose own file is `path`).
    fn extends(&mut self, doc: &mut Node, path: &Path) -> Result<(), LoadError> {
        let names: Vec<String> = match doc.get("services").map(|s| &s.value) {
            Some(Value::Map(m)) => m.iter().map(|(k, _)| k.clone()).collect(),
            _ => return Ok(()),
        };
        for name in names {
            let resolved = self.resolve_service(doc, &name, path, &mut Vec::new())?;
            let services = map_entries(doc).and_then(|m| m.iter_mut().find(|(k, _)| k == "services")).expect("has services");
            if let Some(slot) = map_entries(&mut services.1).and_then(|m| m.iter_mut().find(|(k, _)| *k == name)) {
                slot.1 = resolved;
            }
        }
        Ok(())
    }

    fn resolve_service(&mut self, doc: &Node, name: &str, path: &Path, seen: &mut Vec<(PathBuf, String)>) -> Result<Node, LoadError> {
        let key = (path.to_owned(), name.to_owned());
        if seen.contains(&key) {
            return Err(LoadError::ExtendsCycle(name.to_owned()));
        }
        seen.push(key);
        let svc = doc.get("services").and_then(|s| s.get(name)).cloned().ok_or_else(|| LoadError::ExtendsMissing {
            service: seen.first().map(|(_, n)| n.clone()).unwrap_or_default(),
            base: name.to_owned(),
            file: path.display().to_string(),
        })?;
        let Some(ext) = svc.get("extends").cloned() else { return Ok(svc) };
        let (base_name, file) = match &ext.value {
            Value::Str(s) => (s.clone(), None),
            _ => (ext.get("service").and_then(Node::scalar_text).unwrap_or_default(), ext.get("file").and_then(Node::scalar_text)),
        };
        let parent = match file {
            Some(f) => {
                let f = PathBuf::from(f);
                let fbase = f.parent().unwrap_or(Path::new("/")).to_owned();
                let other = self.file(&f, &fbase)?;
                self.resolve_service(&other, &base_name, &f, seen)?
            }
            None => self.resolve_service(doc, &base_name, path, seen)?,
        };
        let mut own = svc;
        if let Some(m) = map_entries(&mut own) {
            m.retain(|(k, _)| k != "extends");
        }
        Ok(merge_services(parent, own))
    }
}

/// Loads a project.
pub fn load(opts: &Options, read: ReadFn<'_>) -> Result<Loaded, LoadError> {
    // As docker compose: the process environment, then the `.env` of the working directory
    // (it may set COMPOSE_FILE…), then, once the files are found, the project directory's.
    let mut env = opts.environ.clone();
    let early_dir = project_dir(opts, &opts.files);
    add_env_files(opts, &early_dir, &mut env, read)?;
    let (files, warnings) = find_files(opts, &early_dir, &env, read)?;
    let dir = project_dir(opts, &files);
    if dir != early_dir {
        add_env_files(opts, &dir, &mut env, read)?;
    }

    let mut l = Loader { read, env, files: Vec::new(), warnings, unset: BTreeSet::new(), include_stack: Vec::new() };
    let mut doc: Option<Node> = None;
    for f in &files {
        let d = l.file(f, &dir)?;
        doc = Some(match doc {
            None => d,
            Some(m) => merge_documents(m, d),
        });
    }
    let mut doc = doc.expect("at least one file");
    strip_resets(&mut doc);
    l.extends(&mut doc, &files[0])?;

    // Profiles: `--profile`, else COMPOSE_PROFILES; a service named on the command line
    // enables its own profiles (and so every service of those), as docker compose does.
    let mut active: BTreeSet<String> = if opts.profiles.is_empty() {
        l.env
            .get("COMPOSE_PROFILES")
            .into_iter()
            .flat_map(|p| p.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    } else {
        opts.profiles.iter().cloned().collect()
    };
    let profiles_of = |svc: &Node| -> Vec<String> {
        match svc.get("profiles").map(|p| &p.value) {
            Some(Value::Seq(ps)) => ps.iter().filter_map(Node::scalar_text).collect(),
            _ => Vec::new(),
        }
    };
    let mut defined = BTreeSet::new();
    let mut disabled = BTreeMap::new();
    if let Some((_, services)) = map_entries(&mut doc).and_then(|m| m.iter_mut().find(|(k, _)| k == "services"))
        && let Value::Map(m) = &mut services.value
    {
        for (name, svc) in m.iter() {
            let ps = profiles_of(svc);
            if opts.services.contains(name) {
                active.extend(ps.iter().cloned());
            }
            defined.extend(ps);
        }
        m.retain(|(name, svc)| {
            let ps = profiles_of(svc);
            let enabled = ps.is_empty() || active.contains("*") || ps.iter().any(|p| active.contains(p));
            if !enabled {
                disabled.insert(name.clone(), ps);
            }
            enabled
        });
    }

    let name = match (&opts.project_name, l.env.get("COMPOSE_PROJECT_NAME"), doc.get("name").and_then(Node::scalar_text)) {
        (Some(n), _, _) => n.clone(),
        (None, Some(n), _) if !n.is_empty() => n.clone(),
        (None, _, Some(n)) if !n.is_empty() => n,
        _ => normalise_project_name(&dir.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()),
    };
    if !valid_project_name(&name) {
        return Err(LoadError::ProjectName(name));
    }
    for v in &l.unset {
        l.warnings.push(format!("the {v} variable is not set; using an empty string"));
    }
    Ok(Loaded { name, dir, files: l.files, env: l.env, doc, profiles: defined, disabled, warnings: l.warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn fs(files: &[(&str, &str)]) -> impl Fn(&Path) -> std::io::Result<String> + use<> {
        let map: BTreeMap<PathBuf, String> = files.iter().map(|(p, t)| (PathBuf::from(p), (*t).to_owned())).collect();
        move |p: &Path| map.get(p).cloned().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    pub(crate) fn opts(files: &[&str]) -> Options {
        Options { files: files.iter().map(PathBuf::from).collect(), workdir: "/p/app".into(), ..Default::default() }
    }

    #[test]
    fn discovery_env_interpolation_and_paths() {
        let read = fs(&[
            (
                "/p/app/compose.yaml",
                "services:\n  web:\n    image: nginx:${TAG:-1}\n    volumes: ['./html:/usr/share/nginx/html', 'data:/data']\n    env_file: conf/web.env\n",
            ),
            ("/p/app/.env", "TAG=2\n"),
        ]);
        let l = load(&opts(&[]), &read).unwrap();
        assert_eq!(l.name, "app");
        let web = l.doc.get("services").unwrap().get("web").unwrap().to_json();
        assert_eq!(web["image"], "nginx:2");
        assert_eq!(web["volumes"], serde_json::json!(["/p/app/html:/usr/share/nginx/html", "data:/data"]));
        assert_eq!(web["env_file"], "/p/app/conf/web.env");
    }

    #[test]
    fn process_environment_beats_dotenv_and_missing_required_fails() {
        let read = fs(&[
            ("/p/app/compose.yaml", "services:\n  web:\n    image: \"x:${TAG}\"\n    user: ${U:?set U to the user}\n"),
            ("/p/app/.env", "TAG=2\nU=1\n"),
        ]);
        let mut o = opts(&[]);
        o.environ.insert("TAG".into(), "3".into());
        let l = load(&o, &read).unwrap();
        assert_eq!(l.doc.get("services").unwrap().get("web").unwrap().get("image").unwrap().as_str(), Some("x:3"));
        let read = fs(&[("/p/app/compose.yaml", "services:\n  web:\n    image: x\n    user: ${U:?set U to the user}\n")]);
        let e = load(&opts(&[]), &read).unwrap_err();
        assert_eq!(
            format!("{e}: {}", std::error::Error::source(&e).unwrap()),
            "/p/app/compose.yaml:4: required variable U is missing a value: set U to the user"
        );
    }

    #[test]
    fn include_extends_and_profiles() {
        let read = fs(&[
            (
                "/p/app/compose.yaml",
                "include: [../lib/db.yaml]\nservices:\n  web:\n    extends: {file: base.yaml, service: base}\n    image: web\n  debug:\n    image: busybox\n    profiles: [debug]\n",
            ),
            ("/p/app/base.yaml", "services:\n  base:\n    image: base\n    environment: [A=1]\n    volumes: ['./x:/x']\n"),
            ("/p/lib/db.yaml", "services:\n  db:\n    image: postgres\n    volumes: ['./init:/docker-entrypoint-initdb.d']\n"),
        ]);
        let l = load(&opts(&[]), &read).unwrap();
        let v = l.doc.to_json();
        assert_eq!(v["services"]["web"], serde_json::json!({"image":"web","environment":{"A":"1"},"volumes":["/p/app/x:/x"]}));
        assert_eq!(v["services"]["db"]["volumes"], serde_json::json!(["/p/lib/init:/docker-entrypoint-initdb.d"]));
        assert!(v["services"].get("debug").is_none());
        let mut o = opts(&[]);
        o.profiles = vec!["debug".into()];
        assert!(load(&o, &read).unwrap().doc.get("services").unwrap().get("debug").is_some());
    }

    #[test]
    fn extends_cycles_and_include_conflicts_are_errors() {
        let read = fs(&[("/p/app/compose.yaml", "services:\n  a: {extends: b, image: x}\n  b: {extends: a, image: y}\n")]);
        assert!(matches!(load(&opts(&[]), &read), Err(LoadError::ExtendsCycle(_))));
        let read = fs(&[
            ("/p/app/compose.yaml", "include: [other.yaml]\nservices:\n  a: {image: x}\n"),
            ("/p/app/other.yaml", "services:\n  a: {image: y}\n"),
        ]);
        assert!(matches!(load(&opts(&[]), &read), Err(LoadError::IncludeConflict { .. })));
        let read = fs(&[("/p/app/compose.yaml", "include: [compose.yaml]\n")]);
        assert!(matches!(load(&opts(&[]), &read), Err(LoadError::IncludeCycle { .. })));
    }

    #[test]
    fn project_names() {
        let read = fs(&[("/p/My App/compose.yaml", "services: {}\n"), ("/p/x/compose.yaml", "name: ${N:-named}\nservices: {}\n")]);
        let mut o = opts(&[]);
        o.workdir = "/p/My App".into();
        assert_eq!(load(&o, &read).unwrap().name, "myapp");
        o.workdir = "/p/x".into();
        assert_eq!(load(&o, &read).unwrap().name, "named");
        o.project_name = Some("Bad Name".into());
        assert!(matches!(load(&o, &read), Err(LoadError::ProjectName(_))));
    }

    /// compose-go reads each `---` document of a file as a layer, merged in order.
    #[test]
    fn documents_of_one_file_merge_in_order() {
        let read = fs(&[(
            "/p/app/compose.yaml",
            "services:\n  web: {image: a, environment: [A=1]}\n---\nservices:\n  web:\n    environment: {B: 2}\n---\n",
        )]);
        let v = load(&opts(&[]), &read).unwrap().doc.to_json();
        assert_eq!(v["services"]["web"], serde_json::json!({"image":"a","environment":{"A":"1","B":2}}));
        let read = fs(&[("/p/app/compose.yaml", "services: {}\n---\n- a list\n")]);
        assert!(matches!(load(&opts(&[]), &read), Err(LoadError::NotAMapping { .. })));
    }

    #[test]
    fn several_files_merge_in_order() {
        let read = fs(&[
            ("/p/app/a.yaml", "services:\n  web: {image: a, ports: ['80:80']}\n"),
            ("/p/app/b.yaml", "services:\n  web: {image: b}\n  db: {image: pg}\n"),
        ]);
        let v = load(&opts(&["a.yaml", "b.yaml"]), &read).unwrap().doc.to_json();
        assert_eq!(v["services"], serde_json::json!({"web":{"image":"b","ports":["80:80"]},"db":{"image":"pg"}}));
    }
}
