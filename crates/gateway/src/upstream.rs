//! Connections to upstreams: HTTP/1.1 over TCP, kept alive in a pool per address. A connection
//! goes back to the pool as soon as its response head is in, and is taken again only once it is
//! ready (that response read to its end); one that was closed meanwhile gives the request back
//! unsent, and the next (or a new connection) takes it.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::ProxyBody;

/// How long a connection may wait in the pool: an older one is not used again (it is dropped
/// when [`Pool::take`] or a full pool's prune comes to it).
const IDLE: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream.
const MAX_IDLE_PER_UPSTREAM: usize = 128;

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made; the request was not sent and comes back.
    Connect(std::io::Error, Box<Request<ProxyBody>>),
    /// The request was (perhaps partly) sent and the connection failed before a response.
    Failed(hyper::Error),
    /// The request was sent, and the upstream left the configuration before it answered (its
    /// host died, most likely: its connections hang rather than fail).
    Removed,
    /// The upstream is not in the configuration (any more): the request was not sent and
    /// comes back.
    Gone(Box<Request<ProxyBody>>),
}

/// A pooled connection and since when it is in the pool (its last response may still be
/// streaming then: it is not ready until that ends).
type Idle = (Instant, SendRequest<ProxyBody>);

#[derive(Default)]
pub struct Pool {
    upstreams: Mutex<Upstreams>,
    suspects: Mutex<HashMap<SocketAddr, Instant>>,
}

#[derive(Default)]
struct Upstreams {
    /// By address, looked up once per request: from the first [`Pool::retain_upstreams`] on,
    /// exactly the configured upstreams (before it, any address gets an entry when first used).
    by_addr: HashMap<SocketAddr, Arc<UpstreamConns>>,
    configured: bool,
}

/// One upstream's idle connections, and the signal that it left the configuration.
#[derive(Default)]
struct UpstreamConns {
    idle: Mutex<Vec<Idle>>,
    /// Set, then `removed` told, when the upstream leaves the configuration: a request that
    /// looks after the signal went still sees it.
    gone: AtomicBool,
    /// Told when the upstream leaves the configuration: requests waiting on it give up.
    removed: tokio::sync::Notify,
}

/// How long an upstream that refused a connection is tried only after the others.
const SUSPECT_FOR: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

