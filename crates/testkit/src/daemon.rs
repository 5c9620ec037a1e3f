//! Drives the real `atoll` binary: a daemon in a temp dir, and CLI calls against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A network namespace standing for one host: the daemon, its bridges, nftables table, DNS
/// server and containers live in it, so tests in parallel never share (or touch the real
/// host's) network state. Dropping the one that made it kills what still runs inside and
/// deletes it; a [`Netns::handle`] only names it.
pub struct Netns {
    pub name: String,
    owned: bool,
}

impl Netns {
    pub fn new() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        Self::named(&format!("atoll-t{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)))
    }

    /// Makes the namespace `name` (replacing a stale one of that name) with its loopback up.
    /// The caller picks a name no other test process can pick (one holding its pid).
    pub fn named(name: &str) -> Self {
        let ip = crate::require("ip");
        let _ = Command::new(&ip).args(["netns", "del", name]).stderr(Stdio::null()).status();
        assert!(Command::new(&ip).args(["netns", "add", name]).status().unwrap().success(), "ip netns add {name}");
        assert!(Command::new(&ip).args(["-n", name, "link", "set", "lo", "up"]).status().unwrap().success());
        Self { name: name.to_owned(), owned: true }
    }

    /// A handle to the namespace `name` made elsewhere; dropping it leaves the namespace alone.
    pub fn existing(name: &str) -> Self {
        Self { name: name.to_owned(), owned: false }
    }

    /// Another handle to this namespace, which leaves it alone when dropped.
    pub fn handle(&self) -> Self {
        Self::existing(&self.name)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command that runs `program` inside the namespace (network only: same mounts).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(crate::require("nsenter"));
        c.arg(format!("--net={}", self.path().display())).arg("--").arg(program);
        c
    }

    /// Atoll's links in this namespace (bridges `at-*`, host-side veths `av*`).
    pub fn atoll_links(&self) -> Vec<String> {
        let (_, out) = self.sh("ip -br link");
        out.lines()
            .map(|l| l.split_whitespace().next().unwrap_or("").split('@').next().unwrap_or("").to_owned())
            .filter(|n| n.starts_with("at-") || n.starts_with("av"))
            .collect()
    }

    /// Runs `sh -c SCRIPT` inside the namespace; returns (success, stdout + stderr).
    pub fn sh(&self, script: &str) -> (bool, String) {
        let out = self.command("sh").arg("-c").arg(script).stdin(Stdio::null()).output().unwrap();
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let ip = crate::require("ip");
        if let Ok(out) = Command::new(&ip).args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        let _ = Command::new(&ip).args(["netns", "del", &self.name]).status();
    }
}

pub struct Daemon {
    pub bin: PathBuf,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub args: Vec<String>,
    child: Option<Child>,
    /// The daemon's network namespace: its own, or a handle to an island host's (none for
    /// daemons started by hand).
    pub netns: Option<Netns>,
    /// Extra environment for the daemon's next start (`ATOLL_CRASH_AT`…).
    pub env: Vec<(String, String)>,
}

/// What a CLI call did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl Daemon {
    /// Starts `atoll daemon` with its data dir and socket under `root`, in a network
    /// namespace of its own.
    pub fn start(bin: &Path, root: &Path, args: &[&str]) -> Self {
        Self::start_in(bin, root, args, Some(Netns::new()))
    }

    /// Starts the daemon in the test's own network namespace, to reach servers on its
    /// loopback (registries, proxies). Such daemons must not start bridged containers: they
    /// would share the host's network state with every other such daemon.
    pub fn start_on_host_network(bin: &Path, root: &Path, args: &[&str]) -> Self {
        Self::start_in(bin, root, args, None)
    }

    /// Starts a daemon in `other`'s network namespace: two daemons on one host.
    pub fn start_beside(bin: &Path, root: &Path, args: &[&str], other: &Daemon) -> Self {
        Self::start_in(bin, root, args, Some(other.ns().handle()))
    }

    /// Starts the daemon in the existing namespace `ns` (a host of an [`crate::island`]
    /// topology), which outlives it: dropping the daemon leaves the namespace alone.
    pub fn start_in_netns(bin: &Path, root: &Path, args: &[&str], ns: &Netns) -> Self {
        Self::start_in(bin, root, args, Some(ns.handle()))
    }

    fn start_in(bin: &Path, root: &Path, args: &[&str], netns: Option<Netns>) -> Self {
        let mut d = Self {
            bin: bin.to_owned(),
            data_dir: root.join("data"),
            socket: root.join("run/atoll.sock"),
            log: root.join("daemon.log"),
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            netns,
            env: Vec::new(),
        };
        d.spawn();
        d
    }

