//! One bundle's HTTP listener on this host's loopback (and, for the island's bundles, on the
//! member's mesh address, for the gateway): every request goes to the version
//! being served ([`Instance::handle`]), and a [`atoll_runner::RunError`] becomes its status
//! with the reason in words (504 for a request over its time). The version can be replaced
//! under live traffic ([`Running::replace`]): each request finishes on the version it started
//! on. The bundle's cron jobs ([`crate::cron`]) run beside the listener, against the version
//! being served.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::instance::Instance;
use crate::metrics::{BundleLabels, Metrics};

/// A bundle being served; dropping it closes its listener and stops its cron jobs,
/// [`Running::stop`] also drains it.
pub struct Running {
    pub addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The version requests go to.
    current: watch::Sender<Arc<Instance>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Connections one bundle's listener serves at once (slow or idle clients cannot hold more,
/// nor the daemon's descriptors).
pub const MAX_CONNECTIONS: usize = 256;
/// A request's head must arrive within this.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A request's body must arrive within this (or the bundle's wall time, if longer).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The pause after a failed accept (out of descriptors).
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// What a listener labels its requests with.
#[derive(Clone)]
pub struct Context {
    pub labels: BundleLabels,
    pub metrics: Metrics,
    pub journal: crate::journal::Journal,
    /// Scale a deno bundle's instance to zero after this long without requests (oci bundles
    /// do it themselves; wasm instances live for one request).
    pub idle_timeout: Option<std::time::Duration>,
}

/// Stops the served deno version's instance once idle; the next request starts another.
async fn park_idle(versions: watch::Receiver<Arc<Instance>>, idle: std::time::Duration, cx: Context) {
    let mut tick = tokio::time::interval((idle / 4).max(std::time::Duration::from_millis(100)));
    loop {
        tick.tick().await;
        let current = versions.borrow().clone();
        let entry = match &*current {
            Instance::Deno(d) if d.park(idle).await => format!("idle for {} s: scaled to zero", idle.as_secs()),
            Instance::Replicas(r) => match r.shrink(idle).await {
                0 => continue,
                n => format!("idle for {} s: {n} instance(s) stopped, {} left", idle.as_secs(), r.len()),
            },
            _ => continue,
        };
        cx.journal.add(&cx.labels.bundle, crate::journal::Entry::new("instance", entry));
    }
}

impl Running {
    /// Serves `bundle` where `listen` says: `127.0.0.1:PORT` (`port` again if free, else one
    /// the OS picks), or for the island on `127.0.0.1:PORT` and the member's mesh address at
    /// the same port, from the island's range.
    pub async fn start(bundle: Arc<Instance>, listen: Listen, cx: Context) -> std::io::Result<Running> {
        let listeners = bind(listen).await?;
        let addr = listeners[0].local_addr()?;
        let (current, versions) = watch::channel(bundle);
        // At most MAX_CONNECTIONS at once over all its listeners: more wait in the kernel's backlog.
        let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut tasks: Vec<tokio::task::JoinHandle<()>> =
            listeners.into_iter().map(|l| tokio::spawn(accept_loop(l, connections.clone(), versions.clone(), cx.clone()))).collect();
        let cron = tokio::spawn(crate::cron::run(cx.labels.bundle.clone(), versions.clone(), cx.metrics.clone(), cx.journal.clone()));
        tasks.push(cron);
        if let Some(idle) = cx.idle_timeout.filter(|d| !d.is_zero()) {
            tasks.push(tokio::spawn(park_idle(versions, idle, cx.clone())));
        }
        Ok(Running { addr, tasks, current })
    }

    /// The version being served.
    pub fn current(&self) -> Arc<Instance> {
        self.current.borrow().clone()
    }

    /// Sends new requests to `next`; returns the version they went to, which the caller
    /// drains ([`Instance::stop`]).
    pub fn replace(&self, next: Arc<Instance>) -> Arc<Instance> {
        self.current.send_replace(next)
    }

    /// Closes the listener, then lets the requests under way finish.
    pub async fn stop(self) {
        let last = self.current();
        drop(self);
        last.stop().await;
    }
}

/// Where a bundle is served ([`Running::start`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Listen {
    /// The port it had before (asked for again).
    pub port: Option<u16>,
    /// For the island: also on this mesh address, at a port of this range (both ends included).
    pub mesh: Option<(IpAddr, (u16, u16))>,
}

