//! End-to-end tests of the island: `init`, `invite`, `join`, `node`, `leave`, on the
//! multi-host stage (`atoll_testkit::island`: two public hosts on a wan bridge, two behind
//! their own masquerading routers, one daemon each) with real Nebula. Run as root.

use std::path::Path;

use atoll_testkit::island::{Island, Topology};
use atoll_testkit::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

/// `node ls --json` of `host`.
fn nodes(island: &Island, host: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&island.ok(host, &["node", "ls", "--json"])).unwrap()
}

fn mesh_ip(island: &Island, host: &str, of: &str) -> String {
    nodes(island, host).iter().find(|n| n["name"] == of).unwrap_or_else(|| panic!("{of} is not a member seen by {host}"))["mesh_ip"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn invite(island: &Island, at: &str, args: &[&str]) -> String {
    let mut a = vec!["invite"];
    a.extend_from_slice(args);
    island.ok(at, &a).trim().to_owned()
}

/// An island of four: vps1 (founder, public), vps2 (public), home1 and home2 (NAT'd).
fn four(args: &[&str]) -> Island {
    let mut t = Topology::new();
    t.add_public("vps1");
    t.add_public("vps2");
    t.add_nat("home1");
    t.add_nat("home2");
    let island = Island::start(Path::new(BIN), t, args);
    let vps1 = island.host("vps1").addr.to_string();
    island.ok("vps1", &["init", "--name", "friends", "--node-name", "vps1", "--public", &vps1]);
    let vps2 = island.host("vps2").addr.to_string();
    let code = invite(&island, "vps1", &["--public", "--name", "vps2"]);
    island.ok("vps2", &["join", "--public", &vps2, &code]);
    for h in ["home1", "home2"] {
        let code = invite(&island, "vps1", &[]);
        island.ok(h, &["join", "--name", h, &code]);
    }
    island
}

#[test]
fn hosts_join_with_invites_and_every_member_reaches_every_other_over_the_mesh() {
    let island = four(&[]);
    let names = ["vps1", "vps2", "home1", "home2"];
    // Every member sees every other, within seconds, ready.
    for h in names {
        wait_for(30, &format!("{h} to see four ready members"), || {
            let n = nodes(&island, h);
            n.len() == 4 && n.iter().all(|x| x["state"] == "ready")
        });
    }
    let ls = island.ok("home1", &["node", "ls"]);
    assert!(ls.contains("MESH IP") && ls.contains("home1 *") && ls.contains("lighthouse, ca"), "{ls}");
    // Every member pings every other's mesh address (ICMP is open between members).
    for a in names {
        for b in names.iter().filter(|b| **b != a) {
            let ip: std::net::Ipv4Addr = mesh_ip(&island, a, b).parse().unwrap();
            wait_for(30, &format!("{a} to ping {b} at {ip}"), || island.ping(a, ip));
        }
    }
    // The two NAT'd hosts still reach each other when their routers cannot exchange UDP:
    // through a relay.
    island.drop_udp_between("home1", "home2");
    let home2: std::net::Ipv4Addr = mesh_ip(&island, "home1", "home2").parse().unwrap();
    wait_for(60, "home1 to reach home2 through a relay", || {
        island.ping("home1", home2)
            && nodes(&island, "home1").iter().any(|n| n["name"] == "home2" && n["path"].as_str().is_some_and(|p| p.starts_with("relayed")))
    });
}

#[test]
fn bad_codes_are_refused_clearly_and_leave_no_trace() {
    let mut t = Topology::new();
    t.add_public("vps1");
    t.add_nat("home1");
    t.add_nat("home2");
    let island = Island::start(Path::new(BIN), t, &[]);
    let vps1 = island.host("vps1").addr.to_string();
    // Bad input before there is an island.
    let r = island.cli("vps1", &["init", "--public", "not-an-address"]);
    assert!(!r.ok() && r.stderr.contains("invalid --public"), "{r:?}");
    let r = island.cli("vps1", &["init", "--public", &vps1, "--mesh-cidr", "10.89.0.0/16"]);
    assert!(!r.ok() && r.stderr.contains("overlaps the container pool"), "{r:?}");
    let r = island.cli("home1", &["node", "ls"]);
    assert!(!r.ok() && r.stderr.contains("not in an island"), "{r:?}");
    island.ok("vps1", &["init", "--name", "friends", "--node-name", "vps1", "--public", &vps1]);
    let r = island.cli("vps1", &["init", "--public", &vps1]);
    assert!(!r.ok() && r.stderr.contains("already a member"), "{r:?}");

    let code = invite(&island, "vps1", &[]);
    // Random, altered and truncated codes fail on the joining host, before anything is sent.
    for (bad, says) in
        [("atoll1.nonsense", "not an Atoll invite code"), (&code[..code.len() - 4], "damaged"), (&code.replacen('.', ".X", 1), "damaged")]
    {
        let r = island.cli("home1", &["join", "--name", "home1", bad]);
        assert!(!r.ok() && r.stderr.contains(says), "{bad}: {r:?}");
    }
    assert_eq!(nodes(&island, "vps1").len(), 1, "no half-member");
    assert!(!island.cli("home1", &["node", "ls"]).ok());
    // A code works once.
    island.ok("home1", &["join", "--name", "home1", &code]);
    let r = island.cli("home2", &["join", "--name", "home2", &code]);
    assert!(!r.ok() && r.stderr.contains("already used"), "{r:?}");
    assert!(!island.cli("home2", &["node", "ls"]).ok(), "home2 is in no island");
    // The same host running join again (its answer lost) is the same join.
    // An expired code is refused.
    let expired = invite(&island, "vps1", &["--expires", "1s"]);
    wait_for(10, "the invite to expire", || {
        serde_json::from_str::<Vec<serde_json::Value>>(&island.ok("vps1", &["invite", "ls", "--json"]))
            .unwrap()
            .iter()
            .any(|i| i["expired"] == true)
    });
    let r = island.cli("home2", &["join", "--name", "home2", &expired]);
    assert!(!r.ok() && r.stderr.contains("expired"), "{r:?}");
    // A deleted invite's code no longer works.
    let deleted = invite(&island, "vps1", &["--json"]);
    let v: serde_json::Value = serde_json::from_str(&deleted).unwrap();
    island.ok("vps1", &["invite", "rm", v["invite"]["id"].as_str().unwrap()]);
    let r = island.cli("home2", &["join", "--name", "home2", v["code"].as_str().unwrap()]);
    assert!(!r.ok() && r.stderr.contains("no invite"), "{r:?}");
    assert_eq!(nodes(&island, "vps1").len(), 2);
    // A host already in an island refuses another join.
    let code = invite(&island, "vps1", &[]);
    let r = island.cli("home1", &["join", &code]);
    assert!(!r.ok() && r.stderr.contains("already a member"), "{r:?}");
    // `join` with no daemon to talk to says so (exit code 3), and the code stays unused.
    let r = island.sh("home2", &format!("{BIN} --socket /nonexistent/atoll.sock join --name home2 {code}"));
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(r.stderr.contains("daemon"), "{r:?}");
    island.ok("home2", &["join", "--name", "home2", &code]);
}

/// The pid in a host's Nebula pidfile.
fn nebula_pid(island: &Island, host: &str) -> Option<i32> {
    let text = std::fs::read_to_string(island.daemon(host).data_dir.join("island/nebula/nebula.pid")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["pid"].as_i64().map(|p| p as i32)
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Pings `to` from `from` every 200 ms for `secs`; returns (sent, answered).
fn ping_for(island: &Island, from: &str, to: &str, secs: u32) -> (u32, u32) {
    let count = secs * 5;
    let r = island.sh(from, &format!("ping -n -i 0.2 -W 1 -c {count} {to} | tail -3"));
    let line = r.stdout.lines().find(|l| l.contains("packets transmitted")).unwrap_or_else(|| panic!("ping said: {r:?}")).to_owned();
    let n = |word: &str| -> u32 {
        line.split(',').find(|p| p.contains(word)).and_then(|p| p.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    (n("transmitted"), n("received"))
}

#[test]
fn certificates_renew_themselves_while_traffic_flows() {
    // 12 s certificates renew at two thirds of their life: about every 8 s.
    let island = four(&["--cert-lifetime", "12s"]);
    let vps2 = mesh_ip(&island, "home1", "vps2");
    let expiry = |h: &str| -> String {
        let v: Vec<serde_json::Value> = serde_json::from_str(&island.ok("vps1", &["node", "inspect", h])).unwrap();
        v[0]["cert_not_after"].as_str().unwrap_or_default().to_owned()
    };
    let first = (expiry("home1"), expiry("vps2"));
    // Ping across the renewals (and past the first certificates' expiry).
    let pinger = std::thread::scope(|s| {
        let h = s.spawn(|| ping_for(&island, "home1", &vps2, 30));
        let mut seen = vec![first.0.clone()];
        wait_for(40, "home1's certificates to be renewed twice", || {
            let e = expiry("home1");
            if !seen.contains(&e) {
                seen.push(e);
            }
            seen.len() >= 3
        });
        h.join().unwrap()
    });
    let (sent, answered) = pinger;
    assert!(sent >= 140, "{sent} pings sent");
    // Renewal swaps certificates under live tunnels: no ping may be lost.
    assert_eq!(answered, sent, "pings lost across renewals: {} of {sent}", sent - answered);
    assert_ne!(expiry("vps2"), first.1, "every member renews, the public ones too");
    let status: serde_json::Value = serde_json::from_str(&island.ok("home1", &["info", "--json"])).unwrap();
    assert!(status["island"]["renew_error"].is_null(), "{status}");
}

#[test]
fn a_removed_host_is_cut_off_and_its_stolen_certificate_is_refused() {
    let island = four(&[]);
    let home2 = mesh_ip(&island, "vps1", "home2");
    let vps1 = mesh_ip(&island, "home1", "vps1");
    for h in ["vps1", "home1"] {
        let ip: std::net::Ipv4Addr = home2.parse().unwrap();
        wait_for(30, &format!("{h} to reach home2"), || island.ping(h, ip));
    }
    // A copy of home2's control-plane certificate and key, as a thief would have them.
    let gen_dir = |h: &str| {
        let local: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(island.daemon(h).data_dir.join("island/local.json")).unwrap()).unwrap();
        island.daemon(h).data_dir.join(format!("island/gen-{}", local["generation"]))
    };
    let stolen = island.dir().join("stolen");
    std::fs::create_dir(&stolen).unwrap();
    for f in ["node.crt", "node.key"] {
        std::fs::copy(gen_dir("home2").join(f), stolen.join(f)).unwrap();
    }
    std::fs::write(
        stolen.join("ca.crt"),
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(island.daemon("vps1").data_dir.join("island/state.json")).unwrap(),
        )
        .unwrap()["island"]["ca_cert"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let curl = |h: &str| {
        island.sh(
            h,
            &format!(
                "curl -sS --max-time 5 --cacert {d}/ca.crt --cert {d}/node.crt --key {d}/node.key https://{vps1}:4243/island/v1/state?since=0 -o /dev/null -w '%{{http_code}}'",
                d = stolen.display()
            ),
        )
    };
    let before = curl("home1");
    assert!(before.stdout.contains("200"), "the certificate works before the removal: {before:?}");

    island.ok("vps1", &["node", "rm", "home2"]);
    for h in ["vps1", "vps2", "home1"] {
        wait_for(30, &format!("{h} to forget home2"), || !nodes(&island, h).iter().any(|n| n["name"] == "home2"));
    }
    // The mesh: nobody reaches home2, and home2 reaches nobody.
    let ip: std::net::Ipv4Addr = home2.parse().unwrap();
    wait_for(30, "the tunnels to home2 to be torn down", || !island.ping("vps1", ip) && !island.ping("home1", ip));
    assert!(!island.ping("home2", vps1.parse().unwrap()));
    // The control plane: the stolen certificate is refused, from anywhere.
    let after = curl("home1");
    assert!(!after.stdout.contains("200"), "a revoked certificate was accepted: {after:?}");
    // home2 leaves (saying the island could not be told) and can join again with a new code.
    let r = island.cli("home2", &["leave"]);
    assert!(r.ok(), "{r:?}");
    let code = invite(&island, "vps1", &[]);
    island.ok("home2", &["join", "--name", "home2", &code]);
    wait_for(30, "home2 to be back", || nodes(&island, "vps1").iter().any(|n| n["name"] == "home2" && n["state"] == "ready"));
    let back: std::net::Ipv4Addr = mesh_ip(&island, "vps1", "home2").parse().unwrap();
    wait_for(30, "vps1 to reach home2 again", || island.ping("vps1", back));
}

#[test]
fn the_daemon_and_nebula_come_back_by_themselves_and_a_member_that_was_away_catches_up() {
    let mut island = four(&[]);
    let vps1: std::net::Ipv4Addr = mesh_ip(&island, "home1", "vps1").parse().unwrap();
    let before = mesh_ip(&island, "home1", "home1");
    // kill -9 of home1's daemon: the mesh keeps working meanwhile (Nebula outlives it), and the
    // next daemon adopts the same Nebula, with the same address.
    let pid = nebula_pid(&island, "home1").expect("a pidfile");
    island.daemon_mut("home1").kill9();
    assert!(island.ping("home1", vps1), "the mesh keeps working without the daemon");
    // While home1's daemon is away, the island changes.
    island.ok("vps1", &["node", "label", "home2", "zone=attic"]);
    island.daemon_mut("home1").start_again();
    wait_for(30, "home1's daemon to answer", || island.cli("home1", &["node", "ls"]).ok());
    assert_eq!(nebula_pid(&island, "home1"), Some(pid), "the running Nebula was adopted");
    assert_eq!(mesh_ip(&island, "home1", "home1"), before);
    wait_for(30, "home1 to catch up", || nodes(&island, "home1").iter().any(|n| n["name"] == "home2" && n["labels"]["zone"] == "attic"));
    // kill -9 of Nebula: the daemon starts it again.
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), rustix::process::Signal::KILL).unwrap();
    wait_for(30, "a new Nebula on home1", || nebula_pid(&island, "home1").is_some_and(|p| p != pid && alive(p)));
    wait_for(30, "home1 to reach vps1 again", || island.ping("home1", vps1));
    let status: serde_json::Value = serde_json::from_str(&island.ok("home1", &["info", "--json"])).unwrap();
    assert!(status["island"]["mesh_restarts"].as_u64().unwrap() >= 1, "{status}");
    // A daemon that is gone for good is reported down.
    island.daemon_mut("home2").kill9();
    wait_for(60, "home2 to be seen down", || nodes(&island, "vps1").iter().any(|n| n["name"] == "home2" && n["state"] == "down"));
}
