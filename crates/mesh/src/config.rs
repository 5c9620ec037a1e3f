//! Nebula 1.6.1's YAML configuration, rendered from [`MeshConfig`] (pure).
//!
//! Every key is one of Nebula 1.6.1's `examples/config.yml`. Strings are written as YAML
//! double-quoted scalars (JSON string syntax, which YAML reads the same), so no value can break
//! the document.
//!
//! What Nebula 1.6.1 reloads on SIGHUP (its `RegisterReloadCallback`s): `pki` (CA, cert, key,
//! blocklist — a certificate whose IP differs from the running one is refused), `firewall`,
//! `static_host_map`, `lighthouse.hosts` and the other `lighthouse.*` lists, `relay.relays`,
//! `punchy.respond`/`delay`, `logging`, `sshd`. Everything else is read once at start: the
//! listen address, the tun device (name, MTU, unsafe routes), `am_lighthouse`, `punchy.punch`,
//! `relay.use_relays` (computed with `am_relay` at start), `pki.disconnect_invalid`, and the mesh
//! IP. [`MeshConfig::restart_key`] names exactly those, so a change there restarts Nebula and
//! any other change is a reload.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::Ipv4Net;

/// Where Nebula finds its credentials (files the caller replaces atomically before a reload).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PkiPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A lighthouse: its mesh address and the public `ADDR:PORT`s it is reached at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lighthouse {
    pub mesh_ip: Ipv4Addr,
    pub public: Vec<String>,
}

/// A subnet reached through a member (the stacks issue: each host's container subnet).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnsafeRoute {
    pub route: Ipv4Net,
    pub via: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Any,
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    Any,
    One(u16),
    Range(u16, u16),
}

/// The tun device Atoll's Nebula uses (one per network namespace).
pub const TUN_DEV: &str = "atoll0";

/// The tun device's MTU: what fits in one UDP datagram on common paths after Nebula's overhead.
pub const MTU: u16 = 1300;

/// Who a firewall rule admits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Any member (any certificate the island's Nebula CA signed).
    AnyMember,
    /// The member whose certificate has this name.
    Host(String),
    /// Members whose certificates carry this group.
    Group(String),
    /// Mesh (or routed) source addresses.
    Cidr(Ipv4Net),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InboundRule {
    pub port: Port,
    pub proto: Proto,
    pub peer: Peer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
}

/// Nebula's sshd, used read-only to learn per-peer tunnel state (`list-hostmap -json`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sshd {
    /// On loopback; never port 22 (Nebula refuses it).
    pub listen: SocketAddr,
    pub host_key: PathBuf,
    /// One OpenSSH public key line.
    pub authorized_key: String,
}

/// Everything Atoll decides about one host's Nebula.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeshConfig {
    pub pki: PkiPaths,
    /// Nebula certificate fingerprints refused (revoked members).
    pub blocklist: Vec<String>,
    /// This host's mesh address (the one in its Nebula certificate).
    pub mesh_ip: Ipv4Addr,
    pub listen_host: IpAddr,
    pub listen_port: u16,
    /// The island's lighthouses (this host is skipped if it is one of them).
    pub lighthouses: Vec<Lighthouse>,
    pub am_lighthouse: bool,
    pub am_relay: bool,
    /// Mesh IPs of the relays (the public members); a relay itself lists none.
    pub relays: Vec<Ipv4Addr>,
    /// The tun device: at most 15 bytes (IFNAMSIZ).
    pub tun_dev: String,
    pub mtu: u16,
    pub unsafe_routes: Vec<UnsafeRoute>,
    pub log_level: LogLevel,
    /// The control plane's TCP port, open to every member.
    pub control_port: u16,
    /// Inbound rules beyond ICMP and the control port.
    pub extra_inbound: Vec<InboundRule>,
    pub sshd: Option<Sshd>,
}

impl MeshConfig {
    /// A config with Atoll's defaults (UDP 4242 on all addresses, `atoll0`, MTU 1300, info
    /// logs, control port 4243, no lighthouse or relay of its own).
    pub fn new(pki: PkiPaths, mesh_ip: Ipv4Addr) -> Self {
        Self {
            pki,
            blocklist: Vec::new(),
            mesh_ip,
            listen_host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            listen_port: 4242,
            lighthouses: Vec::new(),
            am_lighthouse: false,
            am_relay: false,
            relays: Vec::new(),
            tun_dev: TUN_DEV.into(),
            mtu: MTU,
            unsafe_routes: Vec::new(),
            log_level: LogLevel::Info,
            control_port: 4243,
            extra_inbound: Vec::new(),
            sshd: None,
        }
    }

