//! Observability routes: `GET /metrics` (Prometheus / OpenMetrics text: per-container usage,
//! state, health and restarts; API requests and their latency; pulls) and `GET /v1/stats`
//! (raw usage counters for `atoll stats`).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use atoll_node::ContainerRecord;
use atoll_runtime::stats::Usage;

use crate::server::AppState;

type St = State<Arc<AppState>>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    id: String,
    name: String,
    compose_project: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    id: String,
    name: String,
    compose_project: String,
    state: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 4.0, 9))
}

/// The daemon's own counters; per-container series are read at each scrape.
pub struct DaemonMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pulls: Family<ResultLabels, Counter>,
    pull_bytes: Counter,
}

impl std::fmt::Debug for DaemonMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DaemonMetrics")
    }
}

impl Default for DaemonMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            pulls: Family::default(),
            pull_bytes: Counter::default(),
        }
    }
}

impl DaemonMetrics {
    /// Counts a finished pull (and its unpacked bytes when it worked).
    pub fn pull_done(&self, bytes: Option<u64>) {
        let result = if bytes.is_some() { "ok" } else { "error" };
        self.pulls.get_or_create(&ResultLabels { result: result.into() }).inc();
        self.pull_bytes.inc_by(bytes.unwrap_or(0));
    }
}

/// Middleware: counts every API request by route template and status, and times it.
pub async fn track(State(s): St, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let start = Instant::now();
    let resp = next.run(req).await;
    let m = &s.metrics;
    m.requests
        .get_or_create(&RequestLabels { method: method.clone(), route: route.clone(), status: resp.status().as_u16().to_string() })
        .inc();
    m.latency.get_or_create(&RouteLabels { method, route }).observe(start.elapsed().as_secs_f64());
    resp
}

fn project(rec: &ContainerRecord) -> String {
    rec.spec.labels.get("com.docker.compose.project").cloned().unwrap_or_default()
}

/// The registry of one scrape: the daemon's metrics plus every container's, read now.
fn scrape(s: &AppState) -> Registry {
    let mut r = Registry::with_prefix("atoll");
    let m = &s.metrics;
    r.register("api_requests", "API requests by route template and status", m.requests.clone());
    r.register_with_unit(
        "api_request_duration",
        "Time to answer an API request (streams: until headers)",
        Unit::Seconds,
        m.latency.clone(),
    );
    r.register("image_pulls", "Image pulls by result", m.pulls.clone());
    r.register_with_unit("image_pulled", "Unpacked bytes of pulled images", Unit::Bytes, m.pull_bytes.clone());
    s.ingress.metrics().register(&mut r);
    if let Ok(b) = &s.bundles {
        b.metrics().register(&mut r);
    }

    let cpu = Family::<ContainerLabels, Counter<f64>>::default();
    let mem = Family::<ContainerLabels, Gauge>::default();
    let mem_limit = Family::<ContainerLabels, Gauge>::default();
    let rx = Family::<ContainerLabels, Counter>::default();
    let tx = Family::<ContainerLabels, Counter>::default();
    let blk_r = Family::<ContainerLabels, Counter>::default();
    let blk_w = Family::<ContainerLabels, Counter>::default();
    let pids = Family::<ContainerLabels, Gauge>::default();
    let restarts = Family::<ContainerLabels, Counter>::default();
    let healthy = Family::<ContainerLabels, Gauge>::default();
    let state = Family::<StateLabels, Gauge>::default();
    for rec in s.engine.list(true) {
        let l = ContainerLabels { id: rec.id.clone(), name: rec.name.clone(), compose_project: project(&rec) };
        for st in ["created", "running", "restarting", "exited"] {
            let v = i64::from(rec.state.to_string() == st);
            state
                .get_or_create(&StateLabels {
                    id: l.id.clone(),
                    name: l.name.clone(),
                    compose_project: l.compose_project.clone(),
                    state: st.into(),
                })
                .set(v);
        }
        restarts.get_or_create(&l).inc_by(u64::from(rec.restart_count));
        if let Some(h) = &rec.health {
            healthy.get_or_create(&l).set(i64::from(h.status == atoll_spec::HealthStatus::Healthy));
        }
        if let Some(u) = s.engine.usage(&rec) {
            cpu.get_or_create(&l).inc_by(u.cpu_ns as f64 / 1e9);
            mem.get_or_create(&l).set(u.memory_bytes as i64);
            if let Some(lim) = u.memory_limit_bytes {
                mem_limit.get_or_create(&l).set(lim as i64);
            }
            rx.get_or_create(&l).inc_by(u.net_rx_bytes);
            tx.get_or_create(&l).inc_by(u.net_tx_bytes);
            blk_r.get_or_create(&l).inc_by(u.block_read_bytes);
            blk_w.get_or_create(&l).inc_by(u.block_write_bytes);
            pids.get_or_create(&l).set(u.pids as i64);
        }
    }
    r.register_with_unit("container_cpu", "CPU time used by the container", Unit::Seconds, cpu);
    r.register_with_unit("container_memory_usage", "Memory in use, reclaimable page cache excluded", Unit::Bytes, mem);
    r.register_with_unit("container_memory_limit", "The container's memory limit", Unit::Bytes, mem_limit);
    r.register_with_unit("container_network_receive", "Bytes received on the container's interfaces", Unit::Bytes, rx);
    r.register_with_unit("container_network_transmit", "Bytes sent from the container's interfaces", Unit::Bytes, tx);
    r.register_with_unit("container_block_read", "Bytes read from block devices", Unit::Bytes, blk_r);
    r.register_with_unit("container_block_write", "Bytes written to block devices", Unit::Bytes, blk_w);
    r.register("container_pids", "Processes in the container", pids);
    r.register("container_restarts", "Restarts by the restart policy", restarts);
    r.register("container_healthy", "1 if the health check passes, 0 if not (containers with a check)", healthy);
    r.register("container_state", "1 for the container's current state", state);
    r
}

