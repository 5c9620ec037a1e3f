//! Public names (issue 16): the island's DNS zones, the records users add to them, TSIG keys
//! that let others change records inside one sub-zone (RFC 2136 UPDATE: the capabilities
//! certbot, lego and external-dns use), all in the replicated state; the authoritative server
//! on every public host answers from its own replica.
//!
//! - [`records`]: the names' records of one replica, read at once.
//! - [`zone`]: each zone's content as a pure function of the state (nameservers per public
//!   host, the hosts' and services' names, users' records).
//! - this file: the writes (`domain add|rm`, `dns record add|rm`, `domain delegate|revoke`),
//!   each checked against one replica and committed in one transaction through the leader,
//!   the zone's serial bumped in the same transaction.
//! - [`reconciler`]: on the leader, the serial bumps for what changes a zone without writing
//!   it (members, services), and the members' own keys.
//!
//! Invariant: a zone's served content and its serial move together: every write that changes
//! what a zone holds writes the zone's record too (a new serial and the digest of the new
//! content), and the leader writes one for changes that come from elsewhere.

use std::time::Duration;

use atoll_dns::{Change, RecordSpec, ZoneSpec};
use atoll_island::Manager;
use atoll_island::model::IslandState;
use atoll_state::desired::{self, DecodeError, DnsRecord, TsigKey, Zone};
use atoll_state::{Expect, Request, Response};
use hickory_proto::rr::Name;

pub mod certs;
pub mod probe;
pub mod reconciler;
pub mod records;
pub mod serve;
pub mod view;
pub mod zone;

pub use records::Names;

/// The domain names the API takes for a zone (OpenAPI `pattern`): LDH labels of 1–63
/// characters, two to nine of them, an optional final dot; [`check_domain`] also wants 253
/// characters at most.
pub const DOMAIN_PATTERN: &str = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$";
/// The names a certificate may be for: a domain name, or a wildcard one label up.
pub const CERT_NAME_PATTERN: &str =
    r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$";

/// Let's Encrypt's production directory: where certificates come from unless a domain says.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// TSIG algorithms keys are made with (RFC 8945 §6): the first is the default.
pub const ALGORITHMS: [&str; 2] = ["hmac-sha256", "hmac-sha512"];

