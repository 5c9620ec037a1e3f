//! What the island serves, as plain data: zones ([`ZoneSpec`]) with their records
//! ([`RecordSpec`]) and the TSIG keys that may change them ([`TsigKeySpec`]). Everything here is
//! pure: validation (with errors naming the bad field and value), the changes an UPDATE makes
//! ([`Change`], applied by [`ZoneSpec::apply`]) and the translation to hickory's records.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    net::IpAddr,
    net::SocketAddr,
    str::FromStr,
};

use hickory_proto::rr::{
    Name, RData, Record, RecordSet, RecordType, RrKey,
    rdata::{A, AAAA, NS, SOA},
};
use serde::{Deserialize, Serialize};

/// TTL of the SOA, the apex NS and glue records.
pub const INFRA_TTL: u32 = 3600;
/// TTL of a record added without one.
pub const DEFAULT_TTL: u32 = 300;
/// SOA MINIMUM: how long resolvers cache a negative answer (RFC 2308).
pub const NEGATIVE_TTL: u32 = 300;
/// The largest TTL RFC 2181 §8 allows.
pub const MAX_TTL: u32 = i32::MAX as u32;
/// The longest TXT value we accept (all its strings together), so that one record fits a
/// 1232-byte UDP answer with room to spare. Longer data is refused rather than truncated.
pub const MAX_TXT_LEN: usize = 1024;

/// One zone the island is authoritative for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneSpec {
    /// The zone's apex, e.g. `friends.example.`.
    pub origin: Name,
    /// SOA serial; the island bumps it on every change.
    pub serial: u32,
    /// The island's public hosts: one NS each, with glue when inside the zone.
    pub nameservers: Vec<Nameserver>,
    /// The SOA RNAME, as a name (`hostmaster.friends.example.`) or a mail address.
    pub hostmaster: String,
    /// The zone's other records.
    #[serde(default)]
    pub records: Vec<RecordSpec>,
    /// Secondaries to NOTIFY when the serial changes (and that may AXFR with `transfer_key`).
    #[serde(default)]
    pub secondaries: Vec<SocketAddr>,
    /// Name of the TSIG key that may transfer the zone (AXFR/IXFR); none: nobody may.
    #[serde(default)]
    pub transfer_key: Option<Name>,
}

/// A host answering for the zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nameserver {
    /// Its name, absolute (`ns1.friends.example.`) or relative to the zone.
    pub name: String,
    /// Its public addresses: glue records when the name is inside the zone.
    pub addrs: Vec<IpAddr>,
}

/// The record types users and UPDATE may manage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RType {
    A,
    #[allow(clippy::upper_case_acronyms)]
    AAAA,
    #[allow(clippy::upper_case_acronyms)]
    CNAME,
    #[allow(clippy::upper_case_acronyms)]
    TXT,
    MX,
    #[allow(clippy::upper_case_acronyms)]
    SRV,
    #[allow(clippy::upper_case_acronyms)]
    CAA,
    NS,
}

impl RType {
    /// All of them, in order.
    pub const ALL: [RType; 8] = [RType::A, RType::AAAA, RType::CNAME, RType::TXT, RType::MX, RType::SRV, RType::CAA, RType::NS];

    /// hickory's record type.
    pub fn record_type(self) -> RecordType {
        match self {
            RType::A => RecordType::A,
            RType::AAAA => RecordType::AAAA,
            RType::CNAME => RecordType::CNAME,
            RType::TXT => RecordType::TXT,
            RType::MX => RecordType::MX,
            RType::SRV => RecordType::SRV,
            RType::CAA => RecordType::CAA,
            RType::NS => RecordType::NS,
        }
    }

    /// The managed type for hickory's, if it is one.
    pub fn from_record_type(t: RecordType) -> Option<RType> {
        RType::ALL.into_iter().find(|r| r.record_type() == t)
    }
}

impl fmt::Display for RType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.record_type(), f)
    }
}

