//! Island routes: `init`, `join`, `leave`, invites, and the members (`/v1/nodes`). They drive
//! this daemon's `atoll_island::Manager`, which is absent until the host creates or joins an
//! island.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use atoll_island::{ConsensusStatus, InviteView, IslandError, IslandStatus, Manager, NewInvite, NodeView, Recovery};

use crate::server::{ApiError, AppState};
use crate::types::ErrorBody;

type St = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

/// The island of this daemon, once it has one.
#[derive(Default)]
pub struct IslandSlot {
    pub config: Option<atoll_island::Config>,
    pub manager: tokio::sync::RwLock<Option<Arc<Manager>>>,
}

impl From<IslandError> for ApiError {
    fn from(e: IslandError) -> Self {
        Self::of_kind(e.kind(), &e)
    }
}

impl IslandSlot {
    pub(crate) async fn get(&self) -> ApiResult<Arc<Manager>> {
        self.manager.read().await.clone().ok_or_else(|| IslandError::NotMember.into())
    }

    /// Opens the island again whenever its manager asks to be ([`Manager::reopen_requested`]:
    /// its Raft store is from before a recovery of the island, and re-syncs), looking once a
    /// second for the daemon's life.
    pub async fn reopen_when_asked(&self) {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if !self.manager.read().await.as_ref().is_some_and(|m| m.reopen_requested()) {
                continue;
            }
            let mut slot = self.manager.write().await;
            let Some(m) = slot.clone().filter(|m| m.reopen_requested()) else { continue };
            *slot = match m.reopen().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %atoll_island::proto::Problem::from_error(&e), "opening the island again to re-sync");
                    None
                }
            };
        }
    }

    fn config(&self) -> ApiResult<atoll_island::Config> {
        self.config.clone().ok_or_else(|| ApiError::bad_request("this daemon runs without island support"))
    }
}

/// `atoll init`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InitRequest {
    /// The island's name (a DNS label).
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// This host's name [default: its hostname].
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub node_name: Option<String>,
    /// Public `ADDR[:PORT]`s: this host becomes a lighthouse, relay and join endpoint.
    #[serde(default)]
    pub public: Vec<String>,
    /// The mesh's IPv4 prefix [default: 10.42.0.0/16].
    #[serde(default)]
    pub mesh_cidr: Option<String>,
    /// Where stack networks' subnets come from, /8 to /19 [default: 10.128.0.0/10]: each
    /// stack network gets a /19, and each member a /26 of that (Swarm's `--default-addr-pool`).
    #[serde(default)]
    pub default_addr_pool: Option<String>,
}

/// `atoll join`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JoinRequest {
    #[schema(max_length = 4096)]
    pub code: String,
    /// This host's name [default: the invite's, else its hostname].
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: Option<String>,
    #[serde(default)]
    pub public: Vec<String>,
}

/// `atoll invite`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InviteRequest {
    /// The name the joining host takes.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: Option<String>,
    /// Seconds until it expires [default: 3600].
    #[serde(default)]
    #[schema(minimum = 1, maximum = 2592000)]
    pub expires: Option<u64>,
    /// The joining host will be public.
    #[serde(default)]
    pub public: bool,
}

/// `atoll node label`: at least one label to set or remove; a key in both is refused.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelRequest {
    #[serde(default)]
    #[schema(schema_with = atoll_spec::openapi::node_labels)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    #[schema(schema_with = atoll_spec::openapi::node_label_keys)]
    pub unset: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaveResponse {
    /// Said when the island could not be told.
    pub warning: Option<String>,
}

/// Longest invite lifetime accepted: 30 days.
const MAX_INVITE: u64 = 30 * 86_400;

fn publics(list: &[String], cfg: &atoll_island::Config) -> ApiResult<Vec<std::net::SocketAddr>> {
    let list: Vec<std::net::SocketAddr> =
        list.iter().map(|p| atoll_island::manager::parse_public(p, cfg.mesh_port)).collect::<Result<_, _>>()?;
    atoll_island::manager::check_publics(&list)?;
    Ok(list)
}

/// This host's container networks (name, IPv4 subnet), which an island's mesh may not overlap.
async fn container_networks(s: &AppState) -> Vec<(String, ipnet::Ipv4Net)> {
    s.engine.networks().list().await.into_iter().map(|n| (n.name, n.subnet4)).collect()
}

