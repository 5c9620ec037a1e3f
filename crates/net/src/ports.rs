//! Host ports: resolving `-p`/`-P` into concrete host ports, refusing clashes with other
//! containers' publications and with ports other programs hold.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use atoll_spec::{ExposedPort, PortSpec, Protocol};

use crate::NetError;
use crate::records::{PublishedPort, State};

/// Host ports `-P` and `-p CONTAINER` pick from (Linux's default ephemeral range).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

pub(crate) fn port_key(p: &PublishedPort) -> String {
    format!("{}/{}", p.host_port, p.protocol)
}

/// Two publications clash when they share protocol and port on overlapping addresses.
pub(crate) fn clashes(a: &PublishedPort, b: &PublishedPort) -> bool {
    a.protocol == b.protocol && a.host_port == b.host_port && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
}

/// Whether some other program holds the port (tested by binding it for a moment; all
/// addresses of both families when no address is given). Port 53 is held on the bridges'
/// gateways by Atoll's own resolver, which a published 53 does not disturb (see `nft`), so it
/// is tested on loopback instead of every address.
pub(crate) fn port_free(p: &PublishedPort) -> bool {
    let bind = |ip: IpAddr| {
        let sa = SocketAddr::new(ip, p.host_port);
        match p.protocol {
            Protocol::Tcp => std::net::TcpListener::bind(sa).map(drop),
            Protocol::Udp => std::net::UdpSocket::bind(sa).map(drop),
        }
    };
    match p.host_ip {
        Some(ip) => bind(ip).is_ok(),
        None if p.host_port == 53 => bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).is_ok(),
        // `[::]` without IPV6_V6ONLY covers IPv4 too; without IPv6 on the host, IPv4 alone.
        None => match bind(IpAddr::V6(Ipv6Addr::UNSPECIFIED)) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => false,
            Err(_) => bind(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).is_ok(),
        },
    }
}

/// Whether `ip` is one of this host's addresses (or a wildcard): it can be bound.
fn local_address(ip: IpAddr) -> bool {
    !matches!(std::net::UdpSocket::bind(SocketAddr::new(ip, 0)), Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable)
}

/// What `-p`/`-P` ask for: `publish`, plus every exposed port not published already.
fn wanted(publish: &[PortSpec], exposed: &[ExposedPort], publish_all: bool) -> Vec<PortSpec> {
    let mut wanted: Vec<PortSpec> = publish.to_vec();
    if publish_all {
        for e in exposed {
            if !wanted.iter().any(|p| p.container_port == e.port && p.protocol == e.protocol) {
                wanted.push(PortSpec { host_ip: None, host_port: 0, host_port_end: None, container_port: e.port, protocol: e.protocol });
            }
        }
    }
    wanted
}

/// Resolves `-p`/`-P` into host ports. `taken` names the container already publishing a port
/// (or None); `free` says whether no other program holds it. A fixed port must be both; a
/// range takes its first such port, as docker does; no port at all takes a random free one
/// of the ephemeral range.
pub(crate) fn resolve(
    publish: &[PortSpec],
    exposed: &[ExposedPort],
    publish_all: bool,
    taken: impl Fn(&PublishedPort) -> Option<String>,
    free: impl Fn(&PublishedPort) -> bool,
) -> Result<Vec<PublishedPort>, NetError> {
    let mut out: Vec<PublishedPort> = Vec::new();
    for w in wanted(publish, exposed, publish_all) {
        let p = PublishedPort { host_ip: w.host_ip, host_port: w.host_port, container_port: w.container_port, protocol: w.protocol };
        let taken = |p: &PublishedPort| taken(p).or_else(|| out.iter().find(|q| clashes(p, q)).map(|_| "this one".into()));
        let usable = |port: u16| {
            let cand = PublishedPort { host_port: port, ..p };
            taken(&cand).is_none() && free(&cand)
        };
        let host_port = match (w.host_port, w.host_port_end) {
            (0, _) => {
                let start = EPHEMERAL.start() + fastrand::u16(..(EPHEMERAL.end() - EPHEMERAL.start()));
                (start..=*EPHEMERAL.end())
                    .chain(*EPHEMERAL.start()..start)
                    .find(|&port| usable(port))
                    .ok_or_else(|| NetError::NoFreePort(format!("{}/{}", p.container_port, p.protocol)))?
            }
            (a, Some(b)) if b != a => {
                (a..=b).find(|&port| usable(port)).ok_or_else(|| NetError::NoFreePort(format!("{a}-{b}/{}", p.protocol)))?
            }
            (port, _) => {
                if let Some(other) = taken(&p) {
                    return Err(NetError::PortTaken(port_key(&p), other));
                }
                if !free(&p) {
                    return Err(NetError::PortBusy(port_key(&p)));
                }
                port
            }
        };
        out.push(PublishedPort { host_port, ..p });
    }
    Ok(out)
}

