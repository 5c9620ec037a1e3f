//! End-to-end test of the web dashboard in a real headless Chromium (Debian's chromium and
//! chromedriver): log in with the token, see a running container, watch a new log line arrive,
//! stop it and see its state change without a reload; requests without the session or without
//! the CSRF token are refused. Screenshots go to `target/tmp/dashboard-*.png`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use atoll_testkit::daemon::Daemon;
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
