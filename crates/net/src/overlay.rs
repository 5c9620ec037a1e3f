//! Stack networks across an island's members, routed as flannel's VXLAN backend routes pods:
//! one VXLAN device per host ([`DEV`]) with a MAC derived from the member's overlay index; for
//! every other member a permanent neighbour entry (its mesh address → its MAC) and a
//! forwarding entry (its MAC → its mesh address); and for each stack network here, every other
//! member's slice of it routed on-link through the device to that member's mesh address.
//! Nothing is learnt or flooded: the island's replicated state says where everything is. The
//! outer UDP packets go to mesh addresses, so Nebula carries and encrypts them, and the VXLAN
//! port is refused on every other interface (see `nft`).
//!
//! A stack network has one prefix island-wide; each member's bridge holds its own slice of it
//! and its containers reach the rest through their gateway (a route inside the container), so
//! a container on several networks answers each from the right address. Which remote
//! addresses may reach a network here (its replicas on other members, and nothing else) and
//! the names they answer to are handed in by the agent ([`Networks::set_remote`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{NetError, Networks};

/// The VXLAN device (not `at-…`: the bridge isolation rules match that prefix).
pub const DEV: &str = "atoll-vx";
/// Its VXLAN network identifier: one overlay per island, and one island per host.
pub const VNI: u32 = 4242;
/// VXLAN's own overhead: outer IPv4, UDP, VXLAN and inner Ethernet headers.
pub const OVERHEAD: u32 = 50;

/// This host's part of the island's overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// This member's overlay index (its MAC).
    pub index: u16,
    /// The VXLAN UDP port.
    pub port: u16,
    /// The mesh's device (Nebula's tun), the only one VXLAN is accepted on.
    pub mesh_dev: String,
    /// The mesh's MTU; the overlay's is [`OVERHEAD`] less.
    pub mesh_mtu: u32,
    /// Every other member with an overlay index.
    pub peers: Vec<Peer>,
    /// Other members' slices of this host's stack networks, and the member (mesh address) each
    /// is on.
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
}

/// Another member: its overlay index and its mesh address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub index: u16,
    pub mesh_ip: Ipv4Addr,
}

/// A replica on another member, on one network: the names it answers to and its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    /// Lower-case names without a trailing dot.
    pub names: Vec<String>,
    pub ipv4: Ipv4Addr,
}

/// Remote endpoints by network name.
pub type Remote = BTreeMap<String, Vec<RemoteEndpoint>>;

/// A port of a container here forwarded from this member's mesh address (DNAT, as a published
/// port is): how the gateway on a public member reaches a replica on any member. Only while
/// the container runs; its address is the one on its first network that is not internal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MeshForward {
    /// The container's ID.
    pub owner: String,
    /// The port on the mesh address.
    pub host_port: u16,
    pub protocol: atoll_spec::Protocol,
    pub container_port: u16,
}

/// This member's mesh address and the ports forwarded from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshForwards {
    pub mesh_ip: Option<Ipv4Addr>,
    pub forwards: Vec<MeshForward>,
}

/// The VXLAN MAC of the member with overlay index `index`: locally administered, so that
/// every member knows every other's without asking.
pub fn mac(index: u16) -> [u8; 6] {
    let [hi, lo] = index.to_be_bytes();
    [0x0e, 0xa7, 0x0a, 0x7e, hi, lo]
}

impl Overlay {
    /// What rebuilding the device is needed for (peers and routes change in place).
    fn device(&self) -> (u16, u16, u32) {
        (self.index, self.port, self.mesh_mtu)
    }
}

impl Networks {
    /// Brings the overlay device, its peers and routes in line with `overlay` (none: no
    /// device). Members and networks that come and go change peers and routes in place, so
    /// the others' traffic flows on; the device is made anew only when it is missing or its
    /// own settings change. The nftables table follows.
    pub async fn set_overlay(&self, overlay: Option<Overlay>) -> Result<(), NetError> {
        let mut st = self.state.lock().await;
        if st.overlay == overlay {
            return Ok(());
        }
        let existing = self.nl.index(DEV).await?;
        match (&st.overlay, &overlay, existing) {
            (_, None, _) => self.nl.delete(DEV).await?,
            // The device is there as it should be: peers and routes change in place.
            (Some(old), Some(new), Some(index)) if old.device() == new.device() => {
                for (dst, via) in old.routes.iter().filter(|r| !new.routes.contains(r)) {
                    self.nl.delete_onlink_route(index, *dst, *via).await?;
                }
                for p in old.peers.iter().filter(|p| !new.peers.contains(p)) {
                    self.nl.delete_vxlan_peer(index, p.mesh_ip, mac(p.index)).await?;
                }
                for p in new.peers.iter().filter(|p| !old.peers.contains(p)) {
                    self.nl.add_vxlan_peer(index, p.mesh_ip, mac(p.index)).await?;
                }
                for (dst, via) in new.routes.iter().filter(|r| !old.routes.contains(r)) {
                    self.nl.add_onlink_route(index, *dst, *via).await?;
                }
            }
            (_, Some(o), _) => {
                // Marked gone first: a failure halfway leaves a device that the next call rebuilds.
                st.overlay = None;
                let mtu = o.mesh_mtu.saturating_sub(OVERHEAD);
                let index = self.nl.create_vxlan(DEV, VNI, o.port, mac(o.index), mtu).await?;
                for p in &o.peers {
                    self.nl.add_vxlan_peer(index, p.mesh_ip, mac(p.index)).await?;
                }
                for (dst, via) in &o.routes {
                    self.nl.add_onlink_route(index, *dst, *via).await?;
                }
                crate::link::write_sysctl("net/ipv4/ip_forward", "1")?;
                tracing::info!(peers = o.peers.len(), routes = o.routes.len(), "the island's overlay is up");
            }
        }
        st.overlay = overlay;
        self.sync(&mut st).await
    }

