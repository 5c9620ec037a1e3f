//! `atoll service logs`: a service's replicas' output wherever they run, as `docker service
//! logs` gives it. This member reads its own replicas from the engine and asks each other
//! member's control plane for theirs ([`atoll_island::Manager::member_logs`]); every line comes
//! back labelled with its replica and member. Without `follow` the lines are sorted by time;
//! with it they stream as they come. The other side of the control plane is [`EngineLogs`].

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{Receiver, Sender};
use utoipa::{IntoParams, ToSchema};

use atoll_runtime::logs::LogLine;
use atoll_state::desired::Kind;

use crate::containers::{LogsQuery, log_lines, ndjson_line, ndjson_stream};
use crate::server::{ApiError, AppState};
use crate::types::ErrorBody;

type St = State<Arc<AppState>>;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServiceLogsQuery {
    /// Keep streaming new lines until every replica stops or the client leaves.
    pub follow: Option<bool>,
    /// Only the last N lines of each replica.
    pub tail: Option<usize>,
}

/// One line of a replica's output, or why a replica's output could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceLogLine {
    /// The replica: `<stack>_<service>.<slot>` (Swarm's task name without its ID).
    pub task: String,
    /// The member it runs on, by name.
    pub node: String,
    #[serde(flatten)]
    pub line: Option<LogLine>,
    /// Set instead of a line when this replica's output could not be read (its member is
    /// down, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// This member's stack replicas' output, served to the other members' `service logs`.
#[derive(Debug)]
pub struct EngineLogs(pub Arc<atoll_node::Engine>);

impl atoll_island::manager::LogSource for EngineLogs {
    fn logs(&self, container: &str, tail: Option<usize>, follow: bool) -> Result<Receiver<bytes::Bytes>, String> {
        let rec = self.0.get(container).map_err(|e| e.to_string())?;
        if !rec.spec.labels.contains_key(atoll_orchestrator::LABEL_ALLOCATION) {
            return Err(format!("{container} is not a stack's replica"));
        }
        log_lines(&self.0, &rec.id, &LogsQuery { follow: Some(follow), tail, since: None }).map_err(|e| e.body.to_string())
    }
}

/// A service's replicas' output, wherever they run: one `ServiceLogLine` per line.
#[utoipa::path(get, path = "/v1/services/{name}/logs", tag = "stacks", params(("name" = String, Path, description = "`<stack>_<service>`"), ServiceLogsQuery),
    responses((status = 200, description = "Log lines", body = ServiceLogLine, content_type = "application/x-ndjson"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn service_logs(
    State(s): St,
    Path(name): Path<String>,
    q: Result<Query<ServiceLogsQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let m = s.island.get().await?;
    let records = m.replica().with(atoll_orchestrator::records::Records::read).map_err(atoll_orchestrator::DeployError::from)?;
    records.existing_service(&name)?;
    let state = m.state();
    let follow = q.follow.unwrap_or(false);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ServiceLogLine>(256);
    for (a, _) in records.allocations.iter().filter(|(a, _)| a.service == name) {
        let Some(container) = records.tasks.get(&Kind::name(a)).and_then(|(t, _)| t.container.clone()) else { continue };
        let task = format!("{}.{}", a.service, a.slot);
        let node = state.members.get(&a.node).map_or_else(|| a.node.clone(), |n| n.name.clone());
        let label = Label { task, node, tx: tx.clone() };
        if a.node == m.id() {
            match log_lines(&s.engine, &container, &LogsQuery { follow: Some(follow), tail: q.tail, since: None }) {
                Ok(lines) => {
                    tokio::spawn(label.relay_local(lines));
                }
                Err(e) => label.error(e.body.to_string()).await,
            }
        } else {
            let (m, member) = (m.clone(), a.node.clone());
            let tail = q.tail;
            tokio::spawn(async move {
                match m.member_logs(&member, &container, tail, follow).await {
                    Ok(resp) => label.relay_remote(resp).await,
                    Err(e) => label.error(atoll_island::proto::Problem::from_error(&e).to_string()).await,
                }
            });
        }
    }
    drop(tx);
    if follow {
        let lines = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|l| (ndjson_line(&l), rx)) });
        return Ok(ndjson_stream(lines));
    }
    // Everything, then in time order (RFC 3339 times of one clock format sort as text).
    let mut all: Vec<ServiceLogLine> = Vec::new();
    while let Some(l) = rx.recv().await {
        all.push(l);
    }
    all.sort_by(|a, b| a.line.as_ref().map(|l| &l.time).cmp(&b.line.as_ref().map(|l| &l.time)));
    Ok(ndjson_stream(futures_util::stream::iter(all.iter().map(ndjson_line).collect::<Vec<_>>())))
}

type ApiResult<T> = Result<T, ApiError>;

/// Where one replica's lines go, and how they are labelled.
struct Label {
    task: String,
    node: String,
    tx: Sender<ServiceLogLine>,
}

impl Label {
    async fn send(&self, line: Option<LogLine>, error: Option<String>) -> bool {
        let l = ServiceLogLine { task: self.task.clone(), node: self.node.clone(), line, error };
        self.tx.send(l).await.is_ok()
    }

    async fn error(&self, why: String) {
        self.send(None, Some(why)).await;
    }

    /// Lines of `LogLine` JSON, one per message, labelled; until they end or the client
    /// leaves (a quiet replica would otherwise keep its reader polling).
    async fn relay_local(self, mut lines: Receiver<bytes::Bytes>) {
        loop {
            let b = tokio::select! {
                b = lines.recv() => b,
                _ = self.tx.closed() => return,
            };
            let Some(b) = b else { return };
            let Ok(l) = serde_json::from_slice::<LogLine>(&b) else { continue };
            if !self.send(Some(l), None).await {
                return;
            }
        }
    }

    /// A member's answer: `LogLine` JSON lines in chunks of any size.
    async fn relay_remote(self, resp: reqwest::Response) {
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::select! {
                c = body.next() => c,
                _ = self.tx.closed() => return,
            };
            let Some(chunk) = chunk else { return };
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    self.error(format!("reading {}'s output from {}: {e}", self.task, self.node)).await;
                    return;
                }
            };
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let Ok(l) = serde_json::from_slice::<LogLine>(&line) else { continue };
                if !self.send(Some(l), None).await {
                    return;
                }
            }
        }
    }
}
