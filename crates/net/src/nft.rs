//! Atoll's nftables table, `inet atoll`: outbound NAT, published ports, isolation between
//! networks and of `--internal` ones. [`render`] is pure (snapshot-tested); [`apply`] replaces
//! the whole table in one `nft -f` transaction, so the kernel never sees half a ruleset and
//! nothing outside the table is touched.
//!
//! Published ports are DNAT in `prerouting` (other hosts, containers) and `output` (the host
//! itself, including 127.0.0.1 with `route_localnet` on the bridges). From outside, containers
//! are reachable on published ports only (docker 28's rule), unless their network's gateway
//! mode is `nat-unprotected`. Forwarded packets never
//! pass an `input` hook: a host firewall that filters only `input` does not see them, which
//! [`input_drop_chains`] detects so the daemon can say so. A firewall that filters `forward`
//! still applies, since every base chain on a hook must accept a packet.

use std::fmt::Write;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use atoll_spec::Protocol;
use ipnet::{Ipv4Net, Ipv6Net};

pub const TABLE: &str = "atoll";
/// Every Atoll bridge's name starts with this (the isolation rule matches it as a wildcard).
pub const BRIDGE_PREFIX: &str = "at-";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeRules {
    pub bridge: String,
    /// The bridge's address, where Atoll's resolver listens.
    pub gateway4: Ipv4Addr,
    pub subnet4: Ipv4Net,
    pub subnet6: Option<Ipv6Net>,
    pub internal: bool,
    /// Docker's `nat-unprotected` gateway mode: from outside, every port of its containers is
    /// reachable (by whoever routes the subnet to this host), not only published ones.
    pub unprotected4: bool,
    pub unprotected6: bool,
    /// The same network's replicas on other members (through the overlay): they and only
    /// they reach this bridge from there, and it reaches them.
    pub remote: Vec<Ipv4Addr>,
}

/// The island's overlay (see `overlay`): its device, and the mesh device and UDP port its
/// outer packets use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayRules {
    pub dev: String,
    pub mesh_dev: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortRule {
    /// None: every local address of both families.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub protocol: Protocol,
    pub target4: Ipv4Addr,
    pub target6: Option<Ipv6Addr>,
    pub container_port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// The table's comment: the mark of the daemon that owns it (see `claim`).
    pub comment: Option<String>,
    pub bridges: Vec<BridgeRules>,
    pub ports: Vec<PortRule>,
    pub overlay: Option<OverlayRules>,
}

