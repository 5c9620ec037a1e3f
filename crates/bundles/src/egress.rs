//! Egress for sandboxed bundles: a container that declared `permissions.net` hosts still sits
//! on the `--internal` network (no route out of the host), and reaches those hosts through a
//! forward proxy of its own on that network's gateway address (`HTTP_PROXY`/`HTTPS_PROXY`
//! point at it). The proxy takes `CONNECT host:port` (HTTPS, and any TCP) and absolute-form
//! `GET http://host/…` requests, resolves the name itself (the internal network's resolver
//! answers no outside name), and lets through only the declared hosts ([`allows`]) at public
//! addresses ([`forbidden`]: never this host, loopback, link-local or private ranges, even if
//! declared); anything else gets a 403 that says so, and the attempt is logged on the target
//! `atoll_bundles::denied`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Whether `net` (a manifest's `permissions.net`: `host`, `host:port`, `*.domain`, an IP,
/// `[v6]:port`) lets a connection to `host` on `port` through. A host without a port allows
/// every port (Deno's `--allow-net` reads them the same way). Pure.
pub fn allows(net: &[String], host: &str, port: u16) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
    net.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        let (pattern, want_port) = if let Ok(sa) = entry.parse::<SocketAddr>() {
            (sa.ip().to_string(), Some(sa.port()))
        } else if entry.parse::<IpAddr>().is_ok() {
            (entry.clone(), None)
        } else {
            match entry.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse::<u16>().ok()),
                None => (entry.clone(), None),
            }
        };
        let pattern = pattern.trim_start_matches('[').trim_end_matches(']').to_owned();
        let host_ok = match pattern.strip_prefix("*.") {
            Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
            None => host == pattern,
        };
        host_ok && want_port.is_none_or(|p| p == port)
    })
}

/// Whether `ip` is an address a bundle may never reach, declared or not: this host and its
/// loopback, link-local (cloud metadata services), private, shared (CGNAT) and unique-local
/// ranges (the island's mesh and containers among them), multicast, broadcast, unspecified.
/// Checked on the resolved address, so a name that resolves there (DNS rebinding) is refused
/// too. Pure.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || (seg[0] & 0xfe00) == 0xfc00 || (seg[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Told of each connection refused, in words (the bundle's log).
pub type OnDenied = Arc<dyn Fn(String) + Send + Sync>;

