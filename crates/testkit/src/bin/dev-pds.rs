//! `dev-pds [HANDLE…]`: a local ATProto PDS to try bundles with, no internet needed
//! (`scripts/dev-pds.sh` installs it and runs this). The tests' fixtures on this host's
//! loopback: the official PDS and a PLC directory ([`atoll_testkit::pds::Pds`]), an account per
//! handle (default `alice.test`; handles end in `.test`) with an app password, and dnsmasq
//! answering their `_atproto` TXT records ([`atoll_testkit::pds::HandleDns`]). Prints the
//! accounts, the daemon flags that make Atoll use all three, and the commands to publish and
//! run an example; Enter (or the end of standard input) stops everything and removes the data.

use std::io::BufRead;

use atoll_testkit::pds::{HandleDns, Pds};

fn main() {
    let mut handles: Vec<String> = std::env::args().skip(1).collect();
    if handles.iter().any(|h| h == "-h" || h == "--help") {
        println!("usage: dev-pds [HANDLE…]   (handles end in .test; default alice.test)");
        return;
    }
    if handles.is_empty() {
        handles.push("alice.test".into());
    }
    if let Some(bad) = handles.iter().find(|h| !h.ends_with(".test") || h.len() <= ".test".len()) {
        eprintln!("dev-pds: {bad}: this PDS serves handles under .test only (alice.test)");
        std::process::exit(2);
    }
    eprintln!("starting a PLC directory and a PDS on 127.0.0.1…");
    let pds = Pds::start();
    let accounts: Vec<_> = handles.iter().map(|h| pds.create_account(h)).collect();
    let txt: Vec<(String, String)> = accounts.iter().map(|a| (format!("_atproto.{}", a.handle), format!("did={}", a.did))).collect();
    let txt: Vec<(&str, &str)> = txt.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let dns = HandleDns::start(&txt);
    let port = pds.port;
    let first = &accounts[0];

    println!("A local PDS (its data goes when this stops):");
    println!("  PDS               http://localhost:{port}");
    println!("  PLC directory     {}", pds.plc_url);
    println!("  handle resolver   {} (DNS: _atproto TXT records)", dns.addr);
    for a in &accounts {
        println!("  account           {}  {}  app password {}", a.handle, a.did, a.app_password);
    }
    println!();
    println!("Run the daemon with (stop the one scripts/up.sh started first: `pkill -x atoll`):");
    println!("  atoll daemon --plc-url {} --atproto-nameserver {} --atproto-insecure-http-port {port} &", pds.plc_url, dns.addr);
    println!("Then publish an example and run it:");
    println!(
        "  echo {} | atoll bundle publish examples/bundles/hello-wasm --pds http://localhost:{port} --identifier {} \
         --password-stdin --insecure-http-port {port}",
        first.app_password, first.handle
    );
    println!("  atoll bundle allow {}", first.handle);
    println!("  atoll bundle run at://{}/dev.atoll.bundle/hello-wasm", first.handle);
    println!("  curl \"$(atoll bundle inspect hello-wasm --json | jq -r .url)/hello\"");
    println!();
    println!("Press Enter to stop.");
    let _ = std::io::stdin().lock().lines().next();
    drop(dns);
    drop(pds);
}
