//! What the gateway serves (pure, serde): routes by host name or port, the certificates, and
//! the limits. The island builds a [`GatewayConfig`] from its replicated state and sends each new
//! one through a `watch` channel; [`GatewayConfig::validate`] says what is wrong with one, naming
//! the route and the field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the gateway serves. A new value replaces the old one whole; connections already
/// open keep going.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayConfig {
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub certificates: Vec<CertPair>,
    #[serde(default)]
    pub limits: Limits,
}

/// A certificate chain (leaf first) and its private key, both PEM, for the names it covers
/// (`*.example.org` for a wildcard).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CertPair {
    pub names: Vec<String>,
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPair").field("names", &self.names).finish_non_exhaustive()
    }
}

/// One route: the host names it answers (for HTTP and TLS pass-through) and what it does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Host names (exact, or `*.example.org` for any one label under it). Empty for TCP and UDP.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub kind: RouteKind,
}

/// What a route does with what it receives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum RouteKind {
    /// TLS terminated here, HTTP forwarded to the upstreams.
    Http(HttpRoute),
    /// TLS on :443 forwarded unopened to the upstreams, chosen by the ClientHello's SNI.
    TlsPassthrough { upstreams: Vec<Upstream> },
    /// Plain TCP from `listen_port` to the upstreams.
    Tcp { listen_port: u16, upstreams: Vec<Upstream> },
    /// UDP datagrams from `listen_port` to the upstreams (a session per client address).
    Udp { listen_port: u16, upstreams: Vec<Upstream> },
}

/// An HTTP route's upstreams and its per-route limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    pub upstreams: Vec<Upstream>,
    /// The largest request body accepted (413 beyond); none for no cap.
    #[serde(default)]
    pub max_body: Option<u64>,
    /// How long the upstream may take to connect and send its response headers (504 beyond).
    #[serde(default = "default_timeout", with = "millis")]
    pub timeout: Duration,
    /// Per client IP: requests per second and burst (429 beyond); none (the default) for no limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// A token bucket's rate and size.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// One replica's address (over the mesh) and whether its health check passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub healthy: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Limits that keep the gateway up under abuse. They apply to connections accepted after a
/// change (except `max_connections`, which applies at once).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Client connections open at once (HTTP, HTTPS and TCP routes together); beyond, new ones
    /// are closed.
    pub max_connections: usize,
    /// Time for a TLS handshake to finish.
    #[serde(with = "millis")]
    pub tls_handshake_timeout: Duration,
    /// Time for a request's headers to arrive (slowloris), HTTP/1.1.
    #[serde(with = "millis")]
    pub header_read_timeout: Duration,
    /// Time to open a connection to an upstream; beyond, the next upstream is tried (a host
    /// that died drops packets rather than refusing).
    #[serde(with = "millis")]
    pub upstream_connect_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(with = "millis")]
    pub idle_timeout: Duration,
    /// Largest request head (HTTP/1.1 buffer, HTTP/2 header list); 431 beyond.
    pub max_header_bytes: usize,
    /// HTTP/2 streams a client may have open at once on one connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 streams a client may reset before the server accepted them (rapid reset,
    /// CVE-2023-44487); beyond, the connection is closed with GOAWAY.
    pub h2_max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams the server may reset because of the client's errors before it closes
    /// the connection.
    pub h2_max_local_error_reset_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            upstream_connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(75),
            max_header_bytes: 64 * 1024,
            h2_max_concurrent_streams: 250,
            h2_max_pending_accept_reset_streams: 50,
            h2_max_local_error_reset_streams: 256,
        }
    }
}