#[derive(Debug, thiserror::Error)]
pub enum NamesError {
    #[error("{0}")]
    Invalid(String),
    #[error("no such domain: {domain} ({})", known_list(.known))]
    NoSuchDomain { domain: String, known: Vec<String> },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("the island's state changed under this request {0} times in a row: try again")]
    Busy(u32),
    #[error("the island refused the write: {0}")]
    Refused(String),
    #[error(transparent)]
    Island(#[from] atoll_island::IslandError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

fn known_list(known: &[String]) -> String {
    atoll_util::known_list(known, "there are none: `atoll domain add DOMAIN` first")
}

impl NamesError {
    /// The error's kind, for the API's status.
    pub fn kind(&self) -> atoll_util::ErrorKind {
        use atoll_util::ErrorKind as K;
        match self {
            NamesError::Invalid(_) => K::Invalid,
            NamesError::NoSuchDomain { .. } | NamesError::NotFound(_) => K::NotFound,
            NamesError::Exists(_) | NamesError::Busy(_) | NamesError::Refused(_) => K::Conflict,
            NamesError::Island(e) => e.kind(),
            NamesError::Decode(_) => K::Internal,
        }
    }
}

/// How many times a write that lost a compare-and-set is planned again.
const ATTEMPTS: u32 = 5;

/// Plans a write from this member's replica with `f`, commits it through the leader, and
/// plans again when the state moved meanwhile; returns once this member's replica holds it.
async fn commit<T>(m: &Manager, f: impl Fn(&Names, &IslandState) -> Result<(Vec<Request>, T), NamesError>) -> Result<T, NamesError> {
    for _ in 0..ATTEMPTS {
        let names = m.replica().with(Names::read)?;
        let (ops, out) = match f(&names, &m.state()) {
            // This replica may lag the island (a member that just joined): the leader decides.
            Err(NamesError::NoSuchDomain { domain, known }) => {
                if m.catch_up_to(&desired::key::<Zone>(&domain)).await? {
                    continue;
                }
                return Err(NamesError::NoSuchDomain { domain, known });
            }
            r => r?,
        };
        if ops.is_empty() {
            return Ok(out);
        }
        match m.propose(Request::Txn { ops }).await? {
            Response::Done { version } => {
                m.wait_applied(version, Duration::from_secs(5)).await;
                return Ok(out);
            }
            Response::Conflict { .. } | Response::TxnConflict { .. } => tokio::time::sleep(Duration::from_millis(100)).await,
            Response::Refused { reason } => return Err(NamesError::Refused(reason)),
            Response::Empty => return Ok(out),
        }
    }
    Err(NamesError::Busy(ATTEMPTS))
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    atoll_island::manager::unix_now()
}

/// The serial after `prev` (RFC 1982 arithmetic): the time in seconds if that is ahead (so a
/// serial says roughly when), else one more.
pub fn next_serial(prev: u32, now: i64) -> u32 {
    let now = u32::try_from(now).unwrap_or(u32::MAX);
    if now.wrapping_sub(prev) as i32 > 0 { now } else { prev.wrapping_add(1) }
}

/// The zone record `zone` with a new serial for `content`'s digest.
fn bumped(zone: &Zone, digest: String) -> Zone {
    Zone { serial: next_serial(zone.serial, unix_now()), digest, ..zone.clone() }
}

/// The content `zone` would have with `records` (this replica's other inputs unchanged).
fn content_with(zone: &Zone, records: &[&DnsRecord], names: &Names, island: &IslandState) -> zone::ZoneContent {
    zone::content(zone, records, island, &names.services, &names.bundle_hosts)
}

/// Whether `domain` (normalized) is a name a zone can have: LDH labels of 1–63 characters, two
/// labels at least, 253 characters at most (RFC 1035 §2.3.1, RFC 1123 §2.1).
pub fn check_domain(domain: &str) -> Result<(), NamesError> {
    let bad = |why: &str| Err(NamesError::Invalid(format!("{domain:?} is not a domain name a zone can have: {why}")));
    if domain.len() > 253 {
        return bad("longer than 253 characters");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return bad("a zone needs two labels at least (friends.example)");
    }
    for l in &labels {
        if l.is_empty() || l.len() > 63 {
            return bad("every label has 1 to 63 characters");
        }
        if !l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') || l.starts_with('-') || l.ends_with('-') {
            return bad(&format!("label {l:?} has characters other than letters, digits and inner hyphens"));
        }
    }
    Ok(())
}

/// `atoll domain add`'s options.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainAdd {
    /// The ACME directory certificates come from (Let's Encrypt's by default).
    #[serde(default)]
    #[schema(pattern = "^https?://[A-Za-z0-9-]{1,63}(\\.[A-Za-z0-9-]{1,63}){0,4}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,20}){0,4}$")]
    pub acme_directory: Option<String>,
    /// PEM of the CA the directory's TLS certificate chains to (for a private CA: pebble).
    #[serde(default)]
    pub acme_ca: Option<String>,
    /// The ACME account's contact, and the zone's SOA contact.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\\.[A-Za-z0-9-]{1,63}){1,4}$")]
    pub email: Option<String>,
}

/// Whether `s` looks like a mail address: `local@domain`, printable ASCII, a domain name.
fn is_mail_address(s: &str) -> bool {
    s.len() <= 254
        && s.bytes().all(|b| b.is_ascii_graphic())
        && s.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.contains('@') && domain.contains('.') && origin(domain).is_ok())
}

