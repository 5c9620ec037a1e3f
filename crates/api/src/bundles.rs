//! Bundle routes (issue 18): the authors this host runs bundles of, and the bundles it runs
//! (`atoll bundle allow|run|ls|inspect|rm`), over [`atoll_bundles::Bundles`]. On an island
//! member they act on the island's ([`crate::bundle_island`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use atoll_bundles::{Allowed, BundleError, BundleView, Bundles};

use crate::server::{ApiError, AppState};
use crate::types::ErrorBody;

type St = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

impl From<BundleError> for ApiError {
    fn from(e: BundleError) -> Self {
        Self::of_kind(e.kind(), &e)
    }
}

fn bundles(s: &AppState) -> ApiResult<Arc<Bundles>> {
    s.bundles.clone().map_err(|why| {
        ApiError::of_kind(atoll_util::ErrorKind::Internal, &BundleError::Invalid(format!("bundles are unavailable on this host: {why}")))
    })
}

/// The island this host is a member of, if any: bundle commands then act on the island's.
async fn island(s: &AppState) -> Option<Arc<atoll_island::Manager>> {
    s.island.manager.read().await.clone()
}

/// An author to allow: a DID (`did:plc:…`, `did:web:…`) or a handle.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowRequest {
    #[schema(min_length = 1, max_length = 2048)]
    pub who: String,
    /// Allow every account `who` follows instead (`app.bsky.graph.follow` records).
    #[serde(default)]
    pub follows_of: bool,
}

/// A bundle to run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// `at://AUTHORITY/COLLECTION/RKEY` (`dev.atoll.bundle` or `at.functions.metadata`).
    #[schema(min_length = 1, max_length = 2048)]
    pub uri: String,
    /// The name it runs under here [default: its manifest's name].
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9-]{1,63}$")]
    pub name: Option<String>,
    /// Secrets by name, each a NaCl sealed box (base64) to this host's key
    /// (`GET /v1/bundle-key`); `atoll bundle run --secret` seals them.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, String>,
    /// Instances kept warm; 0 (the default) lets an idle bundle scale to zero.
    #[serde(default)]
    #[schema(maximum = 16)]
    pub min_instances: u32,
    /// The most instances under load (oci and deno bundles; 0, the default: as many as
    /// `min_instances`, at least one).
    #[serde(default)]
    #[schema(maximum = 16)]
    pub max_instances: u32,
    /// Values for env names the bundle declares (`permissions.env`).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// The runner key secrets are sealed to: the island's on a member, else this host's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunnerKey {
    /// X25519, base64: authors seal secrets to it.
    pub public_key: String,
    /// How: `x25519-xsalsa20poly1305-sealed-box` (libsodium's `crypto_box_seal`).
    pub algorithm: String,
}

/// The authors whose bundles this host runs.
#[utoipa::path(get, path = "/v1/bundle-authors", tag = "bundles", responses((status = 200, body = Vec<Allowed>), (status = 500, body = ErrorBody)))]
pub async fn list_allowed(State(s): St) -> ApiResult<Json<Vec<Allowed>>> {
    let b = bundles(&s)?;
    if let Some(m) = island(&s).await {
        return Ok(Json(crate::bundle_island::authors(&m).await?));
    }
    Ok(Json(b.allowed()?))
}

