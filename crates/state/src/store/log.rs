//! The Raft log and vote ([`openraft::storage::RaftLogStorage`]): entries by index in the
//! `log` table, the vote and the committed and last purged log ids in `meta`.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::{LOG, any, log_key, read_meta, seal, unseal, write_meta};
use crate::{NodeId, TypeConfig};

pub(super) const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
pub(super) const PURGED: &str = "last_purged";

/// The log store; cheap to clone (its clones are its readers).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

impl LogStore {
    pub(super) fn new(db: Arc<Database>) -> Self {
        LogStore { db }
    }

    fn last_entry(&self) -> std::result::Result<Option<Entry<TypeConfig>>, Box<dyn std::error::Error + Send + Sync>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(LOG)?;
        Ok(match t.last()? {
            Some((k, v)) => Some(unseal::<Entry<TypeConfig>>(&log_key(k.value()), v.value())?),
            None => None,
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let read = || -> std::result::Result<_, Box<dyn std::error::Error + Send + Sync>> {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(LOG)?;
            let mut out = Vec::new();
            for item in t.range::<u64>((range.start_bound().cloned(), range.end_bound().cloned()))? {
                let (k, v) = item?;
                out.push(unseal::<Entry<TypeConfig>>(&log_key(k.value()), v.value())?);
            }
            Ok(out)
        };
        read().map_err(|e| StorageIOError::read_logs(&any(e)).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = read_meta(&self.db, PURGED).map_err(|e| StorageIOError::read_logs(&any(e)))?;
        let last = self.last_entry().map_err(|e| StorageIOError::read_logs(&any(e)))?.map(|e| *e.get_log_id()).or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        write_meta(&self.db, VOTE, vote).map_err(|e| StorageIOError::write_vote(&any(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        read_meta(&self.db, VOTE).map_err(|e| StorageIOError::read_vote(&any(e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        write_meta(&self.db, COMMITTED, &committed).map_err(|e| StorageIOError::write(&any(e)).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        Ok(read_meta::<Option<LogId<NodeId>>>(&self.db, COMMITTED).map_err(|e| StorageIOError::read(&any(e)))?.flatten())
    }

    /// Appends in one durable transaction, then says so: openraft counts the entries as
    /// persisted only after the callback.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = || -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(LOG)?;
                for e in entries {
                    let index = e.get_log_id().index;
                    t.insert(index, seal(&log_key(index), &e).as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        let r = write().map_err(any);
        let failed = r.as_ref().err().map(|e| StorageIOError::write_logs(e).into());
        callback.log_io_completed(r);
        failed.map_or(Ok(()), Err)
    }

    /// Deletes the entries from `log_id` on (a leader's log overrides a follower's).
    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.delete_range(log_id.index..).map_err(|e| StorageIOError::write_logs(&any(e)).into())
    }

    /// Deletes the entries up to `log_id`, which a snapshot now holds.
    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let write = || -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let tx = self.db.begin_write()?;
            tx.open_table(super::META)?.insert(PURGED, seal(PURGED.as_bytes(), &log_id).as_slice())?;
            tx.open_table(LOG)?.retain_in::<u64, _>(..=log_id.index, |_, _| false)?;
            tx.commit()?;
            Ok(())
        };
        write().map_err(|e| StorageIOError::write_logs(&any(e)).into())
    }
}

impl LogStore {
    fn delete_range(&self, range: std::ops::RangeFrom<u64>) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let tx = self.db.begin_write()?;
        tx.open_table(LOG)?.retain_in::<u64, _>(range, |_, _| false)?;
        tx.commit()?;
        Ok(())
    }
}
