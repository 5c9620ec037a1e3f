//! The leader's part of the names: what changes a zone without a write to it. Twice a second
//! while this member leads, each zone's content is computed from the replica; if it moved away
//! from the digest its serial was given for (a public host joined or left, a stack was deployed
//! or removed), the zone gets a new serial. Every member has a TSIG key for its own name in
//! every zone (`<host>.<domain>`, scoped to that name), made when the member or the zone
//! arrives and removed with the member.

use atoll_island::Manager;
use atoll_island::model::IslandState;
use atoll_state::desired::{self, DnsRecord, TsigKey, Zone};
use atoll_state::{Expect, Request, Response};

use crate::{Names, NamesError, new_secret, unix_now, zone};

/// The keys every member of `island` should have in `z`: one per member, named and scoped
/// `<host>.<domain>` (fresh secrets: only the missing ones are written).
pub fn member_keys(z: &Zone, island: &IslandState) -> Vec<TsigKey> {
    island
        .members
        .values()
        .map(|m| {
            let name = format!("{}.{}", atoll_island::manager::host_label(&m.name), z.domain);
            TsigKey {
                name: name.clone(),
                algorithm: crate::ALGORITHMS[0].to_owned(),
                secret: new_secret(),
                zone: z.domain.clone(),
                scope: name,
                member: Some(m.id.clone()),
                created: unix_now(),
                extra: Default::default(),
            }
        })
        .collect()
}

/// The writes that bring the names in line with the island: zones whose content moved get a
/// new serial, members' keys are made and removed.
pub fn plan(names: &Names, island: &IslandState) -> Vec<Request> {
    let mut ops = Vec::new();
    for (z, v) in &names.zones {
        let recs: Vec<&DnsRecord> = names.records_of(&z.domain).map(|(r, _)| r).collect();
        let digest = zone::content(z, &recs, island, &names.services, &names.bundle_hosts).digest();
        if digest != z.digest {
            ops.push(desired::put(&crate::bumped(z, digest), Expect::Version(*v)));
        }
        for key in member_keys(z, island) {
            if names.key(&key.name).is_none() {
                ops.push(desired::put(&key, Expect::Absent));
            }
        }
    }
    for (k, v) in &names.keys {
        let member_gone = k.member.as_ref().is_some_and(|id| !island.members.contains_key(id));
        let zone_gone = names.zone(&k.zone).is_none();
        if member_gone || zone_gone {
            ops.push(desired::delete::<TsigKey>(&k.name, Expect::Version(*v)));
        }
    }
    ops
}

/// One look: while this member leads, writes what [`plan`] says. True if it wrote.
pub async fn tick(m: &Manager) -> Result<bool, NamesError> {
    if !m.leads() {
        return Ok(false);
    }
    let names = m.replica().with(Names::read)?;
    let ops = plan(&names, &m.state());
    if ops.is_empty() {
        return Ok(false);
    }
    match m.propose(Request::Txn { ops }).await? {
        Response::Done { .. } | Response::Empty => Ok(true),
        // The replica was behind: the next look plans again from a newer one.
        Response::Conflict { .. } | Response::TxnConflict { .. } => Ok(false),
        Response::Refused { reason } => Err(NamesError::Refused(reason)),
    }
}
