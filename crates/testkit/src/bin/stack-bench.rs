//! `stack-bench RUNS ATOLL`: stacks on the island's test stage (an island of four: vps1,
//! vps2, home1, home2, each its own daemon in its own network namespace, real Nebula and
//! runc), printed as Markdown. `ATOLL` is the `atoll` binary. Run as root (`bench/stacks.sh`).
//!
//! - **Failover**: a service of two replicas (one per host, never on vps1, which leads and
//!   watches); each run pulls the cable of a host running one (`ip link set down` in its
//!   namespace) and times from then until `stack ps` (asked on vps1 every 50 ms) shows the
//!   replacement running elsewhere; then the cable goes back and the run waits for the host to
//!   stop its moved replica before the next.
//! - **Deploy**: a file of 20 services (busybox, `sleep`), from `atoll stack deploy` to all 20
//!   running on the island, against `atoll compose up -d` of the same file on vps1 alone (until
//!   its 20 containers run), interleaved; the stack is removed and the project brought down
//!   between runs.
//! - **Throughput across hosts**: a 50 MB HTTP download (busybox httpd and wget, timed by
//!   busybox's `time` inside the client) from a replica on vps2: by a replica on vps2 (the
//!   bridge), by a replica on vps1 (the stack network across hosts: VXLAN inside Nebula), and,
//!   for reference, host to host over the public addresses (no Nebula, no VXLAN).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use atoll_testkit::island::Island;
use atoll_testkit::wait_for;

const HOSTS: [&str; 4] = ["vps1", "vps2", "home1", "home2"];

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|r| r.parse().expect("RUNS: a number")).unwrap_or(10);
    let atoll = PathBuf::from(args.next().expect("usage: stack-bench RUNS ATOLL (the atoll binary)"));
    let island = Island::four(&atoll, &[]);
    let scratch = tempfile::tempdir().unwrap();
    for h in HOSTS {
        island.daemon(h).import_busybox(scratch.path());
    }
    wait_for(60, "three voters", || {
        let s: serde_json::Value = serde_json::from_str(&island.ok("vps1", &["island", "status", "--json"])).unwrap();
        s["voters"].as_array().is_some_and(|v| v.len() == 3)
    });

    let (mut deploy, mut compose) = (Vec::new(), Vec::new());
    let file = scratch.path().join("twenty.yaml");
    let mut text = String::from("services:\n");
    for i in 0..20 {
        text.push_str(&format!("  s{i}:\n    image: localhost/busybox\n    command: [sh, -c, \"trap 'exit 0' TERM; sleep 1d & wait\"]\n"));
    }
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap();
    for _ in 0..runs.min(5) {
        compose.push(compose_up(&island, file));
        deploy.push(stack_deploy(&island, file));
    }

    let web = scratch.path().join("web.yaml");
    std::fs::write(
        &web,
        "services:\n  web:\n    image: localhost/busybox\n    command: [sh, -c, \"trap 'exit 0' TERM; sleep 1d & wait\"]\n    deploy:\n      replicas: 2\n      placement: {max_replicas_per_node: 1, constraints: [node.hostname != vps1]}\n",
    )
    .unwrap();
    island.ok("vps1", &["stack", "deploy", "-c", web.to_str().unwrap(), "app"]);
    wait_for(60, "two replicas", || running_nodes(&island, "app").len() == 2);
    let mut failover = Vec::new();
    for i in 0..runs {
        let took = fail_one(&island);
        eprintln!("failover {}: {:.2} s", i + 1, took.as_secs_f64());
        failover.push(took);
    }

    let (bridge, overlay, underlay) = throughput(&island, scratch.path(), runs.min(5));

    let (f_med, f_max) = (median(&mut failover), *failover.iter().max().unwrap());
    let (d, c) = (median(&mut deploy), median(&mut compose));
    println!("| Stacks (island of four, real Nebula and runc) | Atoll | Peer | Ratio |");
    println!("|---|---|---|---|");
    println!(
        "| Failover: host's cable pulled → replacement running, median of {runs} | {:.1} s | Nomad ~20 s (issue's figure) | {:.2}x |",
        f_med.as_secs_f64(),
        f_med.as_secs_f64() / 20.0
    );
    println!("| Failover, worst of {runs} | {:.1} s | target 10 s | {:.2}x |", f_max.as_secs_f64(), f_max.as_secs_f64() / 10.0);
    println!(
        "| 20 services: `stack deploy` to 4 hosts vs `compose up -d` on one, median of {} | {:.2} s | {:.2} s | {:.2}x |",
        deploy.len(),
        d.as_secs_f64(),
        c.as_secs_f64(),
        d.as_secs_f64() / c.as_secs_f64()
    );
    println!();
    println!("| 50 MB over HTTP, median of {} (MB/s) | Atoll | Reference | Ratio |", runs.min(5));
    println!("|---|---|---|---|");
    println!(
        "| Replica to replica across hosts (stack network: VXLAN in Nebula) vs host to host without the mesh | {overlay:.0} | {underlay:.0} | {:.2}x |",
        overlay / underlay
    );
    println!("| Replica to replica on one host (bridge) | {bridge:.0} | | |");
}