    /// The daemon's network namespace.
    pub fn ns(&self) -> &Netns {
        self.netns.as_ref().expect("the daemon runs in its own namespace")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => ns.command(&self.bin),
            None => Command::new(&self.bin),
        };
        let child = cmd
            .arg("daemon")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--socket")
            .arg(&self.socket)
            .args(&self.args)
            .env("ATOLL_LOG", "info,atoll_image=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let socket = self.socket.clone();
        let log = self.log.clone();
        let mut exited = None;
        crate::wait_for(30, "the daemon's socket", || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                exited = Some(status);
                return true;
            }
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        if let Some(status) = exited {
            panic!("atoll daemon exited with {status} at start:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
    }

    /// Wraps a daemon process started by hand with `--data-dir ROOT/data --socket ROOT/probe.sock`.
    pub fn adopt(bin: &Path, root: &Path, child: Child) -> Self {
        Self {
            bin: bin.to_owned(),
            data_dir: root.join("data"),
            socket: root.join("probe.sock"),
            log: root.join("daemon.log"),
            args: Vec::new(),
            child: Some(child),
            netns: None,
            env: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// `kill -9` the daemon.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        rustix::process::kill_process(rustix::process::Pid::from_child(&c), rustix::process::Signal::TERM).unwrap();
        c.wait().unwrap().code()
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Whether the daemon process is still alive (it may have crashed on purpose).
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Starts the daemon again after it was stopped.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "daemon still running");
        self.spawn();
    }

    /// Runs `atoll ARGS` against this daemon.
    pub fn cli(&self, args: &[&str]) -> Run {
        self.cli_env(args, &[])
    }

    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out: Output = Command::new(&self.bin)
            .args(args)
            .env("ATOLL_SOCKET", &self.socket)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `atoll ARGS`, panicking with its output (and the daemon's log) unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.cli(args);
        assert!(
            r.ok(),
            "atoll {args:?} failed ({:?}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            r.code,
            r.stdout,
            r.stderr,
            self.log_text()
        );
        r.stdout
    }

    /// Runs `atoll ARGS`, panicking unless it fails.
    pub fn fails(&self, args: &[&str]) -> Run {
        let r = self.cli(args);
        assert!(!r.ok(), "atoll {args:?} unexpectedly succeeded:\n{}", r.stdout);
        r
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn images_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["images", "--json"])).unwrap()
    }
}

impl Daemon {
    /// Removes every container this daemon's data dir knows, even if the daemon is dead:
    /// containers outlive daemons by design, so tests must not leave them running.
    pub fn clean_up_containers(&mut self) {
        if self.child.is_some() {
            let ids = self.cli(&["ps", "-aq", "--no-trunc"]).stdout;
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.cli(&args);
            }
        }
        self.kill9();
        self.kill_containers();
        // Network namespaces are bind-mounted under the data dir: the spare one on purpose
        // outlives its daemon (for the next start to adopt), and any container's would pin
        // an empty namespace and keep the test's temp dir from being removed.
        if let Ok(entries) = std::fs::read_dir(self.data_dir.join("netns")) {
            for e in entries.filter_map(Result::ok) {
                let _ = Command::new("umount").arg("-l").arg(e.path()).stderr(Stdio::null()).status();
            }
        }
    }

    fn kill_containers(&self) {
        let Ok(dirs) = std::fs::read_dir(self.data_dir.join("containers")) else { return };
        let dirs: Vec<PathBuf> = dirs.filter_map(Result::ok).map(|d| d.path()).collect();
        for d in &dirs {
            // The record's pid: the container's init.
            let record = std::fs::read(d.join("container.json")).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            if let Some(pid) = record.and_then(|r| r["pid"].as_i64()).and_then(|p| i32::try_from(p).ok())
                && d.join("shim.sock").exists()
            {
                // The pid namespace goes with its init; the shim then deletes the container.
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while dirs.iter().any(|d| d.join("shim.sock").exists()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for d in &dirs {
            let _ = Command::new("umount").arg("-l").arg(d.join("rootfs")).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.clean_up_containers();
    }
}

/// A raw HTTP/1.1 exchange over the daemon's socket, for testing the API itself.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Daemon {
    /// Sends `method path` with `body` (and `content_type`) and reads the whole answer.
    pub fn http(&self, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> RawResponse {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: atoll\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        if let Some(ct) = content_type {
            req.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let _ = s.write_all(body);
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP header end");
        let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
        let mut body = raw[split + 4..].to_vec();
        if headers.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        RawResponse { status, headers, body }
    }
}

/// Decodes a chunked HTTP/1.1 body.
pub fn dechunk_bytes(data: &[u8]) -> Vec<u8> {
    dechunk(data)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..nl]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[nl + 2..nl + 2 + size]);
        data = &data[nl + 2 + size + 2..];
    }
    out
}

impl Daemon {
    /// Imports a busybox-static image as `localhost/busybox:latest` (no registry needed).
    pub fn import_busybox(&self, scratch: &Path) -> &'static str {
        use crate::oci::{Compression, Image, LayerBuilder, write_layout};
        let layout = scratch.join("busybox-layout");
        if !layout.exists() {
            write_layout(&layout, "latest", &Image::new(vec![LayerBuilder::new().busybox().build(Compression::Gzip)]));
        }
        self.ok(&["image", "import", layout.to_str().unwrap(), "--name", "localhost/busybox"]);
        "localhost/busybox"
    }

    /// `inspect` of one container, as JSON.
    pub fn container(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        v[0].clone()
    }

    /// Waits (on observable state, polling `inspect`) until `pred` holds for the container.
    pub fn wait_container(&self, name: &str, secs: u64, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        crate::wait_for(secs, &format!("{name}: {what}"), || {
            let r = self.cli(&["inspect", name]);
            last = serde_json::from_str::<serde_json::Value>(&r.stdout).ok().map(|v| v[0].clone()).unwrap_or_default();
            pred(&last)
        });
        last
    }
}
