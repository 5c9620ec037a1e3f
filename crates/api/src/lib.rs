//! Atoll's HTTP/JSON API under `/v1`, used by the daemon (server) and the CLI (client) alike.
//!
//! The OpenAPI document is generated from the route annotations in [`server`] and checked into
//! this crate as `openapi.json`; a test fails when the two differ (`UPDATE_EXPECT=1` rewrites).
#![forbid(unsafe_code)]

pub mod client;
pub mod containers;
pub mod events;
pub mod island;
pub mod metrics;
pub mod networks;
pub mod serve;
pub mod server;
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
}
