//! What a deno instance is started with, from the manifest: where its files are ([`Paths`]),
//! its command line ([`flags`]: permission flags and the heap limit) and its whole environment
//! ([`env`]). Pure but for [`Paths::new`]'s checks on path names.
//!
//! The permissions (Deno denies whatever is not allowed, and never prompts):
//! - `--allow-read`: the work directory (the code, the bootstrap, the socket) and every
//!   declared `read` and `write` directory;
//! - `--allow-write`: the declared `write` directories, and the socket, which the bootstrap
//!   revokes once it listens (Deno 2 asks read, write and `net` rights of a unix socket to
//!   serve on it);
//! - `--allow-net`: the declared `net` hosts, and `unix:<socket>`, revoked the same way;
//! - `--allow-env`: the declared env names and the secrets' names, when there are any;
//! - no remote modules, npm, configuration or lock file is looked for (`--no-remote`,
//!   `--no-npm`, `--no-config`, `--no-lock`, `--cached-only`): the code is the blob;
//! - `--v8-flags=--max-old-space-size=<memory MiB>`: the JavaScript heap's limit.
//!
//! Declared paths are directories of the same name under the bundle's data directory
//! (`/cache` is `<data_dir>/cache`), as for wasm; the handler finds them in `ctx.paths`, and
//! the instance's working directory is the data directory (so `cache/x` works too). Deno
//! separates a flag's values with commas, so a path with a comma is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use atoll_atproto::bundle::Manifest;

use crate::LoadError;
use crate::grants::{Grants, bundle_env};
use crate::policy::Effective;

/// The longest path a unix socket can be bound at (`sun_path`, less its NUL).
const SOCKET_PATH_MAX: usize = 107;

/// Where a deno bundle's files are on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The bundle's work directory (absolute): the code, the bootstrap, `DENO_DIR`, the socket.
    pub work_dir: PathBuf,
    /// The bootstrap module (`atoll-bootstrap.js`).
    pub bootstrap: PathBuf,
    /// The unix socket the instance serves on (`http.sock`).
    pub socket: PathBuf,
    /// Deno's cache of transpiled code (`deno/`), kept across instances of the bundle.
    pub deno_dir: PathBuf,
    /// The data directory, if the bundle has one: the instance's working directory.
    pub data_dir: Option<PathBuf>,
    /// Each declared `permissions.read` path and its directory on the host.
    pub read: Vec<(String, PathBuf)>,
    /// Each declared `permissions.write` path and its directory on the host.
    pub write: Vec<(String, PathBuf)>,
}

impl Paths {
    /// The paths of `manifest`'s bundle in `work_dir` (absolute) with its data directory;
    /// refuses declared paths without a data directory, paths Deno's flags cannot carry, and
    /// a socket path too long to bind.
    pub fn new(work_dir: &Path, data_dir: Option<&Path>, manifest: &Manifest) -> Result<Paths, LoadError> {
        let p = &manifest.permissions;
        let under = |list: &[String]| -> Result<Vec<(String, PathBuf)>, LoadError> {
            if list.is_empty() {
                return Ok(Vec::new());
            }
            let Some(data_dir) = data_dir else {
                return Err(LoadError::NoDataDir(p.read.iter().chain(&p.write).cloned().collect::<Vec<_>>().join(", ")));
            };
            Ok(list.iter().map(|guest| (guest.clone(), data_dir.join(guest.trim_start_matches('/')))).collect())
        };
        let paths = Paths {
            work_dir: work_dir.to_owned(),
            bootstrap: work_dir.join("atoll-bootstrap.js"),
            socket: work_dir.join("http.sock"),
            deno_dir: work_dir.join("deno"),
            data_dir: data_dir.map(Path::to_owned),
            read: under(&p.read)?,
            write: under(&p.write)?,
        };
        if !work_dir.is_absolute() {
            return Err(LoadError::Path { path: work_dir.to_owned(), why: "the work directory must be an absolute path" });
        }
        let all = [&paths.work_dir].into_iter().chain(&paths.data_dir).chain(paths.read.iter().chain(&paths.write).map(|(_, host)| host));
        for path in all {
            match path.to_str() {
                None => return Err(LoadError::Path { path: path.clone(), why: "not UTF-8, which Deno's flags cannot carry" }),
                Some(s) if s.contains(',') => {
                    return Err(LoadError::Path { path: path.clone(), why: "has a comma, which Deno's flags cannot carry" });
                }
                Some(_) => {}
            }
        }
        if paths.socket.as_os_str().len() > SOCKET_PATH_MAX {
            return Err(LoadError::Path {
                path: paths.socket.clone(),
                why: "longer than a unix socket's path may be (107 bytes): use a shorter work directory",
            });
        }
        Ok(paths)
    }
}

fn join<'a>(items: impl IntoIterator<Item = &'a Path>) -> String {
    items.into_iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",")
}

/// `deno`'s arguments for `manifest`'s bundle in `paths` under `limits`.
pub fn flags(manifest: &Manifest, paths: &Paths, limits: &Effective) -> Vec<String> {
    let p = &manifest.permissions;
    let mut out: Vec<String> =
        ["run", "--no-prompt", "--no-remote", "--no-npm", "--no-config", "--no-lock", "--cached-only"].map(String::from).into();
    let read = std::iter::once(paths.work_dir.as_path()).chain(paths.read.iter().chain(&paths.write).map(|(_, h)| h.as_path()));
    out.push(format!("--allow-read={}", join(read)));
    let write = std::iter::once(paths.socket.as_path()).chain(paths.write.iter().map(|(_, h)| h.as_path()));
    out.push(format!("--allow-write={}", join(write)));
    let net = std::iter::once(format!("unix:{}", paths.socket.display())).chain(p.net.iter().cloned());
    out.push(format!("--allow-net={}", net.collect::<Vec<_>>().join(",")));
    let env: Vec<&str> = p.env.iter().chain(manifest.secrets.iter().map(|s| &s.name)).map(String::as_str).collect();
    if !env.is_empty() {
        out.push(format!("--allow-env={}", env.join(",")));
    }
    out.push(format!("--v8-flags=--max-old-space-size={}", (limits.memory_bytes >> 20).max(1)));
    out.push(paths.bootstrap.display().to_string());
    out
}

