//! What `atoll gateway ls` shows of each route: the plan ([`crate::config`]), the certificate
//! that covers it, and its traffic summed over the public hosts' reports.

use atoll_names::certs::{CertDoc, covers};
use atoll_state::ingress::{GatewayStatus, RouteMode};
use serde::{Deserialize, Serialize};

use crate::config::RoutePlan;

/// One route as listed: its plan, the certificate that covers it, its traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteView {
    #[serde(flatten)]
    pub plan: RoutePlan,
    /// The certificate that covers its first host (its first name), if any (`http` routes).
    pub certificate: Option<String>,
    /// That certificate's expiry, unix seconds.
    pub certificate_not_after: Option<i64>,
    /// Requests the public hosts served since their gateways started, and how many failed (5xx).
    pub requests: u64,
    pub errors: u64,
    /// Per second, over the public hosts' last two reports (a few seconds apart).
    pub requests_per_s: f64,
    pub errors_per_s: f64,
}

/// One route's traffic summed over the public hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    pub requests: u64,
    pub errors: u64,
    pub requests_per_s: f64,
    pub errors_per_s: f64,
}

/// Per second between two readings `(unix ms, count)` of a counter; zero without an earlier
/// one, or across a restart (the count went back).
pub fn rate(now: (i64, u64), before: Option<(i64, u64)>) -> f64 {
    match before {
        Some((t0, c0)) if now.0 > t0 && now.1 >= c0 => (now.1 - c0) as f64 * 1000.0 / (now.0 - t0) as f64,
        _ => 0.0,
    }
}

/// Route `label`'s traffic over every public host's report.
pub fn traffic(reports: &[GatewayStatus], label: &str) -> Traffic {
    let mut t = Traffic::default();
    for r in reports {
        let now = r.routes.get(label).cloned().unwrap_or_default();
        let before = r.previous.as_ref().map(|(at, routes)| (*at, routes.get(label).cloned().unwrap_or_default()));
        t.requests += now.requests;
        t.errors += now.errors;
        t.requests_per_s += rate((r.at_ms, now.requests), before.as_ref().map(|(at, c)| (*at, c.requests)));
        t.errors_per_s += rate((r.at_ms, now.errors), before.as_ref().map(|(at, c)| (*at, c.errors)));
    }
    t
}

/// The routes as listed.
pub fn routes(plans: Vec<RoutePlan>, certificates: &[CertDoc], reports: &[GatewayStatus]) -> Vec<RouteView> {
    plans
        .into_iter()
        .map(|p| {
            let cert = (p.mode == RouteMode::Http)
                .then(|| p.hosts.first())
                .flatten()
                .and_then(|h| certificates.iter().find(|c| c.0.current.is_some() && covers(&c.0.names, h)));
            let t = traffic(reports, &p.label);
            RouteView {
                certificate: cert.and_then(|c| c.0.names.first().cloned()),
                certificate_not_after: cert.and_then(|c| c.0.current.as_ref().map(|x| x.not_after)),
                requests: t.requests,
                errors: t.errors,
                requests_per_s: t.requests_per_s,
                errors_per_s: t.errors_per_s,
                plan: p,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use atoll_state::ingress::RouteCounters;

    use super::*;

    fn counters(requests: u64, errors: u64) -> BTreeMap<String, RouteCounters> {
        BTreeMap::from([("blog.friends.example".to_owned(), RouteCounters { requests, errors })])
    }

    #[test]
    fn traffic_sums_the_public_hosts_and_rates_come_from_each_ones_last_two_reports() {
        let reports = vec![
            GatewayStatus {
                member: "a1".into(),
                at_ms: 12_000,
                routes: counters(150, 3),
                previous: Some((10_000, counters(50, 1))),
                error: None,
                extra: Default::default(),
            },
            // Restarted since its report before: no rate, only the count.
            GatewayStatus {
                member: "c3".into(),
                at_ms: 11_000,
                routes: counters(10, 0),
                previous: Some((6_000, counters(900, 9))),
                error: None,
                extra: Default::default(),
            },
            GatewayStatus {
                member: "d4".into(),
                at_ms: 11_000,
                routes: counters(5, 0),
                previous: None,
                error: None,
                extra: Default::default(),
            },
        ];
        let t = traffic(&reports, "blog.friends.example");
        assert_eq!((t.requests, t.errors, t.requests_per_s, t.errors_per_s), (165, 3, 50.0, 1.0));
        assert_eq!(traffic(&reports, "other.friends.example"), Traffic::default());
    }
}
