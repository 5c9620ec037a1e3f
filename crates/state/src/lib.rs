//! The island's replicated desired state (issue 14): one Raft log, run by
//! [openraft](https://docs.rs/openraft/0.9), whose state machine is a [`keyspace::Keyspace`]
//! of versioned JSON documents, and whose log, vote and state machine are kept in one
//! [redb](https://docs.rs/redb) file per member ([`store`]).
//!
//! Writes are [`Request`]s, compare-and-set on versions as etcd's transactions are, so that
//! two operators' edits cannot silently overwrite each other; typed models (members, invites,
//! stacks, DNS zones…) are documents under their own key prefixes, and the keyspace carries a
//! schema version for their migrations.

pub mod desired;
pub mod keyspace;
pub mod local;
pub mod schema;
pub mod store;
pub mod voters;

use std::io::Cursor;

pub use keyspace::{Expect, Request, Response};

openraft::declare_raft_types!(
    /// The island's Raft: node ids are `u64`, a node's address is its mesh address.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node id.
pub type NodeId = u64;
