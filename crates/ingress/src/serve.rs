//! The gateway on this member while it is public and the island has a route: [`Ingress::tick`]
//! builds the configuration from this member's replica at each look (certificates opened with
//! the island's data key), hands it to the running gateway (which changes routes without
//! closing a connection), starts the gateway when this member becomes public and there is a
//! route to serve, and stops it when either ends (so a public member without routes leaves
//! ports 80 and 443 to its own programs), and reports
//! the traffic every few seconds in `observed/gateway/<member id>` for `atoll gateway ls`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_acme::DataKey;
use atoll_gateway::{CertPair, Gateway, GatewayConfig, GatewayHandle, Limits, Metrics};
use atoll_island::Manager;
use atoll_names::Names;
use atoll_orchestrator::records::Records;
use atoll_state::desired::{self, Kind};
use atoll_state::ingress::{GatewayStatus, RouteCounters};
use atoll_state::{Expect, Request};
use tokio::sync::{Mutex, watch};

use crate::IngressError;

/// How often a public host reports its traffic (when it moved).
pub const REPORT_EVERY: Duration = Duration::from_secs(5);
/// How long after a failed start the gateway is tried again (a port another program held).
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The gateway of this daemon: one for its life, running while its member is public.
pub struct Ingress {
    http: SocketAddr,
    https: SocketAddr,
    metrics: Metrics,
    config: watch::Sender<GatewayConfig>,
    running: Mutex<Running>,
}

#[derive(Default)]
struct Running {
    /// The gateway, and the island manager it serves.
    gateway: Option<(Arc<Manager>, GatewayHandle)>,
    /// Why it could not start, and when to try again.
    failed: Option<(String, Instant)>,
    key: Option<DataKey>,
    /// The last report written: when, and its counters.
    reported: Option<(i64, BTreeMap<String, RouteCounters>, Option<String>)>,
    reported_at: Option<Instant>,
}

impl Ingress {
    /// A gateway that will listen on `http` (redirects to HTTPS) and `https`.
    pub fn new(http: SocketAddr, https: SocketAddr) -> Self {
        Ingress { http, https, metrics: Metrics::default(), config: watch::channel(GatewayConfig::default()).0, running: Mutex::default() }
    }

    /// Its counters (for the daemon's `/metrics`): they keep counting across restarts.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configuration served now.
    pub fn config(&self) -> GatewayConfig {
        self.config.borrow().clone()
    }

    /// Whether the gateway runs here, and why not when it should.
    pub async fn status(&self) -> (bool, Option<String>) {
        let r = self.running.lock().await;
        (r.gateway.is_some(), r.failed.as_ref().map(|(e, _)| e.clone()))
    }

    /// Stops the gateway (this daemon left the island).
    pub async fn stop(&self) {
        let mut r = self.running.lock().await;
        r.gateway = None;
        r.key = None;
    }

