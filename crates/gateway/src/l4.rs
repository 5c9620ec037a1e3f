//! Layer 4: the ClientHello's SNI read without terminating TLS (rustls' `Acceptor` over a copy
//! of the bytes, which are then forwarded or handed to the TLS acceptor), TLS pass-through to a
//! route's upstreams, and plain TCP and UDP port forwarding. Listeners follow the configuration
//! (opened for new ports, closed for removed ones); connections and UDP sessions already open
//! keep going. TCP connections count against `max_connections` with HTTP's; UDP sessions are
//! capped per port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::config::Upstream;
use crate::routes::candidates;
use crate::server::Shared;

/// A ClientHello larger than this is refused (real ones are a few hundred bytes to a few KiB).
const MAX_HELLO: usize = 16 * 1024;
/// A UDP session with no datagram either way for this long is forgotten.
const UDP_SESSION_IDLE: Duration = Duration::from_secs(60);
/// UDP sessions per port; datagrams from further clients are dropped (source addresses are
/// easy to forge, and each session is a socket).
const MAX_UDP_SESSIONS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("reading the ClientHello: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed before a ClientHello")]
    Closed,
    #[error("not a TLS ClientHello: {0}")]
    NotTls(rustls::Error),
    #[error("the ClientHello is larger than {MAX_HELLO} bytes")]
    TooLarge,
}

/// Reads until a whole ClientHello has arrived; returns the bytes read and its SNI.
pub async fn read_client_hello<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(Vec<u8>, Option<String>), HelloError> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut seen = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HelloError::Closed);
        }
        seen.extend_from_slice(&chunk[..n]);
        if seen.len() > MAX_HELLO {
            return Err(HelloError::TooLarge);
        }
        let mut rest = &chunk[..n];
        while !rest.is_empty() {
            if acceptor.read_tls(&mut rest)? == 0 {
                break;
            }
        }
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => {
                let sni = accepted.client_hello().server_name().map(|s| s.to_ascii_lowercase());
                return Ok((seen, sni));
            }
            Err((e, _alert)) => return Err(HelloError::NotTls(e)),
        }
    }
}

/// A stream that first yields bytes already read from it.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed { prefix, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connects to the first healthy upstream that accepts, in round-robin order.
async fn connect_any(shared: &Shared, route: &str, upstreams: &[Upstream]) -> Option<TcpStream> {
    let order = candidates(upstreams, shared.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed), |a| shared.pool.is_suspect(a));
    let timeout = shared.snapshot().config.limits.upstream_connect_timeout;
    for addr in order {
        match shared.pool.connect(addr, timeout).await {
            Ok(s) => return Some(s),
            Err(_) => shared.metrics.upstream_error(route, crate::metrics::UpstreamError::Connect),
        }
    }
    tracing::debug!(route, "gateway: no upstream reachable");
    None
}

/// Forwards a client connection (and the bytes already read from it) to an upstream.
pub async fn forward(shared: &Shared, route: &str, upstreams: &[Upstream], mut client: TcpStream, already: &[u8]) {
    let Some(mut up) = connect_any(shared, route, upstreams).await else { return };
    if !already.is_empty() && up.write_all(already).await.is_err() {
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut up).await {
        tracing::debug!(route, "gateway: forwarded connection ended: {e}");
    }
}

/// The TCP and UDP listeners of port routes, kept in step with the configuration.
#[derive(Default)]
pub struct PortListeners {
    tcp: HashMap<u16, JoinHandle<()>>,
    udp: HashMap<u16, JoinHandle<()>>,
}

impl std::fmt::Debug for PortListeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortListeners").field("tcp", &self.tcp.keys()).field("udp", &self.udp.keys()).finish()
    }
}