    /// What Nebula reads only at start: if this differs between two configs, a reload is not
    /// enough and Nebula must be restarted.
    pub fn restart_key(&self) -> String {
        format!(
            "{:?}",
            (
                self.mesh_ip,
                self.listen_host,
                self.listen_port,
                &self.tun_dev,
                self.mtu,
                &self.unsafe_routes,
                self.am_lighthouse,
                self.am_relay,
                // sshd's host key is read once
                self.sshd.as_ref().map(|s| (&s.listen, &s.host_key)),
            )
        )
    }

    /// Checks what Nebula would refuse or misread.
    pub fn validate(&self) -> Result<(), String> {
        if self.tun_dev.is_empty()
            || self.tun_dev.len() > 15
            || !self.tun_dev.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(format!("tun device name {:?} must be 1 to 15 of a-z, 0-9, '_', '-', '.'", self.tun_dev));
        }
        if self.sshd.as_ref().is_some_and(|s| s.listen.port() == 22) {
            return Err("Nebula's sshd cannot listen on port 22".into());
        }
        if !self.am_lighthouse && self.lighthouses.iter().all(|l| l.mesh_ip == self.mesh_ip) {
            return Err("a host that is not a lighthouse needs at least one lighthouse".into());
        }
        for b in &self.blocklist {
            if b.len() != 64 || !b.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("{b:?} is not a Nebula certificate fingerprint (64 hex digits)"));
            }
        }
        Ok(())
    }
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn qp(p: &std::path::Path) -> String {
    q(&p.to_string_lossy())
}

fn list<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    let v: Vec<String> = items.iter().map(f).collect();
    format!("[{}]", v.join(", "))
}

fn rule(out: &mut String, port: &str, proto: &str, peer: &Peer) {
    let _ = writeln!(out, "    - port: {port}");
    let _ = writeln!(out, "      proto: {proto}");
    let _ = match peer {
        Peer::AnyMember => writeln!(out, "      host: any"),
        Peer::Host(h) => writeln!(out, "      host: {}", q(h)),
        Peer::Group(g) => writeln!(out, "      group: {}", q(g)),
        Peer::Cidr(c) => writeln!(out, "      cidr: {}", q(&c.to_string())),
    };
}