impl Ruleset {
    /// Nothing to write: no table at all.
    pub fn is_empty(&self) -> bool {
        self.bridges.is_empty() && self.overlay.is_none()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft (install the nftables package)")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
}

/// The `nft -f` script that replaces the table with `rules` (or deletes it when empty).
pub fn render(rules: &Ruleset) -> String {
    let mut s = format!("table inet {TABLE}\ndelete table inet {TABLE}\n");
    if rules.is_empty() {
        return s;
    }
    let _ = writeln!(s, "table inet {TABLE} {{");
    if let Some(c) = &rules.comment {
        let _ = writeln!(s, "\tcomment \"{c}\"");
    }
    s.push_str("\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n");
    // Containers' DNS queries to their gateway stay with Atoll's resolver, even when host
    // port 53 is published (a pihole, say).
    for b in &rules.bridges {
        let _ = writeln!(s, "\t\tiifname \"{}\" ip daddr {} meta l4proto {{ tcp, udp }} th dport 53 return", b.bridge, b.gateway4);
    }
    s.push_str("\t\tfib daddr type local jump published\n\t}\n");
    s.push_str("\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tfib daddr type local jump published\n\t}\n");
    s.push_str("\tchain published {\n");
    for p in &rules.ports {
        let (proto, hp, cp) = (p.protocol, p.host_port, p.container_port);
        match p.host_ip {
            None => {
                let _ = writeln!(s, "\t\tmeta nfproto ipv4 {proto} dport {hp} dnat ip to {}:{cp}", p.target4);
                if let Some(t6) = p.target6 {
                    let _ = writeln!(s, "\t\tmeta nfproto ipv6 ip6 daddr != ::1 {proto} dport {hp} dnat ip6 to [{t6}]:{cp}");
                }
            }
            Some(IpAddr::V4(ip)) if ip.is_unspecified() => {
                let _ = writeln!(s, "\t\tmeta nfproto ipv4 {proto} dport {hp} dnat ip to {}:{cp}", p.target4);
            }
            Some(IpAddr::V4(ip)) => {
                let _ = writeln!(s, "\t\tip daddr {ip} {proto} dport {hp} dnat ip to {}:{cp}", p.target4);
            }
            // IPv6 loopback cannot be DNAT-ed to another address (there is no route_localnet
            // for IPv6): the helper's socket relays it (see `proxy`).
            Some(IpAddr::V6(ip)) if ip.is_loopback() => {}
            Some(IpAddr::V6(ip)) => {
                if let Some(t6) = p.target6 {
                    let m = if ip.is_unspecified() { "ip6 daddr != ::1".to_owned() } else { format!("ip6 daddr {ip}") };
                    let _ = writeln!(s, "\t\t{m} {proto} dport {hp} dnat ip6 to [{t6}]:{cp}");
                }
            }
        }
    }
    s.push_str("\t}\n");
    s.push_str("\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n");
    if let Some(o) = &rules.overlay {
        // Replicas reach each other across members by their own addresses.
        let _ = writeln!(s, "\t\toifname \"{}\" accept", o.dev);
    }
    for b in &rules.bridges {
        let br = &b.bridge;
        // The host reaching a published port on 127.0.0.1, and containers reaching one on
        // their own network (hairpin): answer through the bridge, not around it.
        let _ = writeln!(s, "\t\toifname \"{br}\" ip saddr 127.0.0.0/8 masquerade");
        let _ = writeln!(s, "\t\tiifname \"{br}\" oifname \"{br}\" ct status dnat masquerade");
        if !b.internal {
            let _ = writeln!(s, "\t\tip saddr {} oifname != \"{br}\" masquerade", b.subnet4);
            if let Some(v6) = b.subnet6 {
                let _ = writeln!(s, "\t\tip6 saddr {v6} oifname != \"{br}\" masquerade");
            }
        }
    }
    s.push_str("\t}\n");
    s.push_str("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n");
    // A stack network's replicas on other members, both ways, before any isolation.
    if let Some(o) = &rules.overlay {
        for b in rules.bridges.iter().filter(|b| !b.remote.is_empty()) {
            let set = b.remote.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            let _ = writeln!(s, "\t\tiifname \"{}\" oifname \"{}\" ip saddr {{ {set} }} accept", o.dev, b.bridge);
            let _ = writeln!(s, "\t\tiifname \"{}\" oifname \"{}\" ip daddr {{ {set} }} accept", b.bridge, o.dev);
        }
        // Nothing else comes in through the overlay, or goes out into it (another stack's
        // container sending with a replica's address).
        let _ = writeln!(s, "\t\tiifname \"{}\" ct state != established,related drop", o.dev);
        let _ = writeln!(s, "\t\toifname \"{}\" ct state != established,related drop", o.dev);
    }
    for b in rules.bridges.iter().filter(|b| b.internal) {
        let _ = writeln!(s, "\t\tiifname \"{0}\" oifname != \"{0}\" drop", b.bridge);
        let _ = writeln!(s, "\t\toifname \"{0}\" iifname != \"{0}\" drop", b.bridge);
    }
    s.push_str("\t\tct state established,related accept\n");
    s.push_str("\t\tct status dnat accept\n");
    let same: Vec<String> = rules.bridges.iter().map(|b| format!("\"{0}\" . \"{0}\" : accept", b.bridge)).collect();
    if !same.is_empty() {
        let _ = writeln!(s, "\t\tiifname . oifname vmap {{ {} }}", same.join(", "));
    }
    let _ = writeln!(s, "\t\tiifname \"{BRIDGE_PREFIX}*\" oifname \"{BRIDGE_PREFIX}*\" drop");
    // From outside (another host routing a container subnet through this one, another
    // engine's bridge), only published ports: through DNAT (accepted above) or directly on
    // their container's address, as docker does.
    let mut direct = std::collections::BTreeSet::new();
    for p in &rules.ports {
        direct.insert(format!("ip daddr {} {} dport {} accept", p.target4, p.protocol, p.container_port));
        if let Some(t6) = p.target6 {
            direct.insert(format!("ip6 daddr {t6} {} dport {} accept", p.protocol, p.container_port));
        }
    }
    for d in direct {
        let _ = writeln!(s, "\t\t{d}");
    }
    for b in rules.bridges.iter().filter(|b| !b.internal) {
        if !b.unprotected4 {
            let _ = writeln!(s, "\t\toifname \"{}\" meta nfproto ipv4 drop", b.bridge);
        }
        if b.subnet6.is_some() && !b.unprotected6 {
            let _ = writeln!(s, "\t\toifname \"{}\" meta nfproto ipv6 drop", b.bridge);
        }
    }
    s.push_str("\t}\n");
    if let Some(o) = &rules.overlay {
        // VXLAN only from the mesh: on any other interface it would let anyone inject packets.
        s.push_str("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n");
        let _ = writeln!(s, "\t\tudp dport {} iifname != \"{}\" drop", o.port, o.mesh_dev);
        // Nor does the overlay reach the host's own services (Nebula's firewall guards the mesh).
        let _ = writeln!(s, "\t\tiifname \"{}\" ct state != established,related drop", o.dev);
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(input) = stdin {
        child.stdin.take().expect("piped").write_all(input.as_bytes()).map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if !out.status.success() {
        return Err(NftError::Refused(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Who wrote this namespace's `inet atoll` table (its comment; JSON listings leave it out).
pub fn table_owner() -> Result<crate::claim::TableOwner, NftError> {
    use crate::claim::{Mark, TableOwner};
    let text = match nft(&["-t", "list", "table", "inet", TABLE], None) {
        Ok(t) => t,
        Err(NftError::Refused(e)) if e.contains("No such file or directory") => return Ok(TableOwner::Absent),
        Err(e) => return Err(e),
    };
    // The comment, if any, is the table's first line inside its braces.
    let comment = text.lines().nth(1).and_then(|l| l.trim().strip_prefix("comment \"")).and_then(|c| c.strip_suffix('"'));
    Ok(comment.and_then(Mark::parse).map_or(TableOwner::Unmarked, TableOwner::Marked))
}

/// Replaces Atoll's table with `rules`, atomically.
pub fn apply(rules: &Ruleset) -> Result<(), NftError> {
    nft(&["-f", "-"], Some(&render(rules))).map(|_| ())
}

/// The whole ruleset as nft's JSON (for `firewall`).
pub fn list_ruleset() -> Result<serde_json::Value, NftError> {
    let out = nft(&["-j", "list", "ruleset"], None)?;
    serde_json::from_str(&out).map_err(|e| NftError::Refused(format!("unreadable JSON from nft: {e}")))
}

/// `nft monitor`: one line per change any program makes to the ruleset, each change closed
/// by a `# new generation …` line. Killed when the child is dropped.
pub fn monitor() -> Result<tokio::process::Child, NftError> {
    tokio::process::Command::new("nft")
        .arg("monitor")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(NftError::Spawn)
}

/// Base chains of other tables that hook `input` with a `drop` policy ("family table chain"):
/// a host firewall whose input policy published ports do not pass through.
pub fn input_drop_chains() -> Vec<String> {
    let Ok(out) = nft(&["-j", "list", "chains"], None) else { return Vec::new() };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) else { return Vec::new() };
    let items = v.get("nftables").and_then(|n| n.as_array()).cloned().unwrap_or_default();
    items
        .iter()
        .filter_map(|i| i.get("chain"))
        .filter(|c| c.get("hook").and_then(|h| h.as_str()) == Some("input") && c.get("policy").and_then(|p| p.as_str()) == Some("drop"))
        .filter(|c| c.get("table").and_then(|t| t.as_str()) != Some(TABLE))
        .map(|c| {
            let f = |k: &str| c.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_owned();
            format!("{} {} {}", f("family"), f("table"), f("name"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_ruleset_deletes_the_table() {
        expect_test::expect![[r#"
            table inet atoll
            delete table inet atoll
        "#]]
        .assert_eq(&render(&Ruleset::default()));
    }

    #[test]
    fn ruleset_snapshot() {
        let rules = Ruleset {
            comment: Some("atoll lock=fe:00:1234 data-dir=/var/lib/atoll".into()),
            bridges: vec![
                BridgeRules {
                    bridge: "at-0123456789ab".into(),
                    gateway4: "10.89.0.1".parse().unwrap(),
                    subnet4: "10.89.0.0/24".parse().unwrap(),
                    subnet6: Some("fd12:3456:789a::/64".parse().unwrap()),
                    internal: false,
                    unprotected4: false,
                    unprotected6: false,
                    remote: vec![],
                },
                BridgeRules {
                    bridge: "at-internal0001".into(),
                    gateway4: "10.89.1.1".parse().unwrap(),
                    subnet4: "10.89.1.0/24".parse().unwrap(),
                    subnet6: None,
                    internal: true,
                    unprotected4: false,
                    unprotected6: false,
                    remote: vec![],
                },
                BridgeRules {
                    bridge: "at-open00000001".into(),
                    gateway4: "10.89.2.1".parse().unwrap(),
                    subnet4: "10.89.2.0/24".parse().unwrap(),
                    subnet6: Some("fd12:3456:789a:2::/64".parse().unwrap()),
                    internal: false,
                    unprotected4: true,
                    unprotected6: false,
                    remote: vec![],
                },
            ],
            ports: vec![
                PortRule {
                    host_ip: None,
                    host_port: 8080,
                    protocol: Protocol::Tcp,
                    target4: "10.89.0.2".parse().unwrap(),
                    target6: Some("fd12:3456:789a::2".parse().unwrap()),
                    container_port: 80,
                },
                // IPv6 loopback: no rule (the helper relays it).
                PortRule {
                    host_ip: Some("::1".parse().unwrap()),
                    host_port: 8081,
                    protocol: Protocol::Tcp,
                    target4: "10.89.0.2".parse().unwrap(),
                    target6: Some("fd12:3456:789a::2".parse().unwrap()),
                    container_port: 80,
                },
                PortRule {
                    host_ip: Some("127.0.0.1".parse().unwrap()),
                    host_port: 5353,
                    protocol: Protocol::Udp,
                    target4: "10.89.0.3".parse().unwrap(),
                    target6: None,
                    container_port: 53,
                },
            ],
            overlay: None,
        };
        expect_test::expect![[r#"
            table inet atoll
            delete table inet atoll
            table inet atoll {
            	comment "atoll lock=fe:00:1234 data-dir=/var/lib/atoll"
            	chain prerouting {
            		type nat hook prerouting priority dstnat; policy accept;
            		iifname "at-0123456789ab" ip daddr 10.89.0.1 meta l4proto { tcp, udp } th dport 53 return
            		iifname "at-internal0001" ip daddr 10.89.1.1 meta l4proto { tcp, udp } th dport 53 return
            		iifname "at-open00000001" ip daddr 10.89.2.1 meta l4proto { tcp, udp } th dport 53 return
            		fib daddr type local jump published
            	}
            	chain output {
            		type nat hook output priority -100; policy accept;
            		fib daddr type local jump published
            	}
            	chain published {
            		meta nfproto ipv4 tcp dport 8080 dnat ip to 10.89.0.2:80
            		meta nfproto ipv6 ip6 daddr != ::1 tcp dport 8080 dnat ip6 to [fd12:3456:789a::2]:80
            		ip daddr 127.0.0.1 udp dport 5353 dnat ip to 10.89.0.3:53
            	}
            	chain postrouting {
            		type nat hook postrouting priority srcnat; policy accept;
            		oifname "at-0123456789ab" ip saddr 127.0.0.0/8 masquerade
            		iifname "at-0123456789ab" oifname "at-0123456789ab" ct status dnat masquerade
            		ip saddr 10.89.0.0/24 oifname != "at-0123456789ab" masquerade
            		ip6 saddr fd12:3456:789a::/64 oifname != "at-0123456789ab" masquerade
            		oifname "at-internal0001" ip saddr 127.0.0.0/8 masquerade
            		iifname "at-internal0001" oifname "at-internal0001" ct status dnat masquerade
            		oifname "at-open00000001" ip saddr 127.0.0.0/8 masquerade
            		iifname "at-open00000001" oifname "at-open00000001" ct status dnat masquerade
            		ip saddr 10.89.2.0/24 oifname != "at-open00000001" masquerade
            		ip6 saddr fd12:3456:789a:2::/64 oifname != "at-open00000001" masquerade
            	}
            	chain forward {
            		type filter hook forward priority filter; policy accept;
            		iifname "at-internal0001" oifname != "at-internal0001" drop
            		oifname "at-internal0001" iifname != "at-internal0001" drop
            		ct state established,related accept
            		ct status dnat accept
            		iifname . oifname vmap { "at-0123456789ab" . "at-0123456789ab" : accept, "at-internal0001" . "at-internal0001" : accept, "at-open00000001" . "at-open00000001" : accept }
            		iifname "at-*" oifname "at-*" drop
            		ip daddr 10.89.0.2 tcp dport 80 accept
            		ip daddr 10.89.0.3 udp dport 53 accept
            		ip6 daddr fd12:3456:789a::2 tcp dport 80 accept
            		oifname "at-0123456789ab" meta nfproto ipv4 drop
            		oifname "at-0123456789ab" meta nfproto ipv6 drop
            		oifname "at-open00000001" meta nfproto ipv6 drop
            	}
            }
        "#]]
        .assert_eq(&render(&rules));
    }

    /// A stack network (internal, to show that its isolation holds) with replicas on other
    /// members: they reach it through the overlay, nothing else does, and VXLAN is refused
    /// off the mesh.
    #[test]
    fn overlay_ruleset_snapshot() {
        let rules = Ruleset {
            comment: None,
            bridges: vec![BridgeRules {
                bridge: "at-stack000001".into(),
                gateway4: "10.128.1.1".parse().unwrap(),
                subnet4: "10.128.1.0/24".parse().unwrap(),
                subnet6: None,
                internal: true,
                unprotected4: false,
                unprotected6: false,
                remote: vec!["10.128.65.2".parse().unwrap(), "10.128.129.7".parse().unwrap()],
            }],
            ports: vec![],
            overlay: Some(OverlayRules { dev: "atoll-vx".into(), mesh_dev: "atoll0".into(), port: 4790 }),
        };
        expect_test::expect![[r#"
            table inet atoll
            delete table inet atoll
            table inet atoll {
            	chain prerouting {
            		type nat hook prerouting priority dstnat; policy accept;
            		iifname "at-stack000001" ip daddr 10.128.1.1 meta l4proto { tcp, udp } th dport 53 return
            		fib daddr type local jump published
            	}
            	chain output {
            		type nat hook output priority -100; policy accept;
            		fib daddr type local jump published
            	}
            	chain published {
            	}
            	chain postrouting {
            		type nat hook postrouting priority srcnat; policy accept;
            		oifname "atoll-vx" accept
            		oifname "at-stack000001" ip saddr 127.0.0.0/8 masquerade
            		iifname "at-stack000001" oifname "at-stack000001" ct status dnat masquerade
            	}
            	chain forward {
            		type filter hook forward priority filter; policy accept;
            		iifname "atoll-vx" oifname "at-stack000001" ip saddr { 10.128.65.2, 10.128.129.7 } accept
            		iifname "at-stack000001" oifname "atoll-vx" ip daddr { 10.128.65.2, 10.128.129.7 } accept
            		iifname "atoll-vx" ct state != established,related drop
            		oifname "atoll-vx" ct state != established,related drop
            		iifname "at-stack000001" oifname != "at-stack000001" drop
            		oifname "at-stack000001" iifname != "at-stack000001" drop
            		ct state established,related accept
            		ct status dnat accept
            		iifname . oifname vmap { "at-stack000001" . "at-stack000001" : accept }
            		iifname "at-*" oifname "at-*" drop
            	}
            	chain input {
            		type filter hook input priority filter; policy accept;
            		udp dport 4790 iifname != "atoll0" drop
            		iifname "atoll-vx" ct state != established,related drop
            	}
            }
        "#]]
        .assert_eq(&render(&rules));
    }
}
