//! `island-bench [RUNS]`: how long a fresh host takes to join a mesh, on the island's test
//! stage (two public hosts, NAT'd hosts behind their own masquerading routers), printed as
//! Markdown. Today's row is the peer: `nebula` run by hand, its config written and its
//! certificate signed before the clock starts; from starting it on a fresh NAT'd host to its
//! first answered ping to a public host's mesh address (a lighthouse), and to a NAT'd host's
//! (through the routers, by hole punching). Each run uses a new host. Run as root
//! (`bench/island.sh`).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use atoll_testkit::island::Topology;
use atoll_testkit::island::nebula::Nebula;

fn main() {
    let runs: usize = std::env::args().nth(1).map(|r| r.parse().expect("RUNS: a number")).unwrap_or(7);
    let mut t = Topology::new();
    t.add_public("vps1");
    t.add_public("vps2");
    t.add_nat("home0");
    let dir = tempfile::Builder::new().prefix("atoll-bench-island.").tempdir().unwrap();
    let mut n = Nebula::new(&t, dir.path());
    n.start_all(&t);
    let (vps1, home0) = (n.mesh_ip("vps1"), n.mesh_ip("home0"));
    atoll_testkit::wait_for(30, "home0 to reach vps1 over nebula", || t.ping("home0", vps1));

    let mut to_public = Vec::new();
    let mut to_nat = Vec::new();
    for i in 0..runs {
        to_public.push(join_time(&mut t, &mut n, &format!("a{i}"), vps1));
        to_nat.push(join_time(&mut t, &mut n, &format!("b{i}"), home0));
    }
    println!("| command | median (ms) | min (ms) | max (ms) |");
    println!("|---|---|---|---|");
    row("nebula by hand, NAT'd host: start → first ping to a public host answered", &mut to_public);
    row("nebula by hand, NAT'd host: start → first ping to a NAT'd host answered", &mut to_nat);
}

/// Adds a NAT'd `host`, enrols it (certificate and config ready), then times `nebula`'s start
/// on it to the first answered ping to `target`; stops it after.
fn join_time(t: &mut Topology, n: &mut Nebula, host: &str, target: Ipv4Addr) -> Duration {
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

fn row(what: &str, times: &mut [Duration]) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| {what} | {:.0} | {:.0} | {:.0} |", ms(times[times.len() / 2]), ms(times[0]), ms(times[times.len() - 1]));
}