/// Makes the island authoritative for `domain`: its public hosts become its nameservers, and
/// every member gets a TSIG key for its own name (`<host>.<domain>`).
pub async fn add_domain(m: &Manager, domain: &str, opts: &DomainAdd) -> Result<Zone, NamesError> {
    let domain = zone::normalize(domain);
    check_domain(&domain)?;
    if let Some(dir) = &opts.acme_directory
        && let Err(why) = atoll_acme::check_directory_url(dir)
    {
        return Err(NamesError::Invalid(format!("--acme-directory: {why}")));
    }
    if let Some(email) = &opts.email
        && !is_mail_address(email)
    {
        return Err(NamesError::Invalid(format!("--email {email:?} is not a mail address (user@example.org)")));
    }
    commit(m, |names, island| {
        if names.zone(&domain).is_some() {
            return Err(NamesError::Exists(format!("the island already serves {domain}")));
        }
        if let Some((outer, _)) = names.zone_of(&domain) {
            return Err(NamesError::Invalid(format!(
                "{domain} is inside {}, which the island serves: add records to it, or `atoll domain delegate {domain}` for a key to manage it",
                outer.domain
            )));
        }
        if let Some((inner, _)) = names.zones.iter().find(|(z, _)| zone::is_within(&z.domain, &domain)) {
            return Err(NamesError::Invalid(format!("{} is inside {domain} and served already: remove it first", inner.domain)));
        }
        let now = unix_now();
        let mut z = Zone {
            domain: domain.clone(),
            serial: next_serial(0, now),
            acme_directory: opts.acme_directory.clone().unwrap_or_else(|| LETS_ENCRYPT.to_owned()),
            acme_ca: opts.acme_ca.clone(),
            email: opts.email.clone(),
            secondaries: vec![],
            transfer_key: None,
            created: now,
            digest: String::new(),
            extra: Default::default(),
        };
        z.digest = content_with(&z, &[], names, island).digest();
        let mut ops = vec![desired::put(&z, Expect::Absent)];
        for key in reconciler::member_keys(&z, island) {
            if names.key(&key.name).is_none() {
                ops.push(desired::put(&key, Expect::Absent));
            }
        }
        Ok((ops, z))
    })
    .await
}

/// `atoll domain set`: zone transfers to secondaries.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainSet {
    /// Secondary servers (`ADDR:PORT`) sent NOTIFY on every change (replaces the list).
    #[serde(default)]
    pub secondaries: Option<Vec<String>>,
    /// The TSIG key (its name) secondaries sign AXFR/IXFR with; `""` for none.
    #[serde(default)]
    pub transfer_key: Option<String>,
}

/// Changes how zone `domain` is transferred: its secondaries and their key.
pub async fn set_domain(m: &Manager, domain: &str, req: &DomainSet) -> Result<Zone, NamesError> {
    let domain = zone::normalize(domain);
    if let Some(list) = &req.secondaries {
        for s in list {
            s.parse::<std::net::SocketAddr>()
                .map_err(|_| NamesError::Invalid(format!("--secondary {s:?}: give ADDR:PORT (192.0.2.53:53, [2001:db8::53]:53)")))?;
        }
    }
    commit(m, |names, _| {
        let (z, v) = names.existing_zone(&domain)?;
        let mut next = z.clone();
        if let Some(list) = &req.secondaries {
            next.secondaries = list.clone();
        }
        match req.transfer_key.as_deref().map(zone::normalize) {
            Some(k) if k.is_empty() => next.transfer_key = None,
            Some(k) => {
                if names.key(&k).is_none() {
                    return Err(NamesError::NotFound(format!(
                        "no such key: {k} (make one with `atoll domain delegate {domain} --name {k}`)"
                    )));
                }
                next.transfer_key = Some(k);
            }
            None => {}
        }
        Ok((if next == *z { vec![] } else { vec![desired::put(&next, Expect::Version(*v))] }, next))
    })
    .await
}

/// Stops serving `domain`: its records, keys and certificates go with it.
pub async fn remove_domain(m: &Manager, domain: &str) -> Result<(), NamesError> {
    let domain = zone::normalize(domain);
    commit(m, |names, _| {
        let (z, v) = names.existing_zone(&domain)?;
        let mut ops = vec![desired::delete::<Zone>(&desired::Kind::name(z), Expect::Version(*v))];
        ops.extend(names.records_of(&domain).map(|(r, v)| desired::delete::<DnsRecord>(&desired::Kind::name(r), Expect::Version(*v))));
        ops.extend(
            names.keys.iter().filter(|(k, _)| k.zone == domain).map(|(k, v)| desired::delete::<TsigKey>(&k.name, Expect::Version(*v))),
        );
        ops.extend(
            names
                .certificates
                .iter()
                .filter(|(c, _)| c.0.names.iter().all(|n| zone::is_within(zone::normalize(n).trim_start_matches("*."), &domain)))
                .map(|(c, v)| desired::delete::<certs::CertDoc>(&desired::Kind::name(c), Expect::Version(*v))),
        );
        Ok((ops, ()))
    })
    .await
}

/// The DNS name of `domain` (normalized, no trailing dot), absolute.
pub fn origin(domain: &str) -> Result<Name, NamesError> {
    Name::from_ascii(format!("{domain}.")).map_err(|e| NamesError::Invalid(format!("{domain:?} is not a domain name: {e}")))
}

