//! Load: 100 containers created and started at once through the API, 50 clients following
//! their logs at once, then all removed at once; nothing is lost (every follower sees its
//! container's line) and nothing leaks (containers, mounts, links, rules, cgroups, the
//! daemon's descriptors), and the daemon's peak memory stays bounded. Prints throughput and
//! peak RSS (`bench/load.sh` runs it in release mode for BENCHMARKS.md). Run as root.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use atoll_testkit::daemon::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");
const CONTAINERS: usize = 100;
const FOLLOWERS: usize = 50;

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Runs `f(i)` for every i in 0..n on its own thread, all at once.
fn all_at_once<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let f = &f;
                s.spawn(move || f(i))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_hundred_containers_and_fifty_log_followers_at_once_lose_and_leak_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    let image = d.import_busybox(dir.path());
    d.ok(&["network", "create", "loadnet"]);
    let pid = d.pid();
    // Idle, after a first container: what a daemon keeps open once it has run one (its
    // standby shim's pipes, the ruleset monitor) is not a leak.
    d.ok(&["run", "--rm", "--network", "loadnet", image, "true"]);
    atoll_testkit::wait_for(10, "the first container's links to go", || d.ns().atoll_links().is_empty());
    let (rss_idle, fds_idle) = (status_kib(pid, "VmRSS:"), fds(pid));

    // Create and start 100 at once (bridged, each with a published port).
    let start = Instant::now();
    let ids: Vec<String> = all_at_once(CONTAINERS, |i| {
        let port = (20000 + i).to_string();
        let script = format!("echo ready-{i}; trap 'exit 0' TERM; while :; do sleep 1; done");
        let p = format!("{port}:80");
        d.ok(&["run", "-d", "--name", &format!("load{i}"), "--network", "loadnet", "-p", &p, image, "sh", "-c", &script]).trim().to_owned()
    });
    let started = start.elapsed();
    assert_eq!(ids.iter().collect::<std::collections::BTreeSet<_>>().len(), CONTAINERS);
    let running: Vec<serde_json::Value> = serde_json::from_str(&d.ok(&["ps", "--json"])).unwrap();
    assert_eq!(running.len(), CONTAINERS);

    // 50 followers at once: each sees its container's line, then keeps following.
    let followers: Vec<_> = (0..FOLLOWERS)
        .map(|i| {
            let mut child = Command::new(BIN)
                .args(["logs", "-f", &format!("load{i}")])
                .env("ATOLL_SOCKET", &d.socket)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let out = BufReader::new(child.stdout.take().unwrap());
            (i, child, out)
        })
        .collect();
    let followers: Vec<_> = followers
        .into_iter()
        .map(|(i, child, mut out)| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), format!("ready-{i}"));
            (child, out)
        })
        .collect();
    let peak_running = status_kib(pid, "VmHWM:");

    // Remove all at once: the followers end with their containers.
    let start = Instant::now();
    all_at_once(CONTAINERS, |i| d.ok(&["rm", "-f", &format!("load{i}")]));
    let removed = start.elapsed();
    for (mut child, _) in followers {
        child.wait().unwrap();
    }

    // Nothing leaked.
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
    let ns = d.ns();
    atoll_testkit::wait_for(30, "links to go (veths are deleted in the background)", || ns.atoll_links().is_empty());
    let (_, rules) = ns.sh("nft list ruleset");
    assert!(!rules.contains("atoll"), "rules left:\n{rules}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let data = d.data_dir.display().to_string();
    assert!(!mounts.lines().any(|l| l.contains(&format!("{data}/containers/"))), "container mounts left");
    for id in &ids {
        assert!(!Path::new("/sys/fs/cgroup/atoll").join(id).exists(), "cgroup of {id} left");
        assert!(!Path::new("/sys/fs/cgroup/memory/atoll").join(id).exists(), "memory cgroup of {id} left");
    }
    assert_eq!(std::fs::read_dir(d.data_dir.join("containers")).unwrap().count(), 0);
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while fds(pid) > fds_idle + 4 {
        if Instant::now() > deadline {
            let open: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .flatten()
                .map(|e| {
                    format!(
                        "{} -> {}",
                        e.file_name().to_string_lossy(),
                        std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default()
                    )
                })
                .collect();
            panic!("the daemon's descriptors did not come back: {} open, {fds_idle} idle:\n{}", open.len(), open.join("\n"));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let peak = status_kib(pid, "VmHWM:");
    // Bounded: well under what 100 containers would cost if each held megabytes in the daemon.
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB");
    println!(
        "LOAD: {CONTAINERS} containers created+started concurrently in {:.2} s ({:.1}/s); removed in {:.2} s ({:.1}/s); \
         {FOLLOWERS} log followers; daemon RSS idle {:.1} MiB, peak {:.1} MiB (peak with all running {:.1} MiB); fds idle {fds_idle}, after {}",
        started.as_secs_f64(),
        CONTAINERS as f64 / started.as_secs_f64(),
        removed.as_secs_f64(),
        CONTAINERS as f64 / removed.as_secs_f64(),
        rss_idle as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak_running as f64 / 1024.0,
        fds(pid),
    );
    d.ok(&["network", "rm", "loadnet"]);
}
