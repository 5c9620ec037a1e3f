//! Atoll's HTTPS gateway (issue 17), as a library the island runs on every public host.
//!
//! [`Gateway::start`] binds HTTP (redirects to HTTPS) and HTTPS (TLS terminated with the
//! certificate the SNI names, then HTTP/1.1 or HTTP/2 proxied by host to a healthy upstream over
//! a keep-alive pool, or TLS passed through unopened) and follows a `watch` channel of
//! [`GatewayConfig`]s: routes, certificates and TCP/UDP port forwards change without a restart
//! and without closing what is open. [`Metrics::register`] adds its Prometheus metrics to a
//! scrape; the access log is JSON lines on the `tracing` target [`ACCESS_LOG_TARGET`].

pub mod body;
pub mod config;
pub mod headers;
pub mod l4;
pub mod limits;
pub mod metrics;
pub mod pages;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod tls;
pub mod upstream;

pub use config::{CertPair, ConfigError, GatewayConfig, HttpRoute, Limits, RateLimit, Route, RouteKind, Upstream};
pub use metrics::{ACCESS_LOG_TARGET, AccessRecord, Metrics, RouteTotals, UpstreamError};
pub use server::{Applied, Gateway, GatewayHandle};
