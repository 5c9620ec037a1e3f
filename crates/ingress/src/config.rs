//! From one look at the replicated state to what every public host's gateway serves (pure).
//!
//! Routes come from users (`desired/route`, [`GatewayRoute`]) and from services' labels
//! ([`atoll_state::ingress::declared_route`]); a user's route wins a host name or port both
//! claim, as users' DNS records win over derived ones. A route the gateway would refuse (a bad
//! host name, a host or port another route holds) is left out with its reason, so one bad
//! label never takes the others down. Each route's upstreams are its service's replicas that
//! run, on members not down, at the port their member forwards from its mesh address.

use std::net::SocketAddr;
use std::time::Duration;

use atoll_gateway::{CertPair, GatewayConfig, HttpRoute, Limits, RateLimit, Route, RouteKind, Upstream};
use atoll_island::model::IslandState;
use atoll_orchestrator::records::Records;
use atoll_state::desired::{Desired, Kind, TaskState};
use atoll_state::ingress::{GatewayRoute, RouteMode, Transport, declared_route, port_key};
use serde::{Deserialize, Serialize};

/// Where a route comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A service's `atoll.http.host` label.
    Label,
    /// `atoll gateway route add`.
    User,
    /// A port the service publishes (`ports:`): Swarm's routing mesh.
    Ports,
    /// A bundle the island runs (`atoll bundle run`), at `<name>.<author's label>.<zone>`.
    Bundle,
}

/// One replica behind a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Backend {
    /// The allocation (`blog_web.1/<member id>`).
    pub replica: String,
    /// The member it runs on (its name).
    pub host: String,
    /// Its member's mesh address and forwarded port.
    #[schema(value_type = String)]
    pub addr: SocketAddr,
    /// Its health check passes (or it has none).
    pub healthy: bool,
}

/// A route as planned: what it is, where it goes, and why it is not served if it is not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RoutePlan {
    /// A user's route's name, or the service's (`<stack>_<service>`) for a label's.
    pub name: String,
    pub origin: Origin,
    pub mode: RouteMode,
    pub hosts: Vec<String>,
    pub listen_port: Option<u16>,
    /// The service (`<stack>_<service>`).
    pub service: String,
    /// The replicas' container port.
    pub port: u16,
    /// How the gateway's metrics and access log name it (its first host, or `tcp/PORT`).
    pub label: String,
    pub backends: Vec<Backend>,
    /// Why it is not served, in words; none when it is.
    pub error: Option<String>,
}

