//! This member's part in the island's replicated state (issue 14): an openraft node whose log
//! and state machine are `atoll-state`'s redb store (`<data>/island/state.redb`), talking to
//! the other members over the control plane's mTLS ([`network`]).
//!
//! The island's membership (members, invites with hashed secrets, certificate serials and
//! revocations: the [`IslandState`]) is one document, [`ISLAND_KEY`], written with
//! compare-and-set on its version; later models are documents under keys of their own.
//! Writes go to the leader (a follower forwards them, [`Consensus::write`]); reads are local
//! ([`Consensus::island`], as fresh as this member's last apply) or linearizable
//! ([`Consensus::read`] with `linearizable`, ReadIndex on the leader).
//!
//! Which members vote is the leader's business ([`reconcile`]): every member is a learner
//! with a full replica, and `atoll_state::voters` picks 1, 3 or 5 voters among them.

mod network;
pub(crate) mod reconcile;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_state::keyspace::Versioned;
use atoll_state::store::Reader;
use atoll_state::{NodeId, Request, Response, TypeConfig};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, ServerState};
use serde::{Deserialize, Serialize};

pub use network::{MeshNetwork, SharedClient};

use crate::model::IslandState;
use crate::proto;
use crate::transport::{self, TransportError};

/// The key of the island's membership document.
pub const ISLAND_KEY: &str = "island/state";

/// The header that carries the sender's epoch on Raft's RPCs, and the callee's on a refusal.
pub const EPOCH_HEADER: &str = "atoll-raft-epoch";

/// This member's epoch (`atoll_state::store::epoch`: recoveries since the island began) and the
/// newest one it has met among the island's members. Members exchange Raft RPCs only within
/// one epoch; meeting a newer one means the island was recovered without this member's store,
/// which then re-syncs from the others (its log may hold writes of voters lost to the recovery
/// that must not merge into the island's).
#[derive(Debug, Default)]
pub struct Epoch {
    pub mine: u64,
    newer: std::sync::atomic::AtomicU64,
}

impl Epoch {
    pub fn new(mine: u64) -> Self {
        Epoch { mine, newer: mine.into() }
    }

    /// Notes a member's epoch; whether it is newer than this member's.
    pub fn met(&self, theirs: u64) -> bool {
        self.newer.fetch_max(theirs, std::sync::atomic::Ordering::SeqCst);
        theirs > self.mine
    }

    /// The newest epoch met, if newer than this member's.
    pub fn newer(&self) -> Option<u64> {
        Some(self.newer.load(std::sync::atomic::Ordering::SeqCst)).filter(|&n| n > self.mine)
    }
}

/// How long a write waits for a leader (an election takes a few seconds).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A leader unacknowledged by a majority for longer than the longest election timeout has
/// lost it.
const QUORUM_LOST_MS: u64 = 3000;

#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error(transparent)]
    Store(#[from] atoll_state::store::StoreError),
    #[error("starting this member's Raft")]
    Start(#[source] Box<openraft::error::Fatal<NodeId>>),
    #[error(
        "the island has no leader: a majority of its voters ({voters}) must be up and reach each other. `atoll island status` shows which are down: start them again. If they are gone for good, `atoll island recover` on a voter that is up goes on without them (what only they had is lost)"
    )]
    NoLeader { voters: String },
    #[error(
        "no majority of the voters answered: they may be down or cut off (`atoll island status`). Start them again; if they are gone for good, `atoll island recover` on a voter that is up goes on without them. A write that got this answer may still be applied if they return"
    )]
    NoQuorum,
    #[error("Raft refused: {0}")]
    Raft(String),
    #[error(
        "the leader ({leader}) did not answer: if it just went down, the other voters elect another within a few seconds; ask again then (`atoll island status` shows the leader)"
    )]
    Forward {
        leader: String,
        #[source]
        source: TransportError,
    },
    #[error("the replicated island state cannot be read by this version of Atoll: upgrade it")]
    Decode(#[source] serde_json::Error),
}