impl FromStr for RType {
    type Err = RecordError;
    fn from_str(s: &str) -> Result<Self, RecordError> {
        RType::ALL.into_iter().find(|t| t.to_string().eq_ignore_ascii_case(s)).ok_or_else(|| RecordError::UnsupportedType(s.to_string()))
    }
}

/// One resource record, as users write it and as it is stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordSpec {
    /// Absolute owner name, lower case, with the trailing dot (`www.friends.example.`).
    pub name: String,
    pub ttl: u32,
    pub rtype: RType,
    /// RDATA in presentation format, canonical (names absolute, TXT strings quoted).
    pub value: String,
}

/// A TSIG key (RFC 8945) and the sub-zone it may change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TsigKeySpec {
    /// The key's name, as clients send it (`alice.friends.example.`).
    pub name: Name,
    /// `hmac-sha256` (the default) or `hmac-sha512`.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// The shared secret (base64 in JSON).
    #[serde(with = "b64")]
    pub secret: Vec<u8>,
    /// The sub-zone this key may change (every name of an UPDATE must be at or under it).
    pub scope: Name,
    /// A revoked key is refused like an unknown one.
    #[serde(default)]
    pub revoked: bool,
}

fn default_algorithm() -> String {
    "hmac-sha256".to_string()
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// One change to a zone's records (RFC 2136 §2.5), as an UPDATE makes it and the island
/// stores it in its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Add to an RRset (§2.5.1); an identical record only gets the new TTL.
    Add(RecordSpec),
    /// Delete an RRset (§2.5.2).
    DeleteRrset { name: String, rtype: RType },
    /// Delete all RRsets from a name (§2.5.3).
    DeleteName { name: String },
    /// Delete an RR from an RRset (§2.5.4); the TTL is not compared.
    DeleteRecord(RecordSpec),
}

impl Change {
    /// The owner name the change touches.
    pub fn name(&self) -> &str {
        match self {
            Change::Add(r) | Change::DeleteRecord(r) => &r.name,
            Change::DeleteRrset { name, .. } | Change::DeleteName { name } => name,
        }
    }
}

/// A record users or UPDATE asked for that the zone cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record type {0:?} is not supported (use A, AAAA, CNAME, TXT, MX, SRV, CAA or NS)")]
    UnsupportedType(String),
    #[error("name {name:?} is not a valid domain name: {reason}")]
    BadName { name: String, reason: String },
    #[error("name {name} is outside the zone {zone}")]
    OutsideZone { name: String, zone: String },
    #[error("{rtype} value {value:?} is not valid: {reason}")]
    BadValue { rtype: RType, value: String, reason: String },
    #[error("TXT value is {len} bytes long; at most {MAX_TXT_LEN} are accepted")]
    TxtTooLong { len: usize },
    #[error("TTL {0} is too large (at most {MAX_TTL})")]
    BadTtl(u32),
    #[error("CNAME at the zone apex {0} (the apex has SOA and NS records; use A/AAAA there)")]
    CnameAtApex(String),
    #[error("CNAME at {0} next to other data (a name with a CNAME can have no other record)")]
    CnameNextToOtherData(String),
    #[error("NS at the zone apex {0} is managed by the island (one per public host)")]
    NsAtApex(String),
    #[error("{0} is the name of one of the zone's nameservers; its addresses come from the island")]
    NameserverName(String),
}

/// A zone that cannot be served as specified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("zone {0} has no nameservers")]
    NoNameservers(String),
    #[error("zone {zone}: nameserver {name:?}: {source}")]
    Nameserver { zone: String, name: String, source: RecordError },
    #[error("zone {zone}: hostmaster {value:?} is neither a domain name nor a mail address")]
    Hostmaster { zone: String, value: String },
    #[error("zone {zone}: {source}")]
    Record { zone: String, source: RecordError },
    #[error("zone {zone}: hickory refused it: {reason}")]
    Build { zone: String, reason: String },
}

