//! The state machine's data, as a pure function of the log: a map from keys to versioned JSON
//! documents. A document's version is the log index of the write that made it (as etcd's
//! `mod_revision`), so versions only grow, even across a delete and a re-create, and a
//! compare-and-set against a version cannot be fooled by an ABA.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::{Code, TooNew};

/// The schema every keyspace starts at; it moves on only by [`Request::Migrate`] entries, so
/// that members running different builds apply the same log to the same result.
pub const GENESIS: u32 = 1;

/// The first schema with [`Request::Txn`].
pub const TXN_SCHEMA: u32 = 2;

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
    Put {
        key: String,
        value: Value,
        expect: Expect,
    },
    Delete {
        key: String,
        expect: Expect,
    },
    /// Moves the island to schema `to`, running the migrations up to it (see
    /// [`crate::schema`]). Proposed by the leader only once every member reads `to`.
    Migrate {
        to: u32,
    },
    /// Every write in `ops` (puts and deletes only), or none: each one's expectation is
    /// checked against the keyspace before any is applied, and one that fails fails them all
    /// (etcd's `Txn` with its comparisons). From schema 2 on ([`crate::schema`]): builds before
    /// it cannot read it, so it is proposed only once the island has migrated.
    Txn {
        ops: Vec<Request>,
    },
}

impl Request {
    /// Whether this is a write the state machine takes: a transaction holds only puts and
    /// deletes, at least one.
    pub fn check(&self) -> Result<(), &'static str> {
        match self {
            Request::Txn { ops } if ops.is_empty() => Err("a transaction needs at least one write"),
            Request::Txn { ops } if ops.iter().any(|op| !matches!(op, Request::Put { .. } | Request::Delete { .. })) => {
                Err("a transaction holds only puts and deletes")
            }
            _ => Ok(()),
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Written: the key's new version (for a delete, the index of the delete).
    Done { version: u64 },
    /// Not written: the key's version was not the one expected. `current` is what it is.
    Conflict { current: Option<u64> },
    /// A transaction not written: the first of its writes whose key was not at the version
    /// expected, and what it is.
    TxnConflict { key: String, current: Option<u64> },
    /// Not written: a write the state machine does not take (see [`Request::check`]).
    Refused { reason: String },
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
        Keyspace { schema: GENESIS, docs: BTreeMap::new() }
    }

    pub fn get(&self, key: &str) -> Option<&Versioned> {
        self.docs.get(key)
    }

