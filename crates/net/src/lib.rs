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

pub mod claim;
pub mod dns;
pub mod firewall;
mod helper;
pub mod helperd;
pub mod ipam;
mod kernel;
pub mod link;
pub mod netns;
pub mod nft;
pub mod overlay;
mod ports;
pub mod proxy;
mod records;

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use atoll_spec::{DEFAULT_NETWORK, ExposedPort, NetworkAttachment, NetworkSpec, PortSpec};
use ipnet::{Ipv4Net, Ipv6Net};

use link::Netlink;
pub use records::{BridgeState, Endpoint, NetworkRecord, NetworkSummary, OwnerInit, PublishedPort, hosts_file, resolv_conf};
use records::{Owner, State};

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
    #[error("{0} is not an address of this host: publish on one of its addresses, or on all (no address)")]
    NotLocal(IpAddr),
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
    #[error(
        "container networking in this network namespace belongs to another Atoll daemon ({0}); two daemons cannot share it: \
         start this one in a network namespace of its own (ip netns exec NAME atoll daemon …), or stop the other and remove its containers"
    )]
    Foreign(String),
    #[error("the network helper (atoll dns serve): {0}")]
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
            | Self::NotConnected(_)
            | Self::Foreign(_) => K::Conflict,
            Self::BadAddress { .. } | Self::NoIpv6(_) | Self::InternalPublish(_) | Self::NotLocal(_) | Self::Spec(_) => K::Invalid,
            _ => K::Internal,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NetConfig {
    pub data_dir: PathBuf,
    /// This binary, re-executed as `atoll dns serve`.
    pub exe: PathBuf,
    /// Where new networks' IPv4 subnets come from (/24 each).
    pub pool4: Ipv4Net,
    /// Resolvers for names that are not containers'.
    pub upstreams: Vec<SocketAddr>,
    /// The resolv.conf whose `search` and `options` containers inherit.
    pub resolv_conf: PathBuf,
}
/// Container networking of this host.
pub struct Networks {
    cfg: NetConfig,
    state: tokio::sync::Mutex<State>,
    nl: Netlink,
    /// The ruleset last applied, to skip `nft` when a change does not touch it (most
    /// container starts); cleared by `reconcile`, which always rewrites the table.
    applied: std::sync::Mutex<Option<nft::Ruleset>>,
    /// What this daemon's table says about it (see `claim`).
    mark: Option<claim::Mark>,
    /// The table in this namespace, if any, is this daemon's to replace.
    owned: std::sync::atomic::AtomicBool,
    /// Another live daemon whose networking is in this namespace: why this one has none.
    foreign: std::sync::Mutex<Option<String>>,
    /// The running helper speaks this version's protocol (checked at the first reload).
    helper_checked: std::sync::atomic::AtomicBool,
    /// Published bindings the helper could not reserve: another program holds them.
    busy: std::sync::Mutex<Vec<proxy::Binding>>,
    /// Signalled when a removed container's veths are gone (and its addresses free).
    torn_down: tokio::sync::Notify,
    /// Bridges this daemon made or checked, by name: their index (most starts need no more).
    bridge_index: std::sync::Mutex<BTreeMap<String, u32>>,
    /// Other tables' forward chains that drop by default, as last checked.
    forward_drops: std::sync::Mutex<Vec<firewall::ForwardDrop>>,
    /// `nft monitor` runs (started with the first table this daemon writes).
    monitoring: std::sync::atomic::AtomicBool,
    me: std::sync::Weak<Networks>,
}

