//! The gateway proxying HTTPS to in-process upstreams, driven by real `curl` (HTTP/1.1 and
//! HTTP/2) and small TLS clients: what the upstream sees, the redirect, error pages, failover,
//! WebSocket tunnels, TLS pass-through, TCP and UDP forwarding, and a route change with a
//! download and a WebSocket open.

mod support;

use std::time::Duration;

use atoll_gateway::{GatewayConfig, RateLimit, Route, RouteKind, Upstream, UpstreamError};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(pki: &Pki, routes: Vec<Route>) -> GatewayConfig {
    GatewayConfig { routes, certificates: vec![pki.cert(&["*.example.test"]), pki.cert(&["exact.example.test"])], ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sees_forwarding_headers_and_no_hop_by_hop_ones() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(config(&pki, vec![http_route(&["app.example.test"], vec![up.up()])])).await;
    for proto in ["--http1.1", "--http2"] {
        let r = curl(
            &pki,
            &gw,
            "app.example.test",
            "/headers?x=1",
            &[
                proto,
                "-H",
                "Connection: X-Private",
                "-H",
                "X-Private: secret",
                "-H",
                "Keep-Alive: 5",
                "-H",
                "X-Forwarded-For: 198.51.100.7",
            ],
        );
        assert_eq!(r.status, 200, "{proto}: {}", r.stderr);
        let seen = String::from_utf8(r.body).unwrap().to_ascii_lowercase();
        assert!(seen.starts_with("get /headers?x=1 http/1.1\n"), "{proto}: {seen}");
        let port = gw.https().port();
        assert!(seen.contains(&format!("\nhost: app.example.test:{port}\n")), "{proto}: {seen}");
        assert!(seen.contains("\nx-forwarded-for: 198.51.100.7, 127.0.0.1\n"), "{proto}: {seen}");
        assert!(seen.contains("\nx-forwarded-proto: https\n"), "{proto}: {seen}");
        assert!(seen.contains(&format!("\nx-forwarded-host: app.example.test:{port}\n")), "{proto}: {seen}");
        assert!(seen.contains(&format!("\nforwarded: for=127.0.0.1;proto=https;host=\"app.example.test:{port}\"\n")), "{proto}: {seen}");
        // (curl sends no Connection header over HTTP/2, where it is not allowed)
        if proto == "--http1.1" {
            assert!(!seen.contains("x-private"), "{proto}: a header named in Connection was forwarded: {seen}");
        }
        assert!(!seen.contains("keep-alive: 5"), "{proto}: {seen}");
    }
}

/// Regression: `Connection: host` made the hop-by-hop strip take the Host header before the
/// gateway read it, and the request went upstream without one (an HTTP/1.1 server answers 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_header_naming_host_does_not_take_the_host_away() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(config(&pki, vec![http_route(&["app.example.test"], vec![up.up()])])).await;
    let r = curl(&pki, &gw, "app.example.test", "/headers", &["--http1.1", "-H", "Connection: Host, X-Private", "-H", "X-Private: 1"]);
    assert_eq!(r.status, 200, "{}", r.stderr);
    let seen = String::from_utf8(r.body).unwrap().to_ascii_lowercase();
    assert!(seen.contains(&format!("\nhost: app.example.test:{}\n", gw.https().port())), "{seen}");
    assert!(!seen.contains("x-private"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_redirects_to_https_except_acme_challenges() {
    let pki = Pki::new();
    let gw = TestGateway::start(config(&pki, vec![])).await;
    let port = gw.handle.http_addr().port();
    let run = |path: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
                "--resolve",
                &format!("app.example.test:{port}:127.0.0.1"),
            ])
            .arg(format!("http://app.example.test:{port}{path}"))
            .output()
            .expect("curl must be installed");
        String::from_utf8(out.stdout).unwrap()
    };
    let https = gw.https().port();
    assert_eq!(run("/a/b?c=d"), format!("308 https://app.example.test:{https}/a/b?c=d"));
    assert_eq!(run("/.well-known/acme-challenge/token"), "404 ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_pages_say_what_failed() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let refused = refused_addr().await;
    let mut slow = http_route(&["slow.example.test"], vec![up.up()]);
    if let RouteKind::Http(h) = &mut slow.kind {
        h.timeout = Duration::from_millis(300);
    }
    let gw = TestGateway::start(config(
        &pki,
        vec![
            http_route(&["sick.example.test"], vec![Upstream { addr: up.addr, healthy: false }]),
            http_route(&["down.example.test"], vec![Upstream { addr: refused, healthy: true }]),
            slow,
        ],
    ))
    .await;
    for (host, path, status, words) in [
        ("nothing.example.test", "/", 502, "No route for this host"),
        ("sick.example.test", "/", 503, "No healthy replica"),
        ("down.example.test", "/", 502, "The upstream refused the connection"),
        ("slow.example.test", "/hang", 504, "The upstream timed out"),
    ] {
        let r = curl(&pki, &gw, host, path, &[]);
        assert_eq!(r.status, status, "{host}: {}", r.stderr);
        let page = String::from_utf8(r.body).unwrap();
        assert!(page.contains(words), "{host}: {page}");
    }
    assert_eq!(gw.handle.metrics().upstream_errors("slow.example.test", UpstreamError::Timeout), 1);
    assert_eq!(gw.handle.metrics().requests("sick.example.test", 503), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_over_when_an_upstream_is_down() {
    let pki = Pki::new();
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let refused = refused_addr().await;
    let ups = vec![a.up(), Upstream { addr: refused, healthy: true }, b.up()];
    let gw = TestGateway::start(config(&pki, vec![http_route(&["app.example.test"], ups)])).await;
    let mut failed = 0;
    let mut names = std::collections::BTreeMap::new();
    for i in 0..30 {
        // POST too: a refused connection means nothing was sent, so any method may go elsewhere.
        let extra: &[&str] = if i % 2 == 0 { &[] } else { &["-X", "POST", "--data", "x"] };
        let r = curl(&pki, &gw, "app.example.test", "/id", extra);
        if r.status != 200 {
            eprintln!("request {i} {extra:?} failed: {} {} {}", r.status, r.stderr, String::from_utf8_lossy(&r.body));
            failed += 1;
        }
        *names.entry(String::from_utf8(r.body).unwrap()).or_insert(0) += 1;
    }
    eprintln!("failover: {failed} of 30 requests failed, served by {names:?}");
    assert_eq!(failed, 0);
    assert_eq!(names.len(), 2, "both live upstreams serve: {names:?}");
    assert!(names.values().all(|n| *n >= 10), "round robin spreads the load: {names:?}");
    // The refused upstream is tried last for a few seconds after each refusal, so only the
    // first request (and one per few seconds, were the test slow) pays for it.
    let refusals = gw.handle.metrics().upstream_errors("app.example.test", UpstreamError::Connect);
    assert!((1..=3).contains(&refusals), "{refusals} refusals");
}

/// A replica whose host died keeps its connections open without answering; once the island
/// takes it out of the route, a request waiting on it is replayed on another replica (it is
/// idempotent and bodiless) instead of waiting for the route's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_on_an_upstream_removed_from_the_route_is_replayed_on_another() {
    let pki = std::sync::Arc::new(Pki::new());
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let mut gw = TestGateway::start(config(&pki, vec![http_route(&["app.example.test"], vec![a.up(), b.up()])])).await;
    let started = std::time::Instant::now();
    // Round robin: of two requests, one goes to `a` first, and hangs there.
    let reqs: Vec<_> = (0..2)
        .map(|_| {
            let (pki, port) = (pki.clone(), gw.https().port());
            tokio::task::spawn_blocking(move || curl_port(&pki, port, "app.example.test", "/stuck-if/a", &[]))
        })
        .collect();
    wait_until(|| a.served.load(std::sync::atomic::Ordering::Relaxed) == 1).await;
    gw.reconfigure(config(&pki, vec![http_route(&["app.example.test"], vec![b.up()])])).await;
    for r in reqs {
        let r = r.await.unwrap();
        assert_eq!((r.status, String::from_utf8_lossy(&r.body).into_owned()), (200, "b".to_owned()), "{}", r.stderr);
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "well before the route's timeout: {:?}", started.elapsed());
    assert_eq!(gw.handle.metrics().upstream_errors("app.example.test", UpstreamError::Failed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_does_not_answer_is_passed_over_after_the_connect_timeout() {
    let pki = Pki::new();
    let good = TestUpstream::start("good").await;
    // A listener whose accept queue is full: the kernel drops further SYNs, as a dead host would.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let black = socket.listen(0).unwrap();
    let black_addr = black.local_addr().unwrap();
    let mut fill = Vec::new();
    while let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(black_addr)).await {
        fill.push(s);
    }
    let mut cfg = config(&pki, vec![http_route(&["app.example.test"], vec![Upstream { addr: black_addr, healthy: true }, good.up()])]);
    cfg.limits.upstream_connect_timeout = Duration::from_millis(300);
    let gw = TestGateway::start(cfg).await;
    let start = std::time::Instant::now();
    let r = curl(&pki, &gw, "app.example.test", "/id", &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, b"good".as_slice()), "{}", r.stderr);
    assert!(start.elapsed() >= Duration::from_millis(300), "{:?}", start.elapsed());
    assert_eq!(gw.handle.metrics().upstream_errors("app.example.test", UpstreamError::Connect), 1);
    // Now suspect, it is tried last: the next requests do not wait.
    let start = std::time::Instant::now();
    for _ in 0..4 {
        assert_eq!(curl(&pki, &gw, "app.example.test", "/id", &[]).body, b"good");
    }
    assert_eq!(gw.handle.metrics().upstream_errors("app.example.test", UpstreamError::Connect), 1, "after {:?}", start.elapsed());
    drop(black);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_and_host_must_agree() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(config(&pki, vec![http_route(&["*.example.test", "exact.example.test"], vec![up.up()])])).await;
    // A connection for exact.example.test (its own certificate) asked for another name: 421.
    let mut s = pki.connect(gw.https(), "exact.example.test", &["http/1.1"]).await;
    s.write_all(b"GET /id HTTP/1.1\r\nHost: other.example.test\r\nConnection: close\r\n\r\n").await.unwrap();
    let (head, _) = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 421"), "{head}");
    // Both names under the same wildcard certificate: fine (HTTP/2 connection reuse).
    let mut s = pki.connect(gw.https(), "one.example.test", &["http/1.1"]).await;
    s.write_all(b"GET /id HTTP/1.1\r\nHost: two.example.test\r\nConnection: close\r\n\r\n").await.unwrap();
    let (head, _) = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunnelled() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(config(&pki, vec![http_route(&["app.example.test"], vec![up.up()])])).await;
    let mut ws = open_ws(&pki, &gw, "app.example.test").await;
    for i in 0..20 {
        echo(&mut ws, format!("message {i}").as_bytes()).await;
    }
    echo(&mut ws, &vec![7u8; 200_000]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_extended_connect() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let mut cfg = config(&pki, vec![http_route(&["app.example.test"], vec![up.up()])]);
    cfg.limits.idle_timeout = Duration::from_millis(300);
    let gw = TestGateway::start(cfg).await;
    let tls = pki.connect(gw.https(), "app.example.test", &["h2"]).await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    // One request first: the server's SETTINGS (ENABLE_CONNECT_PROTOCOL) have arrived after it.
    let get = hyper::Request::get("https://app.example.test/id").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    assert_eq!(send.send_request(get).await.unwrap().status(), 200);
    let mut req = hyper::Request::builder()
        .method(hyper::Method::CONNECT)
        .uri("https://app.example.test/ws")
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    req.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let mut resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert!(resp.headers().get("sec-websocket-accept").is_none() && resp.headers().get("upgrade").is_none());
    let mut io = TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap());
    for (i, msg) in [b"over h2".to_vec(), vec![9u8; 100_000]].into_iter().enumerate() {
        if i == 1 {
            // Longer than the idle timeout and its grace: an open tunnel is not idle.
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        io.write_all(&msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), io.read_exact(&mut back)).await.unwrap().unwrap();
        assert_eq!(back, msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_cap_and_rate_limit_per_route() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let mut capped = http_route(&["capped.example.test"], vec![up.up()]);
    let mut limited = http_route(&["limited.example.test"], vec![up.up()]);
    if let RouteKind::Http(h) = &mut capped.kind {
        h.max_body = Some(1000);
    }
    if let RouteKind::Http(h) = &mut limited.kind {
        h.rate_limit = Some(RateLimit { per_second: 0.01, burst: 3 });
    }
    let gw = TestGateway::start(config(&pki, vec![capped, limited, http_route(&["free.example.test"], vec![up.up()])])).await;
    let body = pki.dir.path().join("body");
    std::fs::write(&body, vec![b'x'; 5000]).unwrap();
    let data = format!("@{}", body.display());
    // declared length over the cap, and chunked (no length) over the cap
    assert_eq!(curl(&pki, &gw, "capped.example.test", "/upload", &["--data-binary", &data]).status, 413);
    let r = curl(&pki, &gw, "capped.example.test", "/upload", &["--http1.1", "-H", "Transfer-Encoding: chunked", "--data-binary", &data]);
    assert_eq!(r.status, 413, "{} {}", r.stderr, String::from_utf8_lossy(&r.body));
    assert_eq!(curl(&pki, &gw, "capped.example.test", "/upload", &["--data-binary", "small"]).status, 200);
    let statuses: Vec<u16> = (0..5).map(|_| curl(&pki, &gw, "limited.example.test", "/id", &[]).status).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert!((0..5).all(|_| curl(&pki, &gw, "free.example.test", "/id", &[]).status == 200), "no limit unless the route sets one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_change_keeps_a_download_and_a_websocket_open() {
    let pki = Pki::new();
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let mut gw = TestGateway::start(config(&pki, vec![http_route(&["app.example.test"], vec![a.up()])])).await;

    // A long download, read a little, over HTTP/2.
    let tls = pki.connect(gw.https(), "app.example.test", &["h2"]).await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let n: u64 = 32 << 20;
    let req =
        hyper::Request::get(format!("https://app.example.test/big?n={n}")).body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut hash = Sha256::new();
    let mut got = 0u64;
    while got < (1 << 20) {
        let f = body.frame().await.unwrap().unwrap();
        if let Some(d) = f.data_ref() {
            got += d.len() as u64;
            hash.update(d);
        }
    }
    let mut ws = open_ws(&pki, &gw, "app.example.test").await;
    echo(&mut ws, b"before").await;

    // The route moves to another upstream, a new route and certificate appear.
    let mut cfg = config(&pki, vec![http_route(&["app.example.test"], vec![b.up()]), http_route(&["new.other.test"], vec![b.up()])]);
    cfg.certificates.push(pki.cert(&["new.other.test"]));
    assert_eq!(gw.reconfigure(cfg).await.error, None);
    assert_eq!(curl(&pki, &gw, "app.example.test", "/id", &[]).body, b"b");
    assert_eq!(curl(&pki, &gw, "new.other.test", "/id", &[]).body, b"b");

    echo(&mut ws, b"after").await;
    while let Some(f) = body.frame().await {
        if let Some(d) = f.unwrap().data_ref() {
            got += d.len() as u64;
            hash.update(d);
        }
    }
    assert_eq!(got, n);
    assert_eq!(hex::encode(hash.finalize()), sha256_of_content(n));

    // A configuration that does not validate is refused; the one in force stays.
    let bad = GatewayConfig { routes: vec![http_route(&["bad host"], vec![])], ..Default::default() };
    let applied = gw.reconfigure(bad).await;
    assert!(applied.error.unwrap().contains("\"bad host\" is not a valid DNS name"));
    assert_eq!(curl(&pki, &gw, "app.example.test", "/id", &[]).body, b"b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_passthrough_by_sni_and_tcp_udp_forwarding() {
    let pki = Pki::new();
    // An upstream that terminates TLS itself: a gateway of its own with its own certificate.
    let inner_up = TestUpstream::start("inner").await;
    let inner = TestGateway::start(GatewayConfig {
        routes: vec![http_route(&["pass.example.test"], vec![inner_up.up()])],
        certificates: vec![pki.cert(&["pass.example.test"])],
        ..Default::default()
    })
    .await;
    let tcp_port = refused_addr().await.port();
    let udp_echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_up = udp_echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = udp_echo.recv_from(&mut buf).await {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = udp_echo.send_to(&reply, from).await;
        }
    });
    let udp_port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let up = TestUpstream::start("plain").await;
    let routes = vec![
        Route {
            hosts: vec!["pass.example.test".into()],
            kind: RouteKind::TlsPassthrough { upstreams: vec![Upstream { addr: inner.https(), healthy: true }] },
        },
        Route { hosts: vec![], kind: RouteKind::Tcp { listen_port: tcp_port, upstreams: vec![up.up()] } },
        Route { hosts: vec![], kind: RouteKind::Udp { listen_port: udp_port, upstreams: vec![Upstream { addr: udp_up, healthy: true }] } },
    ];
    let gw = TestGateway::start(config(&pki, routes)).await;

    // The certificate curl sees is the inner one (only it has pass.example.test); the outer
    // gateway holds none for that name.
    let r = curl(&pki, &gw, "pass.example.test", "/id", &["--http2"]);
    assert_eq!((r.status, r.body.as_slice()), (200, b"inner".as_slice()), "{}", r.stderr);

    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
    tcp.write_all(b"GET /id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200") && out.ends_with("plain"), "{out}");

    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(("127.0.0.1", udp_port)).await.unwrap();
    for i in 0..3 {
        let msg = format!("ping {i}");
        client.send(msg.as_bytes()).await.unwrap();
        let mut buf = [0u8; 100];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf)).await.expect("UDP echo within 5 s").unwrap();
        assert_eq!(&buf[..n], format!("echo:{msg}").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_and_metrics_per_route() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(config(&pki, vec![http_route(&["app.example.test"], vec![up.up()])])).await;
    for _ in 0..3 {
        assert_eq!(curl(&pki, &gw, "app.example.test", "/big?n=1000", &[]).status, 200);
    }
    assert_eq!(curl(&pki, &gw, "app.example.test", "/missing", &[]).status, 404);
    let text = gw.handle.metrics().encode();
    assert!(text.contains(r#"atoll_gateway_requests_total{route="app.example.test",code="200"} 3"#), "{text}");
    assert!(text.contains(r#"atoll_gateway_requests_total{route="app.example.test",code="404"} 1"#), "{text}");
    assert!(text.contains(r#"atoll_gateway_sent_bytes_total{route="app.example.test"} 3009"#), "{text}");
    assert!(text.contains(r#"atoll_gateway_request_duration_seconds_count{route="app.example.test"} 4"#), "{text}");
}

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// A current-thread runtime: every task of the gateway logs through this thread's subscriber.
#[tokio::test]
async fn access_log_is_one_json_line_per_request() {
    let captured = Captured::default();
    let c = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || c.clone())
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!("{}=info", atoll_gateway::ACCESS_LOG_TARGET)))
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(config(&pki, vec![http_route(&["app.example.test"], vec![up.up()])])).await;
    for (host, path) in [("app.example.test", "/big?n=1234"), ("else.example.test", "/x")] {
        let mut s = pki.connect(gw.https(), host, &["http/1.1"]).await;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
    }
    let lines = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l.trim()).expect(l)).collect();
            if lines.len() >= 2 {
                return lines;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("two access log lines");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (ok, bad) = (&lines[0], &lines[1]);
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["host"], "app.example.test");
    assert_eq!(ok["path"], "/big?n=1234");
    assert_eq!(ok["route"], "app.example.test");
    assert_eq!(ok["bytes_out"], 1234);
    assert_eq!(ok["client"], "127.0.0.1");
    assert_eq!(ok["upstream"], up.addr.to_string());
    assert!(ok["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(bad["status"], 502);
    assert_eq!(bad["route"], "-");
    assert!(bad["error"].as_str().unwrap().starts_with("No route for this host"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_is_not_forwarded_as_sent() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(config(&pki, vec![http_route(&["app.example.test"], vec![up.up()])])).await;
    let mut s = pki.connect(gw.https(), "app.example.test", &["http/1.1"]).await;
    // Read as chunked ("abc"; hyper then closes the connection, as RFC 9112 §6.3 allows); had
    // the Content-Length gone upstream, the upstream would have framed the body differently
    // and taken what follows as part of it.
    let smuggle = "POST /upload HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /id HTTP/1.1\r\nHost: app.example.test\r\nConnection: close\r\n\r\n";
    s.write_all(smuggle.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    let abc = hex::encode(Sha256::digest(b"abc"));
    assert!(out.contains(&format!("{abc} 3")), "the upstream got the chunked body: {out}");
    assert_eq!(up.served.load(std::sync::atomic::Ordering::Relaxed), 1);
}