/// A bundle's egress proxy; dropping it closes it.
pub struct EgressProxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EgressProxy {
    /// Listens on `ip` (a port the OS picks) for bundle `bundle`'s connections to `net`. The
    /// address may not be up yet (a bridge comes up with its first container): the socket
    /// binds with `IP_FREEBIND`.
    pub async fn start(ip: IpAddr, bundle: String, net: Vec<String>, on_denied: Option<OnDenied>) -> std::io::Result<EgressProxy> {
        let listener = crate::serve::listen_freebind(SocketAddr::new(ip, 0))?;
        let addr = listener.local_addr()?;
        let cx = Arc::new((bundle, net, on_denied));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let cx = cx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let cx = cx.clone();
                        async move { Ok::<_, Infallible>(handle(&cx.0, &cx.1, cx.2.as_ref(), req).await) }
                    });
                    // Half-closing clients (nc, some proxies' CONNECT users) still get their answer.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .half_close(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(EgressProxy { addr, task })
    }

    /// The environment that points a program at it.
    pub fn env(&self) -> Vec<(String, String)> {
        let url = format!("http://{}", self.addr);
        ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"].iter().map(|k| ((*k).to_owned(), url.clone())).collect()
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

fn answer(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r
}

async fn handle(bundle: &str, net: &[String], on_denied: Option<&OnDenied>, req: Request<Incoming>) -> Response<Body> {
    let (host, port) = match (req.method(), req.uri().host()) {
        (&Method::CONNECT, _) => match req.uri().authority() {
            Some(a) => (a.host().to_owned(), a.port_u16().unwrap_or(443)),
            None => return answer(StatusCode::BAD_REQUEST, "CONNECT needs host:port\n".into()),
        },
        (_, Some(h)) => (h.to_owned(), req.uri().port_u16().unwrap_or(80)),
        _ => return answer(StatusCode::BAD_REQUEST, "a proxy request names its host (absolute form)\n".into()),
    };
    let deny = |why: String| {
        if let Some(f) = on_denied {
            f(why.clone());
        }
        answer(StatusCode::FORBIDDEN, format!("{why}\n"))
    };
    if !allows(net, &host, port) {
        tracing::warn!(target: "atoll_bundles::denied", bundle, host = %host, port, "denied: a connection to a host the bundle did not declare");
        return deny(format!("denied: {host}:{port} is not in the bundle's permissions.net"));
    }
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(a) => a.collect(),
        Err(e) => return answer(StatusCode::BAD_GATEWAY, format!("{host}: {e}\n")),
    };
    let (refused, allowed): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.into_iter().partition(|a| forbidden(a.ip()));
    if allowed.is_empty() {
        tracing::warn!(target: "atoll_bundles::denied", bundle, host = %host, port, addrs = ?refused, "denied: a connection to this host, a private network or loopback");
        return deny(format!("denied: {host}:{port} is on this host, a private network or loopback, which bundles may not reach"));
    }
    // The vetted addresses themselves: no second lookup that could answer otherwise.
    let upstream = match TcpStream::connect(allowed.as_slice()).await {
        Ok(s) => s,
        Err(e) => return answer(StatusCode::BAD_GATEWAY, format!("{host}:{port}: {e}\n")),
    };
    if req.method() == Method::CONNECT {
        tokio::spawn(async move {
            if let Ok(up) = hyper::upgrade::on(req).await {
                let mut client = TokioIo::new(up);
                let mut upstream = upstream;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
        return Response::new(Empty::new().map_err(|never| match never {}).boxed());
    }
    // Absolute form: sent on in origin form over a connection of its own.
    let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await else {
        return answer(StatusCode::BAD_GATEWAY, format!("{host}:{port}: the HTTP handshake failed\n"));
    };
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    parts.uri = parts.uri.path_and_query().map_or("/", |p| p.as_str()).parse().unwrap_or_default();
    parts.headers.remove("proxy-connection");
    parts.headers.remove("proxy-authorization");
    match send.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(e) => answer(StatusCode::BAD_GATEWAY, format!("{host}:{port}: {e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn only_declared_hosts_and_ports_pass() {
        let n = net(&["api.example.com", "*.cdn.example.org:443", "10.0.0.5", "[::1]:8080", "db.example.net:5432"]);
        assert!(allows(&n, "api.example.com", 443) && allows(&n, "API.example.com.", 80));
        assert!(allows(&n, "img.cdn.example.org", 443) && !allows(&n, "img.cdn.example.org", 80));
        assert!(!allows(&n, "cdn.example.org", 443), "a wildcard is for names below the domain");
        assert!(!allows(&n, "evilcdn.example.org", 443));
        assert!(allows(&n, "10.0.0.5", 22) && !allows(&n, "10.0.0.6", 22));
        assert!(allows(&n, "[::1]", 8080) && !allows(&n, "::1", 8081));
        assert!(allows(&n, "db.example.net", 5432) && !allows(&n, "db.example.net", 5433));
        assert!(!allows(&n, "example.com", 443) && !allows(&[], "api.example.com", 443));
    }

    #[test]
    fn this_host_and_private_networks_are_never_reached() {
        for bad in [
            "127.0.0.1",
            "10.89.1.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(forbidden(bad.parse().unwrap()), "{bad}");
        }
        for good in ["1.1.1.1", "198.51.100.7", "2606:4700::1111"] {
            assert!(!forbidden(good.parse().unwrap()), "{good}");
        }
    }
}
