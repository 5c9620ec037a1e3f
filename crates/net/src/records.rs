//! What networking remembers, and the view built from it: network records
//! (`networks/<id>.json`), containers' endpoints and published ports (persisted in the container
//! records and handed in at start), and [`State`], from which addresses are allocated and the
//! nftables ruleset and the helper's configuration are derived. No IO.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use atoll_spec::network::GatewayMode;
use atoll_spec::{DEFAULT_NETWORK, NetworkAttachment, Protocol};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::{NetError, dns, ipam, nft};

/// A network as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// The Linux bridge (present while the network has endpoints).
    pub bridge: String,
    #[schema(value_type = String)]
    pub subnet4: Ipv4Net,
    #[schema(value_type = String)]
    pub gateway4: Ipv4Addr,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub subnet6: Option<Ipv6Net>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub gateway6: Option<Ipv6Addr>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Driver options as given (validated at create): the gateway modes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// A stack network's island-wide prefix (driver `overlay`): `subnet4` is this member's
    /// slice of it, and containers reach the rest through the gateway (the overlay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub overlay4: Option<Ipv4Net>,
    pub created: String,
}

impl NetworkRecord {
    /// Whether traffic from outside may reach unpublished ports, over IPv4 and over IPv6.
    pub fn unprotected(&self) -> (bool, bool) {
        let (v4, v6) = atoll_spec::NetworkSpec::gateway_modes(&self.options).unwrap_or_default();
        (v4 == GatewayMode::NatUnprotected, v6 == GatewayMode::NatUnprotected)
    }
}

/// A container's place on one network (kept in the container's record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub network_id: String,
    pub network: String,
    #[schema(value_type = String)]
    pub ipv4: Ipv4Addr,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub ipv6: Option<Ipv6Addr>,
    pub mac: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The interface inside the container (`eth0`…).
    pub interface: String,
    /// The host side of the veth pair.
    pub host_veth: String,
}

/// A published port with the host port resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublishedPort {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PublishedPort {
    /// The host addresses it is bound on: every address is `0.0.0.0` and `::`, as docker
    /// shows them.
    pub fn host_addresses(&self) -> Vec<IpAddr> {
        match self.host_ip {
            Some(ip) => vec![ip],
            None => vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)],
        }
    }

    /// `ADDR:PORT` for each host address (`[::]:8080` for IPv6), as `atoll port` prints them.
    pub fn host_bindings(&self) -> Vec<String> {
        self.host_addresses().iter().map(|ip| SocketAddr::new(*ip, self.host_port).to_string()).collect()
    }

    /// Whether `b` is one of this port's sockets.
    pub(crate) fn covers(&self, b: &crate::proxy::Binding) -> bool {
        b.protocol == self.protocol && b.addr.port() == self.host_port && self.host_ip.is_none_or(|ip| ip == b.addr.ip())
    }
}

/// As `docker ps` shows it: `0.0.0.0:8080->80/tcp, [::]:8080->80/tcp`.
impl std::fmt::Display for PublishedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let to = format!("->{}/{}", self.container_port, self.protocol);
        f.write_str(&self.host_bindings().iter().map(|b| format!("{b}{to}")).collect::<Vec<_>>().join(", "))
    }
}

/// What the engine knows about one container at start.
#[derive(Debug, Clone)]
pub struct OwnerInit {
    pub id: String,
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<PublishedPort>,
}
#[derive(Debug)]
pub(crate) struct Owner {
    pub(crate) name: String,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) ports: Vec<PublishedPort>,
    /// Its namespace exists and its endpoints are plumbed.
    pub(crate) active: bool,
    /// Its first endpoint is the spare's ([`Spare`]), whose namespace it takes at its start.
    pub(crate) spare: Option<String>,
}

/// A namespace made ahead of need on the default network: a veth on its bridge, the other end
/// inside configured with an address and the routes, as `eth0`. The next container there that
/// asks for nothing else takes its endpoint at `create` and its namespace at `start` (moved to
/// its own path), so its start makes no link, address or route (most of a bridged start's
/// netlink work, and the RTNL waits behind the last container's teardown). Its addresses count
/// as taken; nothing lists it. Made again after each start on the default network.
#[derive(Debug, Clone)]
pub(crate) struct Spare {
    /// Its namespace's name under `netns/` (`spare-…`; never a container ID).
    pub(crate) key: String,
    pub(crate) endpoint: Endpoint,
    /// Plumbed: it may be taken (until then only its addresses are reserved).
    pub(crate) ready: bool,
}

