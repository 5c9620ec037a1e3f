//! Registry credentials: Atoll's own `auth.json` (written by `atoll login`, mode 0600) and,
//! read-only, the `auths` of a docker `config.json`, both in docker's format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("saving credentials to {path}")]
    Save {
        path: PathBuf,
        #[source]
        source: atoll_util::Error,
    },
}

/// Where credentials are looked up, in order.
#[derive(Debug, Clone)]
pub struct Credentials {
    own: PathBuf,
    docker: Option<PathBuf>,
}

/// The keys a registry may be filed under in a config file.
fn keys(registry: &str) -> Vec<String> {
    let mut k = vec![registry.to_owned(), format!("https://{registry}"), format!("http://{registry}")];
    if registry == crate::reference::DEFAULT_REGISTRY {
        k.push("https://index.docker.io/v1/".into());
        k.push("index.docker.io".into());
    }
    k
}

fn read_config(path: &Path) -> ConfigFile {
    std::fs::read(path).ok().and_then(|d| serde_json::from_slice(&d).ok()).unwrap_or_default()
}

fn decode(e: &AuthEntry) -> Option<Credential> {
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Some(Credential { username: u.clone(), password: p.clone() });
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(e.auth.as_deref()?.trim()).ok()?;
    let (u, p) = std::str::from_utf8(&raw).ok()?.split_once(':')?;
    Some(Credential { username: u.to_owned(), password: p.to_owned() })
}

impl Credentials {
    /// `own` is Atoll's file; `docker` a docker `config.json` to fall back to.
    pub fn new(own: PathBuf, docker: Option<PathBuf>) -> Self {
        Self { own, docker }
    }

    /// The docker config of the daemon's user: `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json`.
    pub fn default_docker_config() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    pub fn get(&self, registry: &str) -> Option<Credential> {
        for file in std::iter::once(&self.own).chain(self.docker.as_ref()) {
            let cfg = read_config(file);
            for k in keys(registry) {
                if let Some(c) = cfg.auths.get(&k).and_then(decode) {
                    return Some(c);
                }
            }
        }
        None
    }

    pub fn store(&self, registry: &str, cred: &Credential) -> Result<(), AuthError> {
        let mut cfg = read_config(&self.own);
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", cred.username, cred.password));
        cfg.auths.insert(registry.to_owned(), AuthEntry { auth: Some(auth), ..Default::default() });
        let data = serde_json::to_vec_pretty(&cfg).expect("serialises");
        atoll_util::atomic_write(&self.own, &data, 0o600).map_err(|source| AuthError::Save { path: self.own.clone(), source })
    }

    pub fn remove(&self, registry: &str) -> Result<bool, AuthError> {
        let mut cfg = read_config(&self.own);
        let removed = cfg.auths.remove(registry).is_some();
        if removed {
            let data = serde_json::to_vec_pretty(&cfg).expect("serialises");
            atoll_util::atomic_write(&self.own, &data, 0o600).map_err(|source| AuthError::Save { path: self.own.clone(), source })?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_config_and_prefers_own() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("config.json");
        std::fs::write(&docker, r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"r.example":{"auth":"YTpi"}}}"#).unwrap();
        let creds = Credentials::new(dir.path().join("auth.json"), Some(docker));
        assert_eq!(creds.get("docker.io").unwrap().username, "u");
        assert_eq!(creds.get("r.example").unwrap().password, "b");
        creds.store("r.example", &Credential { username: "me".into(), password: "pw".into() }).unwrap();
        assert_eq!(creds.get("r.example").unwrap().username, "me");
        assert!(creds.get("other.example").is_none());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("auth.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
