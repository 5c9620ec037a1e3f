//! A member's copy of the Raft log and of the state machine, in one redb file
//! (`<data>/island/state.redb`): redb commits are atomic and, at the default durability,
//! fsynced before they return, so whatever openraft is told is persisted is (an acknowledged
//! write survives kill -9 and power loss), and a torn write is never seen. redb checksums its
//! pages: a damaged file fails to open instead of serving bad data.
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

pub use log::LogStore;
pub use recover::{Recovered, force_voters};
pub use sm::{Reader, SnapshotBuilder, StateMachine};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("docs");

/// Opening the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the state file {path}")]
    Open { path: String, source: redb::DatabaseError },
    #[error("reading the state file {path}")]
    Read { path: String, source: Box<dyn std::error::Error + Send + Sync> },
}

/// Opens (or creates) the store at `path`: the log store and the state machine, which share
/// the file.
pub fn open(path: &Path) -> Result<(LogStore, StateMachine), StoreError> {
    let db = Database::create(path).map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
    let db = Arc::new(db);
    init_tables(&db).map_err(|source| StoreError::Read { path: path.display().to_string(), source })?;
    let sm = StateMachine::load(db.clone()).map_err(|source| StoreError::Read { path: path.display().to_string(), source })?;
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

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("state types serialise")
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(b)
}

/// Reads one `meta` value.
fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, Box<dyn std::error::Error + Send + Sync>> {
    let tx = db.begin_read()?;
    let t = tx.open_table(META)?;
    match t.get(key)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

/// Writes one `meta` value, durably.
fn write_meta<T: Serialize>(db: &Database, key: &str, v: &T) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let tx = db.begin_write()?;
    tx.open_table(META)?.insert(key, encode(v).as_slice())?;
    tx.commit()?;
    Ok(())
}

/// An error as openraft's `AnyError` wants it.
fn any(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