/// `s` as an absolute name: `@` is the apex, a name ending in a dot is absolute, a name whose
/// last labels are the zone's is taken as absolute too (users type `www.friends.example`),
/// anything else is relative to `origin`.
pub fn absolute_name(origin: &Name, s: &str) -> Result<Name, RecordError> {
    let bad = |reason: String| RecordError::BadName { name: s.to_string(), reason };
    let s = s.trim();
    if s.is_empty() {
        return Err(bad("empty".into()));
    }
    if s == "@" {
        return Ok(origin.to_lowercase());
    }
    let n = Name::from_ascii(s).map_err(|e| bad(e.to_string()))?;
    let n = if n.is_fqdn() {
        n
    } else {
        let as_abs = {
            let mut a = n.clone();
            a.set_fqdn(true);
            a
        };
        if origin.zone_of(&as_abs) { as_abs } else { n.append_domain(origin).map_err(|e| bad(e.to_string()))? }
    };
    for label in n.iter() {
        if label.is_empty() {
            return Err(bad("empty label".into()));
        }
    }
    Ok(n.to_lowercase())
}

/// Whether `name` is at or under `zone`.
pub fn in_zone(zone: &Name, name: &Name) -> bool {
    zone.zone_of(name)
}

fn render_txt(strings: &[Box<[u8]>]) -> String {
    let mut out = String::new();
    for (i, s) in strings.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push('"');
        for c in String::from_utf8_lossy(s).chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\{:03}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

/// `value` (presentation format) as RDATA of `rtype`, with relative target names made absolute
/// under `origin`.
pub fn parse_rdata(origin: &Name, rtype: RType, value: &str) -> Result<RData, RecordError> {
    let bad = |reason: String| RecordError::BadValue { rtype, value: value.to_string(), reason };
    if value.trim().is_empty() {
        return Err(bad("empty".into()));
    }
    let rdata = RData::try_from_str(rtype.record_type(), value).map_err(|e| bad(e.to_string()))?;
    let abs = |n: Name| -> Result<Name, RecordError> {
        let n = if n.is_fqdn() { n } else { n.append_domain(origin).map_err(|e| bad(e.to_string()))? };
        Ok(n.to_lowercase())
    };
    Ok(match rdata {
        RData::CNAME(c) => RData::CNAME(hickory_proto::rr::rdata::CNAME(abs(c.0)?)),
        RData::NS(n) => RData::NS(NS(abs(n.0)?)),
        RData::MX(mut mx) => {
            mx.exchange = abs(mx.exchange)?;
            RData::MX(mx)
        }
        RData::SRV(mut srv) => {
            srv.target = abs(srv.target)?;
            RData::SRV(srv)
        }
        RData::TXT(t) => {
            let len: usize = t.txt_data.iter().map(|s| s.len()).sum();
            if len > MAX_TXT_LEN {
                return Err(RecordError::TxtTooLong { len });
            }
            if let Some(long) = t.txt_data.iter().find(|s| s.len() > 255) {
                return Err(bad(format!("a TXT string is {} bytes long; split it into quoted strings of at most 255", long.len())));
            }
            if t.txt_data.is_empty() {
                return Err(bad("no strings".into()));
            }
            RData::TXT(t)
        }
        RData::CAA(c) => {
            // hickory parses the property value into its own structures and prints a lossy
            // form for some of them; what does not print back to itself is refused.
            let printed = c.to_string();
            match RData::try_from_str(RecordType::CAA, &printed) {
                Ok(RData::CAA(again)) if again == c => RData::CAA(c),
                _ => return Err(bad("this CAA value does not round-trip; write it as FLAGS TAG \"VALUE\"".into())),
            }
        }
        other => other,
    })
}

/// Canonical presentation of RDATA.
pub fn render_rdata(rdata: &RData) -> String {
    match rdata {
        RData::TXT(t) => render_txt(&t.txt_data),
        other => other.to_string(),
    }
}

impl RecordSpec {
    /// What `atoll dns record add DOMAIN NAME TYPE VALUE --ttl S` asks for, validated on its own
    /// (see [`ZoneSpec::check_record`] for the rules that need the rest of the zone).
    pub fn parse(origin: &Name, name: &str, rtype: &str, value: &str, ttl: Option<u32>) -> Result<RecordSpec, RecordError> {
        let rtype: RType = rtype.parse()?;
        let owner = absolute_name(origin, name)?;
        if !in_zone(origin, &owner) {
            return Err(RecordError::OutsideZone { name: owner.to_string(), zone: origin.to_string() });
        }
        let ttl = ttl.unwrap_or(DEFAULT_TTL);
        if ttl > MAX_TTL {
            return Err(RecordError::BadTtl(ttl));
        }
        let rdata = parse_rdata(origin, rtype, value)?;
        let is_apex = owner == origin.to_lowercase();
        if is_apex && rtype == RType::CNAME {
            return Err(RecordError::CnameAtApex(owner.to_string()));
        }
        if is_apex && rtype == RType::NS {
            return Err(RecordError::NsAtApex(owner.to_string()));
        }
        Ok(RecordSpec { name: owner.to_string(), ttl, rtype, value: render_rdata(&rdata) })
    }

    /// From a record of an UPDATE (or any hickory record) of a managed type.
    pub fn from_record(origin: &Name, record: &Record) -> Result<RecordSpec, RecordError> {
        let rtype =
            RType::from_record_type(record.record_type()).ok_or_else(|| RecordError::UnsupportedType(record.record_type().to_string()))?;
        let text = render_rdata(&record.data);
        RecordSpec::parse(origin, &record.name.to_string(), &rtype.to_string(), &text, Some(record.ttl))
    }

    /// The owner name.
    pub fn owner(&self) -> Name {
        Name::from_ascii(&self.name).expect("a RecordSpec holds a validated name")
    }

    /// The RDATA (`origin` only matters for specs not made by [`RecordSpec::parse`]).
    pub fn rdata(&self, origin: &Name) -> Result<RData, RecordError> {
        parse_rdata(origin, self.rtype, &self.value)
    }

    /// Same owner, type and data (TTL aside), as RFC 2136 compares records.
    pub fn same_data(&self, other: &RecordSpec, origin: &Name) -> bool {
        self.rtype == other.rtype
            && self.owner() == other.owner()
            && match (self.rdata(origin), other.rdata(origin)) {
                (Ok(a), Ok(b)) => a == b,
                _ => self.value == other.value,
            }
    }
}

impl fmt::Display for RecordSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} IN {} {}", self.name, self.ttl, self.rtype, self.value)
    }
}