    /// What DNS and the firewall know of the island's replicas, in one change (one `sync`):
    /// `remote`, the replicas of stack networks on other members (DNS answers with them too,
    /// and they may reach this member's replicas on the same network, and nothing else); and
    /// `unnamed`, this member's containers (by ID) DNS leaves out, stack replicas whose health
    /// check has not passed, as Swarm's DNS leaves out a task that is not running yet.
    pub async fn set_replicas(&self, remote: Remote, unnamed: std::collections::BTreeSet<String>) -> Result<(), NetError> {
        let mut st = self.state.lock().await;
        if st.remote == remote && st.unnamed == unnamed {
            return Ok(());
        }
        st.remote = remote;
        st.unnamed = unnamed;
        self.sync(&mut st).await
    }

    /// Replaces the ports forwarded from this member's mesh address (none: no mesh address).
    /// Like the overlay, they come back with the agent's first look after a restart.
    pub async fn set_forwards(&self, mut forwards: MeshForwards) -> Result<(), NetError> {
        forwards.forwards.sort();
        let mut st = self.state.lock().await;
        if st.forwards == forwards {
            return Ok(());
        }
        st.forwards = forwards;
        self.sync(&mut st).await
    }

    /// The forwards as last set.
    pub async fn forwards(&self) -> MeshForwards {
        self.state.lock().await.forwards.clone()
    }

    /// The overlay as last set.
    pub async fn overlay(&self) -> Option<Overlay> {
        self.state.lock().await.overlay.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a throwaway network namespace (root): a peer and its route come and go on the
    /// device in place, as members join and leave.
    #[tokio::test]
    async fn peers_and_routes_come_and_go_on_the_device_in_place() {
        let name = format!("atoll-vxtest-{}", std::process::id());
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip").args(args).output().expect("ip runs (install iproute2)");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        ip(&["netns", "add", &name]);
        struct Gone(String);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let _gone = Gone(name.clone());
        // (With loopback down, the kernel calls any gateway invalid.)
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        let nl = crate::link::Netlink::in_netns(&std::path::Path::new("/run/netns").join(&name)).unwrap();
        let (peer, slice): (Ipv4Addr, Ipv4Net) = ("10.42.0.2".parse().unwrap(), "10.128.0.64/26".parse().unwrap());
        let index = nl.create_vxlan(DEV, VNI, 4790, mac(0), 1250).await.unwrap();
        nl.add_vxlan_peer(index, peer, mac(1)).await.unwrap();
        nl.add_onlink_route(index, slice, peer).await.unwrap();
        let shown = || {
            let routes = ip(&["-n", &name, "route", "show", "dev", DEV]);
            let neigh = ip(&["-n", &name, "neigh", "show", "dev", DEV]);
            let fdb = ip(&["netns", "exec", &name, "bridge", "fdb", "show", "dev", DEV]);
            (routes, neigh, fdb)
        };
        let (routes, neigh, fdb) = shown();
        assert!(routes.contains("10.128.0.64/26 via 10.42.0.2") && routes.contains("onlink"), "{routes}");
        assert!(neigh.contains("10.42.0.2 lladdr 0e:a7:0a:7e:00:01 PERMANENT"), "{neigh}");
        assert!(fdb.contains("0e:a7:0a:7e:00:01 dst 10.42.0.2"), "{fdb}");
        nl.delete_onlink_route(index, slice, peer).await.unwrap();
        nl.delete_vxlan_peer(index, peer, mac(1)).await.unwrap();
        let (routes, neigh, fdb) = shown();
        assert!(!routes.contains("10.128.0.64") && !neigh.contains("10.42.0.2") && !fdb.contains("10.42.0.2"), "{routes}{neigh}{fdb}");
    }

    #[test]
    fn a_members_mac_is_unicast_locally_administered_and_not_a_bridges() {
        assert_eq!(mac(0x0102), [0x0e, 0xa7, 0x0a, 0x7e, 1, 2]);
        assert_eq!(mac(7)[0] & 0b11, 0b10);
        // Bridges' MACs are 02:42:<gateway>.
        assert_ne!(mac(7)[..2], [0x02, 0x42]);
    }
}
