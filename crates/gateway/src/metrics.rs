//! Prometheus metrics per route (requests by status code, latency, bytes in and out, upstream
//! errors by kind, open and refused connections) and the access log: one JSON line per request
//! on the `tracing` target [`ACCESS_LOG_TARGET`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;

/// The `tracing` target of the access log (level INFO, the JSON line as the message).
pub const ACCESS_LOG_TARGET: &str = "atoll_gateway::access";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    route: String,
    kind: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 4.0, 10))
}

/// The gateway's counters. Cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    bytes_in: Family<RouteLabels, Counter>,
    bytes_out: Family<RouteLabels, Counter>,
    upstream_errors: Family<ErrorLabels, Counter>,
    pub(crate) connections_open: Gauge,
    pub(crate) connections_refused: Counter,
    pub(crate) tls_handshake_failures: Counter,
    /// Each route's handles, by route label, made at its first request.
    routes: Arc<RwLock<HashMap<String, Arc<RouteHandles>>>>,
}

/// One route's members of the families (prometheus-client's metrics share their value when
/// cloned), so that a finished request updates them without a family lookup per metric (each
/// hashes and allocates its labels); and its totals, for [`Metrics::totals`] (a Prometheus
/// family cannot be read back whole).
struct RouteHandles {
    latency: Histogram,
    bytes_in: Counter,
    bytes_out: Counter,
    /// Requests by status code: the few codes a route answers with.
    by_code: Mutex<Vec<(u16, Counter)>>,
    requests: AtomicU64,
    errors: AtomicU64,
}

/// One route's requests since the gateway's metrics were made, and how many of them failed
/// (a 5xx answer: the gateway's 502/503/504, or the upstream's own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteTotals {
    pub requests: u64,
    pub errors: u64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            upstream_errors: Family::default(),
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
            tls_handshake_failures: Counter::default(),
            routes: Default::default(),
        }
    }
}

/// Why an upstream could not serve a request, as counted and logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// The connection was refused or could not be made.
    Connect,
    /// The upstream took longer than the route's timeout.
    Timeout,
    /// The connection broke before a response came.
    Failed,
}

impl UpstreamError {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Failed => "failed",
        }
    }
}

impl Metrics {
    /// Adds the gateway's metrics to `registry` (under its prefix, `gateway_…`); the daemon's
    /// `/metrics` calls this when it builds a scrape.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("gateway");
        r.register("requests", "HTTP requests by route and status code", self.requests.clone());
        r.register_with_unit("request_duration", "Time to the end of the response, by route", Unit::Seconds, self.latency.clone());
        r.register_with_unit("received", "Request body bytes from clients, by route", Unit::Bytes, self.bytes_in.clone());
        r.register_with_unit("sent", "Response body bytes to clients, by route", Unit::Bytes, self.bytes_out.clone());
        r.register("upstream_errors", "Upstream failures by route and kind (connect, timeout, failed)", self.upstream_errors.clone());
        r.register("connections_open", "Client connections open (HTTP and HTTPS)", self.connections_open.clone());
        r.register("connections_refused", "Client connections closed at once: max_connections reached", self.connections_refused.clone());
        r.register("tls_handshake_failures", "TLS handshakes that failed or timed out", self.tls_handshake_failures.clone());
    }

    /// The metrics alone as OpenMetrics text (for tests and a standalone scrape).
    pub fn encode(&self) -> String {
        let mut r = Registry::with_prefix("atoll");
        self.register(&mut r);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("writing to a String cannot fail");
        out
    }

    pub(crate) fn upstream_error(&self, route: &str, kind: UpstreamError) {
        self.upstream_errors.get_or_create(&ErrorLabels { route: route.to_owned(), kind: kind.as_str().to_owned() }).inc();
    }

    /// How many upstream errors of `kind` were counted for `route`.
    pub fn upstream_errors(&self, route: &str, kind: UpstreamError) -> u64 {
        self.upstream_errors.get_or_create(&ErrorLabels { route: route.to_owned(), kind: kind.as_str().to_owned() }).get()
    }

    /// Requests counted for `route` with status `code`.
    pub fn requests(&self, route: &str, code: u16) -> u64 {
        self.requests.get_or_create(&RequestLabels { route: route.to_owned(), code: code.to_string() }).get()
    }

    /// Requests and errors of every route that has served one, by route label.
    pub fn totals(&self) -> BTreeMap<String, RouteTotals> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        routes
            .iter()
            .map(|(r, h)| {
                (r.clone(), RouteTotals { requests: h.requests.load(Ordering::Relaxed), errors: h.errors.load(Ordering::Relaxed) })
            })
            .collect()
    }

    /// The handles of `route`, made at its first request.
    fn route(&self, route: &str) -> Arc<RouteHandles> {
        if let Some(h) = self.routes.read().unwrap_or_else(PoisonError::into_inner).get(route) {
            return h.clone();
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let labels = RouteLabels { route: route.to_owned() };
        routes
            .entry(route.to_owned())
            .or_insert_with(|| {
                Arc::new(RouteHandles {
                    latency: self.latency.get_or_create(&labels).clone(),
                    bytes_in: self.bytes_in.get_or_create(&labels).clone(),
                    bytes_out: self.bytes_out.get_or_create(&labels).clone(),
                    by_code: Mutex::default(),
                    requests: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                })
            })
            .clone()
    }

    pub(crate) fn finished(&self, rec: &AccessRecord) {
        let h = self.route(&rec.route);
        h.requests.fetch_add(1, Ordering::Relaxed);
        if rec.status >= 500 {
            h.errors.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut by_code = h.by_code.lock().unwrap_or_else(PoisonError::into_inner);
            match by_code.iter().find(|(c, _)| *c == rec.status) {
                Some((_, counter)) => {
                    counter.inc();
                }
                None => {
                    let counter =
                        self.requests.get_or_create(&RequestLabels { route: rec.route.clone(), code: rec.status.to_string() }).clone();
                    counter.inc();
                    by_code.push((rec.status, counter));
                }
            }
        }
        h.latency.observe(rec.duration.as_secs_f64());
        h.bytes_in.inc_by(rec.bytes_in);
        h.bytes_out.inc_by(rec.bytes_out);
    }
}

