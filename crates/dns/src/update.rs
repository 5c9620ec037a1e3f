//! RFC 2136 UPDATE, the pure core: given the zone as it is now, the key that signed the
//! request and the request's prerequisite and update sections, either the RCODE to refuse
//! with or the [`Change`]s to hand to the island. Nothing here changes data; the server hands
//! the changes to its `UpdateSink` (all or nothing) and answers.

use hickory_proto::{
    op::ResponseCode,
    rr::{DNSClass, Name, RData, Record, RecordType},
};

use crate::model::{Change, RType, RecordSpec, TsigKeySpec, ZoneSpec, in_zone, lookup_in};

/// At most this many records in the prerequisite and update sections together.
pub const MAX_UPDATE_RECORDS: usize = 256;

/// Why an UPDATE is refused, and the RCODE that says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    pub rcode: ResponseCode,
    pub reason: String,
}

fn refuse(rcode: ResponseCode, reason: impl Into<String>) -> Refusal {
    Refusal { rcode, reason: reason.into() }
}

fn is_meta(t: RecordType) -> bool {
    matches!(t, RecordType::ANY | RecordType::AXFR | RecordType::IXFR | RecordType::OPT | RecordType::TSIG)
        || u16::from(t) == 253 // MAILA
        || u16::from(t) == 254 // MAILB
}

fn rdata_empty(r: &Record) -> bool {
    matches!(r.data, RData::Update0(_))
}

/// §3.2: evaluates the prerequisites against `zone`.
pub fn check_prerequisites(zone: &ZoneSpec, prerequisites: &[Record]) -> Result<(), Refusal> {
    let apex = zone.apex();
    if prerequisites.is_empty() {
        return Ok(());
    }
    let all = zone.records_for_hickory().map_err(|e| refuse(ResponseCode::ServFail, e.to_string()))?;
    let lookup = |name: &Name, t: Option<RecordType>| lookup_in(&all, name, t);
    // (name, type) -> the records the requestor says are the whole RRset.
    let mut temp: Vec<(Name, RecordType, Vec<RData>)> = Vec::new();
    for rr in prerequisites {
        let name = rr.name.to_lowercase();
        if rr.ttl != 0 {
            return Err(refuse(ResponseCode::FormErr, format!("prerequisite {name} has a TTL")));
        }
        if !in_zone(&apex, &name) {
            return Err(refuse(ResponseCode::NotZone, format!("prerequisite {name} is outside the zone {apex}")));
        }
        let rtype = rr.record_type();
        match rr.dns_class {
            DNSClass::ANY => {
                if !rdata_empty(rr) {
                    return Err(refuse(ResponseCode::FormErr, "a class ANY prerequisite has data"));
                }
                if rtype == RecordType::ANY {
                    if lookup(&name, None).is_empty() {
                        return Err(refuse(ResponseCode::NXDomain, format!("{name} does not exist")));
                    }
                } else if lookup(&name, Some(rtype)).is_empty() {
                    return Err(refuse(ResponseCode::NXRRSet, format!("{name} has no {rtype} records")));
                }
            }
            DNSClass::NONE => {
                if !rdata_empty(rr) {
                    return Err(refuse(ResponseCode::FormErr, "a class NONE prerequisite has data"));
                }
                if rtype == RecordType::ANY {
                    if !lookup(&name, None).is_empty() {
                        return Err(refuse(ResponseCode::YXDomain, format!("{name} exists")));
                    }
                } else if !lookup(&name, Some(rtype)).is_empty() {
                    return Err(refuse(ResponseCode::YXRRSet, format!("{name} has {rtype} records")));
                }
            }
            DNSClass::IN => {
                if rdata_empty(rr) || is_meta(rtype) {
                    return Err(refuse(ResponseCode::FormErr, "a value-dependent prerequisite without data"));
                }
                match temp.iter_mut().find(|(n, t, _)| *n == name && *t == rtype) {
                    Some((_, _, set)) => {
                        if !set.contains(&rr.data) {
                            set.push(rr.data.clone())
                        }
                    }
                    None => temp.push((name, rtype, vec![rr.data.clone()])),
                }
            }
            _ => return Err(refuse(ResponseCode::FormErr, "prerequisite of another class")),
        }
    }
    for (name, rtype, wanted) in temp {
        let have: Vec<RData> = lookup(&name, Some(rtype)).into_iter().map(|r| r.data).collect();
        let same = have.len() == wanted.len() && wanted.iter().all(|w| have.contains(w));
        if !same {
            return Err(refuse(ResponseCode::NXRRSet, format!("{name} {rtype} is not the RRset the prerequisite names")));
        }
    }
    Ok(())
}

