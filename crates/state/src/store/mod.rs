//! A member's copy of the Raft log and of the state machine, in one redb file
//! (`<data>/island/state.redb`): redb commits are atomic and, at the default durability,
//! fsynced before they return, so whatever openraft is told is persisted is (an acknowledged
//! write survives kill -9 and power loss), and a torn write is never seen. redb does not
//! checksum a table's pages (a flipped bit reads as other data, or panics it), so every value
//! is sealed with a checksum over its key and JSON ([`seal`]), and opening reads and checks the
//! whole store: a damaged file fails to open instead of serving bad data.
//!
//! Tables: `log` (index → entry), `meta` (the vote, the committed and last purged log ids, the
//! last applied log id, the membership, the current snapshot), `docs` (the keyspace's
//! documents). The state machine is also kept in memory, loaded at open.

mod log;
mod recover;
mod sm;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::schema::{Code, TooNew};

pub use log::LogStore;
pub use recover::{Recovered, force_voters};
pub use sm::{Reader, SnapshotBuilder, StateMachine};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("docs");

/// The `meta` key of the store's epoch: how many times its member was recovered
/// ([`force_voters`]) — or re-synced from a recovered one — since the island began. Members
/// exchange Raft RPCs only within one epoch (the island's transport checks it).
pub(crate) const EPOCH: &str = "epoch";

/// The epoch of the store at `path` (0 for a new or older store; a missing one is created).
/// The member must be stopped.
pub fn epoch(path: &Path) -> Result<u64, StoreError> {
    let failed = |source| StoreError::Read { path: path.display().to_string(), source };
    let db = Database::create(path).map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
    init_tables(&db).map_err(failed)?;
    read_meta::<u64>(&db, EPOCH).map(|e| e.unwrap_or(0)).map_err(failed)
}

/// Sets the epoch of the store at `path` (creating it): a member re-syncing from a recovered
/// island starts an empty store in the island's epoch. The member must be stopped.
pub fn set_epoch(path: &Path, epoch: u64) -> Result<(), StoreError> {
    let failed = |source| StoreError::Read { path: path.display().to_string(), source };
    let db = Database::create(path).map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
    init_tables(&db).map_err(failed)?;
    write_meta(&db, EPOCH, &epoch).map_err(failed)
}

/// Opening the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the state file {path}")]
    Open { path: String, source: redb::DatabaseError },
    #[error("reading the state file {path}")]
    Read { path: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("the state file {path}")]
    TooNew { path: String, source: crate::schema::TooNew },
}

/// Opens (or creates) the store at `path` for this build: the log store and the state
/// machine, which share the file.
pub fn open(path: &Path) -> Result<(LogStore, StateMachine), StoreError> {
    open_with(path, Code::CURRENT)
}

/// Opens (or creates) the store at `path` for a build that can do `code` (tests run several
/// builds in one process). A state at a schema `code` does not read is [`StoreError::TooNew`].
pub fn open_with(path: &Path, code: Code) -> Result<(LogStore, StateMachine), StoreError> {
    let name = path.display().to_string();
    // redb panics on some damaged pages: a damaged file is an error here, not a crash.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<_, StoreError> {
        let db = Database::create(path).map_err(|source| StoreError::Open { path: name.clone(), source })?;
        let db = Arc::new(db);
        let read = |source| StoreError::Read { path: name.clone(), source };
        init_tables(&db).map_err(read)?;
        verify_log(&db).map_err(read)?;
        let sm = StateMachine::load(db.clone(), code).map_err(read)?;
        Ok((db, sm))
    }));
    let (db, sm) = opened.unwrap_or_else(|panic| {
        let what = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
        Err(StoreError::Read { path: name.clone(), source: format!("the file is damaged: {}", what.unwrap_or_default()).into() })
    })?;
    if sm.schema() > code.reads {
        return Err(StoreError::TooNew { path: name, source: TooNew { schema: sm.schema(), reads: code.reads } });
    }
    Ok((LogStore::new(db), sm))
}

/// Makes the tables exist, so readers never meet a missing one.
fn init_tables(db: &Database) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let tx = db.begin_write()?;
    tx.open_table(LOG)?;
    tx.open_table(META)?;
    tx.open_table(DOCS)?;
    tx.commit()?;
    Ok(())
}

/// A JSON value, as snapshots carry the keyspace.
fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("state types serialise")
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(b)
}

/// The first byte of a sealed table value; a JSON text never starts with it.
const SEALED: u8 = 0xa7;
/// Bytes of the checksum.
const SUM: usize = 8;

/// A table value that cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("the value at {key} fails its checksum: the file is damaged")]
    Checksum { key: String },
    #[error("the value at {key} does not decode")]
    Decode { key: String, source: serde_json::Error },
}

fn checksum(key: &[u8], json: &[u8]) -> [u8; SUM] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update((key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(json);
    h.finalize()[..SUM].try_into().expect("SUM bytes")
}

/// A table value as stored: [`SEALED`], the first 8 bytes of SHA-256 over the key and the
/// JSON, then the JSON. redb checksums none of a table's pages, so a flipped bit in the file
/// would otherwise be read as different data (or panic redb); sealed, it is caught.
fn seal<T: Serialize>(key: &[u8], v: &T) -> Vec<u8> {
    let json = encode(v);
    let mut out = Vec::with_capacity(1 + SUM + json.len());
    out.push(SEALED);
    out.extend_from_slice(&checksum(key, &json));
    out.extend_from_slice(&json);
    out
}

/// The value sealed at `key`. Values from before seals (plain JSON) are read as they are.
fn unseal<T: DeserializeOwned>(key: &[u8], b: &[u8]) -> Result<T, ValueError> {
    let name = || String::from_utf8(key.to_vec()).unwrap_or_else(|_| format!("{key:02x?}"));
    let json = match b.split_first() {
        Some((&SEALED, rest)) if rest.len() >= SUM => {
            let (sum, json) = rest.split_at(SUM);
            if sum != checksum(key, json) {
                return Err(ValueError::Checksum { key: name() });
            }
            json
        }
        Some((&SEALED, _)) => return Err(ValueError::Checksum { key: name() }),
        _ => b,
    };
    decode(json).map_err(|source| ValueError::Decode { key: name(), source })
}

/// A log entry's key, for its seal.
fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Reads one `meta` value.
fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, Box<dyn std::error::Error + Send + Sync>> {
    let tx = db.begin_read()?;
    let t = tx.open_table(META)?;
    match t.get(key)? {
        Some(v) => Ok(Some(unseal(key.as_bytes(), v.value())?)),
        None => Ok(None),
    }
}

/// Writes one `meta` value, durably.
fn write_meta<T: Serialize>(db: &Database, key: &str, v: &T) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let tx = db.begin_write()?;
    tx.open_table(META)?.insert(key, seal(key.as_bytes(), v).as_slice())?;
    tx.commit()?;
    Ok(())
}

/// Reads every log entry once, checking each one's seal and that it sits at its own index:
/// damage anywhere in the log is found at open, not when a follower asks for the entry.
fn verify_log(db: &Database) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use redb::ReadableTable as _;
    let tx = db.begin_read()?;
    let t = tx.open_table(LOG)?;
    for item in t.iter()? {
        let (k, v) = item?;
        let entry: openraft::Entry<crate::TypeConfig> = unseal(&log_key(k.value()), v.value())?;
        if entry.log_id.index != k.value() {
            return Err(format!("the log entry at index {} says it is {}: the file is damaged", k.value(), entry.log_id.index).into());
        }
    }
    Ok(())
}

/// An error as openraft's `AnyError` wants it.
fn any(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
