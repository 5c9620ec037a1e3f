//! Faults on the wan: nft rules in the `wan` namespace's bridge (family `bridge`, hook
//! `forward`: every packet between two hosts crosses it), between two hosts' wan addresses
//! (a NAT'd host's is its router's). The whole fault list is rendered again and swapped in
//! one `nft -f` transaction at each change. A counter of UDP packets per (source,
//! destination) wan address pair, taken before the faults, shows which paths traffic took
//! (direct between two routers, or to a relay).

use std::net::Ipv4Addr;

use super::Topology;
use super::topology::nft_json;

const TABLE: &str = "bridge atoll_island";

/// One fault between two wan addresses, in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// Every IPv4 packet (UDP, TCP, ICMP…) is dropped.
    Partition(Ipv4Addr, Ipv4Addr),
    /// UDP is dropped; the rest flows.
    DropUdp(Ipv4Addr, Ipv4Addr),
}

impl Fault {
    fn between(&self) -> (Ipv4Addr, Ipv4Addr) {
        match *self {
            Fault::Partition(a, b) | Fault::DropUdp(a, b) => (a, b),
        }
    }

    fn joins(&self, a: Ipv4Addr, b: Ipv4Addr) -> bool {
        let (x, y) = self.between();
        (x, y) == (a, b) || (x, y) == (b, a)
    }
}

/// The table, made once with the topology: the UDP flow counters and an empty fault chain.
pub(super) fn base_table() -> String {
    format!(
        "table {TABLE} {{
  set udp_flows {{ type ipv4_addr . ipv4_addr; size 65535; flags dynamic; counter; }}
  chain watch {{ type filter hook forward priority -10; policy accept; meta l4proto udp update @udp_flows {{ ip saddr . ip daddr }}; }}
  chain faults {{ type filter hook forward priority 0; policy accept; }}
}}
"
    )
}

/// The transaction that replaces the fault chain's rules with `faults` (the counters stay).
pub(super) fn render(faults: &[Fault]) -> String {
    let mut out = format!("flush chain {TABLE} faults\n");
    for f in faults {
        let (a, b) = f.between();
        let what = match f {
            Fault::Partition(..) => "",
            Fault::DropUdp(..) => " meta l4proto udp",
        };
        for (s, d) in [(a, b), (b, a)] {
            out.push_str(&format!("add rule {TABLE} faults ip saddr {s} ip daddr {d}{what} drop\n"));
        }
    }
    out
}

impl Topology {
    /// Drops every packet between `a` and `b` on the wan (both directions, all of IPv4) until
    /// [`Topology::heal`].
    pub fn partition(&self, a: &str, b: &str) {
        let f = Fault::Partition(self.wan_addr_of(a, b), self.host(b).wan_addr);
        self.set_faults(|fs| fs.push(f));
    }

    /// Partitions `host` from every other host.
    pub fn isolate(&self, host: &str) {
        for other in self.hosts().iter().filter(|h| h.name != host) {
            self.partition(host, &other.name);
        }
    }

    /// Drops UDP between `a` and `b` on the wan (both directions) until [`Topology::heal`];
    /// TCP and ICMP still flow. Between two NAT'd hosts this blocks hole punching between
    /// their routers while everything to the public hosts flows.
    pub fn drop_udp_between(&self, a: &str, b: &str) {
        let f = Fault::DropUdp(self.wan_addr_of(a, b), self.host(b).wan_addr);
        self.set_faults(|fs| fs.push(f));
    }

    /// Removes every fault between `a` and `b`.
    pub fn heal(&self, a: &str, b: &str) {
        let (x, y) = (self.wan_addr_of(a, b), self.host(b).wan_addr);
        self.set_faults(|fs| fs.retain(|f| !f.joins(x, y)));
    }

    /// Removes every fault.
    pub fn heal_all(&self) {
        self.set_faults(Vec::clear);
    }

    /// UDP packets seen on the wan from `a`'s wan address to `b`'s since the topology was
    /// made (counted before the faults drop them).
    pub fn udp_packets(&self, a: &str, b: &str) -> u64 {
        let (s, d) = (self.host(a).wan_addr.to_string(), self.host(b).wan_addr.to_string());
        let v = nft_json(&self.wan().name, &["set", "bridge", "atoll_island", "udp_flows"]);
        let elems = v["nftables"].as_array().into_iter().flatten().filter_map(|o| o["set"]["elem"].as_array()).flatten();
        elems
            .filter_map(|e| {
                let e = &e["elem"];
                let key = e["val"]["concat"].as_array()?;
                (key.first()?.as_str()? == s && key.get(1)?.as_str()? == d).then(|| e["counter"]["packets"].as_u64())?
            })
            .sum()
    }

    /// `a`'s wan address, refusing a fault between a host and itself.
    fn wan_addr_of(&self, a: &str, b: &str) -> Ipv4Addr {
        assert_ne!(a, b, "a fault between {a:?} and itself");
        self.host(a).wan_addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_fault_both_ways() {
        let (a, b, c) = ("203.0.113.10".parse().unwrap(), "203.0.113.100".parse().unwrap(), "203.0.113.101".parse().unwrap());
        expect_test::expect![[r#"
            flush chain bridge atoll_island faults
            add rule bridge atoll_island faults ip saddr 203.0.113.10 ip daddr 203.0.113.100 drop
            add rule bridge atoll_island faults ip saddr 203.0.113.100 ip daddr 203.0.113.10 drop
            add rule bridge atoll_island faults ip saddr 203.0.113.100 ip daddr 203.0.113.101 meta l4proto udp drop
            add rule bridge atoll_island faults ip saddr 203.0.113.101 ip daddr 203.0.113.100 meta l4proto udp drop
        "#]]
        .assert_eq(&render(&[Fault::Partition(a, b), Fault::DropUdp(b, c)]));
        expect_test::expect![[r#"
            flush chain bridge atoll_island faults
        "#]]
        .assert_eq(&render(&[]));
    }

    #[test]
    fn a_fault_joins_its_two_addresses_in_either_order() {
        let (a, b, c) = ("203.0.113.10".parse().unwrap(), "203.0.113.11".parse().unwrap(), "203.0.113.12".parse().unwrap());
        assert!(Fault::Partition(a, b).joins(b, a));
        assert!(Fault::DropUdp(a, b).joins(a, b));
        assert!(!Fault::Partition(a, b).joins(a, c));
    }
}
