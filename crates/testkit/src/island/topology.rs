//! The stage: network namespaces wired into a small internet. A `wan` namespace holds a bridge;
//! a public host's namespace has a veth into it; a NAT'd host sits behind a router namespace
//! of its own that masquerades its LAN behind the router's wan address.
//!
//! Addresses: public hosts get 203.0.113.10, .11, … (RFC 5737 documentation prefix); routers
//! 203.0.113.100, .101, …; the n-th NAT'd host's LAN is 192.168.n.0/24 (router .1, host .2).
//! Nothing has a route out of the namespaces made here: public hosts and routers reach only
//! 203.0.113.0/24 (on-link), NAT'd hosts route everything to their router.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::daemon::{Netns, Run};

use super::faults::{self, Fault};

/// The prefix of every namespace an island topology makes; then the pid of the test process.
const PREFIX: &str = "atoll-i";
const WAN_BRIDGE: &str = "br0";
/// A host's uplink inside its own namespace.
const UPLINK: &str = "eth0";

/// One host of the topology.
pub struct Host {
    pub name: String,
    /// The host's namespace: where its daemon, Nebula and test commands run.
    pub ns: Netns,
    /// The host's own address: its public address, or its LAN address behind the router.
    pub addr: Ipv4Addr,
    /// The address the wan sees it as: its public address, or its router's wan address.
    pub wan_addr: Ipv4Addr,
    /// The router's namespace, for a NAT'd host.
    pub router: Option<Netns>,
    /// The far end of the host's uplink (namespace, interface): a port of the wan bridge, or
    /// the router's LAN side. `link_down` sets it down, as pulling the cable would.
    uplink_peer: (String, String),
}

impl Host {
    /// Whether the host has a public address (is not behind NAT).
    pub fn public(&self) -> bool {
        self.router.is_none()
    }
}

/// A small internet of network namespaces; dropping it kills every process in them and
/// deletes them (after a panic too).
pub struct Topology {
    id: String,
    wan: Netns,
    hosts: Vec<Host>,
    faults: Mutex<Vec<Fault>>,
}

