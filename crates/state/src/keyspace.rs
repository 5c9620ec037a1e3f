//! The state machine's data, as a pure function of the log: a map from keys to versioned JSON
//! documents. A document's version is the log index of the write that made it (as etcd's
//! `mod_revision`), so versions only grow, even across a delete and a re-create, and a
//! compare-and-set against a version cannot be fooled by an ABA.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The keyspace's schema version: what the documents' shapes are. A member whose code knows
/// an older schema applies entries it cannot read as no-ops and says so (see [`Keyspace::apply`]).
pub const SCHEMA: u32 = 1;

/// A document and the index of the write that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub value: Value,
    pub version: u64,
}

/// What a write requires of the key's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Nothing: the write wins whatever is there.
    Any,
    /// The key must not exist.
    Absent,
    /// The key must exist at exactly this version.
    Version(u64),
}

impl Expect {
    fn holds(self, current: Option<u64>) -> bool {
        match self {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Version(v) => current == Some(v),
        }
    }
}

/// A write to the keyspace: the Raft log's application entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Put { key: String, value: Value, expect: Expect },
    Delete { key: String, expect: Expect },
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Written: the key's new version (for a delete, the index of the delete).
    Done { version: u64 },
    /// Not written: the key's version was not the one expected. `current` is what it is.
    Conflict { current: Option<u64> },
    /// Written by the membership or a blank entry: nothing to say.
    Empty,
}

/// The documents, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyspace {
    pub schema: u32,
    pub docs: BTreeMap<String, Versioned>,
}

impl Keyspace {
    pub fn new() -> Self {
        Keyspace { schema: SCHEMA, docs: BTreeMap::new() }
    }

    pub fn get(&self, key: &str) -> Option<&Versioned> {
        self.docs.get(key)
    }

    /// Documents whose key starts with `prefix`, in key order.
    pub fn prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Versioned)> {
        self.docs.range(prefix.to_owned()..).take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Applies the write at log `index`: the keys it changed (for the store to persist) and
    /// the response. Deterministic: every member applies the same entries to the same result.
    pub fn apply(&mut self, index: u64, req: &Request) -> (Vec<String>, Response) {
        let key = match req {
            Request::Put { key, .. } | Request::Delete { key, .. } => key,
        };
        let current = self.docs.get(key).map(|d| d.version);
        let expect = match req {
            Request::Put { expect, .. } | Request::Delete { expect, .. } => *expect,
        };
        if !expect.holds(current) {
            return (vec![], Response::Conflict { current });
        }
        match req {
            Request::Put { value, .. } => {
                self.docs.insert(key.clone(), Versioned { value: value.clone(), version: index });
            }
            Request::Delete { .. } => {
                self.docs.remove(key);
            }
        }
        (vec![key.clone()], Response::Done { version: index })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn put(key: &str, v: i64, expect: Expect) -> Request {
        Request::Put { key: key.into(), value: json!(v), expect }
    }

    #[test]
    fn compare_and_set_on_versions() {
        let mut ks = Keyspace::new();
        assert_eq!(ks.apply(1, &put("a", 1, Expect::Absent)).1, Response::Done { version: 1 });
        assert_eq!(ks.apply(2, &put("a", 2, Expect::Absent)).1, Response::Conflict { current: Some(1) });
        assert_eq!(ks.apply(3, &put("a", 3, Expect::Version(2))).1, Response::Conflict { current: Some(1) });
        assert_eq!(ks.apply(4, &put("a", 4, Expect::Version(1))).1, Response::Done { version: 4 });
        assert_eq!(ks.get("a").unwrap().value, json!(4));
        // Deleted and made again: the version keeps growing, so an old expectation fails.
        assert_eq!(ks.apply(5, &Request::Delete { key: "a".into(), expect: Expect::Version(4) }).1, Response::Done { version: 5 });
        assert_eq!(ks.apply(6, &put("a", 6, Expect::Any)).1, Response::Done { version: 6 });
        assert_eq!(ks.apply(7, &put("a", 7, Expect::Version(4))).1, Response::Conflict { current: Some(6) });
    }

    #[test]
    fn prefix_lists_only_its_keys() {
        let mut ks = Keyspace::new();
        for (i, k) in ["members/a", "members/b", "membersx", "invites/a"].iter().enumerate() {
            ks.apply(i as u64 + 1, &put(k, 0, Expect::Any));
        }
        let keys: Vec<_> = ks.prefix("members/").map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["members/a", "members/b"]);
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let key = prop_oneof![Just("a".to_owned()), Just("b".to_owned()), Just("c".to_owned())];
        let expect = prop_oneof![Just(Expect::Any), Just(Expect::Absent), (0u64..8).prop_map(Expect::Version)];
        prop_oneof![
            (key.clone(), any::<i32>(), expect.clone()).prop_map(|(key, v, expect)| Request::Put { key, value: json!(v), expect }),
            (key, expect).prop_map(|(key, expect)| Request::Delete { key, expect }),
        ]
    }

    proptest! {
        /// Replaying the same log gives the same keyspace and responses (what makes it a state
        /// machine), and every version is the index of the write that made it.
        #[test]
        fn deterministic_and_versions_are_indices(reqs in proptest::collection::vec(arb_request(), 0..50)) {
            let (mut a, mut b) = (Keyspace::new(), Keyspace::new());
            for (i, r) in reqs.iter().enumerate() {
                let index = i as u64 + 1;
                let (changed, resp) = a.apply(index, r);
                prop_assert_eq!(b.apply(index, r), (changed.clone(), resp.clone()));
                match resp {
                    Response::Done { version } => { prop_assert_eq!(version, index); prop_assert_eq!(changed.len(), 1); }
                    _ => prop_assert!(changed.is_empty()),
                }
                prop_assert!(a.docs.values().all(|d| d.version <= index));
            }
            prop_assert_eq!(a, b);
        }
    }
}
