//! Certificates for the island's names (issue 16): ACME by DNS-01 against the island's own
//! zones, so a service on a host behind NAT gets a real certificate too.
//!
//! Each certificate is an [`atoll_acme::CertificateRecord`] in the replicated state
//! (`desired/certificate/<first name>`): asked for by `atoll cert request`, or by the leader's
//! reconciler (the wildcard and apex of every zone, and the names services declare that no
//! certificate covers). The leader obtains and renews them ([`Worker`]): at about two thirds of
//! their life, retrying with capped backoff; a challenge is a TXT record written to the zone
//! through the log, and the CA is told to look only once every public host serves it. Private
//! keys (certificates' and the ACME account's) are sealed with the island's data key
//! ([`atoll_island::Manager::names_key`]), which never enters the log.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_acme::{AcmeConfig, CertificateRecord, DataKey, RetryPolicy, SealedKey};
use atoll_dns::{Change, RecordSpec};
use atoll_island::Manager;
use atoll_state::desired::{self, Kind};
use atoll_state::{Expect, Request, Response};
use serde::{Deserialize, Serialize};

use crate::{Names, NamesError, unix_now, zone};

/// A certificate as stored: the acme crate's record under the kind `certificate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CertDoc(pub CertificateRecord);

impl Kind for CertDoc {
    const KIND: &'static str = "certificate";
    fn name(&self) -> String {
        self.0.names.first().cloned().unwrap_or_default()
    }
}

/// The ACME account of one directory, its credentials sealed with the data key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcmeAccount {
    pub directory: String,
    pub sealed: SealedKey,
}

impl Kind for AcmeAccount {
    const KIND: &'static str = "acme_account";
    fn name(&self) -> String {
        account_name(&self.directory)
    }
}

fn account_name(directory: &str) -> String {
    atoll_island::model::sha256_hex(directory.as_bytes())[..16].to_owned()
}

/// Whether certificate `names` covers `name` (exactly, or by a wildcard one label up).
pub fn covers(names: &[String], name: &str) -> bool {
    names
        .iter()
        .any(|n| n == name || n.strip_prefix("*.").is_some_and(|base| name.split_once('.').is_some_and(|(_, parent)| parent == base)))
}

/// The name whose zone proves `name` (a wildcard's base).
fn base(name: &str) -> &str {
    name.strip_prefix("*.").unwrap_or(name)
}

/// Asks for a certificate for `names` (wildcards as `*.friends.example`), each inside a zone
/// the island serves. Asking again for a failed one retries it now.
pub async fn request(m: &Manager, names: &[String]) -> Result<CertificateRecord, NamesError> {
    let names = atoll_acme::normalize_names(names).map_err(|e| NamesError::Invalid(e.to_string()))?;
    crate::commit(m, |n, _| {
        for name in &names {
            if n.zone_of(base(name)).is_none() {
                return Err(NamesError::NotFound(format!(
                    "{name} is in no zone the island serves ({}): `atoll domain add` its domain first",
                    atoll_util::known_list(&n.zones.iter().map(|(z, _)| z.domain.clone()).collect::<Vec<_>>(), "there are none")
                )));
            }
        }
        let doc = CertDoc(CertificateRecord::pending(names.clone(), unix_now()));
        match n.certificates.iter().find(|(c, _)| c.name() == doc.name()) {
            None => Ok((vec![desired::put(&doc, Expect::Absent)], doc.0)),
            Some((c, _)) if c.0.names != names => Err(NamesError::Exists(format!(
                "a certificate named {} is for {}: `atoll cert rm {}` first",
                c.name(),
                c.0.names.join(", "),
                c.name()
            ))),
            Some((c, v)) if c.0.state == atoll_acme::CertState::Failed => {
                let mut retry = c.0.clone();
                retry.next_attempt_at = unix_now();
                Ok((vec![desired::put(&CertDoc(retry.clone()), Expect::Version(*v))], retry))
            }
            Some((c, _)) => Ok((vec![], c.0.clone())),
        }
    })
    .await
}