impl Topology {
    /// Makes the `wan` namespace and its bridge. Names hold the test process's pid and a
    /// counter, so tests in parallel (threads or processes) never share a name; namespaces
    /// left by test processes that died without unwinding (SIGKILL) are removed first.
    pub fn new() -> Self {
        static SWEPT: std::sync::Once = std::sync::Once::new();
        static N: AtomicU32 = AtomicU32::new(0);
        SWEPT.call_once(sweep_stale);
        let id = format!("{PREFIX}{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let wan = Netns::named(&format!("{id}-wan"));
        ip(&wan.name, &["link", "add", WAN_BRIDGE, "type", "bridge"]);
        ip(&wan.name, &["link", "set", WAN_BRIDGE, "up"]);
        nft(&wan.name, &faults::base_table());
        Self { id, wan, hosts: Vec::new(), faults: Mutex::new(Vec::new()) }
    }

    /// Adds a host with a public address on the wan bridge; returns that address.
    pub fn add_public(&mut self, name: &str) -> Ipv4Addr {
        let n = self.hosts.iter().filter(|h| h.public()).count();
        assert!(n < 40, "at most 40 public hosts");
        let addr = Ipv4Addr::new(203, 0, 113, 10 + n as u8);
        let ns = self.host_ns(name);
        let port = self.wan_port(&ns.name, UPLINK);
        ip(&ns.name, &["addr", "add", &format!("{addr}/24"), "dev", UPLINK]);
        ip(&ns.name, &["link", "set", UPLINK, "up"]);
        let uplink_peer = (self.wan.name.clone(), port);
        self.hosts.push(Host { name: name.to_owned(), ns, addr, wan_addr: addr, router: None, uplink_peer });
        addr
    }

    /// Adds a host behind a masquerading router of its own; returns the host's LAN address.
    /// The router forwards only from its LAN out (and replies back): like a home router,
    /// it drops whatever the wan sends unasked.
    pub fn add_nat(&mut self, name: &str) -> Ipv4Addr {
        let n = self.hosts.iter().filter(|h| !h.public()).count();
        assert!(n < 100, "at most 100 NAT'd hosts");
        let wan_addr = Ipv4Addr::new(203, 0, 113, 100 + n as u8);
        let lan = n as u8 + 1;
        let (gw, addr) = (Ipv4Addr::new(192, 168, lan, 1), Ipv4Addr::new(192, 168, lan, 2));
        let ns = self.host_ns(name);
        let router = Netns::named(&format!("{}-r-{name}", self.id));
        // The router's wan side, on the bridge.
        self.wan_port(&router.name, "wan");
        ip(&router.name, &["addr", "add", &format!("{wan_addr}/24"), "dev", "wan"]);
        ip(&router.name, &["link", "set", "wan", "up"]);
        // Its LAN side, to the host.
        ip(&router.name, &["link", "add", "lan", "type", "veth", "peer", "name", UPLINK, "netns", &ns.name]);
        ip(&router.name, &["addr", "add", &format!("{gw}/24"), "dev", "lan"]);
        ip(&router.name, &["link", "set", "lan", "up"]);
        sh(&router.name, "sysctl -qw net.ipv4.ip_forward=1");
        nft(&router.name, &router_table(&format!("192.168.{lan}.0/24")));
        ip(&ns.name, &["addr", "add", &format!("{addr}/24"), "dev", UPLINK]);
        ip(&ns.name, &["link", "set", UPLINK, "up"]);
        ip(&ns.name, &["route", "add", "default", "via", &gw.to_string()]);
        let uplink_peer = (router.name.clone(), "lan".to_owned());
        self.hosts.push(Host { name: name.to_owned(), ns, addr, wan_addr, router: Some(router), uplink_peer });
        addr
    }

    fn host_ns(&self, name: &str) -> Netns {
        assert!(
            !name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "host name {name:?}: use 1 to 32 of a-z, 0-9 and -"
        );
        assert!(self.hosts.iter().all(|h| h.name != name), "host {name:?} is already in the topology");
        Netns::named(&format!("{}-h-{name}", self.id))
    }

    /// A veth from a new port of the wan bridge to `dev` in `ns`; returns the port's name.
    fn wan_port(&self, ns: &str, dev: &str) -> String {
        let port = format!("p{}", self.hosts.len());
        ip(&self.wan.name, &["link", "add", &port, "type", "veth", "peer", "name", dev, "netns", ns]);
        ip(&self.wan.name, &["link", "set", &port, "master", WAN_BRIDGE]);
        ip(&self.wan.name, &["link", "set", &port, "up"]);
        port
    }

    /// The host `name`; panics naming the hosts there are.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| {
            let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
            panic!("no host {name:?} in the topology (hosts: {names:?})")
        })
    }

    /// Every host, in the order they were added.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The `wan` namespace (the bridge and the fault rules).
    pub fn wan(&self) -> &Netns {
        &self.wan
    }

    /// A command that runs `program` in `host`'s namespace (network only: same mounts).
    /// What it starts is SIGKILLed when the topology is dropped.
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.host(host).ns.command(program)
    }

    /// Runs `args[0] args[1..]` in `host`'s namespace and waits for it.
    pub fn exec(&self, host: &str, args: &[&str]) -> Run {
        let (program, rest) = args.split_first().expect("a command");
        let out = self.command(host, program).args(rest).stdin(Stdio::null()).output().unwrap();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `sh -c SCRIPT` in `host`'s namespace and waits for it.
    pub fn sh(&self, host: &str, script: &str) -> Run {
        self.exec(host, &["sh", "-c", script])
    }

    /// Whether one ping from `host` to `ip` is answered within a second.
    pub fn ping(&self, host: &str, ip: Ipv4Addr) -> bool {
        let ping = crate::require("ping");
        self.exec(host, &[ping.to_str().unwrap(), "-n", "-q", "-c", "1", "-W", "1", &ip.to_string()]).ok()
    }

    /// Cuts `host`'s uplink (the far end goes down, as if the cable were pulled): the host
    /// keeps running but reaches nobody, and nobody reaches it.
    pub fn link_down(&self, host: &str) {
        let (ns, dev) = &self.host(host).uplink_peer;
        ip(ns, &["link", "set", dev, "down"]);
    }

    /// Restores `host`'s uplink.
    pub fn link_up(&self, host: &str) {
        let (ns, dev) = &self.host(host).uplink_peer;
        ip(ns, &["link", "set", dev, "up"]);
    }

    /// SIGKILLs every process in `host`'s namespace (its daemon, shims, DNS server, Nebula…)
    /// and waits until they are gone. Containers live in namespaces of their own and survive,
    /// as they survive a daemon crash.
    pub fn kill(&self, host: &str) {
        kill_all(&[&self.host(host).ns.name]);
    }

    /// Changes the fault list and replaces the wan's fault rules with it in one transaction.
    pub(super) fn set_faults(&self, change: impl FnOnce(&mut Vec<Fault>)) {
        let mut faults = self.faults.lock().unwrap();
        change(&mut faults);
        nft(&self.wan.name, &faults::render(&faults));
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let mut names: Vec<&str> = self.hosts.iter().map(|h| h.ns.name.as_str()).collect();
        names.extend(self.hosts.iter().filter_map(|h| h.router.as_ref()).map(|r| r.name.as_str()));
        names.push(&self.wan.name);
        kill_all(&names);
        // The namespaces themselves go when their `Netns` fields drop, right after this.
    }
}

