//! Links, addresses and routes over rtnetlink (no `ip` commands), on the host or inside a
//! container's namespace, plus the few sysctls bridges need. The only module that talks
//! netlink.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct LinkError {
    pub what: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

fn err<E: std::error::Error + Send + Sync + 'static>(what: impl Into<String>) -> impl FnOnce(E) -> LinkError {
    let what = what.into();
    move |e| LinkError { what, source: Box::new(e) }
}

/// A link as listed: index, name, kind ("bridge", "veth"…).
#[derive(Debug, Clone)]
pub struct LinkInfoSummary {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
}

fn summarize(m: &LinkMessage) -> LinkInfoSummary {
    let mut s = LinkInfoSummary { index: m.header.index, name: String::new(), kind: None };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        s.kind = Some(match k {
                            InfoKind::Bridge => "bridge".into(),
                            InfoKind::Veth => "veth".into(),
                            other => format!("{other:?}").to_lowercase(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    s
}

/// A netlink connection to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Netlink")
    }
}

impl Netlink {
    /// The namespace this process runs in. Needs a tokio runtime.
    pub fn host() -> Result<Self, LinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(err("opening a netlink socket"))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The namespace bound at `path`: the socket is opened by a thread inside it.
    pub fn in_netns(path: &Path) -> Result<Self, LinkError> {
        let rt = tokio::runtime::Handle::current();
        let (conn, handle, _) = crate::netns::run_in(path, move || {
            let _guard = rt.enter();
            rtnetlink::new_connection()
        })
        .map_err(err(format!("opening a netlink socket in {}", path.display())))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    pub async fn links(&self) -> Result<Vec<LinkInfoSummary>, LinkError> {
        let msgs: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await.map_err(err("listing links"))?;
        Ok(msgs.iter().map(summarize).collect())
    }

    pub async fn index(&self, name: &str) -> Result<Option<u32>, LinkError> {
        match self.handle.link().get().match_name(name.to_owned()).execute().try_next().await {
            Ok(m) => Ok(m.map(|m| m.header.index)),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(None),
            Err(e) => Err(err(format!("looking up link {name}"))(e)),
        }
    }

    /// Deletes a link by name; a missing one is fine.
    pub async fn delete(&self, name: &str) -> Result<(), LinkError> {
        if let Some(i) = self.index(name).await? {
            match self.handle.link().del(i).execute().await {
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => {}
                r => r.map_err(err(format!("deleting link {name}")))?,
            }
        }
        Ok(())
    }

    /// Forgets what this namespace's neighbour table holds for `ips` on link `index` (ARP and
    /// NDP entries; a missing one is fine). For an endpoint made anew: an entry left by its
    /// predecessor may be `FAILED` or mid-resolution, and the kernel would fail the next
    /// connection with "no route to host" instead of asking again.
    pub async fn forget_neighbours(&self, index: u32, ips: &[IpAddr]) -> Result<(), LinkError> {
        use rtnetlink::packet_route::AddressFamily;
        use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
        for ip in ips {
            let mut m = NeighbourMessage::default();
            m.header.ifindex = index;
            let (family, addr) = match *ip {
                IpAddr::V4(a) => (AddressFamily::Inet, NeighbourAddress::Inet(a)),
                IpAddr::V6(a) => (AddressFamily::Inet6, NeighbourAddress::Inet6(a)),
            };
            m.header.family = family;
            m.attributes.push(NeighbourAttribute::Destination(addr));
            match self.handle.neighbours().del(m).execute().await {
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -2 => {} // ENOENT
                r => r.map_err(err(format!("forgetting the neighbour entry of {ip}")))?,
            }
        }
        Ok(())
    }

    /// Adds an address without duplicate address detection (IPAM guarantees uniqueness, and
    /// a tentative IPv6 address could not be used for a second or so). An existing one is kept.
    pub async fn add_address(&self, index: u32, ip: IpAddr, prefix: u8) -> Result<(), LinkError> {
        let mut req = self.handle.address().add(index, ip, prefix).replace();
        req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        req.execute().await.map_err(err(format!("adding address {ip}/{prefix}")))
    }

    /// Creates the bridge if missing, with its gateway addresses, MAC and up. Returns its index.
    pub async fn ensure_bridge(&self, name: &str, mac: [u8; 6], addrs: &[(IpAddr, u8)]) -> Result<u32, LinkError> {
        let index = match self.index(name).await? {
            Some(i) => i,
            None => {
                let msg = LinkBridge::new(name).address(mac.to_vec()).build();
                match self.handle.link().add(msg).execute().await {
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_eexist() => {}
                    r => r.map_err(err(format!("creating bridge {name}")))?,
                }
                self.index(name)
                    .await?
                    .ok_or_else(|| LinkError { what: format!("bridge {name} vanished after creation"), source: "not found".into() })?
            }
        };
        if addrs.iter().any(|(ip, _)| ip.is_ipv4()) {
            // Lets the host reach published ports on 127.0.0.1 through the bridge.
            write_sysctl(&format!("net/ipv4/conf/{name}/route_localnet"), "1")?;
        }
        for (ip, prefix) in addrs {
            self.add_address(index, *ip, *prefix).await?;
        }
        self.up(index, name).await?;
        Ok(index)
    }

    async fn up(&self, index: u32, name: &str) -> Result<(), LinkError> {
        self.handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await.map_err(err(format!("bringing up {name}")))
    }

    /// Creates a VXLAN device `name` (VNI `vni`, UDP `port`, no learning: every peer is
    /// written by [`Netlink::add_vxlan_peer`]) with `mac` and `mtu`, and brings it up. Returns
    /// its index. One that exists is deleted first: it is made whole or not at all.
    pub async fn create_vxlan(&self, name: &str, vni: u32, port: u16, mac: [u8; 6], mtu: u32) -> Result<u32, LinkError> {
        self.delete(name).await?;
        let msg = rtnetlink::LinkVxlan::new(name, vni).port(port).learning(false).address(mac.to_vec()).mtu(mtu).build();
        self.handle.link().add(msg).execute().await.map_err(err(format!("creating VXLAN device {name}")))?;
        let index = self
            .index(name)
            .await?
            .ok_or_else(|| LinkError { what: format!("VXLAN device {name} vanished"), source: "not found".into() })?;
        self.up(index, name).await?;
        Ok(index)
    }

    /// Tells the VXLAN device `index` where the peer at underlay address `remote` is: a
    /// permanent neighbour entry (`remote` → `mac`, the key of on-link routes through the
    /// device) and a forwarding entry (`mac` → `remote`).
    pub async fn add_vxlan_peer(&self, index: u32, remote: Ipv4Addr, mac: [u8; 6]) -> Result<(), LinkError> {
        use rtnetlink::packet_route::neighbour::NeighbourFlags;
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(remote))
            .link_layer_address(&mac)
            .replace()
            .execute()
            .await
            .map_err(err(format!("adding the neighbour entry of {remote}")))?;
        self.handle
            .neighbours()
            .add_bridge(index, &mac)
            .flags(NeighbourFlags::Own)
            .destination(IpAddr::V4(remote))
            .replace()
            .execute()
            .await
            .map_err(err(format!("adding the forwarding entry of {remote}")))
    }

    /// Forgets the peer [`Netlink::add_vxlan_peer`] told device `index` of; missing entries
    /// are fine.
    pub async fn delete_vxlan_peer(&self, index: u32, remote: Ipv4Addr, mac: [u8; 6]) -> Result<(), LinkError> {
        use rtnetlink::packet_route::AddressFamily;
        use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage};
        self.forget_neighbours(index, &[IpAddr::V4(remote)]).await?;
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index;
        m.header.flags = NeighbourFlags::Own;
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(remote)));
        match self.handle.neighbours().del(m).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -2 => Ok(()), // ENOENT
            r => r.map_err(err(format!("forgetting the forwarding entry of {remote}"))),
        }
    }

    fn onlink_route(index: u32, dst: ipnet::Ipv4Net, via: Ipv4Addr) -> rtnetlink::packet_route::route::RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .gateway(via)
            .output_interface(index)
            .onlink()
            .build()
    }

    /// Routes `dst` through device `index` to the peer `via` (on-link: flannel's VXLAN backend).
    pub async fn add_onlink_route(&self, index: u32, dst: ipnet::Ipv4Net, via: Ipv4Addr) -> Result<(), LinkError> {
        self.handle
            .route()
            .add(Self::onlink_route(index, dst, via))
            .replace()
            .execute()
            .await
            .map_err(err(format!("routing {dst} to {via}")))
    }

    /// Removes such a route; a missing one is fine.
    pub async fn delete_onlink_route(&self, index: u32, dst: ipnet::Ipv4Net, via: Ipv4Addr) -> Result<(), LinkError> {
        match self.handle.route().del(Self::onlink_route(index, dst, via)).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if matches!(e.raw_code(), -3 | -19) => Ok(()), // ESRCH, ENODEV
            r => r.map_err(err(format!("removing the route of {dst}"))),
        }
    }

    /// Creates a veth pair: `host` enslaved to `bridge` and up, `peer` created directly inside
    /// the namespace at `netns` (moving a link between namespaces afterwards costs an RCU grace
    /// period, ~20 ms per container start).
    pub async fn create_veth(&self, host: &str, peer: &str, bridge: u32, netns: &Path) -> Result<(), LinkError> {
        // A leftover host side (its peer goes with it). The peer's name is only unique inside
        // the container's namespace, so nothing of that name is touched here.
        self.delete(host).await?;
        let fd = std::fs::File::open(netns).map_err(err(format!("opening {}", netns.display())))?;
        let peer_msg = LinkUnspec::new_with_name(peer).setns_by_fd(fd.as_raw_fd()).build();
        let msg = LinkVeth::new(host, peer).set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg))).build();
        self.handle.link().add(msg).execute().await.map_err(err(format!("creating veth {host}")))?;
        drop(fd);
        let host_index =
            self.index(host).await?.ok_or_else(|| LinkError { what: format!("veth {host} vanished"), source: "not found".into() })?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(host_index).controller(bridge).up().build())
            .execute()
            .await
            .map_err(err(format!("attaching {host} to its bridge")))?;
        Ok(())
    }

    /// Inside a container namespace: loopback up, `peer` renamed to `name` and configured as
    /// `cfg` says.
    pub async fn configure_interface(&self, peer: &str, name: &str, cfg: &Interface<'_>) -> Result<(), LinkError> {
        let Interface { mac, addrs, gateway4, gateway6, routes4 } = *cfg;
        if let Some(lo) = self.index("lo").await? {
            self.handle.link().set(LinkUnspec::new_with_index(lo).up().build()).execute().await.map_err(err("bringing up lo"))?;
        }
        let index = self
            .index(peer)
            .await?
            .ok_or_else(|| LinkError { what: format!("{peer} is not in the namespace"), source: "not found".into() })?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).name(name.to_owned()).address(mac.to_vec()).up().build())
            .execute()
            .await
            .map_err(err(format!("configuring {name}")))?;
        for (ip, prefix) in addrs {
            self.add_address(index, *ip, *prefix).await?;
        }
        if let Some(gw) = gateway4 {
            let r = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).output_interface(index).build();
            self.handle.route().add(r).replace().execute().await.map_err(err(format!("adding the default route via {gw}")))?;
        }
        if let Some(gw) = gateway6 {
            let r = RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw).output_interface(index).build();
            self.handle.route().add(r).replace().execute().await.map_err(err(format!("adding the default route via {gw}")))?;
        }
        for (dst, gw) in routes4 {
            let r = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .gateway(*gw)
                .output_interface(index)
                .build();
            self.handle.route().add(r).replace().execute().await.map_err(err(format!("adding the route to {dst} via {gw}")))?;
        }
        Ok(())
    }
}

