//! The state's schema: which shapes of documents a build reads, the migrations from one
//! schema to the next, and the plan that moves a live island whose members run different
//! builds (a rolling upgrade) to a newer schema only once every member can read it.
//!
//! The rule, as Nomad's and Consul's "every server meets the minimum version" gates, but for
//! every member (learners apply the log too): a build reads schemas `1..=reads`. The island's
//! *active* schema lives in the keyspace and changes only by a [`Request::Migrate`] entry in
//! the log, which the leader proposes when [`plan`] says every member reads the target. So
//! during an upgrade the island keeps writing the old shapes, and every member applies every
//! entry the same way. A member whose build is older than an entry it is given (it was down
//! during the upgrade and came back with its old binary, or a copy of a newer state file) stops
//! applying — fail-stop, never a guess — and says "upgrade Atoll" ([`TooNew`]).
//!
//! What needs a new schema: a change an older build would misread (a field renamed, moved or
//! given a new meaning, a new kind of [`Request`]). What does not: a new optional field or a
//! new kind of document — [`crate::desired`] records keep fields they do not know when they are
//! rewritten, so older builds carry them through unharmed.
//!
//! [`Request::Migrate`]: crate::Request::Migrate
//! [`Request`]: crate::Request

use std::collections::BTreeMap;

use serde_json::Value;

/// The newest schema this build reads and writes.
pub const SCHEMA: u32 = 2;

/// The migrations this build knows, oldest first.
pub static MIGRATIONS: &[Migration] = &[Migration {
    to: crate::keyspace::TXN_SCHEMA,
    what: "multi-key transactions (Request::Txn, for stack deploys); no document changes",
    run: |_| {},
}];

/// A step from schema `to - 1` to `to`: a pure, deterministic rewrite of the documents'
/// values by key (every member runs it on the same keyspace at the same log index).
#[derive(Debug)]
pub struct Migration {
    pub to: u32,
    /// What it changes, for logs and `island status`.
    pub what: &'static str,
    pub run: fn(&mut BTreeMap<String, Value>),
}

/// What a build can do with the state: read schemas up to `reads`, migrate with `migrations`.
#[derive(Debug, Clone, Copy)]
pub struct Code {
    pub reads: u32,
    pub migrations: &'static [Migration],
}

impl Code {
    /// This build.
    pub const CURRENT: Code = Code { reads: SCHEMA, migrations: MIGRATIONS };
}

impl Default for Code {
    fn default() -> Self {
        Code::CURRENT
    }
}

/// The state is newer than this build reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the island's state is at schema {schema}, and this build of Atoll reads schemas up to {reads}: upgrade Atoll on this host to the version the other members run, then start it again (its copy of the state is kept)"
)]
pub struct TooNew {
    pub schema: u32,
    pub reads: u32,
}

/// What the leader does about the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// The island is at the newest schema every member reads: nothing to do.
    Current,
    /// Every member reads `to`: propose `Request::Migrate { to }`.
    Migrate { to: u32 },
    /// The leader's build reads a newer schema than the island's, but these members have not
    /// said they read it (`None`: they did not answer).
    Wait { to: u32, behind: Vec<(crate::NodeId, Option<u32>)> },
}

/// The plan for an island at schema `active` whose members (every voter and learner,
/// the leader included) read `reads` (`None` for a member that did not answer), led by a
/// build that reads `leader_reads`. Migrates one schema at a time.
pub fn plan(active: u32, leader_reads: u32, reads: &BTreeMap<crate::NodeId, Option<u32>>) -> Upgrade {
    if active >= leader_reads {
        return Upgrade::Current;
    }
    let to = active + 1;
    let behind: Vec<_> = reads.iter().filter(|(_, r)| r.is_none_or(|r| r < to)).map(|(id, r)| (*id, *r)).collect();
    if behind.is_empty() { Upgrade::Migrate { to } } else { Upgrade::Wait { to, behind } }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn migrates_only_when_every_member_reads_the_target() {
        let reads = |r: &[Option<u32>]| r.iter().enumerate().map(|(i, r)| (i as u64, *r)).collect::<BTreeMap<_, _>>();
        assert_eq!(plan(1, 1, &reads(&[Some(1), Some(1)])), Upgrade::Current);
        assert_eq!(plan(1, 2, &reads(&[Some(2), Some(1), Some(2)])), Upgrade::Wait { to: 2, behind: vec![(1, Some(1))] });
        assert_eq!(plan(1, 2, &reads(&[Some(2), None])), Upgrade::Wait { to: 2, behind: vec![(1, None)] }, "silence is not consent");
        assert_eq!(plan(1, 3, &reads(&[Some(3), Some(3)])), Upgrade::Migrate { to: 2 }, "one schema at a time");
        assert_eq!(plan(2, 2, &reads(&[Some(1)])), Upgrade::Current, "an old member after a migration is its own business");
    }

    proptest! {
        /// Never a migration some member cannot read, never past the leader's build.
        #[test]
        fn never_migrates_past_a_member(active in 1u32..5, leader in 1u32..6, reads in proptest::collection::btree_map(0u64..8, proptest::option::of(1u32..6), 0..8)) {
            if let Upgrade::Migrate { to } = plan(active, leader, &reads) {
                prop_assert_eq!(to, active + 1);
                prop_assert!(to <= leader);
                prop_assert!(reads.values().all(|r| r.is_some_and(|r| r >= to)));
            }
        }
    }
}
