//! The bundles' records on disk: `<dir>/<name>.json` per bundle and `<dir>/allow.json`, each
//! replaced atomically.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::BundleError;

/// An author whose bundles this host runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Allowed {
    pub did: String,
    /// Its handle when it was allowed, verified both ways.
    pub handle: Option<String>,
    /// Unix seconds.
    pub added: i64,
    /// Not this author, but every account it follows (`atoll bundle allow --follows-of`), read
    /// from its repository when a bundle is run or updated.
    #[serde(default)]
    pub follows_of: bool,
}

/// A bundle this host runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleRecord {
    pub name: String,
    pub uri: String,
    pub did: String,
    pub handle: Option<String>,
    pub record_cid: Option<String>,
    pub code_cid: Option<String>,
    /// The manifest as fetched.
    pub manifest: serde_json::Value,
    /// The port it was served on, asked for again after a restart.
    pub port: Option<u16>,
    /// Instances kept warm (0: scaled to zero when idle).
    #[serde(default)]
    pub min_instances: u32,
    /// The most instances under load (0: as many as `min_instances`, at least one).
    #[serde(default)]
    pub max_instances: u32,
    /// Secrets given at `bundle run`, by name, each sealed to this host's key (base64).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub secrets: std::collections::BTreeMap<String, String>,
    /// Values for the env names the manifest declares (`bundle run --env`), in the clear.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    pub created: i64,
    /// Placed here by the island (`desired/bundle`): its secrets are sealed to the island's
    /// key, it is served on the mesh address too, and the island's agent removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub island: Option<IslandPlacement>,
}

/// How the island placed a bundle on this member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IslandPlacement {
    /// This member's mesh address, which the bundle is also served on.
    pub mesh_ip: std::net::IpAddr,
    /// The island's range of bundle ports (both ends included).
    pub ports: (u16, u16),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Store { path: path.to_owned(), source }
}

fn write_json(path: &Path, v: &impl Serialize) -> Result<(), BundleError> {
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| BundleError::Store { path: path.to_owned(), source: e.into() })?;
    atoll_util::atomic_write(path, &bytes, 0o600)
        .map_err(|e| BundleError::Store { path: path.to_owned(), source: std::io::Error::other(e) })
}

fn record_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

pub fn get(dir: &Path, name: &str) -> Result<Option<BundleRecord>, BundleError> {
    let path = record_path(dir, name);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| BundleError::Store { path, source: e.into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BundleError::Store { path, source: e }),
    }
}

pub fn put(dir: &Path, rec: &BundleRecord) -> Result<(), BundleError> {
    write_json(&record_path(dir, &rec.name), rec)
}

pub fn remove(dir: &Path, name: &str) -> Result<(), BundleError> {
    let path = record_path(dir, name);
    std::fs::remove_file(&path).map_err(io(&path))
}

pub fn list(dir: &Path) -> Result<Vec<BundleRecord>, BundleError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let name = e.map_err(io(dir))?.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_suffix(".json").filter(|n| *n != "allow")
            && let Some(r) = get(dir, n)?
        {
            out.push(r);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub fn allowed(dir: &Path) -> Result<Vec<Allowed>, BundleError> {
    let path = dir.join("allow.json");
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| BundleError::Store { path, source: e.into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(BundleError::Store { path, source: e }),
    }
}

pub fn allow(dir: &Path, a: Allowed) -> Result<(), BundleError> {
    let mut list = allowed(dir)?;
    list.retain(|x| x.did != a.did || x.follows_of != a.follows_of);
    list.push(a);
    write_json(&dir.join("allow.json"), &list)
}

pub fn disallow(dir: &Path, who: &str) -> Result<(), BundleError> {
    let mut list = allowed(dir)?;
    let before = list.len();
    // Handles are case-insensitive (as DNS names are); DIDs are not.
    let who = who.trim();
    list.retain(|x| x.did != who && !x.handle.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(who)));
    if list.len() == before {
        return Err(BundleError::NotFound(format!("{who} is not on the allow-list (`atoll bundle allow --list` shows it)")));
    }
    write_json(&dir.join("allow.json"), &list)
}
