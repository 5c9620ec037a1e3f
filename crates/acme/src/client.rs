//! Obtaining a certificate by ACME (RFC 8555) DNS-01 with instant-acme: account create-or-reuse,
//! order, one TXT record per authorization through the [`Dns01`] seam, bounded polling,
//! finalization with a fresh ECDSA P-256 key, and the TXT records removed whatever happened.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, Problem, RetryPolicy,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::chain::{ChainError, check_key_matches, parse_chain};
use crate::model::CurrentCertificate;
use crate::names::{NameError, challenge_record, normalize_names};
use crate::seal::{DataKey, SealError, seal};

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Whether `url` can be an ACME directory: an absolute `http(s)` URI with a host (instant-acme
/// panics on one it cannot send a request to). The error says what is wrong.
pub fn check_directory_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("https" | "http"), Some(h)) if !h.is_empty() => Ok(()),
        _ => Err(format!("{url:?} is not an http(s) URL with a host")),
    }
}

/// How long one HTTP request to the CA may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Publishes and removes DNS-01 TXT records. The island writes them to its own zone through
/// Raft and returns from `present` once every public host serves them.
///
/// `fqdn` is `_acme-challenge.<name>` (no final dot); a wildcard and its base name share one
/// `fqdn` with two values, so `present` must add a value beside any already there, and
/// `cleanup` remove only the value it is given. `present` may be called for several records at
/// once (concurrently); `cleanup` is called one record at a time, after the CA is done.
#[async_trait::async_trait]
pub trait Dns01: Send + Sync {
    async fn present(&self, fqdn: &str, value: &str) -> Result<(), String>;
    async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), String>;
}

/// Where and as whom to ask for certificates.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The ACME directory, e.g. [`LETS_ENCRYPT`] or pebble's `https://127.0.0.1:14000/dir`.
    pub directory_url: String,
    /// Extra CA certificates (PEM) trusted for the directory's TLS, besides the system's.
    pub ca_bundle_pem: Option<String>,
    /// Given to the CA as `mailto:` contact when an account is created.
    pub contact_email: Option<String>,
    /// Account credentials (JSON) returned by an earlier [`obtain`] for this directory.
    pub account: Option<String>,
    /// How long to wait for the CA to validate the challenges, and again to issue.
    pub validation_timeout: Duration,
}

impl AcmeConfig {
    pub fn new(directory_url: impl Into<String>) -> Self {
        AcmeConfig {
            directory_url: directory_url.into(),
            ca_bundle_pem: None,
            contact_email: None,
            account: None,
            validation_timeout: Duration::from_secs(120),
        }
    }
}

/// A certificate just obtained. `key_pem` is the only unsealed copy of its private key: seal it
/// at once ([`Issued::into_current`]).
pub struct Issued {
    /// Normalised names the certificate is for (the order's identifiers).
    pub names: Vec<String>,
    /// Leaf first, then the intermediates.
    pub chain_pem: String,
    /// PKCS#8 PEM, ECDSA P-256.
    pub key_pem: String,
    /// The account's credentials (JSON) to store and pass back as [`AcmeConfig::account`]; a new
    /// account's if the stored one was absent, for another directory, or unknown to the CA.
    pub account_credentials: String,
    /// TXT records that could not be removed (the certificate is fine; the records are litter).
    pub cleanup_errors: Vec<String>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("names", &self.names).field("cleanup_errors", &self.cleanup_errors).finish_non_exhaustive()
    }
}

impl Issued {
    /// Reads the chain and seals the key under `data_key`, bound to the names: what a
    /// [`crate::CertificateRecord`] holds.
    pub fn into_current(self, data_key: &DataKey) -> Result<CurrentCertificate, AcmeError> {
        let info = parse_chain(&self.chain_pem)?;
        Ok(CurrentCertificate {
            issuer: info.issuer,
            not_before: info.not_before,
            not_after: info.not_after,
            sealed_key: seal(&self.key_pem, data_key, &self.names)?,
            chain_pem: self.chain_pem,
        })
    }
}

