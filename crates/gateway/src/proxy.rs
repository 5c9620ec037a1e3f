//! One HTTP request through the gateway: the route by host (which must agree with the SNI the
//! connection was opened for), the route's limits, the upstream request (hop-by-hop headers
//! out, forwarding headers in), the healthy upstreams tried in round-robin order (another one
//! only when the request was not sent, or when it is idempotent and bodiless), streaming both
//! ways, WebSocket (HTTP/1.1 Upgrade) tunnels, and the access log and metrics when it ends.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;

use crate::body::{BoxError, Counted, Exchange, KeepUnfinished, ProxyBody, boxed};
use crate::config::{Route, RouteKind};
use crate::headers::{self, Forwarding};
use crate::limits::InFlight;
use crate::metrics::{AccessRecord, UpstreamError, access_log_enabled, now_rfc3339};
use crate::pages::error_page;
use crate::routes::candidates;
use crate::server::Shared;
use crate::upstream::SendError;

/// The connection a request came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub client: SocketAddr,
    /// `Some` for HTTPS: the SNI the client sent (none if it sent none).
    pub tls_sni: Option<Option<String>>,
}

/// What the access log and metrics need, filled as the request goes.
struct Log {
    rec: AccessRecord,
    start: Instant,
    exchange: Arc<Exchange>,
    in_flight: InFlight,
}

impl Log {
    /// Wraps the response body so that the record is finished when it ends (the body and the
    /// record in one box).
    fn finish<B>(mut self, shared: &Arc<Shared>, resp: Response<B>) -> Response<ProxyBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        self.rec.status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        let shared = shared.clone(); // (one Arc, where the metrics are eight)
        let body = Counted::response(body, self.exchange.clone(), move || {
            let Log { mut rec, start, exchange, in_flight } = self;
            exchange.response_done();
            rec.bytes_in = exchange.bytes_in();
            rec.bytes_out = exchange.bytes_out();
            rec.duration = start.elapsed();
            shared.metrics.finished(&rec);
            rec.log();
            drop(in_flight);
        });
        Response::from_parts(parts, boxed(body))
    }
}

/// Serves one request that arrived on the HTTPS listener. What needs no waiting (the route,
/// its limits, the upstream request) is done now; the future returned only waits for the
/// upstream. Kept apart because that future is boxed and moved per request: an `async fn`
/// keeps its arguments, and every local that may still be live at an await, for its whole
/// life (the request's head among them, twice), which took this one past the allocator's
/// small-size cache (1.5 KiB; now about a third of that).
pub fn handle(
    shared: Arc<Shared>,
    conn: &ConnInfo,
    req: Request<Incoming>,
    in_flight: InFlight,
) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
    // `prepare` runs on the connection's task (hyper calls the service there, and spawns the
    // future for an HTTP/2 stream): a panic in it would end every stream of the connection,
    // where one in the future ends its own. Caught, it fails this request alone.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepare(&shared, conn, req, in_flight))) {
        Ok(Prepared::Forward(log, pending)) => futures_util::future::Either::Left(forward(shared, log, pending)),
        Ok(Prepared::Answered(resp)) => futures_util::future::Either::Right(std::future::ready(resp)),
        Err(_) => {
            tracing::error!("gateway: a request could not be prepared (a bug: the panic is above)");
            let page = error_page(StatusCode::INTERNAL_SERVER_ERROR, "The gateway failed on this request (a bug, logged); try again.");
            futures_util::future::Either::Right(std::future::ready(page))
        }
    }
}

/// What [`prepare`] made of a request. (Returned once and taken apart at once: not worth a box.)
#[allow(clippy::large_enum_variant)]
enum Prepared {
    /// To the upstream, recorded by the log.
    Forward(Log, Pending),
    /// Answered by the gateway (refused: no route, a limit, a bad request).
    Answered(Response<ProxyBody>),
}

/// The exchange with the upstreams, under way: the replica that answered, and its response.
type Sending = Pin<Box<dyn Future<Output = Result<(SocketAddr, Response<Incoming>), Failure>> + Send>>;

/// A request ready to go upstream: sent by `sending`, and what its answer needs.
struct Pending {
    host: String,
    timeout: Duration,
    max_body: Option<u64>,
    client_upgrade: Option<(HeaderValue, hyper::upgrade::OnUpgrade)>,
    extended_connect: bool,
    sending: Sending,
}

/// The record of a request refused with `status`, saying `what` (in its page and its log).
fn failed(mut log: Log, shared: &Arc<Shared>, status: StatusCode, what: String) -> Response<ProxyBody> {
    let page = error_page(status, &what);
    log.rec.error = Some(what);
    log.finish(shared, page)
}