/// The hostmaster as the SOA RNAME: `hostmaster@friends.example` becomes
/// `hostmaster.friends.example.`.
pub fn rname(origin: &Name, hostmaster: &str) -> Option<Name> {
    let s = hostmaster.trim();
    let n = match s.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !local.contains('.') && !domain.is_empty() => {
            let d = absolute_name(&Name::root(), domain).ok()?;
            Name::from_labels([local.as_bytes()]).ok()?.append_domain(&d).ok()?
        }
        Some(_) => return None,
        None => absolute_name(origin, s).ok()?,
    };
    Some(n)
}

impl ZoneSpec {
    /// The origin, lower case and absolute.
    pub fn apex(&self) -> Name {
        let mut o = self.origin.to_lowercase();
        o.set_fqdn(true);
        o
    }

    /// The nameservers' absolute names.
    pub fn nameserver_names(&self) -> Result<Vec<Name>, ZoneError> {
        let apex = self.apex();
        self.nameservers
            .iter()
            .map(|ns| {
                absolute_name(&apex, &ns.name).map_err(|source| ZoneError::Nameserver {
                    zone: apex.to_string(),
                    name: ns.name.clone(),
                    source,
                })
            })
            .collect()
    }

    /// Whether `record` can join the zone as it is: a CNAME alone at its name, no NS at the
    /// apex, nothing replacing the nameservers' glue.
    pub fn check_record(&self, record: &RecordSpec) -> Result<(), RecordError> {
        let apex = self.apex();
        let owner = record.owner();
        if !in_zone(&apex, &owner) {
            return Err(RecordError::OutsideZone { name: record.name.clone(), zone: apex.to_string() });
        }
        if owner == apex && record.rtype == RType::CNAME {
            return Err(RecordError::CnameAtApex(record.name.clone()));
        }
        if owner == apex && record.rtype == RType::NS {
            return Err(RecordError::NsAtApex(record.name.clone()));
        }
        if let Ok(names) = self.nameserver_names() {
            let glue = matches!(record.rtype, RType::A | RType::AAAA | RType::CNAME);
            if glue && names.contains(&owner) {
                return Err(RecordError::NameserverName(record.name.clone()));
            }
        }
        let others = self.records.iter().filter(|r| r.owner() == owner && !r.same_data(record, &apex));
        for other in others {
            if (record.rtype == RType::CNAME) != (other.rtype == RType::CNAME) || record.rtype == RType::CNAME {
                return Err(RecordError::CnameNextToOtherData(record.name.clone()));
            }
        }
        Ok(())
    }

