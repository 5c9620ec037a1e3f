//! End-to-end tests of the daemon and its API: one daemon per data dir, the socket, JSON
//! errors with their cause chain, the OpenAPI document, request limits, the CLI without a
//! daemon.

use std::path::Path;

use atoll_testkit::daemon::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

fn daemon() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    (dir, d)
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let (dir, d) = daemon();
    let out = std::process::Command::new(BIN)
        .args(["daemon", "--data-dir"])
        .arg(&d.data_dir)
        .arg("--socket")
        .arg(dir.path().join("other.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked by another process (pid "), "{err}");
    // A second daemon on the same socket (another data dir) is refused too, and the first
    // one keeps serving.
    let out = std::process::Command::new(BIN)
        .args(["daemon", "--data-dir"])
        .arg(dir.path().join("data2"))
        .arg("--socket")
        .arg(&d.socket)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listening"), "{}", String::from_utf8_lossy(&out.stderr));
    d.ok(&["images"]);
}

/// Regression: `atoll … | head -1` panicked ("failed printing to stdout: Broken pipe") once
/// the reader was gone; it ends quietly with the status a shell gives SIGPIPE.
#[test]
fn the_cli_ends_quietly_when_its_reader_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, "services:\n  a:\n    image: busybox\n").unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(BIN)
        .args(["compose", "-f", file.to_str().unwrap(), "config"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_cli_says_clearly_when_no_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN).args(["images"]).env("ATOLL_SOCKET", dir.path().join("none.sock")).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "exit code 3 means: no daemon");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to the Atoll daemon") && err.contains("atoll daemon"), "{err}");
    // --socket works as well as the environment variable.
    let out = std::process::Command::new(BIN).arg("--socket").arg(dir.path().join("x.sock")).arg("info").output().unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn a_stale_socket_from_a_killed_daemon_is_replaced() {
    let (_dir, mut d) = daemon();
    d.kill9();
    assert!(d.socket.exists(), "kill -9 leaves the socket file");
    d.start_again();
    d.ok(&["info"]);
}

#[test]
fn api_errors_are_json_with_a_cause_chain_and_the_right_status() {
    let (_dir, d) = daemon();
    // The caller's mistakes are 4xx, with a JSON body.
    let r = d.http("POST", "/v1/images/pull", Some("application/json"), b"{not json");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.json()["message"].as_str().unwrap().len() > 5);
    let r = d.http("POST", "/v1/images/pull", Some("application/json"), br#"{"reference":"UPPER/Case"}"#);
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("lowercase"), "{:?}", r.json());
    let r = d.http("POST", "/v1/images/pull", Some("text/plain"), br#"{"reference":"x"}"#);
    assert_eq!(r.status, 415);
    let r = d.http("GET", "/v1/images/inspect?reference=nope", None, b"");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "no such image: nope");
    assert!(r.json()["causes"].is_array());
    let r = d.http("GET", "/v1/images/inspect", None, b"");
    assert_eq!(r.status, 400);
    let r = d.http("GET", "/v1/no/such/route", None, b"");
    assert_eq!(r.status, 404);
    assert!(r.json()["message"].is_string());
    // Oversized JSON bodies are refused before they are read whole.
    let big = format!(r#"{{"reference":"{}"}}"#, "a".repeat(100 * 1024));
    let r = d.http("POST", "/v1/images/pull", Some("application/json"), big.as_bytes());
    assert_eq!(r.status, 413);
    // An unreachable registry is the upstream's failure, reported in the stream with its cause.
    let r = d.http("POST", "/v1/images/pull", Some("application/json"), br#"{"reference":"127.0.0.1:1/nothing:here"}"#);
    assert_eq!(r.status, 200);
    let last: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&r.body).lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "error");
    assert!(last["causes"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().contains("cannot reach registry 127.0.0.1:1")), "{last}");
    // And the daemon is still up.
    d.ok(&["images"]);
}

#[test]
fn the_served_openapi_document_is_the_checked_in_one() {
    let (_dir, d) = daemon();
    let r = d.http("GET", "/v1/openapi.json", None, b"");
    assert_eq!(r.status, 200);
    let served = r.json();
    let checked_in: serde_json::Value = serde_json::from_str(include_str!("../../api/openapi.json")).unwrap();
    assert!(served == checked_in, "the served document differs from crates/api/openapi.json");
    assert_eq!(served["openapi"].as_str().unwrap().chars().next(), Some('3'));
    for path in ["/v1/images", "/v1/images/pull", "/v1/images/import", "/v1/auth", "/v1/info"] {
        assert!(served["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
}

#[test]
fn info_version_and_completions() {
    let (_dir, d) = daemon();
    let info: serde_json::Value = serde_json::from_str(&d.ok(&["info", "--json"])).unwrap();
    assert_eq!(info["data_dir"], d.data_dir.display().to_string());
    assert!(d.ok(&["version"]).contains("Server: 0.1.0"));
    assert!(d.ok(&["completions", "bash"]).contains("_atoll"));
}

#[test]
fn json_logs_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(Path::new(BIN), dir.path(), &["--log-format", "json"]);
    assert_eq!(d.terminate(), Some(0));
    let log = d.log_text();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.iter().any(|v| v["message"] == "atoll daemon ready"), "{log}");
    assert!(lines.iter().any(|v| v["message"] == "OCI runtime selected" && v["runtime"].is_string()), "{log}");
}

/// Counts the daemon's open file descriptors.
fn fds(d: &Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", d.pid())).unwrap().count()
}

#[test]
fn slow_silent_and_oversized_clients_cannot_exhaust_the_daemon() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let (_dir, d) = daemon();
    let before = fds(&d);
    // More clients than the daemon serves at once, all saying nothing or stalling mid-header.
    let mut idle: Vec<UnixStream> = Vec::new();
    for i in 0..600 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /v1/version HTTP/1.1\r\nHost: atoll\r\nX-Slow: ").unwrap();
        }
        idle.push(s);
    }
    // A real client still gets an answer: the stalled ones are dropped after the header timeout.
    let start = std::time::Instant::now();
    let v = d.ok(&["version", "--json"]);
    assert!(v.contains("\"server\""), "{v}");
    assert!(start.elapsed() < std::time::Duration::from_secs(30), "answered only after {:?}", start.elapsed());
    // The stalled connections were closed by the daemon (reads see EOF), not kept forever.
    let mut buf = [0u8; 256];
    let s = &mut idle[0];
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let n = s.read(&mut buf).expect("the daemon closes a stalled connection (a read timeout here means it did not)");
    assert!(n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    drop(idle);
    // Oversized headers: 431, and the daemon goes on.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let huge = format!("GET /v1/version HTTP/1.1\r\nHost: atoll\r\nX-Big: {}\r\n\r\n", "a".repeat(100 << 10));
    let _ = s.write_all(huge.as_bytes());
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    d.ok(&["version"]);
    // Nothing leaked: the descriptors come back to where they were (a few may still be closing).
    atoll_testkit::wait_for(30, "the daemon's descriptors to come back", || fds(&d) <= before + 4);
}