/// The step of an ACME exchange that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Account,
    Order,
    Authorization,
    Challenge,
    Validation,
    Finalize,
    Download,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Account => "creating or loading the ACME account",
            Step::Order => "placing the order",
            Step::Authorization => "reading the order's authorizations",
            Step::Challenge => "telling the CA a challenge is ready",
            Step::Validation => "waiting for the CA to validate the challenges",
            Step::Finalize => "finalizing the order",
            Step::Download => "downloading the certificate",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error(transparent)]
    Names(#[from] NameError),
    #[error("the CA bundle for the ACME directory is unusable: {0}")]
    CaBundle(String),
    #[error("the stored ACME account credentials are unreadable ({0}); remove them to create a new account")]
    Credentials(String),
    /// The CA (or the way to it) refused a step; `problem_type` is the ACME problem's type
    /// (`urn:ietf:params:acme:error:…`) when the CA sent one.
    #[error("{step} at {directory} failed: {problem}")]
    Acme { step: Step, directory: String, problem_type: Option<String>, problem: String },
    /// The CA tried the DNS-01 record for `name` and did not accept it.
    #[error("validation of {name} failed: {detail}")]
    Validation { name: String, problem_type: Option<String>, detail: String },
    #[error("the CA offers no DNS-01 challenge for {name}")]
    NoDns01 { name: String },
    #[error("the CA's authorization for {name} is {status}, not pending")]
    Authorization { name: String, status: String },
    #[error("could not publish the DNS-01 record {fqdn} for {name}: {error}")]
    Present { name: String, fqdn: String, error: String },
    #[error("timed out after {} s {step}", .after.as_secs())]
    Timeout { step: Step, after: Duration },
    #[error("could not make the certificate request (CSR): {0}")]
    Csr(String),
    #[error("the CA's certificate does not fit the request: {0}")]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

impl AcmeError {
    /// The ACME problem type the CA gave, if any (e.g. to tell rate limits apart).
    pub fn problem_type(&self) -> Option<&str> {
        match self {
            AcmeError::Acme { problem_type, .. } | AcmeError::Validation { problem_type, .. } => problem_type.as_deref(),
            _ => None,
        }
    }
}

/// "detail (type); for NAME: detail (type)".
fn problem_text(p: &Problem) -> String {
    let mut s = p.detail.clone().unwrap_or_else(|| "no detail given".to_owned());
    if let Some(t) = &p.r#type {
        s.push_str(&format!(" ({t})"));
    }
    for sub in &p.subproblems {
        s.push_str("; ");
        if let Some(Identifier::Dns(name)) = &sub.identifier {
            s.push_str(&format!("for {name}: "));
        }
        s.push_str(sub.detail.as_deref().unwrap_or("no detail given"));
        if let Some(t) = &sub.r#type {
            s.push_str(&format!(" ({t})"));
        }
    }
    s
}

/// An error and its sources, joined (hyper's own message alone is "client error (Connect)").
fn error_text(e: &(dyn StdError + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

struct Ctx<'a> {
    config: &'a AcmeConfig,
    http: Http,
}

impl Ctx<'_> {
    fn fail(&self, step: Step, e: instant_acme::Error) -> AcmeError {
        match e {
            instant_acme::Error::Api(p) => AcmeError::Acme {
                step,
                directory: self.config.directory_url.clone(),
                problem_type: p.r#type.clone(),
                problem: problem_text(&p),
            },
            instant_acme::Error::Timeout(_) => AcmeError::Timeout { step, after: self.config.validation_timeout },
            other => {
                let mut problem = error_text(&other);
                if problem.contains("invalid peer certificate") {
                    problem.push_str(" (is the directory's CA in the configured CA bundle?)");
                }
                AcmeError::Acme { step, directory: self.config.directory_url.clone(), problem_type: None, problem }
            }
        }
    }
}

