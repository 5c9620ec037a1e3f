//! `state-bench RUNS ATOLL`: the island's replicated state against etcd (the store k3s and
//! Kubernetes keep their state in), on the island's test stage, printed as Markdown. `ATOLL` is
//! the `atoll` binary; `etcd` 3.4 (Debian's `etcd-server`) must be installed. Run as root
//! (`bench/state.sh`).
//!
//! For 3 and then 5 voters (as many public hosts on the stage's wan), one island of Atoll
//! daemons, and beside it an etcd cluster on the same hosts:
//! - write latency: sequential writes of one key, at the leader and at a follower (Atoll
//!   forwards to the leader; etcd too), each acknowledged after a majority has it on disk;
//! - throughput: 8 clients writing at the leader for 3 s;
//! - failover (3 voters, RUNS times): the leader killed (-9) → the next write acknowledged at
//!   another voter, which retries every 20 ms.
//!
//! Atoll's writes go through its API on each daemon's unix socket (`PUT /v1/island/kv/K`);
//! etcd's through its JSON gateway (`POST /v3/kv/put`) on plain HTTP, relayed into the
//! host's namespace. The paths between members differ in Atoll's disfavour: Atoll's members
//! talk mTLS inside Nebula's tunnels (the only way the mesh lets members in), etcd's talk
//! plain HTTP on the hosts' own addresses (the mesh's firewall admits only Atoll's ports).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use atoll_testkit::forward::Forward;
use atoll_testkit::island::{Island, Topology};

const WRITES: usize = 300;
const CLIENTS: usize = 8;
const THROUGHPUT_FOR: Duration = Duration::from_secs(3);

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|r| r.parse().expect("RUNS: a number")).unwrap_or(10);
    let atoll = PathBuf::from(args.next().expect("usage: state-bench RUNS ATOLL (the atoll binary)"));
    println!(
        "| voters | system | write at the leader p50 / p99 (ms) | write at a follower p50 / p99 (ms) | writes/s, {CLIENTS} clients at the leader |"
    );
    println!("|---|---|---|---|---|");
    let mut failover = String::new();
    for voters in [3usize, 5] {
        let hosts: Vec<&str> = ["vps1", "vps2", "vps3", "vps4", "vps5"][..voters].to_vec();
        let mut island = stage(&atoll, &hosts);
        let mut etcd = Etcd::start(&island, &hosts);
        let a = measure(&|h: &str| atoll_put(&island, h), &hosts, &|| atoll_leader(&island));
        let e = measure(&|h: &str| etcd.put(h), &hosts, &|| etcd.leader());
        for (name, m) in [("Atoll", &a), ("etcd 3.4", &e)] {
            println!(
                "| {voters} | {name} | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} |",
                m.leader.0, m.leader.1, m.follower.0, m.follower.1, m.throughput
            );
        }
        println!(
            "| {voters} | ratio Atoll / etcd | {:.2}x / {:.2}x | {:.2}x / {:.2}x | {:.2}x |",
            a.leader.0 / e.leader.0,
            a.leader.1 / e.leader.1,
            a.follower.0 / e.follower.0,
            a.follower.1 / e.follower.1,
            a.throughput / e.throughput
        );
        if voters == 3 {
            let mut at: Vec<Duration> = (0..runs).map(|_| atoll_failover(&mut island, &hosts)).collect();
            let mut et: Vec<Duration> = (0..runs).map(|_| etcd.failover(&island, &hosts)).collect();
            let (am, em) = (ms(median(&mut at)), ms(median(&mut et)));
            failover = format!(
                "| failover, 3 voters: leader killed → next write acknowledged ({runs} runs) | median (ms) | min (ms) | max (ms) |\n|---|---|---|---|\n\
                 | Atoll (election timeout 1.5–3 s) | {am:.0} | {:.0} | {:.0} |\n| etcd 3.4 (election timeout 1 s) | {em:.0} | {:.0} | {:.0} |\n| ratio Atoll / etcd | {:.2}x | | |\n",
                ms(at[0]),
                ms(at[at.len() - 1]),
                ms(et[0]),
                ms(et[et.len() - 1]),
                am / em
            );
        }
        etcd.stop();
    }
    println!();
    print!("{failover}");
}

/// One system's numbers: (p50, p99) in ms at the leader and at a follower, writes/s.
struct Measured {
    leader: (f64, f64),
    follower: (f64, f64),
    throughput: f64,
}