/// Creates an island with this host as its first member.
#[utoipa::path(post, path = "/v1/island/init", tag = "island", request_body = InitRequest,
    responses((status = 201, body = IslandStatus), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn init(State(s): St, body: Result<Json<InitRequest>, JsonRejection>) -> ApiResult<(StatusCode, Json<IslandStatus>)> {
    let Json(req) = body?;
    let cfg = s.island.config()?;
    let mut slot = s.island.manager.write().await;
    if let Some(m) = slot.as_ref() {
        return Err(IslandError::AlreadyMember(m.state().island.name).into());
    }
    let mesh_cidr = match &req.mesh_cidr {
        Some(c) => {
            c.parse().map_err(|_| ApiError::bad_request(format!("invalid --mesh-cidr {c:?}: give an IPv4 prefix like 10.42.0.0/16")))?
        }
        None => "10.42.0.0/16".parse().expect("a valid prefix"),
    };
    let stack_pool = match &req.default_addr_pool {
        Some(c) => Some(c.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid --default-addr-pool {c:?}: give an IPv4 prefix like {}",
                atoll_island::model::DEFAULT_STACK_POOL
            ))
        })?),
        None => None,
    };
    let opts = atoll_island::InitOptions {
        name: req.name,
        node_name: req.node_name,
        public: publics(&req.public, &cfg)?,
        mesh_cidr,
        stack_pool,
        networks: container_networks(&s).await,
    };
    let m = Manager::init(cfg, opts).await?;
    let status = m.status().await;
    *slot = Some(m);
    Ok((StatusCode::CREATED, Json(status)))
}

/// Joins an island with an invite code.
#[utoipa::path(post, path = "/v1/island/join", tag = "island", request_body = JoinRequest,
    responses((status = 201, body = IslandStatus), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn join(State(s): St, body: Result<Json<JoinRequest>, JsonRejection>) -> ApiResult<(StatusCode, Json<IslandStatus>)> {
    let Json(req) = body?;
    let cfg = s.island.config()?;
    let mut slot = s.island.manager.write().await;
    if let Some(m) = slot.as_ref() {
        return Err(IslandError::AlreadyMember(m.state().island.name).into());
    }
    let opts = atoll_island::JoinOptions { name: req.name, public: publics(&req.public, &cfg)?, networks: container_networks(&s).await };
    let m = Manager::join(cfg, &req.code, opts).await?;
    let status = m.status().await;
    *slot = Some(m);
    Ok((StatusCode::CREATED, Json(status)))
}

/// Leaves the island.
#[utoipa::path(post, path = "/v1/island/leave", tag = "island",
    responses((status = 200, body = LeaveResponse), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)))]
pub async fn leave(State(s): St) -> ApiResult<Json<LeaveResponse>> {
    let mut slot = s.island.manager.write().await;
    let Some(m) = slot.clone() else {
        // An unfinished join leaves its keys (to retry it): `leave` gives up on it.
        if let Some(cfg) = &s.island.config
            && atoll_island::Manager::forget_unfinished_join(cfg)
        {
            return Ok(Json(LeaveResponse {
                warning: Some("this host was not in an island; the keys of an unfinished join were removed".into()),
            }));
        }
        return Err(IslandError::NotMember.into());
    };
    let warning = m.leave().await?;
    *slot = None;
    Ok(Json(LeaveResponse { warning }))
}

/// `atoll island backup`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupRequest {
    /// What the backup is sealed with: at least 12 characters.
    #[schema(min_length = 12)]
    pub passphrase: String,
}

/// Largest backup taken by a restore.
const MAX_BACKUP: usize = 256 << 20;

/// A sealed backup of the island (on the CA host): every document of the replicated state,
/// consistent as of the request, and the CA keys, encrypted with the passphrase
/// (ChaCha20-Poly1305, key by PBKDF2-HMAC-SHA256).
#[utoipa::path(post, path = "/v1/island/backup", tag = "island", request_body = BackupRequest,
    responses((status = 200, description = "The sealed backup", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn backup(State(s): St, body: Result<Json<BackupRequest>, JsonRejection>) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse as _;
    let Json(req) = body?;
    let data = s.island.get().await?.backup(&req.passphrase).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RestoreQuery {
    /// This host's public `ADDR[:PORT]`s, comma-separated, replacing the backed-up CA host's
    /// (a replacement machine has its own address; invites carry these).
    #[serde(default)]
    pub public: Option<String>,
}

/// Rebuilds the island from a sealed backup on this host (in no island): it becomes the CA
/// host and the only member and voter, with every document of the backup; the other members
/// join again with new invites. The body is the passphrase, a newline, then the backup.
#[utoipa::path(post, path = "/v1/island/restore", tag = "island", params(RestoreQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The passphrase, a newline, then the sealed backup"),
    responses((status = 201, body = IslandStatus), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn restore(
    State(s): St,
    q: Result<Query<RestoreQuery>, QueryRejection>,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<IslandStatus>)> {
    let q = q?;
    let cfg = s.island.config()?;
    let public = q
        .public
        .iter()
        .flat_map(|p| p.split(','))
        .map(|p| atoll_island::manager::parse_public(p.trim(), cfg.mesh_port))
        .collect::<Result<Vec<_>, _>>()?;
    let data = axum::body::to_bytes(body, MAX_BACKUP)
        .await
        .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, &std::io::Error::other(format!("the backup: {e} (at most 256 MiB)"))))?;
    let nl =
        data.iter().position(|&b| b == b'\n').ok_or_else(|| ApiError::bad_request("send the passphrase, a newline, then the backup"))?;
    let passphrase = std::str::from_utf8(&data[..nl]).map_err(|_| ApiError::bad_request("the passphrase is not UTF-8"))?.to_owned();
    let mut slot = s.island.manager.write().await;
    if let Some(m) = slot.as_ref() {
        return Err(IslandError::AlreadyMember(m.state().island.name).into());
    }
    let m = Manager::restore(cfg, &data[nl + 1..], &passphrase, &container_networks(&s).await, &public).await?;
    let status = m.status().await;
    *slot = Some(m);
    Ok((StatusCode::CREATED, Json(status)))
}

#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecoverQuery {
    /// Only check and say what would be done.
    #[serde(default)]
    pub dry_run: bool,
}

