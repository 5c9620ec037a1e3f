//! End-to-end tests of bundles (`atoll bundle`), offline against the real PDS and PLC directory
//! (`@atproto/pds`, `@did-plc/server`) in the daemon's network namespace: published with the
//! CLI from `examples/bundles/`, allowed by handle, run from their `at://` URI, answered over
//! HTTP. Run as root.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use atoll_testkit::daemon::{Daemon, Netns};
use atoll_testkit::forward::Forward;
use atoll_testkit::pds::{Account, HandleDns, Pds};
use atoll_testkit::webdriver::Browser;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bundles").join(name)
}

/// `atoll bundle publish DIR` as `account`, in `ns` (where the PDS is `localhost`): the URI.
fn publish(ns: &Netns, pds: &Pds, account: &Account, dir: &Path) -> String {
    pds.publish(ns.command(BIN), account, dir)
}

/// The same from the test's own namespace (the PDS there).
fn publish_from_host(pds: &Pds, account: &Account, dir: &Path) -> String {
    pds.publish(std::process::Command::new(BIN), account, dir)
}

#[test]
fn a_published_wasm_bundle_runs_for_an_allowed_author_only_and_comes_back_with_the_daemon() {
    let ns = Netns::new();
    let pds = Pds::start_in(&ns);
    let (alice, bob, carol) = (pds.create_account("alice.test"), pds.create_account("bob.test"), pds.create_account("carol.test"));
    let dns = HandleDns::start_in(
        &ns,
        &[
            ("_atproto.alice.test", &format!("did={}", alice.did)),
            ("_atproto.bob.test", &format!("did={}", bob.did)),
            ("_atproto.carol.test", &format!("did={}", carol.did)),
        ],
    );
    let root = tempfile::tempdir().unwrap();
    let (ns_addr, port) = (dns.addr.to_string(), pds.port.to_string());
    let args = ["--plc-url", &pds.plc_url, "--atproto-nameserver", &ns_addr, "--atproto-insecure-http-port", &port, "--bundle-poll", "1s"];
    let mut d = Daemon::start_in_netns(Path::new(BIN), root.path(), &args, &ns);

    let dir = example("hello-wasm");
    let (pds_url, pds_port) = (format!("http://localhost:{}", pds.port), pds.port.to_string());
    let publish_args = [
        "bundle",
        "publish",
        dir.to_str().unwrap(),
        "--pds",
        &pds_url,
        "--identifier",
        "alice.test",
        "--password-stdin",
        "--insecure-http-port",
        &pds_port,
    ];
    let r = d.cli(&publish_args);
    assert!(!r.ok() && r.stderr.contains("no app password on standard input"), "nothing sent without a password: {}", r.stderr);
    let uri = publish(&ns, &pds, &alice, &dir);
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
    // Who it is is checked before anything of theirs is fetched: a record bob never wrote
    // gets the same answer, not "no such record".
    let r = d.cli(&["bundle", "run", "at://bob.test/dev.atoll.bundle/nope"]);
    assert!(!r.ok() && r.stderr.contains("bob.test is not allowed"), "{}", r.stderr);
    // An unregistered did:plc is named as such.
    let r = d.cli(&["bundle", "run", "at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/dev.atoll.bundle/x"]);
    assert!(!r.ok() && r.stderr.contains("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa is not registered"), "{}", r.stderr);
    let r = d.cli(&["bundle", "run", &by_handle]);
    assert!(!r.ok() && r.stderr.contains("a bundle named hello-wasm runs here"), "{}", r.stderr);
    // Trust follows the social graph: allowing whom alice follows lets bob in (she follows him),
    // and not carol (she does not).
    pds.follow(&alice, &bob.did);
    let out = d.ok(&["bundle", "allow", "--follows-of", "alice.test"]);
    assert!(out.contains("the accounts followed by") && out.contains(&alice.did), "{out}");
    let listed = d.ok(&["bundle", "allow", "--list"]);
    assert!(listed.contains("accounts it follows"), "{listed}");
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["bundle", "run", &bobs, "--name", "other", "--json"])).unwrap();
    assert_eq!(v["did"], bob.did.as_str(), "{v}");
    let carols = publish(&ns, &pds, &carol, &example("hello-wasm"));
    let r = d.cli(&["bundle", "run", &carols, "--name", "third"]);
    assert!(!r.ok() && r.stderr.contains("carol.test is not allowed"), "{}", r.stderr);
    d.ok(&["bundle", "rm", "other"]);
    let r = d.cli(&["bundle", "run", "at://alice.test/app.bsky.feed.post/3k"]);
    assert!(!r.ok() && r.stderr.contains("app.bsky.feed.post"), "{}", r.stderr);
    // Hostile records through the daemon: a wrong type, nesting past the limit; each refused
    // naming the problem, and the daemon serves on.
    let session = pds.xrpc_post(
        "com.atproto.server.createSession",
        None,
        &serde_json::json!({"identifier": alice.handle, "password": alice.password}),
    );
    let jwt = session["accessJwt"].as_str().unwrap().to_owned();
    let put = |rkey: &str, record: serde_json::Value| {
        let body =
            serde_json::json!({"repo": alice.did, "collection": "dev.atoll.bundle", "rkey": rkey, "record": record, "validate": false});
        pds.xrpc_post("com.atproto.repo.putRecord", Some(&jwt), &body);
        format!("at://alice.test/dev.atoll.bundle/{rkey}")
    };
    let base = serde_json::json!({"$type": "dev.atoll.bundle", "name": "bad", "version": "1.0.0", "runtime": "oci", "entry": "x", "routes": "GET /hello"});
    let r = d.cli(&["bundle", "run", &put("wrong", base.clone())]);
    assert!(!r.ok() && r.stderr.contains("`routes`: invalid type: string"), "{}", r.stderr);
    let mut deep = serde_json::json!(1);
    for _ in 0..40 {
        deep = serde_json::json!([deep]);
    }
    let r = d.cli(&["bundle", "run", &put("deep", serde_json::json!({"$type": "dev.atoll.bundle", "name": "deep", "x": deep}))]);
    assert!(!r.ok() && r.stderr.contains("nests deeper than the limit of 32 levels"), "{}", r.stderr);

    // Listed; back with the daemon, on the same port.
    let ls = d.ok(&["bundle", "ls"]);
    assert!(ls.contains("hello-wasm") && ls.contains("alice.test") && ls.contains(&url), "{ls}");
    d.restart();
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["bundle", "inspect", "hello-wasm", "--json"])).unwrap();
    assert_eq!(v["state"], "running");
    let (ok, out) = get(v["url"].as_str().unwrap(), "/hello");
    assert!(ok && out.trim() == "hello from wasm", "{out}");

    // Hot reload: a new version published while requests keep coming is warmed and swapped
    // in, and none of them fails.
    let v2 = root.path().join("hello-wasm-v2");
    std::fs::create_dir_all(&v2).unwrap();
    let wat = std::fs::read_to_string(example("hello-wasm").join("main.wat")).unwrap();
    std::fs::write(v2.join("main.wat"), wat.replace("hello from wasm", "hello, version2")).unwrap();
    let manifest = std::fs::read_to_string(example("hello-wasm").join("bundle.json")).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&manifest.replace("\"1.0.0\"", "\"1.0.1\"")).unwrap();
    manifest["cron"] = serde_json::json!([{"schedule": "* * * * * *", "handler": "_start"}]);
    std::fs::write(v2.join("bundle.json"), manifest.to_string()).unwrap();
    let url = v["url"].as_str().unwrap().to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = std::thread::spawn({
        let (stop, ns, url) = (stop.clone(), ns.handle(), url.clone());
        move || {
            let (mut sent, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (ok, out) = ns.sh(&format!("curl -sS --fail --max-time 5 {url}/hello"));
                sent += 1;
                if !ok || !["hello from wasm", "hello, version2"].contains(&out.trim()) {
                    failed.push(out);
                }
            }
            (sent, failed)
        }
    });
    assert_eq!(publish(&ns, &pds, &alice, &v2), uri, "the same record, updated");
    atoll_testkit::wait_for(30, "the new version to answer", || get(&url, "/hello").1.trim() == "hello, version2");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = load.join().unwrap();
    assert!(failed.is_empty() && sent > 0, "{} of {sent} requests failed during the reload: {failed:?}", failed.len());
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["bundle", "inspect", "hello-wasm", "--json"])).unwrap();
    assert_eq!((v["version"].as_str(), v["url"].as_str()), (Some("1.0.1"), Some(url.as_str())), "{v}");
    // The new version's cron job (every second) fires.
    let runs = || {
        let m = String::from_utf8_lossy(&d.http("GET", "/metrics", None, b"").body).into_owned();
        m.lines()
            .find(|l| l.starts_with("atoll_bundle_cron_runs_total{") && l.contains("hello-wasm") && l.contains("outcome=\"ok\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    atoll_testkit::wait_for(15, "the cron job to run twice", || runs() >= 2);

    // A version that asks for more (a host to reach) is held for the operator, not swapped in.
    manifest["version"] = "1.0.2".into();
    manifest["permissions"] = serde_json::json!({"net": ["api.example.com"]});
    std::fs::write(v2.join("bundle.json"), manifest.to_string()).unwrap();
    publish(&ns, &pds, &alice, &v2);
    let held = || -> serde_json::Value { serde_json::from_str(&d.ok(&["bundle", "inspect", "hello-wasm", "--json"])).unwrap() };
    atoll_testkit::wait_for(30, "the wider version to be held", || held()["update_held"].is_string());
    let v = held();
    assert_eq!(v["version"], "1.0.1", "{v}");
    assert!(v["update_held"].as_str().unwrap().contains("net +api.example.com"), "{v}");
    assert!(d.ok(&["bundle", "inspect", "hello-wasm"]).contains("Update:   version 1.0.2 is held"));

    // Slow clients holding far more connections than a bundle serves at once cost that bundle
    // a wait, not the daemon its descriptors: the API answers, and so does the bundle once
    // their heads time out.
    let port = url.rsplit(':').next().unwrap();
    let slow = concat!(
        "import socket, sys, time\n",
        "held = []\n",
        "for _ in range(400):\n",
        "    s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n",
        "    s.sendall(b'GET /hello HTTP/1.1\\r\\nHost: x\\r\\n')\n",
        "    held.append(s)\n",
        "print('held', flush=True)\n",
        "time.sleep(60)\n",
    );
    let mut slowloris = ns.command("python3").args(["-c", slow, port]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(slowloris.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "held");
    let started = std::time::Instant::now();
    assert!(d.ok(&["bundle", "ls"]).contains("hello-wasm"), "the API answers");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the API answered in {:?}", started.elapsed());
    let (ok, out) = ns.sh(&format!("curl -sS --fail --max-time 30 {url}/hello"));
    assert!(ok && out.trim() == "hello, version2", "the bundle answers once the slow heads time out: {out}");
    let _ = slowloris.kill();
    let _ = slowloris.wait();

    // Names the store uses, or that are no DNS label, are refused; so is a path for one.
    let r = d.cli(&["bundle", "run", &by_handle, "--name", "allow"]);
    assert!(!r.ok() && r.stderr.contains("reserved"), "{}", r.stderr);
    let r = d.cli(&["bundle", "run", &by_handle, "--name", "-"]);
    assert!(!r.ok() && r.stderr.contains("DNS label"), "{}", r.stderr);
    assert_eq!(d.http("DELETE", "/v1/bundles/..%2F..%2Fbundles%2Fallow", None, b"").status, 404);

    let data = root.path().join("data/bundles/data/hello-wasm");
    assert!(data.is_dir(), "{} while it runs", data.display());
    assert_eq!(d.ok(&["bundle", "rm", "hello-wasm"]).trim(), "Removed hello-wasm");
    assert!(!data.exists(), "its files went with it: the next bundle of that name starts empty");
    assert!(!get(&url, "/hello").0, "no longer served");
    let r = d.cli(&["bundle", "inspect", "hello-wasm"]);
    assert!(!r.ok() && r.stderr.contains("no bundle named hello-wasm"), "{}", r.stderr);
}

/// A web server at a public-looking address of `ns` (TEST-NET-2, on its loopback device):
/// what bundles may reach when they declare it. Serves `/xrpc/_health` → `{"version":"test"}`.
struct PublicServer {
    addr: String,
    child: std::process::Child,
}

impl Drop for PublicServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn public_server(ns: &Netns, scratch: &Path) -> PublicServer {
    let (ok, out) = ns.sh("ip addr add 198.51.100.7/32 dev lo");
    assert!(ok, "{out}");
    let dir = scratch.join("public-www");
    std::fs::create_dir_all(dir.join("xrpc")).unwrap();
    std::fs::write(dir.join("xrpc/_health"), r#"{"version":"test"}"#).unwrap();
    let child = ns
        .command("python3")
        .args(["-m", "http.server", "8081", "--bind", "198.51.100.7", "--directory"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = PublicServer { addr: "198.51.100.7:8081".into(), child };
    atoll_testkit::wait_for(20, "the public web server", || ns.sh(&format!("curl -sS --fail http://{}/xrpc/_health", server.addr)).0);
    server
}

/// `examples/bundles/hello-oci` with its image swapped for busybox imported from the host
/// (these tests are offline; the example names docker.io's busybox), and a CGI script that
/// shows the secret `TOKEN` it declares.
fn offline_oci_example(scratch: &Path, image: &str, net: &[String]) -> PathBuf {
    let dir = scratch.join("hello-oci");
    std::fs::create_dir_all(&dir).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(example("hello-oci").join("bundle.json")).unwrap()).unwrap();
    m["entry"] = image.into();
    let script = concat!(
        r#"mkdir -p /tmp/www/cgi-bin && printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho "token=$TOKEN"\n' > /tmp/www/cgi-bin/token && "#,
        r#"printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho "greeting=$GREETING"\n' > /tmp/www/cgi-bin/greeting && "#,
        r#"printf '#!/bin/sh\nsleep 2\necho Content-Type: text/plain\necho\necho slow\n' > /tmp/www/cgi-bin/slow && "#,
        r#"printf '#!/bin/sh\nwhile :; do :; done\n' > /tmp/www/cgi-bin/spin && "#,
        // An HTTP request through the proxy the bundle was given (busybox's nc).
        r#"printf '%s\n' '#!/bin/sh' 'echo Content-Type: text/plain' 'echo' 'p=${http_proxy#http://}' "#,
        r#"'printf "GET http://%s HTTP/1.0\r\n\r\n" "$QUERY_STRING" | nc -w 5 ${p%:*} ${p##*:} 2>&1 || echo "fetch failed through $p"' > /tmp/www/cgi-bin/fetch && "#,
        r#"chmod +x /tmp/www/cgi-bin/token /tmp/www/cgi-bin/fetch /tmp/www/cgi-bin/greeting /tmp/www/cgi-bin/slow /tmp/www/cgi-bin/spin && "#
    );
    m["command"][2] = format!("{script}{}", m["command"][2].as_str().unwrap()).into();
    m["routes"].as_array_mut().unwrap().push(serde_json::json!({"method": "GET", "path": "/cgi-bin/token", "handler": "http"}));
    m["routes"].as_array_mut().unwrap().push(serde_json::json!({"method": "GET", "path": "/cgi-bin/fetch", "handler": "http"}));
    m["routes"].as_array_mut().unwrap().push(serde_json::json!({"method": "GET", "path": "/cgi-bin/greeting", "handler": "http"}));
    m["routes"].as_array_mut().unwrap().push(serde_json::json!({"method": "GET", "path": "/cgi-bin/slow", "handler": "http"}));
    m["routes"].as_array_mut().unwrap().push(serde_json::json!({"method": "GET", "path": "/cgi-bin/spin", "handler": "http"}));
    // Two requests at once per instance: a third waits, or another instance starts.
    m["limits"]["maxConcurrent"] = 2.into();
    m["limits"]["cpuMsPerRequest"] = 300.into();
    m["permissions"] = serde_json::json!({"net": net, "env": ["GREETING"]});
    m["secrets"] = serde_json::json!([{"name": "TOKEN", "description": "shown by /cgi-bin/token"}]);
    std::fs::write(dir.join("bundle.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    dir
}

/// GETs `url` from `ns`, expecting a 504 for CPU time well within the bundle's wall time (5 s
/// or more); returns curl's success and the body.
fn cut_by_cpu(ns: &Netns, url: &str) -> (bool, String) {
    let started = std::time::Instant::now();
    let (ok, out) = ns.sh(&format!("curl -sS -w ' %{{http_code}}' --max-time 20 {url}"));
    let took = started.elapsed();
    assert!(out.trim().ends_with("504"), "{out}");
    assert!(took < std::time::Duration::from_secs(4), "cut by CPU time, not the wall time: {took:?} ({out})");
    (ok, out)
}

#[test]
fn an_oci_bundle_runs_as_a_container_without_a_way_out_and_is_replaced_when_it_stops() {
    let ns = Netns::new();
    let pds = Pds::start_in(&ns);
    let alice = pds.create_account("alice.test");
    let dns = HandleDns::start_in(&ns, &[("_atproto.alice.test", &format!("did={}", alice.did))]);
    let root = tempfile::tempdir().unwrap();
    let (ns_addr, port) = (dns.addr.to_string(), pds.port.to_string());
    let args = [
        "--plc-url",
        &pds.plc_url,
        "--atproto-nameserver",
        &ns_addr,
        "--atproto-insecure-http-port",
        &port,
        "--bundle-idle-timeout",
        "5s",
        "--web",
        "127.0.0.1:0",
    ];
    let d = Daemon::start_in_netns(Path::new(BIN), root.path(), &args, &ns);
    let image = d.import_busybox(root.path());

    // It may reach a public server, and declares a loopback address too (which it may not).
    let public = public_server(&ns, root.path());
    let allowed = public.addr.clone();
    let loopback = format!("127.0.0.1:{}", pds.port);
    let uri = publish(&ns, &pds, &alice, &offline_oci_example(root.path(), image, &[allowed.clone(), loopback.clone()]));
    d.ok(&["bundle", "allow", "alice.test"]);
    let r = d.cli(&["bundle", "run", &uri]);
    assert!(!r.ok() && r.stderr.contains("secret TOKEN is required") && r.stderr.contains("--secret TOKEN=@FILE"), "{}", r.stderr);
    let secret = "s3cret-7c1e0d9a";
    let file = root.path().join("token");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let arg = format!("TOKEN=@{}", file.display());
    let r = d.cli(&["bundle", "run", &uri, "--secret", &arg, "--env", "NOPE=1"]);
    assert!(
        !r.ok() && r.stderr.contains("env NOPE: bundle hello-oci does not declare it in permissions.env (it declares GREETING)"),
        "{}",
        r.stderr
    );
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["bundle", "run", &uri, "--secret", &arg, "-e", "GREETING=hi there", "--json"])).unwrap();
    assert_eq!((v["runtime"].as_str(), v["state"].as_str()), (Some("oci"), Some("running")), "{v}");
    let url = v["url"].as_str().unwrap().to_owned();
    let get = |path: &str| ns.sh(&format!("curl -sS --fail --max-time 10 {url}{path}"));
    let cid = v["record_cid"].as_str().unwrap();
    let container = format!("atoll-bundle-hello-oci-{}", &cid[cid.len() - 8..]);
    let (ok, out) = get("/hello");
    assert!(ok && out.trim() == "hello from oci", "{out}");
    let (ok, out) = get("/cgi-bin/greeting");
    assert!(ok && out.trim() == "greeting=hi there", "a declared env name gets its value: {out}");
    // Only the manifest's routes reach the container.
    let (ok, out) = ns.sh(&format!("curl -sS -o /dev/null -w '%{{http_code}}' {url}/index.html"));
    assert!(ok && out.trim() == "404", "{out}");

    // The secret reaches the bundle, and nothing that shows the bundle or its container.
    let (ok, out) = get("/cgi-bin/token");
    assert!(ok && out.trim() == format!("token={secret}"), "{out}");
    for shown in [
        d.ok(&["bundle", "inspect", "hello-oci", "--json"]),
        d.ok(&["bundle", "ls", "--json"]),
        d.ok(&["inspect", &container]),
        String::from_utf8_lossy(&d.http("GET", "/metrics", None, b"").body).into_owned(),
        d.log_text(),
    ] {
        assert!(!shown.contains(secret), "the secret shows: {shown}");
    }
    assert!(d.ok(&["bundle", "inspect", "hello-oci"]).contains("Secrets:  TOKEN"));

    // Egress: the declared host through the bundle's proxy; another is refused by it, and
    // going around the proxy finds no way out.
    let (ok, out) = get(&format!("/cgi-bin/fetch?{allowed}/xrpc/_health"));
    assert!(ok && out.contains("version"), "{out}");
    let plc = pds.plc_url.rsplit(':').next().unwrap().trim_end_matches('/');
    let (ok, out) = get(&format!("/cgi-bin/fetch?127.0.0.1:{plc}/"));
    assert!(ok && out.contains("403") && out.contains("not in the bundle's permissions.net"), "{out}");
    let (ok, out) = get(&format!("/cgi-bin/fetch?{loopback}/xrpc/_health"));
    assert!(ok && out.contains("403") && out.contains("loopback") && !out.contains("version"), "declared, still refused: {out}");
    assert!(d.log_text().contains("denied: a connection to a host the bundle did not declare"));

    // Its container: labelled, on the internal network.
    let c = d.container(&container);
    assert_eq!(c["spec"]["labels"]["atoll.bundle"], "hello-oci", "{c}");
    let nets: Vec<&str> = c["endpoints"].as_array().unwrap().iter().map(|e| e["network"].as_str().unwrap()).collect();
    assert_eq!(nets, ["atoll-bundles"], "{c}");
    let net: serde_json::Value = serde_json::from_str(&d.ok(&["network", "inspect", "atoll-bundles"])).unwrap();
    assert_eq!(net[0]["internal"], true, "{net}");

    // A container that stops is replaced on the next request.
    d.ok(&["rm", "-f", &container]);
    let (ok, out) = get("/hello");
    assert!(ok && out.trim() == "hello from oci", "{out}");

    // Its cgroup holds it to one CPU; a request past its 300 ms of CPU time (a CGI loop) is
    // cut with a 504 well before its 5 s wall time, and the container replaced.
    assert_eq!(d.container(&container)["spec"]["resources"]["cpus_milli"], 1000);
    let (ok, out) = cut_by_cpu(&ns, &format!("{url}/cgi-bin/spin"));
    assert!(ok && out.contains("300 ms of CPU time"), "{out}");
    let (ok, out) = get("/hello");
    assert!(ok && out.trim() == "hello from oci", "{out}");
    assert!(d.ok(&["bundle", "logs", "hello-oci"]).contains("ms of CPU time"), "the cut is in the bundle's log");

    // Idle: scaled to zero; the next request starts it again (a cold start).
    let stats = || -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&d.ok(&["bundle", "inspect", "hello-oci", "--json"])).unwrap();
        v["stats"].clone()
    };
    atoll_testkit::wait_for(30, "the idle bundle to scale to zero", || stats()["instances"] == 0);
    let r = d.cli(&["inspect", &container]);
    assert!(!r.ok() && r.stderr.contains("no such container"), "{}", r.stderr);
    let cold = stats()["cold_starts"].as_u64().unwrap();
    let (ok, out) = get("/hello");
    assert!(ok && out.trim() == "hello from oci", "{out}");
    let v = stats();
    assert_eq!((v["instances"].as_i64(), v["cold_starts"].as_u64()), (Some(1), Some(cold + 1)), "{v}");
    let metrics = String::from_utf8_lossy(&d.http("GET", "/metrics", None, b"").body).into_owned();
    assert!(
        metrics.contains(&format!("atoll_bundle_requests_total{{bundle=\"hello-oci\",did=\"{}\",status=\"200\"}}", alice.did)),
        "{metrics}"
    );

    // Its log: requests with their IDs, the denied connection, its containers' starts; and a
    // follower sees new requests as they come, until the bundle goes.
    let log = d.ok(&["bundle", "logs", "hello-oci"]);
    for want in ["access   200", "GET /hello", "(request ", "denied", "not in the bundle's permissions.net", "instance", "a cold start"] {
        assert!(log.contains(want), "{want} in {log}");
    }
    assert!(!log.contains(secret), "{log}");
    assert_eq!(d.ok(&["bundle", "logs", "-n", "1", "--json", "hello-oci"]).lines().count(), 1);
    let mut follower = std::process::Command::new(BIN)
        .args(["bundle", "logs", "-f", "-n", "0", "hello-oci"])
        .env("ATOLL_SOCKET", &d.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // Regression: a request made before the follower had found the log's end (it starts there,
    // `-n 0`) was never shown to it, and the test waited forever. Requests are made until one
    // is seen; each waits a few seconds for its line. (A cold start may come first, if the
    // bundle went idle meanwhile.)
    let mut seen = None;
    for _ in 0..10 {
        let (ok, out) = get("/hello?followed");
        assert!(ok, "{out}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(l) if l.contains(" access ") => {
                    seen = Some(l);
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if seen.is_some() {
            break;
        }
    }
    let line = seen.expect("the follower shows a request made after it started");
    assert!(line.contains("GET /hello") && line.contains(" 200 "), "{line}");

    // The dashboard lists it: owner, version, routes, instances, traffic.
    let login = d.ok(&["web", "token"]).trim().to_owned();
    let target: std::net::SocketAddr = login.strip_prefix("http://").unwrap().split('/').next().unwrap().parse().unwrap();
    let relay = Forward::start(&ns, target);
    let browser = Browser::start();
    browser.goto(&login.replacen(&target.to_string(), &relay.addr.to_string(), 1));
    atoll_testkit::wait_for(30, "the dashboard", || browser.find("nav a[href='#/bundles']").is_some());
    browser.type_into("nav a[href='#/bundles']", "\u{E007}");
    atoll_testkit::wait_for(30, "the bundles view", || {
        let row = browser.text("#bundles tr[data-bundle='hello-oci']");
        row.contains("alice.test") && row.contains("1.0.0") && row.contains("GET /hello") && row.contains("running")
    });

    assert_eq!(d.ok(&["bundle", "rm", "hello-oci"]).trim(), "Removed hello-oci");
    assert!(follower.wait().unwrap().success(), "the follower ends with the bundle");
    let r = d.cli(&["inspect", &container]);
    assert!(!r.ok(), "the container went with the bundle");

    // Several instances: two kept warm; a third starts when both are full, and stops once idle.
    let v: serde_json::Value = serde_json::from_str(&d.ok(&[
        "bundle",
        "run",
        &uri,
        "--name",
        "pair",
        "--secret",
        &arg,
        "--min-instances",
        "2",
        "--max-instances",
        "3",
        "--json",
    ]))
    .unwrap();
    assert_eq!((v["state"].as_str(), v["stats"]["instances"].as_i64()), (Some("running"), Some(2)), "{v}");
    let base = format!("atoll-bundle-pair-{}", &cid[cid.len() - 8..]);
    for c in [base.clone(), format!("{base}-1")] {
        assert_eq!(d.container(&c)["spec"]["labels"]["atoll.bundle"], "pair", "{c}");
    }
    let pair = v["url"].as_str().unwrap().to_owned();
    let instances = || -> i64 {
        let v: serde_json::Value = serde_json::from_str(&d.ok(&["bundle", "inspect", "pair", "--json"])).unwrap();
        v["stats"]["instances"].as_i64().unwrap()
    };
    let burst = std::thread::spawn({
        let (ns, pair) = (ns.handle(), pair.clone());
        move || ns.sh(&format!("for i in 1 2 3 4 5; do curl -sS --max-time 10 {pair}/cgi-bin/slow & done; wait"))
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while instances() != 3 {
        assert!(std::time::Instant::now() < deadline, "a third instance did not start under the burst:\n{}", d.log_text());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let burst = burst.join().unwrap();
    assert!(burst.1.matches("slow").count() >= 4, "{burst:?}");
    atoll_testkit::wait_for(30, "the extra instance to stop once idle", || instances() == 2);
    d.ok(&["bundle", "rm", "pair"]);
    for c in [base.clone(), format!("{base}-1"), format!("{base}-2")] {
        assert!(!d.cli(&["inspect", &c]).ok(), "{c} went with the bundle: {}\n{}", d.ok(&["ps", "-a"]), d.log_text());
    }
    let r = d.cli(&["bundle", "run", &uri, "--name", "many", "--min-instances", "3", "--max-instances", "2"]);
    assert!(!r.ok() && r.stderr.contains("max_instances: 2 is fewer than min_instances (3)"), "{}", r.stderr);
}

#[test]
fn a_deno_bundle_runs_in_a_container_sandbox_and_reaches_only_what_it_declares() {
    let ns = Netns::new();
    let pds = Pds::start_in(&ns);
    let alice = pds.create_account("alice.test");
    let dns = HandleDns::start_in(&ns, &[("_atproto.alice.test", &format!("did={}", alice.did))]);
    let root = tempfile::tempdir().unwrap();
    let (ns_addr, port) = (dns.addr.to_string(), pds.port.to_string());
    let args = ["--plc-url", &pds.plc_url, "--atproto-nameserver", &ns_addr, "--atproto-insecure-http-port", &port];
    let d = Daemon::start_in_netns(Path::new(BIN), root.path(), &args, &ns);

    // The example, plus a route that tries what it did not declare, and a cron job.
    let dir = root.path().join("hello-deno");
    std::fs::create_dir_all(&dir).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(example("hello-deno").join("bundle.json")).unwrap()).unwrap();
    m["routes"].as_array_mut().unwrap().push(serde_json::json!({"method": "GET", "path": "/peek", "handler": "peek"}));
    m["routes"].as_array_mut().unwrap().push(serde_json::json!({"method": "GET", "path": "/out/:target", "handler": "out"}));
    m["routes"].as_array_mut().unwrap().push(serde_json::json!({"method": "GET", "path": "/spin", "handler": "spin"}));
    m["limits"] = serde_json::json!({"cpuMsPerRequest": 300, "wallTimeoutMs": 20000});
    m["cron"] = serde_json::json!([{"schedule": "* * * * * *", "handler": "tick"}]);
    let public = public_server(&ns, root.path());
    let loopback = format!("127.0.0.1:{}", pds.port);
    m["permissions"] = serde_json::json!({"net": [public.addr.clone(), loopback.clone()]});
    std::fs::write(dir.join("bundle.json"), m.to_string()).unwrap();
    let code = std::fs::read_to_string(example("hello-deno").join("main.ts")).unwrap();
    let extra = r#"
export async function peek(_req: Request): Promise<Response> {
  return new Response(await Deno.readTextFile("/etc/hostname"));
}
export async function out(_req: Request, ctx: { params: Record<string, string> }): Promise<Response> {
  const r = await fetch(`http://${ctx.params.target}/xrpc/_health`);
  return new Response(await r.text(), { status: r.status });
}
export function tick(_req: Request): Response {
  return new Response("ticked");
}
export function spin(): Response {
  for (;;) {}
}
"#;
    std::fs::write(dir.join("main.ts"), format!("{code}{extra}")).unwrap();

    let uri = publish(&ns, &pds, &alice, &dir);
    d.ok(&["bundle", "allow", "alice.test"]);
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["bundle", "run", &uri, "--json"])).unwrap();
    assert_eq!((v["runtime"].as_str(), v["state"].as_str()), (Some("deno"), Some("running")), "{v}");
    let url = v["url"].as_str().unwrap().to_owned();
    let (ok, out) = ns.sh(&format!("curl -sS --fail --max-time 10 {url}/hello"));
    assert!(ok && out.trim() == "hello from deno", "{out}");
    // Reading a path it did not declare is denied, and the next request still answers.
    let (ok, out) = ns.sh(&format!("curl -sS -w ' %{{http_code}}' --max-time 10 {url}/peek"));
    assert!(ok && out.trim().ends_with("403") && out.contains("denied"), "{out}");
    let (ok, out) = ns.sh(&format!("curl -sS --fail --max-time 10 {url}/hello"));
    assert!(ok && out.trim() == "hello from deno", "{out}");

    // The declared host is reached (through the sandbox's egress proxy); another is denied.
    let (ok, out) = ns.sh(&format!("curl -sS --fail --max-time 10 {url}/out/{}", public.addr));
    assert!(ok && out.contains("version"), "{out}");
    let plc = pds.plc_url.rsplit(':').next().unwrap().trim_end_matches('/');
    let (ok, out) = ns.sh(&format!("curl -sS -w ' %{{http_code}}' --max-time 10 {url}/out/127.0.0.1:{plc}"));
    assert!(ok && out.trim().ends_with("403") && out.contains("denied"), "undeclared: {out}");
    // Declared, but loopback: Deno lets it go, the sandbox's proxy does not.
    let (ok, out) = ns.sh(&format!("curl -sS -w ' %{{http_code}}' --max-time 10 {url}/out/{loopback}"));
    assert!(ok && out.trim().ends_with("403") && out.contains("loopback") && !out.contains("version"), "declared loopback: {out}");

    // Its instance is a sandbox container: on the internal network, read-only root, no
    // capabilities.
    let ps: serde_json::Value = serde_json::from_str(&d.ok(&["ps", "--json"])).unwrap();
    let name = ps.as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).find(|n| n.starts_with("atoll-sandbox-hello-deno"));
    let name = name.unwrap_or_else(|| panic!("no sandbox container in {ps}")).to_owned();
    let sandbox = d.container(&name);
    let spec = &sandbox["spec"];
    assert!(spec["labels"]["atoll.bundle.sandbox"].is_string(), "{spec}");
    assert_eq!((spec["network"].as_str(), spec["read_only"].as_bool()), (Some("bridge"), Some(true)), "{spec}");
    let nets: Vec<&str> = sandbox["endpoints"].as_array().unwrap().iter().map(|e| e["network"].as_str().unwrap()).collect();
    assert_eq!(nets, ["atoll-bundles"], "{sandbox}");
    assert_eq!(spec["cap_drop"], serde_json::json!(["ALL"]), "{spec}");
    assert_eq!(spec["resources"]["cpus_milli"], 1000, "{spec}");

    let v: serde_json::Value = serde_json::from_str(&d.ok(&["bundle", "inspect", "hello-deno", "--json"])).unwrap();
    assert_eq!((v["stats"]["instances"].as_i64(), v["stats"]["cold_starts"].as_u64()), (Some(1), Some(1)), "{v}");
    let log = d.ok(&["bundle", "logs", "hello-deno"]);
    assert!(log.contains("denied") && log.contains("GET /peek: denied:"), "the denied read is in the bundle's log: {log}");

    // A loop is cut by its 300 ms of CPU time (read from the sandbox's cgroup), long before its
    // 20 s wall time; a new instance answers next.
    let (ok, out) = cut_by_cpu(&ns, &format!("{url}/spin"));
    assert!(ok && out.contains("300 ms of CPU time"), "{out}");
    let (ok, out) = ns.sh(&format!("curl -sS --fail --max-time 10 {url}/hello"));
    assert!(ok && out.trim() == "hello from deno", "{out}");

    // The cron job runs.
    let runs = || {
        let m = String::from_utf8_lossy(&d.http("GET", "/metrics", None, b"").body).into_owned();
        m.lines().any(|l| l.starts_with("atoll_bundle_cron_runs_total{") && l.contains("handler=\"tick\"") && l.contains("outcome=\"ok\""))
    };
    atoll_testkit::wait_for(20, "the deno bundle's cron job to run", runs);

    assert_eq!(d.ok(&["bundle", "rm", "hello-deno"]).trim(), "Removed hello-deno");
    assert!(!d.cli(&["inspect", &name]).ok(), "the sandbox went with the bundle");
}

/// An island (vps1, public; home1, behind NAT; `ca` on the internet: pebble and the client)
/// runs a bundle: allowed and run from any member, placed by the leader (on home1, vps1 being
/// drained), served on home1's mesh address, and reached through vps1's gateway at
/// `https://hello-wasm.alice.friends.example` with a certificate from pebble; drained off home1
/// it moves to vps1 and the name follows; removed, it stops everywhere.
#[test]
fn an_islands_bundle_is_placed_on_a_member_and_served_by_the_gateway_under_its_authors_name() {
    use atoll_testkit::island::{Island, Topology};
    use atoll_testkit::wait_for;

    let pds = Pds::start();
    let alice = pds.create_account("alice.test");
    let mut t = Topology::new();
    t.add_public("vps1");
    t.add_nat("home1");
    t.add_public("ca");
    let (plc_port, pds_port) = (pds.plc_url.rsplit(':').next().unwrap().to_owned(), pds.port.to_string());
    let args = [
        "--plc-url",
        &pds.plc_url,
        "--atproto-nameserver",
        "127.0.0.1:5353",
        "--atproto-insecure-http-port",
        &pds_port,
        "--bundle-poll",
        "1s",
    ];
    let island = Island::start(Path::new(BIN), t, &args);
    // Every member finds the PDS and the PLC directory at its own loopback, as the DID
    // documents say (`http://localhost:PORT`), and alice's handle in its own resolver.
    let mut relays = Vec::new();
    let mut resolvers = Vec::new();
    for h in ["vps1", "home1"] {
        let ns = &island.host(h).ns;
        for port in [pds.port, plc_port.parse().unwrap()] {
            relays.push(Forward::listen_in(ns, port, (std::net::Ipv4Addr::LOCALHOST, port).into()));
        }
        resolvers.push(HandleDns::start_in(ns, &[("_atproto.alice.test", &format!("did={}", alice.did))]));
    }
    let vps1 = island.host("vps1").addr.to_string();
    island.ok("vps1", &["init", "--name", "friends", "--node-name", "vps1", "--public", &vps1]);
    let code = island.invite("vps1", &[]);
    island.ok("home1", &["join", "--name", "home1", &code]);
    let ca = island.host("ca").addr;
    let pebble = atoll_testkit::pebble::Pebble::start(&island.host("ca").ns, ca, (island.host("vps1").addr, 53).into(), None);
    let ca_file = pebble.tls_ca_path.to_str().unwrap().to_owned();
    island.ok("vps1", &["domain", "add", "friends.example", "--acme-directory", &pebble.directory_url, "--acme-ca-file", &ca_file]);

    // The island's runner key is the same on every member.
    // (503 until a member has it.)
    let key = |h: &str| {
        let r = island.cli(h, &["bundle", "key", "--json"]);
        r.ok().then(|| serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()["public_key"].clone())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !(key("vps1").is_some() && key("vps1") == key("home1")) {
        if std::time::Instant::now() > deadline {
            let why: Vec<String> = ["vps1", "home1"]
                .iter()
                .map(|h| {
                    let log = island.daemon(h).log_text();
                    let seed: Vec<&str> = log.lines().filter(|l| l.contains("secret seed") || l.contains("data key")).collect();
                    format!("{h}: {}\n{}", island.cli(h, &["bundle", "key"]).stderr, seed.join("\n"))
                })
                .collect();
            panic!("the island's runner key is not on both members after 90 s:\n{}", why.join("\n"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let root = tempfile::tempdir().unwrap();
    let uri = publish_from_host(&pds, &alice, &example("hello-wasm"));
    let mut image = String::new();
    for h in ["vps1", "home1"] {
        image = island.daemon(h).import_busybox(root.path()).to_owned();
    }
    let oci = publish_from_host(&pds, &alice, &offline_oci_example(root.path(), &image, &[]));
    let r = island.cli("home1", &["bundle", "run", &uri]);
    assert!(!r.ok() && r.stderr.contains("not allowed to run bundles on the island"), "{}", r.stderr);
    island.ok("home1", &["bundle", "allow", "alice.test"]);
    let listed: serde_json::Value = serde_json::from_str(&island.ok("vps1", &["bundle", "allow", "--list", "--json"])).unwrap();
    assert_eq!(listed[0]["did"], alice.did.as_str(), "allowed on one member, allowed on the island");

    island.ok("vps1", &["node", "drain", "vps1"]);
    let v: serde_json::Value = serde_json::from_str(&island.ok("vps1", &["bundle", "run", &uri, "--json"])).unwrap();
    let host = "hello-wasm.alice.friends.example";
    assert_eq!((v["state"].as_str(), v["node"].as_str()), (Some("running"), Some("home1")), "{v}");
    assert_eq!(v["public_urls"][0], format!("https://{host}"));
    let r = island.cli("home1", &["bundle", "run", &uri]);
    assert!(!r.ok() && r.stderr.contains("a bundle named hello-wasm runs on the island"), "{}", r.stderr);
    // A secret given on vps1 is sealed to the island's key, and opens on home1.
    let secret = "island-s3cret-41d";
    let v: serde_json::Value =
        serde_json::from_str(&island.ok("vps1", &["bundle", "run", &oci, "--secret", &format!("TOKEN={secret}"), "--json"])).unwrap();
    assert_eq!((v["state"].as_str(), v["node"].as_str()), (Some("running"), Some("home1")), "{v}");
    // Its log is on the member that runs it.
    let r = island.cli("vps1", &["bundle", "logs", "hello-wasm"]);
    assert!(!r.ok() && r.stderr.contains("runs on home1"), "{}", r.stderr);

    // The name is in the zone, with a certificate of its own (two labels below the zone: the
    // wildcard does not cover it), and the gateway serves it from home1 over the mesh.
    let dig = island.sh("ca", &format!("dig +short @{vps1} {host} A"));
    assert_eq!(dig.stdout.trim(), vps1, "{dig:?}");
    let pem = root.path().join("root.pem");
    std::fs::write(&pem, pebble.root()).unwrap();
    let get = |path: &str| {
        island
            .sh("ca", &format!("curl -sS --fail --max-time 10 --cacert {} --resolve {host}:443:{vps1} https://{host}{path}", pem.display()))
    };
    let token = || {
        let host = "hello-oci.alice.friends.example";
        island.sh(
            "ca",
            &format!("curl -sS --fail --max-time 10 --cacert {} --resolve {host}:443:{vps1} https://{host}/cgi-bin/token", pem.display()),
        )
    };
    let mut last = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !get("/hello").ok() {
        if std::time::Instant::now() > deadline {
            let out = get("/hello");
            last = format!("{}{}", out.stdout, out.stderr);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        last.is_empty(),
        "the bundle not served through the gateway with a valid certificate within 120 s: {last}\ngateway: {}\ncertificates: {}\nvps1's log:\n{}",
        island.ok("vps1", &["gateway", "ls"]),
        island.cli("vps1", &["cert", "ls"]).stdout,
        island
            .daemon("vps1")
            .log_text()
            .lines()
            .filter(|l| l.contains("hello-wasm") || l.contains("certificate") || l.contains("gateway"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(get("/hello").stdout.trim(), "hello from wasm");
    wait_for(60, "the oci bundle through the gateway", || token().ok());
    assert_eq!(token().stdout.trim(), format!("token={secret}"));
    let routes: serde_json::Value = serde_json::from_str(&island.ok("home1", &["gateway", "ls", "--json"])).unwrap();
    let route = routes.as_array().unwrap().iter().find(|r| r["name"] == "bundle/hello-wasm").expect("the bundle's route");
    assert_eq!(route["backends"][0]["host"], "home1", "{route}");
    let ls = island.ok("vps1", &["bundle", "ls"]);
    assert!(ls.contains("home1") && ls.contains(&format!("https://{host}")), "{ls}");

    // Drained off home1, it moves to vps1; the name follows. The move is make-before-break:
    // home1 serves it until vps1 does, so a client asking all along sees no failure.
    let stop = root.path().join("stop-asking");
    let asking = std::thread::spawn({
        let (ns, pem, stop) = (island.host("ca").ns.handle(), pem.display().to_string(), stop.display().to_string());
        let vps1 = vps1.clone();
        move || {
            ns.sh(&format!(
                "while [ ! -e {stop} ]; do c=$(curl -sS -o {stop}.body -w '%{{http_code}}' --max-time 10 --cacert {pem} \
                 --resolve {host}:443:{vps1} https://{host}/hello 2>&1); [ \"$c\" = 200 ] && echo 200 || echo \"$c $(cat {stop}.body)\"; done"
            ))
        }
    });
    island.ok("vps1", &["node", "activate", "vps1"]);
    island.ok("vps1", &["node", "drain", "home1"]);
    wait_for(60, "the bundle moved to vps1", || {
        let v: serde_json::Value = serde_json::from_str(&island.ok("home1", &["bundle", "inspect", "hello-wasm", "--json"])).unwrap();
        v["node"] == "vps1" && v["state"] == "running"
    });
    wait_for(30, "the gateway to follow it", || {
        let routes: serde_json::Value = serde_json::from_str(&island.ok("vps1", &["gateway", "ls", "--json"])).unwrap();
        routes.as_array().unwrap().iter().any(|r| r["name"] == "bundle/hello-wasm" && r["backends"][0]["host"] == "vps1")
    });
    assert_eq!(get("/hello").stdout.trim(), "hello from wasm");
    wait_for(60, "the oci bundle moved with its secret", || token().stdout.trim() == format!("token={secret}"));
    wait_for(30, "home1 to forget the bundles it no longer runs", || {
        ["hello-wasm", "hello-oci"].iter().all(|b| !island.daemon("home1").data_dir.join(format!("bundles/{b}.json")).exists())
    });
    std::fs::write(&stop, "").unwrap();
    let (_, codes) = asking.join().unwrap();
    let codes: Vec<&str> = codes.lines().collect();
    assert!(codes.len() >= 10 && codes.iter().all(|c| *c == "200"), "requests during the move: {codes:?}");

    // Removed from a member: gone from the island, its route and its member.
    island.ok("home1", &["bundle", "rm", "hello-wasm"]);
    island.ok("home1", &["bundle", "rm", "hello-oci"]);
    wait_for(30, "the route gone", || !get("/hello").ok());
    let ls: serde_json::Value = serde_json::from_str(&island.ok("vps1", &["bundle", "ls", "--json"])).unwrap();
    assert_eq!(ls, serde_json::json!([]));
    wait_for(30, "vps1 to stop it", || !island.daemon("vps1").data_dir.join("bundles/hello-wasm.json").exists());

    // A bundle that cannot start on a member (its image is only on vps1, and home1 cannot
    // pull it) is moved off it as soon as another member is up, and tried there again later.
    // (Also the regression test of a removal racing the poller: vps1 stopped the bundle as it
    // moved away, the poller saw its record and started it again, and the zombie kept the
    // bundle from ever running on vps1 again: "a bundle named vps1-only runs here".)
    island.ok("vps1", &["tag", &image, "localhost/vps1-only:1"]);
    let dir = root.path().join("vps1-only");
    std::fs::create_dir_all(&dir).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(root.path().join("hello-oci/bundle.json")).unwrap()).unwrap();
    (m["name"], m["entry"]) = ("vps1-only".into(), "localhost/vps1-only:1".into());
    std::fs::write(dir.join("bundle.json"), m.to_string()).unwrap();
    let only = publish_from_host(&pds, &alice, &dir);
    let v: serde_json::Value =
        serde_json::from_str(&island.ok("home1", &["bundle", "run", &only, "--secret", "TOKEN=t", "--json"])).unwrap();
    assert_eq!((v["state"].as_str(), v["node"].as_str()), (Some("running"), Some("vps1")), "home1 is drained: {v}");
    let inspect =
        || -> serde_json::Value { serde_json::from_str(&island.ok("home1", &["bundle", "inspect", "vps1-only", "--json"])).unwrap() };
    island.ok("vps1", &["node", "activate", "home1"]);
    island.ok("vps1", &["node", "drain", "vps1"]);
    wait_for(60, "the bundle to fail on home1, the only member up", || {
        let v = inspect();
        v["node"] == "home1" && v["state"].as_str().unwrap().starts_with("failed: ") && v["failed_on"] == serde_json::json!(["home1"])
    });
    let text = island.ok("vps1", &["bundle", "inspect", "vps1-only"]);
    assert!(text.contains("Failed:   on home1 (avoided while another member is up)"), "{text}");
    island.ok("vps1", &["node", "activate", "vps1"]);
    wait_for(60, "the bundle moved back to vps1, where it runs and its failures are forgotten", || {
        let v = inspect();
        v["node"] == "vps1" && v["state"] == "running" && v["failed_on"] == serde_json::json!([])
    });
    island.ok("home1", &["bundle", "rm", "vps1-only"]);
    drop(relays);
    drop(resolvers);
}
