//! The gateway's listeners and its configuration loop: `Gateway::start` binds HTTP and HTTPS,
//! follows the configuration channel (routes, certificates and port listeners change in place;
//! open connections keep what they had), and serves each connection with hyper (HTTP/1.1 and
//! HTTP/2) under the limits.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::body::ProxyBody;
use crate::config::{GatewayConfig, Limits};
use crate::l4::{PortListeners, Prefixed};
use crate::limits::{Activity, ConnCount, ConnGuard, RateLimiter};
use crate::metrics::Metrics;
use crate::proxy::{self, ConnInfo};
use crate::routes::RouteTable;
use crate::tls::{CertSet, SniResolver};
use crate::upstream::Pool;

/// One configuration as served: the config and its routes indexed.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub config: GatewayConfig,
    pub table: RouteTable,
}

/// What every connection shares.
pub struct Shared {
    state: watch::Receiver<Arc<Snapshot>>,
    pub(crate) metrics: Metrics,
    pub(crate) pool: Arc<Pool>,
    pub(crate) limiter: RateLimiter,
    pub(crate) turn: AtomicUsize,
    pub(crate) resolver: Arc<SniResolver>,
    tls: Arc<rustls::ServerConfig>,
    pub(crate) conns: Arc<ConnCount>,
    https_port: u16,
}

impl Shared {
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.state.borrow().clone()
    }
}

/// The outcome of the last configuration the gateway was sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// How many configurations have been looked at (the first is 1).
    pub generation: u64,
    /// Why the last one was refused (the one before stays in force), or which port listeners
    /// could not be opened; none when it is all served.
    pub error: Option<String>,
}

/// Starts gateways.
#[derive(Debug)]
pub struct Gateway;

/// A running gateway. Dropping it (or [`GatewayHandle::shutdown`]) closes the listeners;
/// connections already open finish on their own.
pub struct GatewayHandle {
    http_addr: SocketAddr,
    https_addr: SocketAddr,
    metrics: Metrics,
    applied: watch::Receiver<Applied>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle").field("http", &self.http_addr).field("https", &self.https_addr).finish()
    }
}

impl GatewayHandle {
    /// The HTTP listener's address (the port the OS chose if 0 was asked for).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }
    /// The gateway's metrics: [`Metrics::register`] adds them to a scrape.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    /// Follows which configuration is served (and why one was refused).
    pub fn applied(&self) -> watch::Receiver<Applied> {
        self.applied.clone()
    }
    /// Waits until configuration number `generation` has been looked at; returns its outcome.
    pub async fn wait_applied(&self, generation: u64) -> Applied {
        let mut rx = self.applied.clone();
        rx.wait_for(|a| a.generation >= generation).await.map(|a| a.clone()).unwrap_or_default()
    }
    /// Closes the listeners (HTTP, HTTPS, TCP and UDP ports).
    pub fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Gateway {
    /// Binds `http_addr` (redirects to HTTPS) and `https_addr` (TLS, routes by SNI and host)
    /// and serves the configurations `config` carries, starting with its current one. TCP and
    /// UDP routes listen on `https_addr`'s IP. Fails only when a listener cannot be bound.
    pub async fn start(
        config: watch::Receiver<GatewayConfig>,
        http_addr: SocketAddr,
        https_addr: SocketAddr,
    ) -> std::io::Result<GatewayHandle> {
        Self::start_with_metrics(config, http_addr, https_addr, Metrics::default()).await
    }

    /// [`Gateway::start`], counting into `metrics` (kept by the caller across restarts of the
    /// gateway, so a scrape's counters never go back).
    pub async fn start_with_metrics(
        config: watch::Receiver<GatewayConfig>,
        http_addr: SocketAddr,
        https_addr: SocketAddr,
        metrics: Metrics,
    ) -> std::io::Result<GatewayHandle> {
        let http = TcpListener::bind(http_addr).await?;
        let https = TcpListener::bind(https_addr).await?;
        let (http_addr, https_addr) = (http.local_addr()?, https.local_addr()?);
        let (state_tx, state_rx) = watch::channel(Arc::new(Snapshot::default()));
        let (applied_tx, applied_rx) = watch::channel(Applied::default());
        let resolver = Arc::new(SniResolver::default());
        let shared = Arc::new(Shared {
            state: state_rx,
            metrics,
            pool: Arc::default(),
            limiter: RateLimiter::default(),
            turn: AtomicUsize::new(0),
            tls: crate::tls::server_config(resolver.clone()),
            resolver,
            conns: Arc::default(),
            https_port: https_addr.port(),
        });
        let mut config = config;
        // The first configuration is in force before the listeners accept.
        let mut ports = PortListeners::default();
        let mut generation = 0;
        // (Cloned first: the channel's read guard must not be held across the await.)
        let first = config.borrow_and_update().clone();
        apply(&shared, &state_tx, &applied_tx, &mut ports, https_addr.ip(), &first, &mut generation).await;
        let cfg_task = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while config.changed().await.is_ok() {
                    let cfg = config.borrow_and_update().clone();
                    apply(&shared, &state_tx, &applied_tx, &mut ports, https_addr.ip(), &cfg, &mut generation).await;
                }
                // The sender is gone: keep serving the last configuration until shut down.
                std::future::pending::<()>().await;
                drop(ports);
            })
        };
        let tasks =
            vec![cfg_task, tokio::spawn(accept_loop(shared.clone(), http, false)), tokio::spawn(accept_loop(shared.clone(), https, true))];
        Ok(GatewayHandle { http_addr, https_addr, metrics: shared.metrics.clone(), applied: applied_rx, tasks })
    }
}