/// A stored record as the DNS model has it.
fn spec_of(r: &DnsRecord, origin: &Name) -> Option<RecordSpec> {
    let rtype = r.rtype.parse().ok()?;
    let name = atoll_dns::model::absolute_name(origin, &r.name).ok()?;
    Some(RecordSpec { name: name.to_string(), ttl: r.ttl, rtype, value: r.value.clone() })
}

/// Zone `z` with only its users' records (and its nameservers, whose names hold glue): what
/// users and UPDATE may change, and what their changes are checked against.
fn users_zone(z: &Zone, names: &Names, island: &IslandState) -> Result<ZoneSpec, NamesError> {
    let origin = origin(&z.domain)?;
    let content = zone::content(z, &[], island, &names.services, &names.bundle_hosts);
    Ok(ZoneSpec {
        records: names.records_of(&z.domain).filter_map(|(r, _)| spec_of(r, &origin)).collect(),
        ..serve::zone_spec(z, &content, &origin)
    })
}

/// The most records users (and UPDATE) may keep in one zone: a zone's transfer is one message
/// (64 KiB), and every public host holds every zone in memory.
pub const MAX_RECORDS: usize = 1000;

/// Refuses a change that grows zone `after` past [`MAX_RECORDS`].
fn check_size(before: &ZoneSpec, after: &ZoneSpec) -> Result<(), NamesError> {
    if after.records.len() > MAX_RECORDS && after.records.len() > before.records.len() {
        return Err(NamesError::Invalid(format!(
            "{} would hold {} records of users: at most {MAX_RECORDS} (remove some first)",
            after.apex(),
            after.records.len()
        )));
    }
    Ok(())
}

/// The stored form of `spec` in zone `domain`.
fn record_of(spec: &RecordSpec, domain: &str) -> DnsRecord {
    DnsRecord {
        zone: domain.to_owned(),
        name: zone::relative(&zone::normalize(&spec.name), domain),
        rtype: spec.rtype.to_string(),
        value: spec.value.clone(),
        ttl: spec.ttl,
        extra: Default::default(),
    }
}

/// The writes that take zone `z`'s users' records from `before` to `after` (each a zone spec
/// of users' records), with the zone's new serial.
fn diff_ops(z: &(Zone, u64), names: &Names, island: &IslandState, before: &ZoneSpec, after: &ZoneSpec) -> Vec<Request> {
    let (z, v) = z;
    let apex = after.apex();
    let stored: Vec<&(DnsRecord, u64)> = names.records_of(&z.domain).collect();
    let mut ops = Vec::new();
    for old in &before.records {
        let kept = after.records.iter().find(|n| n.same_data(old, &apex));
        let doc = stored.iter().find(|(r, _)| spec_of(r, &apex).is_some_and(|s| s.same_data(old, &apex)));
        match (kept, doc) {
            (None, Some((r, v))) => ops.push(desired::delete::<DnsRecord>(&desired::Kind::name(r), Expect::Version(*v))),
            (Some(n), Some((r, v))) if n.ttl != r.ttl => ops.push(desired::put(&record_of(n, &z.domain), Expect::Version(*v))),
            _ => {}
        }
    }
    for new in &after.records {
        if !before.records.iter().any(|o| o.same_data(new, &apex)) {
            ops.push(desired::put(&record_of(new, &z.domain), Expect::Absent));
        }
    }
    if ops.is_empty() {
        return ops;
    }
    let records: Vec<DnsRecord> = after.records.iter().map(|r| record_of(r, &z.domain)).collect();
    let digest = content_with(z, &records.iter().collect::<Vec<_>>(), names, island).digest();
    ops.push(desired::put(&bumped(z, digest), Expect::Version(*v)));
    ops
}

/// A record to add: `NAME` relative to the zone (`@` the apex, or absolute with a final dot).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordAdd {
    pub name: String,
    #[serde(rename = "type")]
    #[schema(pattern = "^(A|AAAA|CNAME|TXT|MX|SRV|CAA|NS)$")]
    pub rtype: String,
    pub value: String,
    /// Seconds (300 by default).
    #[serde(default)]
    pub ttl: Option<u32>,
}

