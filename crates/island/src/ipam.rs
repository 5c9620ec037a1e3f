//! Mesh addresses: each member gets one IPv4 address of the island's mesh prefix, the founder
//! the first. Pure.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The lowest usable address of `net` not in `taken` (the network and broadcast addresses are
/// never handed out).
pub fn next_free(net: Ipv4Net, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    net.hosts().find(|a| !taken.contains(a))
}

/// Whether `a` and `b` share any address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A mesh prefix must hold at least a few hosts and not be a single address.
pub fn usable_mesh_prefix(net: &Ipv4Net) -> bool {
    (8..=29).contains(&net.prefix_len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_free_skips_network_and_taken() {
        let net: Ipv4Net = "10.42.0.0/29".parse().unwrap();
        let mut taken = BTreeSet::new();
        assert_eq!(next_free(net, &taken), Some("10.42.0.1".parse().unwrap()));
        taken.extend(["10.42.0.1", "10.42.0.2"].map(|s| s.parse::<Ipv4Addr>().unwrap()));
        assert_eq!(next_free(net, &taken), Some("10.42.0.3".parse().unwrap()));
        taken.extend((3..=6).map(|i| Ipv4Addr::new(10, 42, 0, i)));
        assert_eq!(next_free(net, &taken), None, "the broadcast address is not handed out");
        assert!(overlaps(&"10.0.0.0/8".parse().unwrap(), &"10.89.0.0/16".parse().unwrap()));
        assert!(!overlaps(&"10.42.0.0/16".parse().unwrap(), &"10.89.0.0/16".parse().unwrap()));
    }

    proptest! {
        #[test]
        fn handed_out_addresses_are_inside_usable_and_distinct(prefix in 24u8..=29, n in 0usize..300) {
            let net = Ipv4Net::new(Ipv4Addr::new(10, 42, 0, 0), prefix).unwrap();
            let mut taken = BTreeSet::new();
            for _ in 0..n {
                match next_free(net, &taken) {
                    Some(a) => {
                        prop_assert!(net.contains(&a) && a != net.network() && a != net.broadcast());
                        prop_assert!(taken.insert(a));
                    }
                    None => prop_assert_eq!(taken.len() as u32, (1u32 << (32 - prefix)) - 2),
                }
            }
        }
    }
}
