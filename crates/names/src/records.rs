//! The names' part of one replica of the island's state, read at once: zones, their records,
//! TSIG keys, certificates, and the stacks' services (which get names of their own).

use atoll_state::desired::{self, DecodeError, DnsRecord, Service, TsigKey, Zone};

use crate::certs::{AcmeAccount, CertDoc};
use atoll_state::keyspace::Keyspace;

use crate::NamesError;

/// One look at the names' records, each with its version (the log index that wrote it).
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub zones: Vec<(Zone, u64)>,
    pub records: Vec<(DnsRecord, u64)>,
    pub keys: Vec<(TsigKey, u64)>,
    pub certificates: Vec<(CertDoc, u64)>,
    pub accounts: Vec<(AcmeAccount, u64)>,
    pub services: Vec<Service>,
    /// The host names the island's bundles are served at ([`atoll_state::ingress::bundle_hosts`]).
    pub bundle_hosts: Vec<String>,
}

impl Names {
    pub fn read(ks: &Keyspace) -> Result<Self, DecodeError> {
        Ok(Self {
            zones: desired::list(ks)?,
            records: desired::list(ks)?,
            keys: desired::list(ks)?,
            certificates: desired::list(ks)?,
            accounts: desired::list(ks)?,
            services: desired::list(ks)?.into_iter().map(|(s, _)| s).collect(),
            bundle_hosts: Vec::new(),
        }
        .with_bundles(desired::list(ks)?.into_iter().map(|(b, _)| b).collect()))
    }

    fn with_bundles(mut self, bundles: Vec<desired::Bundle>) -> Self {
        let zones: Vec<String> = self.zones.iter().map(|(z, _)| z.domain.clone()).collect();
        self.bundle_hosts = bundles.iter().flat_map(|b| atoll_state::ingress::bundle_hosts(b, &zones)).collect();
        self
    }

    pub fn zone(&self, domain: &str) -> Option<&(Zone, u64)> {
        self.zones.iter().find(|(z, _)| z.domain == domain)
    }

    /// The zone named `domain`, or an error listing the zones there are.
    pub fn existing_zone(&self, domain: &str) -> Result<&(Zone, u64), NamesError> {
        self.zone(domain).ok_or_else(|| NamesError::NoSuchDomain {
            domain: domain.to_owned(),
            known: self.zones.iter().map(|(z, _)| z.domain.clone()).collect(),
        })
    }

    /// The zone that `name` (absolute, lower case, no trailing dot) is in: the longest origin
    /// it ends with.
    pub fn zone_of(&self, name: &str) -> Option<&(Zone, u64)> {
        self.zones.iter().filter(|(z, _)| crate::zone::is_within(name, &z.domain)).max_by_key(|(z, _)| z.domain.len())
    }

    /// The records of zone `domain`.
    pub fn records_of<'a>(&'a self, domain: &'a str) -> impl Iterator<Item = &'a (DnsRecord, u64)> + 'a {
        self.records.iter().filter(move |(r, _)| r.zone == domain)
    }

    pub fn key(&self, name: &str) -> Option<&(TsigKey, u64)> {
        self.keys.iter().find(|(k, _)| k.name == name)
    }
}
