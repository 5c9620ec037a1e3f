//! End-to-end tests of observability: `atoll events` (a follower sees a container's lifecycle as
//! it happens; `--since`/`--until` replay and end), `/metrics` checked by promtool, `atoll stats`.
//! and `--since`/`--until` replay the kept events and end.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use atoll_testkit::daemon::Daemon;
use atoll_testkit::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

#[test]
fn a_follower_sees_start_and_die_with_the_exit_code_and_since_until_replays() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    let image = d.import_busybox(dir.path());
    // Following from a moment before anything happens: the replay and the live stream join
    // without a gap, so no event can slip between the follower's start and the first run.
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64().to_string();
    let mut follower = Command::new(BIN)
        .args(["events", "--json", "--since", &t0, "--filter", "type=container", "--filter", "container=ev"])
        .env("ATOLL_SOCKET", &d.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).unwrap());
        }
    });
    let mut seen: Vec<serde_json::Value> = Vec::new();
    d.ok(&["run", "-d", "--name", "ev", image, "sh", "-c", "trap 'exit 5' TERM; while true; do sleep 0.1; done"]);
    wait_for(30, "the follower to see the start", || {
        seen.extend(rx.try_iter());
        seen.iter().any(|e| e["action"] == "start")
    });
    d.ok(&["stop", "ev"]);
    d.ok(&["rm", "ev"]);
    wait_for(30, "the die event", || {
        seen.extend(rx.try_iter());
        seen.iter().any(|e| e["action"] == "destroy")
    });
    let actions: Vec<&str> = seen.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["create", "start", "die", "stop", "destroy"], "{seen:?}");
    let die = seen.iter().find(|e| e["action"] == "die").unwrap();
    assert_eq!(die["attributes"]["exitCode"], "5");
    assert_eq!(die["attributes"]["name"], "ev");
    let _ = follower.kill();
    let _ = follower.wait();

    // Replay: everything of the last minute, then the command ends by itself.
    let replay = d.ok(&["events", "--since", "1m", "--until", "0s"]);
    for want in ["container create", "container start", "container die", "exitCode=5", "container destroy"] {
        assert!(replay.contains(want), "{want:?} missing from:\n{replay}");
    }
    let r = d.fails(&["events", "--since", "yesterday-ish"]);
    assert!(r.stderr.contains("use an RFC 3339 time"), "{r:?}");
}

#[test]
fn metrics_pass_promtool_with_per_container_series_and_stats_show_usage() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    let image = d.import_busybox(dir.path());
    d.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "-m",
        "64m",
        "--label",
        "com.docker.compose.project=demo",
        image,
        "sh",
        "-c",
        "while true; do sleep 0.1; done",
    ]);
    let id = d.container("busy")["id"].as_str().unwrap().to_owned();
    let r = d.http("GET", "/metrics", None, b"");
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    let mut promtool = Command::new(atoll_testkit::require("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool: {}{}\n{text}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let labels = format!("{{id=\"{id}\",name=\"busy\",compose_project=\"demo\"}}");
    for series in [
        "atoll_container_cpu_seconds_total",
        "atoll_container_memory_usage_bytes",
        "atoll_container_memory_limit_bytes",
        "atoll_container_network_receive_bytes_total",
        "atoll_container_pids",
        "atoll_container_restarts_total",
    ] {
        assert!(text.contains(&format!("{series}{labels}")), "{series} missing:\n{text}");
    }
    assert!(text.contains(&format!("atoll_container_memory_limit_bytes{labels} 67108864")), "{text}");
    assert!(text.contains("atoll_api_requests_total{method=\"POST\",route=\"/v1/containers\",status=\"201\"} 1"), "{text}");

    let rows: serde_json::Value = serde_json::from_str(&d.ok(&["stats", "--no-stream", "--json"])).unwrap();
    let row = rows.as_array().unwrap().iter().find(|r| r["name"] == "busy").expect("busy in stats");
    assert!(row["pids"].as_u64().unwrap() >= 1 && row["memory_bytes"].as_u64().unwrap() > 0, "{row}");
    assert_eq!(row["memory_limit_bytes"], 64 << 20);
    let table = d.ok(&["stats", "--no-stream", "busy"]);
    assert!(table.starts_with("CONTAINER ID") && table.contains("busy"), "{table}");
}

#[test]
fn an_oom_kill_is_an_event_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    let image = d.import_busybox(dir.path());
    // A string that doubles until the 8 MiB limit stops it.
    let out = d.cli(&["run", "--name", "hog", "-m", "8m", image, "sh", "-c", "x=aaaaaaaa; while true; do x=\"$x$x\"; done"]);
    assert_eq!(out.code, Some(137), "{out:?}");
    assert_eq!(d.container("hog")["oom_killed"], true);
    let events = d.ok(&["events", "--since", "1m", "--until", "0s", "--filter", "container=hog"]);
    let actions: Vec<&str> = events.lines().map(|l| l.split_whitespace().nth(2).unwrap_or("")).collect();
    assert!(actions.ends_with(&["oom", "die"]), "{events}");
}