/// The gateway's configuration for `records` on `island`, serving `certificates`, with
/// `limits`; and every route as planned (in the order served: users' first, by name, then
/// labels, then published ports). On member `me` (none: the island-wide list), a port that a
/// replica running there publishes itself is left to it.
pub fn build(
    island: &IslandState,
    records: &Records,
    me: Option<&str>,
    certificates: Vec<CertPair>,
    limits: Limits,
) -> (GatewayConfig, Vec<RoutePlan>) {
    let mut plans: Vec<(RoutePlan, Option<Route>)> = Vec::new();
    let mut users: Vec<&GatewayRoute> = records.routes.iter().map(|(r, _)| r).collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    for r in users {
        plans.push(user_route(island, records, r));
    }
    let mut services: Vec<_> = records.services.iter().map(|(s, _)| s).collect();
    services.sort_by_key(|s| s.name());
    for svc in services {
        let Some(declared) = declared_route(svc) else { continue };
        let full = svc.name();
        let (hosts, port, error) = match declared {
            Ok((hosts, port)) => (hosts, port, None),
            Err(e) => (vec![], 0, Some(e)),
        };
        let backends = if error.is_none() { backends(island, records, &full, port, Transport::Tcp) } else { vec![] };
        let route = error.is_none().then(|| Route {
            hosts: hosts.clone(),
            kind: RouteKind::Http(HttpRoute {
                upstreams: upstreams(&backends),
                max_body: None,
                timeout: DEFAULT_TIMEOUT,
                rate_limit: None,
            }),
        });
        let plan = RoutePlan {
            name: full.clone(),
            origin: Origin::Label,
            mode: RouteMode::Http,
            label: hosts.first().cloned().unwrap_or_default(),
            hosts,
            listen_port: None,
            service: full,
            port,
            backends,
            error,
        };
        plans.push((plan, route));
    }

    for (b, _) in &records.bundles {
        plans.push(bundle_route(island, records, b));
    }

    let mut services: Vec<_> = records.services.iter().map(|(s, _)| s).collect();
    services.sort_by_key(|s| s.name());
    for svc in services {
        let full = svc.name();
        let here = me
            .is_some_and(|me| records.allocations.iter().any(|(a, _)| a.service == full && a.node == me && a.desired == Desired::Running));
        for p in atoll_state::ingress::published_ports(svc) {
            if here {
                continue;
            }
            // The gateway's own ports are routed by host name, not forwarded whole.
            let own = p.transport == Transport::Tcp && crate::write::GATEWAY_PORTS.contains(&p.host_port);
            let backends = backends(island, records, &full, p.container_port, p.transport);
            let ups = upstreams(&backends);
            let kind = match p.transport {
                Transport::Tcp => RouteKind::Tcp { listen_port: p.host_port, upstreams: ups },
                Transport::Udp => RouteKind::Udp { listen_port: p.host_port, upstreams: ups },
            };
            let route = Route { hosts: vec![], kind };
            let error = own.then(|| {
                format!("port {} is the gateway's own: give the service an atoll.http.host label to be served there by name", p.host_port)
            });
            let plan = RoutePlan {
                name: format!("{full}:{}/{}", p.host_port, p.transport.as_str()),
                origin: Origin::Ports,
                mode: if p.transport == Transport::Udp { RouteMode::Udp } else { RouteMode::Tcp },
                hosts: vec![],
                listen_port: Some(p.host_port),
                service: full.clone(),
                port: p.container_port,
                label: route.label(),
                backends,
                error,
            };
            plans.push((plan, (!own).then_some(route)));
        }
    }

    // Routes one at a time: one the gateway would refuse with those before it is left out.
    let mut config = GatewayConfig { routes: vec![], certificates: vec![], limits };
    for (plan, route) in &mut plans {
        let Some(route) = route.take() else { continue };
        config.routes.push(route);
        if let Err(e) = config.validate() {
            config.routes.pop();
            plan.error = Some(e.to_string().split_once(": ").map_or_else(|| e.to_string(), |(_, why)| why.to_owned()));
        }
    }
    // Certificates one at a time too: one that does not load must not hide the others.
    for c in certificates {
        let alone = GatewayConfig { routes: vec![], certificates: vec![c.clone()], limits: Limits::default() };
        match alone.validate() {
            Ok(()) => config.certificates.push(c),
            Err(e) => tracing::warn!(names = ?c.names, error = %e, "the gateway leaves out a certificate that does not load"),
        }
    }
    (config, plans.into_iter().map(|(p, _)| p).collect())
}

/// How long a replica may take to answer when its route does not say (nginx's
/// `proxy_read_timeout` is 60 s too).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

fn user_route(island: &IslandState, records: &Records, r: &GatewayRoute) -> (RoutePlan, Option<Route>) {
    let backends = backends(island, records, &r.service, r.port, r.mode.transport());
    let ups = upstreams(&backends);
    let missing = records.service(&r.service).is_none().then(|| format!("no service {} is deployed", r.service));
    let listen_port = r.listen_port.unwrap_or(0);
    let kind = match r.mode {
        RouteMode::Http => RouteKind::Http(HttpRoute {
            upstreams: ups,
            max_body: r.max_body,
            timeout: r.timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis),
            rate_limit: r.rate_limit.map(|per_second| RateLimit { per_second, burst: burst(per_second) }),
        }),
        RouteMode::TlsPassthrough => RouteKind::TlsPassthrough { upstreams: ups },
        RouteMode::Tcp => RouteKind::Tcp { listen_port, upstreams: ups },
        RouteMode::Udp => RouteKind::Udp { listen_port, upstreams: ups },
    };
    let hosts = if matches!(r.mode, RouteMode::Tcp | RouteMode::Udp) { vec![] } else { r.hosts.clone() };
    let route = Route { hosts, kind };
    let plan = RoutePlan {
        name: r.name.clone(),
        origin: Origin::User,
        mode: r.mode,
        hosts: r.hosts.clone(),
        listen_port: r.listen_port,
        service: r.service.clone(),
        port: r.port,
        label: route.label(),
        backends,
        error: missing.clone(),
    };
    // A route to a service not deployed (yet) is kept out: its host would answer 503 for
    // nothing, where the gateway's "no route" says more.
    (plan, missing.is_none().then_some(route))
}