/// Allows an author's bundles: the DID or handle is resolved and checked both ways first.
#[utoipa::path(post, path = "/v1/bundle-authors", tag = "bundles", request_body = AllowRequest,
    responses((status = 200, body = Allowed), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 500, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn allow(State(s): St, body: Result<Json<AllowRequest>, JsonRejection>) -> ApiResult<Json<Allowed>> {
    let Json(req) = body?;
    let b = bundles(&s)?;
    if let Some(m) = island(&s).await {
        return Ok(Json(crate::bundle_island::allow(&m, &b, &req.who, req.follows_of).await?));
    }
    Ok(Json(b.allow(&req.who, req.follows_of).await?))
}

/// Stops allowing an author (its bundles running here keep running).
#[utoipa::path(delete, path = "/v1/bundle-authors/{who}", tag = "bundles", params(("who" = String, Path, description = "A DID or handle")),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn disallow(State(s): St, Path(who): Path<String>) -> ApiResult<StatusCode> {
    let b = bundles(&s)?;
    if let Some(m) = island(&s).await {
        crate::bundle_island::disallow(&m, &who).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    b.disallow(&who)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The bundles this host runs.
#[utoipa::path(get, path = "/v1/bundles", tag = "bundles", responses((status = 200, body = Vec<BundleView>), (status = 500, body = ErrorBody)))]
pub async fn list(State(s): St) -> ApiResult<Json<Vec<BundleView>>> {
    let b = bundles(&s)?;
    if let Some(m) = island(&s).await {
        return Ok(Json(crate::bundle_island::list(&m, &b).await?));
    }
    Ok(Json(b.list().await?))
}

/// Fetches a bundle from its author's PDS (its code checked against its CID) and runs it.
#[utoipa::path(post, path = "/v1/bundles", tag = "bundles", request_body = RunRequest,
    responses((status = 200, body = BundleView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 500, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn run(State(s): St, body: Result<Json<RunRequest>, JsonRejection>) -> ApiResult<Json<BundleView>> {
    let Json(req) = body?;
    let opts = atoll_bundles::RunOptions {
        name: req.name,
        secrets: req.secrets,
        min_instances: req.min_instances,
        max_instances: req.max_instances,
        env: req.env,
        island: None,
        accepted: None,
    };
    let b = bundles(&s)?;
    if let Some(m) = island(&s).await {
        return Ok(Json(crate::bundle_island::run(&m, &b, &req.uri, opts).await?));
    }
    Ok(Json(b.run(&req.uri, opts).await?))
}

/// What `GET /v1/bundles/{name}/logs` takes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BundleLogsQuery {
    /// Go on with new entries as they come, until the bundle is removed.
    pub follow: Option<bool>,
    /// Only the last N entries kept (the daemon keeps the last 1000 per bundle).
    #[param(maximum = 1000)]
    pub tail: Option<usize>,
}

/// A bundle's log (requests with their IDs, statuses and times, denials, cron runs, its
/// instances' starts), one JSON entry per line.
#[utoipa::path(get, path = "/v1/bundles/{name}/logs", tag = "bundles", params(("name" = String, Path), BundleLogsQuery),
    responses((status = 200, description = "Log entries", body = atoll_bundles::journal::Entry, content_type = "application/x-ndjson"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn logs(
    State(s): St,
    Path(name): Path<String>,
    q: Result<axum::extract::Query<BundleLogsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::response::Response> {
    let axum::extract::Query(q) = q?;
    let b = bundles(&s)?;
    // A bundle of the island's that runs elsewhere: its log is its member's.
    if let Some(m) = island(&s).await
        && b.inspect(&name).await.is_err()
    {
        crate::bundle_island::logs_here(&m, &name)?;
    }
    let (initial, mut rx) = b.logs(&name, q.tail).await?;
    let (tx, out) = tokio::sync::mpsc::channel::<bytes::Bytes>(256);
    let follow = q.follow.unwrap_or(false);
    tokio::spawn(async move {
        for e in &initial {
            if tx.send(crate::containers::ndjson_line(e)).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if tx.send(crate::containers::ndjson_line(&e)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(crate::containers::ndjson_response(out))
}

/// This host's public key for bundle secrets.
#[utoipa::path(get, path = "/v1/bundle-key", tag = "bundles", responses((status = 200, body = RunnerKey), (status = 500, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn key(State(s): St) -> ApiResult<Json<RunnerKey>> {
    let b = bundles(&s)?;
    // A member without the island's key yet must not hand out its own: nothing sealed to it
    // would open on the member the bundle runs on.
    if island(&s).await.is_some() && !b.has_island_key() {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: ErrorBody {
                message:
                    "the island's runner key is not here yet (the CA host is out of reach, or this member just joined): try again shortly"
                        .into(),
                causes: vec![],
            },
        });
    }
    Ok(Json(RunnerKey { public_key: b.public_key(), algorithm: "x25519-xsalsa20poly1305-sealed-box".into() }))
}

/// One bundle: where it comes from, its version and routes, and where they answer here.
#[utoipa::path(get, path = "/v1/bundles/{name}", tag = "bundles", params(("name" = String, Path)),
    responses((status = 200, body = BundleView), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn inspect(State(s): St, Path(name): Path<String>) -> ApiResult<Json<BundleView>> {
    let b = bundles(&s)?;
    if let Some(m) = island(&s).await {
        return Ok(Json(crate::bundle_island::view(&m, &b, &name).await?));
    }
    Ok(Json(b.inspect(&name).await?))
}

/// Stops a bundle and forgets it.
#[utoipa::path(delete, path = "/v1/bundles/{name}", tag = "bundles", params(("name" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn remove(State(s): St, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let b = bundles(&s)?;
    if let Some(m) = island(&s).await {
        crate::bundle_island::remove(&m, &name).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    b.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