impl Pool {
    /// A ready connection of the upstream, the most recently pooled first. Closed ones, and ready
    /// ones pooled longer than [`IDLE`] ago, are dropped on the way; busy ones stay. It stops
    /// at the first it can use: with many requests in flight the list is long (each stream of
    /// an HTTP/2 client holds a connection), and older entries wait for [`Pool::put`]'s prune.
    fn take(up: &UpstreamConns) -> Option<SendRequest<ProxyBody>> {
        let mut list = up.idle.lock().unwrap_or_else(|e| e.into_inner());
        let mut now = None;
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let (since, tx) = &list[i];
            let since = *since;
            if tx.is_closed() {
                list.remove(i);
            } else if tx.is_ready() {
                let (_, tx) = list.remove(i);
                if now.get_or_insert_with(Instant::now).duration_since(since) < IDLE {
                    return Some(tx);
                }
            }
        }
        None
    }

    /// Pools `tx` with its response head in (no task waits for it to be ready: [`Pool::take`]
    /// checks). Past [`MAX_IDLE_PER_UPSTREAM`] it is dropped, and its connection closes once
    /// the response it carries has ended (hyper finishes the exchange in flight). An upgraded
    /// connection never becomes ready, and goes once it is seen closed.
    fn put(up: &UpstreamConns, tx: SendRequest<ProxyBody>) {
        let mut list = up.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if list.len() >= MAX_IDLE_PER_UPSTREAM {
            // Closed ones, and ready ones pooled longer than IDLE ago, make room.
            list.retain(|(since, tx)| !tx.is_closed() && (now.duration_since(*since) < IDLE || !tx.is_ready()));
        }
        if list.len() < MAX_IDLE_PER_UPSTREAM {
            list.push((now, tx));
        }
    }

    /// Forgets every upstream not in `live`: its idle connections are closed, and requests
    /// waiting for its response give up ([`SendError::Removed`]), to be replayed on another
    /// replica where that is safe. Responses already streaming, and tunnels, go on.
    pub fn retain_upstreams(&self, live: &HashSet<SocketAddr>) {
        let mut ups = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        ups.by_addr.retain(|a, up| {
            let keep = live.contains(a);
            if !keep {
                up.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
                up.gone.store(true, Ordering::Release);
                up.removed.notify_waiters();
            }
            keep
        });
        for &a in live {
            ups.by_addr.entry(a).or_default();
        }
        ups.configured = true;
    }

    /// The connections of `addr`, or None if it is not configured (any more: a request that
    /// began on the previous configuration). A request in flight to an upstream that leaves
    /// keeps them: a connection it pools afterwards goes with the last request.
    fn upstream(&self, addr: SocketAddr) -> Option<Arc<UpstreamConns>> {
        let mut ups = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        if ups.configured {
            return ups.by_addr.get(&addr).cloned();
        }
        Some(ups.by_addr.entry(addr).or_default().clone())
    }

    /// Whether `addr` refused (or did not answer) a connection in the last few seconds.
    pub fn is_suspect(&self, addr: SocketAddr) -> bool {
        let s = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        s.get(&addr).is_some_and(|until| Instant::now() < *until)
    }

    pub fn suspect(&self, addr: SocketAddr) {
        let mut s = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|_, until| Instant::now() < *until);
        s.insert(addr, Instant::now() + SUSPECT_FOR);
    }

    fn connected(&self, addr: SocketAddr) {
        let mut s = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        if !s.is_empty() {
            s.remove(&addr);
        }
    }

    /// Connects to `addr` within `timeout`; a failure marks it suspect.
    pub async fn connect(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
        let r = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {timeout:?}"))),
        };
        match &r {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                self.connected(addr);
            }
            Err(_) => self.suspect(addr),
        }
        r
    }

    /// Sends `req` (origin-form URI, HTTP/1.1) to `addr` and returns the response head; a new
    /// connection must be made within `connect_timeout`. The request comes boxed (and goes
    /// back so when it was not sent): the futures that carry it are boxed per request, and
    /// small boxes are cheap ones. (For that too an `async` block, not an `async fn`, which
    /// would keep a second copy of its arguments, and the handshake in a box of its own.)
    pub fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Box<Request<ProxyBody>>,
        connect_timeout: Duration,
    ) -> impl Future<Output = Result<Response<Incoming>, SendError>> + Send + 'static {
        let pool = self.clone();
        async move {
            let Some(up) = pool.upstream(addr) else {
                return Err(SendError::Gone(req));
            };
            let removed = up.removed.notified();
            tokio::pin!(removed);
            // Registered before `gone` is read: a removal after this point wakes it.
            removed.as_mut().enable();
            if up.gone.load(Ordering::Acquire) {
                return Err(SendError::Gone(req));
            }
            loop {
                // A pooled connection, else a new one.
                let (mut tx, fresh) = match Self::take(&up) {
                    Some(tx) => (tx, false),
                    None => match Box::pin(pool.open(addr, connect_timeout)).await {
                        Ok(tx) => (tx, true),
                        Err(e) => return Err(SendError::Connect(e, req)),
                    },
                };
                let sent = tokio::select! {
                    r = tx.try_send_request(*req) => r,
                    () = &mut removed => return Err(SendError::Removed),
                };
                match sent {
                    Ok(resp) => {
                        Self::put(&up, tx);
                        return Ok(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        // A pooled connection closed meanwhile: the next one takes it.
                        Some(back) if !fresh => *req = back,
                        // A new connection that took nothing: as good as refused.
                        Some(back) => {
                            *req = back;
                            return Err(SendError::Connect(std::io::Error::other(e.into_error()), req));
                        }
                        None => return Err(SendError::Failed(e.into_error())),
                    },
                }
            }
        }
    }

    /// A new connection to `addr` (made within `connect_timeout`), its HTTP/1.1 handshake done
    /// and its task spawned.
    async fn open(&self, addr: SocketAddr, connect_timeout: Duration) -> std::io::Result<SendRequest<ProxyBody>> {
        let stream = self.connect(addr, connect_timeout).await?;
        let (tx, conn) = http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, "gateway: upstream connection ended: {e}");
            }
        });
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a request that began on the previous configuration and went on to an
    /// upstream that configuration change removed made a fresh pool entry that no removal
    /// would ever signal, and hung until the route's timeout (a 504 where another replica
    /// could answer).
    #[tokio::test]
    async fn an_upstream_no_longer_configured_gives_the_request_back_unsent() {
        let pool = Arc::new(Pool::default());
        let (a, b): (SocketAddr, SocketAddr) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        // Taken before the change: marked gone by it.
        let held = pool.upstream(a).unwrap();
        pool.retain_upstreams(&HashSet::from([b]));
        assert!(held.gone.load(Ordering::Acquire));
        let req = Request::builder().uri("/x").body(crate::body::empty()).unwrap();
        match pool.send(a, Box::new(req), Duration::from_secs(1)).await {
            Err(SendError::Gone(back)) => assert_eq!(back.uri(), "/x"),
            other => panic!("expected the request back unsent, got {:?}", other.map(|r| r.status())),
        }
        assert!(!pool.upstreams.lock().unwrap().by_addr.contains_key(&a), "no entry is kept for it");
    }
}
