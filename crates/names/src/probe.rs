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
    let qname = Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).map_err(|e| format!("{name}: {e}"))?;
    let mut msg = Message::query();
    msg.metadata.id = fastrand::u16(..);
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
