//! Container networking on one host: bridge networks with IPv4 and IPv6 subnets, a veth per
//! container endpoint, outbound NAT, published ports, isolation, and DNS service discovery.
//!
//! [`Networks`] is the one entry point. Its state is rebuilt at start from what is persisted:
//! the network records (`networks/<id>.json`) and the endpoints and ports each container
//! record carries (the engine hands them in), so addresses cannot leak. Kernel state is
//! derived: a container's namespace (`netns/<id>`, created at its first start and kept until
//! it is removed), its veths, the bridges of networks that have endpoints, the `inet atoll`
//! nftables table and the DNS server's configuration. [`Networks::open`] reconciles all of
//! them with the records: leftovers go, missing pieces come back.
#![deny(unsafe_code)]

pub mod dns;
pub mod ipam;
pub mod link;
pub mod netns;
pub mod nft;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use atoll_spec::{DEFAULT_NETWORK, ExposedPort, NetworkAttachment, NetworkSpec, PortSpec, Protocol};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use link::Netlink;

/// Host ports `-P` and `-p CONTAINER` pick from (Linux's default ephemeral range).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no such network: {0}")]
    NotFound(String),
    #[error("a network named {0:?} already exists")]
    Exists(String),
    #[error("network {name} is in use by {containers}: disconnect or remove them first")]
    InUse { name: String, containers: String },
    #[error("the default network {0:?} cannot be removed")]
    Default(String),
    #[error("subnet {subnet} overlaps network {other}")]
    Overlap { subnet: String, other: String },
    #[error("no free subnet left in the pool {0}; give one with --subnet")]
    PoolExhausted(String),
    #[error("no free address left in network {0}")]
    Full(String),
    #[error("address {ip} is not usable in network {network} ({subnet})")]
    BadAddress { ip: IpAddr, network: String, subnet: String },
    #[error("address {ip} is already used in network {network}")]
    AddressTaken { ip: IpAddr, network: String },
    #[error("network {0} has no IPv6 subnet")]
    NoIpv6(String),
    #[error("host port {0} is already published by container {1}")]
    PortTaken(String, String),
    #[error("host port {0} is in use by another program on this host")]
    PortBusy(String),
    #[error("no free host port left for {0}")]
    NoFreePort(String),
    #[error("ports cannot be published from internal networks only ({0}): add a network with a way out")]
    InternalPublish(String),
    #[error("container is already connected to network {0}")]
    AlreadyConnected(String),
    #[error("container is not connected to network {0}")]
    NotConnected(String),
    #[error(transparent)]
    Spec(#[from] atoll_spec::SpecError),
    #[error(transparent)]
    Link(#[from] link::LinkError),
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error("the network namespace of container {id}")]
    Netns {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the DNS server: {0}")]
    Dns(String),
    #[error("saving network {name}")]
    Save {
        name: String,
        #[source]
        source: atoll_util::Error,
    },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    /// Whether the caller asked for something wrong, something missing, or a conflict.
    pub fn kind(&self) -> atoll_util::ErrorKind {
        use atoll_util::ErrorKind as K;
        match self {
            Self::NotFound(_) => K::NotFound,
            Self::Exists(_)
            | Self::InUse { .. }
            | Self::Default(_)
            | Self::Overlap { .. }
            | Self::AddressTaken { .. }
            | Self::PortTaken(..)
            | Self::PortBusy(_)
            | Self::AlreadyConnected(_)
            | Self::NotConnected(_) => K::Conflict,
            Self::BadAddress { .. } | Self::NoIpv6(_) | Self::InternalPublish(_) | Self::Spec(_) => K::Invalid,
            _ => K::Internal,
        }
    }
}

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
    pub created: String,
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

impl std::fmt::Display for PublishedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            Some(ip) => write!(f, "{ip}")?,
            None => f.write_str("0.0.0.0")?,
        }
        write!(f, ":{}->{}/{}", self.host_port, self.container_port, self.protocol)
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