/// Adds a record to zone `domain`: checked on its own ([`RecordSpec::parse`]) and against the
/// zone's other records (a CNAME alone at its name, nothing at the nameservers' names).
pub async fn add_record(m: &Manager, domain: &str, req: &RecordAdd) -> Result<DnsRecord, NamesError> {
    let domain = zone::normalize(domain);
    let origin = origin(&domain)?;
    let spec = RecordSpec::parse(&origin, &req.name, &req.rtype, &req.value, req.ttl)
        .map_err(|e| NamesError::Invalid(format!("{}: {e}", req.name)))?;
    commit(m, |names, island| {
        let z = names.existing_zone(&domain)?;
        let before = users_zone(&z.0, names, island)?;
        if before.records.iter().any(|r| r.same_data(&spec, &origin)) {
            return Err(NamesError::Exists(format!("{spec} is in the zone already")));
        }
        let mut after = before.clone();
        after.add_record(spec.clone()).map_err(|e| NamesError::Invalid(e.to_string()))?;
        check_size(&before, &after)?;
        Ok((diff_ops(z, names, island, &before, &after), record_of(&spec, &domain)))
    })
    .await
}

/// Carries out an RFC 2136 UPDATE's changes to zone `domain` (checked and planned by the DNS
/// server, [`atoll_dns::update`]): applied in order to the zone's users' records as §3.4.2
/// says, and written in one transaction with the zone's new serial.
pub async fn apply_update(m: &Manager, domain: &str, changes: &[Change]) -> Result<(), NamesError> {
    let domain = zone::normalize(domain);
    commit(m, |names, island| {
        let z = names.existing_zone(&domain)?;
        let before = users_zone(&z.0, names, island)?;
        let mut after = before.clone();
        after.apply(changes).map_err(|e| NamesError::Invalid(e.to_string()))?;
        check_size(&before, &after)?;
        Ok((diff_ops(z, names, island, &before, &after), ()))
    })
    .await
}

/// Removes zone `domain`'s records at `name` of type `rtype` (those with `value`, if given);
/// how many it removed.
pub async fn remove_record(m: &Manager, domain: &str, name: &str, rtype: &str, value: Option<&str>) -> Result<usize, NamesError> {
    let domain = zone::normalize(domain);
    let origin = origin(&domain)?;
    let bad = |e: atoll_dns::RecordError| NamesError::Invalid(format!("{name}: {e}"));
    let owner = atoll_dns::model::absolute_name(&origin, name).map_err(bad)?;
    let rtype: atoll_dns::RType = rtype.parse().map_err(bad)?;
    let value = value.map(|v| RecordSpec::parse(&origin, name, &rtype.to_string(), v, None).map_err(bad)).transpose()?;
    commit(m, |names, island| {
        let z = names.existing_zone(&domain)?;
        let before = users_zone(&z.0, names, island)?;
        let mut after = before.clone();
        let n = after.remove_records(&owner, rtype, value.as_ref());
        if n == 0 {
            let what = value.as_ref().map(|v| format!(" with value {}", v.value)).unwrap_or_default();
            return Err(NamesError::NotFound(format!("{domain} has no {rtype} record at {owner}{what}")));
        }
        Ok((diff_ops(z, names, island, &before, &after), n))
    })
    .await
}

