//! Host ports: resolving `-p`/`-P` into concrete host ports, refusing clashes with other
//! containers' publications and with ports other programs hold.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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

/// Whether some other program holds the port (tested by binding it for a moment). Port 53 is
/// held on the bridges' gateways by Atoll's own resolver, which a published 53 does not
/// disturb (see `nft`), so it is tested on loopback instead of every address.
pub(crate) fn port_free(p: &PublishedPort) -> bool {
    let any = if p.host_port == 53 { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
    let ip = p.host_ip.unwrap_or(any);
    let sa = SocketAddr::new(ip, p.host_port);
    match p.protocol {
        Protocol::Tcp => std::net::TcpListener::bind(sa).is_ok(),
        Protocol::Udp => std::net::UdpSocket::bind(sa).is_ok(),
    }
}
impl State {
    pub(crate) fn ports(&self, publish: &[PortSpec], exposed: &[ExposedPort], publish_all: bool) -> Result<Vec<PublishedPort>, NetError> {
        let mut wanted: Vec<PortSpec> = publish.to_vec();
        if publish_all {
            for e in exposed {
                if !wanted.iter().any(|p| p.container_port == e.port && p.protocol == e.protocol) {
                    wanted.push(PortSpec { host_ip: None, host_port: 0, container_port: e.port, protocol: e.protocol });
                }
            }
        }
        let mut out: Vec<PublishedPort> = Vec::new();
        for w in wanted {
            let mut p =
                PublishedPort { host_ip: w.host_ip, host_port: w.host_port, container_port: w.container_port, protocol: w.protocol };
            let taken = |p: &PublishedPort| {
                self.all_ports()
                    .find(|(_, q)| clashes(p, q))
                    .map(|(n, _)| n.to_owned())
                    .or_else(|| out.iter().find(|q| clashes(p, q)).map(|_| "this one".into()))
            };
            if p.host_port == 0 {
                let start = EPHEMERAL.start() + fastrand::u16(..(EPHEMERAL.end() - EPHEMERAL.start()));
                let found = (start..=*EPHEMERAL.end()).chain(*EPHEMERAL.start()..start).find(|&port| {
                    let cand = PublishedPort { host_port: port, ..p };
                    taken(&cand).is_none() && port_free(&cand)
                });
                p.host_port = found.ok_or_else(|| NetError::NoFreePort(format!("{}/{}", p.container_port, p.protocol)))?;
            } else {
                if let Some(other) = taken(&p) {
                    return Err(NetError::PortTaken(port_key(&p), other));
                }
                if !port_free(&p) {
                    return Err(NetError::PortBusy(port_key(&p)));
                }
            }
            out.push(p);
        }
        Ok(out)
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
    }
}
