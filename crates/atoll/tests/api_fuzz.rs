//! The API against a property-based HTTP fuzzer driven by the checked-in OpenAPI document
//! (schemathesis): no 5xx, no hang, every response (status, content type, body) as the
//! document says. The daemon runs in its own network namespace, so generated pulls fail fast
//! instead of reaching the Internet; socat bridges schemathesis's TCP to the unix socket.

use std::path::Path;
use std::process::{Command, Stdio};

use atoll_testkit::daemon::Daemon;
use atoll_testkit::{free_port, require, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

/// Kills the bridge when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn schemathesis_finds_no_server_error_hang_or_undocumented_response() {
    let st = require("schemathesis");
    let socat = require("socat");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    // Something to find: an image, a network, a volume and a container.
    let image = d.import_busybox(dir.path());
    d.ok(&["network", "create", "fuzznet"]);
    d.ok(&["volume", "create", "fuzzvol"]);
    // It stops on SIGTERM (a bare `sleep` as PID 1 would ignore it and make every stop wait).
    d.ok(&["run", "-d", "--name", "fuzzbox", image, "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]);
    // And an island, with a public address (a documentation one, on a veth of the
    // daemon's namespace), so the island's routes have something to answer about.
    let (ok, out) = d.ns().sh(
        "ip link add pub0 type veth peer name pub1 && ip addr add 203.0.113.1/24 dev pub0 && ip link set pub1 up && ip link set pub0 up",
    );
    assert!(ok, "{out}");
    d.ok(&["init", "--name", "fuzz", "--node-name", "fuzz", "--public", "203.0.113.1"]);
    // And a stack with a service to scale and list.
    let compose = dir.path().join("compose.yaml");
    std::fs::write(&compose, format!("services:\n  web:\n    image: {image}\n    command: [sleep, '1d']\n")).unwrap();
    d.ok(&["stack", "deploy", "-c", compose.to_str().unwrap(), "fuzz"]);

    let port = free_port();
    let _bridge = Child(
        Command::new(socat)
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
            .arg(format!("UNIX-CONNECT:{}", d.socket.display()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(10, "socat to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/openapi.json");
    // More examples or another seed shake out rarer faults: `ATOLL_API_FUZZ_EXAMPLES=300
    // ATOLL_API_FUZZ_SEED=7 cargo test -p atoll --test api_fuzz`.
    let examples = std::env::var("ATOLL_API_FUZZ_EXAMPLES").unwrap_or_else(|_| "30".into());
    let seed = std::env::var("ATOLL_API_FUZZ_SEED").unwrap_or_else(|_| "1".into());
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    // `ATOLL_API_FUZZ_ONLY=REGEX` fuzzes only the paths it matches, and
    // `ATOLL_API_FUZZ_REPORT=DIR` keeps a VCR cassette of every request there.
    let mut extra: Vec<String> = Vec::new();
    if let Ok(only) = std::env::var("ATOLL_API_FUZZ_ONLY") {
        extra.extend(["--include-path-regex".into(), only]);
    }
    if let Ok(dir) = std::env::var("ATOLL_API_FUZZ_REPORT") {
        extra.extend(["--report".into(), "vcr".into(), "--report-dir".into(), dir]);
    }
    let out = Command::new(st)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", &tests)
        .arg("--config-file")
        .arg(tests.join("schemathesis.toml"))
        .args(["run", doc.to_str().unwrap(), "--url", &format!("http://127.0.0.1:{port}")])
        .args(["--max-examples", &examples, "--request-timeout", "30", "--seed", &seed])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
        // Streams that last until the client leaves, waits that last until a container stops
        // (by design), tar uploads it cannot build, and leaving the island (which would take
        // away what the island's other routes are tested on).
        .args(&extra)
        .args(["--exclude-path-regex", "^/v1/events$|/attach$|/wait$|/run$|^/v1/images/import$|^/v1/island/leave$"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis failed:\n{report}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
    // And the daemon is still up and serves the CLI (the fuzzer may have removed things).
    d.ok(&["info"]);
    d.ok(&["ps", "-a"]);
}