/// Everything before the upstream: the route by host, its limits, the upstream request and
/// the order of replicas to try; or the answer when the request goes no further.
fn prepare(shared: &Arc<Shared>, conn: &ConnInfo, req: Request<Incoming>, in_flight: InFlight) -> Prepared {
    let exchange = Arc::new(Exchange::default());
    let mut req = req.map(|b| KeepUnfinished::new(b, exchange.clone()));
    let host = headers::request_host(req.uri(), req.headers());
    // Only the access log shows the request's time, method, host, path and version: not
    // copied when no one reads the log (the metrics need the route, status, sizes and time).
    let logged = access_log_enabled();
    let mut log = Log {
        rec: AccessRecord {
            time: if logged { now_rfc3339() } else { String::new() },
            client: conn.client.ip().to_canonical(),
            method: if logged { req.method().to_string() } else { String::new() },
            host: if logged { host.clone().unwrap_or_default() } else { String::new() },
            path: if logged { req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned() } else { String::new() },
            version: if logged { version_name(req.version()).to_owned() } else { String::new() },
            status: 0,
            route: "-".into(),
            upstream: None,
            bytes_in: 0,
            bytes_out: 0,
            duration: Default::default(),
            error: None,
        },
        start: Instant::now(),
        exchange,
        in_flight,
    };
    macro_rules! fail {
        ($status:expr, $what:expr) => {
            return Prepared::Answered(failed(log, shared, $status, $what))
        };
    }

    let Some(host) = host else { fail!(StatusCode::BAD_REQUEST, "The request names no host (Host header or :authority).".into()) };
    let snapshot = shared.snapshot();
    if let Some(sni) = &conn.tls_sni
        && !sni_agrees(shared, sni.as_deref(), &host)
    {
        fail!(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "This connection was opened for {}, which does not cover {host}; open a new connection for it.",
                sni.as_deref().unwrap_or("no name")
            )
        )
    }
    let Some(route) = snapshot.table.lookup(&host).cloned() else {
        fail!(StatusCode::BAD_GATEWAY, format!("No route for this host: the gateway serves nothing at {host}."))
    };
    log.rec.route = route.label();
    let RouteKind::Http(http) = &route.kind else {
        fail!(StatusCode::MISDIRECTED_REQUEST, format!("{host} is served by TLS pass-through: open a connection with SNI {host}."))
    };
    if let Some(rl) = http.rate_limit
        && !shared.limiter.allow(&log.rec.route, conn.client.ip(), rl)
    {
        let mut resp =
            error_page(StatusCode::TOO_MANY_REQUESTS, &format!("Too many requests from {} for {host}; try again shortly.", log.rec.client));
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        log.rec.error = Some("rate limited".into());
        return Prepared::Answered(log.finish(shared, resp));
    }
    if let Some(max) = http.max_body {
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            fail!(StatusCode::PAYLOAD_TOO_LARGE, format!("The request body is larger than {host} accepts ({max} bytes)."))
        }
    }

    // Read before the hop-by-hop headers go: `Connection: host` names Host itself.
    let authority = headers::request_authority(req.uri(), req.headers());
    let mut client_upgrade = headers::strip_hop_by_hop(req.headers_mut()).map(|proto| (proto, hyper::upgrade::on(&mut req)));
    // HTTP/2 extended CONNECT (RFC 8441): a WebSocket over one stream, an HTTP/1.1 upgrade upstream.
    let extended_connect = req.method() == hyper::Method::CONNECT && req.extensions().get::<hyper::ext::Protocol>().is_some();
    if extended_connect {
        let proto = req.extensions().get::<hyper::ext::Protocol>().map(|p| p.as_str().to_owned()).unwrap_or_default();
        let Ok(proto) = HeaderValue::from_str(&proto) else {
            fail!(StatusCode::BAD_REQUEST, "The :protocol of this CONNECT is not a valid token.".into())
        };
        client_upgrade = Some((proto, hyper::upgrade::on(&mut req)));
    }
    let (mut parts, body) = req.into_parts();
    join_cookies(&mut parts.headers);
    let proto = if conn.tls_sni.is_some() { "https" } else { "http" };
    let authority_text = authority.as_ref().and_then(|a| a.to_str().ok());
    headers::add_forwarding(
        &mut parts.headers,
        &Forwarding {
            client: conn.client.ip(),
            proto,
            host: authority_text.unwrap_or(&host),
            host_value: authority_text.and(authority.as_ref()),
        },
    );
    if let Some(a) = authority {
        parts.headers.insert(header::HOST, a);
    }
    if let Some((p, _)) = &client_upgrade {
        headers::set_upgrade(&mut parts.headers, p.clone());
    }
    if extended_connect {
        parts.method = hyper::Method::GET;
        if !parts.headers.contains_key(header::SEC_WEBSOCKET_KEY) {
            parts.headers.insert(header::SEC_WEBSOCKET_KEY, headers::websocket_key(fastrand::u128(..)));
        }
    }
    // Origin-form upstream (RFC 9112 §3.2.1); HTTP/1.1 clients send it already.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() || parts.uri.path().is_empty() {
        parts.uri = parts.uri.path_and_query().map_or("/", |p| p.as_str()).parse().unwrap_or_default();
    }
    parts.version = Version::HTTP_11;
    let bodiless = hyper::body::Body::is_end_stream(&body);
    headers::length_follows_body(&mut parts.headers, hyper::body::Body::size_hint(&body));
    let body = Counted::request(body, log.exchange.clone(), http.max_body);
    let order = candidates(&http.upstreams, shared.turn.fetch_add(1, Ordering::Relaxed), |a| shared.pool.is_suspect(a));
    if order.is_empty() {
        fail!(StatusCode::SERVICE_UNAVAILABLE, format!("No healthy replica: every replica behind {host} is failing its health check."))
    }
    // A bodiless idempotent request may be sent again after a failure, to another upstream.
    let replay = (order.len() > 1 && bodiless && headers::idempotent(&parts.method)).then(|| {
        let mut r = Request::new(());
        *r.method_mut() = parts.method.clone();
        *r.uri_mut() = parts.uri.clone();
        *r.headers_mut() = parts.headers.clone();
        Box::new(r)
    });
    let upstream_req = Request::from_parts(parts, boxed(body));

    let connect_timeout = snapshot.config.limits.upstream_connect_timeout.min(http.timeout);
    let (timeout, max_body) = (http.timeout, http.max_body);
    let sending = Box::pin(send(shared.clone(), route, order, Box::new(upstream_req), replay, connect_timeout));
    Prepared::Forward(log, Pending { host, timeout, max_body, client_upgrade, extended_connect, sending })
}

