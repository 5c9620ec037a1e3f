//! Container routes: lifecycle, inspect and list, logs (NDJSON, optionally followed), exec
//! (stdin in the request body, output streamed back), top.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utoipa::{IntoParams, ToSchema};

use atoll_node::{ContainerRecord, EngineError, ExecRequest, ProcessInfo};
use atoll_runtime::logs::{self, Follower, LogLine};
use atoll_spec::ContainerSpec;

use crate::server::{ApiError, AppState};
use crate::types::ErrorBody;

type St = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError::of_kind(e.kind(), &e)
    }
}

/// A container as `ps` and `inspect` show it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ContainerInfo {
    #[serde(flatten)]
    pub record: ContainerRecord,
    /// `Up 3 minutes (healthy)`, `Exited (0) 5 seconds ago`…
    pub status: String,
    /// The host sockets of each published container port (`"80/tcp"`), as docker's
    /// `NetworkSettings.Ports`: a port published on every address is on `0.0.0.0` and `::`.
    #[serde(default)]
    pub port_bindings: std::collections::BTreeMap<String, Vec<HostBinding>>,
}

/// One host socket of a published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostBinding {
    pub host_ip: String,
    pub host_port: u16,
}

pub fn info(mut rec: ContainerRecord) -> ContainerInfo {
    redact_secrets(&mut rec.spec);
    let status = rec.status_text(time::OffsetDateTime::now_utc());
    let mut port_bindings: std::collections::BTreeMap<String, Vec<HostBinding>> = Default::default();
    for p in &rec.ports {
        let bound = p.host_addresses().into_iter().map(|ip| HostBinding { host_ip: ip.to_string(), host_port: p.host_port });
        port_bindings.entry(format!("{}/{}", p.container_port, p.protocol)).or_default().extend(bound);
    }
    ContainerInfo { record: rec, status, port_bindings }
}

/// The label naming environment variables whose values the API never shows (a bundle's
/// secrets: [`atoll_bundles::oci`]), comma-separated.
pub const SECRET_ENV_LABEL: &str = atoll_bundles::oci::SECRET_ENV_LABEL;