/// §3.3 and §3.4: checks the update section (scope of `key`, form, the apex SOA/NS) and turns
/// it into changes. Records of types the island does not serve cannot be added (REFUSED);
/// deleting them deletes nothing.
pub fn plan_changes(zone: &ZoneSpec, key: &TsigKeySpec, updates: &[Record]) -> Result<Vec<Change>, Refusal> {
    let apex = zone.apex();
    let scope = key.scope.to_lowercase();
    // §3.4.1 prescan: nothing is applied unless everything is well formed and allowed.
    for rr in updates {
        let name = rr.name.to_lowercase();
        if !in_zone(&apex, &name) {
            return Err(refuse(ResponseCode::NotZone, format!("{name} is outside the zone {apex}")));
        }
        let rtype = rr.record_type();
        let form = match rr.dns_class {
            DNSClass::IN => !is_meta(rtype) && !rdata_empty(rr),
            DNSClass::ANY => rr.ttl == 0 && rdata_empty(rr) && (rtype == RecordType::ANY || !is_meta(rtype)),
            DNSClass::NONE => rr.ttl == 0 && !is_meta(rtype) && !rdata_empty(rr),
            _ => false,
        };
        if !form {
            return Err(refuse(ResponseCode::FormErr, format!("malformed update record for {name} {rtype}")));
        }
    }
    // §3.3: the key may change its sub-zone only.
    for rr in updates {
        let name = rr.name.to_lowercase();
        if !in_zone(&scope, &name) {
            return Err(refuse(ResponseCode::Refused, format!("key {} may change names under {scope} only, not {name}", key.name)));
        }
    }
    let mut changes = Vec::new();
    for rr in updates {
        let name = rr.name.to_lowercase();
        let rtype = rr.record_type();
        let at_apex = name == apex;
        if at_apex && matches!(rtype, RecordType::SOA | RecordType::NS) {
            return Err(refuse(ResponseCode::Refused, format!("the {rtype} records of {apex} are managed by the island")));
        }
        match rr.dns_class {
            DNSClass::IN => {
                let spec = RecordSpec::from_record(&apex, rr).map_err(|e| refuse(ResponseCode::Refused, e.to_string()))?;
                changes.push(Change::Add(spec));
            }
            DNSClass::ANY if rtype == RecordType::ANY => changes.push(Change::DeleteName { name: name.to_string() }),
            DNSClass::ANY => {
                if let Some(rtype) = RType::from_record_type(rtype) {
                    changes.push(Change::DeleteRrset { name: name.to_string(), rtype });
                }
            }
            _ => {
                // class NONE: one record.
                if RType::from_record_type(rtype).is_some() {
                    let mut rr = rr.clone();
                    rr.ttl = 0;
                    // A value the zone could not hold is not in it: nothing to delete.
                    if let Ok(spec) = RecordSpec::from_record(&apex, &rr) {
                        changes.push(Change::DeleteRecord(spec));
                    }
                }
            }
        }
    }
    Ok(changes)
}

/// The whole of §3.2–§3.4 for one zone: the changes to apply (empty when they change nothing),
/// or why not.
pub fn plan(zone: &ZoneSpec, key: &TsigKeySpec, prerequisites: &[Record], updates: &[Record]) -> Result<Vec<Change>, Refusal> {
    if prerequisites.len() + updates.len() > MAX_UPDATE_RECORDS {
        return Err(refuse(ResponseCode::Refused, format!("more than {MAX_UPDATE_RECORDS} records in one UPDATE")));
    }
    check_prerequisites(zone, prerequisites)?;
    let changes = plan_changes(zone, key, updates)?;
    let mut after = zone.clone();
    after.apply(&changes).map_err(|e| refuse(ResponseCode::Refused, e.to_string()))?;
    if after.records == zone.records {
        return Ok(Vec::new());
    }
    Ok(changes)
}

#[cfg(test)]
mod tests;
