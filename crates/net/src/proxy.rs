//! The other half of published ports, in the helper process (`atoll dns serve`): a socket bound on
//! every published host port. It reserves the port, so no other program (docker's
//! docker-proxy included) can bind it behind Atoll's back, and it relays to the container what
//! DNAT does not catch, over TCP and UDP: IPv6 loopback (the kernel cannot DNAT `::1` to
//! another address; IPv6 has no `route_localnet`), and IPv6 when the container has none.
//! Everything else is DNAT in `inet atoll` and never reaches these sockets.
//!
//! A host port published on every address is bound as `0.0.0.0:P` and `[::]:P` (IPv6 only),
//! the way docker binds it, and shown so. [`bindings`] is the pure core.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_spec::Protocol;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::nft::PortRule;

/// A UDP "connection" ends after this long without traffic (docker-proxy's figure).
const UDP_IDLE: Duration = Duration::from_secs(90);
/// At most this many relayed TCP connections, and UDP clients, per bound port.
const MAX_FLOWS: usize = 1024;
/// Connecting to the container gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One bound socket: an address and port, and a protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Binding {
    pub addr: SocketAddr,
    pub protocol: Protocol,
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol)
    }
}

impl std::str::FromStr for Binding {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (addr, proto) = s.rsplit_once('/').ok_or(())?;
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return Err(()),
        };
        Ok(Self { addr: addr.parse().map_err(|_| ())?, protocol })
    }
}

/// Where a binding relays to: the container's IPv4 address, and its IPv6 one if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    v4: SocketAddr,
    v6: Option<SocketAddr>,
}

impl Target {
    fn of(rule: &PortRule) -> Self {
        Self {
            v4: SocketAddr::new(IpAddr::V4(rule.target4), rule.container_port),
            v6: rule.target6.map(|ip| SocketAddr::new(IpAddr::V6(ip), rule.container_port)),
        }
    }

    /// IPv6 clients reach the container's IPv6 address when it has one; all others its IPv4.
    fn for_client(&self, listener: &SocketAddr) -> SocketAddr {
        match (listener, self.v6) {
            (SocketAddr::V6(_), Some(v6)) => v6,
            _ => self.v4,
        }
    }
}

/// The sockets a published port needs. Every address: `0.0.0.0` and `[::]`, except that the
/// wildcard IPv4 one is left out for port 53, where Atoll's own resolver listens on the
/// bridges' gateways (a published 53 does not disturb it, see `nft`).
pub fn bindings(rule: &PortRule) -> Vec<Binding> {
    let b = |ip: IpAddr| Binding { addr: SocketAddr::new(ip, rule.host_port), protocol: rule.protocol };
    match rule.host_ip {
        None if rule.host_port == 53 => vec![b(IpAddr::V6(Ipv6Addr::UNSPECIFIED))],
        None => vec![b(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), b(IpAddr::V6(Ipv6Addr::UNSPECIFIED))],
        Some(ip) => vec![b(ip)],
    }
}

/// A socket bound without `SO_REUSEADDR`/`SO_REUSEPORT` (so it excludes every other binder),
/// IPv6 ones `IPV6_V6ONLY` (so `[::]` and `0.0.0.0` are two sockets, as docker has them).
fn bind(b: &Binding) -> std::io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    let family = if b.addr.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    let kind = match b.protocol {
        Protocol::Tcp => SocketType::STREAM,
        Protocol::Udp => SocketType::DGRAM,
    };
    let fd = rustix::net::socket_with(family, kind, rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK, None)?;
    if b.addr.is_ipv6() {
        sockopt::set_ipv6_v6only(&fd, true)?;
    }
    rustix::net::bind(&fd, &b.addr)?;
    if b.protocol == Protocol::Tcp {
        rustix::net::listen(&fd, 1024)?;
    }
    Ok(fd)
}