/// Durations as whole milliseconds in JSON.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// What is wrong with a configuration; routes are named by their position and first host (or port).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("route {route}: `hosts` is empty; an HTTP or TLS pass-through route needs at least one host name")]
    NoHosts { route: String },
    #[error(
        "route {route}: host {host:?} is not a valid DNS name (letters, digits, '-', '.', at most 253 bytes; '*.' only as the first label)"
    )]
    BadHost { route: String, host: String },
    #[error("route {route}: host {host:?} is also served by route {other}")]
    DuplicateHost { route: String, host: String, other: String },
    #[error("route {route}: `hosts` must be empty for a TCP or UDP route (it is chosen by port)")]
    HostsOnPortRoute { route: String },
    #[error("route {route}: `listen_port` {port} is also used by route {other}")]
    DuplicatePort { route: String, port: u16, other: String },
    #[error("route {route}: `listen_port` must not be 0")]
    ZeroPort { route: String },
    #[error("route {route}: `timeout` must be more than zero")]
    ZeroTimeout { route: String },
    #[error("route {route}: `rate_limit` needs `per_second` > 0 and `burst` ≥ 1 (got {per_second}/s, burst {burst})")]
    BadRateLimit { route: String, per_second: f64, burst: u32 },
    #[error("certificate {index} ({names}): `names` is empty")]
    CertWithoutNames { index: usize, names: String },
    #[error("certificate {index} ({names}): {reason}")]
    BadCertificate { index: usize, names: String, reason: String },
    #[error("limits: `{field}` must be more than zero")]
    ZeroLimit { field: &'static str },
}

impl Route {
    /// How errors and metrics name this route: its first host, or its protocol and port.
    pub fn label(&self) -> String {
        match &self.kind {
            RouteKind::Tcp { listen_port, .. } => format!("tcp/{listen_port}"),
            RouteKind::Udp { listen_port, .. } => format!("udp/{listen_port}"),
            _ => self.hosts.first().cloned().unwrap_or_else(|| "(no host)".into()),
        }
    }

    /// The route's upstreams, whatever its kind.
    pub fn upstreams(&self) -> &[Upstream] {
        match &self.kind {
            RouteKind::Http(h) => &h.upstreams,
            RouteKind::TlsPassthrough { upstreams } | RouteKind::Tcp { upstreams, .. } | RouteKind::Udp { upstreams, .. } => upstreams,
        }
    }
}