#[derive(Debug, Clone)]
pub struct NetConfig {
    pub data_dir: PathBuf,
    /// This binary, re-executed as `atoll dns`.
    pub exe: PathBuf,
    /// Where new networks' IPv4 subnets come from (/24 each).
    pub pool4: Ipv4Net,
    /// Resolvers for names that are not containers'.
    pub upstreams: Vec<SocketAddr>,
    /// The resolv.conf whose `search` and `options` containers inherit.
    pub resolv_conf: PathBuf,
}

#[derive(Debug)]
struct Owner {
    name: String,
    endpoints: Vec<Endpoint>,
    ports: Vec<PublishedPort>,
    /// Its namespace exists and its endpoints are plumbed.
    active: bool,
}

#[derive(Debug)]
struct State {
    networks: BTreeMap<String, NetworkRecord>,
    ula: Ipv6Net,
    owners: BTreeMap<String, Owner>,
}

/// Container networking of this host.
pub struct Networks {
    cfg: NetConfig,
    state: tokio::sync::Mutex<State>,
    nl: Netlink,
    /// The ruleset last applied, to skip `nft` when a change does not touch it (most
    /// container starts); cleared by `reconcile`, which always rewrites the table.
    applied: std::sync::Mutex<Option<nft::Ruleset>>,
}

