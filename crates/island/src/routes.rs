//! The control plane's handlers. [`join`] is the router of the public join endpoint (TLS, no
//! client certificate); [`control`] the mTLS router on the mesh address, where every request
//! comes from a member named by its certificate. Requests that need the CA are handled here on
//! the CA host and forwarded to it elsewhere.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing};

use crate::manager::{IslandError, Manager, StateView, unix_now};
use crate::model::{Change, Member, ModelError, Role};
use crate::proto::{self, ChangeRequest, Heartbeat, JoinRequest, JoinResponse, Problem, RenewRequest};
use crate::transport::{self, Peer};

type M = State<Arc<Manager>>;

/// Largest request body taken.
const MAX_BODY: usize = 64 << 10;

/// An error answer: a status and a [`Problem`].
pub struct Refusal(StatusCode, Problem);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<IslandError> for Refusal {
    fn from(e: IslandError) -> Self {
        let status = match &e {
            IslandError::Model(ModelError::SecretMismatch) => StatusCode::FORBIDDEN,
            IslandError::Model(ModelError::InviteExpired(_)) => StatusCode::GONE,
            IslandError::Transport(t) => t.status().and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::BAD_GATEWAY),
            e => match e.kind() {
                atoll_util::ErrorKind::Invalid => StatusCode::BAD_REQUEST,
                atoll_util::ErrorKind::NotFound => StatusCode::NOT_FOUND,
                atoll_util::ErrorKind::Conflict => StatusCode::CONFLICT,
                atoll_util::ErrorKind::Upstream => StatusCode::BAD_GATEWAY,
                atoll_util::ErrorKind::Forbidden => StatusCode::FORBIDDEN,
                atoll_util::ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
        };
        if status.is_server_error() {
            tracing::warn!(error = %Problem::from_error(&e), "control-plane request failed");
        }
        let problem = match e {
            // The CA host's own words, passed through.
            IslandError::Transport(transport::TransportError::Refused { problem, .. }) => problem,
            e => Problem::from_error(&e),
        };
        Refusal(status, problem)
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, Problem { message: message.into(), causes: vec![] })
}

/// The caller, which must be a member.
fn member(m: &Manager, peer: &Peer) -> Result<Member, Refusal> {
    let id = peer.0.as_deref().ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "a member's certificate is needed"))?;
    m.state().members.get(id).cloned().ok_or_else(|| refuse(StatusCode::FORBIDDEN, format!("{id} is not a member of this island")))
}

/// The public join endpoint.
pub fn join(m: Arc<Manager>) -> Router {
    Router::new().route(proto::JOIN, routing::post(handle_join)).layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)).with_state(m)
}

/// Largest Raft request taken: a batch of entries, or a snapshot chunk (1 MiB) in JSON.
const MAX_RAFT_BODY: usize = 16 << 20;

/// The mesh's mTLS API.
pub fn control(m: Arc<Manager>) -> Router {
    let raft = Router::new()
        .route(proto::RAFT_APPEND, routing::post(raft_append))
        .route(proto::RAFT_VOTE, routing::post(raft_vote))
        .route(proto::RAFT_SNAPSHOT, routing::post(raft_snapshot))
        .route(proto::RAFT_WRITE, routing::post(raft_write))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_RAFT_BODY));
    Router::new()
        .route(proto::JOIN, routing::post(handle_join))
        .route(proto::RENEW, routing::post(renew))
        .route(proto::STATE, routing::get(state))
        .route(proto::CHANGE, routing::post(change))
        .route(proto::HEARTBEAT, routing::post(heartbeat))
        .route(proto::RAFT_READ, routing::get(raft_read))
        .route(proto::RAFT_STATUS, routing::get(raft_status))
        .route(proto::PING, routing::get(ping))
        .route(proto::LOGS, routing::get(logs))
        .route(proto::NAMES_KEY, routing::get(names_key))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .merge(raft)
        .with_state(m)
}

/// A caller with an island certificate (the TLS handshake checked it against the CA and the
/// CRL). Raft's RPCs take any: a member that is behind may not know yet of a newer one that
/// leads, and must still hear from it.
fn certified(peer: &Peer) -> Result<(), Refusal> {
    peer.0.as_ref().map(drop).ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "a member's certificate is needed"))
}

type RaftAnswer<T, E = openraft::error::Infallible> = Json<Result<T, openraft::error::RaftError<atoll_state::NodeId, E>>>;

/// Why a Raft RPC from another epoch is refused (see [`same_epoch`]).
enum OtherEpoch {
    /// The caller's is older: `409`, with this member's epoch (the caller re-syncs).
    Older { mine: u64, theirs: u64 },
    /// The caller's is newer: this member re-syncs; `503` meanwhile.
    Newer,
}

