//! End-to-end tests of the island's public names (`atoll domain`, `atoll dns record`): real
//! daemons in their own network namespaces (two public hosts and one behind NAT), real Nebula,
//! and the authoritative server asked by real `dig` and `kdig`, and changed by real `nsupdate`.
//! Run as root.

use std::path::Path;

use atoll_testkit::island::{Island, Topology};
use atoll_testkit::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

/// vps1 (founder, public), vps2 (public) and home1 (behind NAT).
fn island() -> Island {
    let mut t = Topology::new();
    t.add_public("vps1");
    t.add_public("vps2");
    t.add_nat("home1");
    let island = Island::start(Path::new(BIN), t, &[]);
    let vps1 = island.host("vps1").addr.to_string();
    island.ok("vps1", &["init", "--name", "friends", "--node-name", "vps1", "--public", &vps1]);
    let vps2 = island.host("vps2").addr.to_string();
    let code = island.invite("vps1", &["--public", "--name", "vps2"]);
    island.ok("vps2", &["join", "--public", &vps2, &code]);
    let code = island.invite("vps1", &[]);
    island.ok("home1", &["join", "--name", "home1", &code]);
    island
}

fn json(island: &Island, host: &str, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&island.ok(host, &a)).unwrap()
}

#[test]
fn a_domain_its_records_and_keys_are_the_same_on_every_member() {
    let island = island();
    let out = island.ok("home1", &["domain", "add", "Friends.Example."]);
    assert!(out.contains("friends.example. NS ns1.friends.example."), "{out}");
    assert!(out.contains("ns2.friends.example. A "), "{out}");

    // Refusals name the problem and change nothing.
    let r = island.cli("vps2", &["domain", "add", "friends.example"]);
    assert!(!r.ok() && r.stderr.contains("already serves friends.example"), "{}", r.stderr);
    let r = island.cli("vps2", &["domain", "add", "alice.friends.example"]);
    assert!(!r.ok() && r.stderr.contains("inside friends.example"), "{}", r.stderr);
    let r = island.cli("vps2", &["dns", "record", "add", "friends.example", "@", "CNAME", "elsewhere.test."]);
    assert!(!r.ok() && r.stderr.contains("apex"), "{}", r.stderr);
    let r = island.cli("vps2", &["dns", "record", "add", "nope.example", "www", "A", "192.0.2.1"]);
    assert!(!r.ok() && r.stderr.contains("no such domain: nope.example (there are friends.example)"), "{}", r.stderr);

    let serial = json(&island, "vps1", &["domain", "status", "friends.example"])["serial"].as_u64().unwrap();
    island.ok("vps2", &["dns", "record", "add", "friends.example", "www", "CNAME", "vps1.friends.example."]);
    let r = island.cli("vps2", &["dns", "record", "add", "friends.example", "www", "A", "192.0.2.1"]);
    assert!(!r.ok() && r.stderr.contains("CNAME"), "{}", r.stderr);
    let after = json(&island, "vps1", &["domain", "status", "friends.example"])["serial"].as_u64().unwrap();
    assert!(after > serial, "the serial moved on: {serial} → {after}");

    // Every member reads the same records from its replica.
    for h in ["vps1", "vps2", "home1"] {
        wait_for(10, "the record on every member", || {
            json(&island, h, &["dns", "record", "ls", "friends.example"])
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "www" && r["type"] == "CNAME" && r["source"] == "user")
        });
    }
    let ls = island.ok("home1", &["dns", "record", "ls", "friends.example"]);
    assert!(ls.contains("vps2") && ls.contains("island"), "{ls}");

    // Every member has a key for its own name; a delegated key is scoped to its sub-zone.
    let keys = json(&island, "vps1", &["domain", "keys"]);
    let names: Vec<&str> = keys.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    for h in ["vps1", "vps2", "home1"] {
        assert!(names.contains(&format!("{h}.friends.example").as_str()), "{names:?}");
    }
    assert!(keys.as_array().unwrap().iter().all(|k| k.get("secret").is_none()), "no secrets unless asked: {keys}");
    let key = json(&island, "home1", &["domain", "delegate", "alice.friends.example"]);
    assert_eq!(key["name"], "alice.friends.example");
    assert_eq!(key["algorithm"], "hmac-sha256");
    assert_eq!(key["scope"], "alice.friends.example");
    assert_eq!(key["secret"].as_str().unwrap().len(), 44, "32 bytes, base64: {key}");
    let r = island.cli("vps1", &["domain", "delegate", "alice.friends.example"]);
    assert!(!r.ok() && r.stderr.contains("revoke"), "{}", r.stderr);
    island.ok("vps1", &["domain", "revoke", "alice.friends.example"]);
    let r = island.cli("vps1", &["domain", "revoke", "alice.friends.example"]);
    assert!(!r.ok() && r.stderr.contains("no such key"), "{}", r.stderr);

    assert_eq!(island.ok("vps1", &["dns", "record", "rm", "friends.example", "www", "CNAME"]).trim(), "Removed 1 record");
    island.ok("vps1", &["domain", "rm", "friends.example"]);
    assert_eq!(json(&island, "vps2", &["domain", "ls"]), serde_json::json!([]));
    assert_eq!(json(&island, "vps2", &["domain", "keys"]), serde_json::json!([]));
}