/// A bundle's route: its host names in every zone, to the member it is placed on, at the port it
/// reports there; while that member does not serve it yet (a move), to whichever member up
/// still reports this bundle running (the one it leaves, which hands over once the new one
/// serves: `bundle_island`). Once the new one serves, the one it leaves stays in the route,
/// unhealthy, until it stops: it takes no new request, and those it is answering finish (the
/// gateway gives up on requests to an upstream that leaves its route).
fn bundle_route(island: &IslandState, records: &Records, b: &atoll_state::desired::Bundle) -> (RoutePlan, Option<Route>) {
    let hosts = atoll_state::ingress::bundle_hosts(b, &records.zones);
    let up = |id: &str| !records.liveness.get(id).is_some_and(|(l, _)| l.down);
    let backend = |id: &str, e: &atoll_state::desired::BundleEndpoint| {
        let member = island.members.get(id)?;
        Some(Backend {
            replica: format!("{}/{}", b.name, member.id),
            host: member.name.clone(),
            addr: SocketAddr::new(member.mesh_ip.into(), e.port?),
            healthy: e.state == "running",
        })
    };
    let report = |id: &str| records.bundle_endpoints.get(id).and_then(|(r, _)| r.bundles.get(&b.name));
    let mut backends: Vec<Backend> = b.node.as_deref().filter(|n| up(n)).and_then(|n| backend(n, report(n)?)).into_iter().collect();
    let placed_serves = backends.iter().any(|x| x.healthy);
    for id in records.bundle_endpoints.keys().filter(|id| Some(id.as_str()) != b.node.as_deref() && up(id)) {
        if let Some(e) = report(id).filter(|e| e.created == b.created && e.state == "running") {
            backends.extend(backend(id, e).map(|x| Backend { healthy: !placed_serves, ..x }));
        }
    }
    let error = if hosts.is_empty() && records.zones.is_empty() {
        Some("the island has no zone to serve it under: `atoll domain add DOMAIN`".to_owned())
    } else if hosts.is_empty() {
        Some(format!("its author ({}) has no verified handle to name its host after", b.did))
    } else {
        None
    };
    let route = error.is_none().then(|| Route {
        hosts: hosts.clone(),
        kind: RouteKind::Http(HttpRoute { upstreams: upstreams(&backends), max_body: None, timeout: DEFAULT_TIMEOUT, rate_limit: None }),
    });
    let plan = RoutePlan {
        name: format!("bundle/{}", b.name),
        origin: Origin::Bundle,
        mode: RouteMode::Http,
        label: hosts.first().cloned().unwrap_or_default(),
        hosts,
        listen_port: None,
        service: b.name.clone(),
        port: backends.first().map_or(0, |x| x.addr.port()),
        backends,
        error,
    };
    (plan, route)
}

/// A rate limit's burst: a second's worth, at least one request.
pub fn burst(per_second: f64) -> u32 {
    if per_second.is_finite() && per_second >= 1.0 { per_second.ceil().min(f64::from(u32::MAX)) as u32 } else { 1 }
}

/// The replicas of `service` that can take traffic on container port `port`: running on a
/// member that is not down, which forwards the port from its mesh address (in allocation order).
pub fn backends(island: &IslandState, records: &Records, service: &str, port: u16, transport: Transport) -> Vec<Backend> {
    let key = port_key(port, transport);
    let mut out: Vec<Backend> = records
        .allocations
        .iter()
        .map(|(a, _)| a)
        .filter(|a| a.service == service && a.desired == Desired::Running)
        .filter(|a| !records.liveness.get(&a.node).is_some_and(|(l, _)| l.down))
        .filter_map(|a| {
            let name = Kind::name(a);
            let (task, _) = records.tasks.get(&name)?;
            if task.state != TaskState::Running {
                return None;
            }
            let member = island.members.get(&a.node)?;
            let host_port = *task.forwards.get(&key)?;
            Some(Backend {
                replica: name,
                host: member.name.clone(),
                addr: SocketAddr::new(member.mesh_ip.into(), host_port),
                healthy: task.healthy != Some(false),
            })
        })
        .collect();
    out.sort_by(|a, b| a.replica.cmp(&b.replica));
    out
}

fn upstreams(backends: &[Backend]) -> Vec<Upstream> {
    backends.iter().map(|b| Upstream { addr: b.addr, healthy: b.healthy }).collect()
}

#[cfg(test)]
mod tests;