/// Replaces the values of the variables [`SECRET_ENV_LABEL`] names with `<redacted>`.
fn redact_secrets(spec: &mut ContainerSpec) {
    let Some(names) = spec.labels.get(SECRET_ENV_LABEL) else { return };
    let names: Vec<&str> = names.split(',').collect();
    for e in &mut spec.env {
        if let Some((k, _)) = e.split_once('=')
            && names.contains(&k)
        {
            *e = format!("{k}=<redacted>");
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// Start the container once created (default true).
    pub start: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Include stopped containers.
    pub all: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StopQuery {
    /// Seconds to wait after the stop signal before SIGKILL (at most a day).
    #[param(maximum = 86400)]
    pub timeout: Option<u64>,
}

impl StopQuery {
    fn checked(self) -> Result<Option<u64>, ApiError> {
        match self.timeout {
            Some(t) if t > atoll_spec::container::MAX_STOP_TIMEOUT => {
                Err(ApiError::bad_request(format!("timeout {t} s is longer than a day ({} s)", atoll_spec::container::MAX_STOP_TIMEOUT)))
            }
            t => Ok(t),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KillQuery {
    /// Signal name or number (default KILL).
    #[param(
        pattern = "^((SIG)?(HUP|INT|QUIT|ILL|TRAP|ABRT|IOT|BUS|FPE|KILL|USR1|SEGV|USR2|PIPE|ALRM|TERM|STKFLT|CHLD|CLD|CONT|STOP|TSTP|TTIN|TTOU|URG|XCPU|XFSZ|VTALRM|PROF|WINCH|IO|POLL|PWR|SYS|RTMIN|RTMIN\\+([1-9]|1[0-5])|RTMAX|RTMAX-([1-9]|1[0-4]))|0*([1-9]|[1-5][0-9]|6[0-4]))$"
    )]
    pub signal: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Kill a running container first.
    pub force: Option<bool>,
    /// Also remove the container's anonymous volumes (docker's `v`).
    pub v: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Keep streaming new lines until the container stops.
    pub follow: Option<bool>,
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Only lines at or after this RFC 3339 time.
    pub since: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// `not-running` (default), `next-exit` (the end of the next run, even if the container
    /// has not started yet) or `removed`.
    #[param(schema_with = wait_conditions)]
    pub condition: Option<String>,
}

fn wait_conditions() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(["not-running", "next-exit", "removed"]))
        .build()
        .into()
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WaitResponse {
    pub exit_code: i32,
}

/// One event of an exec's output stream.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ExecEvent {
    Stdout { data: String },
    Stderr { data: String },
    Exit { exit_code: i32 },
}

/// Creates a container from a spec (pulling its image if needed) and starts it.
#[utoipa::path(post, path = "/v1/containers", tag = "containers", params(CreateQuery), request_body = ContainerSpec,
    responses((status = 201, body = ContainerInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn create(
    State(s): St,
    q: Result<Query<CreateQuery>, QueryRejection>,
    spec: Result<Json<ContainerSpec>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ContainerInfo>)> {
    let Query(q) = q?;
    let Json(spec) = spec?;
    let rec = s.engine.create(spec, q.start.unwrap_or(true)).await?;
    Ok((StatusCode::CREATED, Json(info(rec))))
}

/// Containers, newest first.
#[utoipa::path(get, path = "/v1/containers", tag = "containers", params(ListQuery),
    responses((status = 200, body = Vec<ContainerInfo>), (status = 400, body = ErrorBody)))]
pub async fn list(State(s): St, q: Result<Query<ListQuery>, QueryRejection>) -> ApiResult<Json<Vec<ContainerInfo>>> {
    let Query(q) = q?;
    Ok(Json(s.engine.list(q.all.unwrap_or(false)).into_iter().map(info).collect()))
}

/// One container, by name, ID or unique ID prefix.
#[utoipa::path(get, path = "/v1/containers/{id}", tag = "containers", params(("id" = String, Path, description = "Name, ID or ID prefix")),
    responses((status = 200, body = ContainerInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn inspect(State(s): St, Path(id): Path<String>) -> ApiResult<Json<ContainerInfo>> {
    Ok(Json(info(s.engine.get(&id)?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartQuery {
    /// For `-i`/`-t` containers: hold the process until the first attach (up to 30 s), so the
    /// attacher sees all of its output.
    pub attach: Option<bool>,
}

/// Starts a stopped container.
#[utoipa::path(post, path = "/v1/containers/{id}/start", tag = "containers", params(("id" = String, Path, description = "Name, ID or ID prefix"), StartQuery),
    responses((status = 200, body = ContainerInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn start(State(s): St, Path(id): Path<String>, q: Result<Query<StartQuery>, QueryRejection>) -> ApiResult<Json<ContainerInfo>> {
    let Query(q) = q?;
    Ok(Json(info(s.engine.start(&id, q.attach.unwrap_or(false)).await?)))
}

/// One event of a run: the container's output, line by line, then its exit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    Log(LogLine),
    Exit { exit_code: i32 },
}

/// Starts a container and follows this run: its output, then how it ended, as NDJSON
/// `RunEvent`s (the last is `exit`; for an auto-remove container it comes once the container
/// is removed). What `atoll run` does in the foreground, in one request; it lasts as long as
/// the run. A start that fails is an error status, as for `start`.
#[utoipa::path(post, path = "/v1/containers/{id}/run", tag = "containers", params(("id" = String, Path, description = "Name, ID or ID prefix")),
    responses((status = 200, description = "Started: its output, then its exit", content_type = "application/x-ndjson", body = RunEvent),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn run(State(s): St, Path(id): Path<String>) -> ApiResult<Response> {
    // Everything this run leads to is watched from before the start: its output from the
    // log's current end, its exit (or removal) from the record's current version.
    let rec = s.engine.get(&id)?;
    if rec.is_running() {
        let e = std::io::Error::other(format!("container {} is already running: follow it with `logs -f` and `wait`", rec.name));
        return Err(ApiError::new(axum::http::StatusCode::CONFLICT, &e));
    }
    let condition = if rec.spec.auto_remove { atoll_node::WaitCondition::Removed } else { atoll_node::WaitCondition::NextExit };
    let ended = s.engine.waiter(&rec.id, condition)?;
    let (_, mut changed) = s.engine.watch(&rec.id)?;
    let path = s.engine.log_path(&rec.id);
    let mut follower = Follower::new(&path, Follower::end_of(&path));
    s.engine.start(&rec.id, false).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(256);
    tokio::spawn(async move {
        tokio::pin!(ended);
        let exit_code = loop {
            let lines = follower.poll().unwrap_or_default();
            for l in lines.iter().cloned() {
                if tx.send(ndjson_line(&RunEvent::Log(l))).await.is_err() {
                    return;
                }
            }
            if !lines.is_empty() {
                continue;
            }
            tokio::select! {
                code = &mut ended => break code,
                _ = changed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = tx.closed() => return,
            }
        };
        // The shim logs all output before it reports the exit: one last read has the rest.
        for l in follower.poll().unwrap_or_default() {
            let _ = tx.send(ndjson_line(&RunEvent::Log(l))).await;
        }
        let _ = tx.send(ndjson_line(&RunEvent::Exit { exit_code })).await;
    });
    Ok(ndjson_response(rx))
}

/// Stops a container: its stop signal, then SIGKILL after the timeout.
#[utoipa::path(post, path = "/v1/containers/{id}/stop", tag = "containers", params(("id" = String, Path, description = "Name, ID or ID prefix"), StopQuery),
    responses((status = 200, body = ContainerInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop(State(s): St, Path(id): Path<String>, q: Result<Query<StopQuery>, QueryRejection>) -> ApiResult<Json<ContainerInfo>> {
    let Query(q) = q?;
    Ok(Json(info(s.engine.stop(&id, q.checked()?).await?)))
}

/// Stops and starts a container.
#[utoipa::path(post, path = "/v1/containers/{id}/restart", tag = "containers", params(("id" = String, Path, description = "Name, ID or ID prefix"), StopQuery),
    responses((status = 200, body = ContainerInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn restart(State(s): St, Path(id): Path<String>, q: Result<Query<StopQuery>, QueryRejection>) -> ApiResult<Json<ContainerInfo>> {
    let Query(q) = q?;
    Ok(Json(info(s.engine.restart(&id, q.checked()?).await?)))
}

/// Sends a signal to a running container.
#[utoipa::path(post, path = "/v1/containers/{id}/kill", tag = "containers", params(("id" = String, Path, description = "Name, ID or ID prefix"), KillQuery),
    responses((status = 204, description = "Signalled"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn kill(State(s): St, Path(id): Path<String>, q: Result<Query<KillQuery>, QueryRejection>) -> ApiResult<StatusCode> {
    let Query(q) = q?;
    let sig = atoll_spec::container::parse_signal(q.signal.as_deref().unwrap_or("KILL"))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, &e))?;
    s.engine.kill(&id, sig).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Blocks until the container stops; returns its exit code.
#[utoipa::path(post, path = "/v1/containers/{id}/wait", tag = "containers", params(("id" = String, Path, description = "Name, ID or ID prefix"), WaitQuery),
    responses((status = 200, body = WaitResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn wait(State(s): St, Path(id): Path<String>, q: Result<Query<WaitQuery>, QueryRejection>) -> ApiResult<Json<WaitResponse>> {
    let Query(q) = q?;
    use atoll_node::WaitCondition as W;
    let condition = match q.condition.as_deref() {
        None | Some("not-running") => W::NotRunning,
        Some("next-exit") => W::NextExit,
        Some("removed") => W::Removed,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                &std::io::Error::other(format!("unknown wait condition {other:?}: use not-running, next-exit or removed")),
            ));
        }
    };
    Ok(Json(WaitResponse { exit_code: s.engine.wait(&id, condition).await? }))
}

/// Removes a container.
#[utoipa::path(delete, path = "/v1/containers/{id}", tag = "containers", params(("id" = String, Path, description = "Name, ID or ID prefix"), RemoveQuery),
    responses((status = 200, body = ContainerInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove(State(s): St, Path(id): Path<String>, q: Result<Query<RemoveQuery>, QueryRejection>) -> ApiResult<Json<ContainerInfo>> {
    let Query(q) = q?;
    Ok(Json(info(s.engine.remove(&id, q.force.unwrap_or(false), q.v.unwrap_or(false)).await?)))
}

/// Processes running in a container.
#[utoipa::path(get, path = "/v1/containers/{id}/top", tag = "containers", params(("id" = String, Path, description = "Name, ID or ID prefix")),
    responses((status = 200, body = Vec<ProcessInfo>), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn top(State(s): St, Path(id): Path<String>) -> ApiResult<Json<Vec<ProcessInfo>>> {
    Ok(Json(s.engine.top(&id).await?))
}

/// In the background, writes `first` and then the rest of a request body into `w` (a process's
/// stdin, a terminal, a shim connection), and shuts `w` down when the body ends.
fn feed(first: Vec<u8>, mut body: axum::body::BodyDataStream, mut w: impl tokio::io::AsyncWrite + Unpin + Send + 'static) {
    tokio::spawn(async move {
        if w.write_all(&first).await.is_err() {
            return;
        }
        while let Some(Ok(chunk)) = body.next().await {
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
}

/// A streaming `application/x-ndjson` response of the lines sent on `rx`, ending when every
/// sender is gone.
pub(crate) fn ndjson_response(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Response {
    ndjson_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) }))
}

/// A streaming `application/x-ndjson` response of `lines`.
pub(crate) fn ndjson_stream(lines: impl futures_util::Stream<Item = bytes::Bytes> + Send + 'static) -> Response {
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines.map(Ok::<_, Infallible>))).into_response()
}

pub(crate) fn ndjson_line<T: Serialize>(v: &T) -> bytes::Bytes {
    let mut line = serde_json::to_vec(v).expect("serialises");
    line.push(b'\n');
    bytes::Bytes::from(line)
}

/// A container's output, one JSON `LogLine` per line. With `follow`, the stream goes on until
/// the container stops (across log rotation).
#[utoipa::path(get, path = "/v1/containers/{id}/logs", tag = "containers", params(("id" = String, Path, description = "Name, ID or ID prefix"), LogsQuery),
    responses((status = 200, description = "Log lines", body = LogLine, content_type = "application/x-ndjson"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn logs_route(State(s): St, Path(id): Path<String>, q: Result<Query<LogsQuery>, QueryRejection>) -> ApiResult<Response> {
    let Query(q) = q?;
    Ok(ndjson_response(log_lines(&s.engine, &id, &q)?))
}

/// Container `id`'s output as `q` asks, one `LogLine` per ndjson line, sent as it is read (with
/// `follow`, until the container stops).
pub(crate) fn log_lines(engine: &Arc<atoll_node::Engine>, id: &str, q: &LogsQuery) -> ApiResult<tokio::sync::mpsc::Receiver<bytes::Bytes>> {
    let (rec, mut changed) = engine.watch(id)?;
    let path = engine.log_path(&rec.id);
    let io_err = |e: std::io::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, &e);
    let (initial, end) = match (&q.tail, &q.since) {
        (Some(n), _) => logs::tail_and_end(&path, *n).map_err(io_err)?,
        (None, since) => logs::since_and_end(&path, since.as_deref().unwrap_or("")).map_err(io_err)?,
    };
    let initial: Vec<LogLine> = match &q.since {
        Some(since) if q.tail.is_some() => initial.into_iter().filter(|l| l.time.as_str() >= since.as_str()).collect(),
        _ => initial,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(256);
    let engine = engine.clone();
    let follow = q.follow.unwrap_or(false);
    tokio::spawn(async move {
        for l in &initial {
            if tx.send(ndjson_line(l)).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        let mut f = Follower::new(&path, end);
        loop {
            let running = engine
                .get(&rec.id)
                .is_ok_and(|r| matches!(r.state, atoll_node::State::Running | atoll_node::State::Restarting | atoll_node::State::Created));
            let lines = f.poll().unwrap_or_default();
            for l in &lines {
                if tx.send(ndjson_line(l)).await.is_err() {
                    return;
                }
            }
            if !running && lines.is_empty() {
                // One last read: the shim may have flushed after the state changed.
                for l in f.poll().unwrap_or_default() {
                    let _ = tx.send(ndjson_line(&l)).await;
                }
                return;
            }
            if lines.is_empty() {
                tokio::select! {
                    _ = changed.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = tx.closed() => return,
                }
            }
        }
    });
    Ok(rx)
}

/// Runs a command in a running container. The body is one JSON `ExecRequest` line, then (with
/// `interactive`) the bytes for the process's stdin. The response streams `ExecEvent`s; the
/// last is `exit`.
#[utoipa::path(post, path = "/v1/containers/{id}/exec", tag = "containers", params(("id" = String, Path, description = "Name, ID or ID prefix")),
    request_body(content = ExecRequest, content_type = "application/json",
        description = "An ExecRequest as one JSON line; with `interactive`, the bytes after its newline are the process's stdin (the CLI sends it all as application/octet-stream, which is accepted too)"),
    responses((status = 200, description = "Output events", body = ExecEvent, content_type = "application/x-ndjson"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn exec(State(s): St, Path(id): Path<String>, body: Body) -> ApiResult<Response> {
    let mut stream = body.into_data_stream();
    let mut head: Vec<u8> = Vec::new();
    let rest = loop {
        match stream.next().await {
            Some(Ok(chunk)) => {
                head.extend_from_slice(&chunk);
                if let Some(nl) = head.iter().position(|&b| b == b'\n') {
                    break head.split_off(nl + 1);
                }
                if head.len() > crate::server::MAX_JSON_BODY {
                    return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, &std::io::Error::other("exec request line too long")));
                }
            }
            Some(Err(e)) => return Err(ApiError::new(StatusCode::BAD_REQUEST, &e)),
            None => break Vec::new(),
        }
    };
    let req: ExecRequest = serde_json::from_slice(&head).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, &e))?;
    let proc = s.engine.exec(&id, &req)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    let mut child = proc.child;
    let log = proc.log;
    match proc.pty {
        Some(master) => {
            // One stream both ways: the terminal's output, and the body as its input.
            let input = master.try_clone().map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, &e))?;
            feed(rest, stream, tokio::fs::File::from_std(input));
            let mut output = tokio::fs::File::from_std(master);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                // EIO once the process side of the terminal is closed.
                while let Ok(n) = output.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let _ = tx.send(ndjson_line(&ExecEvent::Stdout { data: String::from_utf8_lossy(&buf[..n]).into_owned() })).await;
                }
                let code = log.exit_code(child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1));
                let _ = tx.send(ndjson_line(&ExecEvent::Exit { exit_code: code })).await;
            });
        }
        None => {
            if let Some(stdin) = child.stdin.take() {
                feed(rest, stream, stdin);
            }
            let mut out = child.stdout.take().expect("piped");
            let mut err = child.stderr.take().expect("piped");
            tokio::spawn(async move {
                let (mut ob, mut eb) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
                let (mut o_open, mut e_open) = (true, true);
                while o_open || e_open {
                    tokio::select! {
                        r = out.read(&mut ob), if o_open => match r {
                            Ok(0) | Err(_) => o_open = false,
                            Ok(n) => { let _ = tx.send(ndjson_line(&ExecEvent::Stdout { data: String::from_utf8_lossy(&ob[..n]).into_owned() })).await; }
                        },
                        r = err.read(&mut eb), if e_open => match r {
                            Ok(0) | Err(_) => e_open = false,
                            Ok(n) => { let _ = tx.send(ndjson_line(&ExecEvent::Stderr { data: String::from_utf8_lossy(&eb[..n]).into_owned() })).await; }
                        },
                    }
                }
                let code = log.exit_code(child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1));
                let _ = tx.send(ndjson_line(&ExecEvent::Exit { exit_code: code })).await;
            });
        }
    }
    Ok(ndjson_response(rx))
}

/// Attaches to a running container started with `-i` or `-t`: the request body goes to its
/// stdin, and the response streams its output as frames of `[stream, 0, 0, 0, len: u32 BE]`
/// then `len` bytes (stream 1 = stdout, 2 = stderr). Output produced before the first attach is
/// replayed to it.
#[utoipa::path(post, path = "/v1/containers/{id}/attach", tag = "containers", params(("id" = String, Path, description = "Name, ID or ID prefix")),
    request_body(content = Vec<u8>, description = "Bytes for the container's stdin", content_type = "application/octet-stream"),
    responses((status = 200, description = "Output frames", content_type = "application/vnd.atoll.stream"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn attach(State(s): St, Path(id): Path<String>, body: Body) -> ApiResult<Response> {
    let sock = s.engine.attach(&id).await?;
    let (rd, wr) = sock.into_split();
    // When the client's stdin ends, so does the container's (for -i without -t).
    feed(Vec::new(), body.into_data_stream(), wr);
    let stream = futures_util::stream::unfold((rd, vec![0u8; 32 * 1024]), |(mut rd, mut buf)| async move {
        match rd.read(&mut buf).await {
            Ok(n) if n > 0 => Some((Ok::<_, Infallible>(bytes::Bytes::copy_from_slice(&buf[..n])), (rd, buf))),
            _ => None,
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/vnd.atoll.stream")], Body::from_stream(stream)).into_response())
}
