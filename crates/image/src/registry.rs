//! A client for the registry HTTP API v2 (OCI distribution): manifests, blobs with Range
//! resume, anonymous bearer tokens and credentials, retries with backoff.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, RANGE, WWW_AUTHENTICATE};

use crate::auth::{Credential, Credentials};
use crate::digest::Digest;
use crate::reference::{Reference, is_loopback_registry};
use crate::store::MAX_METADATA_BLOB;

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MEDIA_DOCKER_V1: &str = "application/vnd.docker.distribution.manifest.v1";

/// Attempts per request before a transient failure is reported.
pub const MAX_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {registry} ({url})")]
    Connect {
        registry: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("registry {registry} asks for credentials for {repository}: run `atoll login {registry}`, or check the image name")]
    Unauthorized { registry: String, repository: String },
    #[error("registry {registry} refused the credentials for {repository}: run `atoll login {registry}` again")]
    BadCredentials { registry: String, repository: String },
    #[error("{what} not found in {registry}/{repository}")]
    NotFound { registry: String, repository: String, what: String },
    #[error("registry {registry} answered {status} for {url}{detail}")]
    Status { registry: String, url: String, status: StatusCode, detail: String },
    #[error("getting a token from {realm}")]
    Token {
        realm: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("the token service {realm} sent no token")]
    NoToken { realm: String },
    #[error("{what} from {registry} is larger than {limit} bytes")]
    TooLarge { registry: String, what: String, limit: u64 },
    #[error("{0} is a Docker schema 1 manifest, which is not supported: re-push the image with a current client")]
    Schema1(String),
    #[error("reading the response from {registry}")]
    Body {
        registry: String,
        #[source]
        source: reqwest::Error,
    },
}

impl RegistryError {
    /// Worth retrying: the network or the registry had a passing problem.
    pub fn is_transient(&self) -> bool {
        match self {
            // A name that does not resolve will not resolve a second later: fail at once, as
            // docker does, rather than back off for seconds on a host without network.
            Self::Connect { source, .. } => !is_name_resolution_failure(source),
            Self::Body { .. } => true,
            Self::Status { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
            Self::Token { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// The caller named something that does not exist or is not theirs (vs. a broken registry).
    pub fn is_callers_fault(&self) -> bool {
        matches!(self, Self::NotFound { .. } | Self::Unauthorized { .. } | Self::BadCredentials { .. } | Self::Schema1(_))
    }
}

/// Whether a request failed because the registry's name did not resolve.
fn is_name_resolution_failure(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        let text = c.to_string();
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Settings shared by all registry sessions of a daemon.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `HOST[:PORT]`s to speak plain HTTP to, besides loopback.
    pub insecure: Vec<String>,
    pub credentials: Credentials,
}

/// An HTTP client plus settings; cheap to clone.
#[derive(Debug, Clone)]
pub struct Registries {
    http: reqwest::Client,
    config: Arc<RegistryConfig>,
}

impl Registries {
    pub fn new(config: RegistryConfig) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("atoll/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .build()
            .expect("TLS backend initialises");
        Self { http, config: Arc::new(config) }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.config.credentials
    }

    fn scheme(&self, registry: &str) -> &'static str {
        if is_loopback_registry(registry) || self.config.insecure.iter().any(|h| h == registry) { "http" } else { "https" }
    }

    /// A session for one repository; it caches the bearer token it obtains.
    pub fn session(&self, reference: &Reference) -> Session {
        self.session_with(reference, self.config.credentials.get(reference.registry()))
    }

    pub fn session_with(&self, reference: &Reference, cred: Option<Credential>) -> Session {
        let host = reference.api_host().to_owned();
        Session {
            http: self.http.clone(),
            base: format!("{}://{host}/v2", self.scheme(&host)),
            registry: reference.registry().to_owned(),
            repository: reference.repository().to_owned(),
            cred,
            auth: Arc::new(Mutex::new(None)),
        }
    }
}

/// Talks to one repository of one registry.
#[derive(Debug, Clone)]
pub struct Session {
    http: reqwest::Client,
    base: String,
    registry: String,
    repository: String,
    cred: Option<Credential>,
    /// The Authorization header value that last worked.
    auth: Arc<Mutex<Option<String>>>,
}

/// A fetched manifest or index, with its media type and digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// Exponential backoff with jitter: 250 ms, 500 ms, 1 s, 2 s… capped at 5 s.
pub fn backoff(attempt: u32) -> Duration {
    let base = 250u64.saturating_mul(1 << attempt.min(5)).min(5000);
    Duration::from_millis(base / 2 + fastrand::u64(..=base / 2))
}

fn parse_challenge(h: &str) -> Option<(String, Vec<(String, String)>)> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let mut params = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let after = after.trim_start();
        let (v, remain) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            after.split_once(',').map_or((after, ""), |(v, r)| (v, r))
        };
        params.push((k.trim().to_ascii_lowercase(), v.to_owned()));
        s = remain.trim_start_matches([',', ' ']);
    }
    Some((scheme.to_ascii_lowercase(), params))
}

