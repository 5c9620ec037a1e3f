//! The daemon's HTTP routes. Every route is declared with `#[utoipa::path]` and registered
//! through `utoipa-axum`, so the served OpenAPI document cannot miss a route.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use atoll_image::pull::PullEvent;
use atoll_image::{ErrorKind, ImageDetail, ImageError, ImageService, ImageSummary, PruneReport, RemoveReport};
use atoll_node::Engine;

use crate::types::*;

/// JSON request bodies larger than this are refused (413).
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// What the handlers share.
pub struct AppState {
    pub images: Arc<ImageService>,
    pub engine: Arc<Engine>,
    pub runtime: RuntimeInfo,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub insecure_registries: Vec<String>,
    pub started: Instant,
    pub metrics: crate::metrics::DaemonMetrics,
    /// The dashboard's login link, when `--web` is on.
    pub web_login: std::sync::Mutex<Option<String>>,
    /// The island this daemon is in, if any.
    pub island: crate::island::IslandSlot,
    /// The gateway, which runs while this member is public.
    pub ingress: Arc<atoll_ingress::serve::Ingress>,
    /// The bundles this host runs, or why they cannot run here.
    pub bundles: Result<Arc<atoll_bundles::Bundles>, String>,
}

type St = State<Arc<AppState>>;

impl AppState {
    /// Emits an image event (`pull`, `untag`, `delete`).
    pub fn image_event(&self, action: &str, id: &str, name: &str) {
        let e = atoll_node::events::Event::new("image", action, id, &[("name", name.to_owned())]);
        self.engine.events().emit(e);
    }

    /// Emits a network event (`create`, `destroy`).
    pub fn network_event(&self, action: &str, n: &atoll_net::NetworkRecord) {
        self.engine.events().emit(atoll_node::events::Event::new("network", action, &n.id, &[("name", n.name.clone())]));
    }
}

/// An error response: a status and the JSON error body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, e: &(dyn std::error::Error + 'static)) -> Self {
        Self { status, body: ErrorBody::from_error(e) }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, body: ErrorBody { message: message.into(), causes: vec![] } }
    }
}

/// The HTTP status for an error of this kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Upstream => StatusCode::BAD_GATEWAY,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// The response for an error of `kind`; the daemon's own failures are logged.
    pub fn of_kind(kind: ErrorKind, e: &(dyn std::error::Error + 'static)) -> Self {
        // A full disk is not a bug of the daemon's: 507, with what to do.
        let status = if crate::types::out_of_space(e) { StatusCode::INSUFFICIENT_STORAGE } else { status_of(kind) };
        if status.is_server_error() {
            tracing::error!(error = %ErrorBody::from_error(e), "request failed");
        }
        Self::new(status, e)
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        Self::of_kind(e.kind(), &e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // axum says "length limit exceeded" without the limit (found by QA).
        let message = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the request body is larger than {} KiB, the most a JSON body may be", MAX_JSON_BODY >> 10)
        } else {
            r.body_text()
        };
        Self { status: r.status(), body: ErrorBody { message, causes: vec![] } }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

#[derive(OpenApi)]
#[openapi(
    info(title = "Atoll API", description = "The API of `atoll daemon`, served on its unix socket under /v1.", version = "1"),
    components(schemas(ErrorBody, PullEvent))
)]
struct ApiDoc;

/// The router and the OpenAPI document describing it.
pub fn router(state: Arc<AppState>) -> axum::Router {
    let (router, doc) = parts();
    // Serialised once; every request gets the same bytes.
    let doc = bytes::Bytes::from(serde_json::to_vec(&doc).expect("the document serialises"));
    router
        .route("/v1/openapi.json", axum::routing::get(move || async move { ([(header::CONTENT_TYPE, "application/json")], doc) }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::metrics::track))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .with_state(state)
}

/// The OpenAPI document (also checked into the repository as `openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().1
}

/// The routes and the document describing them, including the document's own route.
fn parts() -> (axum::Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    let (router, mut api) = api_router().split_for_parts();
    api.paths.paths.insert(
        "/v1/openapi.json".into(),
        utoipa::openapi::path::PathItem::new(
            utoipa::openapi::HttpMethod::Get,
            utoipa::openapi::path::OperationBuilder::new()
                .operation_id(Some("openapi"))
                .summary(Some("This document."))
                .response("200", utoipa::openapi::ResponseBuilder::new().description("The OpenAPI 3 document")),
        ),
    );
    (router, api)
}

