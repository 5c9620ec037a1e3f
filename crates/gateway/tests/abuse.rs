//! Hostile clients: slowloris (headers dribbled, a ClientHello never finished), 1000 idle
//! connections, the connection cap, idle keep-alive connections, oversized headers, garbage
//! instead of a TLS handshake, HTTP/2 rapid reset, and h2load. After each, the gateway still
//! serves a real `curl`.

mod support;

use std::time::{Duration, Instant};

use atoll_gateway::{GatewayConfig, Limits};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "app.example.test";

async fn gateway(pki: &Pki, up: &TestUpstream, limits: Limits) -> TestGateway {
    TestGateway::start(GatewayConfig { routes: vec![http_route(&[HOST], vec![up.up()])], certificates: vec![pki.cert(&[HOST])], limits })
        .await
}

fn served(pki: &Pki, gw: &TestGateway) {
    for proto in ["--http1.1", "--http2"] {
        let r = curl(pki, gw, HOST, "/id", &[proto]);
        assert_eq!((r.status, r.body.as_slice()), (200, b"a".as_slice()), "{proto}: {}", r.stderr);
    }
}

/// Waits (at most `within`) for the peer to close: a read returns 0 or fails.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("still open after {within:?} (read so far: {:?})", String::from_utf8_lossy(&got)),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_and_others_are_served() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let limits =
        Limits { header_read_timeout: Duration::from_secs(1), tls_handshake_timeout: Duration::from_secs(1), ..Default::default() };
    let gw = gateway(&pki, &up, limits).await;

    // Headers dribbled one line every 200 ms: cut off after the header read timeout.
    let mut s = pki.connect(gw.https(), HOST, &["http/1.1"]).await;
    s.write_all(format!("GET /id HTTP/1.1\r\nHost: {HOST}\r\n").as_bytes()).await.unwrap();
    let start = Instant::now();
    let (mut r, mut w) = tokio::io::split(s);
    let dribble = tokio::spawn(async move {
        for i in 0..100 {
            if w.write_all(format!("X-Slow-{i}: a\r\n").as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // Meanwhile, others are served.
    served(&pki, &gw);
    let got = closed_within(&mut r, Duration::from_secs(5)).await;
    assert!(start.elapsed() >= Duration::from_millis(900), "cut off after {:?}", start.elapsed());
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "{got:?}");
    dribble.abort();
    assert_eq!(up.served.load(std::sync::atomic::Ordering::Relaxed), 2, "the dribbled request never reached the upstream");

    // A ClientHello never finished: cut off after the handshake timeout.
    let mut tcp = TcpStream::connect(gw.https()).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    closed_within(&mut tcp, Duration::from_secs(5)).await;
    // Nothing at all: the same.
    let mut tcp = TcpStream::connect(gw.https()).await.unwrap();
    closed_within(&mut tcp, Duration::from_secs(5)).await;
    served(&pki, &gw);
}

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_stop_others() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let limits = Limits { tls_handshake_timeout: Duration::from_secs(60), ..Default::default() };
    let gw = gateway(&pki, &up, limits).await;
    served(&pki, &gw);
    // 1000 that never start a handshake
    let mut raw = Vec::new();
    for _ in 0..1000 {
        raw.push(TcpStream::connect(gw.https()).await.unwrap());
    }
    served(&pki, &gw);
    // 1000 that finished a TLS handshake and sent nothing (memory measured per 1000)
    drop(raw);
    let before = rss();
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(pki.connect(gw.https(), HOST, &["http/1.1"]).await);
    }
    served(&pki, &gw);
    let text = gw.handle.metrics().encode();
    let open: u64 = text.lines().find_map(|l| l.strip_prefix("atoll_gateway_connections_open ")).unwrap().parse().unwrap();
    assert!(open >= 1000, "{open} connections open");
    eprintln!(
        "1000 idle TLS connections: {} KiB more resident memory for the process (gateway and the test's clients)",
        rss().saturating_sub(before) / 1024
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_and_idle_ones_time_out() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let limits = Limits { max_connections: 20, idle_timeout: Duration::from_millis(500), ..Default::default() };
    let gw = gateway(&pki, &up, limits).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(gw.https()).await.unwrap());
    }
    // Wait until the gateway has counted them (accepting is asynchronous).
    while !gw.handle.metrics().encode().contains("atoll_gateway_connections_open 20") {
        tokio::task::yield_now().await;
    }
    let mut extra = TcpStream::connect(gw.https()).await.unwrap();
    closed_within(&mut extra, Duration::from_secs(5)).await;
    assert!(gw.handle.metrics().encode().contains("atoll_gateway_connections_refused_total 1"));
    drop(held);
    while !gw.handle.metrics().encode().contains("atoll_gateway_connections_open 0") {
        tokio::task::yield_now().await;
    }
    served(&pki, &gw);

    // A keep-alive connection that stays idle is closed after idle_timeout.
    let mut s = pki.connect(gw.https(), HOST, &["http/1.1"]).await;
    s.write_all(format!("GET /id HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).await.unwrap();
    let (head, _) = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let start = Instant::now();
    closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(start.elapsed() >= Duration::from_millis(400), "closed after {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let gw = gateway(&pki, &up, Limits { max_header_bytes: 16 * 1024, ..Default::default() }).await;
    let big = format!("X-Big: {}", "a".repeat(20 * 1024));
    let r = curl(&pki, &gw, HOST, "/id", &["--http1.1", "-H", &big]);
    assert_eq!(r.status, 431, "{}", r.stderr);
    let r = curl(&pki, &gw, HOST, "/id", &["--http2", "-H", &big]);
    assert_eq!(r.status, 431, "{}", r.stderr);
    assert_eq!(up.served.load(std::sync::atomic::Ordering::Relaxed), 0);
    served(&pki, &gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_handshake_leaves_the_gateway_up() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let gw = gateway(&pki, &up, Limits::default()).await;
    let mut rng_state = 0x2545F4914F6CDD1Du64;
    let mut noise = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let mut inputs: Vec<Vec<u8>> = vec![
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes(),
        b"\x16\x03\x01\xff\xff".to_vec(),
        [&[0x16u8, 0x03, 0x03, 0x00, 0x30, 0x01, 0x00, 0x00, 0x2c][..], &[0u8; 44][..]].concat(),
        vec![0x80, 0x2e, 0x01, 0x00, 0x02],
    ];
    for _ in 0..20 {
        inputs.push((0..(noise() % 3000) as usize).map(|_| noise() as u8).collect());
    }
    for input in &inputs {
        let mut tcp = TcpStream::connect(gw.https()).await.unwrap();
        let _ = tcp.write_all(input).await;
        closed_within(&mut tcp, Duration::from_secs(15)).await;
    }
    // A handshake for a name with no certificate fails too.
    let tcp = TcpStream::connect(gw.https()).await.unwrap();
    let err = tokio_rustls::TlsConnector::from(pki.client(&["h2"])).connect("unknown.example.test".try_into().unwrap(), tcp).await;
    assert!(err.is_err());
    let failures: u64 = gw
        .handle
        .metrics()
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix("atoll_gateway_tls_handshake_failures_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= inputs.len() as u64, "{failures} handshake failures counted");
    served(&pki, &gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_closes_the_abuser_and_others_are_served() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let gw = gateway(&pki, &up, Limits::default()).await;
    let tls = pki.connect(gw.https(), HOST, &["h2"]).await;
    let (mut client, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut sent = 0;
    for _ in 0..10_000 {
        let req = hyper::Request::get(format!("https://{HOST}/hang")).body(()).unwrap();
        let Ok(c) = client.clone().ready().await else { break };
        client = c;
        let Ok((_resp, mut stream)) = client.send_request(req, false) else { break };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await.expect("the abusive connection is closed").unwrap();
    let err = ended.expect_err("closed with an error");
    let reached = up.served.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "rapid reset: {sent} streams opened and reset before the gateway closed the connection ({err}); {reached} reached the upstream"
    );
    // GOAWAY ENHANCE_YOUR_CALM, or (when the client was still writing) the broken pipe after it
    assert!(err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || err.is_io(), "{err}");
    assert!(sent < 10_000, "the abuser was never cut off");
    served(&pki, &gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_many_streams_all_succeed() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let gw = gateway(&pki, &up, Limits::default()).await;
    let port = gw.https().port();
    let out = std::process::Command::new("h2load")
        .args(["-n", "2000", "-c", "10", "-m", "20", &format!("--connect-to=127.0.0.1:{port}"), &format!("https://{HOST}:{port}/id")])
        .output()
        .expect("h2load must be installed (nghttp2-client, scripts/install-deps.sh)");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("2000 succeeded, 0 failed, 0 errored"), "{text}");
    assert!(text.contains("status codes: 2000 2xx"), "{text}");
    assert!(text.contains("Application protocol: h2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_header_block_dribbled_is_cut_off_as_idle() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let gw = gateway(&pki, &up, Limits { idle_timeout: Duration::from_secs(1), ..Default::default() }).await;
    let s = pki.connect(gw.https(), HOST, &["h2"]).await;
    let (mut r, mut w) = tokio::io::split(s);
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    w.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    w.write_all(&frame(4, 0, 0, &[])).await.unwrap(); // SETTINGS
    w.write_all(&frame(1, 0, 1, &[0x82])).await.unwrap(); // HEADERS without END_HEADERS: :method GET
    let start = Instant::now();
    let dribble = tokio::spawn(async move {
        for _ in 0..100 {
            // CONTINUATION without END_HEADERS, one field each (`x: y`, literal, not indexed)
            if w.write_all(&frame(9, 0, 1, &[0x00, 0x01, b'x', 0x01, b'y'])).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
    });
    served(&pki, &gw);
    let got = closed_within(&mut r, Duration::from_secs(8)).await;
    // By the idle timeout (GOAWAY NO_ERROR, then dropped half the timeout later since the
    // client answers no PING), before h2's own limit on CONTINUATION frames (the fourth, at
    // 2.7 s) would have.
    let after = start.elapsed();
    assert!(after >= Duration::from_millis(900) && after < Duration::from_millis(2600), "cut off after {after:?}: {got:02x?}");
    dribble.abort();
    served(&pki, &gw);
}