struct Running {
    target: Target,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The bound sockets of the helper, by binding.
#[derive(Default)]
pub struct Proxies {
    running: HashMap<Binding, Running>,
}

impl Proxies {
    /// Binds what `rules` publish and closes what they no longer do. Returns the bindings that
    /// could not be bound because another program holds them; other failures are errors.
    pub fn reconcile(&mut self, rules: &[PortRule]) -> Result<Vec<Binding>, String> {
        let want: HashMap<Binding, Target> = rules.iter().flat_map(|r| bindings(r).into_iter().map(move |b| (b, Target::of(r)))).collect();
        // Gone or retargeted first, so a port moving between containers is free to bind again.
        self.running.retain(|b, r| want.get(b) == Some(&r.target));
        let mut busy = Vec::new();
        let mut errors = Vec::new();
        let mut todo: Vec<(&Binding, &Target)> = want.iter().filter(|(b, _)| !self.running.contains_key(b)).collect();
        todo.sort_by_key(|(b, _)| **b);
        for (b, target) in todo {
            match bind(b).and_then(|fd| spawn(*b, *target, fd)) {
                Ok(task) => {
                    self.running.insert(*b, Running { target: *target, task });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => busy.push(*b),
                // No IPv6 on this host: nothing to reserve or relay there.
                Err(e) if b.addr.is_ipv6() && e.raw_os_error() == Some(rustix::io::Errno::AFNOSUPPORT.raw_os_error()) => {}
                Err(e) => errors.push(format!("binding {b}: {e}")),
            }
        }
        if errors.is_empty() { Ok(busy) } else { Err(errors.join("; ")) }
    }
}

fn spawn(b: Binding, target: Target, fd: OwnedFd) -> std::io::Result<tokio::task::JoinHandle<()>> {
    Ok(match b.protocol {
        Protocol::Tcp => {
            let listener = TcpListener::from_std(std::net::TcpListener::from(fd))?;
            tokio::spawn(relay_tcp(listener, b.addr, target))
        }
        Protocol::Udp => {
            let sock = UdpSocket::from_std(std::net::UdpSocket::from(fd))?;
            tokio::spawn(relay_udp(Arc::new(sock), b.addr, target))
        }
    })
}

async fn relay_tcp(listener: TcpListener, local: SocketAddr, target: Target) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_FLOWS));
    let to = target.for_client(&local);
    loop {
        // Waits for a free slot before accepting: excess clients queue in the backlog.
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let Ok((mut client, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(mut upstream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await else { return };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

async fn relay_udp(sock: Arc<UdpSocket>, local: SocketAddr, target: Target) {
    let to = target.for_client(&local);
    let flows: Flows = Arc::default();
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, client)) = sock.recv_from(&mut buf).await else { continue };
        let existing = flows.lock().unwrap().get(&client).cloned();
        let upstream = match existing {
            Some(u) => u,
            None => {
                if flows.lock().unwrap().len() >= MAX_FLOWS {
                    continue;
                }
                let any: SocketAddr = if to.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
                let Ok(u) = UdpSocket::bind(any).await else { continue };
                if u.connect(to).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                flows.lock().unwrap().insert(client, u.clone());
                tokio::spawn(udp_replies(sock.clone(), u.clone(), client, flows.clone()));
                u
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

/// Relays the container's answers to one client until the flow has been idle for a while.
async fn udp_replies(listener: Arc<UdpSocket>, upstream: Arc<UdpSocket>, client: SocketAddr, flows: Flows) {
    let mut buf = vec![0u8; 65535];
    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buf)).await {
        let _ = listener.send_to(&buf[..n], client).await;
    }
    flows.lock().unwrap().remove(&client);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(host_ip: Option<&str>, port: u16) -> PortRule {
        PortRule {
            host_ip: host_ip.map(|s| s.parse().unwrap()),
            host_port: port,
            protocol: Protocol::Tcp,
            target4: "10.89.0.2".parse().unwrap(),
            target6: None,
            container_port: 80,
        }
    }

    #[test]
    fn every_address_is_both_families_and_a_given_one_is_itself() {
        let show = |r: &PortRule| bindings(r).iter().map(|b| b.to_string()).collect::<Vec<_>>();
        assert_eq!(show(&rule(None, 8080)), ["0.0.0.0:8080/tcp", "[::]:8080/tcp"]);
        assert_eq!(show(&rule(Some("::1"), 8080)), ["[::1]:8080/tcp"]);
        assert_eq!(show(&rule(Some("127.0.0.1"), 8080)), ["127.0.0.1:8080/tcp"]);
        assert_eq!(show(&rule(None, 53)), ["[::]:53/tcp"]);
        assert_eq!("[::1]:8080/udp".parse::<Binding>(), Ok(Binding { addr: "[::1]:8080".parse().unwrap(), protocol: Protocol::Udp }));
    }

    #[test]
    fn ipv6_clients_reach_the_containers_ipv6_address_if_it_has_one() {
        let mut r = rule(None, 8080);
        let v6: SocketAddr = "[::]:8080".parse().unwrap();
        let v4: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(Target::of(&r).for_client(&v6).to_string(), "10.89.0.2:80");
        r.target6 = Some("fd00::2".parse().unwrap());
        assert_eq!(Target::of(&r).for_client(&v6).to_string(), "[fd00::2]:80");
        assert_eq!(Target::of(&r).for_client(&v4).to_string(), "10.89.0.2:80");
    }
}
