//! 50 MB downloads and uploads through the gateway with real `curl`, over HTTP/1.1 and HTTP/2,
//! checked by SHA-256 on the other side; the test process's peak memory shows the bodies
//! stream (nothing holds a whole body). One test in its own binary, so that nothing else moves
//! the peak.

mod support;

use atoll_gateway::GatewayConfig;
use sha2::{Digest, Sha256};
use support::*;

const SIZE: u64 = 50 << 20;

/// The process's peak resident memory so far, in bytes (VmHWM).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_each_way_stream_without_buffering() {
    let pki = Pki::new();
    let up = TestUpstream::start("a").await;
    let cfg = GatewayConfig {
        routes: vec![http_route(&["files.example.test"], vec![up.up()])],
        certificates: vec![pki.cert(&["files.example.test"])],
        ..Default::default()
    };
    let gw = TestGateway::start(cfg).await;
    // Warm up (TLS, pools, first allocations) before taking the baseline.
    assert_eq!(curl(&pki, &gw, "files.example.test", "/big?n=100000", &[]).status, 200);
    let upload = pki.dir.path().join("upload");
    {
        let mut f = std::fs::File::create(&upload).unwrap();
        let mut off = 0;
        while off < SIZE {
            let len = (SIZE - off).min(1 << 20) as usize;
            std::io::Write::write_all(&mut f, &content(off, len)).unwrap();
            off += len as u64;
        }
    }
    let expected = sha256_of_content(SIZE);
    let before = peak_rss();
    for proto in ["--http1.1", "--http2"] {
        let down = pki.dir.path().join("down");
        let port = gw.https().port();
        let status = std::process::Command::new("curl")
            .args(["-sS", proto, "--resolve", &format!("files.example.test:{port}:127.0.0.1"), "--cacert"])
            .arg(&pki.ca_file)
            .arg("-o")
            .arg(&down)
            .args(["-w", "%{http_code}"])
            .arg(format!("https://files.example.test:{port}/big?n={SIZE}"))
            .output()
            .expect("curl must be installed");
        assert_eq!(String::from_utf8_lossy(&status.stdout), "200", "{proto}: {}", String::from_utf8_lossy(&status.stderr));
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(&down).unwrap();
        let n = std::io::copy(&mut f, &mut h).unwrap();
        assert_eq!((n, hex::encode(h.finalize())), (SIZE, expected.clone()), "{proto}: download");

        let r = curl(&pki, &gw, "files.example.test", "/upload", &[proto, "-T", upload.to_str().unwrap()]);
        assert_eq!(r.status, 200, "{proto}: {}", r.stderr);
        assert_eq!(String::from_utf8(r.body).unwrap(), format!("{expected} {SIZE}"), "{proto}: upload as the upstream hashed it");
    }
    let grew = peak_rss().saturating_sub(before);
    eprintln!("peak memory grew by {} KiB over 4 × 50 MB transfers", grew / 1024);
    assert!(grew < 20 << 20, "peak memory grew by {} MiB: a body was buffered", grew >> 20);
}