    /// One look at island `m`.
    pub async fn tick(&self, m: &Arc<Manager>) -> Result<(), IngressError> {
        let public = !atoll_names::serve::public_addrs(m).is_empty();
        let mut r = self.running.lock().await;
        if !public {
            if r.gateway.take().is_some() {
                tracing::info!("this member is no longer public: the gateway stops");
            }
            return Ok(());
        }
        if r.key.is_none() {
            match m.names_key().await {
                Ok(k) => r.key = DataKey::from_base64(&k).ok(),
                Err(e) => {
                    tracing::warn!(error = %atoll_island::proto::Problem::from_error(&e), "fetching the island's data key: the gateway serves no certificate yet")
                }
            }
        }
        let (records, names) = m.replica().with(|ks| Ok::<_, atoll_state::desired::DecodeError>((Records::read(ks)?, Names::read(ks)?)))?;
        let certs = open_certificates(&names, r.key.as_ref());
        let (config, _) = crate::config::build(&m.state(), &records, Some(m.id()), certs, Limits::default());
        // Nothing to serve: the ports stay free for the host's own programs (a user's reverse
        // proxy publishing 80 and 443 on a public member keeps working until a route exists).
        if config.routes.is_empty() {
            if r.gateway.take().is_some() {
                tracing::info!("no route left: the gateway stops");
            }
            r.failed = None;
            self.report(m, &mut r).await;
            return Ok(());
        }
        self.config.send_if_modified(|c| {
            let changed = *c != config;
            if changed {
                *c = config;
            }
            changed
        });

        if r.gateway.as_ref().is_some_and(|(gm, _)| !Arc::ptr_eq(gm, m)) {
            r.gateway = None;
        }
        if r.gateway.is_none() && r.failed.as_ref().is_none_or(|(_, at)| at.elapsed() >= RETRY_AFTER) {
            match Gateway::start_with_metrics(self.config.subscribe(), self.http, self.https, self.metrics.clone()).await {
                Ok(h) => {
                    tracing::info!(http = %h.http_addr(), https = %h.https_addr(), "the gateway serves the island's routes");
                    r.gateway = Some((m.clone(), h));
                    r.failed = None;
                }
                Err(e) => {
                    let why = format!("cannot listen on {} and {}: {e}", self.http, self.https);
                    if r.failed.as_ref().is_none_or(|(w, _)| *w != why) {
                        tracing::error!("gateway: {why}");
                    }
                    r.failed = Some((why, Instant::now()));
                }
            }
        }
        self.report(m, &mut r).await;
        Ok(())
    }

    /// Writes this member's traffic report when it moved, at most every [`REPORT_EVERY`].
    async fn report(&self, m: &Manager, r: &mut Running) {
        if r.reported_at.is_some_and(|at| at.elapsed() < REPORT_EVERY) {
            return;
        }
        let routes: BTreeMap<String, RouteCounters> =
            self.metrics.totals().into_iter().map(|(k, t)| (k, RouteCounters { requests: t.requests, errors: t.errors })).collect();
        let applied = r.gateway.as_ref().and_then(|(_, h)| h.applied().borrow().error.clone());
        let error = r.failed.as_ref().map(|(e, _)| e.clone()).or(applied);
        if r.reported.as_ref().is_some_and(|(_, c, e)| *c == routes && *e == error) {
            return;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let status = GatewayStatus {
            member: m.id().to_owned(),
            at_ms: now,
            routes: routes.clone(),
            previous: r.reported.as_ref().map(|(at, c, _)| (*at, c.clone())),
            error: error.clone(),
            extra: Default::default(),
        };
        let current = m.replica().with(|ks| desired::get::<GatewayStatus>(ks, &status.name())).ok().flatten();
        let op = desired::put(&status, current.map_or(Expect::Absent, |(_, v)| Expect::Version(v)));
        r.reported_at = Some(Instant::now());
        match tokio::time::timeout(Duration::from_secs(2), m.propose(Request::Txn { ops: vec![op] })).await {
            Ok(Ok(_)) => r.reported = Some((now, routes, error)),
            Ok(Err(e)) => tracing::debug!(error = %atoll_island::proto::Problem::from_error(&e), "reporting the gateway's traffic"),
            Err(_) => tracing::debug!("reporting the gateway's traffic: the leader did not answer in time"),
        }
    }
}

/// The island's certificates this member can serve: those it holds a current certificate of
/// whose key opens with the data key.
pub fn open_certificates(names: &Names, key: Option<&DataKey>) -> Vec<CertPair> {
    let Some(key) = key else { return Vec::new() };
    names
        .certificates
        .iter()
        .filter_map(|(c, _)| {
            let current = c.0.current.as_ref()?;
            match c.0.open_key(key) {
                Ok(Some(key_pem)) => Some(CertPair { names: c.0.names.clone(), chain_pem: current.chain_pem.clone(), key_pem }),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(certificate = %c.name(), error = %e, "the certificate's key does not open with the island's data key");
                    None
                }
            }
        })
        .collect()
}