/// One request as the access log writes it.
#[derive(Clone, Debug, Serialize)]
pub struct AccessRecord {
    /// RFC 3339, when the request arrived.
    pub time: String,
    pub client: IpAddr,
    pub method: String,
    pub host: String,
    pub path: String,
    pub version: String,
    pub status: u16,
    /// The route's label, `-` when none matched.
    pub route: String,
    pub upstream: Option<std::net::SocketAddr>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    #[serde(rename = "duration_ms", serialize_with = "as_millis")]
    pub duration: Duration,
    /// What went wrong, in words.
    pub error: Option<String>,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}

/// Whether anyone listens to the access log (else no line is made).
pub(crate) fn access_log_enabled() -> bool {
    tracing::enabled!(target: ACCESS_LOG_TARGET, tracing::Level::INFO)
}

impl AccessRecord {
    pub(crate) fn log(&self) {
        if !access_log_enabled() {
            return;
        }
        if let Ok(line) = serde_json::to_string(self) {
            tracing::info!(target: ACCESS_LOG_TARGET, "{line}");
        }
    }
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_appear_in_the_text() {
        let m = Metrics::default();
        let rec = AccessRecord {
            time: now_rfc3339(),
            client: "192.0.2.1".parse().unwrap(),
            method: "GET".into(),
            host: "a.example".into(),
            path: "/".into(),
            version: "HTTP/2.0".into(),
            status: 200,
            route: "a.example".into(),
            upstream: None,
            bytes_in: 0,
            bytes_out: 42,
            duration: Duration::from_millis(3),
            error: None,
        };
        m.finished(&rec);
        // Later requests go through the route's cached handles, into the same families.
        m.finished(&AccessRecord { status: 502, bytes_out: 8, ..rec.clone() });
        m.finished(&rec);
        m.upstream_error("a.example", UpstreamError::Connect);
        let text = m.encode();
        assert!(text.contains(r#"atoll_gateway_requests_total{route="a.example",code="200"} 2"#), "{text}");
        assert!(text.contains(r#"atoll_gateway_requests_total{route="a.example",code="502"} 1"#), "{text}");
        assert!(text.contains(r#"atoll_gateway_sent_bytes_total{route="a.example"} 92"#), "{text}");
        assert!(text.contains(r#"atoll_gateway_request_duration_seconds_count{route="a.example"} 3"#), "{text}");
        assert_eq!(m.totals()["a.example"], RouteTotals { requests: 3, errors: 1 });
        assert_eq!(m.requests("a.example", 200), 2);
        assert!(text.contains(r#"atoll_gateway_upstream_errors_total{route="a.example",kind="connect"} 1"#), "{text}");
        assert!(text.contains("atoll_gateway_request_duration_seconds_bucket"), "{text}");
        let line = serde_json::to_value(&rec).unwrap();
        assert_eq!(line["duration_ms"], 3.0);
        assert_eq!(line["status"], 200);
    }
}
