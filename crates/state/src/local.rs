//! An in-process network between Raft nodes, for tests and simulation: each RPC is a direct
//! call into the target's [`openraft::Raft`], unless the router says the two nodes cannot
//! reach each other (a partition, or the target is down), when it fails as an unreachable peer
//! would. The production transport (HTTP/2 over the control plane's mTLS) implements the same
//! openraft traits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};

use crate::{NodeId, TypeConfig};

type Rpc<T, E = RaftError<NodeId>> = Result<T, RPCError<NodeId, BasicNode, E>>;

#[derive(Default)]
struct Inner {
    nodes: BTreeMap<NodeId, Raft<TypeConfig>>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
}

/// The nodes, and which of them can reach which.
#[derive(Clone, Default)]
pub struct Router(Arc<Mutex<Inner>>);

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Router")
    }
}

impl Router {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts a node on the network (again).
    pub fn add(&self, id: NodeId, raft: Raft<TypeConfig>) {
        self.inner().nodes.insert(id, raft);
    }

    /// Takes a node off the network (it was killed): RPCs to it fail as unreachable.
    pub fn remove(&self, id: NodeId) -> Option<Raft<TypeConfig>> {
        self.inner().nodes.remove(&id)
    }

    /// Splits the nodes into `side` and everyone else: no RPC crosses, either way.
    pub fn partition(&self, side: &[NodeId]) {
        let mut inner = self.inner();
        let all: Vec<NodeId> = inner.nodes.keys().copied().collect();
        for &a in side {
            for &b in all.iter().filter(|b| !side.contains(b)) {
                inner.cut.insert((a, b));
                inner.cut.insert((b, a));
            }
        }
    }

    /// Mends every partition.
    pub fn heal(&self) {
        self.inner().cut.clear();
    }

    /// The node `to` as `from` sees it: `None` if unreachable.
    fn target(&self, from: NodeId, to: NodeId) -> Result<Raft<TypeConfig>, Unreachable> {
        let inner = self.inner();
        if inner.cut.contains(&(from, to)) {
            return Err(Unreachable::new(&std::io::Error::other(format!("node {to} is partitioned from node {from}"))));
        }
        inner.nodes.get(&to).cloned().ok_or_else(|| Unreachable::new(&std::io::Error::other(format!("node {to} is down"))))
    }

    /// The network as node `id` uses it.
    pub fn network(&self, id: NodeId) -> Network {
        Network { router: self.clone(), from: id }
    }
}

/// One node's view of the router.
#[derive(Clone, Debug)]
pub struct Network {
    router: Router,
    from: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Connection {
        Connection { router: self.router.clone(), from: self.from, to: target }
    }
}

/// A connection from one node to another.
#[derive(Debug)]
pub struct Connection {
    router: Router,
    from: NodeId,
    to: NodeId,
}

impl Connection {
    /// Whether the reply gets back (a partition made during the call drops it).
    fn back(&self) -> Result<(), Unreachable> {
        self.router.target(self.to, self.from).map(drop)
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(&mut self, rpc: AppendEntriesRequest<TypeConfig>, _o: RPCOption) -> Rpc<AppendEntriesResponse<NodeId>> {
        let raft = self.router.target(self.from, self.to).map_err(RPCError::Unreachable)?;
        let r = raft.append_entries(rpc).await;
        self.back().map_err(RPCError::Unreachable)?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _o: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        let raft = self.router.target(self.from, self.to).map_err(RPCError::Unreachable)?;
        let r = raft.install_snapshot(rpc).await;
        self.back().map_err(RPCError::Unreachable)?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, _o: RPCOption) -> Rpc<VoteResponse<NodeId>> {
        let raft = self.router.target(self.from, self.to).map_err(RPCError::Unreachable)?;
        let r = raft.vote(rpc).await;
        self.back().map_err(RPCError::Unreachable)?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }
}
