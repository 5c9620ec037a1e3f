//! Networks as the user asks for them: `--network`, `--network-alias`, `--ip`, `-p`, `--expose`,
//! and `atoll network create`. Parsing and validation only; addresses are allocated by `net`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::SpecError;

/// The network every container joins unless told otherwise (docker's name for it).
pub const DEFAULT_NETWORK: &str = "bridge";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

impl Protocol {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Self::Tcp),
            "udp" => Some(Self::Udp),
            _ => None,
        }
    }
}

/// One `-p`: a host port (0: pick a free one; with `host_port_end`, the first free one of a
/// range) forwarded to a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PortSpec {
    /// The host address to listen on; all of the host's addresses if absent.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub host_ip: Option<IpAddr>,
    #[serde(default)]
    #[schema(maximum = 65535)]
    pub host_port: u16,
    /// The last port of a host range (`-p 8000-8010:80`): the first free port from
    /// `host_port` to this one is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub host_port_end: Option<u16>,
    #[schema(minimum = 1, maximum = 65535)]
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

impl PortSpec {
    /// A container port, and a host range that is a range (1 <= start <= end).
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad_range = self.host_port_end.is_some_and(|end| self.host_port == 0 || end < self.host_port);
        if self.container_port == 0 || bad_range {
            return Err(SpecError::Publish(self.to_string()));
        }
        Ok(())
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        match (self.host_port, self.host_port_end) {
            (0, _) => {}
            (a, Some(b)) if b != a => write!(f, "{a}-{b}:")?,
            (a, _) => write!(f, "{a}:")?,
        }
        write!(f, "{}/{}", self.container_port, self.protocol)
    }
}

/// A port range `A` or `A-B` (1..=65535, A <= B).
fn parse_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
    (a != 0 && a <= b).then_some((a, b))
}

/// Parses `-p [IP:][HOST:]CONTAINER[/tcp|udp]`, with docker's rules for `A-B` ranges: ranges of
/// equal length map port to port; a host range for one container port is where a free host
/// port is picked; any other pair of lengths is refused. IPv6 host addresses go in brackets:
/// `[::1]:8080:80`.
pub fn parse_publish(s: &str) -> Result<Vec<PortSpec>, SpecError> {
    let err = || SpecError::Publish(s.to_owned());
    let (rest, protocol) = match s.rsplit_once('/') {
        Some((r, p)) => (r, Protocol::parse(p).ok_or_else(err)?),
        None => (s, Protocol::Tcp),
    };
    let (host_ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, r) = r.split_once("]:").ok_or_else(err)?;
        (Some(IpAddr::V6(ip.parse::<Ipv6Addr>().map_err(|_| err())?)), r)
    } else {
        match rest.matches(':').count() {
            2 => {
                let (ip, r) = rest.split_once(':').ok_or_else(err)?;
                let ip = if ip.is_empty() { None } else { Some(IpAddr::V4(ip.parse::<Ipv4Addr>().map_err(|_| err())?)) };
                (ip, r)
            }
            0 | 1 => (None, rest),
            _ => return Err(err()),
        }
    };
    let (host_text, container_text) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    let host = if host_text.is_empty() { None } else { Some(parse_range(host_text).ok_or_else(err)?) };
    let container = parse_range(container_text).ok_or_else(err)?;
    let n = container.1 - container.0;
    let spec = |i: u16, host_port: u16, host_port_end: Option<u16>| PortSpec {
        host_ip,
        host_port,
        host_port_end,
        container_port: container.0 + i,
        protocol,
    };
    match host {
        None => Ok((0..=n).map(|i| spec(i, 0, None)).collect()),
        Some(h) if h.1 - h.0 == n => Ok((0..=n).map(|i| spec(i, h.0 + i, None)).collect()),
        Some(h) if n == 0 => Ok(vec![spec(0, h.0, Some(h.1))]),
        Some(_) => Err(SpecError::PublishRanges { spec: s.to_owned(), container: container_text.to_owned(), host: host_text.to_owned() }),
    }
}

/// A port the container listens on (`--expose`, or the image's `ExposedPorts`): published
/// on a free host port by `-P`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExposedPort {
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