/// Waits for the upstream's answer to a prepared request (within the route's timeout), and
/// passes it on, or says what failed.
/// (A function returning an `async` block, not an `async fn`: the block uses what it captures
/// in place, where an `async fn` would keep a second copy of its arguments.)
#[allow(clippy::manual_async_fn)]
fn forward(shared: Arc<Shared>, mut log: Log, pending: Pending) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
    async move {
        let host = &pending.host;
        let timeout = pending.timeout;
        macro_rules! fail {
            ($status:expr, $what:expr) => {
                return failed(log, &shared, $status, $what)
            };
        }
        let (addr, resp) = match tokio::time::timeout(timeout, pending.sending).await {
            Err(_) => {
                shared.metrics.upstream_error(&log.rec.route, UpstreamError::Timeout);
                fail!(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("The upstream timed out: no response from the replicas of {host} within {timeout:?}.")
                )
            }
            Ok(Err(_)) if log.exchange.exceeded() => {
                fail!(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("The request body is larger than {host} accepts ({} bytes).", pending.max_body.unwrap_or(0))
                )
            }
            Ok(Err(Failure::Refused(e))) => {
                fail!(StatusCode::BAD_GATEWAY, format!("The upstream refused the connection: no replica of {host} could be reached ({e})."))
            }
            Ok(Err(Failure::Removed)) => {
                fail!(
                    StatusCode::BAD_GATEWAY,
                    format!("The upstream went away: the replica of {host} this request was sent to left the route before it answered.")
                )
            }
            Ok(Err(Failure::Broken(e))) => {
                fail!(
                    StatusCode::BAD_GATEWAY,
                    format!("The upstream failed: the connection to a replica of {host} broke before it answered ({e}).")
                )
            }
            Ok(Ok(pair)) => pair,
        };
        log.rec.upstream = Some(addr);
        let tunnel_guard = log.in_flight.another();
        let resp = respond(resp, pending.client_upgrade, pending.extended_connect, tunnel_guard);
        log.finish(&shared, resp)
    }
}