/// Stops keeping certificate `name` (its first name).
pub async fn remove(m: &Manager, name: &str) -> Result<(), NamesError> {
    let name = zone::normalize(name);
    crate::commit(m, |n, _| match n.certificates.iter().find(|(c, _)| c.name() == name) {
        Some((c, v)) => Ok((vec![desired::delete::<CertDoc>(&c.name(), Expect::Version(*v))], ())),
        None => Err(NamesError::NotFound(format!("no certificate named {name} (`atoll cert ls` lists them)"))),
    })
    .await
}

/// The certificates the island should hold that nobody asked for: each zone's apex and
/// wildcard, and the names services declare or bundles are served at that no certificate
/// covers (one per name).
pub fn wanted(names: &Names) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let held = |out: &Vec<Vec<String>>, name: &str| {
        names.certificates.iter().any(|(c, _)| covers(&c.0.names, name)) || out.iter().any(|n| covers(n, name))
    };
    for (z, _) in &names.zones {
        if !held(&out, &z.domain) || !held(&out, &format!("*.{}", z.domain)) {
            let set = vec![z.domain.clone(), format!("*.{}", z.domain)];
            if !names.certificates.iter().any(|(c, _)| c.0.names == set) {
                out.push(set);
            }
        }
    }
    let declared = names.services.iter().flat_map(zone::declared_names).chain(names.bundle_hosts.iter().cloned());
    for name in declared {
        if names.zone_of(&name).is_some() && !held(&out, &name) {
            out.push(vec![name]);
        }
    }
    out
}

/// TXT records for ACME's DNS-01, written to the island's zone through the log; `present`
/// returns once every public host serves the value.
struct IslandDns01 {
    m: Arc<Manager>,
    /// What was presented and not cleaned up yet: an attempt cut short (its future dropped at
    /// the deadline) cleans these up after it.
    presented: Mutex<Vec<(String, String)>>,
}

impl IslandDns01 {
    fn change(&self, fqdn: &str, value: &str, add: bool) -> Result<(String, Change), String> {
        let names = self.m.replica().with(Names::read).map_err(|e| e.to_string())?;
        let (z, _) = names.zone_of(fqdn).ok_or_else(|| format!("{fqdn} is in no zone the island serves"))?;
        let origin = crate::origin(&z.domain).map_err(|e| e.to_string())?;
        let spec = RecordSpec::parse(&origin, &format!("{fqdn}."), "TXT", &format!("\"{value}\""), Some(60)).map_err(|e| e.to_string())?;
        Ok((z.domain.clone(), if add { Change::Add(spec) } else { Change::DeleteRecord(spec) }))
    }
}

/// How long a challenge may take to reach every public host.
const PROPAGATION: Duration = Duration::from_secs(60);

