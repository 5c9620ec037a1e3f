//! End-to-end tests of bundles (`atoll bundle`), offline against the real PDS and PLC directory
//! (`@atproto/pds`, `@did-plc/server`) in the daemon's network namespace: published with the
//! CLI from `examples/bundles/`, allowed by handle, run from their `at://` URI, answered over
//! HTTP. Run as root.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use atoll_testkit::daemon::{Daemon, Netns};
use atoll_testkit::pds::{Account, HandleDns, Pds};

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bundles").join(name)
}

/// `atoll bundle publish DIR` as `account`, in `ns` (where the PDS is `localhost`): the URI.
fn publish(ns: &Netns, pds: &Pds, account: &Account, dir: &Path) -> String {
    let mut child = ns
        .command(BIN)
        .args(["bundle", "publish"])
        .arg(dir)
        .args(["--pds", &format!("http://localhost:{}", pds.port), "--identifier", &account.handle, "--password-stdin"])
        .args(["--insecure-http-port", &pds.port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(account.app_password.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "publish: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_published_wasm_bundle_runs_for_an_allowed_author_only_and_comes_back_with_the_daemon() {
    let ns = Netns::new();
    let pds = Pds::start_in(&ns);
    let (alice, bob) = (pds.create_account("alice.test"), pds.create_account("bob.test"));
    let dns = HandleDns::start_in(
        &ns,
        &[("_atproto.alice.test", &format!("did={}", alice.did)), ("_atproto.bob.test", &format!("did={}", bob.did))],
    );
    let root = tempfile::tempdir().unwrap();
    let (ns_addr, port) = (dns.addr.to_string(), pds.port.to_string());
    let args = ["--plc-url", &pds.plc_url, "--atproto-nameserver", &ns_addr, "--atproto-insecure-http-port", &port];
    let mut d = Daemon::start_in_netns(Path::new(BIN), root.path(), &args, &ns);

    let uri = publish(&ns, &pds, &alice, &example("hello-wasm"));
    assert_eq!(uri, format!("at://{}/dev.atoll.bundle/hello-wasm", alice.did));
    let by_handle = uri.replace(&alice.did, "alice.test");

    // Not allowed yet: refused, saying what to do.
    let r = d.cli(&["bundle", "run", &by_handle]);
    assert!(!r.ok() && r.stderr.contains("alice.test is not allowed") && r.stderr.contains("atoll bundle allow"), "{}", r.stderr);
    let allowed = d.ok(&["bundle", "allow", "alice.test"]);
    assert!(allowed.contains(&alice.did), "{allowed}");
    let list: serde_json::Value = serde_json::from_str(&d.ok(&["bundle", "allow", "--list", "--json"])).unwrap();
    assert_eq!(list[0]["handle"], "alice.test");

    let v: serde_json::Value = serde_json::from_str(&d.ok(&["bundle", "run", &by_handle, "--json"])).unwrap();
    assert_eq!((v["name"].as_str(), v["version"].as_str(), v["runtime"].as_str()), (Some("hello-wasm"), Some("1.0.0"), Some("wasm")));
    assert_eq!(v["uri"], uri, "the URI with the author's DID");
    let url = v["url"].as_str().unwrap().to_owned();
    let get = |url: &str, path: &str| ns.sh(&format!("curl -sS --fail --max-time 5 {url}{path}"));
    let (ok, out) = get(&url, "/hello");
    assert!(ok && out.trim() == "hello from wasm", "{out}");
    let (ok, out) = ns.sh(&format!("curl -sS -o /dev/null -w '%{{http_code}}' {url}/nope"));
    assert!(ok && out.trim() == "404", "{out}");

    // Another author's bundle is refused; so is a second bundle under a name taken.
    let bobs = publish(&ns, &pds, &bob, &example("hello-wasm"));
    let r = d.cli(&["bundle", "run", &bobs, "--name", "other"]);
    assert!(!r.ok() && r.stderr.contains("bob.test is not allowed"), "{}", r.stderr);
    let r = d.cli(&["bundle", "run", &by_handle]);
    assert!(!r.ok() && r.stderr.contains("a bundle named hello-wasm runs here"), "{}", r.stderr);
    let r = d.cli(&["bundle", "run", "at://alice.test/app.bsky.feed.post/3k"]);
    assert!(!r.ok() && r.stderr.contains("app.bsky.feed.post"), "{}", r.stderr);

    // Listed; back with the daemon, on the same port.
    let ls = d.ok(&["bundle", "ls"]);
    assert!(ls.contains("hello-wasm") && ls.contains("alice.test") && ls.contains(&url), "{ls}");
    d.restart();
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["bundle", "inspect", "hello-wasm", "--json"])).unwrap();
    assert_eq!(v["state"], "running");
    let (ok, out) = get(v["url"].as_str().unwrap(), "/hello");
    assert!(ok && out.trim() == "hello from wasm", "{out}");

    assert_eq!(d.ok(&["bundle", "rm", "hello-wasm"]).trim(), "Removed hello-wasm");
    assert!(!get(&url, "/hello").0, "no longer served");
    let r = d.cli(&["bundle", "inspect", "hello-wasm"]);
    assert!(!r.ok() && r.stderr.contains("no bundle named hello-wasm"), "{}", r.stderr);
}
