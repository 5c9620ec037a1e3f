//! End-to-end tests of the web dashboard in a real headless Chromium (Debian's chromium and
//! chromedriver): log in with the token, see a running container, watch a new log line arrive,
//! stop it and see its state change without a reload; requests without the session or without
//! the CSRF token are refused. The island view, on the multi-host stage: members, their states
//! and mesh addresses, followed live. Screenshots go to `target/tmp/dashboard-*.png`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use atoll_testkit::daemon::Daemon;
use atoll_testkit::forward::Forward;
use atoll_testkit::island::{Island, Topology};
use atoll_testkit::wait_for;
use atoll_testkit::webdriver::Browser;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

fn shot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{name}.png"))
}

/// A raw HTTP request to the dashboard: (status, headers, body).
fn request(addr: &str, req: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head.split(' ').nth(1).unwrap().parse().unwrap(), head.to_owned(), body.to_owned())
}

#[test]
fn log_in_watch_logs_and_stop_a_container_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    // The browser runs on the host, so the daemon does too; the container needs no network.
    let d = Daemon::start_on_host_network(Path::new(BIN), dir.path(), &["--web", "127.0.0.1:0"]);
    let image = d.import_busybox(dir.path());
    let script = "echo first-line; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo second-line; exec sleep 3600";
    d.ok(&["run", "-d", "--name", "web-demo", "--network", "none", image, "sh", "-c", script]);
    let login = d.ok(&["web", "token"]).trim().to_owned();
    let addr = login.strip_prefix("http://").unwrap().split('/').next().unwrap().to_owned();

    // Without a session: refused; with one but without the CSRF token: refused.
    let stop = "POST /api/v1/containers/web-demo/stop HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n";
    let (status, _, _) = request(&addr, &format!("{stop}\r\n"));
    assert_eq!(status, 401);
    let token = login.split("token=").nth(1).unwrap();
    let (status, head, _) = request(
        &addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\ntoken={token}",
            token.len() + 6
        ),
    );
    assert_eq!(status, 303, "{head}");
    let cookie = head.lines().find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: "))).unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap();
    let (status, _, body) = request(&addr, &format!("{stop}Cookie: {session}\r\n\r\n"));
    assert_eq!(status, 403, "{body}");
    let (status, _, _) = request(&addr, &format!("{stop}Cookie: {session}\r\nX-CSRF-Token: forged\r\n\r\n"));
    assert_eq!(status, 403);
    let (status, _, _) = request(
        &addr,
        "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\ntoken=wrong",
    );
    assert_eq!(status, 401);
    assert_eq!(d.container("web-demo")["state"], "running", "a refused request changed something");

    // The browser: the login page, then the link.
    let b = Browser::start();
    b.goto(&format!("http://{addr}/"));
    wait_for(30, "the login page", || b.find("#token").is_some());
    b.screenshot(&shot("login"));
    b.goto(&login);
    wait_for(30, "the container list", || b.text("main").contains("web-demo"));
    assert!(b.text("main").contains("Up"), "{}", b.text("main"));
    b.screenshot(&shot("containers"));

    // The container page follows the log.
    b.click("a[href='#/c/web-demo']");
    wait_for(30, "the first log line", || b.text("#logs").contains("first-line"));
    d.ok(&["exec", "web-demo", "touch", "/tmp/go"]);
    wait_for(30, "a new log line to arrive", || b.text("#logs").contains("second-line"));
    b.screenshot(&shot("logs"));

    // Stop, confirming the dialog; the state changes without a reload.
    b.script("window.__loaded = true; window.confirm = () => true;");
    b.click("#stop");
    wait_for(60, "the state to change", || b.text("#state").starts_with("Exited"));
    assert_eq!(b.script("return window.__loaded === true"), true, "the page was reloaded");
    b.screenshot(&shot("stopped"));
    assert_eq!(d.container("web-demo")["state"], "exited");

    // /metrics is served on the dashboard's listener too.
    let (status, _, body) = request(&addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    assert!(body.contains("atoll_container_state"), "{body}");
    for s in ["login", "containers", "logs", "stopped"] {
        assert!(std::fs::metadata(shot(s)).unwrap().len() > 1000);
    }
}

