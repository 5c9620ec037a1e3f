//! Route lookup (pure): a host name to its route (exact name, then the wildcard one label up),
//! and the order in which a request tries a route's healthy upstreams (round robin).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{GatewayConfig, Route, RouteKind, Upstream};

/// The routes of one configuration, indexed by host name.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    by_host: HashMap<String, usize>,
}

impl RouteTable {
    pub fn build(cfg: &GatewayConfig) -> RouteTable {
        let mut t = RouteTable::default();
        for r in &cfg.routes {
            let i = t.routes.len();
            t.routes.push(Arc::new(r.clone()));
            for h in &r.hosts {
                t.by_host.entry(h.to_ascii_lowercase()).or_insert(i);
            }
        }
        t
    }

    /// The route serving `host` (lowercase, no port): exact, else `*.` one label up.
    pub fn lookup(&self, host: &str) -> Option<&Arc<Route>> {
        let host = host.trim_end_matches('.');
        // Requests' hosts come lowercased already: copied only when they are not.
        let lowered: String;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            &lowered
        } else {
            host
        };
        let i = self.by_host.get(host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.by_host.get(&format!("*.{parent}"))
        })?;
        Some(&self.routes[*i])
    }

    /// The TLS pass-through route for this SNI, if that is what serves it.
    pub fn passthrough(&self, sni: &str) -> Option<&Arc<Route>> {
        self.lookup(sni).filter(|r| matches!(r.kind, RouteKind::TlsPassthrough { .. }))
    }

    /// The route listening on this TCP (or UDP) port.
    pub fn by_port(&self, udp: bool, port: u16) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| match r.kind {
            RouteKind::Tcp { listen_port, .. } => !udp && listen_port == port,
            RouteKind::Udp { listen_port, .. } => udp && listen_port == port,
            _ => false,
        })
    }

    /// The TCP and UDP ports the routes listen on.
    pub fn ports(&self) -> (Vec<u16>, Vec<u16>) {
        let (mut tcp, mut udp) = (Vec::new(), Vec::new());
        for r in &self.routes {
            match r.kind {
                RouteKind::Tcp { listen_port, .. } => tcp.push(listen_port),
                RouteKind::Udp { listen_port, .. } => udp.push(listen_port),
                _ => {}
            }
        }
        (tcp, udp)
    }
}

/// The healthy upstreams in the order to try them: round robin by `turn` (a counter the caller
/// increments per request) over those not `suspect` (recently refused a connection), then the
/// suspects, as a last resort.
pub fn candidates(upstreams: &[Upstream], turn: usize, suspect: impl Fn(SocketAddr) -> bool) -> Vec<SocketAddr> {
    let mut order = Vec::with_capacity(upstreams.len());
    let mut suspects = Vec::new();
    for u in upstreams.iter().filter(|u| u.healthy) {
        if suspect(u.addr) { suspects.push(u.addr) } else { order.push(u.addr) }
    }
    for v in [&mut order, &mut suspects] {
        if !v.is_empty() {
            let start = turn % v.len();
            v.rotate_left(start);
        }
    }
    order.append(&mut suspects);
    order
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::HttpRoute;

    fn up(port: u16, healthy: bool) -> Upstream {
        Upstream { addr: SocketAddr::from(([127, 0, 0, 1], port)), healthy }
    }

    fn http(hosts: &[&str], port: u16) -> Route {
        Route {
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            kind: RouteKind::Http(HttpRoute {
                upstreams: vec![up(port, true)],
                max_body: None,
                timeout: Duration::from_secs(1),
                rate_limit: None,
            }),
        }
    }

    #[test]
    fn exact_then_wildcard() {
        let cfg = GatewayConfig { routes: vec![http(&["*.example.org"], 1), http(&["www.example.org"], 2)], ..Default::default() };
        let t = RouteTable::build(&cfg);
        assert_eq!(t.lookup("WWW.example.org.").unwrap().upstreams()[0].addr.port(), 2);
        assert_eq!(t.lookup("blog.example.org").unwrap().upstreams()[0].addr.port(), 1);
        assert!(t.lookup("a.blog.example.org").is_none());
        assert!(t.lookup("example.org").is_none());
        assert!(t.passthrough("www.example.org").is_none());
    }

    #[test]
    fn candidates_skip_unhealthy_and_rotate() {
        let ups = [up(1, true), up(2, false), up(3, true)];
        let none = |_| false;
        assert_eq!(candidates(&ups, 0, none).iter().map(|a| a.port()).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(candidates(&ups, 1, none).iter().map(|a| a.port()).collect::<Vec<_>>(), [3, 1]);
        assert!(candidates(&[up(1, false)], 7, none).is_empty());
    }

    #[test]
    fn suspects_go_last() {
        let ups = [up(1, true), up(2, true), up(3, true), up(4, false)];
        let suspect = |a: SocketAddr| a.port() == 1;
        for turn in 0..4 {
            let order: Vec<u16> = candidates(&ups, turn, suspect).iter().map(|a| a.port()).collect();
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], 1, "turn {turn}: {order:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn round_robin_spreads_evenly(health in proptest::collection::vec(proptest::bool::ANY, 1..8), rounds in 1usize..5) {
            let ups: Vec<Upstream> = health.iter().enumerate().map(|(i, h)| up(i as u16 + 1, *h)).collect();
            let n = health.iter().filter(|h| **h).count();
            let mut firsts = HashMap::new();
            for turn in 0..n * rounds {
                let c = candidates(&ups, turn, |_| false);
                proptest::prop_assert_eq!(c.len(), n);
                *firsts.entry(c[0]).or_insert(0) += 1;
            }
            proptest::prop_assert!(firsts.values().all(|v| *v == rounds));
        }
    }
}
