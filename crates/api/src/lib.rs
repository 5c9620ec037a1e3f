//! Atoll's HTTP/JSON API under `/v1`, used by the daemon (server) and the CLI (client) alike.
//!
//! The OpenAPI document is generated from the route annotations in [`server`] and checked into
//! this crate as `openapi.json`; a test fails when the two differ (`UPDATE_EXPECT=1` rewrites).
#![forbid(unsafe_code)]

pub mod bundle_containers;
pub mod bundle_island;
pub mod bundles;
pub mod client;
pub mod containers;
pub mod events;
pub mod gateway;
pub mod island;
pub mod metrics;
pub mod names;
pub mod networks;
pub mod serve;
pub mod server;
pub mod service_logs;
pub mod stacks;
pub mod types;
pub mod volumes;

pub use client::{Client, ClientError};
pub use types::ErrorBody;

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_openapi_matches_routes() {
        let doc = serde_json::to_string_pretty(&crate::server::openapi()).unwrap();
        expect_test::expect_file!["../openapi.json"].assert_eq(&(doc + "\n"));
    }

    /// The patterns written out in attributes (utoipa takes only literals) are the ones
    /// validation is tested against (a stale copy once refused `SIGRTMIN+3`).
    #[test]
    fn attribute_patterns_are_the_tested_ones() {
        let doc = serde_json::to_value(crate::server::openapi()).unwrap();
        let mut patterns = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(serde_json::Value::String(p)) = m.get("pattern") {
                        out.push(p.clone());
                    }
                    m.values().for_each(|v| walk(v, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(&doc, &mut patterns);
        let signals: Vec<&String> = patterns.iter().filter(|p| p.contains("STKFLT")).collect();
        assert!(signals.len() >= 2, "{signals:?}");
        assert!(signals.iter().all(|p| *p == atoll_spec::openapi::SIGNAL_PATTERN), "{signals:?}");
        let domains: Vec<&String> = patterns.iter().filter(|p| p.contains("A-Za-z0-9-]{0,61}")).collect();
        assert!(domains.len() >= 2, "{domains:?}");
        assert!(domains.iter().all(|p| *p == atoll_names::DOMAIN_PATTERN || *p == atoll_names::CERT_NAME_PATTERN), "{domains:?}");
    }
}