    /// Adds a record (replacing the TTL of an identical one) if the zone can hold it.
    pub fn add_record(&mut self, record: RecordSpec) -> Result<(), RecordError> {
        self.check_record(&record)?;
        let apex = self.apex();
        match self.records.iter_mut().find(|r| r.same_data(&record, &apex)) {
            Some(r) => r.ttl = record.ttl,
            None => self.records.push(record),
        }
        Ok(())
    }

    /// Removes the records at `name` of type `rtype` whose value is `value` (all of that type
    /// when `value` is none); how many went.
    pub fn remove_records(&mut self, name: &Name, rtype: RType, value: Option<&RecordSpec>) -> usize {
        let apex = self.apex();
        let before = self.records.len();
        let name = name.to_lowercase();
        self.records.retain(|r| {
            let hit = r.owner() == name && r.rtype == rtype && value.is_none_or(|v| r.same_data(v, &apex));
            !hit
        });
        before - self.records.len()
    }

    /// Applies an UPDATE's changes in order, as RFC 2136 §3.4.2 does: an add that would put a
    /// CNAME next to other data (or other data next to a CNAME) is silently ignored, as are
    /// deletions of nothing. Changes to the apex NS/SOA never get here (see `update`); a change
    /// that names something outside the zone is an error and nothing is applied.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), RecordError> {
        let apex = self.apex();
        let mut next = self.clone();
        for change in changes {
            let name = absolute_name(&apex, change.name())?;
            if !in_zone(&apex, &name) {
                return Err(RecordError::OutsideZone { name: name.to_string(), zone: apex.to_string() });
            }
            match change {
                Change::Add(r) => match next.check_record(r) {
                    Ok(()) => next.add_record(r.clone())?,
                    Err(RecordError::CnameNextToOtherData(_)) => {}
                    Err(e) => return Err(e),
                },
                Change::DeleteRrset { rtype, .. } => {
                    next.remove_records(&name, *rtype, None);
                }
                Change::DeleteName { .. } => next.records.retain(|r| r.owner() != name),
                Change::DeleteRecord(r) => {
                    next.remove_records(&name, r.rtype, Some(r));
                }
            }
        }
        *self = next;
        Ok(())
    }

    /// Checks the whole zone: nameservers, hostmaster and every record.
    pub fn validate(&self) -> Result<(), ZoneError> {
        self.records_for_hickory().map(|_| ())
    }

    /// The SOA record.
    pub fn soa(&self) -> Result<Record, ZoneError> {
        let apex = self.apex();
        let names = self.nameserver_names()?;
        let mname = names.first().cloned().ok_or_else(|| ZoneError::NoNameservers(apex.to_string()))?;
        let rname = rname(&apex, &self.hostmaster)
            .ok_or_else(|| ZoneError::Hostmaster { zone: apex.to_string(), value: self.hostmaster.clone() })?;
        let soa = SOA::new(mname, rname, self.serial, 3600, 600, 1_209_600, NEGATIVE_TTL);
        Ok(Record::from_rdata(apex, INFRA_TTL, RData::SOA(soa)))
    }

    /// Every record of the zone, SOA first: NS per nameserver, glue, then the zone's records.
    pub fn records_for_hickory(&self) -> Result<Vec<Record>, ZoneError> {
        let apex = self.apex();
        let zone = apex.to_string();
        let mut out = vec![self.soa()?];
        let ns_names = self.nameserver_names()?;
        for (ns, name) in self.nameservers.iter().zip(ns_names.iter().cloned()) {
            out.push(Record::from_rdata(apex.clone(), INFRA_TTL, RData::NS(NS(name.clone()))));
            if in_zone(&apex, &name) {
                for addr in &ns.addrs {
                    let rdata = match addr {
                        IpAddr::V4(a) => RData::A(A(*a)),
                        IpAddr::V6(a) => RData::AAAA(AAAA(*a)),
                    };
                    out.push(Record::from_rdata(name.clone(), INFRA_TTL, rdata));
                }
            }
        }
        // The CNAME rule over the whole zone in one pass: per owner, a CNAME and anything else
        // (or two different CNAMEs) cannot meet.
        let mut at: HashMap<Name, (usize, usize)> = HashMap::new(); // owner -> (CNAMEs, others)
        let mut seen: HashSet<(Name, RType, String)> = HashSet::new();
        for r in &self.records {
            let bad = |source| ZoneError::Record { zone: zone.clone(), source };
            let owner = absolute_name(&apex, &r.name).map_err(bad)?;
            if !in_zone(&apex, &owner) {
                return Err(bad(RecordError::OutsideZone { name: r.name.clone(), zone: zone.clone() }));
            }
            let rdata = r.rdata(&apex).map_err(bad)?;
            let canonical = render_rdata(&rdata);
            if !seen.insert((owner.clone(), r.rtype, canonical)) {
                continue;
            }
            if owner == apex && matches!(r.rtype, RType::CNAME | RType::NS) {
                let e =
                    if r.rtype == RType::CNAME { RecordError::CnameAtApex(r.name.clone()) } else { RecordError::NsAtApex(r.name.clone()) };
                return Err(bad(e));
            }
            if matches!(r.rtype, RType::A | RType::AAAA | RType::CNAME) && ns_names.contains(&owner) {
                return Err(bad(RecordError::NameserverName(r.name.clone())));
            }
            let counts = at.entry(owner.clone()).or_default();
            if r.rtype == RType::CNAME {
                counts.0 += 1
            } else {
                counts.1 += 1
            }
            if counts.0 > 1 || (counts.0 == 1 && counts.1 > 0) {
                return Err(bad(RecordError::CnameNextToOtherData(r.name.clone())));
            }
            out.push(Record::from_rdata(owner, r.ttl, rdata));
        }
        Ok(out)
    }

    /// The records grouped as hickory's in-memory zone takes them.
    pub fn record_sets(&self) -> Result<BTreeMap<RrKey, RecordSet>, ZoneError> {
        let mut sets: BTreeMap<RrKey, RecordSet> = BTreeMap::new();
        for r in self.records_for_hickory()? {
            let key = RrKey::new(r.name.clone().into(), r.record_type());
            let set = sets.entry(key).or_insert_with(|| RecordSet::new(r.name.clone(), r.record_type(), self.serial));
            set.insert(r, self.serial);
        }
        Ok(sets)
    }

    /// Records at `name` (any type when `rtype` is none), for UPDATE prerequisites: the zone's
    /// own and the island's (SOA, NS, glue).
    pub fn lookup(&self, name: &Name, rtype: Option<RecordType>) -> Vec<Record> {
        lookup_in(&self.records_for_hickory().unwrap_or_default(), name, rtype)
    }
}

/// The records of `all` at `name` (any type when `rtype` is none).
pub fn lookup_in(all: &[Record], name: &Name, rtype: Option<RecordType>) -> Vec<Record> {
    all.iter().filter(|r| r.name == *name && rtype.is_none_or(|t| r.record_type() == t)).cloned().collect()
}

#[cfg(test)]
mod tests;
