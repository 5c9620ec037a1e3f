//! End-to-end tests of the island's public names (`atoll domain`, `atoll dns record`): real
//! daemons in their own network namespaces (two public hosts and one behind NAT), real Nebula,
//! and the authoritative server asked by real `dig` and `kdig`, and changed by real `nsupdate`.
//! Run as root.

use std::path::Path;

use atoll_testkit::island::Island;
use atoll_testkit::pebble::Pebble;
use atoll_testkit::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

/// vps1 (founder, public), vps2 (public) and home1 (behind NAT).
fn island() -> Island {
    island_and(&[], &[])
}

/// The island (its daemons started with `args`), and `others` on the internet, outside it.
fn island_and(others: &[&str], args: &[&str]) -> Island {
    Island::three_and(Path::new(BIN), others, args)
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
    assert!(out.contains("friends.example. NS vps1.friends.example."), "{out}");
    assert!(out.contains("vps2.friends.example. A "), "{out}");

    // Refusals name the problem and change nothing.
    let r = island.cli("vps2", &["domain", "add", "friends.example"]);
    assert!(!r.ok() && r.stderr.contains("already serves friends.example"), "{}", r.stderr);
    let r = island.cli("vps2", &["domain", "add", "alice.friends.example"]);
    assert!(!r.ok() && r.stderr.contains("inside friends.example"), "{}", r.stderr);
    let r = island.cli("vps2", &["dns", "record", "add", "friends.example", "@", "CNAME", "elsewhere.test."]);
    assert!(!r.ok() && r.stderr.contains("apex"), "{}", r.stderr);
    let r = island.cli("vps2", &["dns", "record", "add", "nope.example", "www", "A", "192.0.2.1"]);
    assert!(!r.ok() && r.stderr.contains("no such domain: nope.example (there are friends.example)"), "{}", r.stderr);

    let status = json(&island, "vps1", &["domain", "status", "friends.example"]);
    assert_eq!(status["delegation"]["matches"], false, "{status}");
    assert!(status["delegation"]["error"].as_str().unwrap().contains("no resolver"), "{status}");
    let serial = status["serial"].as_u64().unwrap();
    island.ok("vps2", &["dns", "record", "add", "friends.example", "www", "CNAME", "vps1.friends.example."]);
    let r = island.cli("vps2", &["dns", "record", "add", "friends.example", "www", "A", "192.0.2.1"]);
    assert!(!r.ok() && r.stderr.contains("CNAME"), "{}", r.stderr);
    // Written through vps2; vps1 reads its own replica.
    wait_for(10, "the serial to move on", || {
        json(&island, "vps1", &["domain", "status", "friends.example"])["serial"].as_u64().unwrap() > serial
    });

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
    // The member that wrote reads its write at once; another reads its own replica, which
    // follows within the time it takes to apply the entry (the README's "Listings read this
    // host's replica": the CI run of fab197d read vps2 before it had).
    assert_eq!(json(&island, "vps1", &["domain", "ls"]), serde_json::json!([]));
    assert_eq!(json(&island, "vps1", &["domain", "keys"]), serde_json::json!([]));
    wait_for(10, "the domain and its keys gone on vps2", || {
        json(&island, "vps2", &["domain", "ls"]) == serde_json::json!([])
            && json(&island, "vps2", &["domain", "keys"]) == serde_json::json!([])
    });
}

/// `dig +norec @server ARGS` from home1 (behind NAT, as a resolver on the internet would be
/// elsewhere): the whole answer.
fn dig(island: &Island, server: &str, args: &str) -> String {
    let ip = island.host(server).addr;
    let r = island.sh("home1", &format!("dig +norec +time=2 +tries=1 @{ip} {args}"));
    assert!(r.ok(), "dig @{server} {args}: {r:?}");
    r.stdout
}

fn short(island: &Island, server: &str, args: &str) -> String {
    dig(island, server, &format!("+short {args}")).trim().to_owned()
}