/// Parses `--expose PORT[-PORT][/PROTO]`, also the image config's `"80/tcp"` keys.
pub fn parse_expose(s: &str) -> Result<Vec<ExposedPort>, SpecError> {
    let err = || SpecError::Expose(s.to_owned());
    let (range, protocol) = match s.rsplit_once('/') {
        Some((r, p)) => (r, Protocol::parse(p).ok_or_else(err)?),
        None => (s, Protocol::Tcp),
    };
    let (a, b) = parse_range(range).ok_or_else(err)?;
    Ok((a..=b).map(|port| ExposedPort { port, protocol }).collect())
}

/// A container's membership of one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkAttachment {
    /// Network name or ID.
    #[schema(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]
    pub network: String,
    /// More names the container answers to on this network (`--network-alias`).
    #[serde(default)]
    #[schema(schema_with = crate::openapi::aliases)]
    pub aliases: Vec<String>,
    /// A fixed address (`--ip`); allocated from the subnet if absent.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub ipv4: Option<Ipv4Addr>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Ipv6)]
    pub ipv6: Option<Ipv6Addr>,
}

impl NetworkAttachment {
    pub fn new(network: &str) -> Self {
        Self { network: network.to_owned(), aliases: Vec::new(), ipv4: None, ipv6: None }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if !valid_network_name(&self.network) {
            return Err(SpecError::NetworkName(self.network.clone()));
        }
        for a in &self.aliases {
            if !valid_dns_label(a) {
                return Err(SpecError::NetworkAlias(a.clone()));
            }
        }
        Ok(())
    }
}

/// `atoll network create`'s options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkSpec {
    #[schema(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]
    pub name: String,
    /// IPv4 and/or IPv6 subnets in CIDR notation; allocated from the pools if absent.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::subnets)]
    pub subnets: Vec<String>,
    /// Give the network an IPv6 subnet (a ULA /64 unless one is in `subnets`).
    #[serde(default)]
    pub ipv6: bool,
    /// No route out: containers reach each other only.
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Driver options (`-o KEY=VALUE`, compose's `driver_opts`), by docker's names; see
    /// [`NetworkSpec::gateway_modes`] for those Atoll knows.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::network_options)]
    pub options: std::collections::BTreeMap<String, String>,
}

/// Docker's option for how a bridge network's IPv4 gateway treats traffic from outside.
pub const GATEWAY_MODE_IPV4: &str = "com.docker.network.bridge.gateway_mode_ipv4";
/// The same for IPv6.
pub const GATEWAY_MODE_IPV6: &str = "com.docker.network.bridge.gateway_mode_ipv6";

/// How traffic from outside the host reaches a network's containers (docker's gateway modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GatewayMode {
    /// NAT out; from outside, only published ports are reachable (docker 28's default).
    #[default]
    Nat,
    /// NAT out; from outside, every port of a container whose address is routed to the host.
    NatUnprotected,
}

impl GatewayMode {
    fn parse(key: &str, value: &str) -> Result<Self, SpecError> {
        match value {
            "nat" => Ok(Self::Nat),
            "nat-unprotected" => Ok(Self::NatUnprotected),
            "routed" | "isolated" => Err(SpecError::NetworkOption {
                option: format!("{key}={value}"),
                why: "this gateway mode is not supported; use nat (the default) or nat-unprotected".into(),
            }),
            _ => Err(SpecError::NetworkOption { option: format!("{key}={value}"), why: "use nat or nat-unprotected".into() }),
        }
    }
}

impl NetworkSpec {
    /// The gateway modes of IPv4 and IPv6, from `options`; any other option is refused.
    pub fn gateway_modes(options: &std::collections::BTreeMap<String, String>) -> Result<(GatewayMode, GatewayMode), SpecError> {
        let (mut v4, mut v6) = (GatewayMode::Nat, GatewayMode::Nat);
        for (k, v) in options {
            match k.as_str() {
                GATEWAY_MODE_IPV4 => v4 = GatewayMode::parse(k, v)?,
                GATEWAY_MODE_IPV6 => v6 = GatewayMode::parse(k, v)?,
                _ => {
                    return Err(SpecError::NetworkOption {
                        option: format!("{k}={v}"),
                        why: format!("not a supported option; the supported ones are {GATEWAY_MODE_IPV4} and {GATEWAY_MODE_IPV6}"),
                    });
                }
            }
        }
        Ok((v4, v6))
    }

