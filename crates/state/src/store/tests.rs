//! The store against openraft's own storage test suite, and across a reopen.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

use super::{LogStore, StateMachine, open};
use crate::{NodeId, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().unwrap();
        let (log, sm) = open(&dir.path().join("state.redb")).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn an_epoch_is_zero_until_set_and_survives_opening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    assert_eq!(super::epoch(&path).unwrap(), 0, "a new store");
    super::set_epoch(&path, 3).unwrap();
    drop(open(&path).unwrap());
    assert_eq!(super::epoch(&path).unwrap(), 3);
}

#[test]
fn passes_openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

/// What openraft was told is persisted survives a reopen (a restart, or kill -9): the vote,
/// the log, the committed id, the state machine and the snapshot.
#[tokio::test]
async fn everything_survives_a_reopen() {
    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};
    use openraft::testing::log_id;
    use openraft::{Entry, EntryPayload, Vote};
    use serde_json::json;

    use crate::{Expect, Request, Response};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let put = |i: u64, key: &str, v: i64| Entry::<TypeConfig> {
        log_id: log_id(1, 0, i),
        payload: EntryPayload::Normal(Request::Put { key: key.into(), value: json!(v), expect: Expect::Any }),
    };
    {
        let (mut log, mut sm) = open(&path).unwrap();
        log.save_vote(&Vote::new(1, 0)).await.unwrap();
        let entries = vec![put(1, "a", 1), put(2, "b", 2), put(3, "a", 3)];
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_committed(Some(log_id(1, 0, 3))).await.unwrap();
        let out = sm.apply(entries).await.unwrap();
        assert_eq!(out[2], Response::Done { version: 3 });
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let e = vec![put(4, "c", 4)];
        log.blocking_append(e.clone()).await.unwrap();
        sm.apply(e).await.unwrap();
    }
    let (mut log, mut sm) = open(&path).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 0)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 0, 3)));
    assert_eq!(log.try_get_log_entries(1..5).await.unwrap().len(), 4);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 0, 4)));
    let r = sm.reader();
    assert_eq!(r.get("a").unwrap().value, json!(3));
    assert_eq!(r.get("a").unwrap().version, 3);
    assert_eq!(r.get("c").unwrap().version, 4);
    let snap = sm.get_current_snapshot().await.unwrap().expect("the snapshot is kept");
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 0, 3)));
}

/// A file that is not a state file (or is damaged) is refused when opened, with its path:
/// it is never read as an empty state.
#[test]
fn a_damaged_file_is_refused_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    let err = open(&path).unwrap_err();
    assert!(err.to_string().contains("state.redb"), "{err}");
}

/// Damage anywhere in the file — a flipped bit at any of ~400 places, or a truncation — is
/// refused at open, or touched nothing the store reads: never read as other data, never a
/// panic (redb checksums none of a table's pages; the seals do).
#[test]
fn a_flipped_bit_or_a_truncation_is_refused_at_open_never_read_as_other_data() {
    use openraft::storage::{RaftLogReader, RaftLogStorageExt, RaftStateMachine};
    use openraft::testing::log_id;
    use openraft::{Entry, EntryPayload};
    use serde_json::json;

    use crate::{Expect, Request};
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let put = |i: u64| Entry::<TypeConfig> {
        log_id: log_id(1, 0, i),
        payload: EntryPayload::Normal(Request::Put {
            key: format!("key{}", i % 50),
            value: json!({"v": i, "pad": "x".repeat(100)}),
            expect: Expect::Any,
        }),
    };
    let want = rt.block_on(async {
        let (mut log, mut sm) = open(&path).unwrap();
        for c in 0..20 {
            let entries: Vec<_> = (c * 20 + 1..=c * 20 + 20).map(put).collect();
            log.blocking_append(entries.clone()).await.unwrap();
            sm.apply(entries).await.unwrap();
        }
        sm.reader().with(|k| k.clone())
    });
    let orig = std::fs::read(&path).unwrap();
    let (mut refused, mut harmless) = (0, 0);
    for off in (0..orig.len()).step_by(orig.len() / 400 + 1) {
        let mut damaged = orig.clone();
        damaged[off] ^= 0x04;
        std::fs::write(&path, &damaged).unwrap();
        let Ok((mut log, sm)) = open(&path) else {
            refused += 1;
            continue;
        };
        let entries = rt.block_on(log.try_get_log_entries(1..401)).unwrap();
        assert!(entries == (1..401).map(put).collect::<Vec<_>>(), "a flipped bit at {off} changed the log");
        assert!(sm.reader().with(|k| *k == want), "a flipped bit at {off} changed the documents");
        harmless += 1;
    }
    assert!(refused > 100 && harmless > 0, "{refused} refused, {harmless} harmless");
    for cut in [orig.len() / 2, orig.len() - 4096, orig.len() - 1] {
        std::fs::write(&path, &orig[..cut]).unwrap();
        assert!(open(&path).is_err(), "truncated to {cut} of {} bytes", orig.len());
    }
}