/// The rows of the island view's member table: (name, mesh IP, state text, state class, path,
/// certificate class).
fn member_rows(b: &Browser) -> Vec<[String; 6]> {
    let v = b.script(
        "return [...document.querySelectorAll('#members tbody tr')].map(r => [r.dataset.name,
           r.querySelector('.mesh-ip').textContent, r.querySelector('.state').textContent, r.querySelector('.state').className,
           r.querySelector('.path').textContent, r.querySelector('td[class^=cert]')?.className ?? ''])",
    );
    serde_json::from_value(v).unwrap_or_default()
}

fn row<'a>(rows: &'a [[String; 6]], name: &str) -> Option<&'a [String; 6]> {
    rows.iter().find(|r| r[0] == name)
}

#[test]
fn the_island_view_lists_members_and_follows_their_states_and_a_leave_live() {
    // Two hosts on the island stage: vps1 (public) serves the dashboard on its namespace's
    // loopback; the browser, on the test's own, reaches it through a relay into that namespace.
    let mut t = Topology::new();
    let vps1_addr = t.add_public("vps1");
    t.add_nat("home1");
    let mut island = Island::start(Path::new(BIN), t, &["--web", "127.0.0.1:0", "--down-after", "10s"]);
    let login = island.ok("vps1", &["web", "token"]).trim().to_owned();
    let target: std::net::SocketAddr = login.strip_prefix("http://").unwrap().split('/').next().unwrap().parse().unwrap();
    let relay = Forward::start(&island.host("vps1").ns, target);
    let login = login.replacen(&target.to_string(), &relay.addr.to_string(), 1);

    let b = Browser::start();
    b.goto(&login);
    wait_for(30, "the containers view", || b.text("main").contains("No containers yet"));
    b.script("window.__loaded = true;");
    // To the island view by keyboard: Enter on the nav link; the view takes the focus.
    b.type_into("nav a[href='#/island']", "\u{E007}");
    wait_for(30, "the island view without an island", || b.text("main").contains("This host is in no island"));
    let text = b.text("main");
    assert!(
        text.contains("atoll init --name NAME --public") && text.contains("atoll join CODE") && text.contains("atoll invite"),
        "{text}"
    );
    assert_eq!(b.script("return document.activeElement.id"), "main");
    assert_eq!(b.script("return document.querySelector(\"nav a[aria-current='page']\").textContent"), "Island");
    b.screenshot(&shot("island-none"));

    // The island forms while the page is open: both members appear, ready, without a reload.
    island.ok("vps1", &["init", "--name", "friends", "--node-name", "vps1", "--public", &vps1_addr.to_string()]);
    let code = island.ok("vps1", &["invite"]).trim().to_owned();
    island.ok("home1", &["join", "--name", "home1", &code]);
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&island.ok("vps1", &["node", "ls", "--json"])).unwrap();
    let ip = |name: &str| nodes.iter().find(|n| n["name"] == name).unwrap()["mesh_ip"].as_str().unwrap().to_owned();
    wait_for(60, "both members ready, home1 reached directly", || {
        let rows = member_rows(&b);
        rows.len() == 2
            && row(&rows, "vps1").is_some_and(|r| r[1] == ip("vps1") && r[2] == "ready" && r[4] == "this host")
            && row(&rows, "home1").is_some_and(|r| r[1] == ip("home1") && r[2] == "ready" && r[4].starts_with("direct"))
    });
    let rows = member_rows(&b);
    for r in &rows {
        assert!(r[3].contains("state-ready") && r[5] == "cert-ok", "{r:?}");
    }
    let main = b.text("main");
    assert!(main.contains("Island friends") && main.contains("vps1 this host") && main.contains("lighthouse, relay, CA"), "{main}");
    // Ready and down are told by colour as well as by word.
    assert_eq!(b.script("return getComputedStyle(document.querySelector('#members .state-ready')).color"), "rgb(10, 107, 44)");
    b.screenshot(&shot("island-ready"));

    // A stack: the grid shows each replica on its member, in its state, without a reload.
    let scratch = tempfile::tempdir().unwrap();
    for h in ["vps1", "home1"] {
        island.daemon(h).import_busybox(scratch.path());
    }
    let file = scratch.path().join("site.yaml");
    std::fs::write(&file, "services:\n  web:\n    image: localhost/busybox\n    command: [sleep, '1d']\n    deploy: {mode: global}\n")
        .unwrap();
    island.ok("vps1", &["stack", "deploy", "-c", file.to_str().unwrap(), "site"]);
    let running = "return [...document.querySelectorAll('#placement tr[data-service=\"site_web\"] .task-running')].length";
    wait_for(60, "both replicas shown running in the grid", || b.script(running) == 2);
    assert_eq!(b.script("return getComputedStyle(document.querySelector('#placement .task-running')).color"), "rgb(10, 107, 44)");
    let shown = b.script("return document.querySelector('#members tr[data-name=\"home1\"] .resources').textContent");
    assert!(shown.as_str().unwrap_or_default().contains("1 replica · 0/"), "{shown}");
    b.screenshot(&shot("island-stacks"));
    island.ok("vps1", &["stack", "rm", "site"]);
    wait_for(60, "the grid to empty", || b.text("main").contains("No stack is deployed"));

    // The names view: the island's domain, its nameservers and records, keys and certificates.
    island.ok("vps1", &["domain", "add", "friends.example"]);
    island.ok("vps1", &["dns", "record", "add", "friends.example", "www", "A", "192.0.2.7"]);
    b.type_into("nav a[href='#/names']", "\u{E007}");
    wait_for(30, "the names view", || {
        let t = b.text("main");
        t.contains("vps1.friends.example (")
            && t.contains("192.0.2.7")
            && t.contains("home1.friends.example")
            && t.contains("*.friends.example")
    });
    b.screenshot(&shot("names"));
    b.type_into("nav a[href='#/island']", "\u{E007}");
    wait_for(30, "the island view again", || b.text("main").contains("Island friends"));

    // home1's daemon dies: shown down; back: ready again.
    island.daemon_mut("home1").kill9();
    wait_for(60, "home1 shown down", || row(&member_rows(&b), "home1").is_some_and(|r| r[2] == "down" && r[3].contains("state-down")));
    assert_eq!(b.script("return getComputedStyle(document.querySelector('#members .state-down')).color"), "rgb(160, 20, 30)");
    b.screenshot(&shot("island-down"));
    island.daemon_mut("home1").start_again();
    wait_for(60, "home1 shown ready again", || row(&member_rows(&b), "home1").is_some_and(|r| r[2] == "ready"));

    // home1 leaves: its row goes, without a reload.
    island.ok("home1", &["leave"]);
    wait_for(60, "home1's row to go", || {
        let rows = member_rows(&b);
        rows.len() == 1 && row(&rows, "vps1").is_some()
    });
    assert_eq!(b.script("return window.__loaded === true"), true, "the page was reloaded");
    b.screenshot(&shot("island-left"));

    // A certificate with less than a third of its lifetime left is flagged (members renew at
    // two thirds), and an expired one too.
    let standing = b.script(
        "const now = Date.parse('2030-01-01T00:00:00Z'), d = 86400e3, week = 7 * 86400;
         return [certStanding(now + 3 * d, week, now), certStanding(now + 2 * d, week, now), certStanding(now - 1, week, now)]",
    );
    assert_eq!(standing, serde_json::json!(["ok", "late", "expired"]));
    for s in ["island-none", "island-ready", "island-stacks", "island-down", "island-left"] {
        assert!(std::fs::metadata(shot(s)).unwrap().len() > 1000);
    }
}
