//! The gateway's part of the model (issue 17): routes users add (`desired/route/<name>`),
//! the routes services declare in their labels, which container ports each service's replicas
//! must offer to the public hosts over the mesh, and what each public host reports of the
//! traffic it served (`observed/gateway/<member id>`).
//!
//! A route sends what a public host receives (HTTPS for its host names, TLS by SNI, or a TCP or
//! UDP port) to a service's replicas, wherever they run: each replica's member forwards a port
//! of its mesh address to the container ([`forwarded_ports`]), and reports it in its task.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::desired::{Bundle, Kind, OBSERVED, Service};

/// The service label naming the host names its HTTP route answers (comma-separated).
pub const LABEL_HTTP_HOST: &str = "atoll.http.host";
/// The service label naming the container port its HTTP route forwards to (80 when absent).
pub const LABEL_HTTP_PORT: &str = "atoll.http.port";
/// The container port an HTTP route forwards to when [`LABEL_HTTP_PORT`] is absent.
pub const DEFAULT_HTTP_PORT: u16 = 80;

/// What a route does with what a public host receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    /// HTTPS for its host names, terminated on the public host, HTTP to the replicas.
    #[default]
    Http,
    /// TLS for its host names (by SNI), passed unopened to the replicas.
    TlsPassthrough,
    /// A TCP port of the public hosts, to the replicas.
    Tcp,
    /// A UDP port of the public hosts, to the replicas.
    Udp,
}

impl RouteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMode::Http => "http",
            RouteMode::TlsPassthrough => "tls-passthrough",
            RouteMode::Tcp => "tcp",
            RouteMode::Udp => "udp",
        }
    }

    /// The transport its replicas are reached by.
    pub fn transport(self) -> Transport {
        if self == RouteMode::Udp { Transport::Udp } else { Transport::Tcp }
    }
}

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// A route a user added (`atoll gateway route add`): `desired/route/<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayRoute {
    pub name: String,
    pub mode: RouteMode,
    /// Host names, lower case (`http` and `tls_passthrough`; `*.example.org` for any one label).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The public hosts' port (`tcp` and `udp`).
    #[serde(default)]
    pub listen_port: Option<u16>,
    /// The service (`<stack>_<service>`) whose replicas it reaches.
    pub service: String,
    /// The replicas' container port.
    pub port: u16,
    /// The largest request body, in bytes (`http`; 413 beyond).
    #[serde(default)]
    pub max_body: Option<u64>,
    /// How long a replica may take to answer, in milliseconds (`http`; 504 beyond).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Per client IP, requests per second (`http`; 429 beyond).
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Map<String, Value>,
}

impl Kind for GatewayRoute {
    const KIND: &'static str = "route";
    fn name(&self) -> String {
        self.name.clone()
    }
}

/// A label of a service or, failing that, of its containers (compose puts `labels:` on the
/// containers and `deploy.labels` on the service).
fn label<'a>(svc: &'a Service, key: &str) -> Option<&'a str> {
    svc.labels.get(key).map(String::as_str).or_else(|| svc.spec.get("labels").and_then(|l| l.get(key)).and_then(|v| v.as_str()))
}

/// The HTTP route a service declares with [`LABEL_HTTP_HOST`]: its host names (lower case,
/// without a trailing dot) and container port. None without the label; an error naming the
/// label when its port is not a port.
pub fn declared_route(svc: &Service) -> Option<Result<(Vec<String>, u16), String>> {
    let hosts: Vec<String> = label(svc, LABEL_HTTP_HOST)?
        .split(',')
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return None;
    }
    let port = match label(svc, LABEL_HTTP_PORT) {
        None => DEFAULT_HTTP_PORT,
        Some(p) => match p.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Some(Err(format!("{LABEL_HTTP_PORT} is {p:?}, not a port (1-65535)"))),
        },
    };
    Some(Ok((hosts, port)))
}

/// One port a service publishes (`ports:`), as Swarm's routing mesh publishes it: on every
/// public host, to the service's replicas wherever they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Published {
    pub host_port: u16,
    pub container_port: u16,
    pub transport: Transport,
}