/// The HTTP version as the access log writes it.
fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// Whether a request for `host` may use a connection opened with SNI `sni`: the same name, or a
/// name the same certificate covers (browsers reuse HTTP/2 connections that way).
fn sni_agrees(shared: &Shared, sni: Option<&str>, host: &str) -> bool {
    let Some(sni) = sni else { return true };
    if sni.eq_ignore_ascii_case(host) {
        return true;
    }
    let certs = shared.resolver.current();
    match (certs.select(sni), certs.select(host)) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
fn join_cookies(h: &mut hyper::HeaderMap) {
    let all: Vec<&str> = h.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
    if all.len() > 1
        && let Ok(v) = HeaderValue::from_str(&all.join("; "))
    {
        h.insert(header::COOKIE, v);
    }
}

enum Failure {
    Refused(std::io::Error),
    Broken(hyper::Error),
    /// The replica it was sent to left the route before it answered.
    Removed,
}

/// Tries the upstreams in order: on to the next when the request was not sent (connection
/// refused), or when it failed but can be replayed (idempotent, bodiless). Failures are
/// counted for `route`. (An `async` block, as [`forward`]'s; the requests come boxed, see
/// [`Pool::send`](crate::upstream::Pool::send).)
#[allow(clippy::manual_async_fn)]
fn send(
    shared: Arc<Shared>,
    route: Arc<Route>,
    order: Vec<SocketAddr>,
    req: Box<Request<ProxyBody>>,
    replay: Option<Box<Request<()>>>,
    connect_timeout: std::time::Duration,
) -> impl Future<Output = Result<(SocketAddr, Response<Incoming>), Failure>> + Send + 'static {
    async move {
        let mut req = Some(req);
        let mut last = None;
        for &addr in &order {
            let r = match (req.take(), &replay) {
                (Some(r), _) => r,
                (None, Some(template)) => {
                    let mut r = Request::new(crate::body::empty());
                    *r.method_mut() = template.method().clone();
                    *r.uri_mut() = template.uri().clone();
                    *r.headers_mut() = template.headers().clone();
                    Box::new(r)
                }
                (None, None) => break,
            };
            match shared.pool.send(addr, r, connect_timeout).await {
                Ok(resp) => return Ok((addr, resp)),
                Err(SendError::Connect(e, back)) => {
                    shared.metrics.upstream_error(&route.label(), UpstreamError::Connect);
                    tracing::debug!(%addr, "gateway: upstream connect failed: {e}");
                    req = Some(back);
                    last = Some(Failure::Refused(e));
                }
                Err(SendError::Failed(e)) => {
                    shared.metrics.upstream_error(&route.label(), UpstreamError::Failed);
                    tracing::debug!(%addr, "gateway: upstream failed: {e}");
                    last = Some(Failure::Broken(e));
                }
                Err(SendError::Removed) => {
                    shared.metrics.upstream_error(&route.label(), UpstreamError::Failed);
                    tracing::debug!(%addr, "gateway: upstream left the route before it answered");
                    last = Some(Failure::Removed);
                }
                Err(SendError::Gone(back)) => {
                    tracing::debug!(%addr, "gateway: upstream left the route before the request was sent");
                    req = Some(back);
                    last = Some(Failure::Removed);
                }
            }
        }
        Err(last.unwrap_or_else(|| Failure::Refused(std::io::Error::other("no upstream tried"))))
    }
}

/// The upstream's response as the client gets it; a 101 to an upgrade the client asked for
/// becomes a tunnel between the two upgraded connections.
/// A tunnel opened by HTTP/2 extended CONNECT is answered 200 without the upgrade headers
/// (RFC 8441 §5). A tunnel counts as a request in flight on its connection (`in_flight`)
/// while it is open, so an HTTP/2 connection carrying one is not closed as idle.
fn respond(
    mut resp: Response<Incoming>,
    client_upgrade: Option<(HeaderValue, hyper::upgrade::OnUpgrade)>,
    extended_connect: bool,
    in_flight: InFlight,
) -> Response<Either<Incoming, ProxyBody>> {
    let upstream_side = (resp.status() == StatusCode::SWITCHING_PROTOCOLS).then(|| hyper::upgrade::on(&mut resp));
    let (mut parts, body) = resp.into_parts();
    let upgrade = headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(upstream_side) = upstream_side {
        let (Some((_, client_side)), Some(proto)) = (client_upgrade, upgrade) else {
            return error_page(StatusCode::BAD_GATEWAY, "The upstream failed: it switched protocols without being asked to.")
                .map(Either::Right);
        };
        if extended_connect {
            parts.status = StatusCode::OK;
            parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
        } else {
            headers::set_upgrade(&mut parts.headers, proto);
        }
        tokio::spawn(async move {
            let _in_flight = in_flight;
            match tokio::try_join!(client_side, upstream_side) {
                Ok((c, u)) => {
                    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                        tracing::debug!("gateway: upgraded connection ended: {e}");
                    }
                }
                Err(e) => tracing::debug!("gateway: upgrade failed: {e}"),
            }
        });
        return Response::from_parts(parts, Either::Right(crate::body::empty()));
    }
    headers::length_follows_body(&mut parts.headers, hyper::body::Body::size_hint(&body));
    Response::from_parts(parts, Either::Left(body))
}