impl Session {
    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn basic(&self) -> Option<String> {
        use base64::Engine as _;
        self.cred
            .as_ref()
            .map(|c| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))))
    }

    /// One GET with auth handling: on a 401, answer the challenge once and retry.
    async fn get_once(&self, url: &str, headers: &HeaderMap) -> Result<reqwest::Response, RegistryError> {
        let connect = |source| RegistryError::Connect { registry: self.registry.clone(), url: url.to_owned(), source };
        let mut answered = false;
        loop {
            let mut req = self.http.get(url).headers(headers.clone());
            if let Some(a) = self.auth.lock().unwrap().clone() {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = req.send().await.map_err(connect)?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if answered {
                return Err(if self.cred.is_some() {
                    RegistryError::BadCredentials { registry: self.registry.clone(), repository: self.repository.clone() }
                } else {
                    RegistryError::Unauthorized { registry: self.registry.clone(), repository: self.repository.clone() }
                });
            }
            answered = true;
            let challenge = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(parse_challenge);
            let header = match challenge {
                Some((scheme, params)) if scheme == "bearer" => Some(self.token(&params).await?),
                Some((scheme, _)) if scheme == "basic" => self.basic(),
                _ => None,
            };
            let Some(header) = header else {
                return Err(RegistryError::Unauthorized { registry: self.registry.clone(), repository: self.repository.clone() });
            };
            *self.auth.lock().unwrap() = Some(header);
        }
    }

    /// Fetches a bearer token from the realm of a challenge (with credentials if we have them).
    async fn token(&self, params: &[(String, String)]) -> Result<String, RegistryError> {
        let get = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let realm = get("realm")
            .ok_or_else(|| RegistryError::Unauthorized { registry: self.registry.clone(), repository: self.repository.clone() })?;
        let wrap = |source| RegistryError::Token { realm: realm.clone(), source: Box::new(source) };
        let mut query: Vec<(String, String)> = Vec::new();
        if let Some(s) = get("service") {
            query.push(("service".into(), s));
        }
        query.push(("scope".into(), get("scope").unwrap_or_else(|| format!("repository:{}:pull", self.repository))));
        let mut req = self.http.get(&realm).query(&query);
        if let Some(b) = self.basic() {
            req = req.header(AUTHORIZATION, b);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| wrap(RegistryError::Connect { registry: self.registry.clone(), url: realm.clone(), source }))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::BadCredentials { registry: self.registry.clone(), repository: self.repository.clone() });
        }
        if !status.is_success() {
            return Err(wrap(RegistryError::Status { registry: self.registry.clone(), url: realm.clone(), status, detail: String::new() }));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = resp.json().await.map_err(|source| wrap(RegistryError::Body { registry: self.registry.clone(), source }))?;
        let t = t.token.or(t.access_token).filter(|t| !t.is_empty()).ok_or(RegistryError::NoToken { realm: realm.clone() })?;
        Ok(format!("Bearer {t}"))
    }

    /// GET with retries on transient failures; non-success statuses become errors.
    async fn get(&self, url: &str, headers: HeaderMap, what: &str) -> Result<reqwest::Response, RegistryError> {
        let mut attempt = 0;
        loop {
            let result = self.get_once(url, &headers).await.and_then(|resp| self.check(resp, url, what));
            match result {
                Err(e) if e.is_transient() && attempt + 1 < MAX_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "transient registry error, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn check(&self, resp: reqwest::Response, url: &str, what: &str) -> Result<reqwest::Response, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                what: what.to_owned(),
            });
        }
        Err(RegistryError::Status { registry: self.registry.clone(), url: url.to_owned(), status, detail: String::new() })
    }

    /// Checks that the registry accepts our credentials (for `atoll login`).
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = format!("{}/", self.base);
        let resp = self.get_once(&url, &HeaderMap::new()).await?;
        self.check(resp, &url, "API root").map(|_| ())
    }

    /// Fetches a manifest or index by tag or digest. Verifies the digest when asked by digest.
    pub async fn manifest(&self, reference: &str) -> Result<FetchedManifest, RegistryError> {
        let url = format!("{}/{}/manifests/{reference}", self.base, self.repository);
        let mut headers = HeaderMap::new();
        let accept = [MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST].join(", ");
        headers.insert(ACCEPT, accept.parse().expect("valid header"));
        let resp = self.get(&url, headers, &format!("manifest {reference}")).await?;
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or("").trim().to_owned())
            .unwrap_or_default();
        let bytes = self.read_limited(resp, &format!("manifest {reference}")).await?;
        if media_type.starts_with(MEDIA_DOCKER_V1) {
            return Err(RegistryError::Schema1(format!("{}/{}:{reference}", self.registry, self.repository)));
        }
        Ok(FetchedManifest { digest: Digest::of(&bytes), bytes, media_type })
    }

    /// Fetches a small blob (an image config) whole.
    pub async fn small_blob(&self, digest: &Digest) -> Result<Vec<u8>, RegistryError> {
        let url = format!("{}/{}/blobs/{digest}", self.base, self.repository);
        let resp = self.get(&url, HeaderMap::new(), &format!("blob {digest}")).await?;
        self.read_limited(resp, &format!("blob {digest}")).await
    }

    /// Starts streaming a blob from byte `offset`. Returns the response and how many leading
    /// bytes of its body to skip (a registry that ignores Range sends everything again).
    pub async fn blob_from(&self, digest: &Digest, offset: u64) -> Result<(reqwest::Response, u64), RegistryError> {
        let url = format!("{}/{}/blobs/{digest}", self.base, self.repository);
        let mut headers = HeaderMap::new();
        if offset > 0 {
            headers.insert(RANGE, format!("bytes={offset}-").parse().expect("valid header"));
        }
        let resp = self.get_once(&url, &headers).await.and_then(|r| self.check(r, &url, &format!("blob {digest}")))?;
        let skip = if offset > 0 && resp.status() != StatusCode::PARTIAL_CONTENT { offset } else { 0 };
        Ok((resp, skip))
    }

    async fn read_limited(&self, mut resp: reqwest::Response, what: &str) -> Result<Vec<u8>, RegistryError> {
        let too_large = || RegistryError::TooLarge { registry: self.registry.clone(), what: what.to_owned(), limit: MAX_METADATA_BLOB };
        if resp.content_length().is_some_and(|n| n > MAX_METADATA_BLOB) {
            return Err(too_large());
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|source| RegistryError::Body { registry: self.registry.clone(), source })? {
            if out.len() as u64 + chunk.len() as u64 > MAX_METADATA_BLOB {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(s, "bearer");
        assert_eq!(p[0], ("realm".into(), "https://auth.docker.io/token".into()));
        assert_eq!(p[2], ("scope".into(), "repository:library/alpine:pull".into()));
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(s, "basic");
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for a in 0..10 {
            let d = backoff(a);
            assert!(d <= Duration::from_millis(5000), "{d:?}");
        }
        assert!(backoff(0) <= Duration::from_millis(250));
    }
}