/// The HTTP client instant-acme talks through: hyper + rustls (ring), the system's roots and
/// the configured bundle, a timeout per request.
#[derive(Clone)]
struct Http(Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

impl Http {
    fn new(ca_bundle_pem: Option<&str>) -> Result<Self, AcmeError> {
        let mut roots = rustls::RootCertStore::empty();
        // Unreadable system certificates are skipped; a directory they were needed for fails
        // its TLS handshake with a clear message.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(pem) = ca_bundle_pem {
            let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| AcmeError::CaBundle(e.to_string()))?;
            if certs.is_empty() {
                return Err(AcmeError::CaBundle("it holds no PEM CERTIFICATE block".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| AcmeError::CaBundle(e.to_string()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| AcmeError::CaBundle(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        // Without it, a request written in two segments waits ~40 ms for the delayed ACK.
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(REQUEST_TIMEOUT));
        let https =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().enable_http2().wrap_connector(tcp);
        Ok(Http(Client::builder(TokioExecutor::new()).build(https)))
    }
}

impl HttpClient for Http {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.0.request(req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(Ok(rsp)) => Ok(BytesResponse::from(rsp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(Box::new(e))),
                Err(_) => Err(instant_acme::Error::Other(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()).into())),
            }
        })
    }
}

/// Loads the stored account when it is for this directory, else creates one. Returns the
/// account, its credentials JSON, and whether it was loaded (rather than created).
async fn account(ctx: &Ctx<'_>) -> Result<(Account, String, bool), AcmeError> {
    let config = ctx.config;
    if let Some(json) = &config.account {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| AcmeError::Credentials(e.to_string()))?;
        if value.get("directory").and_then(|d| d.as_str()) == Some(config.directory_url.as_str()) {
            let creds: AccountCredentials = serde_json::from_value(value).map_err(|e| AcmeError::Credentials(e.to_string()))?;
            let account = Account::builder_with_http(Box::new(ctx.http.clone()))
                .from_credentials(creds)
                .await
                .map_err(|e| ctx.fail(Step::Account, e))?;
            return Ok((account, json.clone(), true));
        }
    }
    let (account, creds) = create_account(ctx).await?;
    Ok((account, creds, false))
}

async fn create_account(ctx: &Ctx<'_>) -> Result<(Account, String), AcmeError> {
    let contact = ctx.config.contact_email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
    let (account, creds) = Account::builder_with_http(Box::new(ctx.http.clone()))
        .create(&new, ctx.config.directory_url.clone(), None)
        .await
        .map_err(|e| ctx.fail(Step::Account, e))?;
    let json = serde_json::to_string(&creds).map_err(|e| AcmeError::Credentials(e.to_string()))?;
    Ok((account, json))
}

/// Obtains a certificate for `names` (wildcards allowed) by DNS-01 through `dns`. Every TXT
/// record presented is cleaned up before this returns, whatever happened (unless the future is
/// dropped midway: the island should sweep stale `_acme-challenge` records).
pub async fn obtain(config: &AcmeConfig, names: &[String], dns: &dyn Dns01) -> Result<Issued, AcmeError> {
    let names = normalize_names(names)?;
    let ctx = Ctx { config, http: Http::new(config.ca_bundle_pem.as_deref())? };
    let (mut account, mut credentials, loaded) = account(&ctx).await?;
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let order = match account.new_order(&NewOrder::new(&identifiers)).await {
        Ok(order) => order,
        // The CA forgot the stored account (a test CA restarted, an account deactivated): start afresh.
        Err(instant_acme::Error::Api(p)) if loaded && p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist") => {
            tracing::info!(directory = %config.directory_url, "the CA does not know the stored ACME account; creating a new one");
            (account, credentials) = create_account(&ctx).await?;
            account.new_order(&NewOrder::new(&identifiers)).await.map_err(|e| ctx.fail(Step::Order, e))?
        }
        Err(e) => return Err(ctx.fail(Step::Order, e)),
    };
    let mut presented = Vec::new();
    let result = run_order(&ctx, order, &names, dns, &mut presented).await;
    let mut cleanup_errors = Vec::new();
    for (fqdn, value) in presented {
        if let Err(e) = dns.cleanup(&fqdn, &value).await {
            tracing::warn!(%fqdn, error = %e, "could not remove a DNS-01 record");
            cleanup_errors.push(format!("{fqdn}: {e}"));
        }
    }
    let (chain_pem, key_pem) = result?;
    Ok(Issued { names, chain_pem, key_pem, account_credentials: credentials, cleanup_errors })
}