/// The YAML Nebula reads.
pub fn render(c: &MeshConfig) -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "# Written by Atoll; changes are overwritten.");
    let _ = writeln!(w, "pki:");
    let _ = writeln!(w, "  ca: {}", qp(&c.pki.ca));
    let _ = writeln!(w, "  cert: {}", qp(&c.pki.cert));
    let _ = writeln!(w, "  key: {}", qp(&c.pki.key));
    let _ = writeln!(w, "  blocklist: {}", list(&c.blocklist, |b| q(b)));
    // Tunnels to a peer whose certificate expired or was blocklisted are torn down.
    let _ = writeln!(w, "  disconnect_invalid: true");

    let others: Vec<&Lighthouse> = c.lighthouses.iter().filter(|l| l.mesh_ip != c.mesh_ip).collect();
    let _ = writeln!(w, "static_host_map:");
    if others.is_empty() {
        w.truncate(w.len() - 1);
        let _ = writeln!(w, " {{}}");
    }
    for l in &others {
        let _ = writeln!(w, "  {}: {}", q(&l.mesh_ip.to_string()), list(&l.public, |a| q(a)));
    }

    let _ = writeln!(w, "lighthouse:");
    let _ = writeln!(w, "  am_lighthouse: {}", c.am_lighthouse);
    let _ = writeln!(w, "  interval: 60");
    let hosts: Vec<&Lighthouse> = if c.am_lighthouse { Vec::new() } else { others.clone() };
    let _ = writeln!(w, "  hosts: {}", list(&hosts, |l| q(&l.mesh_ip.to_string())));

    let _ = writeln!(w, "listen:");
    let host = match c.listen_host {
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    };
    let _ = writeln!(w, "  host: {}", q(&host));
    let _ = writeln!(w, "  port: {}", c.listen_port);

    let _ = writeln!(w, "punchy:");
    let _ = writeln!(w, "  punch: true");
    let _ = writeln!(w, "  respond: true");
    // Punch back at once: 1.6.1 asks its relays from the first handshake retry, so with the
    // default 1 s delay the relayed handshake wins and two NAT'd hosts stay relayed although
    // hole punching works (seen on the test stage for 75 s).
    let _ = writeln!(w, "  delay: 0s");

    let _ = writeln!(w, "relay:");
    let _ = writeln!(w, "  am_relay: {}", c.am_relay);
    let _ = writeln!(w, "  use_relays: true");
    let relays: Vec<&Ipv4Addr> = if c.am_relay { Vec::new() } else { c.relays.iter().filter(|r| **r != c.mesh_ip).collect() };
    let _ = writeln!(w, "  relays: {}", list(&relays, |r| q(&r.to_string())));

    let _ = writeln!(w, "tun:");
    let _ = writeln!(w, "  disabled: false");
    let _ = writeln!(w, "  dev: {}", q(&c.tun_dev));
    let _ = writeln!(w, "  drop_local_broadcast: false");
    let _ = writeln!(w, "  drop_multicast: false");
    let _ = writeln!(w, "  tx_queue: 500");
    let _ = writeln!(w, "  mtu: {}", c.mtu);
    let _ = writeln!(w, "  routes: []");
    if c.unsafe_routes.is_empty() {
        let _ = writeln!(w, "  unsafe_routes: []");
    } else {
        let _ = writeln!(w, "  unsafe_routes:");
        for r in &c.unsafe_routes {
            let _ = writeln!(w, "    - route: {}", q(&r.route.to_string()));
            let _ = writeln!(w, "      via: {}", q(&r.via.to_string()));
        }
    }

    let _ = writeln!(w, "logging:");
    let level = match c.log_level {
        LogLevel::Error => "error",
        LogLevel::Warning => "warning",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    let _ = writeln!(w, "  level: {level}");
    let _ = writeln!(w, "  format: json");

    if let Some(s) = &c.sshd {
        let _ = writeln!(w, "sshd:");
        let _ = writeln!(w, "  enabled: true");
        let _ = writeln!(w, "  listen: {}", q(&s.listen.to_string()));
        let _ = writeln!(w, "  host_key: {}", qp(&s.host_key));
        let _ = writeln!(w, "  authorized_users:");
        let _ = writeln!(w, "    - user: atoll");
        let _ = writeln!(w, "      keys: [{}]", q(s.authorized_key.trim()));
    }

    let _ = writeln!(w, "firewall:");
    let _ = writeln!(w, "  conntrack:");
    let _ = writeln!(w, "    tcp_timeout: 12m");
    let _ = writeln!(w, "    udp_timeout: 3m");
    let _ = writeln!(w, "    default_timeout: 10m");
    let _ = writeln!(w, "  outbound:");
    rule(w, "any", "any", &Peer::AnyMember);
    let _ = writeln!(w, "  inbound:");
    rule(w, "any", "icmp", &Peer::AnyMember);
    rule(w, &c.control_port.to_string(), "tcp", &Peer::AnyMember);
    for r in &c.extra_inbound {
        let port = match r.port {
            Port::Any => "any".to_owned(),
            Port::One(p) => p.to_string(),
            Port::Range(a, b) => format!("{a}-{b}"),
        };
        let proto = match r.proto {
            Proto::Any => "any",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        };
        rule(w, &port, proto, &r.peer);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn base() -> MeshConfig {
        let mut c = MeshConfig::new(
            PkiPaths { ca: "/var/lib/atoll/island/nebula/ca.crt".into(), cert: "/x/host.crt".into(), key: "/x/host.key".into() },
            "10.42.0.5".parse().unwrap(),
        );
        c.lighthouses = vec![
            Lighthouse { mesh_ip: "10.42.0.1".parse().unwrap(), public: vec!["203.0.113.10:4242".into()] },
            Lighthouse { mesh_ip: "10.42.0.2".parse().unwrap(), public: vec!["203.0.113.11:4242".into(), "[2001:db8::11]:4242".into()] },
        ];
        c.relays = vec!["10.42.0.1".parse().unwrap(), "10.42.0.2".parse().unwrap()];
        c.blocklist = vec!["c99d4e650533b92061b09918e838a5a0a6aaee21eed1d12fd937682865936c72".into()];
        c
    }

    #[test]
    fn a_host_behind_nat() {
        let mut c = base();
        c.extra_inbound = vec![
            InboundRule { port: Port::One(443), proto: Proto::Tcp, peer: Peer::Group("gateway".into()) },
            InboundRule { port: Port::Range(8000, 8100), proto: Proto::Udp, peer: Peer::Cidr("10.42.0.0/24".parse().unwrap()) },
            InboundRule { port: Port::Any, proto: Proto::Any, peer: Peer::Host("bob \"the\" host".into()) },
        ];
        c.unsafe_routes = vec![UnsafeRoute { route: "10.89.1.0/24".parse().unwrap(), via: "10.42.0.2".parse().unwrap() }];
        c.sshd = Some(Sshd {
            listen: "127.0.0.1:4244".parse().unwrap(),
            host_key: "/x/ssh_host".into(),
            authorized_key: "ssh-ed25519 AAAA atoll\n".into(),
        });
        assert_eq!(c.validate(), Ok(()));
        expect![[r##"
            # Written by Atoll; changes are overwritten.
            pki:
              ca: "/var/lib/atoll/island/nebula/ca.crt"
              cert: "/x/host.crt"
              key: "/x/host.key"
              blocklist: ["c99d4e650533b92061b09918e838a5a0a6aaee21eed1d12fd937682865936c72"]
              disconnect_invalid: true
            static_host_map:
              "10.42.0.1": ["203.0.113.10:4242"]
              "10.42.0.2": ["203.0.113.11:4242", "[2001:db8::11]:4242"]
            lighthouse:
              am_lighthouse: false
              interval: 60
              hosts: ["10.42.0.1", "10.42.0.2"]
            listen:
              host: "0.0.0.0"
              port: 4242
            punchy:
              punch: true
              respond: true
              delay: 0s
            relay:
              am_relay: false
              use_relays: true
              relays: ["10.42.0.1", "10.42.0.2"]
            tun:
              disabled: false
              dev: "atoll0"
              drop_local_broadcast: false
              drop_multicast: false
              tx_queue: 500
              mtu: 1300
              routes: []
              unsafe_routes:
                - route: "10.89.1.0/24"
                  via: "10.42.0.2"
            logging:
              level: info
              format: json
            sshd:
              enabled: true
              listen: "127.0.0.1:4244"
              host_key: "/x/ssh_host"
              authorized_users:
                - user: atoll
                  keys: ["ssh-ed25519 AAAA atoll"]
            firewall:
              conntrack:
                tcp_timeout: 12m
                udp_timeout: 3m
                default_timeout: 10m
              outbound:
                - port: any
                  proto: any
                  host: any
              inbound:
                - port: any
                  proto: icmp
                  host: any
                - port: 4243
                  proto: tcp
                  host: any
                - port: 443
                  proto: tcp
                  group: "gateway"
                - port: 8000-8100
                  proto: udp
                  cidr: "10.42.0.0/24"
                - port: any
                  proto: any
                  host: "bob \"the\" host"
        "##]]
        .assert_eq(&render(&c));
    }

    #[test]
    fn a_public_host_is_a_lighthouse_and_a_relay_and_lists_neither() {
        let mut c = base();
        c.mesh_ip = "10.42.0.1".parse().unwrap();
        c.am_lighthouse = true;
        c.am_relay = true;
        c.blocklist.clear();
        c.listen_host = "::".parse().unwrap();
        let out = render(&c);
        let pick = |key: &str| out.lines().map(str::trim).filter(|l| l.starts_with(key)).collect::<Vec<_>>().join("\n");
        expect![[r#""10.42.0.2": ["203.0.113.11:4242", "[2001:db8::11]:4242"]"#]].assert_eq(&pick("\"10.42"));
        expect![[r#"am_lighthouse: true"#]].assert_eq(&pick("am_lighthouse"));
        expect![[r#"hosts: []"#]].assert_eq(&pick("hosts:"));
        expect![[r#"
            am_relay: true
            relays: []"#]]
        .assert_eq(&(pick("am_relay") + "\n" + &pick("relays:")));
        expect![[r#"host: "[::]""#]].assert_eq(&pick("host: \"["));
        expect![[r#"blocklist: []"#]].assert_eq(&pick("blocklist"));

        // The only lighthouse: an empty static host map.
        c.lighthouses.truncate(1);
        assert!(render(&c).contains("static_host_map: {}\nlighthouse:"), "{}", render(&c));
    }

    #[test]
    fn reloadable_changes_do_not_restart() {
        let a = base();
        let mut b = a.clone();
        b.blocklist.push("ab".repeat(32));
        b.lighthouses.push(Lighthouse { mesh_ip: "10.42.0.3".parse().unwrap(), public: vec!["203.0.113.12:4242".into()] });
        b.relays.push("10.42.0.3".parse().unwrap());
        b.extra_inbound.push(InboundRule { port: Port::One(80), proto: Proto::Tcp, peer: Peer::AnyMember });
        b.log_level = LogLevel::Debug;
        assert_eq!(a.restart_key(), b.restart_key());
        for change in [
            |c: &mut MeshConfig| c.listen_port = 4300,
            |c: &mut MeshConfig| c.tun_dev = "atoll1".into(),
            |c: &mut MeshConfig| c.mesh_ip = "10.42.0.9".parse().unwrap(),
            |c: &mut MeshConfig| c.am_relay = true,
            |c: &mut MeshConfig| {
                c.unsafe_routes.push(UnsafeRoute { route: "10.89.2.0/24".parse().unwrap(), via: "10.42.0.2".parse().unwrap() })
            },
        ] {
            let mut c = a.clone();
            change(&mut c);
            assert_ne!(a.restart_key(), c.restart_key(), "{c:?}");
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = base();
        c.tun_dev = "a-very-long-device-name".into();
        assert!(c.validate().unwrap_err().contains("15"));
        let mut c = base();
        c.lighthouses.clear();
        assert!(c.validate().unwrap_err().contains("lighthouse"));
        let mut c = base();
        c.blocklist = vec!["nope".into()];
        assert!(c.validate().unwrap_err().contains("fingerprint"));
    }
}
