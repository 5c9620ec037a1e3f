//! The authoritative server on a public member: [`atoll_dns::Server`] on each of its public
//! addresses (port 53), answering from this member's replica (so it keeps answering while the
//! leader is away), with UPDATEs committed through the leader ([`crate::apply_update`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use atoll_dns::{Nameserver, RecordSpec, Snapshot, TsigKeySpec, ZoneSpec};
use atoll_island::Manager;
use atoll_island::model::IslandState;
use atoll_state::desired::{DnsRecord, TsigKey, Zone};
use hickory_proto::rr::Name;
use tokio::sync::watch;

use crate::{Names, zone};

/// The port authoritative DNS listens on.
pub const PORT: u16 = 53;

/// Zone `z`'s SOA and NS data with `content`'s nameservers, and no records.
pub fn zone_spec(z: &Zone, content: &zone::ZoneContent, origin: &Name) -> ZoneSpec {
    ZoneSpec {
        origin: origin.clone(),
        serial: z.serial,
        nameservers: content.nameservers.iter().map(|(n, addrs)| Nameserver { name: format!("{n}."), addrs: addrs.clone() }).collect(),
        // A contact the SOA cannot spell (a dot in its local part) gives way to hostmaster@.
        hostmaster: z
            .email
            .clone()
            .filter(|e| atoll_dns::rname(origin, e).is_some())
            .unwrap_or_else(|| format!("hostmaster.{}.", z.domain)),
        records: vec![],
        secondaries: z.secondaries.iter().filter_map(|s| s.parse().ok()).collect(),
        transfer_key: z.transfer_key.as_ref().and_then(|k| Name::from_ascii(format!("{k}.")).ok()),
    }
}

/// What every public host serves: each zone's content (a zone with no public host to serve it
/// has no nameserver and is left out), and the TSIG keys.
pub fn snapshot(names: &Names, island: &IslandState) -> Snapshot {
    let mut zones = Vec::new();
    for (z, _) in &names.zones {
        let Ok(origin) = crate::origin(&z.domain) else { continue };
        let recs: Vec<&DnsRecord> = names.records_of(&z.domain).map(|(r, _)| r).collect();
        let content = zone::content(z, &recs, island, &names.services, &names.bundle_hosts);
        if content.nameservers.is_empty() {
            continue;
        }
        let mut spec = zone_spec(z, &content, &origin);
        for r in &content.records {
            match RecordSpec::parse(&origin, &format!("{}.", r.name), &r.rtype, &r.value, Some(r.ttl)) {
                Ok(s) => spec.records.push(s),
                Err(e) => tracing::warn!(zone = %z.domain, record = ?r, error = %e, "leaving out a record that does not parse"),
            }
        }
        zones.push(spec);
    }
    Snapshot { zones, keys: names.keys.iter().filter_map(|(k, _)| key_spec(k)).collect() }
}

fn key_spec(k: &TsigKey) -> Option<TsigKeySpec> {
    use base64::Engine;
    Some(TsigKeySpec {
        name: Name::from_ascii(format!("{}.", k.name)).ok()?,
        algorithm: k.algorithm.clone(),
        secret: base64::engine::general_purpose::STANDARD.decode(&k.secret).ok()?,
        scope: Name::from_ascii(format!("{}.", k.scope)).ok()?,
        revoked: false,
    })
}

/// This member's public addresses, if it is a public host.
pub fn public_addrs(m: &Manager) -> Vec<IpAddr> {
    let state = m.state();
    let mut ips: Vec<IpAddr> = state.members.get(m.id()).map(|me| me.public.iter().map(|a| a.ip()).collect()).unwrap_or_default();
    ips.sort();
    ips.dedup();
    ips
}

/// UPDATEs go to the island's log through the leader.
struct IslandSink(Arc<Manager>);

#[async_trait::async_trait]
impl atoll_dns::UpdateSink for IslandSink {
    async fn apply(&self, zone: &Name, changes: Vec<atoll_dns::Change>) -> Result<(), String> {
        crate::apply_update(&self.0, &zone.to_string(), &changes).await.map_err(|e| e.to_string())
    }
}

/// The server running on this member: one per island manager and set of addresses.
pub struct Serving {
    pub addrs: Vec<SocketAddr>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Serving {
    /// Binds UDP and TCP on each of `addrs` and serves `names` from then on; fails (binding
    /// nothing) if any address cannot be bound.
    pub async fn start(m: Arc<Manager>, addrs: Vec<SocketAddr>, first: Snapshot) -> std::io::Result<Serving> {
        let mut sockets = Vec::new();
        for a in &addrs {
            let udp = tokio::net::UdpSocket::bind(a).await?;
            let tcp = tokio::net::TcpListener::bind(a).await?;
            sockets.push((udp, tcp));
        }
        let (tx, rx) = watch::channel(Arc::new(first));
        let server = atoll_dns::Server::new(rx, Arc::new(IslandSink(m)));
        let tasks = sockets
            .into_iter()
            .zip(&addrs)
            .map(|((udp, tcp), a)| {
                let server = server.clone();
                let a = *a;
                tokio::spawn(async move {
                    if let Err(e) = server.serve(udp, tcp).await {
                        tracing::warn!(addr = %a, error = %e, "the authoritative DNS server stopped");
                    }
                })
            })
            .collect();
        tracing::info!(addrs = ?addrs, "serving the island's zones");
        Ok(Serving { addrs, snapshot: tx, tasks })
    }

    /// Serves `next` from now on (nothing happens if it is what is served).
    pub fn update(&self, next: Snapshot) {
        self.snapshot.send_if_modified(|cur| {
            if **cur == next {
                return false;
            }
            *cur = Arc::new(next);
            true
        });
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}