impl std::fmt::Debug for Networks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Networks").field("data_dir", &self.cfg.data_dir).finish()
    }
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn parse_mac(s: &str) -> [u8; 6] {
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

fn port_key(p: &PublishedPort) -> String {
    format!("{}/{}", p.host_port, p.protocol)
}

/// Two publications clash when they share protocol and port on overlapping addresses.
fn clashes(a: &PublishedPort, b: &PublishedPort) -> bool {
    a.protocol == b.protocol && a.host_port == b.host_port && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
}

/// Whether some other program holds the port (tested by binding it for a moment). Port 53 is
/// held on the bridges' gateways by Atoll's own resolver, which a published 53 does not
/// disturb (see `nft`), so it is tested on loopback instead of every address.
fn port_free(p: &PublishedPort) -> bool {
    let any = if p.host_port == 53 { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
    let ip = p.host_ip.unwrap_or(any);
    let sa = SocketAddr::new(ip, p.host_port);
    match p.protocol {
        Protocol::Tcp => std::net::TcpListener::bind(sa).is_ok(),
        Protocol::Udp => std::net::UdpSocket::bind(sa).is_ok(),
    }
}

impl State {
    fn find(&self, query: &str) -> Result<&NetworkRecord, NetError> {
        if let Some(n) = self.networks.values().find(|n| n.name == query) {
            return Ok(n);
        }
        let by_id: Vec<&NetworkRecord> = self.networks.values().filter(|n| query.len() >= 3 && n.id.starts_with(query)).collect();
        match by_id.as_slice() {
            [one] => Ok(one),
            _ => Err(NetError::NotFound(query.to_owned())),
        }
    }

    fn users(&self, network_id: &str) -> Vec<&str> {
        self.owners.iter().filter(|(_, o)| o.endpoints.iter().any(|e| e.network_id == network_id)).map(|(_, o)| o.name.as_str()).collect()
    }

    fn used4(&self, network_id: &str) -> BTreeSet<Ipv4Addr> {
        self.owners.values().flat_map(|o| &o.endpoints).filter(|e| e.network_id == network_id).map(|e| e.ipv4).collect()
    }

    fn used6(&self, network_id: &str) -> BTreeSet<Ipv6Addr> {
        self.owners.values().flat_map(|o| &o.endpoints).filter(|e| e.network_id == network_id).filter_map(|e| e.ipv6).collect()
    }

    /// A new endpoint for `owner` on `att`'s network, as interface `eth{index}`.
    fn endpoint(&self, owner: &str, att: &NetworkAttachment, index: usize) -> Result<Endpoint, NetError> {
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

    fn all_ports(&self) -> impl Iterator<Item = (&str, &PublishedPort)> {
        self.owners.values().flat_map(|o| o.ports.iter().map(move |p| (o.name.as_str(), p)))
    }

    /// Resolves `-p`/`-P` into host ports, refusing clashes with other containers or programs.
    fn ports(&self, publish: &[PortSpec], exposed: &[ExposedPort], publish_all: bool) -> Result<Vec<PublishedPort>, NetError> {
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

    fn dns_config(&self, upstreams: &[SocketAddr]) -> dns::DnsConfig {
        let mut networks = Vec::new();
        for net in self.networks.values() {
            let mut members = Vec::new();
            for (id, o) in self.owners.iter().filter(|(_, o)| o.active) {
                for e in o.endpoints.iter().filter(|e| e.network_id == net.id) {
                    let mut names = vec![o.name.to_ascii_lowercase(), id[..12].to_owned()];
                    names.extend(e.aliases.iter().cloned());
                    names.dedup();
                    members.push(dns::DnsMember { container: id.clone(), names, ipv4: Some(e.ipv4), ipv6: e.ipv6 });
                }
            }
            if !members.is_empty() {
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

    /// Networks with at least one plumbed endpoint: their bridges exist.
    fn active_networks(&self) -> Vec<&NetworkRecord> {
        let ids: BTreeSet<&str> =
            self.owners.values().filter(|o| o.active).flat_map(|o| o.endpoints.iter().map(|e| e.network_id.as_str())).collect();
        self.networks.values().filter(|n| ids.contains(n.id.as_str())).collect()
    }

    fn ruleset(&self) -> nft::Ruleset {
        let bridges = self
            .active_networks()
            .iter()
            .map(|n| nft::BridgeRules {
                bridge: n.bridge.clone(),
                gateway4: n.gateway4,
                subnet4: n.subnet4,
                subnet6: n.subnet6,
                internal: n.internal,
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
        nft::Ruleset { bridges, ports }
    }
}

impl Networks {
    fn netns_path(&self, owner: &str) -> PathBuf {
        self.cfg.data_dir.join("netns").join(owner)
    }

    fn dns_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("dns")
    }

    fn networks_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("networks")
    }

    fn save(&self, n: &NetworkRecord) -> Result<(), NetError> {
        let data = serde_json::to_vec_pretty(n).expect("record serialises");
        atoll_util::atomic_write(&self.networks_dir().join(format!("{}.json", n.id)), &data, 0o600)
            .map_err(|source| NetError::Save { name: n.name.clone(), source })
    }

    /// Loads the networks, registers the containers' endpoints and reconciles the kernel.
    pub async fn open(cfg: NetConfig, owners: Vec<OwnerInit>) -> Result<Arc<Self>, NetError> {
        let nl = Netlink::host()?;
        let dir = cfg.data_dir.join("networks");
        fs::create_dir_all(&dir).map_err(|source| NetError::Read { path: dir.clone(), source })?;
        let ula_path = dir.join("ula");
        let ula = match fs::read_to_string(&ula_path).ok().and_then(|s| s.trim().parse::<Ipv6Net>().ok()) {
            Some(u) => u,
            None => {
                let u = ipam::ula_prefix(std::array::from_fn(|_| fastrand::u8(..)));
                atoll_util::atomic_write(&ula_path, u.to_string().as_bytes(), 0o644)
                    .map_err(|source| NetError::Save { name: "ula".into(), source })?;
                u
            }
        };
        let mut networks = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(|source| NetError::Read { path: dir.clone(), source })?.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                match fs::read(&path).ok().and_then(|d| serde_json::from_slice::<NetworkRecord>(&d).ok()) {
                    Some(n) => {
                        networks.insert(n.id.clone(), n);
                    }
                    None => tracing::warn!(path = %path.display(), "ignoring an unreadable network record"),
                }
            }
        }
        let mut state = State { networks, ula, owners: BTreeMap::new() };
        for o in owners {
            // Endpoints of a network that is gone (a crash mid-removal) are dropped.
            let endpoints = o.endpoints.into_iter().filter(|e| state.networks.contains_key(&e.network_id)).collect();
            state.owners.insert(o.id, Owner { name: o.name, endpoints, ports: o.ports, active: false });
        }
        let this = Arc::new(Self { cfg, state: tokio::sync::Mutex::new(state), nl, applied: std::sync::Mutex::new(None) });
        if this.state.lock().await.find(DEFAULT_NETWORK).is_err() {
            this.create(&NetworkSpec { name: DEFAULT_NETWORK.into(), ipv6: true, ..Default::default() }).await?;
        }
        this.reconcile().await?;
        Ok(this)
    }

    /// Makes the kernel match the records: plumbs every container whose namespace is alive,
    /// deletes links and namespaces nobody owns, rewrites the nftables table and DNS.
    pub async fn reconcile(&self) -> Result<(), NetError> {
        let mut st = self.state.lock().await;
        *self.applied.lock().unwrap() = None;
        let ids: Vec<String> = st.owners.keys().cloned().collect();
        for id in &ids {
            let path = self.netns_path(id);
            let live = netns::is_live(&path);
            if !live && path.exists() {
                let _ = fs::remove_file(&path);
            }
            st.owners.get_mut(id).expect("listed").active = live;
        }
        // Namespaces of containers that no longer exist.
        if let Ok(dir) = fs::read_dir(self.cfg.data_dir.join("netns")) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !st.owners.contains_key(&name) {
                    tracing::info!(netns = %name, "removing a leftover network namespace");
                    let _ = netns::remove(&e.path());
                }
            }
        }
        // Links nobody owns.
        let wanted_bridges: BTreeSet<String> = st.active_networks().iter().map(|n| n.bridge.clone()).collect();
        let wanted_veths: BTreeSet<String> =
            st.owners.values().filter(|o| o.active).flat_map(|o| o.endpoints.iter().map(|e| e.host_veth.clone())).collect();
        for l in self.nl.links().await? {
            let stale_bridge =
                l.name.starts_with(nft::BRIDGE_PREFIX) && l.kind.as_deref() == Some("bridge") && !wanted_bridges.contains(&l.name);
            let stale_veth = l.name.starts_with("av") && l.kind.as_deref() == Some("veth") && !wanted_veths.contains(&l.name);
            if stale_bridge || stale_veth {
                tracing::info!(link = %l.name, "removing a leftover link");
                self.nl.delete(&l.name).await?;
            }
        }
        let existing: BTreeSet<String> = self.nl.links().await?.into_iter().map(|l| l.name).collect();
        for id in &ids {
            let o = &st.owners[id];
            if !o.active {
                continue;
            }
            let missing: Vec<usize> = (0..o.endpoints.len()).filter(|i| !existing.contains(&o.endpoints[*i].host_veth)).collect();
            for i in missing {
                tracing::info!(container = %o.name, network = %o.endpoints[i].network, "restoring a missing endpoint");
                self.plumb(&st, id, i).await?;
            }
        }
        self.sync(&st).await
    }

    /// Brings the nftables table, the DNS server and the bridges of active networks in line.
    async fn sync(&self, st: &State) -> Result<(), NetError> {
        let rules = st.ruleset();
        // The ruleset holds the set of active networks: when it is unchanged (most container
        // starts and removals on a network already in use), so are the bridges, the sysctls
        // and the table. `reconcile` clears `applied`, forcing all of it.
        let changed = self.applied.lock().unwrap().as_ref() != Some(&rules);
        if changed {
            for n in st.active_networks() {
                self.ensure_bridge(n).await?;
            }
            if rules.bridges.iter().any(|b| !b.internal) {
                link::write_sysctl("net/ipv4/ip_forward", "1")?;
                if rules.bridges.iter().any(|b| !b.internal && b.subnet6.is_some()) {
                    link::enable_ipv6_forwarding()?;
                }
            }
            *self.applied.lock().unwrap() = None;
            nft::apply(&rules)?;
            *self.applied.lock().unwrap() = Some(rules.clone());
            if !rules.ports.is_empty() {
                let chains = nft::input_drop_chains();
                if !chains.is_empty() {
                    tracing::warn!(
                        chains = %chains.join(", "),
                        "a host firewall drops input by default, but published ports are forwarded and do not pass through input: \
                         they are reachable from outside unless published on 127.0.0.1 or filtered in a forward chain"
                    );
                }
            }
        }
        self.dns_sync(st).await?;
        if changed {
            // Bridges of networks without endpoints go.
            let active: BTreeSet<&str> = rules.bridges.iter().map(|b| b.bridge.as_str()).collect();
            for n in st.networks.values().filter(|n| !active.contains(n.bridge.as_str())) {
                self.nl.delete(&n.bridge).await?;
            }
        }
        Ok(())
    }

    async fn ensure_bridge(&self, n: &NetworkRecord) -> Result<u32, NetError> {
        let mut addrs = vec![(IpAddr::V4(n.gateway4), n.subnet4.prefix_len())];
        if let (Some(gw), Some(s)) = (n.gateway6, n.subnet6) {
            addrs.push((IpAddr::V6(gw), s.prefix_len()));
        }
        Ok(self.nl.ensure_bridge(&n.bridge, ipam::mac_for(n.gateway4), &addrs).await?)
    }

    /// Plumbs endpoint `i` of `owner` into its (existing) namespace.
    async fn plumb(&self, st: &State, owner: &str, i: usize) -> Result<(), NetError> {
        let o = &st.owners[owner];
        let e = &o.endpoints[i];
        let net = st.networks.get(&e.network_id).ok_or_else(|| NetError::NotFound(e.network.clone()))?;
        let bridge = self.ensure_bridge(net).await?;
        let path = self.netns_path(owner);
        // Created inside the container's namespace under its final name.
        let peer = e.interface.clone();
        self.nl.create_veth(&e.host_veth, &peer, bridge, &path).await?;
        let inside = Netlink::in_netns(&path)?;
        let mut addrs = vec![(IpAddr::V4(e.ipv4), net.subnet4.prefix_len())];
        if let (Some(ip), Some(s)) = (e.ipv6, net.subnet6) {
            addrs.push((IpAddr::V6(ip), s.prefix_len()));
        }
        // The default route goes through the first network that has a way out.
        let first_out = o.endpoints.iter().position(|x| st.networks.get(&x.network_id).is_some_and(|n| !n.internal));
        let (gw4, gw6) = if first_out == Some(i) { (Some(net.gateway4), net.gateway6.filter(|_| e.ipv6.is_some())) } else { (None, None) };
        inside.configure_interface(&peer, &e.interface, parse_mac(&e.mac), &addrs, gw4, gw6).await?;
        Ok(())
    }

    /// Writes the DNS configuration and has the server (started if needed) load it.
    async fn dns_sync(&self, st: &State) -> Result<(), NetError> {
        let dir = self.dns_dir();
        let cfg = st.dns_config(&self.cfg.upstreams);
        let data = serde_json::to_vec_pretty(&cfg).expect("config serialises");
        fs::create_dir_all(&dir).map_err(|e| NetError::Dns(format!("creating {}: {e}", dir.display())))?;
        atoll_util::replace_file(&dir.join(dns::CONFIG_FILE), &data, 0o644).map_err(|e| NetError::Dns(e.to_string()))?;
        if dns::control(&dir, "ping").await.is_err() {
            if cfg.networks.is_empty() {
                // Nothing to serve: started with the first network that has containers.
                return Ok(());
            }
            self.spawn_dns().await?;
        }
        match dns::control(&dir, "reload").await {
            Ok(r) if r == "ok" => Ok(()),
            Ok(r) => Err(NetError::Dns(r.trim_start_matches("error ").to_owned())),
            Err(e) => Err(NetError::Dns(e.to_string())),
        }
    }

    async fn spawn_dns(&self) -> Result<(), NetError> {
        let dir = self.dns_dir();
        fs::create_dir_all(&dir).map_err(|e| NetError::Dns(e.to_string()))?;
        let log = fs::OpenOptions::new().create(true).append(true).open(dir.join("dns.log")).map_err(|e| NetError::Dns(e.to_string()))?;
        let mut child = tokio::process::Command::new(&self.cfg.exe)
            .arg("dns")
            .arg("--state")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            // Its own process group: a terminal's ^C or the daemon's end do not reach it.
            .process_group(0)
            .spawn()
            .map_err(|e| NetError::Dns(format!("starting {} dns: {e}", self.cfg.exe.display())))?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), tokio::io::BufReader::new(stdout).read_line(&mut line)).await;
        // Reap it whenever it ends, so no zombie stays behind.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        match read {
            Ok(Ok(_)) if line.trim() == "ready" => {
                tracing::info!("started the DNS server");
                Ok(())
            }
            _ => Err(NetError::Dns(format!("it did not start; see {}", dir.join("dns.log").display()))),
        }
    }

    // ---- networks ----

    pub async fn create(&self, spec: &NetworkSpec) -> Result<NetworkRecord, NetError> {
        let (v4, v6) = spec.validate()?;
        let mut st = self.state.lock().await;
        if st.networks.values().any(|n| n.name == spec.name) {
            return Err(NetError::Exists(spec.name.clone()));
        }
        let taken4: Vec<Ipv4Net> = st.networks.values().map(|n| n.subnet4).chain(host_routes4()).collect();
        let subnet4 = match v4 {
            Some(s) => {
                if let Some(o) = st.networks.values().find(|n| ipam::overlaps4(&n.subnet4, &s)) {
                    return Err(NetError::Overlap { subnet: s.to_string(), other: o.name.clone() });
                }
                s
            }
            None => ipam::next_subnet4(self.cfg.pool4, 24, &taken4).ok_or_else(|| NetError::PoolExhausted(self.cfg.pool4.to_string()))?,
        };
        let subnet6 = match v6 {
            Some(s) => {
                if let Some(o) = st.networks.values().find(|n| n.subnet6.is_some_and(|x| ipam::overlaps6(&x, &s))) {
                    return Err(NetError::Overlap { subnet: s.to_string(), other: o.name.clone() });
                }
                Some(s)
            }
            None if spec.ipv6 => {
                let taken: Vec<Ipv6Net> = st.networks.values().filter_map(|n| n.subnet6).collect();
                Some(ipam::next_subnet6(st.ula, &taken).ok_or_else(|| NetError::PoolExhausted(st.ula.to_string()))?)
            }
            None => None,
        };
        let id = atoll_util::random_hex(32);
        let rec = NetworkRecord {
            bridge: format!("{}{}", nft::BRIDGE_PREFIX, &id[..12]),
            id: id.clone(),
            name: spec.name.clone(),
            driver: "bridge".into(),
            subnet4,
            gateway4: ipam::gateway4(subnet4),
            subnet6,
            gateway6: subnet6.map(ipam::gateway6),
            internal: spec.internal,
            labels: spec.labels.clone(),
            created: atoll_util::now_rfc3339(),
        };
        self.save(&rec)?;
        st.networks.insert(id, rec.clone());
        tracing::info!(network = %rec.name, subnet = %rec.subnet4, "created network");
        Ok(rec)
    }

    pub async fn list(&self) -> Vec<NetworkRecord> {
        let st = self.state.lock().await;
        let mut v: Vec<NetworkRecord> = st.networks.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A network and its containers: (container id, name, endpoint).
    pub async fn inspect(&self, query: &str) -> Result<(NetworkRecord, Vec<(String, String, Endpoint)>), NetError> {
        let st = self.state.lock().await;
        let n = st.find(query)?.clone();
        let members = st
            .owners
            .iter()
            .flat_map(|(id, o)| o.endpoints.iter().filter(|e| e.network_id == n.id).map(move |e| (id.clone(), o.name.clone(), e.clone())))
            .collect();
        Ok((n, members))
    }

    pub async fn remove(&self, query: &str) -> Result<NetworkRecord, NetError> {
        let mut st = self.state.lock().await;
        let n = st.find(query)?.clone();
        if n.name == DEFAULT_NETWORK {
            return Err(NetError::Default(n.name));
        }
        let users = st.users(&n.id);
        if !users.is_empty() {
            return Err(NetError::InUse { name: n.name, containers: users.join(", ") });
        }
        self.nl.delete(&n.bridge).await?;
        let path = self.networks_dir().join(format!("{}.json", n.id));
        fs::remove_file(&path).map_err(|source| NetError::Read { path, source })?;
        st.networks.remove(&n.id);
        tracing::info!(network = %n.name, "removed network");
        Ok(n)
    }

    /// Removes every user network without containers; returns their names.
    pub async fn prune(&self) -> Result<Vec<String>, NetError> {
        let unused: Vec<String> = {
            let st = self.state.lock().await;
            st.networks.values().filter(|n| n.name != DEFAULT_NETWORK && st.users(&n.id).is_empty()).map(|n| n.name.clone()).collect()
        };
        let mut removed = Vec::new();
        for name in unused {
            if self.remove(&name).await.is_ok() {
                removed.push(name);
            }
        }
        Ok(removed)
    }

    // ---- containers ----

    /// Gives a new container its addresses and host ports (nothing is plumbed yet).
    pub async fn allocate(
        &self,
        owner: &str,
        name: &str,
        attachments: &[NetworkAttachment],
        publish: &[PortSpec],
        exposed: &[ExposedPort],
        publish_all: bool,
    ) -> Result<(Vec<Endpoint>, Vec<PublishedPort>), NetError> {
        let mut st = self.state.lock().await;
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for (i, a) in attachments.iter().enumerate() {
            // Register as we go so two endpoints of one container never share an address.
            let e = st.endpoint(owner, a, i)?;
            if endpoints.iter().any(|x| x.network_id == e.network_id) {
                return Err(NetError::AlreadyConnected(e.network));
            }
            endpoints.push(e);
            st.owners.insert(owner.to_owned(), Owner { name: name.to_owned(), endpoints: endpoints.clone(), ports: vec![], active: false });
        }
        let result = (|| {
            if (!publish.is_empty() || publish_all)
                && !endpoints.iter().any(|e| st.networks.get(&e.network_id).is_some_and(|n| !n.internal))
            {
                return Err(NetError::InternalPublish(endpoints.iter().map(|e| e.network.clone()).collect::<Vec<_>>().join(", ")));
            }
            st.ports(publish, exposed, publish_all)
        })();
        match result {
            Ok(ports) => {
                st.owners.insert(
                    owner.to_owned(),
                    Owner { name: name.to_owned(), endpoints: endpoints.clone(), ports: ports.clone(), active: false },
                );
                Ok((endpoints, ports))
            }
            Err(e) => {
                st.owners.remove(owner);
                Err(e)
            }
        }
    }

    /// Creates the container's namespace if needed and plumbs its endpoints. Returns the
    /// namespace's path for the runtime to join.
    pub async fn activate(&self, owner: &str) -> Result<PathBuf, NetError> {
        let mut st = self.state.lock().await;
        let path = self.netns_path(owner);
        let Some(o) = st.owners.get(owner) else { return Err(NetError::NotFound(format!("endpoints of container {owner}"))) };
        if o.active && netns::is_live(&path) {
            return Ok(path);
        }
        let n = o.endpoints.len();
        let _ = netns::remove(&path);
        netns::create(&path).map_err(|source| NetError::Netns { id: owner.to_owned(), source })?;
        let plumbed = async {
            for i in 0..n {
                self.plumb(&st, owner, i).await?;
            }
            Ok::<(), NetError>(())
        }
        .await;
        if let Err(e) = plumbed {
            self.unplumb(&st, owner).await;
            return Err(e);
        }
        st.owners.get_mut(owner).expect("checked").active = true;
        if let Err(e) = self.sync(&st).await {
            st.owners.get_mut(owner).expect("checked").active = false;
            self.unplumb(&st, owner).await;
            let _ = self.sync(&st).await;
            return Err(e);
        }
        Ok(path)
    }

    async fn unplumb(&self, st: &State, owner: &str) {
        if let Some(o) = st.owners.get(owner) {
            for e in &o.endpoints {
                if let Err(err) = self.nl.delete(&e.host_veth).await {
                    tracing::warn!(error = %err, "removing a veth");
                }
            }
        }
        if let Err(err) = netns::remove(&self.netns_path(owner)) {
            tracing::warn!(error = %err, container = owner, "removing a network namespace");
        }
    }

    /// Tears down the container's namespace and links and frees its addresses and ports.
    pub async fn release(&self, owner: &str) -> Result<(), NetError> {
        let mut st = self.state.lock().await;
        if !st.owners.contains_key(owner) {
            return Ok(());
        }
        self.unplumb(&st, owner).await;
        st.owners.remove(owner);
        self.sync(&st).await
    }

    /// Connects a container to one more network (plumbed at once if it has a namespace).
    pub async fn connect(&self, owner: &str, name: &str, att: &NetworkAttachment) -> Result<Endpoint, NetError> {
        let mut st = self.state.lock().await;
        let net_id = st.find(&att.network)?.id.clone();
        let o = st.owners.entry(owner.to_owned()).or_insert_with(|| Owner {
            name: name.to_owned(),
            endpoints: vec![],
            ports: vec![],
            active: false,
        });
        if o.endpoints.iter().any(|e| e.network_id == net_id) {
            return Err(NetError::AlreadyConnected(att.network.clone()));
        }
        let index = (0..).find(|i| !o.endpoints.iter().any(|e| e.interface == format!("eth{i}"))).expect("a free index");
        let e = st.endpoint(owner, att, index)?;
        let o = st.owners.get_mut(owner).expect("inserted");
        o.endpoints.push(e.clone());
        let (active, i) = (o.active, o.endpoints.len() - 1);
        if active {
            if let Err(err) = self.plumb(&st, owner, i).await {
                let _ = self.nl.delete(&e.host_veth).await;
                st.owners.get_mut(owner).expect("inserted").endpoints.pop();
                return Err(err);
            }
            self.sync(&st).await?;
        }
        Ok(e)
    }

    /// Disconnects a container from a network; returns its remaining endpoints.
    pub async fn disconnect(&self, owner: &str, network: &str) -> Result<Vec<Endpoint>, NetError> {
        let mut st = self.state.lock().await;
        let net_id = st.find(network)?.id.clone();
        let o = st.owners.get_mut(owner).ok_or_else(|| NetError::NotConnected(network.to_owned()))?;
        let pos = o.endpoints.iter().position(|e| e.network_id == net_id).ok_or_else(|| NetError::NotConnected(network.to_owned()))?;
        let e = o.endpoints.remove(pos);
        let (active, rest) = (o.active, o.endpoints.clone());
        if active {
            self.nl.delete(&e.host_veth).await?;
            self.sync(&st).await?;
        }
        Ok(rest)
    }

    /// `/etc/hosts` and `/etc/resolv.conf` contents for a container.
    pub async fn etc_files(&self, owner: &str, hostname: &str) -> (String, String) {
        let st = self.state.lock().await;
        let Some(o) = st.owners.get(owner) else { return (String::new(), String::new()) };
        let hosts = hosts_file(hostname, &o.name, &o.endpoints);
        let host_resolv = fs::read_to_string(&self.cfg.resolv_conf).unwrap_or_default();
        let ns = o.endpoints.first().and_then(|e| st.networks.get(&e.network_id)).map(|n| n.gateway4);
        let resolv = match ns {
            Some(gw) => resolv_conf(gw, &host_resolv),
            None => host_resolv,
        };
        (hosts, resolv)
    }

    /// The host firewall chains published ports bypass (see [`nft::input_drop_chains`]).
    pub fn firewall_warnings(&self) -> Vec<String> {
        nft::input_drop_chains()
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }
}

/// The host's IPv4 routes, so new subnets avoid the networks the host already reaches.
fn host_routes4() -> Vec<Ipv4Net> {
    let Ok(text) = fs::read_to_string("/proc/net/route") else { return Vec::new() };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            if mask == 0 {
                return None;
            }
            Ipv4Net::with_netmask(Ipv4Addr::from(u32::from_be(dest)), Ipv4Addr::from(u32::from_be(mask))).ok()
        })
        .collect()
}

/// Reads `path` if it exists (for callers outside this crate that share the parsing).
pub fn read_upstreams(path: &Path) -> Vec<SocketAddr> {
    dns::upstreams_from_resolv_conf(&fs::read_to_string(path).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

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