    /// Checks the name and subnets; returns the parsed subnets (at most one of each family).
    pub fn validate(&self) -> Result<(Option<ipnet::Ipv4Net>, Option<ipnet::Ipv6Net>), SpecError> {
        if !valid_network_name(&self.name) || matches!(self.name.as_str(), "none" | "host") {
            return Err(SpecError::NetworkName(self.name.clone()));
        }
        Self::gateway_modes(&self.options)?;
        let (mut v4, mut v6) = (None, None);
        for s in &self.subnets {
            let net: IpNet = s.parse().map_err(|_| SpecError::Subnet(s.clone()))?;
            match net.trunc() {
                IpNet::V4(n) if v4.is_none() && (8..=30).contains(&n.prefix_len()) => v4 = Some(n),
                IpNet::V6(n) if v6.is_none() && (48..=120).contains(&n.prefix_len()) => v6 = Some(n),
                _ => return Err(SpecError::Subnet(s.clone())),
            }
        }
        Ok((v4, v6))
    }
}

/// Network names follow container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_network_name(s: &str) -> bool {
    crate::container::valid_name(s)
}

/// A name DNS can serve: letters, digits, '-', '_' and dots between labels of 1..=63.
pub fn valid_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') && !l.starts_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Vec<String> {
        parse_publish(s)
            .unwrap()
            .iter()
            .map(|p| match p.host_port_end {
                Some(end) => format!("{:?}:{}-{end}->{}/{}", p.host_ip, p.host_port, p.container_port, p.protocol),
                None => format!("{:?}:{}->{}/{}", p.host_ip, p.host_port, p.container_port, p.protocol),
            })
            .collect()
    }

    #[test]
    fn publish_forms() {
        assert_eq!(p("80"), ["None:0->80/tcp"]);
        assert_eq!(p("8080:80"), ["None:8080->80/tcp"]);
        assert_eq!(p("8080:80/udp"), ["None:8080->80/udp"]);
        assert_eq!(p("127.0.0.1:8080:80"), ["Some(127.0.0.1):8080->80/tcp"]);
        assert_eq!(p("127.0.0.1::80"), ["Some(127.0.0.1):0->80/tcp"]);
        assert_eq!(p("[::1]:8080:80/TCP"), ["Some(::1):8080->80/tcp"]);
        assert_eq!(p("8000-8001:9000-9001"), ["None:8000->9000/tcp", "None:8001->9001/tcp"]);
        assert_eq!(p(":80"), ["None:0->80/tcp"]);
    }

    /// Docker's rules: a host range for one container port is a pool to pick one free port
    /// from; equal lengths map port to port; other lengths are refused, saying why.
    #[test]
    fn publish_port_ranges_follow_docker() {
        assert_eq!(p("127.0.0.1:18040-18042:80"), ["Some(127.0.0.1):18040-18042->80/tcp"]);
        assert_eq!(p("18040-18042:80/udp"), ["None:18040-18042->80/udp"]);
        assert_eq!(p("[::1]:18040-18041:80"), ["Some(::1):18040-18041->80/tcp"]);
        assert_eq!(p("8000-8001:9000-9001"), ["None:8000->9000/tcp", "None:8001->9001/tcp"]);
        // A one-port "range" is just a port.
        assert_eq!(p("8080-8080:80"), ["None:8080->80/tcp"]);
        for bad in ["8000-8002:9000-9001", "8080:80-81", "127.0.0.1:8000-8001:80-82/udp"] {
            let e = parse_publish(bad).unwrap_err();
            assert!(matches!(e, SpecError::PublishRanges { .. }), "{bad:?}: {e}");
        }
        assert_eq!(
            parse_publish("8080:80-81").unwrap_err().to_string(),
            "invalid published port \"8080:80-81\": the container ports 80-81 and the host ports 8080 differ in number; \
             give host ports as many as container ports, or one container port with a host range to pick a free port from"
        );
        // Displayed as given, and parsed back to the same.
        let r = parse_publish("127.0.0.1:18040-18042:80").unwrap()[0];
        assert_eq!(r.to_string(), "127.0.0.1:18040-18042:80/tcp");
        assert_eq!(parse_publish(&r.to_string()).unwrap(), [r]);
        assert!(PortSpec { host_port_end: Some(10), host_port: 20, ..r }.validate().is_err());
        assert!(PortSpec { host_port_end: Some(10), host_port: 0, ..r }.validate().is_err());
    }

    #[test]
    fn publish_rejects() {
        for bad in ["", "0", "x", "80/sctp", "70000", "1.2.3:80:80", "9-8", "[::1:80:80", "a:b:c:d", "80:", "8080-8079:80"] {
            assert!(matches!(parse_publish(bad), Err(SpecError::Publish(_))), "{bad:?} was accepted");
        }
    }

    #[test]
    fn expose_forms() {
        assert_eq!(parse_expose("80/udp").unwrap(), [ExposedPort { port: 80, protocol: Protocol::Udp }]);
        assert_eq!(parse_expose("80-81").unwrap().len(), 2);
        assert!(parse_expose("0").is_err());
    }

    #[test]
    fn network_spec_subnets() {
        let s = |subnets: &[&str]| NetworkSpec {
            name: "n".into(),
            subnets: subnets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let (v4, v6) = s(&["10.1.2.3/24", "fd00:1::/64"]).validate().unwrap();
        assert_eq!(v4.unwrap().to_string(), "10.1.2.0/24");
        assert_eq!(v6.unwrap().to_string(), "fd00:1::/64");
        for bad in [&["10.0.0.0/24", "10.1.0.0/24"][..], &["10.0.0.0/31"], &["nonsense"], &["fd00::/32"]] {
            assert!(s(bad).validate().is_err(), "{bad:?}");
        }
        let named = |n: &str| NetworkSpec { name: n.into(), ..Default::default() }.validate().is_ok();
        assert!(named("back-end_1"));
        assert!(!named("host") && !named("none") && !named("-x") && !named(""));
    }

    #[test]
    fn gateway_modes_follow_dockers_options() {
        let opts = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(NetworkSpec::gateway_modes(&opts(&[])).unwrap(), (GatewayMode::Nat, GatewayMode::Nat));
        assert_eq!(
            NetworkSpec::gateway_modes(&opts(&[(GATEWAY_MODE_IPV4, "nat-unprotected")])).unwrap(),
            (GatewayMode::NatUnprotected, GatewayMode::Nat)
        );
        assert_eq!(NetworkSpec::gateway_modes(&opts(&[(GATEWAY_MODE_IPV6, "nat-unprotected")])).unwrap().1, GatewayMode::NatUnprotected);
        let err = NetworkSpec::gateway_modes(&opts(&[(GATEWAY_MODE_IPV4, "routed")])).unwrap_err().to_string();
        assert!(err.contains("not supported; use nat (the default) or nat-unprotected"), "{err}");
        let err = NetworkSpec::gateway_modes(&opts(&[("com.docker.network.driver.mtu", "1400")])).unwrap_err().to_string();
        assert!(err.contains("com.docker.network.driver.mtu=1400") && err.contains(GATEWAY_MODE_IPV4), "{err}");
        let spec = NetworkSpec { name: "n".into(), options: opts(&[(GATEWAY_MODE_IPV4, "bogus")]), ..Default::default() };
        assert!(spec.validate().is_err());
    }

    #[test]
    fn dns_labels() {
        assert!(valid_dns_label("db") && valid_dns_label("db.internal") && valid_dns_label("my_svc-1"));
        assert!(!valid_dns_label("") && !valid_dns_label("a..b") && !valid_dns_label("-a") && !valid_dns_label("a b"));
    }

    proptest! {
        /// Whatever the shape, a parsed `-p` prints back to something that parses to the same.
        #[test]
        fn publish_display_round_trips(ip in proptest::option::of(any::<[u8; 4]>()), host in 0u16..=65535, span in 0u16..4, cport in 1u16..=65535, udp: bool) {
            let spec = PortSpec {
                host_ip: ip.map(|b| IpAddr::V4(Ipv4Addr::from(b))),
                host_port: host,
                host_port_end: host.checked_add(span).filter(|_| host != 0 && span != 0),
                container_port: cport,
                protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
            };
            let text = spec.to_string();
            let text = if spec.host_ip.is_some() && host == 0 { text.replacen(':', "::", 1) } else { text };
            prop_assert_eq!(parse_publish(&text).unwrap(), vec![spec]);
        }

        #[test]
        fn publish_never_panics(s in "\\PC{0,24}") {
            let _ = parse_publish(&s);
        }
    }
}
