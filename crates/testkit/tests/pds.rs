//! The test PDS fixture itself: the real PDS and PLC directory start, make accounts whose DID
//! documents name their handle and PDS, and answer the handle's well-known; dnsmasq serves
//! `_atproto` TXT records.

use atoll_testkit::pds::{HandleDns, Pds};

#[test]
fn the_test_pds_creates_accounts_published_in_its_plc_directory() {
    let pds = Pds::start();
    let alice = pds.create_account("alice.test");
    assert!(alice.did.starts_with("did:plc:"), "{alice:?}");
    assert!(!alice.app_password.is_empty());

    let doc = curl(&[&format!("{}/{}", pds.plc_url, alice.did)]);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["alsoKnownAs"][0], "at://alice.test", "{doc}");
    assert_eq!(doc["service"][0]["id"], "#atproto_pds", "{doc}");
    assert_eq!(doc["service"][0]["serviceEndpoint"], format!("http://localhost:{}", pds.port), "{doc}");

    let well_known = curl(&["-H", "host: alice.test", &format!("{}/.well-known/atproto-did", pds.url)]);
    assert_eq!(well_known.trim(), alice.did);

    let dns = HandleDns::start(&[("_atproto.alice.test", &format!("did={}", alice.did))]);
    let port = dns.addr.port().to_string();
    let out = std::process::Command::new("dig").args(["+short", "-p", &port, "@127.0.0.1", "_atproto.alice.test", "TXT"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("\"did={}\"", alice.did));
}

fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl").args(["-sf", "--max-time", "10"]).args(args).output().unwrap();
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_test_pds_runs_inside_a_network_namespace() {
    let ns = atoll_testkit::daemon::Netns::new();
    let pds = Pds::start_in(&ns);
    let bob = pds.create_account("bob.test");
    let (ok, doc) = ns.sh(&format!("curl -sf {}/{}", pds.plc_url, bob.did));
    assert!(ok && doc.contains("at://bob.test"), "{doc}");
    let dns = HandleDns::start_in(&ns, &[("_atproto.bob.test", &format!("did={}", bob.did))]);
    let (ok, txt) = ns.sh(&format!("dig +short -p {} @127.0.0.1 _atproto.bob.test TXT", dns.addr.port()));
    assert!(ok && txt.contains(&bob.did), "{txt}");
}
