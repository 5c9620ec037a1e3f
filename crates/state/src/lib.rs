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
pub mod ingress;
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

/// The island's Raft timing, over a mesh that crosses home connections: heartbeats every
/// 250 ms, an election after 1.5–3 s without one, a snapshot every 1000 entries (200 kept
/// behind it), snapshots sent in 1 MiB chunks with 10 s each. `cluster_name` names the group.
pub fn config(cluster_name: &str) -> std::sync::Arc<openraft::Config> {
    let c = openraft::Config {
        cluster_name: cluster_name.to_owned(),
        heartbeat_interval: 250,
        election_timeout_min: 1500,
        election_timeout_max: 3000,
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 200,
        snapshot_max_chunk_size: 1 << 20,
        ..Default::default()
    };
    std::sync::Arc::new(c.validate().expect("valid Raft config"))
}
