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

/// The special-purpose ranges a mesh prefix may not touch, and what they are.
pub const SPECIAL: [(&str, &str); 5] = [
    ("0.0.0.0/8", "\"this network\" (0.0.0.0/8)"),
    ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
    ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
    ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
    ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
];

/// What a mesh prefix would collide with: a special range, the container pool, a container
/// network, or a prefix this host routes or has an address in (any routing table). The first
/// collision, as (what, its prefix).
pub fn mesh_conflict(mesh: &Ipv4Net, pool: &Ipv4Net, networks: &[(String, Ipv4Net)], host: &[Ipv4Net]) -> Option<(String, Ipv4Net)> {
    for (net, what) in SPECIAL {
        let net: Ipv4Net = net.parse().expect("a valid prefix");
        if overlaps(mesh, &net) {
            return Some((format!("the {what} range"), net));
        }
    }
    if overlaps(mesh, pool) {
        return Some(("the container pool".into(), *pool));
    }
    if let Some((name, n)) = networks.iter().find(|(_, n)| overlaps(mesh, n)) {
        return Some((format!("the container network {name}"), *n));
    }
    host.iter().find(|n| overlaps(mesh, n)).map(|n| ("a network this host routes or has an address in".into(), *n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_mesh_prefix_may_not_touch_special_ranges_container_networks_or_any_route_or_address() {
        let p = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let pool = p("10.89.0.0/16");
        for special in ["127.0.0.0/8", "224.0.0.0/16", "169.254.0.0/16", "0.0.0.0/8", "240.0.0.0/8", "255.255.255.0/24"] {
            assert!(mesh_conflict(&p(special), &pool, &[], &[]).unwrap().0.contains("range"), "{special}");
        }
        assert_eq!(mesh_conflict(&p("10.0.0.0/8"), &pool, &[], &[]).unwrap().0, "the container pool");
        let nets = [("web".to_owned(), p("172.31.0.0/24"))];
        assert_eq!(mesh_conflict(&p("172.31.0.0/16"), &pool, &nets, &[]).unwrap().0, "the container network web");
        let host = [p("198.18.5.5/32")];
        assert_eq!(mesh_conflict(&p("198.18.0.0/16"), &pool, &[], &host).unwrap().1, p("198.18.5.5/32"));
        assert_eq!(mesh_conflict(&p("10.42.0.0/16"), &pool, &nets, &host), None);
    }

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