impl State {
    /// Resolves `-p`/`-P` against the ports of every container and of the host.
    pub(crate) fn ports(&self, publish: &[PortSpec], exposed: &[ExposedPort], publish_all: bool) -> Result<Vec<PublishedPort>, NetError> {
        // An address the host does not have would be accepted and never answer.
        if let Some(ip) = publish.iter().filter_map(|p| p.host_ip).find(|ip| !local_address(*ip)) {
            return Err(NetError::NotLocal(ip));
        }
        let taken = |p: &PublishedPort| self.all_ports().find(|(_, q)| clashes(p, q)).map(|(n, _)| n.to_owned());
        resolve(publish, exposed, publish_all, taken, port_free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_clashes() {
        let p = |ip: Option<&str>, port, proto| PublishedPort {
            host_ip: ip.map(|s| s.parse().unwrap()),
            host_port: port,
            container_port: 80,
            protocol: proto,
        };
        assert!(clashes(&p(None, 80, Protocol::Tcp), &p(Some("127.0.0.1"), 80, Protocol::Tcp)));
        assert!(!clashes(&p(None, 80, Protocol::Tcp), &p(None, 80, Protocol::Udp)));
        assert!(!clashes(&p(Some("127.0.0.1"), 80, Protocol::Tcp), &p(Some("127.0.0.2"), 80, Protocol::Tcp)));
        assert_eq!(p(Some("::1"), 8080, Protocol::Udp).to_string(), "[::1]:8080->80/udp");
        assert_eq!(p(None, 8080, Protocol::Tcp).to_string(), "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp");
        assert_eq!(p(None, 8080, Protocol::Tcp).host_bindings(), ["0.0.0.0:8080", "[::]:8080"]);
    }

    /// `-p 127.0.0.1:18040-18042:80` takes the first port of the range that neither a
    /// container nor another program holds; a full range says which range.
    #[test]
    fn a_host_port_range_takes_its_first_free_port() {
        let spec = atoll_spec::network::parse_publish("127.0.0.1:18040-18042:80").unwrap();
        let held_by_web = |p: &PublishedPort| (p.host_port == 18040).then(|| "web".to_owned());
        let got = resolve(&spec, &[], false, held_by_web, |p| p.host_port != 18041).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].to_string(), "127.0.0.1:18042->80/tcp");
        let err = resolve(&spec, &[], false, held_by_web, |p| p.host_port < 18041).unwrap_err();
        assert_eq!(err.to_string(), "no free host port left for 18040-18042/tcp");
        // Two ranges in one run do not pick the same port.
        let two = [spec[0], spec[0]];
        let got = resolve(&two, &[], false, |_| None, |_| true).unwrap();
        assert_eq!(got.iter().map(|p| p.host_port).collect::<Vec<_>>(), [18040, 18041]);
        // A fixed port in use is refused, naming who holds it.
        let fixed = atoll_spec::network::parse_publish("18040:80").unwrap();
        let err = resolve(&fixed, &[], false, held_by_web, |_| true).unwrap_err();
        assert_eq!(err.to_string(), "host port 18040/tcp is already published by container web");
    }
}
