//! hickory's in-memory zone, with the whole additional section: hickory looks up addresses for
//! the first target of an NS, MX or SRV answer only, so an NS query named one nameserver's
//! glue and not the other's. This wrapper answers as hickory does and then puts the in-zone
//! A/AAAA of every target in the additional section.

use std::sync::Arc;

use hickory_proto::rr::TSigResponseContext;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::{
    server::{Request, RequestInfo},
    store::in_memory::InMemoryZoneHandler,
    zone_handler::{AuthLookup, AxfrPolicy, LookupControlFlow, LookupOptions, LookupRecords, Nsec3QueryInfo, ZoneHandler, ZoneType},
};

/// An in-memory zone and all its records (to find glue in).
pub(crate) struct Glued {
    pub inner: InMemoryZoneHandler,
    pub records: Arc<Vec<Record>>,
}

fn targets(answers: &LookupRecords) -> Vec<Name> {
    answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::NS(ns) => Some(ns.0.clone()),
            RData::MX(mx) => Some(mx.exchange.clone()),
            RData::SRV(srv) => Some(srv.target.clone()),
            _ => None,
        })
        .collect()
}

impl Glued {
    fn complete(&self, found: LookupControlFlow<AuthLookup>) -> LookupControlFlow<AuthLookup> {
        found.map(|lookup| match lookup {
            AuthLookup::Records { answers, additionals } => {
                let names = targets(&answers);
                if names.is_empty() {
                    return AuthLookup::Records { answers, additionals };
                }
                let glue: Vec<Record> = names
                    .iter()
                    .flat_map(|n| {
                        self.records.iter().filter(move |r| matches!(r.record_type(), RecordType::A | RecordType::AAAA) && r.name == *n)
                    })
                    .cloned()
                    .collect();
                let additionals = if glue.is_empty() { additionals } else { Some(LookupRecords::Section(glue)) };
                AuthLookup::Records { answers, additionals }
            }
            other => other,
        })
    }
}

#[async_trait::async_trait]
impl ZoneHandler for Glued {
    fn zone_type(&self) -> ZoneType {
        self.inner.zone_type()
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        self.inner.origin()
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        request_info: Option<&RequestInfo<'_>>,
        lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        let found = self.inner.lookup(name, rtype, request_info, lookup_options).await;
        self.complete(found)
    }

    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let (found, tsig) = self.inner.search(request, lookup_options).await;
        (self.complete(found), tsig)
    }

    async fn nsec_records(&self, name: &LowerName, lookup_options: LookupOptions) -> LookupControlFlow<AuthLookup> {
        self.inner.nsec_records(name, lookup_options).await
    }

    async fn nsec3_records(&self, info: Nsec3QueryInfo<'_>, lookup_options: LookupOptions) -> LookupControlFlow<AuthLookup> {
        self.inner.nsec3_records(info, lookup_options).await
    }

    fn nx_proof_kind(&self) -> Option<&hickory_server::dnssec::NxProofKind> {
        self.inner.nx_proof_kind()
    }
}
