//! `atoll gateway route add|rm`: a route checked against one replica ([`plan_add`], pure)
//! and committed through the leader, planned again if the state moved meanwhile.

use std::time::Duration;

use atoll_island::Manager;
use atoll_orchestrator::records::Records;
use atoll_state::desired::{self, Kind};
use atoll_state::ingress::{GatewayRoute, RouteMode};
use atoll_state::{Expect, Request, Response};
use serde::{Deserialize, Serialize};

use crate::IngressError;

/// A route to add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAdd {
    /// Its name (letters, digits, `.`, `-`, `_`); by default its first host name, or
    /// `tcp-PORT` / `udp-PORT`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub mode: RouteMode,
    /// Host names (`http`, `tls_passthrough`): `blog.friends.example`, or `*.friends.example`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The public hosts' port (`tcp`, `udp`).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub listen_port: Option<u16>,
    /// The service (`<stack>_<service>`).
    pub service: String,
    /// The replicas' container port.
    #[schema(minimum = 1)]
    pub port: u16,
    /// The largest request body, in bytes (`http`).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_body: Option<u64>,
    /// How long a replica may take to answer, in milliseconds (`http`).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u64>,
    /// Per client IP, requests per second (`http`).
    #[serde(default)]
    #[schema(exclusive_minimum = 0)]
    pub rate_limit: Option<f64>,
}

/// The ports the gateway itself listens on, which a TCP route cannot take.
pub const GATEWAY_PORTS: [u16; 2] = [80, 443];

fn invalid(s: impl Into<String>) -> IngressError {
    IngressError::Invalid(s.into())
}

/// The route `req` asks for, checked against the routes and services in `records`.
pub fn plan_add(req: &RouteAdd, records: &Records, now: i64) -> Result<GatewayRoute, IngressError> {
    if records.service(&req.service).is_none() {
        let known: Vec<String> = records.services.iter().map(|(s, _)| s.name()).collect();
        return Err(IngressError::NotFound(format!(
            "no service {} ({})",
            req.service,
            atoll_util::known_list(&known, "there are none: `atoll stack deploy` one first")
        )));
    }
    if req.port == 0 {
        return Err(invalid("port: 0 is not a port (1-65535)"));
    }
    let hosts: Vec<String> = req.hosts.iter().map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase()).collect();
    let by_port = matches!(req.mode, RouteMode::Tcp | RouteMode::Udp);
    if by_port {
        if !hosts.is_empty() {
            return Err(invalid(format!("hosts: a {} route is chosen by its port, not by host names", req.mode.as_str())));
        }
        match req.listen_port {
            None | Some(0) => {
                return Err(invalid(format!("listen_port: a {} route needs the public port to listen on", req.mode.as_str())));
            }
            Some(p) if req.mode == RouteMode::Tcp && GATEWAY_PORTS.contains(&p) => {
                return Err(invalid(format!("listen_port: {p} is the gateway's own (HTTP and HTTPS routes use it by host name)")));
            }
            Some(_) => {}
        }
    } else {
        if hosts.is_empty() {
            return Err(invalid(format!("hosts: a {} route needs at least one host name", req.mode.as_str())));
        }
        if let Some(bad) = hosts.iter().find(|h| !atoll_gateway::config::valid_host(h)) {
            return Err(invalid(format!(
                "hosts: {bad:?} is not a valid DNS name (letters, digits, '-', '.'; '*.' only as the first label)"
            )));
        }
        if req.listen_port.is_some() {
            return Err(invalid(format!("listen_port: a {} route listens on 443 (by host name)", req.mode.as_str())));
        }
    }
    if req.mode != RouteMode::Http && (req.max_body.is_some() || req.timeout_ms.is_some() || req.rate_limit.is_some()) {
        return Err(invalid("max_body, timeout_ms and rate_limit apply to http routes only"));
    }
    if req.max_body == Some(0) || req.timeout_ms == Some(0) {
        return Err(invalid(if req.max_body == Some(0) { "max_body: must be more than 0" } else { "timeout_ms: must be more than 0" }));
    }
    if let Some(r) = req.rate_limit
        && !(r > 0.0 && r.is_finite())
    {
        return Err(invalid(format!("rate_limit: {r} is not a rate (requests per second, more than 0)")));
    }
    let name = match &req.name {
        Some(n) => n.clone(),
        None if by_port => format!("{}-{}", req.mode.as_str(), req.listen_port.unwrap_or_default()),
        None => hosts[0].trim_start_matches("*.").to_owned(),
    };
    if name.is_empty() || name.len() > 128 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(invalid(format!("name: {name:?} must be 1 to 128 letters, digits, '.', '-' or '_'")));
    }
    for (r, _) in &records.routes {
        if r.name == name {
            return Err(IngressError::Exists(format!("a route named {name} exists (`atoll gateway route rm {name}` first)")));
        }
        let clash = if by_port {
            r.listen_port == req.listen_port && r.mode == req.mode
        } else {
            !matches!(r.mode, RouteMode::Tcp | RouteMode::Udp) && r.hosts.iter().any(|h| hosts.contains(h))
        };
        if clash {
            let what = if by_port {
                format!("port {}/{}", req.listen_port.unwrap_or_default(), req.mode.transport().as_str())
            } else {
                "a host".into()
            };
            return Err(IngressError::Exists(format!("route {} already serves {what} of this one", r.name)));
        }
    }
    Ok(GatewayRoute {
        name,
        mode: req.mode,
        hosts,
        listen_port: req.listen_port,
        service: req.service.clone(),
        port: req.port,
        max_body: req.max_body,
        timeout_ms: req.timeout_ms,
        rate_limit: req.rate_limit,
        created: now,
        extra: Default::default(),
    })
}