const fn libc_enodev() -> i32 {
    19
}

const fn libc_eexist() -> i32 {
    17
}

/// How a container's interface is configured: its MAC, addresses, default routes (unless
/// `None`) and more IPv4 routes (prefix, gateway).
#[derive(Debug, Clone, Copy)]
pub struct Interface<'a> {
    pub mac: [u8; 6],
    pub addrs: &'a [(IpAddr, u8)],
    pub gateway4: Option<Ipv4Addr>,
    pub gateway6: Option<Ipv6Addr>,
    pub routes4: &'a [(ipnet::Ipv4Net, Ipv4Addr)],
}

/// Turns on IPv6 forwarding. Forwarding makes the kernel ignore router advertisements on
/// interfaces with `accept_ra = 1`, which would silently cost a SLAAC host its IPv6 default
/// route; those interfaces are set to 2 first (accept them even when forwarding).
pub fn enable_ipv6_forwarding() -> Result<(), LinkError> {
    if std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding").is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    if let Ok(dir) = std::fs::read_dir("/proc/sys/net/ipv6/conf") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "all" || name == "lo" || name.starts_with(crate::nft::BRIDGE_PREFIX) {
                continue;
            }
            if std::fs::read_to_string(e.path().join("accept_ra")).is_ok_and(|v| v.trim() == "1") {
                write_sysctl(&format!("net/ipv6/conf/{name}/accept_ra"), "2")?;
            }
        }
    }
    write_sysctl("net/ipv6/conf/all/forwarding", "1")
}

/// Writes `/proc/sys/<key>` in the current namespace.
pub fn write_sysctl(key: &str, value: &str) -> Result<(), LinkError> {
    let path = format!("/proc/sys/{key}");
    if std::fs::read_to_string(&path).map(|v| v.trim() == value).unwrap_or(false) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(err(format!("setting {key} = {value}")))
}