impl IntoResponse for OtherEpoch {
    fn into_response(self) -> Response {
        match self {
            OtherEpoch::Older { mine, theirs } => {
                let message = format!(
                    "this member is of the island's epoch {mine}, after a recovery that went on without the caller (epoch {theirs}): the caller re-syncs"
                );
                (StatusCode::CONFLICT, [(crate::consensus::EPOCH_HEADER, mine.to_string())], Json(Problem { message, causes: vec![] }))
                    .into_response()
            }
            OtherEpoch::Newer => {
                refuse(StatusCode::SERVICE_UNAVAILABLE, "the island was recovered without this member's store: re-syncing").into_response()
            }
        }
    }
}

/// Raft's RPCs pass only within one epoch (see [`crate::consensus::Epoch`]).
fn same_epoch(m: &Manager, headers: &axum::http::HeaderMap) -> Result<(), OtherEpoch> {
    let theirs: u64 = headers.get(crate::consensus::EPOCH_HEADER).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
    let mine = m.consensus.epoch.mine;
    if theirs < mine {
        return Err(OtherEpoch::Older { mine, theirs });
    }
    if m.consensus.epoch.met(theirs) {
        return Err(OtherEpoch::Newer);
    }
    Ok(())
}

async fn raft_append(
    State(m): M,
    Extension(peer): Extension<Peer>,
    headers: axum::http::HeaderMap,
    Json(rpc): Json<openraft::raft::AppendEntriesRequest<atoll_state::TypeConfig>>,
) -> Result<RaftAnswer<openraft::raft::AppendEntriesResponse<atoll_state::NodeId>>, Response> {
    certified(&peer).map_err(IntoResponse::into_response)?;
    same_epoch(&m, &headers).map_err(IntoResponse::into_response)?;
    Ok(Json(m.consensus.raft.append_entries(rpc).await))
}

async fn raft_vote(
    State(m): M,
    Extension(peer): Extension<Peer>,
    headers: axum::http::HeaderMap,
    Json(rpc): Json<openraft::raft::VoteRequest<atoll_state::NodeId>>,
) -> Result<RaftAnswer<openraft::raft::VoteResponse<atoll_state::NodeId>>, Response> {
    certified(&peer).map_err(IntoResponse::into_response)?;
    same_epoch(&m, &headers).map_err(IntoResponse::into_response)?;
    if m.consensus.resyncing() {
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "re-syncing after a damaged or lost Raft store: not voting until caught up")
            .into_response());
    }
    Ok(Json(m.consensus.raft.vote(rpc).await))
}

async fn raft_snapshot(
    State(m): M,
    Extension(peer): Extension<Peer>,
    headers: axum::http::HeaderMap,
    Json(rpc): Json<openraft::raft::InstallSnapshotRequest<atoll_state::TypeConfig>>,
) -> Result<RaftAnswer<openraft::raft::InstallSnapshotResponse<atoll_state::NodeId>, openraft::error::InstallSnapshotError>, Response> {
    certified(&peer).map_err(IntoResponse::into_response)?;
    same_epoch(&m, &headers).map_err(IntoResponse::into_response)?;
    Ok(Json(m.consensus.raft.install_snapshot(rpc).await))
}

/// The leader's answer; `421` (with where the leader is) from a member that does not lead.
fn from_leader<T>(r: Result<T, Result<Option<String>, crate::consensus::ConsensusError>>) -> Result<Json<T>, Refusal> {
    match r {
        Ok(r) => Ok(Json(r)),
        Err(Ok(Some(l))) => Err(refuse(StatusCode::MISDIRECTED_REQUEST, format!("this member does not lead; the leader is at {l}"))),
        Err(Ok(None)) => Err(refuse(StatusCode::MISDIRECTED_REQUEST, "this member does not lead, and knows of no other leader")),
        Err(Err(e)) => Err(IslandError::from(e).into()),
    }
}

async fn raft_write(
    State(m): M,
    Extension(peer): Extension<Peer>,
    Json(req): Json<atoll_state::Request>,
) -> Result<Json<atoll_state::Response>, Refusal> {
    member(&m, &peer)?;
    from_leader(m.consensus.write_here(req).await)
}

#[derive(Debug, serde::Deserialize)]
struct Key {
    key: String,
}

async fn raft_read(
    State(m): M,
    Extension(peer): Extension<Peer>,
    Query(q): Query<Key>,
) -> Result<Json<Option<atoll_state::keyspace::Versioned>>, Refusal> {
    member(&m, &peer)?;
    from_leader(m.consensus.read_here(&q.key).await)
}

async fn raft_status(State(m): M, Extension(peer): Extension<Peer>) -> Result<Json<crate::ConsensusStatus>, Refusal> {
    certified(&peer)?;
    Ok(Json(m.consensus.local_status()))
}