/// Goes on without the lost voters (`atoll island recover`): this host, a voter, becomes the
/// only one with what its replica holds, and the voters grow back from the members that are
/// up. Refused (409) while the island has a leader or a majority of the voters answers.
#[utoipa::path(post, path = "/v1/island/recover", tag = "island", params(RecoverQuery),
    responses((status = 200, body = Recovery), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn recover(State(s): St, q: Result<Query<RecoverQuery>, QueryRejection>) -> ApiResult<Json<Recovery>> {
    let q = q?;
    if q.dry_run {
        return Ok(Json(s.island.get().await?.recover_dry_run().await?));
    }
    let mut slot = s.island.manager.write().await;
    let m = slot.clone().ok_or(IslandError::NotMember)?;
    match m.clone().recover().await {
        Ok((r, next)) => {
            *slot = Some(next);
            Ok(Json(r))
        }
        Err(e) => {
            // Stopped on the way: open it again as it is.
            if m.is_shut_down() {
                *slot = match atoll_island::Manager::open(s.island.config()?).await {
                    Ok(m) => m,
                    Err(again) => {
                        tracing::error!(error = %again, "opening the island again after a failed recovery");
                        None
                    }
                };
            }
            Err(e.into())
        }
    }
}

/// The island as this host sees it.
#[utoipa::path(get, path = "/v1/island", tag = "island", responses((status = 200, body = IslandStatus), (status = 404, body = ErrorBody)))]
pub async fn status(State(s): St) -> ApiResult<Json<IslandStatus>> {
    Ok(Json(s.island.get().await?.status_with_paths().await))
}

/// The island's replicated state (`atoll island status`): the Raft leader and term, the voters
/// and learners, each member's log index and lag as the leader sees them, how stale this
/// host's local reads may be, and what Atoll will do next about the voters. Reads of the
/// island's listings (`node ls`, invites) are local: as fresh as `local_lag` says.
#[utoipa::path(get, path = "/v1/island/raft", tag = "island", responses((status = 200, body = ConsensusStatus), (status = 404, body = ErrorBody)))]
pub async fn raft(State(s): St) -> ApiResult<Json<ConsensusStatus>> {
    Ok(Json(s.island.get().await?.consensus_status().await?))
}

/// A value of the island's key-value store and its version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KvEntry {
    pub key: String,
    /// Any JSON.
    pub value: serde_json::Value,
    /// The Raft log index of the write that made it (Consul's `ModifyIndex`): what `cas` takes.
    pub version: u64,
}

/// What a write to the key-value store did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KvWritten {
    /// The key's new version (for a delete, the index of the delete).
    pub version: u64,
}

#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KvReadQuery {
    /// Read this member's replica (may lag the leader by `island status`'s `local_lag`)
    /// instead of a linearizable read through the leader.
    #[serde(default)]
    pub stale: bool,
}

#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KvCasQuery {
    /// Check-and-set: write only if the key is at this version (0: only if it is absent).
    pub cas: Option<u64>,
}

