//! `names-bench RUNS ATOLL`: the island's public names on the test stage (vps1 and vps2
//! public, home1 behind NAT, pebble on a fourth public address; each its own network
//! namespace, real Nebula), printed as Markdown. `ATOLL` is the `atoll` binary. Run as root
//! (`bench/dns.sh` runs it after the query benchmark).
//!
//! - **Propagation**: `atoll dns record add` on home1 (a NAT'd member: the write goes to the
//!   leader through the mesh), timed from the command's start until both public hosts answer
//!   the new record (`dig` in the namespace of home1 every few milliseconds).
//! - **Certificates**: a certificate for a new name from pebble by DNS-01 against the island's
//!   zone: `atoll cert request` (until `cert ls` shows it valid) against Debian's lego
//!   (`--dns rfc2136` with a TSIG key the island delegated, against vps1), interleaved. lego asks
//!   vps1 to find the zone (`--dns.resolvers`: the stage has no other resolver) and skips its
//!   propagation check (`--dns.disable-cp`, which would look up the nameservers' addresses
//!   through the system's resolver): an UPDATE is answered only once vps1, which pebble asks,
//!   serves it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use atoll_testkit::island::{Island, Topology};
use atoll_testkit::pebble::Pebble;
use atoll_testkit::wait_for;

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|r| r.parse().expect("RUNS: a number")).unwrap_or(10);
    let atoll = PathBuf::from(args.next().expect("usage: names-bench RUNS ATOLL (the atoll binary)"));
    let mut t = Topology::new();
    t.add_public("vps1");
    t.add_public("vps2");
    t.add_nat("home1");
    t.add_public("ca");
    let island = Island::start(&atoll, t, &[]);
    let vps1 = island.host("vps1").addr;
    let vps2 = island.host("vps2").addr;
    island.ok("vps1", &["init", "--name", "friends", "--node-name", "vps1", "--public", &vps1.to_string()]);
    let code = island.invite("vps1", &["--public", "--name", "vps2"]);
    island.ok("vps2", &["join", "--public", &vps2.to_string(), &code]);
    let code = island.invite("vps1", &[]);
    island.ok("home1", &["join", "--name", "home1", &code]);
    let pebble = Pebble::start(&island.host("ca").ns, island.host("ca").addr, (vps1, 53).into(), None);
    let ca_file = pebble.tls_ca_path.to_str().unwrap().to_owned();
    island.ok("home1", &["domain", "add", "friends.example", "--acme-directory", &pebble.directory_url, "--acme-ca-file", &ca_file]);
    let dig = |server: std::net::Ipv4Addr, name: &str| {
        island.sh("home1", &format!("dig +norec +time=1 +tries=1 +short @{server} {name} A")).stdout
    };
    wait_for(60, "both public hosts to serve the zone", || {
        [vps1, vps2].iter().all(|s| !island.sh("home1", &format!("dig +norec +short @{s} friends.example SOA")).stdout.trim().is_empty())
    });

    let mut propagation = Vec::new();
    for i in 0..runs {
        let (name, value) = (format!("r{i}"), format!("192.0.2.{}", i % 250 + 1));
        let start = Instant::now();
        island.ok("home1", &["dns", "record", "add", "friends.example", &name, "A", &value]);
        let fqdn = format!("{name}.friends.example");
        for server in [vps1, vps2] {
            while dig(server, &fqdn).trim() != value {
                assert!(start.elapsed() < Duration::from_secs(30), "{fqdn} not on {server} after 30 s");
            }
        }
        propagation.push(start.elapsed());
    }

    // lego with a key for the whole zone, asking vps1 (pebble asks vps1 too).
    let key: serde_json::Value =
        serde_json::from_str(&island.ok("vps1", &["domain", "delegate", "friends.example", "--name", "lego.friends.example", "--json"]))
            .unwrap();
    let (mut ours, mut lego) = (Vec::new(), Vec::new());
    let scratch = tempfile::tempdir().unwrap();
    for i in 0..runs.min(10) {
        let name = format!("c{i}.friends.example");
        let start = Instant::now();
        island.ok("home1", &["cert", "request", &name]);
        loop {
            let list: Vec<serde_json::Value> = serde_json::from_str(&island.ok("home1", &["cert", "ls", "--json"])).unwrap();
            let c = list.iter().find(|c| c["names"][0] == name.as_str()).expect("the certificate asked for");
            if c["state"] == "valid" {
                break;
            }
            assert!(c["state"] != "failed" && start.elapsed() < Duration::from_secs(120), "{c}");
            std::thread::sleep(Duration::from_millis(20));
        }
        ours.push(start.elapsed());

        let name = format!("l{i}.friends.example");
        let dir = scratch.path().join(format!("lego{i}"));
        let start = Instant::now();
        let r = island.sh(
            "home1",
            &format!(
                "LEGO_CA_CERTIFICATES={ca_file} RFC2136_NAMESERVER={vps1}:53 RFC2136_TSIG_ALGORITHM=hmac-sha256. \
                 RFC2136_TSIG_KEY=lego.friends.example. RFC2136_TSIG_SECRET={secret} RFC2136_POLLING_INTERVAL=1 \
                 RFC2136_PROPAGATION_TIMEOUT=60 lego --accept-tos --email admin@friends.example --server {dir_url} \
                 --path {path} --dns rfc2136 --dns.resolvers {vps1}:53 --dns.disable-cp --domains {name} run",
                secret = key["secret"].as_str().unwrap(),
                dir_url = pebble.directory_url,
                path = dir.display()
            ),
        );
        assert!(r.ok(), "lego: {r:?}");
        lego.push(start.elapsed());
    }

    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        ms(&v[v.len() / 2])
    };
    let worst = |v: &[Duration]| v.iter().map(ms).fold(0.0, f64::max);
    println!(
        "Record change to every public host answering it: {runs} runs, `dns record add` on home1 (behind NAT), both public hosts asked with dig.\n"
    );
    println!("| | median (ms) | worst (ms) |\n|---|---|---|");
    let w = worst(&propagation);
    println!("| record add → answered by vps1 and vps2 | {:.1} | {w:.1} |", median(&mut propagation));
    println!("\nA certificate for one new name from pebble by DNS-01 against the island's zone ({} runs each, interleaved):\n", ours.len());
    println!("| client | median (ms) | worst (ms) | ratio |\n|---|---|---|---|");
    let (wo, wl) = (worst(&ours), worst(&lego));
    let (mo, ml) = (median(&mut ours), median(&mut lego));
    println!("| atoll cert request (until `cert ls` shows it valid) | {mo:.0} | {wo:.0} | 1.00x |");
    println!("| lego 4.9 --dns rfc2136 with a delegated key | {ml:.0} | {wl:.0} | {:.2}x |", ml / mo);
}
