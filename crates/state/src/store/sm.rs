//! The state machine ([`openraft::storage::RaftStateMachine`]): the [`Keyspace`] in memory and
//! in the `docs` table, the last applied log id and membership in `meta`, written in the same
//! transaction as the documents an apply changed; snapshots are the whole keyspace as JSON.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{Entry, EntryPayload, LogId, OptionalSend, RaftLogId, SnapshotMeta, StorageError, StorageIOError, StoredMembership};
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::{DOCS, META, any, decode, encode, read_meta, seal, unseal};
use crate::keyspace::{GENESIS, Keyspace, Response, Versioned};
use crate::schema::Code;
use crate::{NodeId, TypeConfig};

pub(super) const APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";
const SCHEMA: &str = "schema";
const SNAPSHOT: &str = "snapshot";

type Membership = StoredMembership<NodeId, openraft::BasicNode>;
type Result<T> = std::result::Result<T, StorageError<NodeId>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The state machine. Its keyspace is shared with [`Reader`]s, which read locally: as fresh
/// as this member's last apply.
pub struct StateMachine {
    db: Arc<Database>,
    keyspace: Arc<RwLock<Keyspace>>,
    applied: Option<LogId<NodeId>>,
    membership: Membership,
    /// Snapshots built so far by this process, for unique snapshot ids.
    built: u64,
    /// The schemas and migrations this build knows.
    code: Code,
    /// The store's epoch (`super::EPOCH`), as opened.
    epoch: u64,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine").field("applied", &self.applied).finish()
    }
}

/// A local, read-only view of a member's keyspace.
#[derive(Clone)]
pub struct Reader(Arc<RwLock<Keyspace>>);

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reader")
    }
}

