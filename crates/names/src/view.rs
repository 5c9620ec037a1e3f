//! What `atoll domain ls|status`, `atoll dns record ls` and `atoll domain keys` show, from
//! one replica.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use atoll_island::model::IslandState;
use atoll_state::desired::{DnsRecord, TsigKey};

use crate::{Names, zone};

/// A zone the island serves.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DomainView {
    pub domain: String,
    pub serial: u32,
    /// Its nameservers: what to set at the registrar (NS records, with these glue addresses).
    pub nameservers: Vec<Nameserver>,
    pub acme_directory: String,
    pub email: Option<String>,
    /// Records users added.
    pub records: usize,
    /// TSIG keys that may change names in it.
    pub keys: usize,
    /// Secondaries sent NOTIFY (`ADDR:PORT`).
    pub secondaries: Vec<String>,
    /// The key secondaries sign transfers with.
    pub transfer_key: Option<String>,
    /// What this host's resolver sees of the delegation (`domain status` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<crate::probe::Delegation>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Nameserver {
    pub name: String,
    pub addresses: Vec<String>,
}

pub fn domains(names: &Names, island: &IslandState) -> Vec<DomainView> {
    names
        .zones
        .iter()
        .map(|(z, _)| {
            let recs: Vec<&DnsRecord> = names.records_of(&z.domain).map(|(r, _)| r).collect();
            let content = zone::content(z, &recs, island, &names.services, &names.bundle_hosts);
            DomainView {
                domain: z.domain.clone(),
                serial: z.serial,
                nameservers: content
                    .nameservers
                    .iter()
                    .map(|(n, a)| Nameserver { name: n.clone(), addresses: a.iter().map(|a| a.to_string()).collect() })
                    .collect(),
                acme_directory: z.acme_directory.clone(),
                email: z.email.clone(),
                records: recs.len(),
                keys: names.keys.iter().filter(|(k, _)| k.zone == z.domain).count(),
                secondaries: z.secondaries.clone(),
                transfer_key: z.transfer_key.clone(),
                delegation: None,
            }
        })
        .collect()
}

/// One record of a zone as served.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordView {
    /// Relative to the zone (`@` the apex).
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub ttl: u32,
    pub value: String,
    /// `user` (added by `dns record add` or an UPDATE: removable) or `island` (derived from
    /// its hosts and services).
    pub source: String,
}

/// Zone `domain`'s records as served (apart from SOA and NS).
pub fn records(names: &Names, island: &IslandState, domain: &str) -> Vec<RecordView> {
    let Some((z, _)) = names.zone(domain) else { return vec![] };
    let recs: Vec<&DnsRecord> = names.records_of(domain).map(|(r, _)| r).collect();
    let content = zone::content(z, &recs, island, &names.services, &names.bundle_hosts);
    let mut out: Vec<RecordView> = content
        .nameservers
        .iter()
        .flat_map(|(ns, addrs)| {
            addrs.iter().map(move |a| RecordView {
                name: zone::relative(ns, domain),
                rtype: if a.is_ipv4() { "A" } else { "AAAA" }.into(),
                ttl: zone::DERIVED_TTL,
                value: a.to_string(),
                source: "island".into(),
            })
        })
        .collect();
    out.extend(content.records.iter().map(|r| {
        let user = recs.iter().any(|u| zone::absolute(&u.name, domain) == r.name && u.rtype == r.rtype && u.value == r.value);
        RecordView {
            name: zone::relative(&r.name, domain),
            rtype: r.rtype.clone(),
            ttl: r.ttl,
            value: r.value.clone(),
            source: if user { "user" } else { "island" }.into(),
        }
    }));
    out
}

/// A TSIG key (its secret only when asked for).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// The key's name, as nsupdate's `-y` and certbot's `dns_rfc2136_name` take it.
    pub name: String,
    pub algorithm: String,
    /// Base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub zone: String,
    /// The sub-zone inside which it may change names.
    pub scope: String,
    /// The member it belongs to, for a member's own key.
    pub member: Option<String>,
    /// Unix seconds.
    pub created: i64,
}

impl KeyView {
    pub fn of(k: &TsigKey, with_secret: bool) -> Self {
        Self {
            name: k.name.clone(),
            algorithm: k.algorithm.clone(),
            secret: with_secret.then(|| k.secret.clone()),
            zone: k.zone.clone(),
            scope: k.scope.clone(),
            member: k.member.clone(),
            created: k.created,
        }
    }
}