/// The zone's serial as `server` answers it (0 while it does not answer).
fn serial(island: &Island, server: &str) -> u64 {
    let ip = island.host(server).addr;
    let r = island.sh("home1", &format!("dig +norec +time=1 +tries=1 +short @{ip} friends.example SOA"));
    r.stdout.split_whitespace().nth(2).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// `nsupdate -y KEY` against `server` with `commands` (then `send`): its output and status.
fn nsupdate(island: &Island, server: &str, key: Option<&str>, commands: &str) -> atoll_testkit::daemon::Run {
    let ip = island.host(server).addr;
    let y = key.map(|k| format!("-y {k}")).unwrap_or_default();
    island.sh("home1", &format!("printf 'server {ip}\\nzone friends.example\\n{commands}\\nsend\\n' | nsupdate -t 5 {y}"))
}

#[test]
fn both_public_hosts_answer_for_the_zone_and_updates_need_a_key_scoped_to_their_names() {
    // Their resolver is vps2 (for `domain status`'s look at the delegation).
    let mut island = island_and(&[], &["--dns-upstream", "203.0.113.11"]);
    island.ok("vps1", &["domain", "add", "friends.example"]);
    wait_for(10, "both public hosts to serve the zone at one serial", || {
        let s = serial(&island, "vps1");
        s > 0 && s == serial(&island, "vps2")
    });
    let ns = dig(&island, "vps2", "friends.example NS");
    assert!(ns.contains("flags: qr aa;") && ns.contains("status: NOERROR"), "authoritative, no recursion: {ns}");
    for want in ["vps1.friends.example.", "vps2.friends.example."] {
        assert!(ns.contains(want), "{want} in {ns}");
    }
    let status = island.ok("home1", &["domain", "status", "friends.example"]);
    assert!(status.contains("Seen: yes, 203.0.113.11:53 answers these nameservers."), "{status}");
    let vps1 = island.host("vps1").addr.to_string();
    assert!(ns.lines().any(|l| l.starts_with("vps1.friends.example.") && l.ends_with(&format!("IN\tA\t{vps1}"))), "glue for vps1: {ns}");
    assert_eq!(short(&island, "vps1", "vps2.friends.example A"), island.host("vps2").addr.to_string());

    // A change appears on both, with a higher serial.
    let before = serial(&island, "vps1");
    island.ok("home1", &["dns", "record", "add", "friends.example", "www", "A", "192.0.2.7", "--ttl", "120"]);
    for h in ["vps1", "vps2"] {
        wait_for(10, "the new record on both", || short(&island, h, "www.friends.example A") == "192.0.2.7");
    }
    let after = serial(&island, "vps2");
    assert!(after > before && after == serial(&island, "vps1"), "{before} → {after}");

    // Negative answers carry the SOA; other zones are refused (kdig agrees with dig).
    let nx = dig(&island, "vps1", "nope.friends.example A");
    assert!(nx.contains("status: NXDOMAIN") && nx.contains("AUTHORITY: 1") && nx.contains("SOA"), "{nx}");
    let nodata = dig(&island, "vps2", "www.friends.example TXT");
    assert!(nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0") && nodata.contains("SOA"), "{nodata}");
    assert!(dig(&island, "vps1", "example.org A").contains("status: REFUSED"));
    let ip = island.host("vps2").addr;
    let k = island.sh("home1", &format!("kdig +norec @{ip} friends.example SOA"));
    assert!(k.ok() && k.stdout.contains("NOERROR") && k.stdout.contains(&after.to_string()), "{k:?}");

    // A key delegated for alice.friends.example changes names there, and only there.
    let key = json(&island, "vps2", &["domain", "delegate", "alice.friends.example"]);
    let y = format!("{}:{}:{}", key["algorithm"].as_str().unwrap(), key["name"].as_str().unwrap(), key["secret"].as_str().unwrap());
    // The key was made on vps2: vps1's server knows it once vps1 applied it (the update is
    // refused, and changes nothing, until then).
    wait_for(10, "vps1 to take an update signed with the new key", || {
        nsupdate(&island, "vps1", Some(&y), "update add www.alice.friends.example 60 A 192.0.2.9").ok()
    });
    wait_for(10, "the update on the other public host", || short(&island, "vps2", "www.alice.friends.example A") == "192.0.2.9");
    wait_for(10, "the updated record in home1's replica", || {
        json(&island, "home1", &["dns", "record", "ls", "friends.example"])
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "www.alice" && r["source"] == "user")
    });

    let s = serial(&island, "vps1");
    let r = nsupdate(&island, "vps2", Some(&y), "update add bob.friends.example 60 A 192.0.2.10");
    assert!(!r.ok() && (r.stdout.contains("REFUSED") || r.stderr.contains("REFUSED")), "outside the key's sub-zone: {r:?}");
    let r = nsupdate(&island, "vps2", None, "update add www.alice.friends.example 60 A 192.0.2.11");
    assert!(!r.ok() && (r.stdout.contains("REFUSED") || r.stderr.contains("REFUSED")), "unsigned: {r:?}");
    let forged = format!("hmac-sha256:alice.friends.example:{}", "A".repeat(43) + "=");
    let r = nsupdate(&island, "vps2", Some(&forged), "update add www.alice.friends.example 60 A 192.0.2.12");
    assert!(!r.ok(), "a wrong secret: {r:?}");
    assert!(short(&island, "vps1", "bob.friends.example A").is_empty());
    assert_eq!(short(&island, "vps1", "www.alice.friends.example A"), "192.0.2.9");
    assert_eq!(serial(&island, "vps1"), s, "nothing changed");

    // Revoked, the key is refused.
    island.ok("home1", &["domain", "revoke", "alice.friends.example"]);
    wait_for(10, "the revocation on vps1", || !nsupdate(&island, "vps1", Some(&y), "update delete www.alice.friends.example A").ok());
    assert_eq!(short(&island, "vps2", "www.alice.friends.example A"), "192.0.2.9");

    // Zone transfers need the zone's transfer key.
    assert!(dig(&island, "vps2", "friends.example AXFR").contains("Transfer failed"));
    let xfr = json(&island, "vps1", &["domain", "delegate", "friends.example", "--name", "xfr.friends.example"]);
    let r = island.cli("vps1", &["domain", "set", "friends.example", "--transfer-key", "nope.friends.example"]);
    assert!(!r.ok() && r.stderr.contains("no such key"), "{}", r.stderr);
    island.ok("vps1", &["domain", "set", "friends.example", "--transfer-key", "xfr.friends.example", "--secondary", "198.51.100.53:53"]);
    let xy = format!("hmac-sha256:xfr.friends.example:{}", xfr["secret"].as_str().unwrap());
    wait_for(10, "a transfer with the key", || {
        let axfr = dig(&island, "vps2", &format!("-y {xy} friends.example AXFR"));
        axfr.matches("\tSOA\t").count() == 2 && axfr.contains("www.alice.friends.example.")
    });

    // The leader goes away: the public hosts still answer from their replicas.
    let leader = json(&island, "vps1", &["island", "status"])["leader"].as_str().unwrap_or_default().to_owned();
    let name = ["vps1", "vps2", "home1"].into_iter().find(|h| leader.contains(h)).unwrap_or_else(|| panic!("the leader {leader:?}"));
    island.daemon_mut(name).kill9();
    for h in ["vps1", "vps2"].into_iter().filter(|h| *h != name) {
        assert_eq!(short(&island, h, "www.friends.example A"), "192.0.2.7", "{h} with the leader ({name}) away");
    }
}

/// The certificate's leaf verifies against pebble's root through the chain it came with.
fn verifies(island: &Island, pebble: &Pebble, chain_pem: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root.pem"), pebble.root()).unwrap();
    std::fs::write(dir.path().join("chain.pem"), chain_pem).unwrap();
    let leaf_end = chain_pem.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    std::fs::write(dir.path().join("leaf.pem"), &chain_pem[..leaf_end]).unwrap();
    let d = dir.path().display();
    island.sh("home1", &format!("openssl verify -CAfile {d}/root.pem -untrusted {d}/chain.pem {d}/leaf.pem")).ok()
}

fn certs(island: &Island, host: &str) -> Vec<serde_json::Value> {
    json(island, host, &["cert", "ls"]).as_array().unwrap().clone()
}

fn cert<'a>(list: &'a [serde_json::Value], first: &str) -> Option<&'a serde_json::Value> {
    list.iter().find(|c| c["names"][0] == first)
}