async fn ping(State(m): M, Extension(peer): Extension<Peer>) -> Result<Json<proto::Pong>, Refusal> {
    certified(&peer)?;
    if let Some(caller) = &peer.0 {
        m.pinged_by(caller);
    }
    Ok(Json(proto::Pong { schema_reads: atoll_state::schema::SCHEMA }))
}

/// A stack replica's output here, for `service logs` on another member.
async fn logs(State(m): M, Extension(peer): Extension<Peer>, Query(q): Query<proto::LogsQuery>) -> Result<Response, Refusal> {
    member(&m, &peer)?;
    let source = m.cfg.logs.get().ok_or_else(|| refuse(StatusCode::SERVICE_UNAVAILABLE, "this member's engine is not up yet"))?;
    let rx = source.logs(&q.container, q.tail, q.follow).map_err(|why| refuse(StatusCode::NOT_FOUND, why))?;
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx)) });
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], axum::body::Body::from_stream(stream)).into_response())
}

/// The names' data key, for a member (the CA host keeps it; others ask it).
async fn names_key(State(m): M, Extension(peer): Extension<Peer>) -> Result<Json<proto::NamesKey>, Refusal> {
    member(&m, &peer)?;
    if !m.is_ca_host() {
        return Err(refuse(StatusCode::NOT_FOUND, "the CA host keeps the names' data key: ask it"));
    }
    Ok(Json(proto::NamesKey { key: m.names_key().await? }))
}

async fn handle_join(State(m): M, Json(req): Json<JoinRequest>) -> Result<Json<JoinResponse>, Refusal> {
    if !m.is_ca_host() {
        let url = m.ca_url(&m.state(), proto::JOIN);
        return Ok(Json(transport::post(&m.client(), &url, &req).await.map_err(IslandError::from)?));
    }
    Ok(Json(admit(&m, req).await?))
}

/// The CA host admits a host with an invite: checks the invite, signs its keys, records it.
/// A host asking again with the same keys (its first answer was lost) gets fresh certificates
/// for the membership it already has.
async fn admit(m: &Manager, req: JoinRequest) -> Result<JoinResponse, IslandError> {
    let key_sha256 = crate::model::sha256_hex(req.nebula_pub.as_bytes());
    let now = SystemTime::now();
    let state = m.state();
    let schema = m.consensus.reader.with(|k| k.schema);
    if req.schema_reads < schema {
        return Err(IslandError::TooOld { reads: req.schema_reads, schema });
    }
    let existing = state.check_invite(&req.invite_id, &req.secret, &key_sha256, unix_now())?.cloned();
    if existing.is_none() {
        let invite = state.invites.get(&req.invite_id).ok_or_else(|| ModelError::InviteUnknown(req.invite_id.clone()))?;
        if invite.public && req.public.is_empty() {
            return Err(IslandError::PublicInvite);
        }
        if !invite.public && !req.public.is_empty() {
            return Err(IslandError::NotPublicInvite);
        }
        crate::manager::check_publics(&req.public)?;
        if !crate::model::valid_host_name(&req.name) {
            return Err(ModelError::BadName(req.name.clone()).into());
        }
        if state.member_by_name(&req.name).is_some() {
            return Err(ModelError::NameTaken(req.name.clone()).into());
        }
    }
    let mut taken: std::collections::BTreeSet<std::net::Ipv4Addr> = state.members.values().map(|x| x.mesh_ip).collect();
    taken.insert(state.island.mesh_cidr.network());
    let (id, mesh_ip, name, public) = match &existing {
        Some(x) => (x.id.clone(), x.mesh_ip, x.name.clone(), x.public.clone()),
        None => {
            let ip = crate::ipam::next_free(state.island.mesh_cidr, &taken).ok_or(IslandError::MeshPrefix(state.island.mesh_cidr))?;
            (atoll_util::random_hex(8), ip, req.name.clone(), req.public.clone())
        }
    };
    let authority = m.authority.as_ref().expect("admitting on the CA host");
    let lifetime = Duration::from_secs(state.island.cert_lifetime);
    let signed = authority.sign(&id, &name, mesh_ip, state.island.mesh_cidr, &req.csr, &req.nebula_pub, lifetime, now).await?;
    let join_cert = if public.is_empty() {
        None
    } else {
        let ips: Vec<std::net::IpAddr> = public.iter().map(|p| p.ip()).collect();
        Some(authority.x509.sign_server(&req.csr, &ips, now, lifetime)?.cert_pem)
    };
    let change = match existing {
        Some(_) => Change::Renewed { id: id.clone(), issued: signed.issued, now: unix_now() },
        None => Change::Join {
            invite_id: req.invite_id.clone(),
            secret: req.secret.clone(),
            key_sha256,
            member: Member {
                id: id.clone(),
                name: name.clone(),
                mesh_ip,
                role: if public.is_empty() { Role::Member } else { Role::Lighthouse },
                public,
                labels: Default::default(),
                version: req.version.clone(),
                joined: unix_now(),
                certs: vec![signed.issued],
                overlay_index: None,
            },
            now: unix_now(),
        },
    };
    let state = m.commit(&[change]).await?;
    tracing::info!(node = %name, %mesh_ip, "admitted a host to the island");
    m.seen.lock().unwrap().insert(id.clone(), unix_now());
    let epoch = m.consensus.epoch.mine;
    Ok(JoinResponse { node_id: id, mesh_ip, cert: signed.cert, nebula_cert: signed.nebula_cert, join_cert, state, epoch })
}