    /// Documents whose key starts with `prefix`, in key order.
    pub fn prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Versioned)> {
        self.docs.range(prefix.to_owned()..).take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Applies the write at log `index` with the migrations of `code`: the keys it changed
    /// (for the store to persist) and the response. Deterministic: every member applies the
    /// same entries to the same result. A migration to a schema `code` does not read is
    /// [`TooNew`], and changes nothing.
    pub fn apply(&mut self, index: u64, req: &Request, code: &Code) -> Result<(Vec<String>, Response), TooNew> {
        match req {
            Request::Migrate { to } => self.migrate(index, *to, code),
            Request::Txn { ops } => {
                // Refused before it is proposed (the leader checks the schema); a log that holds
                // one anyway refuses it, the same way on every member.
                if self.schema < TXN_SCHEMA {
                    return Ok((
                        vec![],
                        Response::Refused { reason: format!("transactions need schema {TXN_SCHEMA}; the island is at {}", self.schema) },
                    ));
                }
                for op in ops {
                    let (key, expect) = match op {
                        Request::Put { key, expect, .. } | Request::Delete { key, expect } => (key, *expect),
                        _ => return Ok((vec![], Response::Refused { reason: "a transaction holds only puts and deletes".into() })),
                    };
                    let current = self.docs.get(key).map(|d| d.version);
                    if !expect.holds(current) {
                        return Ok((vec![], Response::TxnConflict { key: key.clone(), current }));
                    }
                }
                let mut changed: Vec<String> = ops.iter().map(|op| self.write(index, op)).collect();
                changed.sort();
                changed.dedup();
                Ok((changed, Response::Done { version: index }))
            }
            Request::Put { key, expect, .. } | Request::Delete { key, expect } => {
                let current = self.docs.get(key).map(|d| d.version);
                if !expect.holds(current) {
                    return Ok((vec![], Response::Conflict { current }));
                }
                Ok((vec![self.write(index, req)], Response::Done { version: index }))
            }
        }
    }

    /// Applies a put or a delete whose expectation holds; the key it changed.
    fn write(&mut self, index: u64, req: &Request) -> String {
        match req {
            Request::Put { key, value, .. } => {
                self.docs.insert(key.clone(), Versioned { value: value.clone(), version: index });
                key.clone()
            }
            Request::Delete { key, .. } => {
                self.docs.remove(key);
                key.clone()
            }
            _ => unreachable!("only puts and deletes are written"),
        }
    }

    /// Runs `code`'s migrations past the current schema up to `to`; the documents they change
    /// take version `index` (a compare-and-set against the old shape then fails, as it should).
    /// Migrating to the current schema or an older one changes nothing.
    fn migrate(&mut self, index: u64, to: u32, code: &Code) -> Result<(Vec<String>, Response), TooNew> {
        if to > code.reads {
            return Err(TooNew { schema: to, reads: code.reads });
        }
        if to <= self.schema {
            return Ok((vec![], Response::Done { version: index }));
        }
        let mut values: BTreeMap<String, Value> = self.docs.iter().map(|(k, d)| (k.clone(), d.value.clone())).collect();
        for m in code.migrations.iter().filter(|m| m.to > self.schema && m.to <= to) {
            (m.run)(&mut values);
        }
        let mut changed: Vec<String> = self.docs.keys().filter(|k| !values.contains_key(*k)).cloned().collect();
        self.docs.retain(|k, _| values.contains_key(k));
        for (k, v) in values {
            if self.docs.get(&k).is_none_or(|d| d.value != v) {
                self.docs.insert(k.clone(), Versioned { value: v, version: index });
                changed.push(k);
            }
        }
        self.schema = to;
        changed.sort();
        Ok((changed, Response::Done { version: index }))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::schema::Migration;

    impl Keyspace {
        fn apply_now(&mut self, index: u64, req: &Request) -> (Vec<String>, Response) {
            self.apply(index, req, &Code::CURRENT).unwrap()
        }
    }

    fn put(key: &str, v: i64, expect: Expect) -> Request {
        Request::Put { key: key.into(), value: json!(v), expect }
    }

    #[test]
    fn compare_and_set_on_versions() {
        let mut ks = Keyspace::new();
        assert_eq!(ks.apply_now(1, &put("a", 1, Expect::Absent)).1, Response::Done { version: 1 });
        assert_eq!(ks.apply_now(2, &put("a", 2, Expect::Absent)).1, Response::Conflict { current: Some(1) });
        assert_eq!(ks.apply_now(3, &put("a", 3, Expect::Version(2))).1, Response::Conflict { current: Some(1) });
        assert_eq!(ks.apply_now(4, &put("a", 4, Expect::Version(1))).1, Response::Done { version: 4 });
        assert_eq!(ks.get("a").unwrap().value, json!(4));
        // Deleted and made again: the version keeps growing, so an old expectation fails.
        assert_eq!(ks.apply_now(5, &Request::Delete { key: "a".into(), expect: Expect::Version(4) }).1, Response::Done { version: 5 });
        assert_eq!(ks.apply_now(6, &put("a", 6, Expect::Any)).1, Response::Done { version: 6 });
        assert_eq!(ks.apply_now(7, &put("a", 7, Expect::Version(4))).1, Response::Conflict { current: Some(6) });
    }

    #[test]
    fn prefix_lists_only_its_keys() {
        let mut ks = Keyspace::new();
        for (i, k) in ["members/a", "members/b", "membersx", "invites/a"].iter().enumerate() {
            ks.apply_now(i as u64 + 1, &put(k, 0, Expect::Any));
        }
        let keys: Vec<_> = ks.prefix("members/").map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["members/a", "members/b"]);
    }

    /// Schema 2 of the tests: `things/` documents' `addr` is called `address`.
    fn rename_addr(docs: &mut BTreeMap<String, Value>) {
        for (_, v) in docs.iter_mut().filter(|(k, _)| k.starts_with("things/")) {
            if let Some(a) = v.as_object_mut().and_then(|o| o.remove("addr")) {
                v["address"] = a;
            }
        }
    }
    static TO_2: &[Migration] = &[Migration { to: 2, what: "things: addr is address", run: rename_addr }];

    #[test]
    fn a_migration_rewrites_documents_once_and_versions_what_it_changed() {
        let (v1, v2) = (Code { reads: 1, migrations: &[] }, Code { reads: 2, migrations: TO_2 });
        let mut ks = Keyspace::new();
        ks.apply(1, &Request::Put { key: "things/a".into(), value: json!({"addr": "x"}), expect: Expect::Any }, &v1).unwrap();
        ks.apply(2, &Request::Put { key: "kv/b".into(), value: json!({"addr": "y"}), expect: Expect::Any }, &v1).unwrap();
        let before = ks.clone();
        assert_eq!(ks.apply(3, &Request::Migrate { to: 2 }, &v1), Err(TooNew { schema: 2, reads: 1 }));
        assert_eq!(ks, before, "an old build changes nothing it cannot read");
        let (changed, _) = ks.apply(3, &Request::Migrate { to: 2 }, &v2).unwrap();
        assert_eq!(changed, ["things/a"]);
        assert_eq!((ks.schema, ks.get("things/a").unwrap()), (2, &Versioned { value: json!({"address": "x"}), version: 3 }));
        assert_eq!(ks.get("kv/b").unwrap().version, 2, "untouched documents keep their versions");
        assert_eq!(ks.apply(4, &Request::Migrate { to: 2 }, &v2).unwrap().0, Vec::<String>::new(), "a repeated migration is a no-op");
        assert_eq!(ks.apply(5, &Request::Migrate { to: 1 }, &v1).unwrap().0, Vec::<String>::new(), "so is an older one, on any build");
    }

    #[test]
    fn a_transaction_writes_all_or_nothing_and_only_from_its_schema() {
        let mut ks = Keyspace::new();
        ks.apply_now(1, &put("a", 1, Expect::Any));
        let txn = |expect_a| Request::Txn {
            ops: vec![put("a", 2, expect_a), put("b", 2, Expect::Absent), Request::Delete { key: "c".into(), expect: Expect::Any }],
        };
        let refused = ks.apply_now(2, &txn(Expect::Version(1))).1;
        assert!(matches!(refused, Response::Refused { .. }), "schema 1 has no transactions: {refused:?}");
        ks.apply_now(3, &Request::Migrate { to: TXN_SCHEMA });
        let before = ks.clone();
        assert_eq!(ks.apply_now(4, &txn(Expect::Version(9))), (vec![], Response::TxnConflict { key: "a".into(), current: Some(1) }));
        assert_eq!(ks, before, "a failed comparison writes nothing");
        assert_eq!(ks.apply_now(5, &txn(Expect::Version(1))), (vec!["a".into(), "b".into(), "c".into()], Response::Done { version: 5 }));
        assert_eq!((ks.get("a").unwrap().version, ks.get("b").unwrap().version), (5, 5));
        let nested = Request::Txn { ops: vec![Request::Migrate { to: 3 }] };
        assert!(nested.check().is_err() && Request::Txn { ops: vec![] }.check().is_err());
        assert!(matches!(ks.apply_now(6, &nested).1, Response::Refused { .. }));
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
                let (changed, resp) = a.apply_now(index, r);
                prop_assert_eq!(b.apply_now(index, r), (changed.clone(), resp.clone()));
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