#[test]
fn certificates_come_from_pebble_by_dns01_against_the_island_for_a_service_behind_nat_and_renew_before_expiry() {
    let island = island_and(&["ca"], &[]);
    let ca = island.host("ca").addr;
    let vps1 = island.host("vps1").addr;
    // Certificates of 30 s: renewed at two thirds of their life.
    let pebble = Pebble::start(&island.host("ca").ns, ca, (vps1, 53).into(), Some(30));
    let ca_file = pebble.tls_ca_path.to_str().unwrap().to_owned();
    island.ok(
        "home1",
        &[
            "domain",
            "add",
            "friends.example",
            "--acme-directory",
            &pebble.directory_url,
            "--acme-ca-file",
            &ca_file,
            "--email",
            "admin@friends.example",
        ],
    );

    // The zone's wildcard and apex, unasked.
    wait_for(60, "the zone's wildcard certificate", || {
        cert(&certs(&island, "vps2"), "friends.example").is_some_and(|c| c["state"] == "valid")
    });
    let list = certs(&island, "vps2");
    let wildcard = cert(&list, "friends.example").unwrap();
    assert_eq!(wildcard["names"], serde_json::json!(["friends.example", "*.friends.example"]));
    assert!(wildcard["issuer"].as_str().unwrap().starts_with("Pebble"), "{wildcard}");
    wait_for(10, "the valid certificate in home1's replica", || {
        cert(&certs(&island, "home1"), "friends.example").is_some_and(|c| c["state"] == "valid")
    });
    let inspect = json(&island, "home1", &["cert", "inspect", "friends.example"]);
    assert!(verifies(&island, &pebble, inspect["chain_pem"].as_str().unwrap()), "{inspect}");
    // Every public host can open its key (the data key fetched from the CA host, vps1).
    for h in ["vps1", "vps2"] {
        assert_eq!(cert(&certs(&island, h), "friends.example").unwrap()["usable_here"], true, "{h}");
    }

    // A service on the host behind NAT declares a name the wildcard does not cover.
    let scratch = tempfile::tempdir().unwrap();
    island.daemon("home1").import_busybox(scratch.path());
    let compose = scratch.path().join("blog.yaml");
    std::fs::write(
        &compose,
        "services:\n  web:\n    image: localhost/busybox\n    command: [\"sleep\", \"3600\"]\n    labels:\n      atoll.domain: web.blog.friends.example\n    deploy:\n      placement:\n        constraints: [node.hostname == home1]\n",
    )
    .unwrap();
    island.ok("vps1", &["stack", "deploy", "-c", compose.to_str().unwrap(), "blog"]);
    wait_for(60, "the service's certificate", || {
        cert(&certs(&island, "vps1"), "web.blog.friends.example").is_some_and(|c| c["state"] == "valid")
    });
    let inspect = json(&island, "vps1", &["cert", "inspect", "web.blog.friends.example"]);
    assert!(verifies(&island, &pebble, inspect["chain_pem"].as_str().unwrap()), "{inspect}");
    assert_eq!(
        short(&island, "vps2", "web.blog.friends.example A"),
        island.host("vps1").addr.to_string() + "\n" + &island.host("vps2").addr.to_string()
    );

    // Asked for by name; a name in no zone is refused.
    let r = island.cli("home1", &["cert", "request", "mail.other.example"]);
    assert!(!r.ok() && r.stderr.contains("in no zone the island serves"), "{}", r.stderr);
    island.ok("home1", &["cert", "request", "mail.friends.example"]);
    wait_for(60, "the requested certificate", || {
        cert(&certs(&island, "home1"), "mail.friends.example").is_some_and(|c| c["state"] == "valid")
    });

    // Renewed before expiry, twice.
    let mut seen = vec![cert(&certs(&island, "vps1"), "friends.example").unwrap()["not_after"].as_i64().unwrap()];
    while seen.len() < 3 {
        let before = *seen.last().unwrap();
        wait_for(40, "a renewal", || {
            cert(&certs(&island, "vps1"), "friends.example").is_some_and(|c| c["not_after"].as_i64().unwrap() != before)
        });
        let c = cert(&certs(&island, "vps1"), "friends.example").unwrap().clone();
        assert!(c["not_before"].as_i64().unwrap() < before, "renewed before the old one expired: {c} (old not after {before})");
        assert_eq!(c["state"], "valid", "{c}");
        seen.push(c["not_after"].as_i64().unwrap());
    }
    // No challenge record is left in the zone (the certificates of 30 s renew all the time, so
    // one may be there for an attempt under way; a leaked one would stay).
    wait_for(30, "a moment with no challenge record in the zone", || {
        !json(&island, "vps1", &["dns", "record", "ls", "friends.example"]).to_string().contains("_acme-challenge")
    });
}