#[atoll_acme::async_trait]
impl atoll_acme::Dns01 for IslandDns01 {
    async fn present(&self, fqdn: &str, value: &str) -> Result<(), String> {
        let (zone, change) = self.change(fqdn, value, true)?;
        self.presented.lock().unwrap().push((fqdn.to_owned(), value.to_owned()));
        crate::apply_update(&self.m, &zone, &[change]).await.map_err(|e| e.to_string())?;
        let hosts = zone::public_hosts(&self.m.state());
        let deadline = tokio::time::Instant::now() + PROPAGATION;
        for (host, addrs) in hosts {
            for ip in addrs {
                let server = std::net::SocketAddr::new(ip, crate::serve::PORT);
                loop {
                    let got = crate::probe::txt(server, fqdn).await;
                    if got.as_ref().is_ok_and(|v| v.iter().any(|t| t == value)) {
                        break;
                    }
                    if tokio::time::Instant::now() > deadline {
                        let why = got.err().unwrap_or_else(|| "the record is not there".into());
                        return Err(format!("the public host {host} ({server}) does not serve {fqdn} after {PROPAGATION:?}: {why}"));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Ok(())
    }

    async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), String> {
        let (zone, change) = self.change(fqdn, value, false)?;
        crate::apply_update(&self.m, &zone, &[change]).await.map_err(|e| e.to_string())?;
        self.presented.lock().unwrap().retain(|(f, v)| !(f == fqdn && v == value));
        Ok(())
    }
}

/// The leader's certificate work: one attempt at a time per certificate, two at once.
#[derive(Default)]
pub struct Worker {
    in_flight: Arc<Mutex<HashSet<String>>>,
}

/// Certificates obtained at once.
const PARALLEL: usize = 2;
/// The longest one attempt may take, whatever the CA does.
const ATTEMPT: Duration = Duration::from_secs(300);

impl Worker {
    /// One look, on the leader: starts the attempts that are due (first issues, renewals,
    /// retries) and marks expired certificates failed.
    pub async fn tick(&self, m: &Arc<Manager>) -> Result<(), NamesError> {
        if !m.leads() {
            return Ok(());
        }
        let names = m.replica().with(Names::read)?;
        let now = unix_now();
        let mut ops = Vec::new();
        for set in wanted(&names) {
            ops.push(desired::put(&CertDoc(CertificateRecord::pending(set, now)), Expect::Absent));
        }
        for (c, v) in &names.certificates {
            let mut r = c.0.clone();
            if r.expire(now) {
                ops.push(desired::put(&CertDoc(r), Expect::Version(*v)));
            }
        }
        if !ops.is_empty() {
            // A conflict means the replica was behind: the next look plans again.
            if let Response::Refused { reason } = m.propose(Request::Txn { ops }).await? {
                return Err(NamesError::Refused(reason));
            }
        }
        for (c, _) in &names.certificates {
            if !c.0.is_due(now) {
                continue;
            }
            let name = c.name();
            {
                let mut busy = self.in_flight.lock().unwrap();
                if busy.len() >= PARALLEL || !busy.insert(name.clone()) {
                    continue;
                }
            }
            let (m, busy, names) = (m.clone(), self.in_flight.clone(), c.0.names.clone());
            tokio::spawn(async move {
                // The slot is given back however the attempt ends, a panic included (found by
                // the API fuzzer: instant-acme panicked on a directory URL it could not send
                // to, and two such attempts held both slots for good).
                let _slot = Slot(busy, name.clone());
                if let Err(e) = attempt(&m, &names).await {
                    tracing::warn!(certificate = %name, error = %e, "recording a certificate attempt");
                }
            });
        }
        Ok(())
    }
}

/// A certificate's place among the attempts under way, given back when dropped.
struct Slot(Arc<Mutex<HashSet<String>>>, String);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

/// One attempt at certificate `names`: obtained and sealed, or failed with the reason; the
/// outcome written to the record if it still asks for these names.
async fn attempt(m: &Arc<Manager>, cert_names: &[String]) -> Result<(), NamesError> {
    let first = cert_names.first().cloned().unwrap_or_default();
    tracing::info!(certificate = %first, names = ?cert_names, "obtaining a certificate");
    let outcome = obtain(m, cert_names).await;
    let now = unix_now();
    crate::commit(m, |n, _| {
        let Some((c, v)) = n.certificates.iter().find(|(c, _)| c.name() == first && c.0.names == cert_names) else {
            return Ok((vec![], ())); // Removed meanwhile.
        };
        let mut r = c.0.clone();
        let mut ops = Vec::new();
        match &outcome {
            Ok((current, account)) => {
                r.succeeded(current.clone(), now);
                if let Some(a) = account {
                    let old = n.accounts.iter().find(|(x, _)| x.directory == a.directory).map(|(_, v)| *v);
                    ops.push(desired::put(a, old.map_or(Expect::Absent, Expect::Version)));
                }
            }
            Err(e) => r.failed(e.clone(), now, &RetryPolicy::default(), fastrand::f64()),
        }
        ops.push(desired::put(&CertDoc(r), Expect::Version(*v)));
        Ok((ops, ()))
    })
    .await?;
    match &outcome {
        Ok(_) => tracing::info!(certificate = %first, "obtained a certificate"),
        Err(e) => tracing::warn!(certificate = %first, error = %e, "could not obtain a certificate"),
    }
    Ok(())
}

/// Obtains certificate `names` from its zone's ACME directory: the sealed certificate, and the
/// account to store if it is new.
async fn obtain(m: &Arc<Manager>, cert_names: &[String]) -> Result<(atoll_acme::CurrentCertificate, Option<AcmeAccount>), String> {
    let key =
        m.names_key().await.map_err(|e| format!("the island's data key: {}", atoll_island::proto::Problem::from_error(&e).message))?;
    let key = DataKey::from_base64(&key).map_err(|e| format!("the island's data key: {e}"))?;
    let names = m.replica().with(Names::read).map_err(|e| e.to_string())?;
    let first = cert_names.first().map(String::as_str).unwrap_or_default();
    let (z, _) = names.zone_of(base(first)).ok_or_else(|| format!("{first} is in no zone the island serves"))?;
    let mut cfg = AcmeConfig::new(z.acme_directory.clone());
    cfg.ca_bundle_pem = z.acme_ca.clone();
    cfg.contact_email = z.email.clone();
    let stored = names.accounts.iter().find(|(a, _)| a.directory == z.acme_directory);
    cfg.account = stored.and_then(|(a, _)| atoll_acme::open(&a.sealed, &key, std::slice::from_ref(&a.directory)).ok());
    let dns = IslandDns01 { m: m.clone(), presented: Mutex::new(Vec::new()) };
    let outcome = tokio::time::timeout(ATTEMPT, atoll_acme::obtain(&cfg, cert_names, &dns)).await;
    if outcome.is_err() {
        let left = std::mem::take(&mut *dns.presented.lock().unwrap());
        for (fqdn, value) in left {
            if let Err(e) = atoll_acme::Dns01::cleanup(&dns, &fqdn, &value).await {
                tracing::warn!(record = %fqdn, error = %e, "removing a challenge record after an attempt cut short");
            }
        }
    }
    let issued = outcome
        .map_err(|_| format!("the ACME exchange with {} took longer than {ATTEMPT:?}", z.acme_directory))?
        .map_err(|e| e.to_string())?;
    let account = (cfg.account.as_deref() != Some(issued.account_credentials.as_str()))
        .then(|| atoll_acme::seal(&issued.account_credentials, &key, std::slice::from_ref(&z.acme_directory)))
        .transpose()
        .map_err(|e| e.to_string())?
        .map(|sealed| AcmeAccount { directory: z.acme_directory.clone(), sealed });
    for e in &issued.cleanup_errors {
        tracing::warn!(error = %e, "a challenge record was left behind");
    }
    let current = issued.into_current(&key).map_err(|e| e.to_string())?;
    Ok((current, account))
}

/// What `cert ls` and `cert inspect` show of a certificate.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertView {
    pub names: Vec<String>,
    /// `pending`, `valid`, `renewing` or `failed`.
    pub state: String,
    pub issuer: Option<String>,
    /// Unix seconds.
    pub not_before: Option<i64>,
    /// Unix seconds.
    pub not_after: Option<i64>,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub attempts: u32,
    /// Unix seconds: the next renewal or retry.
    pub next_attempt_at: i64,
    /// Whether this host can open the certificate's key (it holds the island's data key, and
    /// the key opens with it): what a gateway here needs to serve it. None while there is no
    /// certificate yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usable_here: Option<bool>,
    /// The chain (leaf first), PEM: only in `cert inspect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_pem: Option<String>,
}

/// Which of `records` this member can open the key of (`None` for one without a certificate):
/// it fetches the data key from the CA host the first time.
pub async fn usable_here(m: &Manager, records: &[&CertificateRecord]) -> Vec<Option<bool>> {
    let key = match m.names_key().await {
        Ok(k) => DataKey::from_base64(&k).ok(),
        Err(e) => {
            tracing::warn!(error = %atoll_island::proto::Problem::from_error(&e), "fetching the island's data key");
            None
        }
    };
    records.iter().map(|r| r.current.as_ref().map(|_| key.as_ref().is_some_and(|k| matches!(r.open_key(k), Ok(Some(_)))))).collect()
}

impl CertView {
    pub fn of(r: &CertificateRecord, with_chain: bool) -> Self {
        CertView {
            names: r.names.clone(),
            state: r.state.to_string(),
            issuer: r.current.as_ref().map(|c| c.issuer.clone()),
            not_before: r.current.as_ref().map(|c| c.not_before),
            not_after: r.current.as_ref().map(|c| c.not_after),
            last_error: r.last_error.clone(),
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            usable_here: None,
            chain_pem: if with_chain { r.current.as_ref().map(|c| c.chain_pem.clone()) } else { None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_covers_one_label_down_only() {
        let set = vec!["friends.example".to_owned(), "*.friends.example".to_owned()];
        assert!(covers(&set, "friends.example"));
        assert!(covers(&set, "blog.friends.example"));
        assert!(!covers(&set, "web.blog.friends.example"));
        assert!(!covers(&set, "other.example"));
    }
}