impl PortListeners {
    /// Opens listeners for new ports on `ip`, closes those of ports no longer routed. Returns
    /// the ports that could not be bound, with why.
    pub async fn reconcile(&mut self, shared: &Arc<Shared>, ip: std::net::IpAddr, tcp: &[u16], udp: &[u16]) -> Vec<String> {
        let mut errors = Vec::new();
        self.tcp.retain(|p, h| {
            tcp.contains(p) || {
                h.abort();
                false
            }
        });
        self.udp.retain(|p, h| {
            udp.contains(p) || {
                h.abort();
                false
            }
        });
        for &port in tcp {
            if self.tcp.get(&port).is_some_and(|h| !h.is_finished()) {
                continue;
            }
            match TcpListener::bind((ip, port)).await {
                Ok(l) => {
                    self.tcp.insert(port, tokio::spawn(tcp_loop(shared.clone(), l, port)));
                }
                Err(e) => errors.push(format!("tcp/{port}: cannot listen on {ip}:{port}: {e}")),
            }
        }
        for &port in udp {
            if self.udp.get(&port).is_some_and(|h| !h.is_finished()) {
                continue;
            }
            match UdpSocket::bind((ip, port)).await {
                Ok(s) => {
                    self.udp.insert(port, tokio::spawn(udp_loop(shared.clone(), Arc::new(s), port)));
                }
                Err(e) => errors.push(format!("udp/{port}: cannot listen on {ip}:{port}: {e}")),
            }
        }
        errors
    }

    pub fn stop(&mut self) {
        for (_, h) in self.tcp.drain().chain(self.udp.drain()) {
            h.abort();
        }
    }
}

async fn tcp_loop(shared: Arc<Shared>, listener: TcpListener, port: u16) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(guard) = shared.conns.try_open(shared.snapshot().config.limits.max_connections) else {
            shared.metrics.connections_refused.inc();
            continue;
        };
        let _ = client.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let Some(route) = shared.snapshot().table.by_port(false, port).cloned() else { return };
            forward(&shared, &route.label(), route.upstreams(), client, &[]).await;
        });
    }
}

/// One client's UDP session: a socket connected to the upstream chosen for it.
type Sessions = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

async fn udp_loop(shared: Arc<Shared>, socket: Arc<UdpSocket>, port: u16) {
    let sessions: Sessions = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else { continue };
        let existing = sessions.lock().unwrap_or_else(|e| e.into_inner()).get(&client).cloned();
        let up = match existing {
            Some(up) => up,
            None => {
                if sessions.lock().unwrap_or_else(|e| e.into_inner()).len() >= MAX_UDP_SESSIONS {
                    continue;
                }
                let Some(route) = shared.snapshot().table.by_port(true, port).cloned() else { continue };
                let order = candidates(route.upstreams(), shared.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed), |a| {
                    shared.pool.is_suspect(a)
                });
                let Some(&addr) = order.first() else { continue };
                let bind: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
                let Ok(up) = UdpSocket::bind(bind).await else { continue };
                if up.connect(addr).await.is_err() {
                    shared.metrics.upstream_error(&route.label(), crate::metrics::UpstreamError::Connect);
                    continue;
                }
                let up = Arc::new(up);
                sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(client, up.clone());
                tokio::spawn(udp_return(socket.clone(), up.clone(), client, sessions.clone()));
                up
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

/// Upstream → client for one session, until it has been idle for [`UDP_SESSION_IDLE`].
async fn udp_return(listen: Arc<UdpSocket>, up: Arc<UdpSocket>, client: SocketAddr, sessions: Sessions) {
    let mut buf = vec![0u8; 65536];
    while let Ok(Ok(n)) = tokio::time::timeout(UDP_SESSION_IDLE, up.recv(&mut buf)).await {
        let _ = listen.send_to(&buf[..n], client).await;
    }
    sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&client);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello, as rustls' client writes it.
    fn client_hello(sni: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut c = rustls::ClientConnection::new(Arc::new(cfg), sni.to_owned().try_into().unwrap()).unwrap();
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn sni_is_read_and_bytes_kept() {
        let hello = client_hello("Pass.Example.org");
        let (mut a, mut b) = tokio::io::duplex(64);
        let h2 = hello.clone();
        // dribbled in small pieces
        tokio::spawn(async move {
            for c in h2.chunks(7) {
                a.write_all(c).await.unwrap();
            }
            a.write_all(b"after").await.unwrap();
        });
        let (seen, sni) = read_client_hello(&mut b).await.unwrap();
        assert_eq!(sni.as_deref(), Some("pass.example.org"));
        assert!(seen.starts_with(&hello));
        let mut p = Prefixed::new(seen.clone(), b);
        let mut all = vec![0u8; seen.len()];
        p.read_exact(&mut all).await.unwrap();
        assert_eq!(all, seen);
    }

    #[tokio::test]
    async fn garbage_is_not_tls() {
        let mut input: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(read_client_hello(&mut input).await, Err(HelloError::NotTls(_))));
        let mut empty: &[u8] = b"";
        assert!(matches!(read_client_hello(&mut empty).await, Err(HelloError::Closed)));
    }
}
