//! The island's key-value store, Consul's KV in miniature: JSON values under `kv/<key>` in the
//! replicated state, written by any member (forwarded to the Raft leader), with Consul's
//! check-and-set (`cas`: the version the key must be at; 0: it must be absent). Reads are
//! linearizable (ReadIndex on the leader) unless the caller accepts this member's replica
//! (`stale`). It is what operators and scripts share across the island, and what the
//! consistency tests drive, through the same path the rest of the state takes.

use atoll_state::keyspace::Versioned;
use atoll_state::{Expect, Request, Response};

use crate::manager::{IslandError, Manager};

/// Longest key, in bytes.
pub const MAX_KEY: usize = 128;
/// Largest value, in bytes of JSON.
pub const MAX_VALUE: usize = 64 << 10;

/// Why a key-value request was refused.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("invalid key {0:?}: use 1 to 128 of A-Z a-z 0-9 . _ - (not \".\" or \"..\")")]
    Key(String),
    #[error("the value is {0} bytes of JSON; at most {MAX_VALUE}")]
    TooLarge(usize),
    /// `current`/`expected`: `exists (version N)`, `does not exist`.
    #[error("{key} {current}, and --cas asked that it {expected}: read it again and retry")]
    Conflict { key: String, expected: String, current: String },
}

/// Whether `key` may name a value: `[A-Za-z0-9._-]{1,128}`, not `.` or `..` (which URLs
/// would take as path steps).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY
        && key != "."
        && key != ".."
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn path(key: &str) -> Result<String, IslandError> {
    if !valid_key(key) {
        // Quoted in full only while short: the message is read, not the key.
        let shown =
            if key.len() > 140 { format!("{}… ({} bytes)", &key[..key.floor_char_boundary(64)], key.len()) } else { key.to_owned() };
        return Err(KvError::Key(shown).into());
    }
    Ok(format!("kv/{key}"))
}

fn expect(cas: Option<u64>) -> Expect {
    match cas {
        None => Expect::Any,
        Some(0) => Expect::Absent,
        Some(v) => Expect::Version(v),
    }
}

fn outcome(key: &str, cas: Option<u64>, r: Response) -> Result<u64, IslandError> {
    match r {
        Response::Done { version } => Ok(version),
        Response::Conflict { current } => Err(KvError::Conflict {
            key: key.to_owned(),
            // Found by QA: "nokey is at version absent, not 5" read as nonsense.
            expected: match cas {
                Some(0) | None => "does not exist (--cas 0)".into(),
                Some(v) => format!("is at version {v}"),
            },
            current: current.map_or_else(|| "does not exist".into(), |v| format!("is at version {v}")),
        }
        .into()),
        Response::Refused { reason } => Err(crate::consensus::ConsensusError::Raft(reason).into()),
        Response::Empty | Response::TxnConflict { .. } => {
            Err(crate::consensus::ConsensusError::Raft("the write had no effect".into()).into())
        }
    }
}

impl Manager {
    /// The value at `key` and its version: as of now, or (`stale`) as this member last applied it.
    pub async fn kv_get(&self, key: &str, stale: bool) -> Result<Option<Versioned>, IslandError> {
        self.present()?;
        let p = path(key)?;
        Ok(self.consensus.read(&p, !stale).await?)
    }

    /// Sets `key` to `value`, if it is at version `cas` (0: absent; none: whatever it is).
    /// Returns the new version.
    pub async fn kv_put(&self, key: &str, value: serde_json::Value, cas: Option<u64>) -> Result<u64, IslandError> {
        self.present()?;
        let p = path(key)?;
        let size = serde_json::to_vec(&value).map_or(0, |v| v.len());
        if size > MAX_VALUE {
            return Err(KvError::TooLarge(size).into());
        }
        let r = self.consensus.write(Request::Put { key: p, value, expect: expect(cas) }).await?;
        outcome(key, cas, r)
    }

    /// Deletes `key`, if it is at version `cas` (none: whatever it is).
    pub async fn kv_delete(&self, key: &str, cas: Option<u64>) -> Result<u64, IslandError> {
        self.present()?;
        let p = path(key)?;
        let r = self.consensus.write(Request::Delete { key: p, expect: expect(cas) }).await?;
        outcome(key, cas, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_check_and_set_as_consul_spells_them() {
        for k in ["a", "stack.blog", "x_y-z", &"k".repeat(128)] {
            assert!(valid_key(k), "{k}");
        }
        for k in ["", "a/b", "a b", "é", &"k".repeat(129), "../x", ".", ".."] {
            assert!(!valid_key(k), "{k}");
        }
        assert_eq!(expect(None), Expect::Any);
        assert_eq!(expect(Some(0)), Expect::Absent);
        assert_eq!(expect(Some(7)), Expect::Version(7));
        let e = outcome("k", Some(3), Response::Conflict { current: Some(5) }).unwrap_err().to_string();
        assert_eq!(e, "k is at version 5, and --cas asked that it is at version 3: read it again and retry");
        let e = outcome("k", Some(0), Response::Conflict { current: Some(5) }).unwrap_err().to_string();
        assert!(e.starts_with("k is at version 5, and --cas asked that it does not exist (--cas 0)"), "{e}");
        let e = outcome("k", Some(5), Response::Conflict { current: None }).unwrap_err().to_string();
        assert!(e.starts_with("k does not exist, and --cas asked that it is at version 5"), "{e}");
        assert_eq!(outcome("k", None, Response::Done { version: 9 }).unwrap(), 9);
    }
}
