//! One `atoll daemon` per host of a [`Topology`], each with its own data dir, socket and log
//! under one temp dir, started in the host's namespace (`nsenter --net`) so it can run
//! bridged containers there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::daemon::{Daemon, Run};

use super::Topology;

/// A topology with a daemon on every host. Derefs to the [`Topology`] (faults, `exec`…).
/// Dropping it removes every daemon's containers, then the daemons, then the namespaces,
/// then the temp dir.
pub struct Island {
    // Fields drop in order: daemons (and their containers) before the namespaces they run
    // in, those before the directory holding the data dirs.
    daemons: BTreeMap<String, Daemon>,
    topology: Topology,
    root: tempfile::TempDir,
    bin: PathBuf,
    args: Vec<String>,
}

impl Island {
    /// Starts `bin daemon ARGS` on every host of `topology`, with `--resolv-conf` pointing at
    /// [`Island::resolv_conf`]: a file of the test's that names no resolver (the host's own
    /// resolv.conf points outside the namespaces; a test that needs one writes it there).
    pub fn start(bin: &Path, topology: Topology, args: &[&str]) -> Self {
        let root = tempfile::Builder::new().prefix("atoll-island.").tempdir().unwrap();
        std::fs::write(root.path().join("resolv.conf"), "# the island's hosts have no resolver unless the test starts one\n").unwrap();
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut island = Self { daemons: BTreeMap::new(), topology, root, bin: bin.to_owned(), args };
        let names: Vec<String> = island.topology.hosts().iter().map(|h| h.name.clone()).collect();
        for name in names {
            island.start_daemon(&name);
        }
        island
    }

    /// An island of four, made with `init`, `invite` and `join`: vps1 (founder, public), vps2
    /// (public), home1 and home2 (each behind its own NAT).
    pub fn four(bin: &Path, args: &[&str]) -> Self {
        let mut t = Topology::new();
        t.add_public("vps1");
        t.add_public("vps2");
        t.add_nat("home1");
        t.add_nat("home2");
        let island = Island::start(bin, t, args);
        let vps1 = island.host("vps1").addr.to_string();
        island.ok("vps1", &["init", "--name", "friends", "--node-name", "vps1", "--public", &vps1]);
        let vps2 = island.host("vps2").addr.to_string();
        let code = island.invite("vps1", &["--public", "--name", "vps2"]);
        island.ok("vps2", &["join", "--public", &vps2, &code]);
        for h in ["home1", "home2"] {
            let code = island.invite("vps1", &[]);
            island.ok(h, &["join", "--name", h, &code]);
        }
        island
    }

    /// An island of three, made with `init`, `invite` and `join`: vps1 (founder, public), vps2
    /// (public) and home1 (behind NAT); and `others` on the internet (public addresses after
    /// theirs), whose daemons stay outside the island (a CA, clients).
    pub fn three_and(bin: &Path, others: &[&str], args: &[&str]) -> Self {
        let mut t = Topology::new();
        t.add_public("vps1");
        t.add_public("vps2");
        t.add_nat("home1");
        for o in others {
            t.add_public(o);
        }
        let island = Island::start(bin, t, args);
        let vps1 = island.host("vps1").addr.to_string();
        island.ok("vps1", &["init", "--name", "friends", "--node-name", "vps1", "--public", &vps1]);
        let vps2 = island.host("vps2").addr.to_string();
        let code = island.invite("vps1", &["--public", "--name", "vps2"]);
        island.ok("vps2", &["join", "--public", &vps2, &code]);
        let code = island.invite("vps1", &[]);
        island.ok("home1", &["join", "--name", "home1", &code]);
        island
    }

    /// `atoll invite ARGS` on `at`: the code.
    pub fn invite(&self, at: &str, args: &[&str]) -> String {
        let mut a = vec!["invite"];
        a.extend_from_slice(args);
        self.ok(at, &a).trim().to_owned()
    }

    /// Adds a public host to the topology and starts its daemon; returns its address.
    pub fn add_public(&mut self, name: &str) -> std::net::Ipv4Addr {
        let addr = self.topology.add_public(name);
        self.start_daemon(name);
        addr
    }

    /// Adds a NAT'd host to the topology and starts its daemon; returns its LAN address.
    pub fn add_nat(&mut self, name: &str) -> std::net::Ipv4Addr {
        let addr = self.topology.add_nat(name);
        self.start_daemon(name);
        addr
    }

    fn start_daemon(&mut self, name: &str) {
        let resolv = self.resolv_conf();
        let mut args = vec!["--resolv-conf", resolv.to_str().unwrap()];
        args.extend(self.args.iter().map(String::as_str));
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let d = Daemon::start_in_netns(&self.bin, &dir, &args, &self.topology.host(name).ns);
        self.daemons.insert(name.to_owned(), d);
    }

    /// The topology (also reachable through `Deref`).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// `host`'s daemon.
    pub fn daemon(&self, host: &str) -> &Daemon {
        self.daemons.get(host).unwrap_or_else(|| panic!("no daemon on {host:?}"))
    }

    /// `host`'s daemon, to restart or kill it.
    pub fn daemon_mut(&mut self, host: &str) -> &mut Daemon {
        self.daemons.get_mut(host).unwrap_or_else(|| panic!("no daemon on {host:?}"))
    }

    /// Runs `atoll ARGS` against `host`'s daemon.
    pub fn cli(&self, host: &str, args: &[&str]) -> Run {
        self.daemon(host).cli(args)
    }

    /// Runs `atoll ARGS` against `host`'s daemon; panics with its output and the daemon's log
    /// unless it succeeds; returns its stdout.
    pub fn ok(&self, host: &str, args: &[&str]) -> String {
        self.daemon(host).ok(args)
    }

    /// The resolv.conf every daemon was given.
    pub fn resolv_conf(&self) -> PathBuf {
        self.root.path().join("resolv.conf")
    }

    /// A scratch directory for the test, removed with the island.
    pub fn dir(&self) -> &Path {
        self.root.path()
    }
}

impl std::ops::Deref for Island {
    type Target = Topology;

    fn deref(&self) -> &Topology {
        &self.topology
    }
}
