//! Nebula run by hand on a [`Topology`]: certificates from `nebula-cert`, configs written the
//! way a person would write them, one `nebula` per host. It proves the stage (NAT traversal,
//! relays, faults) without Atoll, and it is the peer Atoll's own mesh is measured against.
//!
//! The public hosts enrolled by [`Nebula::new`] are lighthouses and relays; every host lists
//! them in `relay.relays` (a relay is declared by the host being reached) and punches.
//! Mesh addresses are 10.42.0.1, .2, … in enrolment order, in 10.42.0.0/16.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::Topology;

/// Nebula's UDP port on every host.
pub const PORT: u16 = 4242;
/// The tun device Nebula makes in each host's namespace.
pub const DEV: &str = "nebula1";

/// One enrolled host.
struct Member {
    mesh_ip: Ipv4Addr,
    child: Option<Child>,
}

/// A Nebula network over a topology's hosts, each host's `nebula` started and stopped by hand.
/// Dropping it kills the `nebula` processes it started.
pub struct Nebula {
    dir: PathBuf,
    /// (mesh address, wan address) of each lighthouse.
    lighthouses: Vec<(Ipv4Addr, Ipv4Addr)>,
    members: BTreeMap<String, Member>,
}

impl Nebula {
    /// Makes a CA in `dir` and enrols every host of `topo` (certificate, key, config); the
    /// public ones are lighthouses and relays. Starts nothing.
    pub fn new(topo: &Topology, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        cert_tool(dir, &["ca", "-name", "atoll-test", "-out-crt", "ca.crt", "-out-key", "ca.key"]);
        let mut n = Self { dir: dir.to_owned(), lighthouses: Vec::new(), members: BTreeMap::new() };
        for (i, h) in topo.hosts().iter().enumerate().filter(|(_, h)| h.public()) {
            n.lighthouses.push((mesh_ip(i), h.wan_addr));
        }
        for h in topo.hosts() {
            n.enroll(topo, &h.name);
        }
        n
    }

    /// Enrols `host` (added to the topology after [`Nebula::new`]: a plain member, neither
    /// lighthouse nor relay): signs its certificate and writes its config. Returns its mesh
    /// address.
    pub fn enroll(&mut self, topo: &Topology, host: &str) -> Ipv4Addr {
        assert!(!self.members.contains_key(host), "{host} is already enrolled");
        let ip = mesh_ip(self.members.len());
        let crt = format!("{host}.crt");
        let key = format!("{host}.key");
        cert_tool(
            &self.dir,
            &[
                "sign",
                "-ca-crt",
                "ca.crt",
                "-ca-key",
                "ca.key",
                "-name",
                host,
                "-ip",
                &format!("{ip}/16"),
                "-out-crt",
                &crt,
                "-out-key",
                &key,
            ],
        );
        let public = topo.host(host).public() && self.lighthouses.iter().any(|(m, _)| *m == ip);
        let config = render_config(&self.dir, host, ip, public, &self.lighthouses);
        std::fs::write(self.config(host), config).unwrap();
        self.members.insert(host.to_owned(), Member { mesh_ip: ip, child: None });
        ip
    }

    /// `host`'s mesh address.
    pub fn mesh_ip(&self, host: &str) -> Ipv4Addr {
        self.member(host).mesh_ip
    }

    /// `host`'s config file.
    pub fn config(&self, host: &str) -> PathBuf {
        self.dir.join(format!("{host}.yml"))
    }

    /// `host`'s Nebula log (every start appends to it).
    pub fn log(&self, host: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{host}.log"))).unwrap_or_default()
    }

    /// Starts `nebula` in `host`'s namespace and waits until its tun device holds the mesh
    /// address (panicking with its log if it exits first).
    pub fn start(&mut self, topo: &Topology, host: &str) {
        assert!(self.member(host).child.is_none(), "nebula already runs on {host}");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{host}.log"))).unwrap();
        let child = topo
            .command(host, crate::require("nebula"))
            .arg("-config")
            .arg(self.config(host))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let ip = self.mesh_ip(host);
        let m = self.members.get_mut(host).unwrap();
        m.child = Some(child);
        let mut exited = None;
        crate::wait_for(10, &format!("nebula's {DEV} on {host}"), || {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                exited = Some(status);
                return true;
            }
            topo.exec(host, &["ip", "-br", "addr", "show", "dev", DEV]).stdout.contains(&format!(" {ip}/"))
        });
        if let Some(status) = exited {
            m.child = None;
            panic!("nebula on {host} exited with {status}:\n{}", self.log(host));
        }
    }

    /// Starts `nebula` on every enrolled host, lighthouses first.
    pub fn start_all(&mut self, topo: &Topology) {
        let mut names: Vec<String> = self.members.keys().cloned().collect();
        names.sort_by_key(|n| !topo.host(n).public());
        for n in names {
            self.start(topo, &n);
        }
    }

    /// SIGKILLs `host`'s `nebula` (if running) and reaps it.
    pub fn stop(&mut self, host: &str) {
        if let Some(mut c) = self.members.get_mut(host).and_then(|m| m.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn member(&self, host: &str) -> &Member {
        self.members.get(host).unwrap_or_else(|| panic!("{host} is not enrolled in the Nebula network"))
    }
}

impl Drop for Nebula {
    fn drop(&mut self) {
        let names: Vec<String> = self.members.keys().cloned().collect();
        for n in names {
            self.stop(&n);
        }
    }
}

fn mesh_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 42, (i / 250) as u8, (i % 250) as u8 + 1)
}

