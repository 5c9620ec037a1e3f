//! End-to-end tests of the HTTPS gateway (`atoll gateway`): real daemons in their own network
//! namespaces (two public hosts and one behind NAT), real Nebula, real certificates from pebble,
//! a service on the host behind NAT fetched through both public hosts by real curl and loaded in
//! a real Chromium (a page, a WebSocket echo, a download and an upload checked by digest). Run
//! as root.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_testkit::forward::Forward;
use atoll_testkit::island::Island;
use atoll_testkit::pebble::Pebble;
use atoll_testkit::wait_for;
use atoll_testkit::webdriver::Browser;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");
const HOST: &str = "blog.friends.example";

/// vps1 (founder, public), vps2 (public), home1 (behind NAT), and `ca` on the internet (pebble,
/// and the clients), outside the island; the dashboards on.
fn island() -> Island {
    Island::three_and(Path::new(BIN), &["ca"], &["--web", "127.0.0.1:0"])
}

fn json(island: &Island, host: &str, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&island.ok(host, &a)).unwrap()
}

fn route<'a>(routes: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    routes.as_array().unwrap().iter().find(|r| r["name"] == name)
}

/// `curl` from `ca` to `https://blog.friends.example{path}` through public host `via`, trusting
/// pebble's root (`root`): the output and whether it succeeded.
fn curl(island: &Island, via: &str, root: &Path, args: &str, path: &str) -> atoll_testkit::daemon::Run {
    let ip = island.host(via).addr;
    island.sh(
        "ca",
        &format!("curl -sS --fail --max-time 20 --cacert {} --resolve {HOST}:443:{ip} {args} 'https://{HOST}{path}'", root.display()),
    )
}