/// The Raft node ID of member `id` (16 hex digits, as `atoll_util::random_hex(8)` makes them).
pub fn raft_id(id: &str) -> NodeId {
    u64::from_str_radix(id, 16).unwrap_or_else(|_| {
        let h = crate::model::sha256_hex(id.as_bytes());
        u64::from_str_radix(&h[..16], 16).expect("hex")
    })
}

/// Where members reach member `m` for Raft: its control plane on the mesh.
pub fn address(m: &crate::model::Member, control_port: u16) -> BasicNode {
    BasicNode::new(format!("{}:{control_port}", m.mesh_ip))
}

/// This member's Raft node.
pub struct Consensus {
    pub raft: Raft<TypeConfig>,
    pub reader: Reader,
    pub id: NodeId,
    pub epoch: Arc<Epoch>,
    client: SharedClient,
    /// The leader's latest plan for the voters, in words (for `island status`).
    pub(crate) next: Mutex<String>,
    /// When the leader last heard from each member (its pings).
    pub(crate) last_ok: Mutex<BTreeMap<NodeId, Instant>>,
    /// The schemas each member's build reads, as it said in its last answer to a ping (only
    /// members that answered the last round).
    pub(crate) reads: Mutex<BTreeMap<NodeId, u32>>,
    /// The members' names, for messages.
    names: Mutex<BTreeMap<NodeId, String>>,
    /// The term this member leads in, and since when (its pings started then).
    pub(crate) leading_since: Mutex<Option<(u64, Instant)>>,
    /// Re-syncing after a damaged store: no votes, no candidacy.
    resyncing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Consensus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consensus").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Consensus {
    /// Opens (or creates) this member's store at `path` and starts its Raft node.
    pub async fn open(path: &Path, id: NodeId, cluster: &str, client: SharedClient) -> Result<Self, ConsensusError> {
        let (log, sm) = atoll_state::store::open(path)?;
        let epoch = Arc::new(Epoch::new(sm.epoch()));
        let reader = sm.reader();
        let raft = Raft::new(
            id,
            atoll_state::config(&format!("atoll-{cluster}")),
            MeshNetwork { client: client.clone(), epoch: epoch.clone() },
            log,
            sm,
        )
        .await
        .map_err(|e| ConsensusError::Start(Box::new(e)))?;
        Ok(Self {
            raft,
            reader,
            id,
            epoch,
            client,
            next: Mutex::new(String::new()),
            last_ok: Mutex::new(BTreeMap::new()),
            reads: Mutex::new(BTreeMap::new()),
            names: Mutex::new(BTreeMap::new()),
            leading_since: Mutex::new(None),
            resyncing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Stops voting and campaigning: the votes this member cast were lost with its store.
    pub fn start_resync(&self) {
        self.resyncing.store(true, std::sync::atomic::Ordering::SeqCst);
        self.raft.runtime_config().elect(false);
    }

    /// Votes and campaigns again.
    pub fn end_resync(&self) {
        self.raft.runtime_config().elect(true);
        self.resyncing.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether this member is re-syncing after a damaged store (and does not vote).
    pub fn resyncing(&self) -> bool {
        self.resyncing.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Learns the members' names (for messages) from `state`.
    pub fn name_members(&self, state: &IslandState) {
        *self.names.lock().unwrap() = state.members.values().map(|m| (raft_id(&m.id), m.name.clone())).collect();
    }

    /// Member `id`'s name, or its ID in hex for one this member does not know.
    pub fn name(&self, id: NodeId) -> String {
        self.names.lock().unwrap().get(&id).cloned().unwrap_or_else(|| format!("{id:016x}"))
    }

    /// The names of `ids`, comma-separated (`none` for no one).
    pub fn names_of<'a>(&self, ids: impl IntoIterator<Item = &'a NodeId>) -> String {
        let v: Vec<String> = ids.into_iter().map(|&id| self.name(id)).collect();
        if v.is_empty() { "none".into() } else { v.join(", ") }
    }

    /// Makes this member the only voter of a new Raft group, unless it already is in one.
    /// Returns whether it did.
    pub async fn bootstrap(&self, me: BasicNode) -> Result<bool, ConsensusError> {
        if self.raft.is_initialized().await.map_err(|e| ConsensusError::Raft(e.to_string()))? {
            return Ok(false);
        }
        match self.raft.initialize(BTreeMap::from([(self.id, me)])).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(ConsensusError::Raft(e.to_string())),
        }
    }

    /// The island's membership as this member last applied it, and the document's version.
    pub fn island(&self) -> Result<Option<(IslandState, u64)>, ConsensusError> {
        match self.reader.get(ISLAND_KEY) {
            Some(d) => Ok(Some((serde_json::from_value(d.value).map_err(ConsensusError::Decode)?, d.version))),
            None => Ok(None),
        }
    }

    fn mtls(&self) -> reqwest::Client {
        self.client.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Commits `req`: here on the leader, else forwarded to it. Waits for a leader up to
    /// [`WRITE_TIMEOUT`]. A write whose answer was lost is not retried (it may have happened);
    /// compare-and-set lets the caller find out. (A `ForwardToLeader` for an entry already
    /// appended comes only once it was truncated away: asking again cannot apply it twice.)
    pub async fn write(&self, req: Request) -> Result<Response, ConsensusError> {
        self.via_leader(
            || self.write_here(req.clone()),
            |leader| {
                let (client, req) = (self.mtls(), req.clone());
                async move { transport::post::<_, Response>(&client, &format!("https://{leader}{}", proto::RAFT_WRITE), &req).await }
            },
        )
        .await
    }

    /// Commits `req` if this member leads; else the leader's address, if another member leads
    /// (the control plane's write endpoint).
    pub async fn write_here(&self, req: Request) -> Result<Response, Result<Option<String>, ConsensusError>> {
        if let Err(reason) = req.check() {
            return Ok(Response::Refused { reason: reason.into() });
        }
        // A transaction is proposed only once the island reads it (`Request::Txn`): members on
        // older builds could not apply it.
        let active = self.reader.with(|k| k.schema);
        if matches!(req, Request::Txn { .. })
            && active < atoll_state::keyspace::TXN_SCHEMA
            && self.raft.metrics().borrow().state == ServerState::Leader
        {
            return Ok(Response::Refused {
                reason: format!(
                    "the island's state is at schema {active}, and multi-key writes need schema {}: it moves on once every member runs a build that reads it (`atoll island status` says who does not)",
                    atoll_state::keyspace::TXN_SCHEMA
                ),
            });
        }
        // A leader that lost its majority keeps the entry and waits for them: not forever.
        let Ok(r) = tokio::time::timeout(WRITE_TIMEOUT, self.raft.client_write(req)).await else {
            return Err(Err(ConsensusError::NoQuorum));
        };
        match r {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(Ok(self.elsewhere(f))),
            Err(e) => Err(Err(ConsensusError::Raft(e.to_string()))),
        }
    }

    /// The document at `key`: with `linearizable`, as of now (ReadIndex on the leader, asked
    /// through it from elsewhere); otherwise as this member last applied it.
    pub async fn read(&self, key: &str, linearizable: bool) -> Result<Option<Versioned>, ConsensusError> {
        if !linearizable {
            return Ok(self.reader.get(key));
        }
        self.via_leader(
            || self.read_here(key),
            |leader| {
                let (client, url) = (self.mtls(), format!("https://{leader}{}?key={}", proto::RAFT_READ, urlencode(key)));
                async move { transport::get::<Option<Versioned>>(&client, &url).await }
            },
        )
        .await
    }

    /// Reads `key` linearizably if this member leads; else the leader's address, if another
    /// member leads.
    pub async fn read_here(&self, key: &str) -> Result<Option<Versioned>, Result<Option<String>, ConsensusError>> {
        let Ok(r) = tokio::time::timeout(WRITE_TIMEOUT, self.raft.ensure_linearizable()).await else {
            return Err(Err(ConsensusError::NoQuorum));
        };
        match r {
            Ok(_) => Ok(self.reader.get(key)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => Err(Ok(self.elsewhere(f))),
            // Found by QA: openraft's own words named voters by Raft ID and gave no advice.
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_))) => Err(Err(ConsensusError::NoQuorum)),
            Err(e) => Err(Err(ConsensusError::Raft(e.to_string()))),
        }
    }

    /// The leader's address from a `ForwardToLeader`, unless it names this member (which
    /// does not lead yet) or no one.
    fn elsewhere(&self, f: openraft::error::ForwardToLeader<NodeId, BasicNode>) -> Option<String> {
        f.leader_node.filter(|_| f.leader_id != Some(self.id)).map(|n| n.addr)
    }

    /// Asks `here` until it answers, following the leader: `there` asks the leader at an
    /// address; a leader that moved on meanwhile (421) is looked for again, and with no leader
    /// one is waited for, up to [`WRITE_TIMEOUT`].
    async fn via_leader<T, H, HF, F, FF>(&self, here: H, there: F) -> Result<T, ConsensusError>
    where
        H: Fn() -> HF,
        HF: std::future::Future<Output = Result<T, Result<Option<String>, ConsensusError>>>,
        F: Fn(String) -> FF,
        FF: std::future::Future<Output = Result<T, TransportError>>,
    {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        loop {
            match here().await {
                Ok(r) => return Ok(r),
                Err(Err(e)) => return Err(e),
                Err(Ok(Some(leader))) => match there(leader.clone()).await {
                    Ok(r) => return Ok(r),
                    Err(e) if e.status() == Some(421) && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(source) => return Err(ConsensusError::Forward { leader, source }),
                },
                Err(Ok(None)) => self.await_leader(deadline).await?,
            }
        }
    }

    /// Waits until some member leads (or the deadline passes: no leader).
    async fn await_leader(&self, deadline: Instant) -> Result<(), ConsensusError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let waited = self.raft.wait(Some(left)).metrics(|m| m.current_leader.is_some(), "a leader").await;
        if waited.is_err() || Instant::now() >= deadline {
            let voters: Vec<NodeId> = self.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
            return Err(ConsensusError::NoLeader { voters: self.names_of(&voters) });
        }
        // A new leader refuses writes until it has committed its first entry.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }

    /// The leader this member knows of, unless it is this member and a majority of the
    /// voters has not acknowledged it for longer than an election takes (it leads no one).
    pub fn leader(&self) -> Option<NodeId> {
        let m = self.raft.metrics().borrow().clone();
        let lost = m.state == ServerState::Leader && m.millis_since_quorum_ack.is_none_or(|ms| ms > QUORUM_LOST_MS);
        m.current_leader.filter(|_| !lost)
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "stopping Raft");
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The replicated state as `atoll island status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsensusStatus {
    /// The leader's name, if there is one this member knows of.
    pub leader: Option<String>,
    pub term: u64,
    /// Members' names.
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    /// This member: its name and Raft role (`leader`, `follower`, `learner`, `candidate`,
    /// `re-syncing` after its store was found damaged: it does not vote until caught up, or
    /// `stopped` when it could not apply the log: see `stopped`).
    pub this: String,
    pub role: String,
    /// This member's log: the last index, the last applied, the last snapshot.
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot: Option<u64>,
    /// How far this member's local reads lag the leader, in log entries (when the leader
    /// answered): local reads (listings, DNS, the gateway) are this stale.
    pub local_lag: Option<u64>,
    /// Every member, as the leader sees it (without a leader, as this member does).
    pub members: Vec<ConsensusMember>,
    /// What Atoll will do next about the voters and the schema.
    pub next: String,
    /// The schema of the state this member applied, and the newest its build reads
    /// (`atoll_state::schema`; 0 from members older than schemas).
    #[serde(default)]
    pub schema: u32,
    #[serde(default)]
    pub schema_reads: u32,
    /// Why this member stopped applying the log, if it did (its build is too old for the
    /// island's state, or its store failed).
    #[serde(default)]
    pub stopped: Option<String>,
}

/// One member in [`ConsensusStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsensusMember {
    pub name: String,
    /// `voter` or `learner`.
    pub role: String,
    /// The last log index the leader knows it holds, and how many entries it is behind.
    pub matched: Option<u64>,
    pub lag: Option<u64>,
    /// Milliseconds since the leader last heard from it.
    pub last_heard_ms: Option<u64>,
    /// The newest schema its build reads, as it last told the leader.
    #[serde(default)]
    pub schema_reads: Option<u32>,
}

impl Consensus {
    /// The status as this member knows it; on the leader, with every member's replication.
    pub fn local_status(&self) -> ConsensusStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let name = |id: NodeId| self.name(id);
        let membership = metrics.membership_config.membership().clone();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let learners: Vec<NodeId> = membership.learner_ids().collect();
        let last = metrics.last_log_index;
        let replication = metrics.replication.clone().unwrap_or_default();
        let heard = self.last_ok.lock().unwrap().clone();
        let reads = self.reads.lock().unwrap().clone();
        let leading = metrics.state == ServerState::Leader;
        let members = voters
            .iter()
            .map(|&id| (id, "voter"))
            .chain(learners.iter().map(|&id| (id, "learner")))
            .map(|(id, role)| {
                let matched = if id == self.id { last } else { replication.get(&id).and_then(|l| l.map(|l| l.index)) };
                ConsensusMember {
                    name: name(id),
                    role: role.into(),
                    matched: if leading { matched } else { None },
                    lag: if leading { last.map(|l| l.saturating_sub(matched.unwrap_or(0))) } else { None },
                    last_heard_ms: if id == self.id {
                        Some(0)
                    } else {
                        heard.get(&id).filter(|_| leading).map(|t| t.elapsed().as_millis() as u64)
                    },
                    schema_reads: if id == self.id {
                        Some(atoll_state::schema::SCHEMA)
                    } else {
                        reads.get(&id).copied().filter(|_| leading)
                    },
                }
            })
            .collect();
        let stopped = metrics.running_state.as_ref().err().map(ToString::to_string);
        let role = match metrics.state {
            _ if stopped.is_some() => "stopped",
            _ if self.resyncing() => "re-syncing",
            ServerState::Leader => "leader",
            ServerState::Follower if voters.contains(&self.id) => "follower",
            ServerState::Follower | ServerState::Learner => "learner",
            ServerState::Candidate => "candidate",
            ServerState::Shutdown => "shutdown",
        };
        let leader = self.leader();
        ConsensusStatus {
            leader: leader.map(name),
            term: metrics.current_term,
            voters: sorted(voters.iter().map(|&v| name(v)).collect()),
            learners: sorted(learners.iter().map(|&v| name(v)).collect()),
            this: name(self.id),
            role: role.into(),
            last_log_index: last,
            last_applied: metrics.last_applied.map(|l| l.index),
            snapshot: metrics.snapshot.map(|l| l.index),
            local_lag: leading.then_some(0),
            members,
            schema: self.reader.with(|k| k.schema),
            schema_reads: atoll_state::schema::SCHEMA,
            stopped,
            next: if leading && leader.is_none() {
                format!(
                    "waiting: no majority of the voters has answered this leader for {} s; start them again, or if they are gone for good, `atoll island recover` here",
                    metrics.millis_since_quorum_ack.unwrap_or(0) / 1000
                )
            } else if leading {
                self.next.lock().unwrap().clone()
            } else if leader.is_none() {
                "waiting for a leader: a majority of the voters must be up (if they are gone for good: `atoll island recover` on a voter that is up)".into()
            } else {
                String::new()
            },
        }
    }

    /// The status, the leader's view of the members merged in (asked of it over the mesh).
    pub async fn status(&self) -> ConsensusStatus {
        let mut mine = self.local_status();
        let metrics = self.raft.metrics().borrow().clone();
        let Some(leader) = metrics.current_leader.filter(|&l| l != self.id) else { return mine };
        let Some(node) = metrics.membership_config.membership().get_node(&leader).cloned() else { return mine };
        let url = format!("https://{}{}", node.addr, proto::RAFT_STATUS);
        match transport::get::<ConsensusStatus>(&self.mtls(), &url).await {
            Ok(theirs) => {
                mine.local_lag = theirs.last_log_index.map(|l| l.saturating_sub(mine.last_applied.unwrap_or(0)));
                mine.members = theirs.members;
                mine.next = theirs.next;
            }
            Err(e) => mine.next = format!("the leader did not answer ({e}); showing this member's view"),
        }
        mine
    }
}