/// Whether `name` is a host name a route or certificate may carry: DNS labels of letters,
/// digits and '-', with an optional leading `*.` (a wildcard of one label).
pub fn valid_host(name: &str) -> bool {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    !rest.is_empty()
        && name.len() <= 253
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl GatewayConfig {
    /// Checks the whole configuration; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let named = |i: usize, r: &Route| format!("#{} ({})", i + 1, r.label());
        let mut hosts: BTreeMap<String, String> = BTreeMap::new();
        let mut tcp_ports: BTreeMap<u16, String> = BTreeMap::new();
        let mut udp_ports: BTreeMap<u16, String> = BTreeMap::new();
        for (i, r) in self.routes.iter().enumerate() {
            let route = named(i, r);
            match &r.kind {
                RouteKind::Http(_) | RouteKind::TlsPassthrough { .. } => {
                    if r.hosts.is_empty() {
                        return Err(ConfigError::NoHosts { route });
                    }
                    for h in &r.hosts {
                        if !valid_host(h) {
                            return Err(ConfigError::BadHost { route, host: h.clone() });
                        }
                        if let Some(other) = hosts.insert(h.to_ascii_lowercase(), route.clone()) {
                            return Err(ConfigError::DuplicateHost { route, host: h.clone(), other });
                        }
                    }
                }
                RouteKind::Tcp { listen_port, .. } | RouteKind::Udp { listen_port, .. } => {
                    if !r.hosts.is_empty() {
                        return Err(ConfigError::HostsOnPortRoute { route });
                    }
                    if *listen_port == 0 {
                        return Err(ConfigError::ZeroPort { route });
                    }
                    let ports = if matches!(r.kind, RouteKind::Tcp { .. }) { &mut tcp_ports } else { &mut udp_ports };
                    if let Some(other) = ports.insert(*listen_port, route.clone()) {
                        return Err(ConfigError::DuplicatePort { route, port: *listen_port, other });
                    }
                }
            }
            if let RouteKind::Http(h) = &r.kind {
                if h.timeout.is_zero() {
                    return Err(ConfigError::ZeroTimeout { route });
                }
                if let Some(rl) = h.rate_limit
                    && (!(rl.per_second > 0.0 && rl.per_second.is_finite()) || rl.burst == 0)
                {
                    return Err(ConfigError::BadRateLimit { route, per_second: rl.per_second, burst: rl.burst });
                }
            }
        }
        for (index, c) in self.certificates.iter().enumerate() {
            let names = c.names.join(", ");
            if c.names.is_empty() {
                return Err(ConfigError::CertWithoutNames { index, names });
            }
            if let Some(bad) = c.names.iter().find(|n| !valid_host(n)) {
                return Err(ConfigError::BadCertificate { index, names, reason: format!("{bad:?} is not a valid DNS name") });
            }
            if let Err(reason) = crate::tls::certified_key(c) {
                return Err(ConfigError::BadCertificate { index, names, reason });
            }
        }
        let l = &self.limits;
        for (field, zero) in [
            ("max_connections", l.max_connections == 0),
            ("tls_handshake_timeout", l.tls_handshake_timeout.is_zero()),
            ("header_read_timeout", l.header_read_timeout.is_zero()),
            ("upstream_connect_timeout", l.upstream_connect_timeout.is_zero()),
            ("idle_timeout", l.idle_timeout.is_zero()),
            ("max_header_bytes", l.max_header_bytes == 0),
            ("h2_max_concurrent_streams", l.h2_max_concurrent_streams == 0),
        ] {
            if zero {
                return Err(ConfigError::ZeroLimit { field });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(hosts: &[&str]) -> Route {
        Route {
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            kind: RouteKind::Http(HttpRoute {
                upstreams: vec![Upstream { addr: "127.0.0.1:1".parse().unwrap(), healthy: true }],
                max_body: None,
                timeout: Duration::from_secs(5),
                rate_limit: None,
            }),
        }
    }

    fn tcp(port: u16) -> Route {
        Route { hosts: vec![], kind: RouteKind::Tcp { listen_port: port, upstreams: vec![] } }
    }

    fn check(routes: Vec<Route>) -> Result<(), String> {
        GatewayConfig { routes, ..Default::default() }.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn valid_config_passes() {
        assert_eq!(check(vec![http(&["a.example", "*.b.example"]), tcp(25)]), Ok(()));
    }

    #[test]
    fn errors_name_the_route_and_field() {
        assert_eq!(
            check(vec![http(&["a.example"]), http(&["A.example"])]),
            Err("route #2 (A.example): host \"A.example\" is also served by route #1 (a.example)".into())
        );
        assert_eq!(
            check(vec![http(&[])]),
            Err("route #1 ((no host)): `hosts` is empty; an HTTP or TLS pass-through route needs at least one host name".into())
        );
        assert!(check(vec![http(&["a..example"])]).unwrap_err().contains("not a valid DNS name"));
        assert!(check(vec![http(&["a.*.example"])]).unwrap_err().contains("not a valid DNS name"));
        assert_eq!(check(vec![tcp(25), tcp(25)]), Err("route #2 (tcp/25): `listen_port` 25 is also used by route #1 (tcp/25)".into()));
        let mut r = http(&["a.example"]);
        if let RouteKind::Http(h) = &mut r.kind {
            h.rate_limit = Some(RateLimit { per_second: 0.0, burst: 3 });
        }
        assert!(check(vec![r]).unwrap_err().starts_with("route #1 (a.example): `rate_limit`"));
        let cfg = GatewayConfig { limits: Limits { max_connections: 0, ..Default::default() }, ..Default::default() };
        assert_eq!(cfg.validate().unwrap_err().to_string(), "limits: `max_connections` must be more than zero");
    }

    #[test]
    fn same_port_for_tcp_and_udp_is_fine() {
        let udp = Route { hosts: vec![], kind: RouteKind::Udp { listen_port: 25, upstreams: vec![] } };
        assert_eq!(check(vec![tcp(25), udp]), Ok(()));
    }

    #[test]
    fn bad_certificate_is_named() {
        let cfg = GatewayConfig {
            certificates: vec![CertPair { names: vec!["a.example".into()], chain_pem: "nope".into(), key_pem: "nope".into() }],
            ..Default::default()
        };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.starts_with("certificate 0 (a.example): "), "{e}");
    }

    #[test]
    fn json_round_trip() {
        let cfg = GatewayConfig { routes: vec![http(&["a.example"]), tcp(25)], ..Default::default() };
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(text.contains(r#""type":"http""#), "{text}");
        assert_eq!(serde_json::from_str::<GatewayConfig>(&text).unwrap(), cfg);
    }
}