/// Reads a key of the island's key-value store.
#[utoipa::path(get, path = "/v1/island/kv/{key}", tag = "island",
    params(("key" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ -", pattern = "^[A-Za-z0-9._-]{1,128}$"), KvReadQuery),
    responses((status = 200, body = KvEntry), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn kv_get(State(s): St, Path(key): Path<String>, q: Result<Query<KvReadQuery>, QueryRejection>) -> ApiResult<Json<KvEntry>> {
    let q = q?;
    let m = s.island.get().await?;
    match m.kv_get(&key, q.stale).await? {
        Some(v) => Ok(Json(KvEntry { key, value: v.value, version: v.version })),
        None => Err(ApiError::of_kind(atoll_util::ErrorKind::NotFound, &std::io::Error::other(format!("no key {key}")))),
    }
}

/// Writes a key of the island's key-value store; the body is its JSON value.
#[utoipa::path(put, path = "/v1/island/kv/{key}", tag = "island",
    params(("key" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ -", pattern = "^[A-Za-z0-9._-]{1,128}$"), KvCasQuery),
    request_body(content = serde_json::Value, description = "Any JSON value, at most 64 KiB"),
    responses((status = 200, body = KvWritten), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn kv_put(
    State(s): St,
    Path(key): Path<String>,
    q: Result<Query<KvCasQuery>, QueryRejection>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> ApiResult<Json<KvWritten>> {
    let q = q?;
    let Json(value) = body?;
    Ok(Json(KvWritten { version: s.island.get().await?.kv_put(&key, value, q.cas).await? }))
}

/// Deletes a key of the island's key-value store.
#[utoipa::path(delete, path = "/v1/island/kv/{key}", tag = "island",
    params(("key" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ -", pattern = "^[A-Za-z0-9._-]{1,128}$"), KvCasQuery),
    responses((status = 200, body = KvWritten), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn kv_delete(State(s): St, Path(key): Path<String>, q: Result<Query<KvCasQuery>, QueryRejection>) -> ApiResult<Json<KvWritten>> {
    let q = q?;
    Ok(Json(KvWritten { version: s.island.get().await?.kv_delete(&key, q.cas).await? }))
}

/// Creates an invite; the code is shown only in this answer.
#[utoipa::path(post, path = "/v1/island/invites", tag = "island", request_body = InviteRequest,
    responses((status = 201, body = NewInvite), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_invite(State(s): St, body: Result<Json<InviteRequest>, JsonRejection>) -> ApiResult<(StatusCode, Json<NewInvite>)> {
    let Json(req) = body?;
    let expires = req.expires.unwrap_or(3600);
    if expires == 0 || expires > MAX_INVITE {
        return Err(ApiError::bad_request(format!("--expires must be between 1 s and 30 days, not {expires} s")));
    }
    let m = s.island.get().await?;
    let opts = atoll_island::InviteOptions { name: req.name, expires: Duration::from_secs(expires), public: req.public };
    Ok((StatusCode::CREATED, Json(m.invite(opts).await?)))
}

/// Invites not used yet.
#[utoipa::path(get, path = "/v1/island/invites", tag = "island", responses((status = 200, body = Vec<InviteView>), (status = 404, body = ErrorBody)))]
pub async fn list_invites(State(s): St) -> ApiResult<Json<Vec<InviteView>>> {
    Ok(Json(s.island.get().await?.invites()))
}

/// Deletes an invite: its code no longer works.
#[utoipa::path(delete, path = "/v1/island/invites/{id}", tag = "island", params(("id" = String, Path, description = "Invite ID or prefix")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete_invite(State(s): St, Path(id): Path<String>) -> ApiResult<StatusCode> {
    s.island.get().await?.delete_invite(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The island's members.
#[utoipa::path(get, path = "/v1/nodes", tag = "island", responses((status = 200, body = Vec<NodeView>), (status = 404, body = ErrorBody)))]
pub async fn nodes(State(s): St) -> ApiResult<Json<Vec<NodeView>>> {
    Ok(Json(s.island.get().await?.nodes().await))
}

/// One member.
#[utoipa::path(get, path = "/v1/nodes/{node}", tag = "island", params(("node" = String, Path, description = "Name, ID or ID prefix")),
    responses((status = 200, body = NodeView), (status = 404, body = ErrorBody)))]
pub async fn node(State(s): St, Path(node): Path<String>) -> ApiResult<Json<NodeView>> {
    Ok(Json(s.island.get().await?.node(&node).await?))
}

/// Sets and removes a member's labels.
#[utoipa::path(post, path = "/v1/nodes/{node}/labels", tag = "island", params(("node" = String, Path, description = "Name, ID or ID prefix")),
    request_body = LabelRequest, responses((status = 200, body = NodeView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn label(State(s): St, Path(node): Path<String>, body: Result<Json<LabelRequest>, JsonRejection>) -> ApiResult<Json<NodeView>> {
    let Json(req) = body?;
    if req.set.is_empty() && req.unset.is_empty() {
        return Err(ApiError::bad_request("no labels given: set KEY=VALUE or remove KEY-"));
    }
    Ok(Json(s.island.get().await?.label(&node, req.set, req.unset).await?))
}

/// Removes a member and revokes its certificates.
#[utoipa::path(delete, path = "/v1/nodes/{node}", tag = "island", params(("node" = String, Path, description = "Name, ID or ID prefix")),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn remove_node(State(s): St, Path(node): Path<String>) -> ApiResult<StatusCode> {
    s.island.get().await?.remove(&node).await?;
    Ok(StatusCode::NO_CONTENT)
}