async fn apply(
    shared: &Arc<Shared>,
    state: &watch::Sender<Arc<Snapshot>>,
    applied: &watch::Sender<Applied>,
    ports: &mut PortListeners,
    ip: std::net::IpAddr,
    cfg: &GatewayConfig,
    generation: &mut u64,
) {
    *generation += 1;
    if let Err(e) = cfg.validate() {
        tracing::error!("gateway: configuration refused, the previous one stays: {e}");
        applied.send_replace(Applied { generation: *generation, error: Some(e.to_string()) });
        return;
    }
    shared.resolver.replace(CertSet::build(&cfg.certificates));
    let table = RouteTable::build(cfg);
    shared.pool.retain_upstreams(&cfg.routes.iter().flat_map(|r| r.upstreams().iter().map(|u| u.addr)).collect());
    let (tcp, udp) = table.ports();
    state.send_replace(Arc::new(Snapshot { config: cfg.clone(), table }));
    let errors = ports.reconcile(shared, ip, &tcp, &udp).await;
    for e in &errors {
        tracing::error!("gateway: {e}");
    }
    applied.send_replace(Applied { generation: *generation, error: (!errors.is_empty()).then(|| errors.join("; ")) });
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, tls: bool) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!("gateway: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let limits = shared.snapshot().config.limits.clone();
        let Some(guard) = shared.conns.try_open(limits.max_connections) else {
            shared.metrics.connections_refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.metrics.connections_open.inc();
            if tls {
                serve_tls(&shared, stream, peer, &limits).await;
            } else {
                serve_http(&shared, stream, ConnInfo { client: peer, tls_sni: None }, &limits).await;
            }
            shared.metrics.connections_open.dec();
            drop::<ConnGuard>(guard);
        });
    }
}

async fn serve_tls(shared: &Arc<Shared>, mut stream: TcpStream, peer: SocketAddr, limits: &Limits) {
    let deadline = tokio::time::Instant::now() + limits.tls_handshake_timeout;
    let (seen, sni) = match tokio::time::timeout_at(deadline, crate::l4::read_client_hello(&mut stream)).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            shared.metrics.tls_handshake_failures.inc();
            tracing::debug!(%peer, "gateway: {e}");
            return;
        }
        Err(_) => {
            shared.metrics.tls_handshake_failures.inc();
            tracing::debug!(%peer, "gateway: no ClientHello within {:?}", limits.tls_handshake_timeout);
            return;
        }
    };
    if let Some(name) = &sni
        && let Some(route) = shared.snapshot().table.passthrough(name).cloned()
    {
        crate::l4::forward(shared, &route.label(), route.upstreams(), stream, &seen).await;
        return;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.clone());
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(Prefixed::new(seen, stream))).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            shared.metrics.tls_handshake_failures.inc();
            tracing::debug!(%peer, ?sni, "gateway: TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            shared.metrics.tls_handshake_failures.inc();
            return;
        }
    };
    serve_http(shared, tls, ConnInfo { client: peer, tls_sni: Some(sni) }, limits).await;
}

/// hyper's server with the limits: header size and read time (HTTP/1.1), streams, header list
/// size and rapid-reset protection (HTTP/2).
fn builder(l: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(l.header_read_timeout)
        .max_buf_size(l.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(l.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(l.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(l.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(Some(l.h2_max_local_error_reset_streams))
        .enable_connect_protocol()
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

async fn serve_http<S>(shared: &Arc<Shared>, io: S, info: ConnInfo, limits: &Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let client = info.client;
    let io = TokioIo::new(io);
    let svc = {
        let shared = shared.clone();
        let activity = activity.clone();
        service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            let in_flight = activity.request();
            // Boxed: the request's future (~600 bytes) is moved by hyper (into a task per HTTP/2
            // stream); a pointer moves cheaper. `handle`'s own future, not one around it: an
            // async block awaiting it would keep another copy of the request (its captures).
            let fut: Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>> = if info.tls_sni.is_some() {
                Box::pin(proxy::handle(shared, &info, req, in_flight).map(Ok))
            } else {
                drop(in_flight);
                let host = crate::headers::request_host(req.uri(), req.headers());
                let resp =
                    crate::pages::redirect(host.as_deref(), req.uri().path_and_query().map_or("/", |p| p.as_str()), shared.https_port);
                Box::pin(std::future::ready(Ok(resp)))
            };
            fut
        })
    };
    let b = builder(limits);
    let conn = b.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(20)));
    // Idle: a graceful shutdown (HTTP/2: GOAWAY, then the client's PING answer), and if the
    // client does not play along, still idle after `grace`, the connection is dropped.
    let grace = (idle / 2).min(Duration::from_secs(5));
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%client, "gateway: connection ended: {e}");
                }
                break;
            }
            _ = tick.tick() => match closing {
                None => {
                    if activity.idle_for().is_some_and(|d| d >= idle) {
                        conn.as_mut().graceful_shutdown();
                        closing = Some(tokio::time::Instant::now());
                    }
                }
                Some(since) => {
                    if since.elapsed() >= grace && activity.idle_for().is_some() {
                        tracing::debug!(%client, "gateway: idle connection dropped: the client did not close it");
                        break;
                    }
                }
            }
        }
    }
}
