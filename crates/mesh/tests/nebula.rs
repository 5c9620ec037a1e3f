//! Real Nebula 1.6.1 in network namespaces the tests make: a `wan` namespace bridging the hosts'
//! underlay (203.0.113.0/24), host 0 a lighthouse and relay, keys made by `cert::NebulaCert`,
//! each Nebula run by a `Supervisor` through `nsenter --net`. Namespaces (and whatever runs in
//! them) are removed when the test ends, passed or failed (testkit's `Netns`).
//! The runtime is multi-threaded: the tests block on `ping` while the supervisors' watchers run.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use atoll_mesh::{Applied, Lighthouse, MeshConfig, NebulaCert, PkiPaths, SignRequest, Supervisor, SupervisorOptions, TunnelPath};
use atoll_testkit::daemon::Netns;

const STATUS_PORT: u16 = 4244;

struct Host {
    ns: Netns,
    dir: PathBuf,
    underlay: Ipv4Addr,
    mesh_ip: Ipv4Addr,
    config: MeshConfig,
}

struct Island {
    _tmp: tempfile::TempDir,
    wan: Netns,
    ca_dir: PathBuf,
    hosts: Vec<Host>,
    tool: NebulaCert,
}

impl Island {
    /// `n` hosts on one bridge; host 0 is the lighthouse and relay. Certificates last
    /// `lifetime`.
    async fn new(n: usize, lifetime: Duration) -> Island {
        let tmp = tempfile::tempdir().unwrap();
        let tool = NebulaCert { bin: atoll_testkit::require("nebula-cert") };
        atoll_testkit::require("nebula");
        atoll_testkit::require("ssh");
        atoll_testkit::require("ssh-keygen");
        let ca_dir = tmp.path().join("ca");
        std::fs::create_dir_all(&ca_dir).unwrap();
        tool.ca("test-island", Duration::from_secs(3600), &ca_dir).await.unwrap();
        let wan = Netns::new();
        assert!(wan.sh("ip link add br0 type bridge && ip link set br0 up").0);
        let lighthouse = Lighthouse { mesh_ip: Ipv4Addr::new(10, 42, 0, 1), public: vec!["203.0.113.1:4242".into()] };
        let mut hosts = Vec::new();
        for i in 0..n {
            let ns = Netns::new();
            let underlay = Ipv4Addr::new(203, 0, 113, 1 + i as u8);
            let mesh_ip = Ipv4Addr::new(10, 42, 0, 1 + i as u8);
            let (ok, out) =
                wan.sh(&format!("ip link add h{i} type veth peer name eth0 netns {} && ip link set h{i} master br0 up", ns.name));
            assert!(ok, "{out}");
            let (ok, out) = ns.sh(&format!("ip addr add {underlay}/24 dev eth0 && ip link set eth0 up"));
            assert!(ok, "{out}");
            let dir = tmp.path().join(format!("h{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            tool.keygen(&dir.join("host.key"), &dir.join("host.pub")).await.unwrap();
            let pki = PkiPaths { ca: ca_dir.join("ca.crt"), cert: dir.join("host.crt"), key: dir.join("host.key") };
            let mut config = MeshConfig::new(pki, mesh_ip);
            config.lighthouses = vec![lighthouse.clone()];
            config.relays = vec![lighthouse.mesh_ip];
            config.am_lighthouse = i == 0;
            config.am_relay = i == 0;
            hosts.push(Host { ns, dir, underlay, mesh_ip, config });
        }
        let island = Island { _tmp: tmp, wan, ca_dir, hosts, tool };
        for i in 0..n {
            island.sign(i, lifetime).await;
        }
        island
    }

    async fn sign(&self, i: usize, lifetime: Duration) {
        let h = &self.hosts[i];
        let ip = format!("{}/16", h.mesh_ip).parse().unwrap();
        let name = format!("h{i}");
        self.tool
            .sign(&SignRequest {
                ca_crt: &self.ca_dir.join("ca.crt"),
                ca_key: &self.ca_dir.join("ca.key"),
                name: &name,
                ip,
                groups: &[],
                subnets: &[],
                duration: lifetime,
                in_pub: &h.dir.join("host.pub"),
                out_crt: &h.dir.join("host.crt"),
            })
            .await
            .unwrap();
    }

    async fn fingerprint(&self, i: usize) -> String {
        self.tool.print(&self.hosts[i].dir.join("host.crt")).await.unwrap().fingerprint
    }

    fn options(&self, i: usize) -> SupervisorOptions {
        let h = &self.hosts[i];
        let mut o = SupervisorOptions::new(h.dir.join("nebula"));
        o.nebula = atoll_testkit::require("nebula");
        o.command_prefix = vec![atoll_testkit::require("nsenter").into(), format!("--net={}", h.ns.path().display()).into(), "--".into()];
        o.status_port = Some(STATUS_PORT);
        o.restart_base = Duration::from_millis(200);
        o
    }

    async fn start(&self, i: usize) -> Supervisor {
        Supervisor::start(self.options(i), self.hosts[i].config.clone()).await.unwrap()
    }

    /// Drops UDP between two hosts' underlay addresses on the wan bridge.
    fn cut(&self, a: usize, b: usize) {
        let (x, y) = (self.hosts[a].underlay, self.hosts[b].underlay);
        let rules = format!(
            "table bridge cut {{\n chain filt {{\n type filter hook forward priority 0;\n ip saddr {x} ip daddr {y} drop\n ip saddr {y} ip daddr {x} drop\n }}\n}}\n"
        );
        let (ok, out) = self.wan.sh(&format!("printf '%s' '{rules}' | nft -f -"));
        assert!(ok, "{out}");
    }
}

/// One ping with a one-second deadline.
fn ping(from: &Host, to: Ipv4Addr) -> bool {
    from.ns
        .command("ping")
        .args(["-c1", "-W1", "-q", &to.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Two pings half a second apart: true if both are answered. Used to watch for a tunnel
/// going away (an answered ping returns at once, so one alone would not span any time).
fn probe(from: &Host, to: Ipv4Addr) -> bool {
    from.ns
        .command("ping")
        .args(["-c2", "-i0.5", "-W1", "-q", &to.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Pings until one is answered (each waits at most a second), at most `tries` times.
fn ping_until_answered(from: &Host, to: Ipv4Addr, tries: usize) -> bool {
    (0..tries).any(|_| ping(from, to))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_reach_each_other_directly_with_keys_made_by_the_wrapper() {
    let island = Island::new(3, Duration::from_secs(600)).await;
    let _s: Vec<Supervisor> = futures_join(&island, &[0, 1, 2]).await;
    let (a, b) = (&island.hosts[1], &island.hosts[2]);
    assert!(ping_until_answered(a, b.mesh_ip, 10), "h1 cannot ping h2's mesh IP");
    assert!(ping_until_answered(b, a.mesh_ip, 10), "h2 cannot ping h1's mesh IP");
    let tunnels = _s[1].tunnels().await.unwrap();
    let to_b = tunnels.iter().find(|t| t.mesh_ip == b.mesh_ip).expect("a tunnel to h2");
    assert_eq!(to_b.path, TunnelPath::Direct(format!("{}:4242", b.underlay).parse().unwrap()), "{tunnels:?}");
    assert_eq!(to_b.name.as_deref(), Some("h2"));
    assert_eq!(to_b.fingerprint.as_deref(), Some(island.fingerprint(2).await.as_str()));
    // Only ICMP and the control port are open. Nothing listens on either port below: the
    // control port's SYN passes Nebula's firewall and h2's kernel refuses it at once; another
    // port's SYN is dropped by Nebula, so the attempt times out.
    let connect = |port: u16| a.ns.sh(&format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{}/{port}' 2>&1; echo \"exit=$?\"", b.mesh_ip)).1;
    let control = connect(4243);
    assert!(control.contains("refused") && control.contains("exit=1"), "{control}");
    let other = connect(4250);
    assert!(other.contains("exit=124"), "{other}");
}

async fn futures_join(island: &Island, which: &[usize]) -> Vec<Supervisor> {
    let mut out = Vec::new();
    for i in which {
        out.push(island.start(*i).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_that_cannot_reach_each_other_talk_through_the_relay() {
    let island = Island::new(3, Duration::from_secs(600)).await;
    island.cut(1, 2);
    let (a, b) = (&island.hosts[1], &island.hosts[2]);
    let (ok, _) = a.ns.sh(&format!("ping -c1 -W1 {}", b.underlay));
    assert!(!ok, "the underlay between h1 and h2 should be cut");
    let s = futures_join(&island, &[0, 1, 2]).await;
    assert!(ping_until_answered(a, b.mesh_ip, 15), "h1 cannot ping h2 through the relay");
    assert!(ping_until_answered(b, a.mesh_ip, 5), "h2 cannot ping h1 through the relay");
    let relay = island.hosts[0].mesh_ip;
    for (me, peer) in [(1, b.mesh_ip), (2, a.mesh_ip)] {
        let tunnels = s[me].tunnels().await.unwrap();
        let t = tunnels.iter().find(|t| t.mesh_ip == peer).expect("a tunnel");
        assert_eq!(t.path, TunnelPath::Relayed(vec![relay]), "{tunnels:?}");
        let to_relay = tunnels.iter().find(|t| t.mesh_ip == relay).expect("a tunnel to the relay");
        assert!(matches!(to_relay.path, TunnelPath::Direct(_)), "{tunnels:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewed_with_sighup_loses_no_ping() {
    // h1's first certificate lasts 20 s; it is renewed while h2 pings it every 0.2 s for 30 s,
    // so the ping spans the reload and the old certificate's expiry (when h2 tears down the
    // tunnel that was made with it and handshakes again with the new one).
    let island = Island::new(3, Duration::from_secs(600)).await;
    island.sign(1, Duration::from_secs(20)).await;
    let old = island.fingerprint(1).await;
    let s = futures_join(&island, &[0, 1, 2]).await;
    let (a, b) = (&island.hosts[1], &island.hosts[2]);
    assert!(ping_until_answered(b, a.mesh_ip, 10));
    let mut pinger =
        b.ns.command("ping").args(["-i", "0.2", "-c", "150", "-W", "1", &a.mesh_ip.to_string()]).stdout(Stdio::piped()).spawn().unwrap();
    island.sign(1, Duration::from_secs(600)).await;
    let new = island.fingerprint(1).await;
    assert_ne!(old, new);
    s[1].reload().await.unwrap();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut text = String::new();
        pinger.stdout.take().unwrap().read_to_string(&mut text).unwrap();
        pinger.wait().unwrap();
        text
    })
    .await
    .unwrap();
    let received = out.lines().filter(|l| l.contains("bytes from")).count();
    // Allowed losses: none.
    assert_eq!(received, 150, "lost {} of 150 pings:\n{out}", 150 - received);
    // h2 now knows h1 by its new certificate: the old one's tunnel is gone.
    let tunnels = s[2].tunnels().await.unwrap();
    let t = tunnels.iter().find(|t| t.mesh_ip == a.mesh_ip).expect("a tunnel to h1");
    assert_eq!(t.fingerprint.as_deref(), Some(new.as_str()), "{tunnels:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocklisted_certificate_is_refused_after_a_reload() {
    let island = Island::new(3, Duration::from_secs(600)).await;
    let s = futures_join(&island, &[0, 1, 2]).await;
    let (a, b) = (&island.hosts[1], &island.hosts[2]);
    assert!(ping_until_answered(a, b.mesh_ip, 10));
    let mut config = b.config.clone();
    config.blocklist = vec![island.fingerprint(1).await];
    assert_eq!(s[2].update(config.clone()).await.unwrap(), Applied::Reloaded);
    assert_eq!(s[2].pid().await, s[2].pid().await);
    // The tunnel made before is torn down at h2's next check (seconds): wait for the first
    // unanswered ping, then no ping gets through any more, in either direction.
    assert!(
        (0..40).any(|_| !probe(a, b.mesh_ip)),
        "h1 still reaches h2 after the blocklist reload; h2's log:\n{}",
        std::fs::read_to_string(s[2].log_path()).unwrap()
    );
    for _ in 0..3 {
        assert!(!ping(a, b.mesh_ip), "a blocklisted h1 reached h2");
        assert!(!ping(b, a.mesh_ip), "h2 reached a blocklisted h1");
    }
    // The blocklist does not cut anyone else.
    assert!(ping_until_answered(&island.hosts[0], b.mesh_ip, 5));
    // Same config again: nothing to do.
    assert_eq!(s[2].update(config).await.unwrap(), Applied::Unchanged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_restarts_a_killed_nebula_and_a_new_supervisor_adopts_a_running_one() {
    let island = Island::new(2, Duration::from_secs(600)).await;
    let s0 = island.start(0).await;
    let s1 = island.start(1).await;
    let (lh, h) = (&island.hosts[0], &island.hosts[1]);
    assert!(ping_until_answered(h, lh.mesh_ip, 10));

    // SIGKILL: restarted by the watcher.
    let first = s1.pid().await.unwrap();
    let mut pids = s1.watch_pid();
    rustix::process::kill_process(rustix::process::Pid::from_raw(first).unwrap(), rustix::process::Signal::KILL).unwrap();
    let restarted = pids.wait_for(|p| p.is_some_and(|p| p != first));
    tokio::time::timeout(Duration::from_secs(20), restarted).await.expect("nebula restarted within 20 s").unwrap();
    assert!(
        ping_until_answered(h, lh.mesh_ip, 20),
        "no mesh after nebula was killed; its log:\n{}",
        std::fs::read_to_string(s1.log_path()).unwrap()
    );
    let second = s1.pid().await.unwrap();
    assert_ne!(first, second);
    assert_eq!(s1.restarts().await, 1);

    // The daemon goes away (the supervisor is dropped): Nebula keeps running and a new
    // supervisor adopts it.
    drop(s1);
    assert!(ping(h, lh.mesh_ip));
    let s1 = island.start(1).await;
    assert_eq!(s1.pid().await, Some(second), "adopted, not restarted");
    assert!(ping(h, lh.mesh_ip));

    // A reloadable change keeps it; one that needs a restart replaces it.
    let mut config = h.config.clone();
    config.blocklist = vec!["ab".repeat(32)];
    drop(s1);
    let s1 = Supervisor::start(island.options(1), config.clone()).await.unwrap();
    assert_eq!(s1.pid().await, Some(second), "a blocklist change is a reload");
    config.listen_port = 4300;
    assert_eq!(s1.update(config.clone()).await.unwrap(), Applied::Restarted);
    let third = s1.pid().await.unwrap();
    assert_ne!(third, second);
    assert!(rustix::process::test_kill_process(rustix::process::Pid::from_raw(second).unwrap()).is_err(), "the old nebula is gone");
    assert!(ping_until_answered(h, lh.mesh_ip, 10));

    // A supervisor started with a changed listen port replaces an adopted Nebula too.
    drop(s1);
    config.listen_port = 4301;
    let s1 = Supervisor::start(island.options(1), config).await.unwrap();
    assert_ne!(s1.pid().await, Some(third));

    // stop() ends it for good.
    let last = s1.pid().await.unwrap();
    s1.stop().await.unwrap();
    assert!(rustix::process::test_kill_process(rustix::process::Pid::from_raw(last).unwrap()).is_err());
    assert!(!island.hosts[1].dir.join("nebula/nebula.pid").exists());
    drop(s0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_is_a_clear_error() {
    let island = Island::new(1, Duration::from_secs(600)).await;
    let mut config = island.hosts[0].config.clone();
    // A certificate file that does not exist: Nebula exits, and its words come back.
    config.pki.cert = island.hosts[0].dir.join("missing.crt");
    let err = Supervisor::start(island.options(0), config).await.unwrap_err();
    assert!(err.to_string().contains("nebula exited while starting") && err.to_string().contains("missing.crt"), "{err}");
}