/// The ports service `svc` publishes on every address (its container spec's `publish`): one
/// host port each (a host range, or a port bound to one address such as 127.0.0.1, stays its
/// member's own).
pub fn published_ports(svc: &Service) -> Vec<Published> {
    let Some(list) = svc.spec.get("publish").and_then(Value::as_array) else { return Vec::new() };
    let mut out: Vec<Published> = list
        .iter()
        .filter_map(|p| {
            let port = |k: &str| p.get(k).and_then(Value::as_u64).and_then(|v| u16::try_from(v).ok()).filter(|v| *v > 0);
            let everywhere = p.get("host_ip").and_then(Value::as_str).is_none_or(|ip| ip == "0.0.0.0" || ip == "::");
            if !everywhere || p.get("host_port_end").is_some_and(|e| !e.is_null()) {
                return None;
            }
            let transport = if p.get("protocol").and_then(Value::as_str) == Some("udp") { Transport::Udp } else { Transport::Tcp };
            Some(Published { host_port: port("host_port")?, container_port: port("container_port")?, transport })
        })
        .collect();
    out.sort();
    out.dedup_by_key(|p| (p.host_port, p.transport));
    out
}

/// The container ports a service's replicas offer the public hosts, for its declared route, the
/// ports it publishes and the routes users added to it, in a stable order without repeats.
pub fn forwarded_ports(svc: &Service, routes: &[GatewayRoute]) -> Vec<(u16, Transport)> {
    let full = svc.name();
    let mut out: Vec<(u16, Transport)> = declared_route(svc).and_then(Result::ok).map(|(_, p)| (p, Transport::Tcp)).into_iter().collect();
    out.extend(published_ports(svc).into_iter().map(|p| (p.container_port, p.transport)));
    out.extend(routes.iter().filter(|r| r.service == full).map(|r| (r.port, r.mode.transport())));
    out.sort();
    out.dedup();
    out
}

/// How a task names a forwarded port (`2368/tcp`), as docker names exposed ports.
pub fn port_key(port: u16, transport: Transport) -> String {
    format!("{port}/{}", transport.as_str())
}

/// One route's traffic on one public host since its gateway started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCounters {
    pub requests: u64,
    /// Responses with a 5xx status, and upstream failures.
    pub errors: u64,
}

/// What a public host's gateway reports (`observed/gateway/<member id>`), written when its
/// counters moved, at most every few seconds: `gateway ls` turns two reports into rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayStatus {
    pub member: String,
    /// Unix milliseconds of the counters.
    pub at_ms: i64,
    /// Counters by route label (its first host name, or `tcp/PORT`).
    #[serde(default)]
    pub routes: BTreeMap<String, RouteCounters>,
    /// The counters of the report before (what rates are computed against).
    #[serde(default)]
    pub previous: Option<(i64, BTreeMap<String, RouteCounters>)>,
    /// Why the gateway does not serve (a port it cannot bind, a configuration refused).
    #[serde(default)]
    pub error: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Kind for GatewayStatus {
    const PREFIX: &'static str = OBSERVED;
    const KIND: &'static str = "gateway";
    fn name(&self) -> String {
        self.member.clone()
    }
}

