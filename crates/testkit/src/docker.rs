//! A real docker engine (Debian's `docker.io`) for tests and benchmarks that check how Atoll
//! lives next to it: `dockerd` in a given network namespace (a test's "host"), with its own
//! data root, exec root, pid file and API socket under a temp dir, so it shares nothing with a
//! docker the machine may run. `/usr/bin/docker` and `/usr/sbin/dockerd` are called by path.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const DOCKER: &str = "/usr/bin/docker";
pub const DOCKERD: &str = "/usr/sbin/dockerd";

pub struct Dockerd {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd inside the network namespace at `netns` (a `/run/netns/…` path), its
    /// state under `root`, and waits until its API answers.
    pub fn start(netns: &Path, root: &Path) -> Self {
        for tool in [DOCKER, DOCKERD] {
            assert!(Path::new(tool).is_file(), "{tool} is not installed; run scripts/install-deps.sh (docker.io)");
        }
        std::fs::create_dir_all(root).unwrap();
        let socket = root.join("docker.sock");
        let log = root.join("dockerd.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(crate::require("nsenter"))
            .arg(format!("--net={}", netns.display()))
            .arg("--")
            .arg(DOCKERD)
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut d = Self { root: root.to_owned(), socket, log, child: Some(child) };
        let mut exited = None;
        crate::wait_for(60, "dockerd to answer", || {
            if let Some(s) = d.child.as_mut().unwrap().try_wait().unwrap() {
                exited = Some(s);
                return true;
            }
            d.cli(&["version"]).status.success()
        });
        if let Some(s) = exited {
            panic!("dockerd exited with {s}:\n{}", std::fs::read_to_string(&d.log).unwrap_or_default());
        }
        d
    }

    /// Runs `docker ARGS` against this engine.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(DOCKER).arg("-H").arg(format!("unix://{}", self.socket.display())).args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs `docker ARGS`, panicking with its output unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "docker {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Loads the OCI layout at `layout` (tag `latest`) as `name`: skopeo writes a
    /// `docker save` archive, `docker load` reads it.
    pub fn load(&self, layout: &Path, name: &str) {
        let archive = self.root.join("image.tar");
        let _ = std::fs::remove_file(&archive);
        let out = Command::new(crate::require("skopeo"))
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker-archive:{}:{name}", archive.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
        self.ok(&["load", "-q", "-i", archive.to_str().unwrap()]);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // dockerd's pid is in its pid file (nsenter execs it, so it is the child's too).
            if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever it mounted under its roots (overlays, its exec root's namespaces).
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = self.root.display().to_string();
        let mut points: Vec<&str> = mounts.lines().filter_map(|l| l.split_whitespace().nth(4)).filter(|p| p.starts_with(&root)).collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").arg("-l").arg(p).stderr(Stdio::null()).status();
        }
    }
}