/// The router's firewall and NAT: forward from the LAN out and the replies back, masquerade
/// the LAN behind the wan address, accept nothing unasked from the wan (so an unsolicited
/// packet leaves no conntrack entry behind to skew the next mapping, as on a home router).
fn router_table(lan: &str) -> String {
    format!(
        "table inet atoll_router {{
  chain input {{ type filter hook input priority 0; policy drop; ct state established,related accept; iifname {{ \"lo\", \"lan\" }} accept; }}
  chain forward {{ type filter hook forward priority 0; policy drop; ct state established,related accept; iifname \"lan\" oifname \"wan\" accept; }}
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; oifname \"wan\" ip saddr {lan} masquerade; }}
}}
"
    )
}

/// SIGKILLs every process in the namespaces `names` and waits (up to 10 s) until they are gone.
fn kill_all(names: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<i32> = names.iter().flat_map(|n| netns_pids(n)).collect();
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn netns_pids(name: &str) -> Vec<i32> {
    let out = Command::new(crate::require("ip")).args(["netns", "pids", name]).stderr(Stdio::null()).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()).unwrap_or_default()
}

/// Deletes the namespaces of test processes that are gone (killed before they could unwind),
/// and any of ours (a previous process with our pid).
fn sweep_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else { return };
    for e in dir.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || !alive(pid) {
            kill_all(&[&name]);
            let _ = Command::new(crate::require("ip")).args(["netns", "del", &name]).stderr(Stdio::null()).status();
        }
    }
}

/// Whether process `pid` exists and is not a zombie (a test process SIGKILLed a moment ago
/// may not be reaped yet).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
}

/// Runs `ip -n NS ARGS`, panicking with its error unless it succeeds.
fn ip(ns: &str, args: &[&str]) {
    let out = Command::new(crate::require("ip")).arg("-n").arg(ns).args(args).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "ip -n {ns} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn sh(ns: &str, script: &str) {
    let (ok, out) = Netns::existing(ns).sh(script);
    assert!(ok, "in {ns}: {script}: {out}");
}

/// Loads an nft script in namespace `ns` (one transaction), panicking with its error.
fn nft(ns: &str, script: &str) {
    use std::io::Write;
    let mut child = Netns::existing(ns)
        .command(crate::require("nft"))
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nft -f in {ns}: {}\n{script}", String::from_utf8_lossy(&out.stderr));
}

/// Reads the wan's nft JSON for `what` (`set bridge atoll_island udp_flows`…).
pub(super) fn nft_json(ns: &str, what: &[&str]) -> serde_json::Value {
    let out = Netns::existing(ns).command(crate::require("nft")).arg("-j").arg("list").args(what).output().unwrap();
    assert!(out.status.success(), "nft -j list {what:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}
