//! The control plane's transport: listeners (TLS, HTTP/2 and HTTP/1.1, one axum router each)
//! whose server configuration can change under them (renewed certificates, new revocations)
//! without a restart, each request carrying the caller's node ID from its certificate; and
//! the clients (mTLS between members, CA-pinned for joins).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::proto::Problem;

/// The caller's node ID, from its certificate (none on the join endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer(pub Option<String>);

/// A server configuration that can be replaced while connections are served.
pub type SharedConfig = Arc<RwLock<Arc<rustls::ServerConfig>>>;

/// Handshakes must finish this fast; a peer that stalls is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once per listener.
const MAX_CONNECTIONS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: cannot connect")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {problem}")]
    Refused { url: String, status: u16, problem: Problem },
    #[error("{url}: unreadable answer")]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("building a TLS client")]
    Client(#[source] reqwest::Error),
}

impl TransportError {
    /// The HTTP status the other side answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A TCP listener on `addr`, reusable at once after a daemon restart; bound even if `addr` is
/// not up yet (IP_FREEBIND: a mesh address appears once Nebula has its interface).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, TransportError> {
    let wrap = |source| TransportError::Bind { addr, source };
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, Some(socket2::Protocol::TCP)).map_err(wrap)?;
    socket.set_reuse_address(true).map_err(wrap)?;
    socket.set_freebind_v4(true).map_err(wrap)?;
    socket.set_nonblocking(true).map_err(wrap)?;
    socket.bind(&addr.into()).map_err(wrap)?;
    socket.listen(128).map_err(wrap)?;
    TcpListener::from_std(socket.into()).map_err(wrap)
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Where a connection arrived decides what it may ask: on the mesh address, the control
/// plane (mTLS); anywhere else (a public address, even one the cloud NATs to a private one),
/// only joins, and only on a public member.
#[derive(Clone)]
pub struct Sides {
    pub mesh_ip: std::net::IpAddr,
    pub control: (SharedConfig, axum::Router),
    pub join: Option<(SharedConfig, axum::Router)>,
}

/// Serves both sides over TLS on `listener` (a wildcard address) until `stop` turns true.
pub async fn serve_sides(listener: TcpListener, sides: Sides, mut stop: tokio::sync::watch::Receiver<bool>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, remote) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a control-plane connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let local = tcp.local_addr().map(|a| a.ip()).ok();
        let side = if local == Some(sides.mesh_ip) { Some(&sides.control) } else { sides.join.as_ref() };
        let Some((config, router)) = side else { continue };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "too many control-plane connections; dropping one");
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config.read().unwrap_or_else(|p| p.into_inner()).clone());
        tokio::spawn(connection(tcp, remote, acceptor, router.clone(), permit, stop.clone()));
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    _permit: tokio::sync::OwnedSemaphorePermit,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => return,
    };
    let peer = Peer(tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(atoll_pki::tls::peer_node_id));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(peer.clone());
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        r = conn => if let Err(e) = r { tracing::debug!(%remote, error = %e, "control-plane connection"); },
        _ = stopped(&mut stop) => {}
    }
}

/// An HTTP/2 client over TLS with `config` (mTLS to members, or pinned to the CA for a join).
pub fn client(config: rustls::ClientConfig, timeout: Duration) -> Result<reqwest::Client, TransportError> {
    builder(config).timeout(timeout).build().map_err(TransportError::Client)
}

/// The same without an overall timeout (only to connect), for answers that stream as long as
/// the caller reads.
pub fn stream_client(config: rustls::ClientConfig) -> Result<reqwest::Client, TransportError> {
    builder(config)
        // A member that dies mid-stream is noticed (HTTP/2 pings unanswered), not waited on.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .http2_keep_alive_while_idle(true)
        .tcp_keepalive(Duration::from_secs(15))
        .build()
        .map_err(TransportError::Client)
}

fn builder(config: rustls::ClientConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder().use_preconfigured_tls(config).connect_timeout(Duration::from_secs(5)).no_proxy()
}

/// `POST url` with `body` as JSON; the answer as `R`, or the other side's problem.
pub async fn post<B: Serialize, R: DeserializeOwned>(client: &reqwest::Client, url: &str, body: &B) -> Result<R, TransportError> {
    let resp = client.post(url).json(body).send().await.map_err(|source| TransportError::Connect { url: url.to_owned(), source })?;
    answer(url, resp).await
}

/// `GET url`; the answer as `R`.
pub async fn get<R: DeserializeOwned>(client: &reqwest::Client, url: &str) -> Result<R, TransportError> {
    let resp = client.get(url).send().await.map_err(|source| TransportError::Connect { url: url.to_owned(), source })?;
    answer(url, resp).await
}

async fn answer<R: DeserializeOwned>(url: &str, resp: reqwest::Response) -> Result<R, TransportError> {
    let status = resp.status();
    if status.is_success() {
        if status == reqwest::StatusCode::NO_CONTENT {
            return serde_json::from_value(serde_json::Value::Null).map_err(|_| TransportError::Refused {
                url: url.to_owned(),
                status: 204,
                problem: Problem { message: "no content".into(), causes: vec![] },
            });
        }
        return resp.json().await.map_err(|source| TransportError::Body { url: url.to_owned(), source });
    }
    Err(refusal(url, resp).await)
}

/// An answer that is not a success, as the other side's problem.
pub async fn refusal(url: &str, resp: reqwest::Response) -> TransportError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let problem = serde_json::from_str::<Problem>(&text).unwrap_or(Problem { message: text, causes: vec![] });
    TransportError::Refused { url: url.to_owned(), status, problem }
}
