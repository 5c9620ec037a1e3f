//! The control plane's wire types: JSON over HTTP/2. Joins come to a public member's join
//! endpoint over TLS pinned by the invite's CA fingerprint; everything else goes between
//! members over mTLS on their mesh addresses, each request carrying the caller's identity in its
//! certificate. Writes go to the CA host (a member forwards them there); reads are served from
//! the local replica.

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::model::{Change, IslandState, NodeId};

/// `POST`: [`JoinRequest`] → [`JoinResponse`].
pub const JOIN: &str = "/island/v1/join";
/// `POST`: [`RenewRequest`] → [`RenewResponse`] (mTLS).
pub const RENEW: &str = "/island/v1/renew";
/// `GET ?since=VERSION`: the state once its version passes `since` (a long poll), or after
/// [`STATE_WAIT`] the same version again (mTLS).
pub const STATE: &str = "/island/v1/state";
/// `POST`: [`ChangeRequest`] → the new state (mTLS; members' writes, forwarded to the CA host).
pub const CHANGE: &str = "/island/v1/change";
/// `POST`: [`Heartbeat`] → when the callee last heard of each member, `{node id: unix
/// seconds}` (mTLS): the caller is alive.
pub const HEARTBEAT: &str = "/island/v1/heartbeat";

/// Raft's RPCs (mTLS, from any member): `POST` openraft's request → the callee's
/// `Result<response, RaftError>` as JSON.
pub const RAFT_APPEND: &str = "/island/v1/raft/append";
pub const RAFT_VOTE: &str = "/island/v1/raft/vote";
pub const RAFT_SNAPSHOT: &str = "/island/v1/raft/snapshot";
/// `POST` an `atoll_state::Request` → its `Response`, on the leader (mTLS; a follower's writes
/// come here); elsewhere `421` with a [`Problem`] naming the leader.
pub const RAFT_WRITE: &str = "/island/v1/raft/write";
/// `GET ?key=K` → `Option<Versioned>`, read linearizably on the leader (ReadIndex).
pub const RAFT_READ: &str = "/island/v1/raft/read";
/// `GET` → the leader's [`crate::ConsensusStatus`] (replication, the next step).
pub const RAFT_STATUS: &str = "/island/v1/raft/status";
/// `GET` → `204`: the leader asks every member, to know which are up.
pub const PING: &str = "/island/v1/ping";
/// A stack replica's output on the member that runs it (`service logs`): `GET` with
/// [`LogsQuery`], newline-delimited JSON log lines.
pub const LOGS: &str = "/island/v1/logs";
/// The names' data key (the CA host answers members): what certificates' private keys are
/// sealed with in the replicated state, so it never enters the Raft log.
pub const NAMES_KEY: &str = "/island/v1/secrets/names-key";

/// `GET` [`NAMES_KEY`]'s answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamesKey {
    /// 32 bytes, base64.
    pub key: String,
}

/// A member's answer to a ping: what its build reads (`atoll_state::schema`). Builds before
/// schemas answered `204 No Content`, and read schema 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub schema_reads: u32,
}

/// How long a state long poll waits before answering with what it has.
pub const STATE_WAIT: std::time::Duration = std::time::Duration::from_secs(25);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub invite_id: String,
    pub secret: String,
    /// The name the host asks for (else the invite's, else its hostname).
    pub name: String,
    /// Its public `ADDR:PORT`s (Nebula), if it joins as a public member.
    pub public: Vec<SocketAddr>,
    /// A CSR (PEM) for its control-plane certificate; the key stays with the host.
    pub csr: String,
    /// Its Nebula public key (PEM, from `nebula-cert keygen`).
    pub nebula_pub: String,
    pub version: String,
    /// The newest schema of the replicated state its build reads (builds before schemas send
    /// none, and read schema 1).
    #[serde(default = "schema_one")]
    pub schema_reads: u32,
}

fn schema_one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: NodeId,
    pub mesh_ip: Ipv4Addr,
    /// Its control-plane certificate (PEM).
    pub cert: String,
    /// Its Nebula certificate (PEM).
    pub nebula_cert: String,
    /// A public member's join-endpoint certificate (PEM, for its key).
    pub join_cert: Option<String>,
    /// The island as it now is, the new member in it.
    pub state: IslandState,
    /// The epoch of the island's Raft group (recoveries so far): the new member's store starts
    /// in it (`atoll_state::store::set_epoch`).
    #[serde(default)]
    pub epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    pub csr: String,
    pub nebula_pub: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewResponse {
    pub cert: String,
    pub nebula_cert: String,
    /// A public member's join-endpoint certificate.
    pub join_cert: Option<String>,
}

/// A change a member asks for. Joins and renewals have their own requests; the caller is
/// identified by its certificate, not by anything in here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRequest {
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub version: String,
}

/// Every error answer: what went wrong, and the causes under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub message: String,
    #[serde(default)]
    pub causes: Vec<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for c in &self.causes {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

impl Problem {
    pub fn from_error(e: &(dyn std::error::Error + 'static)) -> Self {
        Self { message: e.to_string(), causes: atoll_util::causes(e) }
    }
}

/// Whether a member may ask for `change` through [`CHANGE`]: joins and renewals have their own
/// requests, and versions are reported by heartbeats.
pub fn change_allowed(change: &Change) -> bool {
    matches!(change, Change::CreateInvite { .. } | Change::DeleteInvite { .. } | Change::SetLabels { .. } | Change::Remove { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds from before schemas read schema 1, and say so by saying nothing: the CA host
    /// refuses a joiner older than the island's state, so it must not take silence as newer.
    #[test]
    fn a_join_request_without_schema_reads_reads_schema_one() {
        let old = serde_json::json!({
            "invite_id": "i", "secret": "s", "name": "n", "public": [], "csr": "", "nebula_pub": "", "version": "0.1.0"
        });
        assert_eq!(serde_json::from_value::<JoinRequest>(old).unwrap().schema_reads, 1);
        let pong: Pong = serde_json::from_str(r#"{"schema_reads":3}"#).unwrap();
        assert_eq!(pong.schema_reads, 3);
    }
}

/// Which replica's output, how much, and whether to follow it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogsQuery {
    pub container: String,
    #[serde(default)]
    pub tail: Option<usize>,
    #[serde(default)]
    pub follow: bool,
}