impl std::fmt::Debug for Networks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Networks").field("data_dir", &self.cfg.data_dir).finish()
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

    pub async fn create(&self, spec: &NetworkSpec) -> Result<NetworkRecord, NetError> {
        self.create_from(spec, None).await
    }

    /// Creates a stack network: its subnet is `slice`, this member's part of the network's
    /// island-wide prefix `overlay`, whose other parts are on other members (see `overlay`).
    pub async fn create_overlay(&self, spec: &NetworkSpec, slice: Ipv4Net, overlay: Ipv4Net) -> Result<NetworkRecord, NetError> {
        let spec = NetworkSpec { subnets: vec![slice.to_string()], ..spec.clone() };
        self.create_from(&spec, Some(overlay)).await
    }

    async fn create_from(&self, spec: &NetworkSpec, overlay4: Option<Ipv4Net>) -> Result<NetworkRecord, NetError> {
        let (v4, v6) = spec.validate()?;
        let mut st = self.state.lock().await;
        if st.networks.values().any(|n| n.name == spec.name) {
            return Err(NetError::Exists(spec.name.clone()));
        }
        let taken4: Vec<Ipv4Net> = st.networks.values().map(|n| n.subnet4).chain(atoll_util::host_routes4()).collect();
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
            driver: if overlay4.is_some() { "overlay" } else { "bridge" }.into(),
            subnet4,
            gateway4: ipam::gateway4(subnet4),
            subnet6,
            gateway6: subnet6.map(ipam::gateway6),
            internal: spec.internal,
            labels: spec.labels.clone(),
            options: spec.options.clone(),
            overlay4,
            created: atoll_util::now_rfc3339(),
        };
        self.save(&rec)?;
        st.networks.insert(id, rec.clone());
        tracing::info!(network = %rec.name, subnet = %rec.subnet4, "created network");
        Ok(rec)
    }

    pub async fn list(&self) -> Vec<NetworkRecord> {
        self.summaries().await.into_iter().map(|s| s.network).collect()
    }

    /// The networks with the state of their bridges (`network ls`).
    pub async fn summaries(&self) -> Vec<NetworkSummary> {
        let st = self.state.lock().await;
        let mut v: Vec<NetworkSummary> =
            st.networks.values().map(|n| NetworkSummary { network: n.clone(), bridge_state: st.bridge_state(&n.id) }).collect();
        v.sort_by(|a, b| a.network.name.cmp(&b.network.name));
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
        self.delete_bridge(&n.bridge).await?;
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
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut st = self.state.lock().await;
            // An address the spare holds is asked for: it goes (and the address is free once
            // its veth is, below).
            if st.spare_in_the_way(attachments) {
                self.discard_spare(&mut st);
            }
            let result = Self::allocate_in(&mut st, owner, name, attachments, publish, exposed, publish_all);
            if result.is_err()
                && let Some(o) = st.owners.remove(owner)
                && let (Some(key), Some(e)) = (o.spare, o.endpoints.into_iter().next())
            {
                // Not used after all: it is the spare again.
                st.spare = Some(records::Spare { key, endpoint: Endpoint { aliases: vec![], ..e }, ready: true });
            }
            match result {
                // The last free address may be a removed container's whose veth is going, or
                // the address asked for may be.
                Err(NetError::Full(n)) if st.dying.values().flatten().any(|e| e.network == n) && tokio::time::Instant::now() < deadline => {
                    let torn_down = self.torn_down.notified();
                    drop(st);
                    let _ = tokio::time::timeout_at(deadline, torn_down).await;
                }
                Err(NetError::AddressTaken { ip, network }) if st.dying_holds(&network, ip) && tokio::time::Instant::now() < deadline => {
                    let torn_down = self.torn_down.notified();
                    drop(st);
                    let _ = tokio::time::timeout_at(deadline, torn_down).await;
                }
                r => return r,
            }
        }
    }

    fn allocate_in(
        st: &mut State,
        owner: &str,
        name: &str,
        attachments: &[NetworkAttachment],
        publish: &[PortSpec],
        exposed: &[ExposedPort],
        publish_all: bool,
    ) -> Result<(Vec<Endpoint>, Vec<PublishedPort>), NetError> {
        let mut endpoints: Vec<Endpoint> = Vec::new();
        let spare = st.take_spare(attachments).map(|(key, e)| {
            endpoints.push(e);
            key
        });
        let new_owner = |endpoints: &[Endpoint], ports: Vec<PublishedPort>| Owner {
            name: name.to_owned(),
            endpoints: endpoints.to_vec(),
            ports,
            active: false,
            spare: spare.clone(),
        };
        st.owners.insert(owner.to_owned(), new_owner(&endpoints, vec![]));
        for (i, a) in attachments.iter().enumerate().skip(endpoints.len()) {
            // Register as we go so two endpoints of one container never share an address.
            let e = st.endpoint(owner, a, i)?;
            if endpoints.iter().any(|x| x.network_id == e.network_id) {
                return Err(NetError::AlreadyConnected(e.network));
            }
            endpoints.push(e);
            st.owners.insert(owner.to_owned(), new_owner(&endpoints, vec![]));
        }
        if (!publish.is_empty() || publish_all) && !endpoints.iter().any(|e| st.networks.get(&e.network_id).is_some_and(|n| !n.internal)) {
            return Err(NetError::InternalPublish(endpoints.iter().map(|e| e.network.clone()).collect::<Vec<_>>().join(", ")));
        }
        let ports = st.ports(publish, exposed, publish_all)?;
        st.owners.insert(owner.to_owned(), new_owner(&endpoints, ports.clone()));
        Ok((endpoints, ports))
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
        let spare = o.spare.clone();
        if n > 0 {
            self.claim(&st).await?;
        }
        let _ = netns::remove(&path);
        // The spare's namespace, plumbed already, becomes the container's: only the rest of
        // its endpoints (usually none) are left to plumb.
        let adopted = match &spare {
            Some(key) => self.adopt_spare(key, &path, &o.endpoints[0]).await,
            None => false,
        };
        st.owners.get_mut(owner).expect("checked").spare = None;
        if !adopted {
            netns::create(&path).map_err(|source| NetError::Netns { id: owner.to_owned(), source })?;
        }
        let plumbed = async {
            for i in usize::from(adopted)..n {
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
        let mut synced = self.sync(&mut st).await;
        if synced.is_ok() {
            // Its own ports must be reserved: another program took one since `create`.
            let busy = self.busy.lock().unwrap().clone();
            if let Some(b) = busy.iter().find(|b| st.owners[owner].ports.iter().any(|p| p.covers(b))) {
                synced = Err(NetError::PortBusy(b.to_string()));
            }
        }
        if let Err(e) = synced {
            st.owners.get_mut(owner).expect("checked").active = false;
            self.unplumb(&st, owner).await;
            let _ = self.sync(&mut st).await;
            return Err(e);
        }
        if st.owners[owner].endpoints.iter().any(|e| e.network == DEFAULT_NETWORK) {
            self.make_spare_later();
        }
        Ok(path)
    }

    /// Tears down the container's namespace and links and frees its addresses and ports.
    pub async fn release(&self, owner: &str) -> Result<(), NetError> {
        let mut st = self.state.lock().await;
        let Some(o) = st.owners.remove(owner) else { return Ok(()) };
        if let Err(err) = netns::remove(&self.netns_path(owner)) {
            tracing::warn!(error = %err, container = owner, "removing a network namespace");
        }
        // Never started: of its endpoints only the spare's has a veth.
        let plumbed = match &o.spare {
            Some(key) => {
                let _ = netns::remove(&self.netns_path(key));
                o.endpoints.iter().take(1).cloned().collect()
            }
            None if o.active => o.endpoints.clone(),
            None => vec![],
        };
        if !plumbed.is_empty() {
            st.dying.insert(owner.to_owned(), plumbed.clone());
            self.teardown_later(owner, plumbed);
        }
        // Its names can go from DNS without waiting; its ports must be free when this returns.
        let reload = if o.ports.is_empty() { helper::Reload::Later } else { helper::Reload::Wait };
        self.sync_with(&mut st, reload).await
    }

    /// Connects a container to one more network (plumbed at once if it has a namespace).
    pub async fn connect(&self, owner: &str, name: &str, att: &NetworkAttachment) -> Result<Endpoint, NetError> {
        let mut st = self.address_free(att).await;
        let net_id = st.find(&att.network)?.id.clone();
        let o = st.owners.entry(owner.to_owned()).or_insert_with(|| Owner {
            name: name.to_owned(),
            endpoints: vec![],
            ports: vec![],
            active: false,
            spare: None,
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
            if let Err(err) = self.claim(&st).await {
                st.owners.get_mut(owner).expect("inserted").endpoints.pop();
                return Err(err);
            }
            if let Err(err) = self.plumb(&st, owner, i).await {
                let _ = self.nl.delete(&e.host_veth).await;
                st.owners.get_mut(owner).expect("inserted").endpoints.pop();
                return Err(err);
            }
            self.sync(&mut st).await?;
        }
        Ok(e)
    }

    /// The state, once the address `att` asks for (if any) is not held by the spare (which
    /// goes) or by an endpoint that is going (waited for, up to 5 s, as `allocate` does).
    async fn address_free(&self, att: &NetworkAttachment) -> tokio::sync::MutexGuard<'_, State> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut st = self.state.lock().await;
            if st.spare_in_the_way(std::slice::from_ref(att)) {
                self.discard_spare(&mut st);
            }
            let network = st.find(&att.network).map(|n| n.name.clone()).unwrap_or_default();
            let asked = att.ipv4.map(IpAddr::V4).into_iter().chain(att.ipv6.map(IpAddr::V6));
            let held = asked.into_iter().any(|ip| st.dying_holds(&network, ip));
            if !held || tokio::time::Instant::now() >= deadline {
                return st;
            }
            let torn_down = self.torn_down.notified();
            drop(st);
            let _ = tokio::time::timeout_at(deadline, torn_down).await;
        }
    }

    /// Disconnects a container from a network; returns its remaining endpoints.
    pub async fn disconnect(&self, owner: &str, network: &str) -> Result<Vec<Endpoint>, NetError> {
        let mut st = self.state.lock().await;
        let net_id = st.find(network)?.id.clone();
        let o = st.owners.get_mut(owner).ok_or_else(|| NetError::NotConnected(network.to_owned()))?;
        let pos = o.endpoints.iter().position(|e| e.network_id == net_id).ok_or_else(|| NetError::NotConnected(network.to_owned()))?;
        let e = o.endpoints.remove(pos);
        // Not started, and leaving the spare's network: the spare's namespace goes now.
        if pos == 0
            && let Some(key) = o.spare.take()
        {
            let _ = netns::remove(&self.netns_path(&key));
            st.dying.insert(key.clone(), vec![e.clone()]);
            self.teardown_later(&key, vec![e.clone()]);
        }
        let o = st.owners.get_mut(owner).expect("found above");
        let (active, rest) = (o.active, o.endpoints.clone());
        if active {
            self.nl.delete(&e.host_veth).await?;
            self.sync(&mut st).await?;
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

    /// What keeps container networking from working as it should here, with what to do.
    pub fn warnings(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(who) = self.foreign.lock().unwrap().clone() {
            v.push(NetError::Foreign(who).to_string());
        }
        for f in self.forward_drops.lock().unwrap().iter() {
            v.push(f.describe());
        }
        for b in self.busy.lock().unwrap().iter() {
            v.push(format!(
                "published port {b} is held by another program: its traffic from other hosts still reaches the container \
                 (DNAT), but the port is not reserved and IPv6 loopback does not reach it; stop that program, or publish another port"
            ));
        }
        v
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }
}

/// Reads `path` if it exists (for callers outside this crate that share the parsing).
pub fn read_upstreams(path: &Path) -> Vec<SocketAddr> {
    dns::upstreams_from_resolv_conf(&fs::read_to_string(path).unwrap_or_default())
}
