//! Where a member keeps the island: `<data>/island/`. The replicated state's Raft log and state
//! machine (`state.redb`, [`crate::consensus`]); the last state this member saw (`state.json`,
//! replaced atomically, behind the [`StateStore`] seam: what it starts from, and what a host
//! that was removed keeps); the keys and certificates in files of their own (keys 0600, never
//! sent anywhere).

use std::path::{Path, PathBuf};

use crate::model::{IslandState, SCHEMA};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an island state this version understands")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} has schema {found}; this Atoll reads up to {SCHEMA}: upgrade Atoll")]
    Schema { path: PathBuf, found: u32 },
    #[error("saving the island state")]
    Write(#[source] atoll_util::Error),
}

/// Keeps the island state of this member.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    fn load(&self) -> Result<Option<IslandState>, StoreError>;
    fn save(&self, state: &IslandState) -> Result<(), StoreError>;
}

/// The state as one JSON file, replaced atomically on every change.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

impl StateStore for FileStore {
    fn load(&self) -> Result<Option<IslandState>, StoreError> {
        let data = match std::fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Read { path: self.path.clone(), source }),
        };
        let head: serde_json::Value =
            serde_json::from_slice(&data).map_err(|source| StoreError::Parse { path: self.path.clone(), source })?;
        let found = head.get("schema").and_then(|s| s.as_u64()).unwrap_or(0) as u32;
        if found > SCHEMA {
            return Err(StoreError::Schema { path: self.path.clone(), found });
        }
        serde_json::from_value(head).map(Some).map_err(|source| StoreError::Parse { path: self.path.clone(), source })
    }

    fn save(&self, state: &IslandState) -> Result<(), StoreError> {
        let data = serde_json::to_vec_pretty(state).expect("state serialises");
        atoll_util::atomic_write(&self.path, &data, 0o600).map_err(StoreError::Write)
    }
}

/// What a member keeps about itself: its ID and which generation of keys and certificates is
/// current (`gen-<N>/`). A renewal writes generation N+1 whole, then switches this file
/// atomically: a crash leaves either the old set or the new one in use, never a mix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Local {
    pub node_id: String,
    pub generation: u64,
    /// When this host learnt it was removed from the island (unix seconds): it keeps the last
    /// state it was a member of, stops following the island, and waits for `atoll leave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<i64>,
    /// This host has been in the island's Raft group. The CA host starts the group only if
    /// not: one that lost its Raft store must not start a second group beside the first.
    #[serde(default)]
    pub raft_group: bool,
    /// This host's Raft store was made: one missing or empty since was lost (and its votes
    /// with it), and is re-synced like a damaged one.
    #[serde(default)]
    pub raft_store: bool,
}

impl Local {
    pub fn load(paths: &Paths) -> Result<Option<Self>, StoreError> {
        let path = paths.local();
        match std::fs::read(&path) {
            Ok(d) => serde_json::from_slice(&d).map(Some).map_err(|source| StoreError::Parse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Read { path, source }),
        }
    }

    pub fn save(&self, paths: &Paths) -> Result<(), StoreError> {
        atoll_util::atomic_write(&paths.local(), &serde_json::to_vec_pretty(self).expect("serialises"), 0o600).map_err(StoreError::Write)
    }
}

/// The files of `<data>/island/`.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    pub fn new(data_dir: &Path) -> Self {
        Self { root: data_dir.join("island") }
    }
    /// The last island state this member saw (what it starts from until Raft catches it up).
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// This member's Raft log and state machine (redb).
    pub fn raft(&self) -> PathBuf {
        self.root.join("state.redb")
    }
    pub fn local(&self) -> PathBuf {
        self.root.join("local.json")
    }
    /// The CA keys (the CA host only): `x509.key`, and `nebula/ca.{crt,key}`, 0600.
    pub fn ca(&self) -> PathBuf {
        self.root.join("ca")
    }
    /// The names' data key (32 bytes, base64, 0600): made and kept by the CA host (under
    /// [`Paths::ca`]), cached by every other member that fetched it.
    pub fn names_key(&self, ca_host: bool) -> PathBuf {
        if ca_host { self.ca().join("names.key") } else { self.root.join("names.key") }
    }
    /// The Nebula CA certificate, written from the state for Nebula to read.
    pub fn nebula_ca_cert(&self) -> PathBuf {
        self.root.join("nebula-ca.crt")
    }
    /// One generation of this host's keys and certificates: `node.key`, `node.crt`,
    /// `join.crt` (public members), `host.key`, `host.pub`, `host.crt` (Nebula).
    pub fn generation(&self, n: u64) -> PathBuf {
        self.root.join(format!("gen-{n}"))
    }
    /// Nebula's supervised process: its config, pidfile and log.
    pub fn nebula(&self) -> PathBuf {
        self.root.join("nebula")
    }
    /// Keys made for a join in progress: running the join again after an interruption reuses
    /// them, so the CA host recognises the retry.
    pub fn joining(&self) -> PathBuf {
        self.root.join("joining")
    }
    /// Scratch space for signing (the CA host).
    pub fn scratch(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("state.json"));
        assert!(store.load().unwrap().is_none());
        let s = crate::model::tests::island();
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap(), Some(s.clone()));
        let mut v = serde_json::to_value(&s).unwrap();
        v["schema"] = serde_json::json!(SCHEMA + 1);
        std::fs::write(dir.path().join("state.json"), v.to_string()).unwrap();
        assert!(matches!(store.load(), Err(StoreError::Schema { .. })));
        std::fs::write(dir.path().join("state.json"), "{").unwrap();
        assert!(matches!(store.load(), Err(StoreError::Parse { .. })));
    }
}