/// Median MB/s of a 50 MB download: replica to replica on one host, across hosts, and host to
/// host over the underlay.
fn throughput(island: &Island, scratch: &std::path::Path, runs: usize) -> (f64, f64, f64) {
    const SIZE: f64 = 50_000_000.0;
    let file = scratch.join("net.yaml");
    std::fs::write(
        &file,
        "services:\n  server:\n    image: localhost/busybox\n    command: [sh, -c, 'head -c 50000000 /dev/zero > /big && exec httpd -f -p 8080 -h /']\n    deploy: {placement: {constraints: [node.hostname == vps2]}}\n  \
         near:\n    image: localhost/busybox\n    command: [sleep, 1d]\n    deploy: {placement: {constraints: [node.hostname == vps2]}}\n  \
         far:\n    image: localhost/busybox\n    command: [sleep, 1d]\n    deploy: {placement: {constraints: [node.hostname == vps1]}}\n",
    )
    .unwrap();
    island.ok("vps1", &["stack", "deploy", "-c", file.to_str().unwrap(), "net"]);
    wait_for(60, "the network bench's three replicas", || running_nodes(island, "net").len() == 3);
    let container = |host: &str, prefix: &str| -> String {
        let list: Vec<serde_json::Value> = serde_json::from_str(&island.ok(host, &["ps", "--json"])).unwrap();
        list.iter().filter_map(|c| c["name"].as_str()).find(|n| n.starts_with(prefix)).unwrap().to_owned()
    };
    let (near, far) = (container("vps2", "net_near"), container("vps1", "net_far"));
    // busybox `time` prints `real\t0m 1.23s` on stderr.
    let secs = |stderr: &str| -> f64 {
        let real = stderr.lines().find_map(|l| l.strip_prefix("real")).unwrap_or_else(|| panic!("no time in {stderr:?}")).trim();
        let (m, s) = real.trim_end_matches('s').split_once('m').unwrap();
        m.trim().parse::<f64>().unwrap() * 60.0 + s.trim().parse::<f64>().unwrap()
    };
    let fetch = |host: &str, c: &str| -> f64 {
        wait_for(30, "the server to answer", || {
            island.cli(host, &["exec", c, "wget", "-q", "-O", "/dev/null", "http://server:8080/big"]).ok()
        });
        let r = island.cli(host, &["exec", c, "time", "wget", "-q", "-O", "/dev/null", "http://server:8080/big"]);
        assert!(r.ok(), "{} {}", r.stdout, r.stderr);
        SIZE / 1e6 / secs(&r.stderr)
    };
    // The underlay: the same download between the hosts' own namespaces, public to public.
    let dir = scratch.join("www");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("big"), vec![0u8; SIZE as usize]).unwrap();
    let server = island.host("vps2").addr;
    let mut httpd = island
        .command("vps2", "busybox")
        .args(["httpd", "-f", "-p", &format!("{server}:18080"), "-h", dir.to_str().unwrap()])
        .spawn()
        .unwrap();
    let url = format!("http://{server}:18080/big");
    wait_for(30, "the host's httpd", || island.sh("vps1", &format!("busybox wget -q -O /dev/null {url}")).ok());
    let (mut bridge, mut overlay, mut underlay) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        bridge.push(fetch("vps2", &near));
        overlay.push(fetch("vps1", &far));
        let r = island.sh("vps1", &format!("busybox time busybox wget -q -O /dev/null {url}"));
        assert!(r.ok(), "{}", r.stderr);
        underlay.push(SIZE / 1e6 / secs(&r.stderr));
    }
    let _ = httpd.kill();
    let _ = httpd.wait();
    island.ok("vps1", &["stack", "rm", "net"]);
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (med(&mut bridge), med(&mut overlay), med(&mut underlay))
}

/// The stack's tasks as vps1 sees them.
fn tasks(island: &Island, stack: &str) -> Vec<serde_json::Value> {
    island
        .cli("vps1", &["stack", "ps", stack, "--json"])
        .stdout
        .parse::<serde_json::Value>()
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// The members running a replica of `stack`, as vps1 sees it.
fn running_nodes(island: &Island, stack: &str) -> Vec<String> {
    tasks(island, stack)
        .iter()
        .filter(|t| t["desired_state"] == "running" && t["current_state"] == "running")
        .map(|t| t["node"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Stack containers `host`'s engine runs.
fn running_on(island: &Island, host: &str, stack: &str) -> usize {
    let list: Vec<serde_json::Value> = serde_json::from_str(&island.ok(host, &["ps", "--json"])).unwrap();
    list.iter().filter(|c| c["spec"]["labels"]["com.docker.stack.namespace"] == stack).count()
}

fn fail_one(island: &Island) -> Duration {
    let victim = running_nodes(island, "app")[0].clone();
    let started = Instant::now();
    island.link_down(&victim);
    loop {
        let nodes = running_nodes(island, "app");
        if nodes.len() == 2 && !nodes.contains(&victim) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no failover from {victim} in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    island.link_up(&victim);
    wait_for(90, &format!("{victim} to stop its moved replica"), || running_on(island, &victim, "app") == 0);
    wait_for(60, "the leader to hear every member again", || {
        tasks(island, "app").iter().all(|t| t["current_state"] != "unknown") && running_nodes(island, "app").len() == 2
    });
    took
}

fn stack_deploy(island: &Island, file: &str) -> Duration {
    let started = Instant::now();
    island.ok("vps1", &["stack", "deploy", "-c", file, "twenty"]);
    loop {
        if running_nodes(island, "twenty").len() == 20 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the stack did not run in 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    island.ok("vps1", &["stack", "rm", "twenty"]);
    for h in HOSTS {
        wait_for(60, &format!("{h} to stop the stack"), || running_on(island, h, "twenty") == 0);
    }
    took
}

fn compose_up(island: &Island, file: &str) -> Duration {
    let started = Instant::now();
    island.ok("vps1", &["compose", "-f", file, "-p", "twenty", "up", "-d"]);
    loop {
        let list: Vec<serde_json::Value> = serde_json::from_str(&island.ok("vps1", &["ps", "--json"])).unwrap();
        if list.iter().filter(|c| c["spec"]["labels"]["com.docker.compose.project"] == "twenty").count() == 20 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "compose up did not run in 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    island.ok("vps1", &["compose", "-f", file, "-p", "twenty", "down"]);
    took
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
