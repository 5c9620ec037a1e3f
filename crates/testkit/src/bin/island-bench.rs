//! `island-bench RUNS ATOLL`: how long a fresh host takes to join a mesh, on the island's test
//! stage (two public hosts, NAT'd hosts behind their own masquerading routers), and what the
//! island costs in memory; printed as Markdown. `ATOLL` is the `atoll` binary. Run as root
//! (`bench/island.sh`).
//!
//! Two stages side by side in one run, the measurements interleaved:
//! - the peer: `nebula` run by hand, its config written and its certificate signed before the
//!   clock starts; from starting it on a fresh NAT'd host to its first answered ping to a
//!   public host's mesh address (a lighthouse), and to a NAT'd host's (through both routers,
//!   by hole punching);
//! - Atoll: an island of four (vps1 founder, vps2, home0, home1), every host running its own
//!   daemon; a fresh NAT'd host whose daemon already runs gets an invite code from vps1, then
//!   the clock runs from launching `atoll join CODE` to the first answered ping to vps1's and
//!   to home0's mesh address. The time `atoll join` itself took is reported too.
//!
//! Each run uses a new host, SIGKILLed afterwards. Before the joins, with the island of four
//! idle, the daemons' RSS is compared with that of a daemon on a host in no island, and each
//! member's Nebula RSS is read.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atoll_testkit::island::nebula::Nebula;
use atoll_testkit::island::{Island, Topology};

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|r| r.parse().expect("RUNS: a number")).unwrap_or(7);
    let atoll = PathBuf::from(args.next().expect("usage: island-bench RUNS ATOLL (the atoll binary)"));

    // The peer's stage.
    let mut t = Topology::new();
    t.add_public("vps1");
    t.add_public("vps2");
    t.add_nat("home0");
    let dir = tempfile::Builder::new().prefix("atoll-bench-island.").tempdir().unwrap();
    let mut n = Nebula::new(&t, dir.path());
    n.start_all(&t);
    let (n_vps1, n_home0) = (n.mesh_ip("vps1"), n.mesh_ip("home0"));
    atoll_testkit::wait_for(30, "home0 to reach vps1 over nebula", || t.ping("home0", n_vps1));

    // Atoll's stage: an island of four, and a daemon in no island.
    let mut island = four(&atoll);
    let a_vps1 = mesh_ip(&island, "vps1");
    let a_home0 = mesh_ip(&island, "home0");
    let memory = memory(&island);

    let mut times: [Vec<Duration>; 6] = Default::default();
    for i in 0..runs {
        times[0].push(nebula_join(&mut t, &mut n, &format!("a{i}"), n_vps1));
        let (joined, pinged) = atoll_join(&mut island, &format!("a{i}"), a_vps1);
        times[2].push(pinged);
        times[4].push(joined);
        times[1].push(nebula_join(&mut t, &mut n, &format!("b{i}"), n_home0));
        let (joined, pinged) = atoll_join(&mut island, &format!("b{i}"), a_home0);
        times[3].push(pinged);
        times[5].push(joined);
    }
    let medians: Vec<f64> = times.iter_mut().map(|t| ms(median(t))).collect();
    println!("| command | median (ms) | min (ms) | max (ms) | ratio to nebula by hand |");
    println!("|---|---|---|---|---|");
    let rows = [
        ("nebula by hand, NAT'd host: start → first ping to a public host answered", 0, 0),
        ("nebula by hand, NAT'd host: start → first ping to a NAT'd host answered", 1, 1),
        ("`atoll join`, NAT'd host: launch → first ping to a public member answered", 2, 0),
        ("`atoll join`, NAT'd host: launch → first ping to a NAT'd member answered", 3, 1),
        ("`atoll join` alone (launch → the command returned), public-target runs", 4, 0),
        ("`atoll join` alone (launch → the command returned), NAT'd-target runs", 5, 1),
    ];
    for (what, i, peer) in rows {
        let t = &times[i];
        let ratio = if i < 4 { format!("{:.2}x", medians[i] / medians[peer]) } else { "".into() };
        println!("| {what} | {:.0} | {:.0} | {:.0} | {ratio} |", medians[i], ms(t[0]), ms(t[t.len() - 1]));
    }
    println!();
    println!("{memory}");
}