fn api_router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(version))
        .routes(routes!(info))
        .routes(routes!(list_images, remove_image))
        .routes(routes!(inspect_image))
        .routes(routes!(pull_image))
        .routes(routes!(tag_image))
        .routes(routes!(prune_images))
        .routes(routes!(import_images))
        .routes(routes!(login, logout))
        .routes(routes!(crate::containers::create, crate::containers::list))
        .routes(routes!(crate::containers::inspect, crate::containers::remove))
        .routes(routes!(crate::containers::start))
        .routes(routes!(crate::containers::run))
        .routes(routes!(crate::containers::stop))
        .routes(routes!(crate::containers::restart))
        .routes(routes!(crate::containers::kill))
        .routes(routes!(crate::containers::wait))
        .routes(routes!(crate::containers::top))
        .routes(routes!(crate::containers::logs_route))
        .routes(routes!(crate::containers::exec))
        .routes(routes!(crate::containers::attach))
        .routes(routes!(crate::networks::list, crate::networks::create))
        .routes(routes!(crate::networks::inspect, crate::networks::remove))
        .routes(routes!(crate::networks::prune))
        .routes(routes!(crate::networks::connect))
        .routes(routes!(crate::networks::disconnect))
        .routes(routes!(crate::volumes::list, crate::volumes::create))
        .routes(routes!(crate::volumes::inspect, crate::volumes::remove))
        .routes(routes!(crate::volumes::prune))
        .routes(routes!(crate::events::events))
        .routes(routes!(crate::metrics::metrics))
        .routes(routes!(crate::metrics::stats))
        .routes(routes!(web_login))
        .routes(routes!(crate::island::init))
        .routes(routes!(crate::island::join))
        .routes(routes!(crate::island::leave))
        .routes(routes!(crate::island::status))
        .routes(routes!(crate::island::raft))
        .routes(routes!(crate::island::recover))
        .routes(routes!(crate::island::backup))
        .routes(routes!(crate::island::restore))
        .routes(routes!(crate::island::kv_get, crate::island::kv_put, crate::island::kv_delete))
        .routes(routes!(crate::island::create_invite, crate::island::list_invites))
        .routes(routes!(crate::island::delete_invite))
        .routes(routes!(crate::island::nodes))
        .routes(routes!(crate::island::node, crate::island::remove_node))
        .routes(routes!(crate::island::label))
        .routes(routes!(crate::stacks::list))
        // A stack's services, specs in full, outgrow the other routes' limit (found by QA: 60
        // small services did).
        .merge(
            OpenApiRouter::new()
                .routes(routes!(crate::stacks::deploy, crate::stacks::remove))
                .layer(DefaultBodyLimit::max(crate::stacks::MAX_STACK_BODY)),
        )
        .routes(routes!(crate::stacks::tasks))
        .routes(routes!(crate::stacks::services))
        .routes(routes!(crate::stacks::service_tasks))
        .routes(routes!(crate::service_logs::service_logs))
        .routes(routes!(crate::stacks::scale))
        .routes(routes!(crate::stacks::availability))
        .routes(routes!(crate::names::list_domains))
        .routes(routes!(crate::names::add_domain, crate::names::domain, crate::names::set_domain, crate::names::remove_domain))
        .routes(routes!(crate::names::records, crate::names::add_record, crate::names::remove_record))
        .routes(routes!(crate::names::create_key, crate::names::list_keys))
        .routes(routes!(crate::names::revoke_key))
        .routes(routes!(crate::names::list_certificates, crate::names::request_certificate))
        .routes(routes!(crate::names::certificate, crate::names::remove_certificate))
        .routes(routes!(crate::gateway::list_routes, crate::gateway::add_route))
        .routes(routes!(crate::gateway::remove_route))
        .routes(routes!(crate::bundles::list_allowed, crate::bundles::allow))
        .routes(routes!(crate::bundles::disallow))
        .routes(routes!(crate::bundles::key))
        .routes(routes!(crate::bundles::logs))
        .routes(routes!(crate::bundles::list, crate::bundles::run))
        .routes(routes!(crate::bundles::inspect, crate::bundles::remove))
}

