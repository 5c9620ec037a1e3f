//! Raft's RPCs between members: JSON over the control plane's HTTP/2 and mTLS, to
//! `https://<mesh ip>:<control port>/island/v1/raft/…` (the [`openraft::BasicNode`] address).
//! The answer is the callee's `Result` as it is, so a refusal by the callee's Raft comes back
//! as openraft's `RemoteError`; a member that cannot be reached is `Unreachable` (openraft
//! backs off from it).

use std::sync::{Arc, RwLock};

use atoll_state::{NodeId, TypeConfig};
use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::proto;

/// The mTLS client in use (replaced when this host's certificates renew).
pub type SharedClient = Arc<RwLock<reqwest::Client>>;

/// Connections to members, made with the current client.
#[derive(Clone)]
pub struct MeshNetwork {
    pub client: SharedClient,
    /// This member's epoch, sent with every RPC; a callee's newer one is noted in it.
    pub epoch: Arc<super::Epoch>,
}

impl RaftNetworkFactory<TypeConfig> for MeshNetwork {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection { client: self.client.clone(), epoch: self.epoch.clone(), target, base: format!("https://{}", node.addr) }
    }
}

/// One member as the others call it.
pub struct Connection {
    client: SharedClient,
    epoch: Arc<super::Epoch>,
    target: NodeId,
    base: String,
}

type Rpc<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Connection {
    async fn call<Req, Resp, E>(&self, path: &str, req: &Req, option: &RPCOption) -> Rpc<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned + std::error::Error,
    {
        let client = self.client.read().unwrap_or_else(|p| p.into_inner()).clone();
        let url = format!("{}{path}", self.base);
        let resp = client
            .post(&url)
            .timeout(option.hard_ttl())
            .header(super::EPOCH_HEADER, self.epoch.mine)
            .json(req)
            .send()
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let status = resp.status();
        // A callee of a newer epoch refuses this member's RPCs (409) and says its epoch.
        if let Some(theirs) = resp.headers().get(super::EPOCH_HEADER).and_then(|v| v.to_str().ok()?.parse().ok()) {
            self.epoch.met(theirs);
        }
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let e = std::io::Error::other(format!("{url} answered {status}: {text}"));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        let answer: Result<Resp, RaftError<NodeId, E>> = resp.json().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(&mut self, rpc: AppendEntriesRequest<TypeConfig>, option: RPCOption) -> Rpc<AppendEntriesResponse<NodeId>> {
        self.call(proto::RAFT_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(proto::RAFT_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Rpc<VoteResponse<NodeId>> {
        self.call(proto::RAFT_VOTE, &rpc, &option).await
    }
}