fn measure(put: &(dyn Fn(&str) -> bool + Sync), hosts: &[&str], leader: &dyn Fn() -> String) -> Measured {
    let l = leader();
    let f = hosts.iter().find(|h| **h != l).unwrap().to_string();
    let latencies = |host: &str| {
        let mut t: Vec<Duration> = (0..WRITES)
            .map(|_| {
                let start = Instant::now();
                assert!(put(host), "a write at {host} failed");
                start.elapsed()
            })
            .collect();
        t.sort();
        (ms(t[t.len() / 2]), ms(t[t.len() * 99 / 100]))
    };
    let at_leader = latencies(&l);
    let at_follower = latencies(&f);
    let start = Instant::now();
    let done: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let l = l.clone();
                s.spawn(move || {
                    let mut n = 0;
                    while start.elapsed() < THROUGHPUT_FOR {
                        n += usize::from(put(&l));
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    Measured { leader: at_leader, follower: at_follower, throughput: done as f64 / start.elapsed().as_secs_f64() }
}

/// An island of `hosts`, all public, every member a voter.
fn stage(atoll: &Path, hosts: &[&str]) -> Island {
    let mut t = Topology::new();
    for h in hosts {
        t.add_public(h);
    }
    let island = Island::start(atoll, t, &[]);
    let vps1 = island.host("vps1").addr.to_string();
    island.ok("vps1", &["init", "--name", "bench", "--node-name", "vps1", "--public", &vps1]);
    for h in &hosts[1..] {
        let code = island.ok("vps1", &["invite", "--name", h, "--public"]).trim().to_owned();
        let addr = island.host(h).addr.to_string();
        island.ok(h, &["join", "--public", &addr, &code]);
    }
    atoll_testkit::wait_for(120, "every member a voter", || status(&island, "vps1")["voters"].as_array().unwrap().len() == hosts.len());
    island
}

fn status(island: &Island, host: &str) -> serde_json::Value {
    let r = island.daemon(host).http("GET", "/v1/island/raft", None, b"");
    serde_json::from_slice(&r.body).unwrap_or_default()
}

fn atoll_leader(island: &Island) -> String {
    status(island, "vps1")["leader"].as_str().expect("a leader").to_owned()
}

fn atoll_put(island: &Island, host: &str) -> bool {
    island.daemon(host).http("PUT", "/v1/island/kv/bench", Some("application/json"), b"\"a value of some thirty bytes\"").status == 200
}

/// Kills the leader's daemon, times the next write acknowledged at another voter, then
/// starts the daemon again and waits for it to vote again.
fn atoll_failover(island: &mut Island, hosts: &[&str]) -> Duration {
    let leader = atoll_leader(island);
    let other = hosts.iter().find(|h| **h != leader).unwrap().to_string();
    island.daemon_mut(&leader).kill9();
    let start = Instant::now();
    while !atoll_put(island, &other) {
        assert!(start.elapsed() < Duration::from_secs(60), "no write after the leader was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    island.daemon_mut(&leader).start_again();
    atoll_testkit::wait_for(60, "the old leader back and a leader everyone knows", || {
        hosts.iter().all(|h| status(island, h)["leader"].is_string()) && status(island, &leader)["role"] != "candidate"
    });
    took
}

/// An etcd member per host, on its own address; its client port relayed to this process.
struct Etcd {
    dir: tempfile::TempDir,
    cluster: String,
    members: Vec<(String, Ipv4Addr, Forward, Option<Child>)>,
}

impl Etcd {
    fn start(island: &Island, hosts: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("atoll-bench-etcd.").tempdir().unwrap();
        let ips: Vec<Ipv4Addr> = hosts.iter().map(|h| island.host(h).addr).collect();
        let cluster = hosts.iter().zip(&ips).map(|(h, ip)| format!("{h}=http://{ip}:2380")).collect::<Vec<_>>().join(",");
        let mut e = Etcd { dir, cluster, members: Vec::new() };
        for (h, ip) in hosts.iter().zip(&ips) {
            let fwd = Forward::start(&island.host(h).ns, SocketAddr::new((*ip).into(), 2379));
            e.members.push((h.to_string(), *ip, fwd, None));
            e.spawn(island, h, "new");
        }
        atoll_testkit::wait_for(60, "etcd to elect a leader", || e.try_leader().is_some());
        e
    }

    fn spawn(&mut self, island: &Island, host: &str, state: &str) {
        let m = self.members.iter().position(|m| m.0 == host).unwrap();
        let ip = self.members[m].1;
        let log = std::fs::File::create(self.dir.path().join(format!("{host}.log"))).unwrap();
        let child = island
            .command(host, "etcd")
            .args(["--name", host, "--data-dir"])
            .arg(self.dir.path().join(host))
            .arg(format!("--listen-peer-urls=http://{ip}:2380"))
            .arg(format!("--initial-advertise-peer-urls=http://{ip}:2380"))
            .arg(format!("--listen-client-urls=http://{ip}:2379"))
            .arg(format!("--advertise-client-urls=http://{ip}:2379"))
            .arg(format!("--initial-cluster={}", self.cluster))
            .arg(format!("--initial-cluster-state={state}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.members[m].3 = Some(child);
    }

    fn call(&self, host: &str, path: &str, body: &str) -> Option<serde_json::Value> {
        let m = self.members.iter().find(|m| m.0 == host).unwrap();
        let mut s = TcpStream::connect(m.2.addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        serde_json::from_str(body).ok()
    }

    /// A put of the same key and size of value as Atoll's.
    fn put(&self, host: &str) -> bool {
        // "bench" and "a value of some thirty bytes", base64.
        self.call(host, "/v3/kv/put", r#"{"key":"YmVuY2g=","value":"YSB2YWx1ZSBvZiBzb21lIHRoaXJ0eSBieXRlcw=="}"#)
            .is_some_and(|v| v.get("header").is_some())
    }

    fn try_leader(&self) -> Option<String> {
        self.members.iter().filter(|m| m.3.is_some()).find_map(|m| {
            let v = self.call(&m.0, "/v3/maintenance/status", "{}")?;
            (v["leader"].as_str()? == v["header"]["member_id"].as_str()?).then(|| m.0.clone())
        })
    }

    fn leader(&self) -> String {
        self.try_leader().expect("an etcd leader")
    }

    fn failover(&mut self, island: &Island, hosts: &[&str]) -> Duration {
        let leader = self.leader();
        let other = hosts.iter().find(|h| **h != leader).unwrap().to_string();
        let m = self.members.iter().position(|m| m.0 == leader).unwrap();
        let mut child = self.members[m].3.take().unwrap();
        child.kill().unwrap();
        let start = Instant::now();
        while !self.put(&other) {
            assert!(start.elapsed() < Duration::from_secs(60), "no etcd write after the leader was killed");
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = start.elapsed();
        child.wait().unwrap();
        self.spawn(island, &leader, "existing");
        atoll_testkit::wait_for(60, "the old etcd leader back", || self.call(&leader, "/v3/maintenance/status", "{}").is_some());
        took
    }

    fn stop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.3.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
