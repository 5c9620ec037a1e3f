//! The island's test stage, proved: the namespaces, the NAT, the faults, and real Nebula
//! (`nebula-cert` certificates, hand-written configs) over them — two public hosts
//! (lighthouses and relays) and two hosts behind masquerading routers. Run as root.

use std::net::Ipv4Addr;

use atoll_testkit::island::Topology;
use atoll_testkit::island::nebula::Nebula;
use atoll_testkit::wait_for;

/// vps1, vps2 public; home1, home2 behind NAT.
fn four_hosts() -> Topology {
    let mut t = Topology::new();
    t.add_public("vps1");
    t.add_public("vps2");
    t.add_nat("home1");
    t.add_nat("home2");
    t
}

fn addr(t: &Topology, host: &str) -> Ipv4Addr {
    t.host(host).addr
}

/// No answer to any of `n` pings, one a second (a partition is in place as soon as `nft`
/// returns, so not one may get through).
fn no_answer(t: &Topology, from: &str, to: Ipv4Addr, n: usize) -> bool {
    (0..n).all(|_| !t.ping(from, to))
}

#[test]
fn public_hosts_reach_each_other_and_nat_hosts_reach_out_but_nothing_reaches_in() {
    let t = four_hosts();
    assert_eq!(addr(&t, "vps1"), Ipv4Addr::new(203, 0, 113, 10));
    assert_eq!(addr(&t, "home2"), Ipv4Addr::new(192, 168, 2, 2));
    assert_eq!(t.host("home1").wan_addr, Ipv4Addr::new(203, 0, 113, 100));
    assert!(t.ping("vps1", addr(&t, "vps2")));
    assert!(t.ping("home1", addr(&t, "vps1")));
    assert!(t.ping("home2", addr(&t, "vps2")));
    // The routers drop what the wan sends unasked, and nobody routes to a LAN.
    assert!(!t.ping("vps1", t.host("home1").wan_addr));
    assert!(!t.ping("vps1", addr(&t, "home1")));
    assert!(!t.ping("home1", addr(&t, "home2")));
    // home1's traffic leaves as its router's address (counted by wan address on the bridge).
    let before = t.udp_packets("home1", "vps1");
    let r = t.sh("home1", "echo hello | socat -u - UDP:203.0.113.10:9999");
    assert!(r.ok(), "{r:?}");
    wait_for(5, "home1's datagram on the wan", || t.udp_packets("home1", "vps1") == before + 1);
    // Nothing leaves the namespaces: public hosts and routers have no route beyond the wan
    // (NAT'd hosts route to their router).
    assert!(!t.sh("vps1", "ip route get 192.0.2.1").ok(), "vps1 routes out");
    let router = t.host("home1").router.as_ref().unwrap();
    assert!(!router.sh("ip route get 192.0.2.1").0, "the router routes out");
}

#[test]
fn partition_drops_everything_between_two_hosts_until_heal() {
    let t = four_hosts();
    let vps1 = addr(&t, "vps1");
    t.partition("home1", "vps1");
    assert!(no_answer(&t, "home1", vps1, 2));
    assert!(t.ping("home1", addr(&t, "vps2")), "the partition is between home1 and vps1 only");
    assert!(t.ping("home2", vps1));
    t.heal("vps1", "home1"); // either order
    assert!(t.ping("home1", vps1));

    t.isolate("vps2");
    for h in ["vps1", "home1", "home2"] {
        assert!(no_answer(&t, h, addr(&t, "vps2"), 1), "{h} reaches an isolated host");
    }
    t.heal_all();
    assert!(t.ping("home2", addr(&t, "vps2")));
}