async fn renew(
    State(m): M,
    Extension(peer): Extension<Peer>,
    Json(req): Json<RenewRequest>,
) -> Result<Json<proto::RenewResponse>, Refusal> {
    let caller = member(&m, &peer)?;
    if !m.is_ca_host() {
        return Err(refuse(StatusCode::MISDIRECTED_REQUEST, "renewals go to the CA host"));
    }
    Ok(Json(m.sign_renewal(&caller.id, &req).await?))
}

#[derive(Debug, serde::Deserialize)]
struct Since {
    since: Option<u64>,
}

async fn state(State(m): M, Extension(peer): Extension<Peer>, Query(q): Query<Since>) -> Result<Json<StateView>, Refusal> {
    member(&m, &peer)?;
    let since = q.since.unwrap_or(0);
    let mut rx = m.subscribe();
    let _ = tokio::time::timeout(proto::STATE_WAIT, rx.wait_for(|s| s.version > since)).await;
    let mut seen = m.seen.lock().unwrap().clone();
    seen.insert(m.id().to_owned(), unix_now());
    Ok(Json(StateView { state: m.state(), seen }))
}

async fn change(State(m): M, Extension(peer): Extension<Peer>, Json(req): Json<ChangeRequest>) -> Result<Response, Refusal> {
    let caller = member(&m, &peer)?;
    if !proto::change_allowed(&req.change) {
        return Err(refuse(StatusCode::BAD_REQUEST, "this change cannot be asked for here"));
    }
    if let Change::Remove { id, .. } = &req.change
        && *id == caller.id
        && m.is_ca_host()
    {
        return leaving(m, req.change).await;
    }
    let state = m.change(req.change).await?;
    let seen = m.seen.lock().unwrap().clone();
    Ok(Json(StateView { state, seen }).into_response())
}

/// A member leaving (the CA host's side of `atoll leave`): its answer goes over the mesh, so
/// the mesh learns of the removal (and blocklists the member, cutting the tunnel) only once
/// the answer's body was handed to the connection.
async fn leaving(m: Arc<Manager>, change: Change) -> Result<Response, Refusal> {
    let state = m.commit_state(&[change]).await?;
    let seen = m.seen.lock().unwrap().clone();
    let body = serde_json::to_vec(&StateView { state, seen }).map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (sent, answered) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        // Sent, or dropped with the connection: either way the mesh may follow now.
        let _ = answered.await;
        if let Err(e) = m.update_mesh().await {
            tracing::warn!(error = %e, "updating the mesh");
        }
    });
    enum Stage {
        Body(Vec<u8>, tokio::sync::oneshot::Sender<()>),
        Done(tokio::sync::oneshot::Sender<()>),
    }
    let stream = futures_util::stream::unfold(Some(Stage::Body(body, sent)), |stage| async move {
        match stage? {
            Stage::Body(b, tx) => Some((Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(b)), Some(Stage::Done(tx)))),
            Stage::Done(tx) => {
                let _ = tx.send(());
                None
            }
        }
    });
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], axum::body::Body::from_stream(stream)).into_response())
}

/// A member is alive; the answer is when this host last heard of each member (itself now),
/// so every member's `node ls` is as fresh as the heartbeats.
async fn heartbeat(
    State(m): M,
    Extension(peer): Extension<Peer>,
    Json(beat): Json<Heartbeat>,
) -> Result<Json<std::collections::BTreeMap<String, i64>>, Refusal> {
    let caller = member(&m, &peer)?;
    m.seen.lock().unwrap().insert(caller.id.clone(), unix_now());
    // A new version, or members without an overlay index (an island from before stack
    // networks, whose CA host never heartbeats itself): the CA host records it.
    let lacking = m.state().members.values().any(|x| x.overlay_index.is_none());
    if m.is_ca_host() && (caller.version != beat.version || lacking) {
        m.commit(&[Change::Version { id: caller.id, version: beat.version }]).await?;
    }
    let mut seen = m.seen.lock().unwrap().clone();
    seen.insert(m.id().to_owned(), unix_now());
    Ok(Json(seen))
}