/// Runs `nebula-cert ARGS` in `dir`, panicking with its output unless it succeeds.
fn cert_tool(dir: &Path, args: &[&str]) {
    let out = Command::new(crate::require("nebula-cert")).args(args).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "nebula-cert {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A host's config, as a person would write it: every lighthouse in `static_host_map`;
/// lighthouses and relays on public hosts; every host lists the relays (itself excepted) and
/// punches; the firewall lets in ICMP and TCP from members (TCP for throughput measures).
///
/// `punchy.delay: 0s`: Nebula 1.6.1 asks the relays from the first handshake retry (100 ms),
/// so with the default 1 s delay before punching back the relayed handshake wins, and 1.6.1
/// does not move a relayed tunnel to a direct path by itself (none moved in 75 s here): two
/// NAT'd hosts would stay relayed although punching works.
fn render_config(dir: &Path, host: &str, ip: Ipv4Addr, public: bool, lighthouses: &[(Ipv4Addr, Ipv4Addr)]) -> String {
    let others: Vec<Ipv4Addr> = lighthouses.iter().map(|(m, _)| *m).filter(|m| *m != ip).collect();
    let list = |ips: &[Ipv4Addr]| -> String {
        if ips.is_empty() { " []".to_owned() } else { ips.iter().map(|i| format!("\n    - \"{i}\"")).collect() }
    };
    let static_map: String = lighthouses.iter().map(|(m, w)| format!("\n  \"{m}\": [\"{w}:{PORT}\"]")).collect();
    let d = dir.display();
    format!(
        "pki:
  ca: {d}/ca.crt
  cert: {d}/{host}.crt
  key: {d}/{host}.key
static_host_map:{static_map}
lighthouse:
  am_lighthouse: {public}
  interval: 60
  hosts:{hosts}
listen:
  host: 0.0.0.0
  port: {PORT}
punchy:
  punch: true
  respond: true
  delay: 0s
relay:
  am_relay: {public}
  use_relays: true
  relays:{relays}
tun:
  dev: {DEV}
  mtu: 1300
logging:
  level: info
  format: text
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: icmp
      host: any
    - port: any
      proto: tcp
      host: any
",
        hosts = list(if public { &[] } else { &others }),
        relays = list(&others),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nat_hosts_config_lists_every_lighthouse_and_relay() {
        let lh = [
            ("10.42.0.1".parse().unwrap(), "203.0.113.10".parse().unwrap()),
            ("10.42.0.2".parse().unwrap(), "203.0.113.11".parse().unwrap()),
        ];
        expect_test::expect![[r#"
            pki:
              ca: /n/ca.crt
              cert: /n/home1.crt
              key: /n/home1.key
            static_host_map:
              "10.42.0.1": ["203.0.113.10:4242"]
              "10.42.0.2": ["203.0.113.11:4242"]
            lighthouse:
              am_lighthouse: false
              interval: 60
              hosts:
                - "10.42.0.1"
                - "10.42.0.2"
            listen:
              host: 0.0.0.0
              port: 4242
            punchy:
              punch: true
              respond: true
              delay: 0s
            relay:
              am_relay: false
              use_relays: true
              relays:
                - "10.42.0.1"
                - "10.42.0.2"
            tun:
              dev: nebula1
              mtu: 1300
            logging:
              level: info
              format: text
            firewall:
              outbound:
                - port: any
                  proto: any
                  host: any
              inbound:
                - port: any
                  proto: icmp
                  host: any
                - port: any
                  proto: tcp
                  host: any
        "#]]
        .assert_eq(&render_config(Path::new("/n"), "home1", "10.42.0.3".parse().unwrap(), false, &lh));
        let public = render_config(Path::new("/n"), "vps1", "10.42.0.1".parse().unwrap(), true, &lh);
        assert!(public.contains("am_lighthouse: true\n  interval: 60\n  hosts: []\n"), "{public}");
        assert!(public.contains("am_relay: true\n  use_relays: true\n  relays:\n    - \"10.42.0.2\"\n"), "{public}");
    }
}