/// A new TSIG secret: 32 bytes from the system's CSPRNG, base64.
pub fn new_secret() -> String {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system's random source works");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `atoll domain delegate`'s options.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Delegate {
    /// The key's name (the sub-zone's name by default).
    #[serde(default)]
    pub name: Option<String>,
    /// `hmac-sha256` (default) or `hmac-sha512`.
    #[serde(default)]
    pub algorithm: Option<String>,
}

/// Makes a TSIG key that may change records inside `subzone` only.
pub async fn delegate(m: &Manager, subzone: &str, opts: &Delegate) -> Result<TsigKey, NamesError> {
    let subzone = zone::normalize(subzone);
    let algorithm = opts.algorithm.clone().unwrap_or_else(|| ALGORITHMS[0].to_owned()).to_ascii_lowercase();
    if !ALGORITHMS.contains(&algorithm.as_str()) {
        return Err(NamesError::Invalid(format!("algorithm {algorithm:?}: one of {}", ALGORITHMS.join(", "))));
    }
    let key_name = opts.name.as_deref().map(zone::normalize).unwrap_or_else(|| subzone.clone());
    check_domain(&key_name).map_err(|_| NamesError::Invalid(format!("key name {key_name:?} is not a domain name")))?;
    let secret = new_secret();
    commit(m, |names, _| {
        let Some((z, _)) = names.zone_of(&subzone) else {
            return Err(NamesError::NoSuchDomain {
                domain: subzone.clone(),
                known: names.zones.iter().map(|(z, _)| z.domain.clone()).collect(),
            });
        };
        if names.key(&key_name).is_some() {
            return Err(NamesError::Exists(format!(
                "a key named {key_name} exists: `atoll domain revoke {key_name}` first, or give another --name"
            )));
        }
        let key = TsigKey {
            name: key_name.clone(),
            algorithm: algorithm.clone(),
            secret: secret.clone(),
            zone: z.domain.clone(),
            scope: subzone.clone(),
            member: None,
            created: unix_now(),
            extra: Default::default(),
        };
        Ok((vec![desired::put(&key, Expect::Absent)], key))
    })
    .await
}

/// Revokes the TSIG key `name`: from the next update on, every public host refuses it.
pub async fn revoke(m: &Manager, name: &str) -> Result<(), NamesError> {
    let name = zone::normalize(name);
    commit(m, |names, _| {
        let Some((k, v)) = names.key(&name) else {
            return Err(NamesError::NotFound(format!("no such key: {name} (`atoll domain keys` lists them)")));
        };
        Ok((vec![desired::delete::<TsigKey>(&k.name, Expect::Version(*v))], ()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_move_forward_by_time_or_by_one() {
        assert_eq!(next_serial(0, 1_700_000_000), 1_700_000_000);
        assert_eq!(next_serial(1_700_000_000, 1_700_000_000), 1_700_000_001);
        assert_eq!(next_serial(1_700_000_005, 1_700_000_000), 1_700_000_006);
        // RFC 1982: 5 is after u32::MAX.
        assert_eq!(next_serial(u32::MAX, 5), 5);
        assert_eq!(next_serial(u32::MAX, 0), 0);
    }

    fn unanchored(p: &str) -> &str {
        p.trim_start_matches('^').trim_end_matches('$')
    }

    proptest::proptest! {
        /// What the OpenAPI document says a domain is, the API takes (up to its length).
        #[test]
        fn the_documented_domain_pattern_is_what_add_takes(name in proptest::string::string_regex(unanchored(DOMAIN_PATTERN)).unwrap()) {
            let name = zone::normalize(&name);
            proptest::prop_assume!(name.len() <= 253);
            proptest::prop_assert!(check_domain(&name).is_ok(), "{}", name);
        }

        #[test]
        fn the_documented_certificate_name_pattern_is_what_a_request_takes(name in proptest::string::string_regex(unanchored(CERT_NAME_PATTERN)).unwrap()) {
            proptest::prop_assume!(name.len() <= 253);
            proptest::prop_assert!(atoll_acme::normalize_names(std::slice::from_ref(&name)).is_ok(), "{}", name);
        }
    }

    #[test]
    fn a_zone_holds_at_most_max_records_of_users() {
        let origin = origin("friends.example").unwrap();
        let zone = |n: usize| ZoneSpec {
            origin: origin.clone(),
            serial: 1,
            nameservers: vec![],
            hostmaster: "hostmaster.friends.example.".into(),
            records: (0..n).map(|i| RecordSpec::parse(&origin, &format!("h{i}"), "A", "192.0.2.1", None).unwrap()).collect(),
            secondaries: vec![],
            transfer_key: None,
        };
        check_size(&zone(MAX_RECORDS - 1), &zone(MAX_RECORDS)).unwrap();
        let e = check_size(&zone(MAX_RECORDS), &zone(MAX_RECORDS + 1)).unwrap_err();
        assert_eq!(e.to_string(), "friends.example. would hold 1001 records of users: at most 1000 (remove some first)");
        // A zone over the limit (an older build's) may still shrink.
        check_size(&zone(MAX_RECORDS + 2), &zone(MAX_RECORDS + 1)).unwrap();
    }

    #[test]
    fn domain_names_are_checked() {
        check_domain("friends.example").unwrap();
        for bad in ["example", "a..b", "-a.example", "a_b.example", &"x".repeat(64), &format!("{}.example", "a.".repeat(130))] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
    }
}
