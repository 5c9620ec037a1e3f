//! Going on without lost voters (`atoll island recover`), as hashicorp/raft's `RecoverCluster`
//! and etcd's `--force-new-cluster` do it: with the member stopped, its log gets one more
//! entry, a membership whose only voters are the given ones, in a term no leader ever had, and
//! its vote moves to that term. Started again, the member finds itself (with the other given
//! voters) a majority, elects a leader and commits its log, the new membership with it; the
//! members left out follow it when they come back (the term is newer than any they know).
//!
//! The store's *epoch* (see [`super::EPOCH`]) goes up by one: members of the older epoch are
//! refused by this one's and re-sync from it when they meet it, so that voters lost to the
//! recovery that elect a leader among themselves (while this member is down) never merge their
//! diverging log into the recovered island's.
//!
//! This gives up Raft's guarantee on purpose, and only the operator may ask for it: writes
//! acknowledged by a majority that did not include this member and that it never received are
//! lost, and entries in its log that were never committed become committed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogId as _, Vote};
use redb::{Database, ReadableTable};

use super::{LOG, META, StoreError, log_key, read_meta, seal, unseal};
use crate::{NodeId, TypeConfig};

/// What the forced membership was written after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The index of the new membership entry, and its term.
    pub index: u64,
    pub term: u64,
    /// How far this member had applied: entries after this one were in its log but not known
    /// to be committed.
    pub applied: Option<u64>,
    /// The store's epoch from now on.
    pub epoch: u64,
}

/// Appends a membership with `voters` (a subset of `nodes`, which keeps every member it
/// names, the others as learners) to the store at `path`, in a new term led by `me`. The
/// member must be stopped: a file still open (openraft's tasks let go of it a moment after
/// `shutdown`) is waited for, up to 10 s. Blocks.
pub fn force_voters(
    path: &Path,
    me: NodeId,
    voters: BTreeSet<NodeId>,
    nodes: BTreeMap<NodeId, BasicNode>,
) -> Result<Recovered, StoreError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Read { path: path.display().to_string(), source };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let db = loop {
        match Database::open(path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => break r.map_err(|source| StoreError::Open { path: path.display().to_string(), source })?,
        }
    };
    let run = || -> Result<Recovered, Box<dyn std::error::Error + Send + Sync>> {
        let last: Option<LogId<NodeId>> = {
            let tx = redb::ReadableDatabase::begin_read(&db)?;
            let t = tx.open_table(LOG)?;
            match t.last()? {
                Some((k, v)) => Some(*unseal::<Entry<TypeConfig>>(&log_key(k.value()), v.value())?.get_log_id()),
                None => None,
            }
        };
        let last = match last {
            Some(l) => Some(l),
            None => read_meta::<LogId<NodeId>>(&db, super::log::PURGED)?,
        };
        let vote: Option<Vote<NodeId>> = read_meta(&db, super::log::VOTE)?;
        let term = vote.map_or(0, |v| v.leader_id().get_term()).max(last.map_or(0, |l| l.leader_id.term)) + 1;
        let index = last.map_or(0, |l| l.index + 1);
        let applied: Option<LogId<NodeId>> = read_meta::<Option<LogId<NodeId>>>(&db, super::sm::APPLIED)?.flatten();
        let entry = Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(term, me), index),
            payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)),
        };
        let epoch = read_meta::<u64>(&db, super::EPOCH)?.unwrap_or(0) + 1;
        let tx = db.begin_write()?;
        tx.open_table(META)?.insert(super::EPOCH, seal(super::EPOCH.as_bytes(), &epoch).as_slice())?;
        tx.open_table(LOG)?.insert(index, seal(&log_key(index), &entry).as_slice())?;
        tx.open_table(META)?.insert(super::log::VOTE, seal(super::log::VOTE.as_bytes(), &Vote::new(term, me)).as_slice())?;
        tx.commit()?;
        Ok(Recovered { index, term, applied: applied.map(|a| a.index), epoch })
    };
    run().map_err(failed)
}
