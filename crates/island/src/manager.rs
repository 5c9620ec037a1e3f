//! The running island of one daemon: [`Manager`]. It holds this member's Raft node and its
//! replica of the state ([`crate::consensus`]), its keys and certificates (one generation
//! directory at a time), the supervised Nebula, the control-plane listeners, and the tasks
//! that keep it all current: renewal at two thirds of the certificates' life, the replicated
//! state followed as it is applied, the leader's care of the voters, and heartbeats and a long
//! poll to the CA host (which tell a member that it is up, and that it was removed).
//!
//! Changes to the membership are made by the CA host (it signs certificates, so joins and
//! renewals happen there; members forward their changes to it): [`Manager::commit`] applies
//! them to the replicated state with compare-and-set, through the Raft leader. Reads are served
//! from the local replica.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::authority::{Authority, SignError};
use crate::model::{Change, IslandState, Member, ModelError, NodeId, Role};
use crate::store::{FileStore, Local, Paths, StateStore, StoreError};
use crate::transport::{self, SharedConfig, TransportError};

/// How long the island's CAs live (rotating them is later work).
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Shortest and longest certificate lifetime of members (`atoll daemon --cert-lifetime`): long
/// enough for a renewal to go through, well within the CAs' life.
pub const MIN_CERT_LIFETIME: Duration = Duration::from_secs(10);
pub const MAX_CERT_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// Fixed facts of this host, from the daemon's flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Atoll's version, reported to the island.
    pub version: String,
    /// This host's name unless `init`/`join` gives one (the hostname, made a DNS label).
    pub hostname: String,
    /// Nebula's UDP port (for a new island; members follow the island's).
    pub mesh_port: u16,
    /// The control plane's TCP port (likewise).
    pub control_port: u16,
    /// Nebula's status sshd on 127.0.0.1.
    pub status_port: u16,
    /// Certificate lifetime for a new island.
    pub cert_lifetime: Duration,
    pub heartbeat: Duration,
    /// A member unheard of for this long is `down`.
    pub down_after: Duration,
    /// A voter unheard of for this long is replaced by another member, if a majority of the
    /// voters remains.
    pub replace_voter_after: Duration,
    pub nebula: PathBuf,
    pub nebula_cert: PathBuf,
    /// The container pool, which the mesh prefix must not overlap.
    pub container_pool: Ipv4Net,
    /// Where the control plane reads this member's stack replicas' output for other members
    /// (set once the engine exists; shared by every copy of this config).
    pub logs: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<dyn LogSource>>>,
}

/// This member's stack replicas' output, for `service logs` run on another member: the node
/// engine, which this crate does not know.
pub trait LogSource: Send + Sync + std::fmt::Debug {
    /// The output of stack replica `container` as newline-delimited JSON log lines (its last
    /// `tail` lines, or all; with `follow`, until it stops). Why not, in words, if it is no
    /// stack replica here.
    fn logs(&self, container: &str, tail: Option<usize>, follow: bool) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, String>;
}

