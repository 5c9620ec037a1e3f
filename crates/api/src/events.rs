//! `GET /v1/events`: lifecycle events as NDJSON, the kept ones since a time, then live ones
//! until a time or until the client goes away.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use atoll_node::events::Event;

use crate::containers::ndjson_line;
use crate::server::{ApiError, AppState};
use crate::types::ErrorBody;

type St = State<Arc<AppState>>;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// RFC 3339: first replay the kept events from this time on.
    pub since: Option<String>,
    /// RFC 3339: stop at this time (at once, after the replay, if it has passed).
    pub until: Option<String>,
    /// `KEY=VALUE` pairs separated by commas (keys: type, event, container, image, network, or
    /// an attribute such as name); values of one key are alternatives.
    pub filters: Option<String>,
}

fn nanos(what: &str, s: &str) -> Result<i128, ApiError> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp_nanos())
        .map_err(|e| ApiError::bad_request(format!("{what} {s:?} is not an RFC 3339 time: {e}")))
}

/// Lifecycle events (create, start, die, stop, kill, restart, destroy, health_status, pull,
/// delete, connect, disconnect…), one JSON `Event` per line.
#[utoipa::path(get, path = "/v1/events", tag = "system", params(EventsQuery),
    responses((status = 200, description = "Events", body = Event, content_type = "application/x-ndjson"), (status = 400, body = ErrorBody)))]
pub async fn events(State(s): St, q: Result<Query<EventsQuery>, QueryRejection>) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let since = q.since.as_deref().map(|t| nanos("since", t)).transpose()?;
    let until = q.until.as_deref().map(|t| nanos("until", t)).transpose()?;
    let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in q.filters.iter().flat_map(|f| f.split(',')).filter(|f| !f.is_empty()) {
        let (k, v) = f.split_once('=').ok_or_else(|| ApiError::bad_request(format!("filter {f:?}: use KEY=VALUE")))?;
        filters.entry(k.to_owned()).or_default().push(v.to_owned());
    }
    let (backlog, mut rx) = s.engine.events().subscribe(since);
    let (tx, out) = tokio::sync::mpsc::channel::<bytes::Bytes>(256);
    tokio::spawn(async move {
        let before_until = |e: &Event| until.is_none_or(|u| e.time_nano <= u);
        for e in backlog.iter().filter(|e| e.matches(&filters) && before_until(e)) {
            if tx.send(ndjson_line(e)).await.is_err() {
                return;
            }
        }
        let deadline = until.map(|u| {
            let left = u - time::OffsetDateTime::now_utc().unix_timestamp_nanos();
            tokio::time::Instant::now() + std::time::Duration::from_nanos(left.max(0) as u64)
        });
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, rx.recv()).await.ok(),
                    None => Some(rx.recv().await),
                }
            };
            tokio::select! {
                _ = tx.closed() => return,
                r = next => match r {
                    None => return, // until reached
                    Some(Ok(e)) => {
                        if e.matches(&filters) && before_until(&e) && tx.send(ndjson_line(&e)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                        tracing::warn!(missed = n, "an events client fell behind");
                    }
                    Some(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
                },
            }
        }
    });
    Ok(crate::containers::ndjson_response(out))
}