/// How many times a write that lost a compare-and-set is planned again.
const ATTEMPTS: u32 = 5;

async fn commit<T>(m: &Manager, f: impl Fn(&Records) -> Result<(Request, T), IngressError>) -> Result<T, IngressError> {
    for _ in 0..ATTEMPTS {
        let records = m.replica().with(Records::read)?;
        let (op, out) = f(&records)?;
        match m.propose(op).await? {
            Response::Done { version } => {
                m.wait_applied(version, Duration::from_secs(5)).await;
                return Ok(out);
            }
            Response::Conflict { .. } | Response::TxnConflict { .. } => tokio::time::sleep(Duration::from_millis(100)).await,
            Response::Refused { reason } => return Err(IngressError::Refused(reason)),
            Response::Empty => return Ok(out),
        }
    }
    Err(IngressError::Busy(ATTEMPTS))
}

/// Adds a route (every public host serves it within a second or so).
pub async fn add_route(m: &Manager, req: &RouteAdd) -> Result<GatewayRoute, IngressError> {
    commit(m, |records| {
        let r = plan_add(req, records, atoll_island::manager::unix_now())?;
        Ok((desired::put(&r, Expect::Absent), r))
    })
    .await
}

/// Removes route `name` (a label's route goes with its label).
pub async fn remove_route(m: &Manager, name: &str) -> Result<GatewayRoute, IngressError> {
    commit(m, |records| match records.routes.iter().find(|(r, _)| r.name == name) {
        Some((r, v)) => Ok((desired::delete::<GatewayRoute>(&r.name(), Expect::Version(*v)), r.clone())),
        None if records.service(name).is_some() => Err(IngressError::Invalid(format!(
            "{name}'s route comes from its atoll.http.host label: remove the label and deploy the stack again"
        ))),
        None => Err(IngressError::NotFound(format!("no route named {name} (`atoll gateway ls` lists them)"))),
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Records {
        let mut r = Records::default();
        r.services.push((
            serde_json::from_value(serde_json::json!({"stack": "blog", "name": "web", "mode": "replicated", "replicas": 1, "spec": {}}))
                .unwrap(),
            1,
        ));
        r
    }

    fn req(mode: RouteMode, hosts: &[&str], listen_port: Option<u16>) -> RouteAdd {
        RouteAdd {
            name: None,
            mode,
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            listen_port,
            service: "blog_web".into(),
            port: 2368,
            max_body: None,
            timeout_ms: None,
            rate_limit: None,
        }
    }

    #[test]
    fn a_route_is_named_after_its_first_host_or_its_port() {
        let r = plan_add(&req(RouteMode::Http, &["Blog.Friends.Example."], None), &records(), 7).unwrap();
        assert_eq!((r.name.as_str(), r.hosts.as_slice(), r.created), ("blog.friends.example", &["blog.friends.example".to_owned()][..], 7));
        let r = plan_add(&req(RouteMode::Udp, &[], Some(5353)), &records(), 7).unwrap();
        assert_eq!(r.name, "udp-5353");
    }

    #[test]
    fn bad_routes_are_refused_naming_the_field() {
        let mut rec = records();
        let cases: Vec<(RouteAdd, &str)> = vec![
            (RouteAdd { service: "blog_nope".into(), ..req(RouteMode::Http, &["a.b"], None) }, "no service blog_nope (there are blog_web)"),
            (RouteAdd { port: 0, ..req(RouteMode::Http, &["a.b"], None) }, "port:"),
            (req(RouteMode::Http, &[], None), "hosts:"),
            (req(RouteMode::Http, &["a_b.c"], None), "hosts: \"a_b.c\""),
            (req(RouteMode::Http, &["a.b"], Some(8080)), "listen_port:"),
            (req(RouteMode::Tcp, &[], None), "listen_port:"),
            (req(RouteMode::Tcp, &[], Some(443)), "listen_port: 443"),
            (req(RouteMode::Tcp, &["a.b"], Some(25)), "hosts:"),
            (RouteAdd { rate_limit: Some(f64::NAN), ..req(RouteMode::Http, &["a.b"], None) }, "rate_limit:"),
            (RouteAdd { rate_limit: Some(1.0), ..req(RouteMode::Tcp, &[], Some(25)) }, "http routes only"),
            (RouteAdd { timeout_ms: Some(0), ..req(RouteMode::Http, &["a.b"], None) }, "timeout_ms:"),
            (RouteAdd { name: Some("a b".into()), ..req(RouteMode::Http, &["a.b"], None) }, "name:"),
        ];
        for (r, want) in &cases {
            let e = plan_add(r, &rec, 0).unwrap_err().to_string();
            assert!(e.contains(want), "{r:?}: {e}");
        }
        rec.routes.push((plan_add(&req(RouteMode::Http, &["a.b", "c.d"], None), &rec, 0).unwrap(), 1));
        rec.routes.push((plan_add(&req(RouteMode::Tcp, &[], Some(25)), &rec, 0).unwrap(), 2));
        for (r, want) in [
            (RouteAdd { name: Some("other".into()), ..req(RouteMode::TlsPassthrough, &["c.d"], None) }, "route a.b already serves a host"),
            (req(RouteMode::Tcp, &[], Some(25)), "a route named tcp-25 exists"),
            (RouteAdd { name: Some("smtp2".into()), ..req(RouteMode::Tcp, &[], Some(25)) }, "route tcp-25 already serves port 25/tcp"),
        ] {
            let e = plan_add(&r, &rec, 0).unwrap_err().to_string();
            assert!(e.contains(want), "{r:?}: {e}");
        }
        // The same port over UDP is another route.
        plan_add(&req(RouteMode::Udp, &[], Some(25)), &rec, 0).unwrap();
    }
}
