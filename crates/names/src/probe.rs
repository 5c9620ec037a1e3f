//! Asking a nameserver what it serves, over UDP (messages built and read by hickory-proto):
//! whether every public host serves an ACME challenge before the CA is told to look, and a
//! zone's serial on each host (`domain status`, the propagation benchmark).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// How long one query waits for its answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Asks `server` for `name`'s `rtype` records (no recursion): the answer's records, or why not.
pub async fn query(server: SocketAddr, name: &str, rtype: RecordType) -> Result<Vec<RData>, String> {
    ask(server, name, rtype, false).await
}

/// Asks `server` for `name`'s `rtype` records, `recursive` for a resolver (RD set).
async fn ask(server: SocketAddr, name: &str, rtype: RecordType, recursive: bool) -> Result<Vec<RData>, String> {
    let qname = Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).map_err(|e| format!("{name}: {e}"))?;
    let mut msg = Message::query();
    msg.metadata.id = fastrand::u16(..);
    msg.metadata.recursion_desired = recursive;
    msg.add_query(Query::query(qname, rtype));
    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0".parse().expect("an address") } else { "[::]:0".parse().expect("an address") };
    let sock = tokio::net::UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    sock.send_to(&bytes, server).await.map_err(|e| format!("asking {server}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (n, from) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf))
            .await
            .map_err(|_| format!("{server} did not answer"))?
            .map_err(|e| e.to_string())?;
        if from != server {
            continue;
        }
        let Ok(answer) = Message::from_vec(&buf[..n]) else { continue };
        if answer.metadata.id != msg.metadata.id {
            continue;
        }
        return match answer.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(answer.answers.into_iter().map(|r| r.data).collect()),
            code => Err(format!("{server} answered {code}")),
        };
    }
}

/// The TXT strings `server` serves at `name`, each record's strings joined.
pub async fn txt(server: SocketAddr, name: &str) -> Result<Vec<String>, String> {
    Ok(query(server, name, RecordType::TXT)
        .await?
        .into_iter()
        .filter_map(|d| match d {
            RData::TXT(t) => Some(t.txt_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect::<String>()),
            _ => None,
        })
        .collect())
}

/// Zone `zone`'s serial as `server` serves it.
pub async fn serial(server: SocketAddr, zone: &str) -> Result<u32, String> {
    query(server, zone, RecordType::SOA)
        .await?
        .into_iter()
        .find_map(|d| match d {
            RData::SOA(s) => Some(s.serial),
            _ => None,
        })
        .ok_or_else(|| format!("{server} has no SOA for {zone}"))
}

/// Whether the world sees the island's nameservers for a zone: what a resolver of this host
/// answers for its NS records, beside the island's own.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Delegation {
    /// The resolver asked (`ADDR:PORT`), if this host has one.
    pub resolver: Option<String>,
    /// The nameservers it answered, absolute names without the final dot.
    pub seen: Vec<String>,
    /// They are exactly the island's.
    pub matches: bool,
    /// Why nothing was seen, in words.
    pub error: Option<String>,
}

/// Asks the first of `resolvers` that answers for `zone`'s NS records and compares them with
/// `ours`.
pub async fn delegation(zone: &str, ours: &[String], resolvers: &[SocketAddr]) -> Delegation {
    let mut error = Some("this host has no resolver (--resolv-conf, --dns)".to_owned());
    for r in resolvers {
        match ask(*r, zone, RecordType::NS, true).await {
            Ok(data) => {
                let mut seen: Vec<String> = data
                    .into_iter()
                    .filter_map(|d| match d {
                        RData::NS(ns) => Some(ns.0.to_ascii().trim_end_matches('.').to_ascii_lowercase()),
                        _ => None,
                    })
                    .collect();
                seen.sort();
                let mut mine: Vec<String> = ours.to_vec();
                mine.sort();
                let error = seen.is_empty().then(|| format!("{r} knows no nameserver for {zone}: set the NS records at the registrar"));
                return Delegation { resolver: Some(r.to_string()), matches: !seen.is_empty() && seen == mine, seen, error };
            }
            Err(e) => error = Some(e),
        }
    }
    Delegation { resolver: resolvers.first().map(|r| r.to_string()), seen: vec![], matches: false, error }
}