#[test]
fn drop_udp_between_drops_udp_only() {
    let t = four_hosts();
    t.drop_udp_between("vps1", "vps2");
    // Receives one datagram, prints it and exits.
    let serve = t.command("vps2", "socat").args(["-u", "UDP-RECVFROM:9999", "-"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    wait_for(5, "socat to listen", || t.sh("vps2", "ss -Hlun sport = 9999").stdout.contains("9999"));
    let before = t.udp_packets("vps1", "vps2");
    assert!(t.sh("vps1", "echo lost | socat -u - UDP:203.0.113.11:9999").ok());
    wait_for(5, "the datagram on the wan", || t.udp_packets("vps1", "vps2") == before + 1);
    assert!(t.ping("vps1", addr(&t, "vps2")), "ICMP still flows");
    t.heal("vps1", "vps2");
    assert!(t.sh("vps1", "echo through | socat -u - UDP:203.0.113.11:9999").ok());
    let out = serve.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through\n", "only the datagram sent after heal arrives");
}

#[test]
fn link_down_cuts_a_host_off_until_link_up() {
    let t = four_hosts();
    for (host, peer) in [("vps1", "vps2"), ("home1", "vps2")] {
        let to = addr(&t, peer);
        assert!(t.ping(host, to));
        t.link_down(host);
        assert!(no_answer(&t, host, to, 2), "{host} still reaches {peer}");
        t.link_up(host);
        wait_for(10, &format!("{host} to reach {peer} again"), || t.ping(host, to));
    }
}

#[test]
fn kill_sigkills_every_process_in_the_host() {
    let t = four_hosts();
    let mut a = t.command("home1", "sleep").arg("600").spawn().unwrap();
    let mut b = t.command("home1", "sleep").arg("600").spawn().unwrap();
    let mut other = t.command("home2", "sleep").arg("600").spawn().unwrap();
    t.kill("home1");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(a.wait().unwrap().signal(), Some(9));
    assert_eq!(b.wait().unwrap().signal(), Some(9));
    assert!(other.try_wait().unwrap().is_none(), "kill reached another host");
    other.kill().unwrap();
    other.wait().unwrap();
}

/// Every namespace of a topology, by name.
fn netns_of(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(prefix)).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn drop_after_a_panic_kills_the_processes_and_deletes_the_namespaces() {
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::panic::catch_unwind(move || {
        let t = four_hosts();
        let prefix = t.wan().name.trim_end_matches("wan").to_owned();
        let child = t.command("home1", "sleep").arg("600").spawn().unwrap();
        tx.send((prefix, child)).unwrap();
        panic!("a test failing half-way");
    });
    assert!(r.is_err());
    let (prefix, mut child) = rx.recv().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    assert_eq!(netns_of(&prefix), Vec::<String>::new());
}

#[test]
fn two_topologies_at_once_do_not_share_names() {
    let (a, b) = (four_hosts(), four_hosts());
    assert_ne!(a.host("home1").ns.name, b.host("home1").ns.name);
    assert!(a.host("home1").ns.name.contains(&format!("atoll-i{}-", std::process::id())));
    // Same addresses, separate internets.
    assert!(a.ping("home1", addr(&a, "vps1")));
    a.partition("home1", "vps1");
    assert!(b.ping("home1", addr(&b, "vps1")), "a fault in one topology reached the other");
}

/// The stage with Nebula on every host.
fn mesh(t: &Topology, dir: &std::path::Path) -> Nebula {
    let mut n = Nebula::new(t, dir);
    n.start_all(t);
    n
}

#[test]
fn nebula_every_host_pings_every_other_and_nat_hosts_punch_through_directly() {
    let t = four_hosts();
    let dir = tempfile::tempdir().unwrap();
    let n = mesh(&t, dir.path());
    let hosts = ["vps1", "vps2", "home1", "home2"];
    for a in hosts {
        for b in hosts.iter().filter(|b| **b != a) {
            wait_for(30, &format!("{a} to ping {b} over nebula"), || t.ping(a, n.mesh_ip(b)));
        }
    }
    // The pings between the NAT'd hosts go straight between their routers.
    let before = t.udp_packets("home1", "home2");
    let r = t.exec("home1", &["ping", "-n", "-q", "-c", "20", "-i", "0.05", "-W", "1", &n.mesh_ip("home2").to_string()]);
    assert!(r.ok() && r.stdout.contains(" 0% packet loss"), "{r:?}");
    let direct = t.udp_packets("home1", "home2") - before;
    assert!(direct >= 20, "{direct} UDP packets between the routers for 20 pings:\n{}", n.log("home1"));
}

#[test]
fn nebula_nat_hosts_reach_each_other_through_a_relay_when_udp_between_their_routers_is_dropped() {
    let t = four_hosts();
    t.drop_udp_between("home1", "home2");
    let dir = tempfile::tempdir().unwrap();
    let n = mesh(&t, dir.path());
    let home2 = n.mesh_ip("home2");
    wait_for(60, "home1 to ping home2 over nebula", || t.ping("home1", home2));
    let to_relays = |h: &str| t.udp_packets(h, "vps1") + t.udp_packets(h, "vps2");
    let before = to_relays("home1");
    let r = t.exec("home1", &["ping", "-n", "-q", "-c", "20", "-i", "0.05", "-W", "1", &home2.to_string()]);
    assert!(r.ok() && r.stdout.contains(" 0% packet loss"), "{r:?}");
    assert!(to_relays("home1") - before >= 20, "the pings did not go through a public host");
    assert!(t.ping("home2", n.mesh_ip("home1")));
}

#[test]
fn nebula_a_partitioned_nat_host_loses_the_mesh_and_heal_brings_it_back() {
    let t = four_hosts();
    let dir = tempfile::tempdir().unwrap();
    let n = mesh(&t, dir.path());
    let others = ["vps1", "vps2", "home2"];
    for o in others {
        wait_for(30, &format!("home1 to ping {o}"), || t.ping("home1", n.mesh_ip(o)));
    }
    t.isolate("home1");
    for o in others {
        assert!(no_answer(&t, "home1", n.mesh_ip(o), 2), "home1 still reaches {o} through the partition");
    }
    t.heal_all();
    for o in others {
        wait_for(60, &format!("home1 to ping {o} after heal"), || t.ping("home1", n.mesh_ip(o)));
        wait_for(60, &format!("{o} to ping home1 after heal"), || t.ping(o, n.mesh_ip("home1")));
    }
}

#[test]
fn nebula_a_nat_host_whose_link_is_down_loses_the_mesh_and_comes_back_with_it() {
    let t = four_hosts();
    let dir = tempfile::tempdir().unwrap();
    let n = mesh(&t, dir.path());
    let others = ["vps1", "vps2", "home1"];
    for o in others {
        wait_for(30, &format!("home2 to ping {o}"), || t.ping("home2", n.mesh_ip(o)));
    }
    t.link_down("home2");
    for o in others {
        assert!(no_answer(&t, "home2", n.mesh_ip(o), 2), "home2 still reaches {o} with its link down");
        assert!(no_answer(&t, o, n.mesh_ip("home2"), 1), "{o} still reaches home2 with its link down");
    }
    t.link_up("home2");
    for o in others {
        wait_for(60, &format!("home2 to ping {o} after link up"), || t.ping("home2", n.mesh_ip(o)));
        wait_for(60, &format!("{o} to ping home2 after link up"), || t.ping(o, n.mesh_ip("home2")));
    }
}