/// The prefix of spare namespaces' keys.
pub(crate) const SPARE_PREFIX: &str = "spare-";

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) networks: BTreeMap<String, NetworkRecord>,
    pub(crate) ula: Ipv6Net,
    pub(crate) owners: BTreeMap<String, Owner>,
    /// The default network's bridge (and so the table) stays up once it has been used, as
    /// docker0 does: most `run`s then plumb one veth and touch neither bridge nor table.
    pub(crate) default_warm: bool,
    /// Endpoints of removed containers whose veths are still being deleted (in the
    /// background: it takes an RCU grace period): their addresses are not handed out again
    /// until they are gone.
    pub(crate) dying: BTreeMap<String, Vec<Endpoint>>,
    /// The island's overlay on this host, if it has one.
    pub(crate) overlay: Option<crate::overlay::Overlay>,
    /// Replicas of stack networks on other members, by network name.
    pub(crate) remote: crate::overlay::Remote,
    /// Containers DNS does not name (stack replicas whose health check has not passed); they
    /// stay reachable by address.
    pub(crate) unnamed: BTreeSet<String>,
    /// Ports of containers here forwarded from the mesh address, for the gateway.
    pub(crate) forwards: crate::overlay::MeshForwards,
    /// The default network's spare namespace, if one is made or being made.
    pub(crate) spare: Option<Spare>,
}

/// A network's bridge: up with containers, kept up without (the default network), or absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BridgeState {
    #[serde(rename = "in-use")]
    InUse,
    Warm,
    Down,
}

impl std::fmt::Display for BridgeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::InUse => "in use",
            Self::Warm => "warm",
            Self::Down => "down",
        })
    }
}

