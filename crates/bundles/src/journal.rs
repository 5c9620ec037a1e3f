//! Each bundle's log, for `atoll bundle logs [-f]`: what happened to its requests (access lines
//! with the request ID, status and time taken), what it was denied, its cron runs and its
//! instances' starts, as structured entries. The last [`KEEP`] entries of each bundle are kept in
//! memory, and followers get new ones as they come. Values of secrets never get here: entries
//! are built from requests' method and path, statuses and the runner's errors without the
//! instance's stderr.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Entries kept per bundle.
pub const KEEP: usize = 1000;

/// One entry of a bundle's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// `access`, `denied`, `cron` or `instance`.
    pub kind: String,
    /// The request's ID (`x-request-id`), for access and denied entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The status answered, for access and cron entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Milliseconds taken, for access and cron entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// In words: `GET /hello`, `GET /x: the request ran longer than…`, `denied: …`.
    pub message: String,
}

impl Entry {
    pub fn new(kind: &str, message: impl Into<String>) -> Entry {
        let time = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        Entry { time, kind: kind.to_owned(), request_id: None, status: None, ms: None, message: message.into() }
    }
}

#[derive(Default)]
struct Book {
    entries: VecDeque<Entry>,
    tx: Option<broadcast::Sender<Entry>>,
}

/// The logs of every bundle; cheap to clone.
#[derive(Clone, Default)]
pub struct Journal {
    books: Arc<Mutex<HashMap<String, Book>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// Adds `e` to `bundle`'s log.
    pub fn add(&self, bundle: &str, e: Entry) {
        let mut books = self.books.lock().expect("not poisoned");
        let b = books.entry(bundle.to_owned()).or_default();
        if b.entries.len() == KEEP {
            b.entries.pop_front();
        }
        if let Some(tx) = &b.tx {
            let _ = tx.send(e.clone());
        }
        b.entries.push_back(e);
    }

    /// The last `tail` entries (all kept, if `None`) and, for following, a receiver of the
    /// entries after them.
    pub fn read(&self, bundle: &str, tail: Option<usize>) -> (Vec<Entry>, broadcast::Receiver<Entry>) {
        let mut books = self.books.lock().expect("not poisoned");
        let b = books.entry(bundle.to_owned()).or_default();
        let rx = b.tx.get_or_insert_with(|| broadcast::channel(256).0).subscribe();
        let skip = tail.map_or(0, |n| b.entries.len().saturating_sub(n));
        (b.entries.iter().skip(skip).cloned().collect(), rx)
    }

    /// Forgets a removed bundle's log (its followers' streams end).
    pub fn forget(&self, bundle: &str) {
        self.books.lock().expect("not poisoned").remove(bundle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_entries_are_kept_and_followers_get_new_ones() {
        let j = Journal::default();
        for i in 0..(KEEP + 5) {
            j.add("b", Entry::new("access", format!("GET /{i}")));
        }
        let (all, _) = j.read("b", None);
        assert_eq!((all.len(), all[0].message.as_str()), (KEEP, "GET /5"));
        let (last, mut rx) = j.read("b", Some(2));
        assert_eq!(
            last.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            [format!("GET /{}", KEEP + 3), format!("GET /{}", KEEP + 4)]
        );
        j.add("b", Entry::new("cron", "tick: 200"));
        assert_eq!(rx.try_recv().unwrap().message, "tick: 200");
        j.forget("b");
        assert!(matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Closed)));
        assert!(j.read("other", Some(10)).0.is_empty());
    }
}
