//! The one HTTP transport every request goes through: https only (unless the test-only
//! insecure mode is on), no proxies, no redirects, host names resolved by the same hickory
//! resolver that answers `_atproto` TXT lookups, a total timeout, and bodies read under a cap
//! (JSON also under a nesting cap) before anything parses them.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::limits::{Limits, json_deeper_than};
use crate::{Error, Result};

/// Builds the resolver: `nameserver` (UDP and TCP on its port) or the system's
/// `/etc/resolv.conf`.
pub(crate) fn resolver(nameserver: Option<SocketAddr>) -> Result<TokioResolver> {
    let builder = match nameserver {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(addr.ip(), true, vec![udp, tcp])]);
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        }
        None => TokioResolver::builder_tokio().map_err(|e| Error::Dns { name: "/etc/resolv.conf".into(), message: e.to_string() })?,
    };
    builder.build().map_err(|e| Error::Dns { name: "resolver".into(), message: e.to_string() })
}

/// reqwest's name lookups through hickory (so tests can point every name at their own server).
struct HickoryDns(Arc<TokioResolver>);

impl reqwest::dns::Resolve for HickoryDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        Box::pin(async move {
            // hickory's own text prints its whole query with Debug: say it in words.
            let ips = resolver.lookup_ip(name.as_str()).await.map_err(|e| {
                let host = name.as_str().trim_end_matches('.');
                let why = if e.is_no_records_found() {
                    format!("{host} has no address (no A or AAAA record)")
                } else {
                    format!("resolving {host}: {e}")
                };
                Box::new(std::io::Error::other(why)) as Box<dyn std::error::Error + Send + Sync>
            })?;
            let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    pub(crate) limits: Limits,
    /// Test-only: plain http allowed, and `https://HOST/…` lookups (well-known, did:web) made
    /// as `http://HOST:PORT/…`.
    pub(crate) insecure_http_port: Option<u16>,
}

impl Http {
    pub(crate) fn new(limits: Limits, insecure_http_port: Option<u16>, dns: Arc<TokioResolver>) -> Result<Http> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("atoll/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(HickoryDns(dns)))
            .build()
            .map_err(|e| Error::Http { url: "(client)".into(), message: e.to_string() })?;
        Ok(Http { client, limits, insecure_http_port })
    }

    /// Parses `url` and refuses plain http unless the insecure mode is on.
    pub(crate) fn check_url(&self, url: &str) -> Result<reqwest::Url> {
        let parsed = reqwest::Url::parse(url).map_err(|_| Error::InvalidUrl(url.to_owned()))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.insecure_http_port.is_some() => {}
            "http" => return Err(Error::InsecureUrl(url.to_owned())),
            _ => return Err(Error::InvalidUrl(url.to_owned())),
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(Error::InvalidUrl(url.to_owned()));
        }
        Ok(parsed)
    }

    /// `https://HOST[:PORT]PATH`, or in insecure mode `http://HOST:PORT'PATH` (PORT' the
    /// configured one unless `port` is given).
    pub(crate) fn host_url(&self, host: &str, port: Option<u16>, path: &str) -> String {
        match (self.insecure_http_port, port) {
            (Some(p), None) => format!("http://{host}:{p}{path}"),
            (Some(_), Some(p)) => format!("http://{host}:{p}{path}"),
            (None, Some(p)) => format!("https://{host}:{p}{path}"),
            (None, None) => format!("https://{host}{path}"),
        }
    }

    pub(crate) fn request(&self, method: reqwest::Method, url: &str) -> Result<reqwest::RequestBuilder> {
        Ok(self.client.request(method, self.check_url(url)?))
    }

    /// Sends `req`; any status but 2xx is an error carrying the start of the body.
    pub(crate) async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| self.transport_error(url, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = self.read_capped(resp, "an error body", url, 4096).await.unwrap_or_default();
        let mut body = String::from_utf8_lossy(&body).into_owned();
        body.truncate(512);
        Err(Error::Status { url: url.to_owned(), status: status.as_u16(), body })
    }

    /// Reads the whole body, failing as soon as it passes `limit` bytes.
    pub(crate) async fn read_capped(&self, mut resp: reqwest::Response, what: &'static str, url: &str, limit: u64) -> Result<Vec<u8>> {
        let too_large = || Error::TooLarge { what, url: url.to_owned(), limit };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport_error(url, e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Reads a JSON body under the size and depth limits (not parsed yet).
    pub(crate) async fn read_json(&self, resp: reqwest::Response, what: &'static str, url: &str) -> Result<Vec<u8>> {
        let body = self.read_capped(resp, what, url, self.limits.max_json_bytes).await?;
        self.check_json(&body, what, url)?;
        Ok(body)
    }

    pub(crate) fn check_json(&self, body: &[u8], what: &'static str, url: &str) -> Result<()> {
        if body.len() as u64 > self.limits.max_json_bytes {
            return Err(Error::TooLarge { what, url: url.to_owned(), limit: self.limits.max_json_bytes });
        }
        if json_deeper_than(body, self.limits.max_json_depth) {
            return Err(Error::TooDeep { what, url: url.to_owned(), limit: self.limits.max_json_depth });
        }
        Ok(())
    }

    /// GETs `url` and parses its JSON as `T`.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(&self, what: &'static str, url: &str) -> Result<T> {
        let req = self.request(reqwest::Method::GET, url)?.header(reqwest::header::ACCEPT, "application/json");
        let resp = self.send(req, url).await?;
        let body = self.read_json(resp, what, url).await?;
        serde_json::from_slice(&body).map_err(|e| Error::BadJson { what, url: url.to_owned(), message: e.to_string() })
    }

    pub(crate) fn transport_error(&self, url: &str, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            Error::Timeout { url: url.to_owned(), timeout: self.limits.timeout }
        } else {
            // reqwest's Display names only the outermost layer; the cause says what happened.
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                // Wrappers often repeat their cause's text: once is enough.
                let text = s.to_string();
                if !message.contains(&text) {
                    message = format!("{message}: {text}");
                }
                source = s.source();
            }
            Error::Http { url: url.to_owned(), message }
        }
    }
}