async fn bind(listen: Listen) -> std::io::Result<Vec<TcpListener>> {
    let Some((ip, (lo, hi))) = listen.mesh else {
        if let Some(p) = listen.port
            && let Ok(l) = TcpListener::bind(("127.0.0.1", p)).await
        {
            return Ok(vec![l]);
        }
        return Ok(vec![TcpListener::bind(("127.0.0.1", 0)).await?]);
    };
    for p in listen.port.filter(|p| (lo..=hi).contains(p)).into_iter().chain(lo..=hi) {
        let Ok(local) = TcpListener::bind(("127.0.0.1", p)).await else { continue };
        let Ok(mesh) = listen_freebind(SocketAddr::new(ip, p)) else { continue };
        return Ok(vec![local, mesh]);
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("every port of {lo}-{hi} on {ip} and loopback is taken")))
}

/// A listener on `addr`, which may not be up yet (a bridge before its first container, the
/// mesh's device before Nebula is): bound with `IP_FREEBIND`.
pub(crate) fn listen_freebind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_freebind_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    TcpListener::from_std(socket.into())
}

/// Serves one listener's connections, each request on the version being served.
async fn accept_loop(
    listener: TcpListener,
    connections: Arc<tokio::sync::Semaphore>,
    versions: watch::Receiver<Arc<Instance>>,
    cx: Context,
) {
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else { return };
        let (stream, client) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, most likely: give the others time to close.
                tracing::warn!(bundle = %cx.labels.bundle, error = %e, "accepting a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (versions, cx) = (versions.clone(), cx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                // Each request holds the version it started on to its end.
                let bundle = versions.borrow().clone();
                let cx = cx.clone();
                async move { Ok::<_, Infallible>(handle(&bundle, &cx, req, client).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn handle(bundle: &Instance, cx: &Context, req: Request<Incoming>, client: SocketAddr) -> Response<Full<Bytes>> {
    let name = &cx.labels.bundle;
    let max_body = bundle.limits().max_body_bytes;
    let id = format!("{:016x}", fastrand::u64(..));
    let (mut parts, body) = req.into_parts();
    let within = BODY_TIMEOUT.max(bundle.limits().wall);
    let body = match tokio::time::timeout(within, Limited::new(body, max_body).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Err(_) => {
            return text(StatusCode::REQUEST_TIMEOUT, format!("the request body did not arrive within {} s\n", within.as_secs()));
        }
        Ok(Err(_)) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {max_body} bytes, the most bundle {name} takes\n"),
            );
        }
    };
    parts.extensions.insert(atoll_runner::ClientAddr(client));
    let (method, path) = (parts.method.to_string(), parts.uri.path().to_owned());
    let start = std::time::Instant::now();
    let result = bundle.handle(Request::from_parts(parts, body)).await;
    let elapsed = start.elapsed();
    let ms = elapsed.as_millis() as u64;
    match result {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            cx.metrics.request(&cx.labels, status, elapsed.as_secs_f64());
            tracing::info!(target: "atoll_bundles::access", bundle = %name, did = %cx.labels.did, request_id = %id, %method, %path, status, ms);
            if let Some(atoll_runner::deno::Denied(what)) = resp.extensions().get() {
                let mut e = crate::journal::Entry::new("denied", format!("{method} {path}: denied: {what}"));
                e.request_id = Some(id.clone());
                cx.journal.add(name, e);
            }
            let mut e = crate::journal::Entry::new("access", format!("{method} {path}"));
            (e.request_id, e.status, e.ms) = (Some(id.clone()), Some(status), Some(ms));
            cx.journal.add(name, e);
            resp.headers_mut().insert("x-request-id", hyper::header::HeaderValue::from_str(&id).expect("hex"));
            resp.map(Full::new)
        }
        Err(e) => {
            let status = e.status();
            cx.metrics.request(&cx.labels, status.as_u16(), elapsed.as_secs_f64());
            tracing::warn!(target: "atoll_bundles::access", bundle = %name, did = %cx.labels.did, request_id = %id, %method, %path, status = status.as_u16(), ms, error = %e);
            // What the bundle wrote to stderr stays in the operator's log: it may hold anything
            // (secrets, other requests' data, host paths).
            let public = e.without_stderr();
            let mut entry = crate::journal::Entry::new("access", format!("{method} {path}: {public}"));
            (entry.request_id, entry.status, entry.ms) = (Some(id.clone()), Some(status.as_u16()), Some(ms));
            cx.journal.add(name, entry);
            if status.is_server_error() {
                let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
                let message = format!("{method} {path}: {public}");
                cx.metrics.failed(name, crate::metrics::RecentError { time, status: status.as_u16(), request_id: id.clone(), message });
            }
            let mut resp = text(status, format!("bundle {name}: {public} (request {id})\n"));
            resp.headers_mut().insert("x-request-id", hyper::header::HeaderValue::from_str(&id).expect("hex"));
            resp
        }
    }
}