/// Everything after the order is placed; records presented are pushed to `presented` before
/// they are asked for, so the caller cleans up even a half-done `present`.
async fn run_order(
    ctx: &Ctx<'_>,
    mut order: Order,
    names: &[String],
    dns: &dyn Dns01,
    presented: &mut Vec<(String, String)>,
) -> Result<(String, String), AcmeError> {
    // Pass 1: what each pending authorization wants published.
    let mut wanted = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.map_err(|e| ctx.fail(Step::Authorization, e))?;
        let name = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => return Err(AcmeError::Authorization { name, status: format!("{other:?}").to_lowercase() }),
        }
        let Some(challenge) = authz.challenge(ChallengeType::Dns01) else {
            return Err(AcmeError::NoDns01 { name });
        };
        let value = challenge.key_authorization().dns_value();
        wanted.push((name, value));
    }
    // Publish them all (at once: the island's `present` waits for every public host), then
    // tell the CA. A wildcard and its base name share one record.
    presented.extend(wanted.iter().map(|(name, value)| (challenge_record(name), value.clone())));
    let published = join_all(wanted.iter().map(|(name, value)| async move {
        let fqdn = challenge_record(name);
        dns.present(&fqdn, value).await.map_err(|error| AcmeError::Present { name: name.clone(), fqdn, error })
    }))
    .await;
    published.into_iter().collect::<Result<Vec<()>, _>>()?;
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.map_err(|e| ctx.fail(Step::Authorization, e))?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let name = authz.identifier().to_string();
        let mut challenge = authz.challenge(ChallengeType::Dns01).ok_or(AcmeError::NoDns01 { name })?;
        challenge.set_ready().await.map_err(|e| ctx.fail(Step::Challenge, e))?;
    }

    let retry = RetryPolicy::new().initial_delay(Duration::from_millis(100)).backoff(1.5).timeout(ctx.config.validation_timeout);
    // Look once at once (a quick CA has validated already), then poll with backoff.
    let status = match order.refresh().await.map(|s| s.status) {
        Ok(status @ (OrderStatus::Ready | OrderStatus::Invalid)) => Ok(status),
        Ok(_) => order.poll_ready(&retry).await,
        Err(e) => Err(e),
    };
    match status {
        Ok(OrderStatus::Ready) => {}
        Ok(_) | Err(instant_acme::Error::Api(_)) => return Err(validation_failure(ctx, &mut order).await),
        Err(e) => return Err(ctx.fail(Step::Validation, e)),
    }

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| AcmeError::Csr(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(|e| AcmeError::Csr(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| AcmeError::Csr(e.to_string()))?;
    order.finalize_csr(csr.der()).await.map_err(|e| ctx.fail(Step::Finalize, e))?;
    let chain_pem = match order.certificate().await {
        Ok(Some(chain)) => chain,
        Ok(None) => order.poll_certificate(&retry).await.map_err(|e| ctx.fail(Step::Download, e))?,
        Err(e) => return Err(ctx.fail(Step::Download, e)),
    };
    let key_pem = key.serialize_pem();
    check_key_matches(&chain_pem, &key_pem)?;
    Ok((chain_pem, key_pem))
}

/// Which name failed validation and why, read from the authorizations after the order went
/// invalid (the order's own problem when no authorization says).
async fn validation_failure(ctx: &Ctx<'_>, order: &mut Order) -> AcmeError {
    let order_problem = order.state().error.clone();
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let Ok(authz) = authz else { continue };
        if authz.status != AuthorizationStatus::Invalid {
            continue;
        }
        let name = authz.identifier().to_string();
        let problem = authz.challenges.iter().find_map(|c| c.error.as_ref());
        return AcmeError::Validation {
            name,
            problem_type: problem.and_then(|p| p.r#type.clone()),
            detail: problem.map_or_else(|| "the CA gave no reason".to_owned(), problem_text),
        };
    }
    match order_problem {
        Some(p) => ctx.fail(Step::Validation, instant_acme::Error::Api(p)),
        None => AcmeError::Acme {
            step: Step::Validation,
            directory: ctx.config.directory_url.clone(),
            problem_type: None,
            problem: "the order became invalid and no authorization says why".into(),
        },
    }
}

#[cfg(test)]
mod url_tests {
    #[test]
    fn a_directory_url_must_be_absolute_http_with_a_host() {
        super::check_directory_url(super::LETS_ENCRYPT).unwrap();
        super::check_directory_url("https://127.0.0.1:14000/dir").unwrap();
        // What the API fuzzer sent, that instant-acme panicked on.
        for bad in ["https://a b/dir", "https://\u{9f}/x", "ftp://ca/dir", "/dir", "https://", "http://[::1/x"] {
            assert!(super::check_directory_url(bad).is_err(), "{bad}");
        }
    }
}