impl Reader {
    /// The document at `key`, as this member last applied it.
    pub fn get(&self, key: &str) -> Option<Versioned> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// Runs `f` on the whole keyspace, as this member last applied it.
    pub fn with<T>(&self, f: impl FnOnce(&Keyspace) -> T) -> T {
        f(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A snapshot as stored: its metadata and the keyspace.
#[derive(Serialize, Deserialize)]
struct Stored {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

impl StateMachine {
    /// A local reader of this state machine's keyspace.
    pub fn reader(&self) -> Reader {
        Reader(self.keyspace.clone())
    }

    fn keyspace(&self) -> std::sync::RwLockWriteGuard<'_, Keyspace> {
        self.keyspace.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's epoch (recoveries of the island it has been through; see `store::epoch`).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The schema of the state this member has applied.
    pub fn schema(&self) -> u32 {
        self.keyspace.read().unwrap_or_else(|e| e.into_inner()).schema
    }

    pub(super) fn load(db: Arc<Database>, code: Code) -> std::result::Result<Self, BoxError> {
        let mut keyspace = Keyspace::new();
        keyspace.schema = read_meta(&db, SCHEMA)?.unwrap_or(GENESIS);
        {
            let tx = db.begin_read()?;
            let t = tx.open_table(DOCS)?;
            for item in t.iter()? {
                let (k, v) = item?;
                keyspace.docs.insert(k.value().to_owned(), unseal::<Versioned>(k.value().as_bytes(), v.value())?);
            }
        }
        let applied = read_meta(&db, APPLIED)?.flatten();
        let membership = read_meta(&db, MEMBERSHIP)?.unwrap_or_default();
        let epoch = read_meta(&db, super::EPOCH)?.unwrap_or(0);
        Ok(StateMachine { db, keyspace: Arc::new(RwLock::new(keyspace)), applied, membership, built: 0, code, epoch })
    }

    /// Replaces the whole persisted state machine with `keyspace` at `applied`, durably.
    fn replace(&self, keyspace: &Keyspace, applied: Option<LogId<NodeId>>, membership: &Membership) -> std::result::Result<(), BoxError> {
        let tx = self.db.begin_write()?;
        {
            let mut docs = tx.open_table(DOCS)?;
            docs.retain(|_, _| false)?;
            for (k, v) in &keyspace.docs {
                docs.insert(k.as_str(), seal(k.as_bytes(), v).as_slice())?;
            }
            let mut meta = tx.open_table(META)?;
            meta.insert(APPLIED, seal(APPLIED.as_bytes(), &applied).as_slice())?;
            meta.insert(MEMBERSHIP, seal(MEMBERSHIP.as_bytes(), membership).as_slice())?;
            meta.insert(SCHEMA, seal(SCHEMA.as_bytes(), &keyspace.schema).as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership)> {
        Ok((self.applied, self.membership.clone()))
    }

    /// Applies a batch in one durable transaction: the documents it changed, the schema, the
    /// last applied log id and the membership move together. An entry this build cannot apply
    /// (a migration to a schema it does not read) stops the batch there: what came before it
    /// is persisted, and the error stops this member's Raft (fail-stop: it serves what it had,
    /// never a guess at what it could not read).
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut changed = std::collections::BTreeSet::new();
        let mut keyspace = self.keyspace.write().unwrap_or_else(|e| e.into_inner());
        let schema = keyspace.schema;
        let mut failed = None;
        for e in entries {
            let id = *e.get_log_id();
            match &e.payload {
                EntryPayload::Blank => responses.push(Response::Empty),
                EntryPayload::Normal(req) => match keyspace.apply(id.index, req, &self.code) {
                    Ok((keys, resp)) => {
                        changed.extend(keys);
                        responses.push(resp);
                    }
                    Err(too_new) => {
                        failed = Some(StorageIOError::apply(id, &too_new));
                        break;
                    }
                },
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(id), m.clone());
                    responses.push(Response::Empty);
                }
            }
            self.applied = Some(id);
        }
        let write = || -> std::result::Result<(), BoxError> {
            let tx = self.db.begin_write()?;
            {
                let mut docs = tx.open_table(DOCS)?;
                for k in &changed {
                    match keyspace.docs.get(k) {
                        Some(v) => docs.insert(k.as_str(), seal(k.as_bytes(), v).as_slice()).map(drop)?,
                        None => docs.remove(k.as_str()).map(drop)?,
                    }
                }
                let mut meta = tx.open_table(META)?;
                meta.insert(APPLIED, seal(APPLIED.as_bytes(), &self.applied).as_slice())?;
                meta.insert(MEMBERSHIP, seal(MEMBERSHIP.as_bytes(), &self.membership).as_slice())?;
                if keyspace.schema != schema {
                    meta.insert(SCHEMA, seal(SCHEMA.as_bytes(), &keyspace.schema).as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        write().map_err(|e| StorageIOError::write_state_machine(&any(e)))?;
        drop(keyspace);
        match failed {
            Some(e) => {
                tracing::error!(error = %e, "stopped applying the island's log");
                Err(e.into())
            }
            None => Ok(responses),
        }
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.built += 1;
        SnapshotBuilder {
            db: self.db.clone(),
            keyspace: self.keyspace().clone(),
            applied: self.applied,
            membership: self.membership.clone(),
            seq: self.built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Replaces the state machine with a snapshot from the leader (this member was too far
    /// behind, or new), and keeps it as the current snapshot.
    async fn install_snapshot(&mut self, meta: &SnapshotMeta<NodeId, openraft::BasicNode>, snapshot: Box<Cursor<Vec<u8>>>) -> Result<()> {
        let data = snapshot.into_inner();
        let keyspace: Keyspace = decode(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        if keyspace.schema > self.code.reads {
            let e = crate::schema::TooNew { schema: keyspace.schema, reads: self.code.reads };
            tracing::error!(error = %e, "refused the leader's snapshot");
            return Err(StorageIOError::read_snapshot(Some(meta.signature()), &e).into());
        }
        let stored = Stored { meta: meta.clone(), data };
        self.replace(&keyspace, meta.last_log_id, &meta.last_membership)
            .and_then(|()| super::write_meta(&self.db, SNAPSHOT, &stored))
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &any(e)))?;
        *self.keyspace() = keyspace;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let stored: Option<Stored> = read_meta(&self.db, SNAPSHOT).map_err(|e| StorageIOError::read_snapshot(None, &any(e)))?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

/// Builds a snapshot of the state machine as it was when the builder was made.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    keyspace: Keyspace,
    applied: Option<LogId<NodeId>>,
    membership: Membership,
    seq: u64,
}

impl std::fmt::Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuilder").field("applied", &self.applied).finish()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let data = encode(&self.keyspace);
        let snapshot_id = match self.applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, self.seq),
            None => format!("0-0-{}", self.seq),
        };
        let meta = SnapshotMeta { last_log_id: self.applied, last_membership: self.membership.clone(), snapshot_id };
        let stored = Stored { meta: meta.clone(), data: data.clone() };
        super::write_meta(&self.db, SNAPSHOT, &stored).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &any(e)))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}