/// The dashboard's login link (with the token); 404 when the dashboard is off.
#[utoipa::path(get, path = "/v1/web/login", tag = "system", responses((status = 200, body = WebLogin), (status = 404, body = ErrorBody)))]
async fn web_login(State(s): St) -> ApiResult<Json<WebLogin>> {
    match s.web_login.lock().unwrap().clone() {
        Some(url) => Ok(Json(WebLogin { url })),
        None => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            body: ErrorBody { message: "the dashboard is off: start the daemon with --web ADDR:PORT".into(), causes: vec![] },
        }),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        body: ErrorBody { message: "this API route does not take that method".into(), causes: vec![] },
    }
}

async fn not_found() -> ApiError {
    ApiError { status: StatusCode::NOT_FOUND, body: ErrorBody { message: "no such API route".into(), causes: vec![] } }
}

/// Daemon and API version.
#[utoipa::path(get, path = "/v1/version", tag = "system", responses((status = 200, body = VersionInfo)))]
async fn version() -> Json<VersionInfo> {
    // The OCI (Go) names, as `docker version` and `/v1/info`'s platform give them: amd64, not x86_64.
    let host = atoll_image::Platform::host();
    Json(VersionInfo { version: env!("CARGO_PKG_VERSION").into(), api_version: "1".into(), os: host.os, arch: host.architecture })
}

/// What this daemon is and holds.
#[utoipa::path(get, path = "/v1/info", tag = "system", responses((status = 200, body = Info)))]
async fn info(State(s): St) -> Json<Info> {
    Json(Info {
        version: env!("CARGO_PKG_VERSION").into(),
        data_dir: s.data_dir.display().to_string(),
        socket: s.socket.display().to_string(),
        platform: atoll_image::Platform::host().to_string(),
        images: s.images.list().len(),
        containers: s.engine.list(true).len(),
        containers_running: s.engine.list(false).len(),
        runtime: s.runtime.clone(),
        insecure_registries: s.insecure_registries.clone(),
        uptime_seconds: s.started.elapsed().as_secs(),
        network: {
            let nets = s.engine.networks();
            NetworkInfo {
                subnet_pool: nets.config().pool4.to_string(),
                dns_upstreams: nets.config().upstreams.iter().map(|u| u.to_string()).collect(),
                firewall_input_drop_chains: nets.firewall_warnings(),
                warnings: nets.warnings(),
            }
        },
        host: HostInfo::read(&s.data_dir),
        island: match s.island.manager.read().await.clone() {
            Some(m) => Some(m.status_with_paths().await),
            None => None,
        },
    })
}

/// Images in the store, newest first.
#[utoipa::path(get, path = "/v1/images", tag = "images", responses((status = 200, body = Vec<ImageSummary>)))]
async fn list_images(State(s): St) -> Json<Vec<ImageSummary>> {
    Json(s.images.list())
}