/// OpenMetrics text as the classic Prometheus text format (0.0.4): counter families are named
/// with their `_total` suffix, `# UNIT` and `# EOF` go.
pub fn to_prometheus_text(open: &str) -> String {
    let counters: std::collections::BTreeSet<&str> =
        open.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Prometheus metrics: OpenMetrics text if the scraper asks for it (`Accept`), else the classic
/// text format.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text (or OpenMetrics, if accepted)", body = String, content_type = "text/plain")))]
pub async fn metrics(State(s): St, headers: axum::http::HeaderMap) -> Response {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &scrape(&s)).expect("writing to a String cannot fail");
    let open = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("application/openmetrics-text"));
    if open {
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out).into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], to_prometheus_text(&out)).into_response()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn openmetrics_to_prometheus_text() {
        let open = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 2\n# HELP a_cpu_seconds CPU.\n# TYPE a_cpu_seconds counter\n# UNIT a_cpu_seconds seconds\na_cpu_seconds_total 1.5\n# HELP a_pids Pids.\n# TYPE a_pids gauge\na_pids 3\n# EOF\n";
        expect_test::expect![[r#"
            # HELP a_requests_total Requests.
            # TYPE a_requests_total counter
            a_requests_total{x="1"} 2
            # HELP a_cpu_seconds_total CPU.
            # TYPE a_cpu_seconds_total counter
            a_cpu_seconds_total 1.5
            # HELP a_pids Pids.
            # TYPE a_pids gauge
            a_pids 3
        "#]]
        .assert_eq(&super::to_prometheus_text(open));
    }
}

/// One container's usage counters at one instant (`atoll stats` turns two into rates).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ContainerStats {
    pub id: String,
    pub name: String,
    /// Nanoseconds since the Unix epoch when the counters were read.
    pub read_at_nano: i64,
    pub usage: Usage,
}

/// Usage counters of every running container.
#[utoipa::path(get, path = "/v1/stats", tag = "containers", responses((status = 200, body = Vec<ContainerStats>)))]
pub async fn stats(State(s): St) -> Json<Vec<ContainerStats>> {
    let out = s
        .engine
        .list(false)
        .into_iter()
        .filter_map(|rec| {
            let usage = s.engine.usage(&rec)?;
            let read_at_nano = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
            Some(ContainerStats { id: rec.id, name: rec.name, read_at_nano, usage })
        })
        .collect();
    Json(out)
}