#[derive(Debug, thiserror::Error)]
pub enum IslandError {
    #[error("this host is already a member of island {0:?}: run `atoll leave` first")]
    AlreadyMember(String),
    #[error("this host is not in an island: `atoll init` creates one, `atoll join CODE` joins one")]
    NotMember,
    #[error("invalid --public {value:?}: {why}")]
    BadPublic { value: String, why: &'static str },
    #[error("this invite is for a public host: join with --public ADDR")]
    PublicInvite,
    #[error(
        "this host's Atoll reads the island's state up to schema {reads}, and the island is at schema {schema}: upgrade Atoll on this host to the version the island runs, then run the same `atoll join` again (the invite is not used up)"
    )]
    TooOld { reads: u32, schema: u32 },
    #[error("this invite was not made for a public host: join without --public, or ask for an invite made with `atoll invite --public`")]
    NotPublicInvite,
    #[error("the mesh prefix {mesh} overlaps {what} ({other}): pick another with --mesh-cidr")]
    Overlap { mesh: Ipv4Net, what: String, other: Ipv4Net },
    #[error("the island's mesh prefix {mesh} overlaps {what} ({other}) on this host: remove that route or address, or join another island")]
    JoinOverlap { mesh: Ipv4Net, what: String, other: Ipv4Net },
    #[error("the mesh prefix {0} is not usable: give a prefix of /8 to /29")]
    MeshPrefix(Ipv4Net),
    #[error("the stack pool {0} is not usable: give a prefix of /8 to /19 (each stack network gets a /19 of it)")]
    StackPool(Ipv4Net),
    #[error("the stack pool {pool} overlaps {what} ({other}): pick another with --default-addr-pool")]
    StackPoolOverlap { pool: Ipv4Net, what: String, other: Ipv4Net },
    #[error("the island has no public member to join through: `atoll init` or `atoll join` a host with --public")]
    NoPublicMember,
    #[error("no member {0}")]
    UnknownNode(String),
    #[error("this host was removed from the island: run `atoll leave`")]
    Removed,
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Code(#[from] crate::invite::CodeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Pki(#[from] atoll_pki::PkiError),
    #[error(transparent)]
    Mesh(#[from] atoll_mesh::MeshError),
    #[error("asking the island")]
    Transport(#[from] TransportError),
    #[error("the island's replicated state")]
    Consensus(#[from] crate::consensus::ConsensusError),
    #[error(transparent)]
    Kv(#[from] crate::kv::KvError),
    #[error("{0}")]
    Recover(String),
    #[error("the island's CA keys are on {0}: run this there")]
    NotCaHost(String),
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    #[error(
        "cannot reach the CA host {name} ({addr}), which makes every change to the island: check that its daemon runs and the mesh reaches it (`atoll node ls`), then try again"
    )]
    CaUnreachable {
        name: String,
        addr: String,
        #[source]
        source: Box<TransportError>,
    },
    #[error("the island does not match the invite code: {0}")]
    Mismatch(String),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl IslandError {
    /// Whether the caller asked for something wrong, something missing, or a conflict (for the
    /// API's status codes), vs. the island failing.
    pub fn kind(&self) -> atoll_util::ErrorKind {
        use atoll_util::ErrorKind as K;
        match self {
            Self::NotMember | Self::UnknownNode(_) => K::NotFound,
            Self::AlreadyMember(_) | Self::Removed => K::Conflict,
            Self::BadPublic { .. }
            | Self::PublicInvite
            | Self::TooOld { .. }
            | Self::NotPublicInvite
            | Self::Overlap { .. }
            | Self::JoinOverlap { .. }
            | Self::MeshPrefix(_)
            | Self::StackPool(_)
            | Self::StackPoolOverlap { .. }
            | Self::Code(_)
            | Self::Mismatch(_) => K::Invalid,
            // The request is fine; the island's state does not allow it yet.
            Self::NoPublicMember => K::Conflict,
            Self::Model(ModelError::UnknownNode(_) | ModelError::InviteUnknown(_)) => K::NotFound,
            Self::Model(
                ModelError::InviteUsed(_)
                | ModelError::NameTaken(_)
                | ModelError::InviteNameTaken(_)
                | ModelError::AddressTaken(_)
                | ModelError::InviteExists(_)
                | ModelError::CaHost,
            ) => K::Conflict,
            Self::Model(_) => K::Invalid,
            Self::Transport(t) => match t.status() {
                Some(404) => K::NotFound,
                Some(409) => K::Conflict,
                Some(400 | 403 | 410 | 422) => K::Invalid,
                _ => K::Upstream,
            },
            Self::CaUnreachable { .. } => K::Upstream,
            Self::Kv(crate::kv::KvError::Conflict { .. }) => K::Conflict,
            Self::Kv(_) => K::Invalid,
            Self::Recover(_) | Self::NotCaHost(_) => K::Conflict,
            Self::Backup(_) => K::Invalid,
            Self::Consensus(
                crate::consensus::ConsensusError::NoLeader { .. }
                | crate::consensus::ConsensusError::NoQuorum
                | crate::consensus::ConsensusError::Forward { .. },
            ) => K::Upstream,
            _ => K::Internal,
        }
    }
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IslandError + '_ {
    move |source| IslandError::Io { path: path.to_owned(), source }
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A member as `node ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeView {
    pub id: NodeId,
    pub name: String,
    pub mesh_ip: String,
    pub public: Vec<String>,
    pub role: Role,
    /// `ready`, `down` (not heard of for a while) or `unknown` (not heard of since this
    /// member's view started, or this host was removed and no longer follows the island);
    /// `removed` for this host once it was removed from the island.
    pub state: String,
    pub labels: BTreeMap<String, String>,
    pub version: String,
    /// RFC 3339.
    pub last_seen: Option<String>,
    pub joined: String,
    /// The member that signs certificates.
    pub ca_host: bool,
    /// This host.
    pub this: bool,
    /// How this host reaches it over the mesh: `direct`, `relayed via …`, `pending`, or absent.
    pub path: Option<String>,
    /// When its newest certificates expire (RFC 3339).
    pub cert_not_after: Option<String>,
    /// `active`, or `drain` (`atoll node drain`: its replicas move away, it takes none).
    #[serde(default = "active")]
    pub availability: String,
    /// What stacks' replicas may reserve on it and what they do, once it has said.
    #[serde(default)]
    pub resources: Option<NodeResources>,
}

fn active() -> String {
    "active".into()
}

/// A member's resources as the stacks' scheduler counts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeResources {
    /// Billionths of a CPU.
    pub nano_cpus: u64,
    pub memory_bytes: u64,
    /// What its replicas desired running reserve.
    pub reserved_nano_cpus: u64,
    pub reserved_memory_bytes: u64,
    /// Replicas desired running on it.
    pub replicas: usize,
}

/// The island as this host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IslandStatus {
    pub name: String,
    pub id: String,
    pub this: NodeView,
    pub members: usize,
    /// Every member, as `node ls` shows them (with paths from `GET /v1/island` and `/v1/info`;
    /// without them in the answers of `init` and `join`).
    #[serde(default)]
    pub nodes: Vec<NodeView>,
    pub mesh_cidr: String,
    pub ca_fingerprint: String,
    pub state_version: u64,
    /// This host's certificates: when they expire and when they renew (RFC 3339).
    pub cert_not_after: String,
    pub renew_at: String,
    /// The lifetime of the island's certificates, in seconds: every member renews at two
    /// thirds of it, so one with less than a third left is late.
    pub cert_lifetime: u64,
    /// Why the last renewal failed, if it did (it is being retried).
    pub renew_error: Option<String>,
    /// Nebula: running, and how often it was restarted.
    pub mesh_running: bool,
    pub mesh_restarts: u64,
    /// This host was removed from the island (`atoll leave` cleans up); what it shows is the
    /// island as it was when it was removed.
    #[serde(default)]
    pub removed: bool,
}

/// What the state long poll answers: the state, and when the CA host last heard of each
/// member (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateView {
    pub state: IslandState,
    pub seen: BTreeMap<NodeId, i64>,
}

/// The TLS material in use, rebuilt when certificates renew or revocations change.
pub(crate) struct Tls {
    pub control: SharedConfig,
    pub join: SharedConfig,
    pub client: crate::consensus::SharedClient,
    pub long_client: RwLock<reqwest::Client>,
    /// Without an overall timeout, for streams that last (followed logs).
    pub stream_client: RwLock<reqwest::Client>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct RenewStatus {
    pub not_after: Option<SystemTime>,
    pub renew_at: Option<SystemTime>,
    pub error: Option<String>,
}

/// The island of this daemon.
pub struct Manager {
    pub(crate) cfg: Config,
    pub(crate) paths: Paths,
    pub(crate) store: FileStore,
    pub(crate) me: NodeId,
    pub(crate) state: watch::Sender<IslandState>,
    pub(crate) local: Mutex<Local>,
    pub(crate) authority: Option<Authority>,
    pub(crate) tls: Tls,
    pub(crate) mesh: tokio::sync::Mutex<Option<atoll_mesh::Supervisor>>,
    pub(crate) seen: Mutex<BTreeMap<NodeId, i64>>,
    pub(crate) write: tokio::sync::Mutex<()>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(crate) renewal: Mutex<RenewStatus>,
    pub(crate) consensus: crate::consensus::Consensus,
    /// Set when this member must be opened again (its Raft store is from before a recovery of
    /// the island: [`Manager::reopen`] re-syncs it).
    pub(crate) reopen: std::sync::atomic::AtomicBool,
    /// When the leader last pinged this member (at first: when this member opened).
    pub(crate) pinged: Mutex<std::time::Instant>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").field("me", &self.me).finish_non_exhaustive()
    }
}

/// A DNS label made of a hostname.
pub fn host_label(hostname: &str) -> String {
    let s: String = hostname.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let s = s.trim_matches('-');
    let s = &s[..s.len().min(crate::model::MAX_NAME)];
    if s.is_empty() { "host".into() } else { s.trim_end_matches('-').to_owned() }
}

/// Parses `--public ADDR[:PORT]` (the port is Nebula's, `mesh_port` by default), refusing
/// what [`check_public`] refuses.
pub fn parse_public(s: &str, mesh_port: u16) -> Result<SocketAddr, IslandError> {
    let bad = |why| IslandError::BadPublic { value: s.to_owned(), why };
    let addr = match s.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => SocketAddr::new(
            s.trim_matches(['[', ']']).parse::<IpAddr>().map_err(|_| bad("use ADDR or ADDR:PORT with an IPv4 address"))?,
            mesh_port,
        ),
    };
    check_public(&addr).map_err(bad)?;
    Ok(addr)
}

/// Why `addr` cannot be where other hosts reach this one, if it cannot: the mesh is IPv4 only,
/// and an unspecified, loopback, multicast, broadcast, link-local, "this network" (0/8) or
/// reserved (240/4) address, or port 0, reaches nobody.
pub fn check_public(addr: &SocketAddr) -> Result<(), &'static str> {
    let IpAddr::V4(ip) = addr.ip() else { return Err("the island's mesh is IPv4 only: give an IPv4 address") };
    let o = ip.octets();
    if addr.port() == 0 {
        return Err("port 0 cannot be reached: give a port, or none for the mesh port");
    }
    if ip.is_unspecified() || o[0] == 0 {
        return Err("0.0.0.0/8 addresses cannot be reached: give this host's public address");
    }
    if ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() || ip.is_link_local() || o[0] >= 240 {
        return Err("loopback, multicast, broadcast, link-local and reserved (240/4) addresses cannot be reached from other hosts");
    }
    Ok(())
}

/// A host's `--public` list: each checked, none twice.
pub fn check_publics(list: &[SocketAddr]) -> Result<(), IslandError> {
    for (i, a) in list.iter().enumerate() {
        check_public(a).map_err(|why| IslandError::BadPublic { value: a.to_string(), why })?;
        if list[..i].contains(a) {
            return Err(IslandError::BadPublic { value: a.to_string(), why: "given twice" });
        }
    }
    Ok(())
}

impl Manager {
    pub fn id(&self) -> &str {
        &self.me
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The local replica.
    pub fn state(&self) -> IslandState {
        self.state.borrow().clone()
    }

    /// Follows the local replica.
    pub fn subscribe(&self) -> watch::Receiver<IslandState> {
        self.state.subscribe()
    }

    pub fn is_ca_host(&self) -> bool {
        self.authority.is_some()
    }

    /// Whether this host was removed from the island (by `node rm`, here or elsewhere).
    pub fn removed(&self) -> bool {
        self.local.lock().unwrap().removed.is_some() || !self.state.borrow().members.contains_key(&self.me)
    }

    /// Records that this host was removed: it stops following the island and says so until
    /// `atoll leave`. The state it keeps is the last one it was a member of.
    pub(crate) fn mark_removed(&self, why: &str) {
        let mut local = self.local.lock().unwrap();
        if local.removed.is_some() {
            return;
        }
        local.removed = Some(unix_now());
        if let Err(e) = local.save(&self.paths) {
            tracing::warn!(error = %e, "saving that this host was removed");
        }
        // Its Raft node stops: the island's members refuse it anyway (its certificates are
        // revoked), and alone it would only campaign, or be recovered into a fork.
        let raft = self.consensus.raft.clone();
        tokio::spawn(async move {
            let _ = raft.shutdown().await;
        });
        tracing::warn!(evidence = why, "this host was removed from the island: run `atoll leave`");
    }

    pub(crate) fn generation_dir(&self) -> PathBuf {
        self.paths.generation(self.local.lock().unwrap().generation)
    }

    /// The CA host's control-plane URL for `path`.
    pub(crate) fn ca_url(&self, state: &IslandState, path: &str) -> String {
        let ca = state.members.get(&state.island.ca_host).map_or(Ipv4Addr::UNSPECIFIED, |m| m.mesh_ip);
        format!("https://{ca}:{}{path}", state.island.control_port)
    }

    pub(crate) fn client(&self) -> reqwest::Client {
        self.tls.client.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The output of stack replica `container` on member `node` (a name or ID): the answer of
    /// its control plane, newline-delimited JSON log lines to read as they come.
    pub async fn member_logs(
        &self,
        node: &str,
        container: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<reqwest::Response, IslandError> {
        let state = self.state();
        let m = state.find(node).ok_or_else(|| IslandError::UnknownNode(node.to_owned()))?;
        let url = format!("https://{}:{}{}", m.mesh_ip, state.island.control_port, crate::proto::LOGS);
        // No overall timeout, even without `follow`: a long output takes as long as it takes.
        let client = self.tls.stream_client.read().unwrap_or_else(|p| p.into_inner()).clone();
        let query = crate::proto::LogsQuery { container: container.to_owned(), tail, follow };
        let resp = client
            .get(&url)
            .query(&query)
            .send()
            .await
            .map_err(|source| crate::transport::TransportError::Connect { url: url.clone(), source })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(crate::transport::refusal(&url, resp).await.into())
    }

    /// Applies `changes` on the CA host: under one lock, all or none, saved before anyone
    /// learns of them; returns the new state.
    pub(crate) async fn commit(&self, changes: &[Change]) -> Result<IslandState, IslandError> {
        let next = self.commit_state(changes).await?;
        if let Err(e) = self.update_mesh().await {
            tracing::warn!(error = %e, "updating the mesh");
        }
        Ok(next)
    }

    /// [`Self::commit`] up to the new state and the control plane's TLS; the mesh is the
    /// caller's to update ([`Self::update_mesh`]), e.g. once a leaving member has its answer
    /// (which the mesh carries, and which its blocklisting would cut).
    pub(crate) async fn commit_state(&self, changes: &[Change]) -> Result<IslandState, IslandError> {
        use atoll_state::{Expect, Request, Response};
        let _w = self.write.lock().await;
        let mut conflicts = 0;
        loop {
            let (base, expect) = match self.consensus.island()? {
                Some((s, v)) => (s, Expect::Version(v)),
                None => (self.state(), Expect::Absent),
            };
            let mut next = base;
            for c in changes {
                next.apply(c)?;
            }
            if changes.iter().any(|c| matches!(c, Change::Remove { .. }))
                && let Some(a) = &self.authority
            {
                let serials: Vec<atoll_pki::Serial> = next.revoked_serials.keys().filter_map(|s| s.parse().ok()).collect();
                let now = SystemTime::now();
                let pem = a.x509.crl(&serials, now, now + CA_LIFETIME)?;
                next.apply(&Change::Crl { pem })?;
            }
            let value = serde_json::to_value(&next).expect("the state serialises");
            match self.consensus.write(Request::Put { key: crate::consensus::ISLAND_KEY.into(), value, expect }).await? {
                Response::Done { .. } => {
                    self.take_state(next.clone());
                    return Ok(next);
                }
                // This replica was behind the leader's (this host's last write is applied there
                // first): wait for it to catch up, and apply the changes to what it holds.
                Response::Conflict { current } if conflicts < 5 => {
                    conflicts += 1;
                    let want = current.unwrap_or(0);
                    let deadline = std::time::Instant::now() + Duration::from_secs(5);
                    while self.consensus.reader.get(crate::consensus::ISLAND_KEY).map_or(0, |d| d.version) < want
                        && std::time::Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                r => {
                    return Err(
                        crate::consensus::ConsensusError::Raft(format!("the island state kept changing under this write ({r:?})")).into()
                    );
                }
            }
        }
    }

    /// Takes `next` as this host's view of the island if it is newer than what it has: kept
    /// (`state.json`, what this host starts from before Raft has caught it up), published, and
    /// the control plane's TLS rebuilt. Whether it is newer is the state's own version.
    pub(crate) fn take_state(&self, next: IslandState) -> bool {
        if next.version <= self.state.borrow().version {
            return false;
        }
        if let Err(e) = self.store.save(&next) {
            tracing::warn!(error = %e, "saving the island state");
        }
        self.consensus.name_members(&next);
        self.state.send_replace(next);
        if let Err(e) = self.rebuild_tls() {
            tracing::warn!(error = %e, "rebuilding the control plane's TLS");
        }
        true
    }

    /// Follows the replicated state as this member applies it.
    pub(crate) async fn follow_raft(self: std::sync::Arc<Self>) {
        let mut metrics = self.consensus.raft.metrics();
        let mut stop = self.stop.subscribe();
        let mut applied = None;
        let mut leader = None;
        loop {
            let (now, now_leader, term) = {
                let m = metrics.borrow_and_update();
                (m.last_applied, m.current_leader, m.current_term)
            };
            if now_leader != leader {
                leader = now_leader;
                match now_leader.map(|l| self.consensus.name(l)) {
                    Some(n) => tracing::info!(leader = %n, term, "the island's Raft leader"),
                    None => tracing::info!(term, "the island has no Raft leader (an election)"),
                }
            }
            if now != applied {
                applied = now;
                match self.consensus.island() {
                    // Older states come first while a new member catches up: only a newer one
                    // without this host says it was removed.
                    Ok(Some((state, _)))
                        if state.island.id == self.state.borrow().island.id && state.version > self.state.borrow().version =>
                    {
                        if !state.members.contains_key(&self.me) {
                            self.mark_removed("the replicated state no longer lists this host");
                            return;
                        }
                        if self.take_state(state) {
                            self.on_state_changed().await;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reading the replicated island state"),
                }
            }
            tokio::select! {
                r = metrics.changed() => if r.is_err() { return },
                _ = crate::transport::stopped(&mut stop) => return,
            }
        }
    }

    /// The replicated state's status (`atoll island status`); refused on a removed host.
    pub async fn consensus_status(&self) -> Result<crate::consensus::ConsensusStatus, IslandError> {
        self.present()?;
        Ok(self.consensus.status().await)
    }

    /// Refuses what only a member may do, once this host was removed.
    pub(crate) fn present(&self) -> Result<(), IslandError> {
        if self.removed() { Err(IslandError::Removed) } else { Ok(()) }
    }

    /// A change made by this host's operator: applied here on the CA host, forwarded to it
    /// from anywhere else (and the answer adopted at once, so a `node ls` right after shows it).
    pub async fn change(&self, change: Change) -> Result<IslandState, IslandError> {
        if self.removed() {
            return Err(IslandError::Removed);
        }
        if self.is_ca_host() {
            return self.commit(&[change]).await;
        }
        let state = self.state();
        let url = self.ca_url(&state, crate::proto::CHANGE);
        let view: StateView = match transport::post(&self.client(), &url, &crate::proto::ChangeRequest { change }).await {
            Ok(v) => v,
            Err(source @ TransportError::Connect { .. }) => {
                let ca = state.members.get(&state.island.ca_host);
                return Err(IslandError::CaUnreachable {
                    name: ca.map_or_else(|| state.island.ca_host.clone(), |m| m.name.clone()),
                    addr: ca.map_or_else(String::new, |m| m.mesh_ip.to_string()),
                    source: Box::new(source),
                });
            }
            Err(e) => return Err(e.into()),
        };
        self.adopt(view).await;
        Ok(self.state())
    }

    /// Takes a newer state (and the CA host's liveness view) from the CA host.
    /// A state without this host means it was removed: that one is not taken (the last state
    /// this host was in keeps its mesh and listeners configured); nor is one of another island.
    pub(crate) async fn adopt(&self, view: StateView) {
        if self.removed() {
            return;
        }
        let (version, island) = {
            let s = self.state.borrow();
            (s.version, s.island.id.clone())
        };
        if view.state.island.id != island {
            tracing::warn!(got = %view.state.island.id, expected = %island, "ignoring a state of another island");
            return;
        }
        if !view.state.members.contains_key(&self.me) {
            self.mark_removed("the island's state no longer lists this host");
            return;
        }
        {
            let mut mine = self.seen.lock().unwrap();
            for (id, t) in view.seen {
                let e = mine.entry(id).or_insert(t);
                *e = (*e).max(t);
            }
        }
        if view.state.version > version && self.take_state(view.state) {
            self.on_state_changed().await;
        }
    }

    /// What follows a new state: the mesh's lighthouses and blocklist, the TLS revocations.
    pub(crate) async fn on_state_changed(&self) {
        if let Err(e) = self.rebuild_tls() {
            tracing::warn!(error = %e, "rebuilding the control plane's TLS");
        }
        if let Err(e) = self.update_mesh().await {
            tracing::warn!(error = %e, "updating the mesh");
        }
    }

    /// The members as this host sees them, with the path to each (asked of Nebula).
    pub async fn nodes(&self) -> Vec<NodeView> {
        let tunnels = match self.mesh.lock().await.as_ref() {
            Some(m) => m.tunnels().await.unwrap_or_default(),
            None => Vec::new(),
        };
        self.views(&tunnels)
    }

    /// The members, with the paths in `tunnels` (none for a member not in it).
    fn views(&self, tunnels: &[atoll_mesh::Tunnel]) -> Vec<NodeView> {
        let state = self.state();
        let seen = self.seen.lock().unwrap().clone();
        let now = unix_now();
        let removed = self.removed();
        let stacks = self.consensus.reader.with(crate::state::node_stacks);
        state
            .members
            .values()
            .map(|m| {
                let this = m.id == self.me;
                let last = if this { Some(now) } else { seen.get(&m.id).copied() };
                let st = match last {
                    _ if removed && this => "removed",
                    _ if removed => "unknown",
                    Some(t) if now - t <= self.cfg.down_after.as_secs() as i64 => "ready",
                    Some(_) => "down",
                    None => "unknown",
                };
                let path = if this {
                    None
                } else {
                    tunnels.iter().find(|t| t.mesh_ip == m.mesh_ip).map(|t| match &t.path {
                        atoll_mesh::TunnelPath::Direct(a) => format!("direct ({a})"),
                        atoll_mesh::TunnelPath::Relayed(via) => {
                            let names: Vec<String> = via
                                .iter()
                                .map(|ip| state.members.values().find(|x| x.mesh_ip == *ip).map_or(ip.to_string(), |x| x.name.clone()))
                                .collect();
                            format!("relayed via {}", names.join(", "))
                        }
                        atoll_mesh::TunnelPath::Pending => "pending".into(),
                    })
                };
                NodeView {
                    id: m.id.clone(),
                    name: m.name.clone(),
                    mesh_ip: m.mesh_ip.to_string(),
                    public: m.public.iter().map(ToString::to_string).collect(),
                    role: m.role,
                    state: st.into(),
                    labels: m.labels.clone(),
                    version: m.version.clone(),
                    last_seen: last.map(crate::model::rfc3339),
                    joined: crate::model::rfc3339(m.joined),
                    ca_host: m.id == state.island.ca_host,
                    this,
                    path,
                    cert_not_after: m.certs.iter().map(|c| c.not_after).max().map(crate::model::rfc3339),
                    availability: stacks.availability.get(&m.id).cloned().unwrap_or_else(active),
                    resources: stacks.resources.get(&m.id).cloned(),
                }
            })
            .collect()
    }

    /// One member, by name, ID or ID prefix.
    pub async fn node(&self, query: &str) -> Result<NodeView, IslandError> {
        let id = self.state().find(query).map(|m| m.id.clone()).ok_or_else(|| IslandError::UnknownNode(query.to_owned()))?;
        // The state may have moved on between the two reads.
        self.nodes().await.into_iter().find(|n| n.id == id).ok_or_else(|| IslandError::UnknownNode(query.to_owned()))
    }

    pub async fn status(&self) -> IslandStatus {
        // This host has no path to itself, and the member list here leaves paths out: asking
        // Nebula for its tunnels is an `ssh` to its sshd (~0.1 s), which `join` and `init`
        // would wait for. [`Manager::status_with_paths`] asks.
        self.status_of(self.views(&[])).await
    }

    /// [`Manager::status`] with each member's path (direct or relayed), as `info` and the
    /// dashboard show it.
    pub async fn status_with_paths(&self) -> IslandStatus {
        self.status_of(self.nodes().await).await
    }

    async fn status_of(&self, nodes: Vec<NodeView>) -> IslandStatus {
        let state = self.state();
        // A state that lost this host (one saved by an older version after a removal) still
        // answers, naming the host by its ID.
        let this = match nodes.iter().find(|n| n.this) {
            Some(n) => n.clone(),
            None => NodeView {
                id: self.me.clone(),
                name: self.me.clone(),
                mesh_ip: String::new(),
                public: Vec::new(),
                role: Role::Member,
                state: "removed".into(),
                labels: BTreeMap::new(),
                version: self.cfg.version.clone(),
                last_seen: None,
                joined: String::new(),
                ca_host: false,
                this: true,
                path: None,
                cert_not_after: None,
                availability: active(),
                resources: None,
            },
        };
        let r = self.renewal.lock().unwrap().clone();
        let t = |s: Option<SystemTime>| {
            s.map(|s| crate::model::rfc3339(s.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64))).unwrap_or_default()
        };
        let (running, restarts) = match self.mesh.lock().await.as_ref() {
            Some(m) => (m.pid().await.is_some(), m.restarts().await),
            None => (false, 0),
        };
        IslandStatus {
            name: state.island.name.clone(),
            id: state.island.id.clone(),
            this,
            members: state.members.len(),
            nodes,
            mesh_cidr: state.island.mesh_cidr.to_string(),
            ca_fingerprint: state.island.ca_fingerprint.clone(),
            state_version: state.version,
            cert_not_after: t(r.not_after),
            renew_at: t(r.renew_at),
            cert_lifetime: state.island.cert_lifetime,
            renew_error: r.error,
            mesh_running: running,
            mesh_restarts: restarts,
            removed: self.removed(),
        }
    }

    /// Sets and removes labels of a member.
    pub async fn label(&self, query: &str, set: BTreeMap<String, String>, unset: Vec<String>) -> Result<NodeView, IslandError> {
        let id = self.state().find(query).map(|m| m.id.clone()).ok_or_else(|| IslandError::UnknownNode(query.to_owned()))?;
        self.change(Change::SetLabels { id: id.clone(), set, unset }).await?;
        self.node(&id).await
    }

    /// Removes a member: it leaves the state and every certificate it had is revoked, for the
    /// mesh (Nebula's blocklist) and the control plane (the CRL).
    pub async fn remove(&self, query: &str) -> Result<Member, IslandError> {
        let m = self.state().find(query).cloned().ok_or_else(|| IslandError::UnknownNode(query.to_owned()))?;
        self.change(Change::Remove { id: m.id.clone(), now: unix_now() }).await?;
        Ok(m)
    }

    /// Stops this daemon's tasks and listeners. Nebula keeps running (the mesh outlives a
    /// daemon restart; the next daemon adopts it).
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().unwrap());
        for t in tasks {
            t.abort();
            // Gone once this returns: its listener is closed, its port free again.
            let _ = t.await;
        }
        self.consensus.shutdown().await;
    }

    /// Whether [`Manager::shutdown`] ran (this island must be opened again to be used).
    pub fn is_shut_down(&self) -> bool {
        *self.stop.borrow()
    }

    /// Whether this island must be opened again ([`Manager::reopen`]): its Raft store is from
    /// before a recovery that went on without it, and stopped.
    pub fn reopen_requested(&self) -> bool {
        self.reopen.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops this island and opens it again (what the daemon does when
    /// [`Manager::reopen_requested`]): a store marked stale is moved aside and re-synced.
    pub async fn reopen(self: std::sync::Arc<Self>) -> Result<Option<std::sync::Arc<Manager>>, IslandError> {
        self.shutdown().await;
        drop(self.mesh.lock().await.take());
        Self::open(self.cfg.clone()).await
    }

    /// This member met a newer epoch: the island was recovered without its store. Its Raft
    /// stops (its log may hold writes of voters the recovery went on without, which must not
    /// merge into the island's), a marker says which epoch to re-sync into, and the daemon is
    /// asked to open the island again.
    pub(crate) async fn go_stale(&self, newer: u64) {
        let marker = self.paths.root.join(crate::lifecycle::RESYNC_EPOCH);
        if let Err(e) = std::fs::write(&marker, newer.to_string()) {
            tracing::error!(error = %e, path = %marker.display(), "marking the Raft store for a re-sync");
            return;
        }
        tracing::error!(
            this_epoch = self.consensus.epoch.mine,
            island_epoch = newer,
            "the island was recovered without this member's Raft store: stopping it; re-syncing from the others (the old store is kept aside)"
        );
        self.consensus.shutdown().await;
        self.reopen.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.lock().unwrap().push(tokio::spawn(task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_and_host_labels() {
        assert_eq!(parse_public("203.0.113.10", 4242).unwrap(), "203.0.113.10:4242".parse().unwrap());
        assert_eq!(parse_public("203.0.113.10:5000", 4242).unwrap(), "203.0.113.10:5000".parse().unwrap());
        for bad in ["", "localhost", "127.0.0.1", "0.0.0.0", "203.0.113.10:0", "224.0.0.1", "[2001:db8::1]:4242", "not an ip"] {
            assert!(parse_public(bad, 4242).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_addresses_that_reach_nobody_are_refused_consistently() {
        for bad in ["255.255.255.255", "240.0.0.1", "0.1.2.3", "169.254.1.1", "127.1.2.3", "239.1.1.1"] {
            assert!(matches!(parse_public(bad, 4242), Err(IslandError::BadPublic { .. })), "{bad}");
        }
        let e = parse_public("2001:db8::1", 4242).unwrap_err().to_string();
        assert!(e.contains("IPv4 only"), "{e}");
        let a = parse_public("203.0.113.10", 4242).unwrap();
        assert!(check_publics(&[a]).is_ok());
        let e = check_publics(&[a, a]).unwrap_err().to_string();
        assert!(e.contains("given twice"), "{e}");
        // What a peer sends is checked the same way.
        assert!(check_publics(&["255.255.255.255:4242".parse().unwrap()]).is_err());
        assert_eq!(host_label("My_Host.example"), "my-host-example");
        assert_eq!(host_label("---"), "host");
    }
}