/// One image: its record, layers and config.
#[utoipa::path(get, path = "/v1/images/inspect", tag = "images", params(ReferenceQuery),
    responses((status = 200, body = ImageDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn inspect_image(State(s): St, q: Result<Query<ReferenceQuery>, QueryRejection>) -> ApiResult<Json<ImageDetail>> {
    let Query(q) = q?;
    Ok(Json(s.images.inspect(&q.reference)?))
}

/// Pulls an image. The response streams progress as newline-delimited JSON `PullEvent`s; the
/// last is `done` or `error`. The pull continues if the client goes away.
#[utoipa::path(post, path = "/v1/images/pull", tag = "images", request_body = PullRequest,
    responses((status = 200, description = "Progress events, one JSON object per line", body = PullEvent, content_type = "application/x-ndjson"),
              (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn pull_image(State(s): St, req: Result<Json<PullRequest>, JsonRejection>) -> ApiResult<Response> {
    let Json(req) = req?;
    // Refuse malformed input before committing to a streamed 200.
    req.reference.parse::<atoll_image::Reference>().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, &e))?;
    if let Some(p) = &req.platform {
        p.parse::<atoll_image::Platform>().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, &e))?;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<PullEvent>();
    let sink_tx = tx.clone();
    let sink: atoll_image::pull::EventSink = Arc::new(move |e| {
        let _ = sink_tx.send(e);
    });
    tokio::spawn(async move {
        match s.images.pull(&req.reference, req.platform.as_deref(), sink).await {
            Ok(img) => {
                s.metrics.pull_done(Some(img.size));
                s.image_event("pull", &img.id, &req.reference);
            }
            Err(e) => {
                s.metrics.pull_done(None);
                let body = ErrorBody::from_error(&e);
                tracing::warn!(reference = %req.reference, error = %body, "pull failed");
                let _ = tx.send(PullEvent::Error { message: body.message, causes: body.causes });
            }
        }
    });
    let stream = tokio_stream_from(rx).map(|e| {
        let mut line = serde_json::to_vec(&e).expect("events serialise");
        line.push(b'\n');
        Ok::<_, Infallible>(bytes::Bytes::from(line))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::UnboundedReceiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Gives an image another name.
#[utoipa::path(post, path = "/v1/images/tag", tag = "images", request_body = TagRequest,
    responses((status = 204, description = "Tagged"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn tag_image(State(s): St, req: Result<Json<TagRequest>, JsonRejection>) -> ApiResult<StatusCode> {
    let Json(req) = req?;
    s.images.tag(&req.source, &req.target)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a tag, or an image and all its tags (`docker rmi` semantics).
#[utoipa::path(delete, path = "/v1/images", tag = "images", params(RemoveQuery),
    responses((status = 200, body = RemoveReport), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove_image(State(s): St, q: Result<Query<RemoveQuery>, QueryRejection>) -> ApiResult<Json<RemoveReport>> {
    let Query(q) = q?;
    let report = s.images.remove(&q.reference, q.force.unwrap_or(false)).await?;
    for t in &report.untagged {
        s.image_event("untag", "", t);
    }
    for d in &report.deleted {
        s.image_event("delete", d, &q.reference);
    }
    Ok(Json(report))
}

/// Removes untagged images (or all unused ones) and unreferenced content.
#[utoipa::path(post, path = "/v1/images/prune", tag = "images", params(PruneQuery),
    responses((status = 200, body = PruneReport), (status = 400, body = ErrorBody)))]
async fn prune_images(State(s): St, q: Result<Query<PruneQuery>, QueryRejection>) -> ApiResult<Json<PruneReport>> {
    let Query(q) = q?;
    Ok(Json(s.images.prune(q.all.unwrap_or(false)).await?))
}

/// Imports images from a tar archive in the request body: an OCI image layout or a
/// `docker save` archive.
#[utoipa::path(post, path = "/v1/images/import", tag = "images", params(ImportQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 200, body = Vec<ImageSummary>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn import_images(State(s): St, q: Result<Query<ImportQuery>, QueryRejection>, body: Body) -> ApiResult<Json<Vec<ImageSummary>>> {
    let Query(q) = q?;
    let tmp = tempfile::Builder::new()
        .prefix("import-")
        .suffix(".tar")
        .tempfile_in(s.images.store().tmp_dir())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, &e))?;
    let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, &e))?);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, &e))?;
        if let Err(e) = file.write_all(&chunk).await {
            let status = if e.raw_os_error() == Some(28) { StatusCode::INSUFFICIENT_STORAGE } else { StatusCode::INTERNAL_SERVER_ERROR };
            return Err(ApiError::new(status, &e));
        }
    }
    file.flush().await.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, &e))?;
    Ok(Json(s.images.import(tmp.path(), q.name.as_deref()).await?))
}

/// Checks credentials against a registry and stores them for pulls.
#[utoipa::path(post, path = "/v1/auth", tag = "auth", request_body = LoginRequest,
    responses((status = 204, description = "Logged in"), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn login(State(s): St, req: Result<Json<LoginRequest>, JsonRejection>) -> ApiResult<StatusCode> {
    let Json(req) = req?;
    s.images.login(&req.registry, &req.username, &req.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Forgets the stored credentials of a registry.
#[utoipa::path(delete, path = "/v1/auth", tag = "auth", params(LogoutQuery),
    responses((status = 204, description = "Logged out"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn logout(State(s): St, q: Result<Query<LogoutQuery>, QueryRejection>) -> ApiResult<StatusCode> {
    let Query(q) = q?;
    if s.images.logout(&q.registry)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError {
            status: StatusCode::NOT_FOUND,
            body: ErrorBody { message: format!("not logged in to {}", q.registry), causes: vec![] },
        })
    }
}
