//! Bringing the kernel in line with the records: at open (`reconcile`: plumb what should be,
//! remove what nobody owns) and after every change (`sync`: bridges, sysctls, the nftables
//! table, the helper's configuration).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::IpAddr;
use std::sync::Arc;

use atoll_spec::{DEFAULT_NETWORK, NetworkSpec};
use ipnet::Ipv6Net;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::claim::{self, Mark, TableOwner};
use crate::helper::Reload;
use crate::link::{self, Netlink};
use crate::records::{NetworkRecord, Owner, OwnerInit, SPARE_PREFIX, Spare, State, parse_mac};
use crate::{NetConfig, NetError, Networks, firewall, ipam, netns, nft};

impl Networks {
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
        let mut state = State {
            networks,
            ula,
            owners: BTreeMap::new(),
            default_warm: false,
            dying: BTreeMap::new(),
            overlay: None,
            remote: Default::default(),
            unnamed: Default::default(),
            forwards: Default::default(),
            spare: None,
        };
        for o in owners {
            // Endpoints of a network that is gone (a crash mid-removal) are dropped.
            let endpoints = o.endpoints.into_iter().filter(|e| state.networks.contains_key(&e.network_id)).collect();
            state.owners.insert(o.id, Owner { name: o.name, endpoints, ports: o.ports, active: false, spare: None });
        }
        let mark = Mark::of(&cfg.data_dir);
        let this = Arc::new_cyclic(|me| Self {
            cfg,
            state: tokio::sync::Mutex::new(state),
            nl,
            applied: std::sync::Mutex::new(None),
            mark,
            owned: AtomicBool::new(false),
            foreign: std::sync::Mutex::new(None),
            helper_checked: AtomicBool::new(false),
            busy: std::sync::Mutex::new(Vec::new()),
            forward_drops: std::sync::Mutex::new(Vec::new()),
            bridge_index: std::sync::Mutex::new(BTreeMap::new()),
            torn_down: tokio::sync::Notify::new(),
            monitoring: AtomicBool::new(false),
            me: me.clone(),
        });
        if this.state.lock().await.find(DEFAULT_NETWORK).is_err() {
            this.create(&NetworkSpec { name: DEFAULT_NETWORK.into(), ipv6: true, ..Default::default() }).await?;
        }
        this.reconcile().await?;
        Ok(this)
    }

    /// Makes the kernel match the records: plumbs every container whose namespace is alive,
    /// deletes links and namespaces nobody owns, rewrites the nftables table and DNS. Touches
    /// nothing while another live daemon's networking is in this namespace (see `claim`).
    pub async fn reconcile(&self) -> Result<(), NetError> {
        let mut st = self.state.lock().await;
        *self.applied.lock().unwrap() = None;
        self.bridge_index.lock().unwrap().clear();
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
                if !st.owners.contains_key(&name) && st.spare.as_ref().is_none_or(|s| s.key != name) {
                    tracing::info!(netns = %name, "removing a leftover network namespace");
                    let _ = netns::remove(&e.path());
                }
            }
        }
        // Whose table is here: ours (or leftovers) to rewrite, nobody's, or a live other's.
        let owned = match nft::table_owner()? {
            TableOwner::Absent => false,
            TableOwner::Marked(m) if !self.mark.as_ref().is_some_and(|ours| ours.same(&m)) => match claim::live(&m) {
                Some(who) => {
                    tracing::warn!("{}", NetError::Foreign(who.clone()));
                    *self.foreign.lock().unwrap() = Some(who);
                    return Ok(());
                }
                None => true,
            },
            _ => true,
        };
        self.owned.store(owned, Ordering::SeqCst);
        *self.foreign.lock().unwrap() = None;
        // The default bridge left up by an earlier run stays warm.
        let default_bridge = st.find(DEFAULT_NETWORK).map(|n| n.bridge.clone()).ok();
        st.default_warm = self.nl.links().await?.iter().any(|l| Some(&l.name) == default_bridge.as_ref());
        self.remove_leftover_links(&st).await?;
        // The island's overlay comes back with the agent's first look (nothing here says
        // whether it should): a device left by an earlier run would listen meanwhile.
        if st.overlay.is_none() {
            self.nl.delete(crate::overlay::DEV).await?;
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
        self.sync(&mut st).await
    }

    /// Bridges and veths by Atoll's names that no record here wants: this daemon's leftovers,
    /// or those of a dead daemon whose table it replaces.
    async fn remove_leftover_links(&self, st: &State) -> Result<(), NetError> {
        let wanted_bridges: BTreeSet<String> = st.bridged_networks().iter().map(|n| n.bridge.clone()).collect();
        let wanted_veths: BTreeSet<String> = st
            .owners
            .values()
            .filter(|o| o.active)
            .flat_map(|o| o.endpoints.iter().map(|e| e.host_veth.clone()))
            .chain(st.spare.iter().map(|s| s.endpoint.host_veth.clone()))
            .collect();
        for l in self.nl.links().await? {
            let stale_bridge =
                l.name.starts_with(nft::BRIDGE_PREFIX) && l.kind.as_deref() == Some("bridge") && !wanted_bridges.contains(&l.name);
            let stale_veth = l.name.starts_with("av") && l.kind.as_deref() == Some("veth") && !wanted_veths.contains(&l.name);
            if stale_bridge || stale_veth {
                tracing::info!(link = %l.name, "removing a leftover link");
                self.nl.delete(&l.name).await?;
            }
        }
        Ok(())
    }

    /// Makes sure this daemon may create the table: fails while another live daemon's
    /// networking is in this namespace; removes a dead one's leftovers (its bridges would
    /// route the same subnets). Checked before the first bridge is made, not on every start.
    pub(crate) async fn claim(&self, st: &State) -> Result<(), NetError> {
        if self.owned.load(Ordering::SeqCst) {
            return Ok(());
        }
        let owner = nft::table_owner()?;
        let foreign = match &owner {
            TableOwner::Marked(m) if !self.mark.as_ref().is_some_and(|ours| ours.same(m)) => Some(m),
            _ => None,
        };
        let who = foreign.and_then(claim::live);
        *self.foreign.lock().unwrap() = who.clone();
        if let Some(who) = who {
            return Err(NetError::Foreign(who));
        }
        if owner != TableOwner::Absent {
            tracing::info!(owner = ?owner, "replacing the networking a stopped daemon left in this namespace");
            self.remove_leftover_links(st).await?;
            self.owned.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Brings the nftables table, the helper and the bridges of active networks in line.
    pub(crate) async fn sync(&self, st: &mut State) -> Result<(), NetError> {
        self.sync_with(st, Reload::Wait).await
    }

    pub(crate) async fn sync_with(&self, st: &mut State, reload: Reload) -> Result<(), NetError> {
        if !st.default_warm && st.active_networks().iter().any(|n| n.name == DEFAULT_NETWORK) {
            st.default_warm = true;
        }
        let mut rules = st.ruleset();
        rules.comment = self.mark.as_ref().map(Mark::comment);
        // The ruleset holds the set of bridged networks: when it is unchanged (most container
        // starts and removals), so are the bridges, the sysctls and the table. `reconcile`
        // clears `applied`, forcing all of it.
        let changed = self.applied.lock().unwrap().as_ref() != Some(&rules);
        if changed {
            let owned = self.owned.load(Ordering::SeqCst);
            if !rules.is_empty() && !owned {
                self.claim(st).await?;
            }
            let owned = self.owned.load(Ordering::SeqCst);
            for n in st.bridged_networks() {
                self.ensure_bridge(n).await?;
            }
            if rules.bridges.iter().any(|b| !b.internal) {
                link::write_sysctl("net/ipv4/ip_forward", "1")?;
                if rules.bridges.iter().any(|b| !b.internal && b.subnet6.is_some()) {
                    link::enable_ipv6_forwarding()?;
                }
            }
            *self.applied.lock().unwrap() = None;
            // With nothing to write and no table of ours, nft is not run at all: a daemon
            // without bridged containers never touches the namespace's tables.
            if owned || !rules.is_empty() {
                nft::apply(&rules)?;
                self.owned.store(!rules.is_empty(), Ordering::SeqCst);
            }
            *self.applied.lock().unwrap() = Some(rules.clone());
            if !rules.bridges.is_empty() {
                self.check_forward();
                self.start_monitor();
            }
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
        if let Some(busy) = self.helper_sync(st, reload).await? {
            if !busy.is_empty() {
                tracing::warn!(
                    bindings = %busy.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", "),
                    "published ports are held by other programs"
                );
            }
            *self.busy.lock().unwrap() = busy;
        }
        if changed {
            // Bridges of networks without endpoints go.
            let active: BTreeSet<&str> = rules.bridges.iter().map(|b| b.bridge.as_str()).collect();
            for n in st.networks.values().filter(|n| !active.contains(n.bridge.as_str())) {
                self.delete_bridge(&n.bridge).await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn delete_bridge(&self, name: &str) -> Result<(), NetError> {
        self.bridge_index.lock().unwrap().remove(name);
        Ok(self.nl.delete(name).await?)
    }

    /// Deletes a removed container's veths in the background (each deletion waits for an RCU
    /// grace period, 10–20 ms, which `run --rm` would otherwise wait for), then frees their
    /// addresses. Its namespace is already gone, so nothing reaches them meanwhile.
    pub(crate) fn teardown_later(&self, owner: &str, endpoints: Vec<crate::Endpoint>) {
        let (me, owner) = (self.me.clone(), owner.to_owned());
        tokio::spawn(async move {
            let Some(this) = me.upgrade() else { return };
            for e in &endpoints {
                if let Err(err) = this.nl.delete(&e.host_veth).await {
                    tracing::warn!(error = %err, "removing a veth");
                }
            }
            this.state.lock().await.dying.remove(&owner);
            this.torn_down.notify_waiters();
        });
    }

    /// Finds other tables' forward chains that drop by default, applies docker's remedy to
    /// docker's, and says what changed in the log (`warnings` has the rest).
    pub(crate) fn check_forward(&self) {
        let Ok(ruleset) = nft::list_ruleset() else { return };
        let mut found = firewall::forward_drops(&ruleset);
        for f in found.iter_mut().filter(|f| f.docker_user && !f.accepts_atoll) {
            f.accepts_atoll = firewall::apply_docker_user(&f.family, &f.table);
        }
        // A chain that accepts Atoll's bridges already is no concern (docker's is still
        // reported: Atoll changed it).
        found.retain(|f| f.docker_user || !f.accepts_atoll);
        let mut last = self.forward_drops.lock().unwrap();
        for f in found.iter().filter(|f| !last.contains(f)) {
            if f.docker_user && f.accepts_atoll {
                tracing::info!("{}", f.describe());
            } else {
                tracing::warn!("{}", f.describe());
            }
        }
        *last = found;
    }

    /// Watches other programs' changes to the ruleset (docker starting, a firewall being
    /// loaded) and checks the forward chains again after each, without polling.
    fn start_monitor(&self) {
        if self.monitoring.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.me.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut child = match nft::monitor() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the ruleset: other tables' forward chains are checked only when Atoll's table changes");
                    return;
                }
            };
            let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
            let mut foreign = false;
            while let Ok(Some(line)) = lines.next_line().await {
                if !line.starts_with("# new generation") {
                    foreign |= !line.trim().is_empty() && !firewall::about_table(&line, "inet", nft::TABLE);
                    continue;
                }
                if !std::mem::take(&mut foreign) {
                    continue;
                }
                // Settle: docker makes dozens of changes in a row.
                loop {
                    match tokio::time::timeout(std::time::Duration::from_millis(200), lines.next_line()).await {
                        Ok(Ok(Some(_))) => continue,
                        Ok(_) => return,
                        Err(_) => break,
                    }
                }
                let Some(this) = me.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || this.check_forward()).await;
            }
        });
    }

    /// The bridge's index, creating and configuring it if this daemon has not (since it
    /// started or deleted it).
    pub(crate) async fn bridge(&self, n: &NetworkRecord) -> Result<u32, NetError> {
        if let Some(i) = self.bridge_index.lock().unwrap().get(&n.bridge) {
            return Ok(*i);
        }
        self.ensure_bridge(n).await
    }

    pub(crate) async fn ensure_bridge(&self, n: &NetworkRecord) -> Result<u32, NetError> {
        let mut addrs = vec![(IpAddr::V4(n.gateway4), n.subnet4.prefix_len())];
        if let (Some(gw), Some(s)) = (n.gateway6, n.subnet6) {
            addrs.push((IpAddr::V6(gw), s.prefix_len()));
        }
        let index = self.nl.ensure_bridge(&n.bridge, ipam::mac_for(n.gateway4), &addrs).await?;
        self.bridge_index.lock().unwrap().insert(n.bridge.clone(), index);
        Ok(index)
    }

    /// Plumbs endpoint `i` of `owner` into its (existing) namespace.
    pub(crate) async fn plumb(&self, st: &State, owner: &str, i: usize) -> Result<(), NetError> {
        let o = &st.owners[owner];
        let e = &o.endpoints[i];
        let net = st.networks.get(&e.network_id).ok_or_else(|| NetError::NotFound(e.network.clone()))?;
        // The default route goes through the first network that has a way out.
        let first_out = o.endpoints.iter().position(|x| st.networks.get(&x.network_id).is_some_and(|n| !n.internal));
        self.plumb_endpoint(&self.netns_path(owner), e, net, first_out == Some(i)).await
    }

    /// Plumbs `e` (on `net`) into the namespace at `path`: a veth on the network's bridge, the
    /// other end inside under its final name, with its addresses, the network's routes and,
    /// with `default_route`, the default routes through its gateway.
    pub(crate) async fn plumb_endpoint(
        &self,
        path: &std::path::Path,
        e: &crate::Endpoint,
        net: &NetworkRecord,
        default_route: bool,
    ) -> Result<(), NetError> {
        // Created inside the container's namespace under its final name.
        let peer = e.interface.clone();
        let bridge = self.bridge(net).await?;
        if self.nl.create_veth(&e.host_veth, &peer, bridge, path).await.is_err() {
            // The bridge may have been deleted behind this daemon's back: once more, anew.
            self.bridge_index.lock().unwrap().remove(&net.bridge);
            let bridge = self.ensure_bridge(net).await?;
            self.nl.create_veth(&e.host_veth, &peer, bridge, path).await?;
        }
        let inside = Netlink::in_netns(path)?;
        let mut addrs = vec![(IpAddr::V4(e.ipv4), net.subnet4.prefix_len())];
        if let (Some(ip), Some(s)) = (e.ipv6, net.subnet6) {
            addrs.push((IpAddr::V6(ip), s.prefix_len()));
        }
        let (gw4, gw6) = if default_route { (Some(net.gateway4), net.gateway6.filter(|_| e.ipv6.is_some())) } else { (None, None) };
        // A stack network's other members' replicas: through this network's gateway.
        let routes: Vec<(ipnet::Ipv4Net, std::net::Ipv4Addr)> = net.overlay4.iter().map(|o| (*o, net.gateway4)).collect();
        let cfg = link::Interface { mac: parse_mac(&e.mac), addrs: &addrs, gateway4: gw4, gateway6: gw6, routes4: &routes };
        inside.configure_interface(&peer, &e.interface, &cfg).await?;
        // The host may still remember this address's previous endpoint (a restored veth, a
        // reused address) as unreachable: it must ask afresh.
        let ips: Vec<IpAddr> = addrs.iter().map(|(ip, _)| *ip).collect();
        self.nl.forget_neighbours(self.bridge(net).await?, &ips).await?;
        Ok(())
    }

    /// Makes the default network's spare ([`Spare`]) in the background, unless there is one.
    pub(crate) fn make_spare_later(&self) {
        let me = self.me.clone();
        tokio::spawn(async move {
            let Some(this) = me.upgrade() else { return };
            if let Err(e) = this.make_spare().await {
                tracing::warn!(error = %e, "making a spare network namespace (the next start makes its own)");
            }
        });
    }

    /// Reserves the spare's addresses under the state's lock, plumbs it without (a start
    /// meanwhile does not wait for it), then marks it ready, unless it was let go meanwhile.
    async fn make_spare(&self) -> Result<(), NetError> {
        let (key, endpoint, net) = {
            let mut st = self.state.lock().await;
            if st.spare.is_some() || !st.default_warm || !self.owned.load(Ordering::SeqCst) {
                return Ok(());
            }
            let net = st.find(DEFAULT_NETWORK)?.clone();
            // Its veth is `av` + the key's first ten characters: unlike every other one.
            let key = loop {
                let key = format!("{SPARE_PREFIX}{:016x}", fastrand::u64(..));
                let veth = format!("av{}0", &key[..10]);
                if !st.all_endpoints().any(|e| e.host_veth == veth) {
                    break key;
                }
            };
            let endpoint = st.endpoint(&key, &atoll_spec::NetworkAttachment::new(DEFAULT_NETWORK), 0)?;
            st.spare = Some(Spare { key: key.clone(), endpoint: endpoint.clone(), ready: false });
            (key, endpoint, net)
        };
        let path = self.netns_path(&key);
        let made = async {
            netns::create(&path).map_err(|source| NetError::Netns { id: key.clone(), source })?;
            self.plumb_endpoint(&path, &endpoint, &net, true).await
        }
        .await;
        let mut st = self.state.lock().await;
        let ours = st.spare.as_ref().is_some_and(|s| s.key == key);
        match made {
            Ok(()) if ours => {
                st.spare.as_mut().expect("ours").ready = true;
                Ok(())
            }
            made => {
                if ours {
                    st.spare = None;
                }
                drop(st);
                let _ = netns::remove(&path);
                let _ = self.nl.delete(&endpoint.host_veth).await;
                made
            }
        }
    }

    /// Lets the spare go (an address it holds was asked for): its addresses are free once its
    /// veth is deleted, in the background.
    pub(crate) fn discard_spare(&self, st: &mut State) {
        let Some(s) = st.spare.take() else { return };
        let _ = netns::remove(&self.netns_path(&s.key));
        st.dying.insert(s.key.clone(), vec![s.endpoint.clone()]);
        self.teardown_later(&s.key, vec![s.endpoint]);
    }

    /// Moves the spare `key`'s namespace to `path` for the container whose first endpoint is
    /// `first` (the spare's). False if it cannot be (its namespace is gone): it is cleared, and
    /// the caller plumbs the container as if there had been no spare.
    pub(crate) async fn adopt_spare(&self, key: &str, path: &std::path::Path, first: &crate::Endpoint) -> bool {
        let from = self.netns_path(key);
        if netns::is_live(&from) && netns::rename(&from, path).is_ok() {
            return true;
        }
        tracing::warn!(spare = key, "the spare network namespace is gone; plumbing the container anew");
        let _ = netns::remove(&from);
        let _ = netns::remove(path);
        // Its veth goes first: the container's is made under the same name.
        let _ = self.nl.delete(&first.host_veth).await;
        false
    }

    /// Deletes the container's veths and its namespace.
    pub(crate) async fn unplumb(&self, st: &State, owner: &str) {
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
}