#[test]
fn certbot_with_only_a_delegated_key_gets_a_certificate_inside_its_sub_zone_and_is_refused_outside() {
    let island = island_and(&["ca"], &[]);
    let ca = island.host("ca").addr;
    let vps2 = island.host("vps2").addr;
    let pebble = Pebble::start(&island.host("ca").ns, ca, (vps2, 53).into(), None);
    island.ok("vps1", &["domain", "add", "friends.example"]);
    let key = json(&island, "vps1", &["domain", "delegate", "alice.friends.example"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let creds = dir.path().join("rfc2136.ini");
    std::fs::write(
        &creds,
        format!(
            "dns_rfc2136_server = {vps2}\ndns_rfc2136_port = 53\ndns_rfc2136_name = {}\ndns_rfc2136_secret = {}\ndns_rfc2136_algorithm = HMAC-SHA256\n",
            key["name"].as_str().unwrap(),
            key["secret"].as_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    wait_for(10, "vps2 to serve the zone", || serial(&island, "vps2") > 0);
    let certbot = |name: &str| {
        island.sh(
            "home1",
            &format!(
                "REQUESTS_CA_BUNDLE={ca_file} certbot certonly --non-interactive --agree-tos --register-unsafely-without-email \
                 --server {dir_url} --config-dir {d}/etc --work-dir {d}/work --logs-dir {d}/logs \
                 --dns-rfc2136 --dns-rfc2136-credentials {creds} --dns-rfc2136-propagation-seconds 1 -d {name}",
                ca_file = pebble.tls_ca_path.display(),
                dir_url = pebble.directory_url,
                creds = creds.display()
            ),
        )
    };
    let r = certbot("www.alice.friends.example");
    assert!(r.ok(), "certbot inside the sub-zone: {r:?}\n{}", pebble.log());
    let live = dir.path().join("etc/live/www.alice.friends.example/fullchain.pem");
    assert!(verifies(&island, &pebble, &std::fs::read_to_string(&live).unwrap()));
    let r = certbot("bob.friends.example");
    assert!(!r.ok(), "certbot outside the sub-zone: {r:?}");
    let log = std::fs::read_to_string(dir.path().join("logs/letsencrypt.log")).unwrap_or_default();
    assert!(log.contains("REFUSED"), "the update was refused: {}", &log[log.len().saturating_sub(3000)..]);
    // Nothing was left in the zone, and nothing was written outside the sub-zone.
    let ls = json(&island, "vps1", &["dns", "record", "ls", "friends.example"]).to_string();
    assert!(!ls.contains("_acme-challenge"), "{ls}");
}