/// The instance's whole environment: the declared names the caller gave values for, the
/// secrets, and what Deno itself reads (`DENO_DIR`, no update check, no colours), which wins
/// over a bundle's own value of the same name. Nothing of the daemon's environment.
pub fn env(manifest: &Manifest, grants: &Grants, paths: &Paths) -> Result<BTreeMap<String, String>, LoadError> {
    let mut env: BTreeMap<String, String> = bundle_env(manifest, grants)?.into_iter().collect();
    env.insert("DENO_DIR".into(), paths.deno_dir.display().to_string());
    env.insert("DENO_NO_UPDATE_CHECK".into(), "1".into());
    env.insert("NO_COLOR".into(), "1".into());
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;
    use serde_json::json;

    fn manifest(extra: serde_json::Value) -> Manifest {
        crate::testing::deno_manifest(&[("GET", "/hello", "hello")], extra)
    }

    #[test]
    fn flags_for_a_bundle_that_asks_for_little() {
        let m = manifest(json!({}));
        let paths = Paths::new(Path::new("/w/b1"), None, &m).unwrap();
        let limits = Policy::default().effective(&m);
        expect_test::expect![[r#"
            [
                "run",
                "--no-prompt",
                "--no-remote",
                "--no-npm",
                "--no-config",
                "--no-lock",
                "--cached-only",
                "--allow-read=/w/b1",
                "--allow-write=/w/b1/http.sock",
                "--allow-net=unix:/w/b1/http.sock",
                "--v8-flags=--max-old-space-size=64",
                "/w/b1/atoll-bootstrap.js",
            ]
        "#]]
        .assert_debug_eq(&flags(&m, &paths, &limits));
    }

    #[test]
    fn flags_for_a_bundle_that_asks_for_everything() {
        let m = manifest(json!({
            "permissions": {"net": ["api.example.com", "*.cdn.example.org:443", "[::1]:8080"], "read": ["/config"], "write": ["/cache", "/state/db"], "env": ["LOG_LEVEL", "REGION"]},
            "secrets": [{"name": "TOKEN"}, {"name": "OTHER", "required": false}],
            "limits": {"memoryMb": 48},
        }));
        let paths = Paths::new(Path::new("/w/b2"), Some(Path::new("/data/b2")), &m).unwrap();
        let limits = Policy::default().effective(&m);
        expect_test::expect![[r#"
            [
                "run",
                "--no-prompt",
                "--no-remote",
                "--no-npm",
                "--no-config",
                "--no-lock",
                "--cached-only",
                "--allow-read=/w/b2,/data/b2/config,/data/b2/cache,/data/b2/state/db",
                "--allow-write=/w/b2/http.sock,/data/b2/cache,/data/b2/state/db",
                "--allow-net=unix:/w/b2/http.sock,api.example.com,*.cdn.example.org:443,[::1]:8080",
                "--allow-env=LOG_LEVEL,REGION,TOKEN,OTHER",
                "--v8-flags=--max-old-space-size=48",
                "/w/b2/atoll-bootstrap.js",
            ]
        "#]]
        .assert_debug_eq(&flags(&m, &paths, &limits));
    }

    #[test]
    fn the_env_is_the_declared_names_the_secrets_and_denos_own() {
        // (A manifest cannot declare `DENO_DIR` itself: reserved names are refused at validation.)
        let m = manifest(json!({"permissions": {"env": ["LOG_LEVEL"]}, "secrets": [{"name": "TOKEN"}]}));
        let paths = Paths::new(Path::new("/w"), None, &m).unwrap();
        let grants = Grants {
            env: [("LOG_LEVEL", "debug"), ("UNDECLARED", "x"), ("DENO_DIR", "/elsewhere")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
            secrets: [("TOKEN".to_owned(), "s3cret".to_owned())].into(),
            ..Grants::default()
        };
        expect_test::expect![[r#"
            {
                "DENO_DIR": "/w/deno",
                "DENO_NO_UPDATE_CHECK": "1",
                "LOG_LEVEL": "debug",
                "NO_COLOR": "1",
                "TOKEN": "s3cret",
            }
        "#]]
        .assert_debug_eq(&env(&m, &grants, &paths).unwrap());
        let missing = Grants::default();
        assert!(matches!(env(&m, &missing, &paths), Err(LoadError::MissingSecret(s)) if s == "TOKEN"));
    }

    #[test]
    fn paths_deno_cannot_carry_are_refused() {
        let m = manifest(json!({"permissions": {"read": ["/a,b"]}}));
        let e = Paths::new(Path::new("/w"), Some(Path::new("/d")), &m).unwrap_err();
        assert!(e.to_string().contains("/d/a,b") && e.to_string().contains("comma"), "{e}");
        let e = Paths::new(Path::new("/w"), None, &m).unwrap_err();
        assert!(matches!(e, LoadError::NoDataDir(_)), "{e}");
        let plain = manifest(json!({}));
        let e = Paths::new(Path::new("relative"), None, &plain).unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let long = PathBuf::from(format!("/{}", "x".repeat(100)));
        let e = Paths::new(&long, None, &plain).unwrap_err();
        assert!(e.to_string().contains("unix socket"), "{e}");
    }
}