#[test]
fn a_service_behind_nat_is_served_by_both_public_hosts_with_a_valid_certificate() {
    assert!(atoll_testkit::oci::netcheck_binary().is_some(), "the test web app (netcheck) is built: cargo build -p atoll-testkit --bins");
    let island = island();
    let ca = island.host("ca").addr;
    let vps2 = island.host("vps2").addr;
    let pebble = Pebble::start(&island.host("ca").ns, ca, (vps2, 53).into(), None);
    let scratch = tempfile::tempdir().unwrap();
    let ca_file = pebble.tls_ca_path.to_str().unwrap().to_owned();
    island.ok("vps1", &["domain", "add", "friends.example", "--acme-directory", &pebble.directory_url, "--acme-ca-file", &ca_file]);
    for h in ["home1", "vps2"] {
        island.daemon(h).import_busybox(scratch.path());
    }
    let compose = scratch.path().join("blog.yaml");
    std::fs::write(
        &compose,
        format!(
            "services:\n  web:\n    image: localhost/busybox\n    command: [\"/bin/netcheck\", \"http-serve\", \"8080\"]\n    labels:\n      atoll.http.host: {HOST}\n      atoll.http.port: \"8080\"\n    ports: [\"8082:8080\"]\n    deploy:\n      replicas: 2\n      placement:\n        max_replicas_per_node: 1\n        constraints: [node.hostname != vps1]\n"
        ),
    )
    .unwrap();
    island.ok("vps1", &["stack", "deploy", "-c", compose.to_str().unwrap(), "blog"]);

    // The route, its two replicas (home1 and vps2) and the zone's wildcard certificate.
    wait_for(90, "the route served with two healthy replicas and a certificate", || {
        let routes = json(&island, "home1", &["gateway", "ls"]);
        route(&routes, "blog_web").is_some_and(|r| {
            r["certificate"] == "friends.example"
                && r["backends"].as_array().unwrap().iter().filter(|b| b["healthy"] == true).count() == 2
                && r["error"].is_null()
        })
    });
    let root = scratch.path().join("root.pem");
    std::fs::write(&root, pebble.root()).unwrap();
    for via in ["vps1", "vps2"] {
        wait_for(20, "the public host to serve the route with the certificate", || curl(&island, via, &root, "", "/host").ok());
        // HTTP/2 with ALPN, and forwarding headers.
        let r = curl(&island, via, &root, "--http2 -o /dev/null -w '%{http_version}'", "/host");
        assert_eq!(r.stdout.trim(), "2", "{r:?}");
        let headers = curl(&island, via, &root, "", "/headers").stdout;
        assert!(headers.contains("x-forwarded-proto: https"), "{headers}");
        assert!(headers.contains(&format!("x-forwarded-for: {ca}")), "{headers}");
        assert!(headers.contains(&format!("x-forwarded-host: {HOST}")), "{headers}");
        assert!(headers.contains(&format!("forwarded: for={ca};proto=https;host={HOST}")), "{headers}");
        // Plain HTTP is redirected to HTTPS.
        let ip = island.host(via).addr;
        let r = island
            .sh("ca", &format!("curl -sS -o /dev/null -w '%{{http_code}} %{{redirect_url}}' --resolve {HOST}:80:{ip} http://{HOST}/x?y=1"));
        assert!(r.stdout.starts_with("30") && r.stdout.ends_with(&format!("https://{HOST}/x?y=1")), "{r:?}");
    }
    // Swarm's routing mesh: a port the service publishes answers on the public host that runs
    // no replica of it (vps1), as on those that do.
    for via in ["vps1", "vps2"] {
        let ip = island.host(via).addr;
        wait_for(20, "the published port on each public host", || {
            island.sh("ca", &format!("curl -sS --fail --max-time 5 http://{ip}:8082/host")).ok()
        });
    }

    // A large download and upload, streamed both ways, checked by digest.
    let n = 50 << 20;
    let ip = island.host("vps2").addr;
    let r = island
        .sh("ca", &format!("curl -sS --fail --cacert {} --resolve {HOST}:443:{ip} 'https://{HOST}/big?n={n}' | sha256sum", root.display()));
    assert_eq!(r.stdout.split_whitespace().next(), Some(atoll_testkit::pattern_sha256(n).as_str()), "{r:?}");
    let upload = scratch.path().join("upload.bin");
    island.sh("ca", &format!("head -c 20971520 /dev/urandom > {}", upload.display()));
    let want = island.sh("ca", &format!("sha256sum {}", upload.display())).stdout;
    let r = curl(&island, "vps1", &root, &format!("--data-binary @{}", upload.display()), "/upload");
    assert_eq!(r.stdout.trim(), format!("20971520 {}", want.split_whitespace().next().unwrap()), "{r:?}");

    // A real browser, trusting pebble's root as a user's CA: the page, a WebSocket, a download
    // and an upload (digests by the page's crypto.subtle, which needs a secure context).
    let home = tempfile::tempdir().unwrap();
    let nssdb = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let db = format!("sql:{}", nssdb.display());
    for args in
        [vec!["-N", "-d", &db, "--empty-password"], vec!["-A", "-d", &db, "-t", "C,,", "-n", "pebble", "-i", root.to_str().unwrap()]]
    {
        let out = std::process::Command::new(atoll_testkit::require("certutil")).args(&args).output().unwrap();
        assert!(out.status.success(), "certutil {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let fwd = Forward::start(&island.host("ca").ns, (island.host("vps1").addr, 443).into());
    let browser = Browser::start_with(&[format!("--host-resolver-rules=MAP {HOST} 127.0.0.1")], Some(home.path()));
    browser.goto(&format!("https://{HOST}:{}/", fwd.addr.port()));
    wait_for(60, "the page's download and upload", || browser.text("#up").starts_with("up: 4194304 "));
    assert!(browser.text("#title").starts_with("hello from "), "{}", browser.text("#title"));
    assert_eq!(browser.text("#ws"), "ws: echo me");
    assert_eq!(browser.text("#down"), format!("down: 8388608 {}", atoll_testkit::pattern_sha256(8 << 20)));
    let up: Vec<String> = browser.text("#up").split_whitespace().map(String::from).collect();
    assert_eq!(up[3], up[2], "the server's digest of the upload is the page's: {up:?}");

    // Routes change while a long download and the WebSocket are open: both carry on.
    let slow = {
        let (root, ip) = (root.clone(), island.host("vps1").addr);
        let cmd = format!(
            "curl -sS --fail --limit-rate 3M --cacert {} --resolve {HOST}:443:{ip} 'https://{HOST}/big?n=20971520' | sha256sum",
            root.display()
        );
        let ns = island.host("ca").ns.name.clone();
        std::thread::spawn(move || std::process::Command::new("ip").args(["netns", "exec", &ns, "sh", "-c", &cmd]).output().unwrap())
    };
    island.ok("home1", &["gateway", "route", "add", "extra.friends.example", "--service", "blog_web", "--port", "8080"]);
    island.ok("vps2", &["gateway", "route", "add", "--tcp", "8081", "--service", "blog_web", "--port", "8080", "--name", "plain"]);
    for via in ["vps1", "vps2"] {
        let ip = island.host(via).addr;
        wait_for(20, "the TCP route on each public host", || {
            island.sh("ca", &format!("curl -sS --fail --max-time 5 http://{ip}:8081/host")).ok()
        });
        wait_for(20, "the new host name on each public host", || {
            island
                .sh("ca", &format!("curl -sS --fail --max-time 5 --cacert {} --resolve extra.friends.example:443:{ip} https://extra.friends.example/host", root.display()))
                .ok()
        });
    }
    island.ok("vps1", &["gateway", "route", "rm", "extra.friends.example", "plain"]);
    browser.script("window.ws.send('after the change')");
    wait_for(20, "the WebSocket's echo after the change", || browser.text("#ws") == "ws: after the change");
    let out = slow.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).split_whitespace().next(), Some(atoll_testkit::pattern_sha256(20 << 20).as_str()));
    wait_for(20, "the TCP route gone", || {
        !island.sh("ca", &format!("curl -sS --max-time 2 http://{}:8081/host", island.host("vps1").addr)).ok()
    });

    // Refusals name the problem.
    let r = island.cli("vps1", &["gateway", "route", "add", "x.friends.example", "--service", "blog_nope", "--port", "80"]);
    assert!(!r.ok() && r.stderr.contains("no service blog_nope (there are blog_web)"), "{}", r.stderr);
    let r = island.cli("vps1", &["gateway", "route", "add", "--tcp", "443", "--service", "blog_web", "--port", "80"]);
    assert!(!r.ok() && r.stderr.contains("listen_port: 443"), "{}", r.stderr);
    let r = island.cli("vps1", &["gateway", "route", "rm", "blog_web"]);
    assert!(!r.ok() && r.stderr.contains("atoll.http.host label"), "{}", r.stderr);

    // The host behind NAT dies: requests move to the replica on vps2. Each request is one curl
    // (a new connection), in a loop through vps1; each is recorded with when it started.
    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let client = {
        let (stop, log) = (stop.clone(), log.clone());
        let ns = island.host("ca").ns.name.clone();
        let cmd = format!(
            "curl -sS --fail --max-time 10 --cacert {} --resolve {HOST}:443:{} https://{HOST}/host",
            root.display(),
            island.host("vps1").addr
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let start = Instant::now();
                let ok = std::process::Command::new("ip").args(["netns", "exec", &ns, "sh", "-c", &cmd]).output().unwrap().status.success();
                log.lock().unwrap().push((start, ok));
            }
        })
    };
    let count = |log: &Mutex<Vec<(Instant, bool)>>| log.lock().unwrap().len();
    wait_for(20, "requests before the failure", || count(&log) >= 10);
    let killed = Instant::now();
    island.kill("home1");
    wait_for(60, "the route down to vps2's replica", || {
        let routes = json(&island, "vps1", &["gateway", "ls"]);
        route(&routes, "blog_web").is_some_and(|r| r["backends"].as_array().unwrap().len() == 1)
    });
    let settled = Instant::now();
    let n = count(&log);
    wait_for(30, "requests after the failover", || count(&log) >= n + 20);
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let log = log.lock().unwrap();
    let during: Vec<bool> = log.iter().filter(|(t, _)| *t < settled && *t + Duration::from_secs(10) >= killed).map(|(_, ok)| *ok).collect();
    eprintln!(
        "failover: {} of {} requests in flight between the kill and the route's update ({:.1} s) failed",
        during.iter().filter(|ok| !**ok).count(),
        during.len(),
        (settled - killed).as_secs_f64()
    );
    // Once the route settled, nothing fails.
    let after: Vec<&(Instant, bool)> = log.iter().filter(|(t, _)| *t >= settled).collect();
    assert!(after.len() >= 20 && after.iter().all(|(_, ok)| *ok), "requests failed after the route settled: {after:?}");
    drop(log);

    // The dashboard's gateway view: the route, its replica left, its traffic.
    let login = island.ok("vps2", &["web", "token"]).trim().to_owned();
    let target: std::net::SocketAddr = login.strip_prefix("http://").unwrap().split('/').next().unwrap().parse().unwrap();
    let relay = Forward::start(&island.host("vps2").ns, target);
    browser.goto(&login.replacen(&target.to_string(), &relay.addr.to_string(), 1));
    wait_for(30, "the dashboard", || browser.find("nav a[href='#/gateway']").is_some());
    browser.type_into("nav a[href='#/gateway']", "\u{E007}");
    wait_for(30, "the gateway view with the route's traffic", || {
        let row = browser.text("#routes tr[data-route='blog_web']");
        row.contains(HOST) && row.contains("vps2") && !row.contains("home1") && row.contains("friends.example")
    });
    // The public hosts report every few seconds: the count catches up with this test's requests.
    let counted = || {
        let requests = browser.text("#routes tr[data-route='blog_web'] .rate small");
        requests.trim_start_matches('(').split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)
    };
    wait_for(30, "the requests of this test counted", || counted() >= 40);
    browser.screenshot(&std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-gateway.png"));
}
