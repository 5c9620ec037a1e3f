//! Address management: subnets for new networks, addresses for containers, MACs. Pure
//! functions over what is already taken; the caller keeps the taken sets (they are rebuilt
//! from the persisted network and container records at start, so nothing leaks).
//!
//! Subnets come from a per-host pool (`10.89.0.0/16` in /24s, and /64s of a ULA /48 drawn at
//! random once per host): when hosts join a mesh each gets its own pool, and routes over the
//! tunnel point at it.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// The first free `prefix`-sized subnet of `pool` that overlaps nothing in `taken`.
pub fn next_subnet4(pool: Ipv4Net, prefix: u8, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    pool.subnets(prefix).ok()?.find(|s| !taken.iter().any(|t| overlaps4(s, t)))
}

/// The first free /64 of `pool`.
pub fn next_subnet6(pool: Ipv6Net, taken: &[Ipv6Net]) -> Option<Ipv6Net> {
    pool.subnets(64).ok()?.take(1 << 16).find(|s| !taken.iter().any(|t| overlaps6(s, t)))
}

pub fn overlaps4(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

pub fn overlaps6(a: &Ipv6Net, b: &Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The bridge's own address: the subnet's first host.
pub fn gateway4(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

pub fn gateway6(net: Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()) + 1)
}

/// Whether a container may have `ip` in `net`: inside it, and not the network, broadcast or
/// gateway address.
pub fn usable4(net: Ipv4Net, ip: Ipv4Addr) -> bool {
    net.contains(&ip) && ip != net.network() && ip != net.broadcast() && ip != gateway4(net)
}

pub fn usable6(net: Ipv6Net, ip: Ipv6Addr) -> bool {
    net.contains(&ip) && ip != net.network() && ip != gateway6(net)
}

/// The lowest usable address of `net` not in `used`.
pub fn next_addr4(net: Ipv4Net, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    net.hosts().find(|ip| usable4(net, *ip) && !used.contains(ip))
}

/// The lowest usable address of `net` not in `used` (searching the first 2^20).
pub fn next_addr6(net: Ipv6Net, used: &BTreeSet<Ipv6Addr>) -> Option<Ipv6Addr> {
    let base = u128::from(net.network());
    (2..(1u128 << 20)).map(|i| Ipv6Addr::from(base + i)).find(|ip| usable6(net, *ip) && !used.contains(ip))
}

/// A locally administered unicast MAC derived from the IPv4 address (unique per network, and
/// stable across restarts, so neighbours' caches stay right).
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// A ULA /48 (RFC 4193) from 40 random bits.
pub fn ula_prefix(global_id: [u8; 5]) -> Ipv6Net {
    let mut b = [0u8; 16];
    b[0] = 0xfd;
    b[1..6].copy_from_slice(&global_id);
    Ipv6Net::new(Ipv6Addr::from(b), 48).expect("48 is a valid prefix")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n4(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_skip_taken_and_overlapping() {
        let pool = n4("10.89.0.0/16");
        assert_eq!(next_subnet4(pool, 24, &[]), Some(n4("10.89.0.0/24")));
        assert_eq!(next_subnet4(pool, 24, &[n4("10.89.0.0/24"), n4("10.89.1.128/25")]), Some(n4("10.89.2.0/24")));
        // A host route covering the start of the pool.
        assert_eq!(next_subnet4(pool, 24, &[n4("10.89.0.0/23")]), Some(n4("10.89.2.0/24")));
        assert_eq!(next_subnet4(n4("10.0.0.0/24"), 24, &[n4("10.0.0.0/24")]), None);
    }

    #[test]
    fn addresses() {
        let net = n4("10.89.0.0/24");
        assert_eq!(gateway4(net), Ipv4Addr::new(10, 89, 0, 1));
        let mut used = BTreeSet::new();
        assert_eq!(next_addr4(net, &used), Some(Ipv4Addr::new(10, 89, 0, 2)));
        used.insert(Ipv4Addr::new(10, 89, 0, 2));
        assert_eq!(next_addr4(net, &used), Some(Ipv4Addr::new(10, 89, 0, 3)));
        assert!(!usable4(net, Ipv4Addr::new(10, 89, 0, 255)));
        let small = n4("10.1.0.0/30");
        let used: BTreeSet<_> = [Ipv4Addr::new(10, 1, 0, 2)].into();
        assert_eq!(next_addr4(small, &used), None);
        let v6: Ipv6Net = "fd12:3456:789a:1::/64".parse().unwrap();
        assert_eq!(gateway6(v6).to_string(), "fd12:3456:789a:1::1");
        assert_eq!(next_addr6(v6, &BTreeSet::new()).unwrap().to_string(), "fd12:3456:789a:1::2");
        assert_eq!(ula_prefix([0x12, 0x34, 0x56, 0x78, 0x9a]).to_string(), "fd12:3456:789a::/48");
    }

    proptest! {
        /// Allocating until full hands out distinct, usable addresses, then stops.
        #[test]
        fn allocation_is_distinct_and_usable(a in any::<u32>(), prefix in 24u8..=30, pre in proptest::collection::btree_set(0u32..256, 0..20)) {
            let net = Ipv4Net::new(Ipv4Addr::from(a), prefix).unwrap().trunc();
            let mut used: BTreeSet<Ipv4Addr> = pre.iter().map(|o| Ipv4Addr::from(u32::from(net.network()) + o)).filter(|ip| net.contains(ip)).collect();
            let before = used.len();
            let mut got = 0;
            while let Some(ip) = next_addr4(net, &used) {
                prop_assert!(usable4(net, ip));
                prop_assert!(used.insert(ip));
                got += 1;
            }
            let usable = net.hosts().count() - 1;
            let pre_usable = pre.iter().map(|o| Ipv4Addr::from(u32::from(net.network()) + o)).filter(|ip| usable4(net, *ip)).count();
            prop_assert_eq!(got, usable - pre_usable);
            prop_assert!(used.len() >= before);
        }

        /// A new subnet never overlaps a taken one.
        #[test]
        fn subnets_never_overlap(taken in proptest::collection::vec((0u8..=255, 16u8..=28), 0..12)) {
            let taken: Vec<Ipv4Net> = taken.iter().map(|(o, p)| Ipv4Net::new(Ipv4Addr::new(10, 89, *o, 0), *p).unwrap().trunc()).collect();
            if let Some(s) = next_subnet4(n4("10.89.0.0/16"), 24, &taken) {
                prop_assert!(taken.iter().all(|t| !overlaps4(&s, t)));
                prop_assert!(n4("10.89.0.0/16").contains(&s));
            }
        }
    }
}
