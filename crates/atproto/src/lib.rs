//! ATProto for Atoll's bundles: resolve a handle or DID to a verified identity and its PDS
//! ([`identity`]), read and write records and blobs over XRPC ([`xrpc`]), check every blob
//! against its CID and keep it in a content-addressed cache ([`blob`]).
//!
//! Everything a stranger's server answers is bounded ([`Limits`]). Production talks https
//! only; [`Config::insecure_http_port`] lets tests use a plain-http PDS, PLC directory and
//! well-known endpoints on loopback.

pub mod aturi;
pub mod blob;
pub mod bundle;
mod error;
mod http;
pub mod identity;
pub mod limits;
pub mod repo;
pub mod xrpc;

use std::net::SocketAddr;
use std::sync::Arc;

pub use aturi::AtUri;
pub use blob::{BlobCache, BlobCid};
pub use error::{Error, Result};
pub use identity::Identity;
pub use limits::Limits;
pub use xrpc::{Blob, Record, Session};

/// The public PLC directory.
pub const DEFAULT_PLC_URL: &str = "https://plc.directory";

/// How a [`Client`] reaches the ATProto network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The PLC directory `did:plc` documents come from.
    pub plc_url: String,
    /// The DNS server for `_atproto` TXT records and every host name; `None` reads
    /// `/etc/resolv.conf`.
    pub nameserver: Option<SocketAddr>,
    pub limits: Limits,
    /// Tests only: allow plain http everywhere, and make the lookups ATProto defines over
    /// https (`/.well-known/atproto-did`, did:web's `/.well-known/did.json`) as
    /// `http://HOST:PORT/…` with this port. Never set in production.
    pub insecure_http_port: Option<u16>,
}

impl Default for Config {
    fn default() -> Self {
        Config { plc_url: DEFAULT_PLC_URL.to_owned(), nameserver: None, limits: Limits::default(), insecure_http_port: None }
    }
}

/// A client of the ATProto network; cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: http::Http,
    dns: Arc<hickory_resolver::TokioResolver>,
    plc_url: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("plc_url", &self.plc_url).finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `config`; fails if the PLC URL is not one it may use or the system's
    /// resolver configuration cannot be read. Must be called inside a tokio runtime.
    pub fn new(config: Config) -> Result<Client> {
        let dns = Arc::new(http::resolver(config.nameserver)?);
        let http = http::Http::new(config.limits, config.insecure_http_port, dns.clone())?;
        http.check_url(&config.plc_url)?;
        Ok(Client { http, dns, plc_url: config.plc_url.trim_end_matches('/').to_owned() })
    }
}