/// The host names the gateway serves bundle `b` at: `<name>.<first label of its author's
/// handle>.<zone>` in each of the island's zones (`hello.alice.friends.example` for
/// `alice.bsky.social`'s bundle `hello`), lower case. None when the author has no verified
/// handle (a DID names no host).
pub fn bundle_hosts(b: &Bundle, zones: &[String]) -> Vec<String> {
    let Some(label) = b.handle.as_deref().and_then(|h| h.split('.').next()).filter(|l| !l.is_empty()) else { return vec![] };
    zones.iter().map(|z| format!("{}.{}.{}", b.name, label, z.trim_end_matches('.')).to_ascii_lowercase()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Mode, Resources, UpdateConfig};

    fn service(labels: &[(&str, &str)], container_labels: serde_json::Value) -> Service {
        Service {
            stack: "blog".into(),
            name: "web".into(),
            mode: Mode::Replicated,
            replicas: 1,
            spec: serde_json::json!({ "image": "ghost", "labels": container_labels }),
            constraints: vec![],
            max_replicas_per_node: None,
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            generation: 1,
            reservations: Resources::default(),
            update_config: UpdateConfig::default(),
            pinned: false,
            previous: None,
            update_status: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn a_declared_route_takes_service_labels_then_container_labels() {
        let s =
            service(&[(LABEL_HTTP_HOST, "Blog.Friends.Example., www.friends.example"), (LABEL_HTTP_PORT, "2368")], serde_json::json!({}));
        assert_eq!(declared_route(&s), Some(Ok((vec!["blog.friends.example".into(), "www.friends.example".into()], 2368))));
        let s = service(&[], serde_json::json!({ LABEL_HTTP_HOST: "blog.friends.example" }));
        assert_eq!(declared_route(&s), Some(Ok((vec!["blog.friends.example".into()], DEFAULT_HTTP_PORT))));
        assert_eq!(declared_route(&service(&[], serde_json::json!({}))), None);
        assert_eq!(declared_route(&service(&[(LABEL_HTTP_HOST, " , ")], serde_json::json!({}))), None);
    }

    #[test]
    fn a_port_label_that_is_not_a_port_is_an_error_naming_the_label() {
        for bad in ["0", "65536", "http", "-1"] {
            let s = service(&[(LABEL_HTTP_HOST, "blog.friends.example"), (LABEL_HTTP_PORT, bad)], serde_json::json!({}));
            let e = declared_route(&s).unwrap().unwrap_err();
            assert!(e.contains(LABEL_HTTP_PORT) && e.contains(bad), "{e}");
            assert!(forwarded_ports(&s, &[]).is_empty());
        }
    }

    #[test]
    fn forwarded_ports_join_the_declared_route_and_users_routes_once_each() {
        let s = service(&[(LABEL_HTTP_HOST, "blog.friends.example"), (LABEL_HTTP_PORT, "2368")], serde_json::json!({}));
        let route = |name: &str, mode, service: &str, port| GatewayRoute {
            name: name.into(),
            mode,
            hosts: vec![],
            listen_port: Some(port),
            service: service.into(),
            port,
            max_body: None,
            timeout_ms: None,
            rate_limit: None,
            created: 0,
            extra: Default::default(),
        };
        let routes = vec![
            route("a", RouteMode::Http, "blog_web", 2368),
            route("b", RouteMode::Udp, "blog_web", 9000),
            route("c", RouteMode::Tcp, "blog_web", 25),
            route("d", RouteMode::Tcp, "other_web", 26),
        ];
        assert_eq!(forwarded_ports(&s, &routes), vec![(25, Transport::Tcp), (2368, Transport::Tcp), (9000, Transport::Udp)]);
        assert_eq!(port_key(9000, Transport::Udp), "9000/udp");
    }

    #[test]
    fn published_ports_are_those_on_every_address_one_port_each() {
        let mut s = service(&[], serde_json::json!({}));
        s.spec["publish"] = serde_json::json!([
            {"host_port": 8080, "container_port": 80, "protocol": "tcp"},
            {"host_port": 5353, "container_port": 53, "protocol": "udp"},
            {"host_ip": "127.0.0.1", "host_port": 9000, "container_port": 9000},
            {"host_port": 7000, "host_port_end": 7010, "container_port": 7000},
            {"host_port": 0, "container_port": 443},
            {"host_ip": "0.0.0.0", "host_port": 2222, "container_port": 22}
        ]);
        let got: Vec<(u16, u16, Transport)> = published_ports(&s).iter().map(|p| (p.host_port, p.container_port, p.transport)).collect();
        assert_eq!(got, [(2222, 22, Transport::Tcp), (5353, 53, Transport::Udp), (8080, 80, Transport::Tcp)]);
        assert_eq!(forwarded_ports(&s, &[]), [(22, Transport::Tcp), (53, Transport::Udp), (80, Transport::Tcp)]);
    }

    #[test]
    fn a_bundle_is_served_under_its_authors_first_handle_label_in_every_zone() {
        let b: Bundle = serde_json::from_value(serde_json::json!({"name": "hello", "uri": "at://did:plc:x/dev.atoll.bundle/hello", "version": "b", "handle": "Alice.bsky.social"})).unwrap();
        assert_eq!(bundle_hosts(&b, &["friends.example".into(), "b.org.".into()]), ["hello.alice.friends.example", "hello.alice.b.org"]);
        let anonymous = Bundle { handle: None, ..b };
        assert!(bundle_hosts(&anonymous, &["friends.example".into()]).is_empty());
    }
}