/// vps1 (founder, public), vps2 (public), home0 and home1 (NAT'd) in one island, every member
/// reaching vps1 over the mesh; and `lone`, a NAT'd host whose daemon is in no island.
fn four(atoll: &Path) -> Island {
    let mut t = Topology::new();
    t.add_public("vps1");
    t.add_public("vps2");
    t.add_nat("home0");
    t.add_nat("home1");
    t.add_nat("lone");
    let island = Island::start(atoll, t, &[]);
    let vps1 = island.host("vps1").addr.to_string();
    island.ok("vps1", &["init", "--name", "bench", "--node-name", "vps1", "--public", &vps1]);
    let vps2 = island.host("vps2").addr.to_string();
    let code = invite(&island, &["--public", "--name", "vps2"]);
    island.ok("vps2", &["join", "--public", &vps2, &code]);
    for h in ["home0", "home1"] {
        let code = invite(&island, &["--name", h]);
        island.ok(h, &["join", &code]);
    }
    let vps1 = mesh_ip(&island, "vps1");
    for h in ["vps2", "home0", "home1"] {
        atoll_testkit::wait_for(30, &format!("{h} to reach vps1 over the mesh"), || island.ping(h, vps1));
    }
    atoll_testkit::wait_for(30, "four ready members", || {
        let v: Vec<serde_json::Value> = serde_json::from_str(&island.ok("vps1", &["node", "ls", "--json"])).unwrap();
        v.len() == 4 && v.iter().all(|n| n["state"] == "ready")
    });
    island
}

/// A code from vps1 for `atoll invite ARGS`.
fn invite(island: &Island, args: &[&str]) -> String {
    let mut a = vec!["invite"];
    a.extend_from_slice(args);
    island.ok("vps1", &a).trim().to_owned()
}

/// `host`'s mesh address, as vps1 lists it.
fn mesh_ip(island: &Island, host: &str) -> Ipv4Addr {
    let v: Vec<serde_json::Value> = serde_json::from_str(&island.ok("vps1", &["node", "ls", "--json"])).unwrap();
    let m = v.iter().find(|n| n["name"] == host).unwrap_or_else(|| panic!("{host} is not a member"));
    m["mesh_ip"].as_str().unwrap().parse().unwrap()
}

/// Adds a NAT'd `host`, enrols it (certificate and config ready), then times `nebula`'s start
/// on it to the first answered ping to `target`; stops it after.
fn nebula_join(t: &mut Topology, n: &mut Nebula, host: &str, target: Ipv4Addr) -> Duration {
    t.add_nat(host);
    n.enroll(t, host);
    let start = Instant::now();
    n.start(t, host);
    let deadline = start + Duration::from_secs(30);
    while !t.ping(host, target) {
        assert!(Instant::now() < deadline, "{host} got no answer from {target} in 30 s:\n{}", n.log(host));
    }
    let took = start.elapsed();
    n.stop(host);
    took
}

/// Adds a NAT'd `host` with its daemon running and gets it an invite code, then times
/// `atoll join CODE` on it: (the command returning, the first answered ping to `target`).
/// Kills everything on the host after.
fn atoll_join(island: &mut Island, host: &str, target: Ipv4Addr) -> (Duration, Duration) {
    island.add_nat(host);
    let code = invite(island, &["--name", host]);
    let start = Instant::now();
    island.ok(host, &["join", &code]);
    let joined = start.elapsed();
    let deadline = start + Duration::from_secs(30);
    while !island.ping(host, target) {
        assert!(
            Instant::now() < deadline,
            "{host} got no answer from {target} in 30 s:\n{}",
            std::fs::read_to_string(island.daemon(host).data_dir.join("island/nebula/nebula.log")).unwrap_or_default()
        );
    }
    let pinged = start.elapsed();
    island.kill(host);
    (joined, pinged)
}

/// The island's memory, idle: each member daemon's RSS against the lone daemon's, and each
/// member's Nebula RSS; as a Markdown table.
fn memory(island: &Island) -> String {
    // Let the joins' work settle (handshakes, the members' first state polls).
    std::thread::sleep(Duration::from_secs(10));
    let members = ["vps1", "vps2", "home0", "home1"];
    let lone = rss_mib(island.daemon("lone").pid() as i32);
    let daemons: Vec<f64> = members.iter().map(|h| rss_mib(island.daemon(h).pid() as i32)).collect();
    let nebulas: Vec<f64> = members.iter().map(|h| rss_mib(nebula_pid(island, h))).collect();
    let mut out =
        String::from("| RSS (MiB), idle | vps1 (founder, CA) | vps2 (public) | home0 (NAT'd) | home1 (NAT'd) |\n|---|---|---|---|---|\n");
    let row = |what: &str, v: &[f64]| format!("| {what} | {} |\n", v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" | "));
    out += &row("atoll daemon in the island of 4", &daemons);
    out += &row("its Nebula", &nebulas);
    out += &row("added by the island (daemon − a daemon in no island)", &daemons.iter().map(|d| d - lone).collect::<Vec<_>>());
    out += &format!("\nA daemon in no island, same run: {lone:.1} MiB.\n");
    out
}

/// The pid in `host`'s Nebula pidfile.
fn nebula_pid(island: &Island, host: &str) -> i32 {
    let path = island.daemon(host).data_dir.join("island/nebula/nebula.pid");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["pid"].as_i64().unwrap() as i32
}

fn rss_mib(pid: i32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap();
    kib / 1024.0
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