/// A network as listed: its record and the state of its bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkSummary {
    #[serde(flatten)]
    pub network: NetworkRecord,
    pub bridge_state: BridgeState,
}
pub(crate) fn mac_string(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub(crate) fn parse_mac(s: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (i, part) in s.split(':').take(6).enumerate() {
        mac[i] = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    mac
}

/// `/etc/hosts` for a container on bridge networks.
pub fn hosts_file(hostname: &str, name: &str, endpoints: &[Endpoint]) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let names = if hostname == name { hostname.to_owned() } else { format!("{hostname} {name}") };
    for e in endpoints {
        s.push_str(&format!("{}\t{names}\n", e.ipv4));
        if let Some(v6) = e.ipv6 {
            s.push_str(&format!("{v6}\t{names}\n"));
        }
    }
    s
}

/// `/etc/resolv.conf` for a container: Atoll's DNS on its first network's gateway, with the
/// host's `search` and `options` lines.
pub fn resolv_conf(nameserver: Ipv4Addr, host: &str) -> String {
    let mut s = format!("nameserver {nameserver}\n");
    for l in host.lines().map(str::trim) {
        if l.starts_with("search ") || l.starts_with("options ") {
            s.push_str(l);
            s.push('\n');
        }
    }
    s
}
impl State {
    pub(crate) fn find(&self, query: &str) -> Result<&NetworkRecord, NetError> {
        if let Some(n) = self.networks.values().find(|n| n.name == query) {
            return Ok(n);
        }
        let by_id: Vec<&NetworkRecord> = self.networks.values().filter(|n| query.len() >= 3 && n.id.starts_with(query)).collect();
        match by_id.as_slice() {
            [one] => Ok(one),
            _ => Err(NetError::NotFound(query.to_owned())),
        }
    }

    pub(crate) fn users(&self, network_id: &str) -> Vec<&str> {
        self.owners.iter().filter(|(_, o)| o.endpoints.iter().any(|e| e.network_id == network_id)).map(|(_, o)| o.name.as_str()).collect()
    }

    /// Every endpoint whose addresses are taken: the owners', the dying ones and the spare's.
    pub(crate) fn all_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.owners.values().flat_map(|o| &o.endpoints).chain(self.dying.values().flatten()).chain(self.spare.iter().map(|s| &s.endpoint))
    }

    /// Whether `ip` on network `network` (by name) is held by an endpoint that is going (a removed
    /// container's, or a discarded spare's): free once its veth is deleted.
    pub(crate) fn dying_holds(&self, network: &str, ip: IpAddr) -> bool {
        self.dying.values().flatten().any(|e| e.network == network && (IpAddr::V4(e.ipv4) == ip || e.ipv6.map(IpAddr::V6) == Some(ip)))
    }

    /// The ready spare's endpoint for a container whose attachments are `attachments`: one
    /// attachment, to the default network, asking for no address; with its aliases. The
    /// spare leaves the state (the caller records the owner's claim on its namespace).
    pub(crate) fn take_spare(&mut self, attachments: &[NetworkAttachment]) -> Option<(String, Endpoint)> {
        let [att] = attachments else { return None };
        if att.ipv4.is_some() || att.ipv6.is_some() || self.find(&att.network).ok()?.name != DEFAULT_NETWORK {
            return None;
        }
        if !self.spare.as_ref().is_some_and(|s| s.ready) {
            return None;
        }
        let s = self.spare.take()?;
        let endpoint = Endpoint { aliases: att.aliases.iter().map(|a| a.to_ascii_lowercase()).collect(), ..s.endpoint };
        Some((s.key, endpoint))
    }

    /// Whether one of `attachments` asks for an address the spare holds.
    pub(crate) fn spare_in_the_way(&self, attachments: &[NetworkAttachment]) -> bool {
        let Some(s) = &self.spare else { return false };
        attachments.iter().any(|a| {
            self.find(&a.network).is_ok_and(|n| n.id == s.endpoint.network_id)
                && (a.ipv4 == Some(s.endpoint.ipv4) || (a.ipv6.is_some() && a.ipv6 == s.endpoint.ipv6))
        })
    }

    pub(crate) fn used4(&self, network_id: &str) -> BTreeSet<Ipv4Addr> {
        self.all_endpoints().filter(|e| e.network_id == network_id).map(|e| e.ipv4).collect()
    }

    pub(crate) fn used6(&self, network_id: &str) -> BTreeSet<Ipv6Addr> {
        self.all_endpoints().filter(|e| e.network_id == network_id).filter_map(|e| e.ipv6).collect()
    }

    /// A new endpoint for `owner` on `att`'s network, as interface `eth{index}`.
    pub(crate) fn endpoint(&self, owner: &str, att: &NetworkAttachment, index: usize) -> Result<Endpoint, NetError> {
        att.validate()?;
        let net = self.find(&att.network)?;
        let ipv4 = match att.ipv4 {
            Some(ip) => {
                if !ipam::usable4(net.subnet4, ip) {
                    return Err(NetError::BadAddress { ip: ip.into(), network: net.name.clone(), subnet: net.subnet4.to_string() });
                }
                if self.used4(&net.id).contains(&ip) {
                    return Err(NetError::AddressTaken { ip: ip.into(), network: net.name.clone() });
                }
                ip
            }
            None => ipam::next_addr4(net.subnet4, &self.used4(&net.id)).ok_or_else(|| NetError::Full(net.name.clone()))?,
        };
        let ipv6 = match (net.subnet6, att.ipv6) {
            (None, Some(_)) => return Err(NetError::NoIpv6(net.name.clone())),
            (None, None) => None,
            (Some(s), Some(ip)) => {
                if !ipam::usable6(s, ip) {
                    return Err(NetError::BadAddress { ip: ip.into(), network: net.name.clone(), subnet: s.to_string() });
                }
                if self.used6(&net.id).contains(&ip) {
                    return Err(NetError::AddressTaken { ip: ip.into(), network: net.name.clone() });
                }
                Some(ip)
            }
            (Some(s), None) => Some(ipam::next_addr6(s, &self.used6(&net.id)).ok_or_else(|| NetError::Full(net.name.clone()))?),
        };
        Ok(Endpoint {
            network_id: net.id.clone(),
            network: net.name.clone(),
            ipv4,
            ipv6,
            mac: mac_string(ipam::mac_for(ipv4)),
            aliases: att.aliases.iter().map(|a| a.to_ascii_lowercase()).collect(),
            interface: format!("eth{index}"),
            host_veth: format!("av{}{index:x}", &owner[..owner.len().min(10)]),
        })
    }

    pub(crate) fn all_ports(&self) -> impl Iterator<Item = (&str, &PublishedPort)> {
        self.owners.values().flat_map(|o| o.ports.iter().map(move |p| (o.name.as_str(), p)))
    }

    /// Resolves `-p`/`-P` into host ports, refusing clashes with other containers or programs.
    pub(crate) fn dns_config(&self, upstreams: &[SocketAddr]) -> dns::DnsConfig {
        let mut networks = Vec::new();
        for net in self.networks.values() {
            let mut members = Vec::new();
            for (id, o) in self.owners.iter().filter(|(_, o)| o.active) {
                for e in o.endpoints.iter().filter(|e| e.network_id == net.id) {
                    let mut names = vec![o.name.to_ascii_lowercase(), id[..12].to_owned()];
                    names.extend(e.aliases.iter().cloned());
                    names.dedup();
                    if self.unnamed.contains(id) {
                        names.clear();
                    }
                    members.push(dns::DnsMember { container: id.clone(), names, ipv4: Some(e.ipv4), ipv6: e.ipv6 });
                }
            }
            if !members.is_empty() {
                // The same network's replicas on other members (never a client here).
                for r in self.remote.get(&net.name).into_iter().flatten() {
                    let names = r.names.clone();
                    members.push(dns::DnsMember { container: format!("remote:{}", r.ipv4), names, ipv4: Some(r.ipv4), ipv6: None });
                }
                networks.push(dns::DnsNetwork {
                    name: net.name.clone(),
                    gateway4: net.gateway4,
                    subnet4: net.subnet4,
                    subnet6: net.subnet6,
                    internal: net.internal,
                    members,
                });
            }
        }
        dns::DnsConfig { upstreams: upstreams.to_vec(), networks }
    }

    /// Networks with at least one plumbed endpoint.
    pub(crate) fn active_networks(&self) -> Vec<&NetworkRecord> {
        let ids: BTreeSet<&str> =
            self.owners.values().filter(|o| o.active).flat_map(|o| o.endpoints.iter().map(|e| e.network_id.as_str())).collect();
        self.networks.values().filter(|n| ids.contains(n.id.as_str())).collect()
    }

    /// Networks whose bridge exists: the active ones, and the default network once warm. In
    /// one order whatever makes them so: the default network going from active to warm must
    /// not change the ruleset (and cost an `nft` run).
    pub(crate) fn bridged_networks(&self) -> Vec<&NetworkRecord> {
        let active: BTreeSet<&str> = self.active_networks().iter().map(|n| n.id.as_str()).collect();
        self.networks.values().filter(|n| active.contains(n.id.as_str()) || (self.default_warm && n.name == DEFAULT_NETWORK)).collect()
    }

    /// What `network ls` says about a network's bridge.
    pub(crate) fn bridge_state(&self, id: &str) -> BridgeState {
        if self.active_networks().iter().any(|n| n.id == id) {
            BridgeState::InUse
        } else if self.bridged_networks().iter().any(|n| n.id == id) {
            BridgeState::Warm
        } else {
            BridgeState::Down
        }
    }

    pub(crate) fn ruleset(&self) -> nft::Ruleset {
        let bridges = self
            .bridged_networks()
            .iter()
            .map(|n| nft::BridgeRules {
                bridge: n.bridge.clone(),
                gateway4: n.gateway4,
                subnet4: n.subnet4,
                subnet6: n.subnet6,
                internal: n.internal,
                unprotected4: n.unprotected().0,
                unprotected6: n.unprotected().1,
                remote: self.overlay.as_ref().map_or_else(Vec::new, |_| {
                    let mut ips: Vec<Ipv4Addr> = self.remote.get(&n.name).into_iter().flatten().map(|r| r.ipv4).collect();
                    ips.sort();
                    ips.dedup();
                    ips
                }),
            })
            .collect();
        let mut ports = Vec::new();
        for o in self.owners.values().filter(|o| o.active) {
            let Some(e) = o.endpoints.iter().find(|e| self.networks.get(&e.network_id).is_some_and(|n| !n.internal)) else { continue };
            for p in &o.ports {
                ports.push(nft::PortRule {
                    host_ip: p.host_ip,
                    host_port: p.host_port,
                    protocol: p.protocol,
                    target4: e.ipv4,
                    target6: e.ipv6,
                    container_port: p.container_port,
                });
            }
        }
        if let Some(mesh_ip) = self.forwards.mesh_ip {
            for f in &self.forwards.forwards {
                let Some(o) = self.owners.get(&f.owner).filter(|o| o.active) else { continue };
                let Some(e) = o.endpoints.iter().find(|e| self.networks.get(&e.network_id).is_some_and(|n| !n.internal)) else { continue };
                ports.push(nft::PortRule {
                    host_ip: Some(mesh_ip.into()),
                    host_port: f.host_port,
                    protocol: f.protocol,
                    target4: e.ipv4,
                    target6: None,
                    container_port: f.container_port,
                });
            }
        }
        let overlay = self.overlay.as_ref().map(|o| nft::OverlayRules {
            dev: crate::overlay::DEV.into(),
            mesh_dev: o.mesh_dev.clone(),
            port: o.port,
        });
        nft::Ruleset { comment: None, bridges, ports, overlay }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the default network has containers or is only kept warm, the ruleset is the
    /// same: a `run` on it alone runs no `nft`.
    /// Network `name` (ID `id`) on `10.89.{o}.0/24`, IPv4 only.
    fn net(id: &str, name: &str, o: u8) -> NetworkRecord {
        NetworkRecord {
            id: id.into(),
            name: name.into(),
            driver: "bridge".into(),
            bridge: format!("at-{id}"),
            subnet4: format!("10.89.{o}.0/24").parse().unwrap(),
            gateway4: format!("10.89.{o}.1").parse().unwrap(),
            subnet6: None,
            gateway6: None,
            internal: false,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            overlay4: None,
            created: String::new(),
        }
    }

    fn state_of(networks: &[&NetworkRecord]) -> State {
        State {
            networks: networks.iter().map(|n| (n.id.clone(), (*n).clone())).collect(),
            ula: "fd00::/48".parse().unwrap(),
            owners: BTreeMap::new(),
            default_warm: true,
            dying: BTreeMap::new(),
            overlay: None,
            remote: Default::default(),
            unnamed: BTreeSet::new(),
            forwards: Default::default(),
            spare: None,
        }
    }

    /// The spare's address is taken while it waits; a container on the default network that
    /// asks for nothing else takes it (with its own aliases), any other does not; one that asks
    /// for its address finds it in the way; a discarded spare's address is dying.
    #[test]
    fn the_spare_is_taken_only_by_a_container_that_asks_for_nothing_else() {
        let (default, other) = (net("aaa", DEFAULT_NETWORK, 0), net("zzz", "other", 1));
        let mut st = state_of(&[&default, &other]);
        let att = |network: &str| NetworkAttachment { aliases: vec!["Web".into()], ..NetworkAttachment::new(network) };
        let e = st.endpoint("spare-0123456789abcdef", &NetworkAttachment::new(DEFAULT_NETWORK), 0).unwrap();
        assert_eq!((e.ipv4.to_string().as_str(), e.host_veth.as_str()), ("10.89.0.2", "avspare-01230"));
        st.spare = Some(Spare { key: "spare-0123456789abcdef".into(), endpoint: e.clone(), ready: false });
        assert_eq!(st.endpoint("c1", &att(DEFAULT_NETWORK), 0).unwrap().ipv4.to_string(), "10.89.0.3", "the spare's address is taken");
        assert_eq!(st.take_spare(&[att(DEFAULT_NETWORK)]), None, "not ready yet");
        st.spare.as_mut().unwrap().ready = true;
        assert_eq!(st.take_spare(&[att("other")]), None);
        assert_eq!(st.take_spare(&[att(DEFAULT_NETWORK), att("other")]), None);
        let fixed = NetworkAttachment { ipv4: Some("10.89.0.9".parse().unwrap()), ..att(DEFAULT_NETWORK) };
        assert_eq!(st.take_spare(std::slice::from_ref(&fixed)), None);
        assert!(!st.spare_in_the_way(&[fixed]));
        let its = NetworkAttachment { ipv4: Some(e.ipv4), ..att(DEFAULT_NETWORK) };
        assert!(st.spare_in_the_way(&[its]));
        let (key, taken) = st.take_spare(&[att(DEFAULT_NETWORK)]).unwrap();
        assert_eq!((key.as_str(), taken.ipv4, taken.aliases.clone()), ("spare-0123456789abcdef", e.ipv4, vec!["web".to_owned()]));
        assert!(st.spare.is_none());
        st.dying.insert(key, vec![taken]);
        assert!(st.dying_holds(DEFAULT_NETWORK, IpAddr::V4(e.ipv4)));
        assert!(!st.dying_holds("other", IpAddr::V4(e.ipv4)));
    }

    #[test]
    fn a_warm_default_network_does_not_change_the_ruleset() {
        let endpoint = |n: &NetworkRecord, o: u8| Endpoint {
            network_id: n.id.clone(),
            network: n.name.clone(),
            ipv4: format!("10.89.{o}.2").parse().unwrap(),
            ipv6: None,
            mac: String::new(),
            aliases: vec![],
            interface: "eth0".into(),
            host_veth: format!("av{o}"),
        };
        // The default network sorts before the other by id.
        let (other, default) = (net("zzz", "other", 1), net("aaa", DEFAULT_NETWORK, 0));
        let owner = |e: Endpoint| Owner { name: "c".into(), endpoints: vec![e], ports: vec![], active: true, spare: None };
        let mut st = state_of(&[&other, &default]);
        st.owners.insert("o1".to_owned(), owner(endpoint(&other, 1)));
        let warm = st.ruleset();
        st.owners.insert("o2".into(), owner(endpoint(&default, 0)));
        assert_eq!(st.ruleset(), warm);
        assert_eq!(st.bridge_state(&default.id), BridgeState::InUse);
        st.owners.remove("o2");
        assert_eq!(st.bridge_state(&default.id), BridgeState::Warm);

        // DNS: other members' replicas are named with this host's, and a replica whose health
        // check has not passed is not named (but stays a member: its queries are answered).
        let id = "o1".repeat(6);
        let o1 = st.owners.remove("o1").unwrap();
        st.owners.insert(id.clone(), Owner { endpoints: vec![Endpoint { aliases: vec!["web".into()], ..o1.endpoints[0].clone() }], ..o1 });
        st.remote.insert(
            "other".into(),
            vec![crate::overlay::RemoteEndpoint { names: vec!["web".into()], ipv4: "10.128.0.66".parse().unwrap() }],
        );
        let named = |st: &State| -> Vec<String> {
            let cfg = st.dns_config(&[]);
            let n = cfg.networks.iter().find(|n| n.name == "other").unwrap();
            n.members.iter().filter(|m| m.names.contains(&"web".to_owned())).map(|m| m.ipv4.unwrap().to_string()).collect()
        };
        assert_eq!(named(&st), ["10.89.1.2", "10.128.0.66"]);
        st.unnamed.insert(id.clone());
        assert_eq!(named(&st), ["10.128.0.66"]);
        assert_eq!(st.dns_config(&[]).networks[0].members.len(), 2, "still a member");

        // Mesh forwards: DNAT from the mesh address to a running container, none once it stops.
        st.forwards = crate::overlay::MeshForwards {
            mesh_ip: Some("10.42.0.3".parse().unwrap()),
            forwards: vec![crate::overlay::MeshForward {
                owner: id.clone(),
                host_port: 30800,
                protocol: atoll_spec::Protocol::Tcp,
                container_port: 2368,
            }],
        };
        let rule = |st: &State| st.ruleset().ports.into_iter().find(|p| p.host_port == 30800);
        let r = rule(&st).expect("forwarded while the container runs");
        assert_eq!((r.host_ip, r.target4, r.container_port), (Some("10.42.0.3".parse().unwrap()), "10.89.1.2".parse().unwrap(), 2368));
        st.owners.get_mut(&id).unwrap().active = false;
        assert_eq!(rule(&st), None, "not forwarded once stopped");
    }

    #[test]
    fn etc_files() {
        let e = Endpoint {
            network_id: "n".into(),
            network: "front".into(),
            ipv4: "10.89.0.2".parse().unwrap(),
            ipv6: Some("fd00::2".parse().unwrap()),
            mac: "02:42:0a:59:00:02".into(),
            aliases: vec![],
            interface: "eth0".into(),
            host_veth: "av0123456789".into(),
        };
        expect_test::expect![[r#"
            127.0.0.1	localhost
            ::1	localhost ip6-localhost ip6-loopback
            10.89.0.2	abc web
            fd00::2	abc web
        "#]]
        .assert_eq(&hosts_file("abc", "web", &[e]));
        assert_eq!(
            resolv_conf("10.89.0.1".parse().unwrap(), "nameserver 1.1.1.1\nsearch example.org\noptions ndots:2\n"),
            "nameserver 10.89.0.1\nsearch example.org\noptions ndots:2\n"
        );
        assert_eq!(parse_mac("02:42:0a:59:00:02"), [2, 0x42, 10, 0x59, 0, 2]);
    }
}
