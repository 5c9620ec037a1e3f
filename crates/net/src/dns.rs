//! Service discovery: a DNS server on every network's gateway address. Containers resolve
//! the names (container names, aliases, compose service names) of the containers that share
//! a network with them, as A and AAAA records; other names go to the host's resolvers
//! (except from `--internal` networks, which have no way out).
//!
//! It is served by the helper process (`helperd`), so containers keep resolving while the
//! daemon is down or restarting. [`answer`] is the pure core.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// Short: containers come and go, and most resolvers in containers do not cache anyway.
const TTL: u32 = 5;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
const TCP_IDLE: Duration = Duration::from_secs(10);
/// At most this many forwarded queries in flight (each holds a socket): a container flooding
/// unknown names has its excess dropped instead of exhausting the server's descriptors.
const MAX_FORWARDS: usize = 512;
/// At most this many TCP clients at once, per listener.
const MAX_TCP: usize = 128;

fn forwards() -> &'static Arc<tokio::sync::Semaphore> {
    static S: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    S.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS)))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub upstreams: Vec<SocketAddr>,
    pub networks: Vec<DnsNetwork>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsNetwork {
    pub name: String,
    pub gateway4: Ipv4Addr,
    pub subnet4: Ipv4Net,
    pub subnet6: Option<Ipv6Net>,
    pub internal: bool,
    pub members: Vec<DnsMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsMember {
    pub container: String,
    /// Lower-case names without a trailing dot.
    pub names: Vec<String>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// What to do with one query.
#[derive(Debug, PartialEq)]
pub enum Answer {
    Reply(Message),
    /// Not ours: relay to the host's resolvers.
    Forward,
}

/// The networks a client may see: those of the container sending from `client`, or else the
/// one whose gateway the query arrived at.
fn visible(cfg: &DnsConfig, local: IpAddr, client: IpAddr) -> Vec<&DnsNetwork> {
    let owner = cfg
        .networks
        .iter()
        .flat_map(|n| &n.members)
        .find(|m| m.ipv4.map(IpAddr::V4) == Some(client) || m.ipv6.map(IpAddr::V6) == Some(client))
        .map(|m| m.container.as_str());
    match owner {
        Some(c) => cfg.networks.iter().filter(|n| n.members.iter().any(|m| m.container == c)).collect(),
        None => cfg.networks.iter().filter(|n| IpAddr::V4(n.gateway4) == local).collect(),
    }
}

/// Answers `query` (received on `local` from `client`) from the configuration.
pub fn answer(cfg: &DnsConfig, local: IpAddr, client: IpAddr, query: &Message) -> Answer {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.queries = query.queries.clone();
    if query.metadata.message_type != MessageType::Query || query.metadata.op_code != OpCode::Query || query.queries.len() != 1 {
        reply.metadata.response_code = ResponseCode::NotImp;
        return Answer::Reply(reply);
    }
    let q = &query.queries[0];
    let name = q.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let nets = visible(cfg, local, client);
    let hits: Vec<&DnsMember> = nets.iter().flat_map(|n| &n.members).filter(|m| m.names.contains(&name)).collect();
    if hits.is_empty() {
        if nets.iter().any(|n| n.internal) || nets.is_empty() {
            reply.metadata.response_code = if nets.is_empty() { ResponseCode::Refused } else { ResponseCode::NXDomain };
            return Answer::Reply(reply);
        }
        return Answer::Forward;
    }
    reply.metadata.authoritative = true;
    let mut seen = std::collections::BTreeSet::new();
    for m in hits {
        let rdata = match q.query_type {
            RecordType::A => m.ipv4.map(|ip| RData::A(A(ip))),
            RecordType::AAAA => m.ipv6.map(|ip| RData::AAAA(AAAA(ip))),
            _ => None,
        };
        if let Some(r) = rdata
            && seen.insert(format!("{r:?}"))
        {
            reply.add_answer(Record::from_rdata(q.name.clone(), TTL, r));
        }
    }
    Answer::Reply(reply)
}

/// Upstream resolvers from a resolv.conf text (port 53).
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The configuration the resolver answers from, replaced whole at each reload.
pub(crate) type Shared = Arc<RwLock<Arc<DnsConfig>>>;

async fn forward(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0".parse().ok()? } else { "[::]:0".parse().ok()? };
        let Ok(sock) = UdpSocket::bind(bind).await else { continue };
        if sock.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        if let Ok(Ok((n, from))) = tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv_from(&mut buf)).await
            && from == *up
            && n >= 2
            && buf[..2] == query[..2]
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

/// The reply bytes for one query packet, forwarding if needed; None drops it (garbage).
async fn handle(shared: &Shared, local: IpAddr, client: IpAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(packet).ok()?;
    let cfg = shared.read().unwrap().clone();
    match answer(&cfg, local, client, &query) {
        Answer::Reply(m) => m.to_vec().ok(),
        Answer::Forward => forwarded(&cfg.upstreams, packet, &query).await,
    }
}

/// The upstream's reply to `packet`, or SERVFAIL when no upstream answers.
async fn forwarded(upstreams: &[SocketAddr], packet: &[u8], query: &Message) -> Option<Vec<u8>> {
    if let Some(r) = forward(upstreams, packet).await {
        return Some(r);
    }
    let mut m = Message::response(query.metadata.id, query.metadata.op_code);
    m.queries = query.queries.clone();
    m.metadata.response_code = ResponseCode::ServFail;
    m.to_vec().ok()
}

async fn serve_udp(sock: Arc<UdpSocket>, shared: Shared) {
    let local = match sock.local_addr() {
        Ok(a) => a.ip(),
        Err(_) => return,
    };
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else { continue };
        let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
        let cfg = shared.read().unwrap().clone();
        // Local answers inline (the fast path); forwards on their own task.
        match answer(&cfg, local, from.ip(), &query) {
            Answer::Reply(m) => {
                if let Ok(bytes) = m.to_vec() {
                    let _ = sock.send_to(&bytes, from).await;
                }
            }
            Answer::Forward => {
                // Saturated: drop the query (the client retries), as a busy resolver would.
                let Ok(permit) = forwards().clone().try_acquire_owned() else { continue };
                let (sock, packet) = (sock.clone(), buf[..n].to_vec());
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Some(r) = forwarded(&cfg.upstreams, &packet, &query).await {
                        let _ = sock.send_to(&r, from).await;
                    }
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Shared) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    loop {
        // Waits for a free slot before accepting: excess clients queue in the kernel's backlog.
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let Ok((mut conn, from)) = listener.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let local = match conn.local_addr() {
                Ok(a) => a.ip(),
                Err(_) => return,
            };
            loop {
                let mut len = [0u8; 2];
                if !matches!(tokio::time::timeout(TCP_IDLE, conn.read_exact(&mut len)).await, Ok(Ok(_))) {
                    return;
                }
                let mut packet = vec![0u8; u16::from_be_bytes(len) as usize];
                if !matches!(tokio::time::timeout(TCP_IDLE, conn.read_exact(&mut packet)).await, Ok(Ok(_))) {
                    return;
                }
                let Some(reply) = handle(&shared, local, from.ip(), &packet).await else { return };
                let mut out = (reply.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&reply);
                if conn.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The resolver's sockets: UDP and TCP on every network's gateway.
#[derive(Default)]
pub(crate) struct Listeners {
    by_addr: HashMap<IpAddr, Vec<tokio::task::JoinHandle<()>>>,
}

impl Listeners {
    /// Binds what `cfg` needs and drops what it no longer does. Errors name the addresses.
    pub(crate) async fn reconcile(&mut self, cfg: &DnsConfig, shared: &Shared, port: u16) -> Result<(), String> {
        let want: Vec<IpAddr> = cfg.networks.iter().map(|n| IpAddr::V4(n.gateway4)).collect();
        self.by_addr.retain(|addr, tasks| {
            let keep = want.contains(addr);
            if !keep {
                tasks.iter().for_each(|t| t.abort());
            }
            keep
        });
        let mut errors = Vec::new();
        for addr in want {
            if self.by_addr.contains_key(&addr) {
                continue;
            }
            let sa = SocketAddr::new(addr, port);
            match (UdpSocket::bind(sa).await, TcpListener::bind(sa).await) {
                (Ok(u), Ok(t)) => {
                    let tasks = vec![tokio::spawn(serve_udp(Arc::new(u), shared.clone())), tokio::spawn(serve_tcp(t, shared.clone()))];
                    self.by_addr.insert(addr, tasks);
                }
                (Err(e), _) | (_, Err(e)) => errors.push(format!("binding {sa}: {e}")),
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn cfg() -> DnsConfig {
        let member = |c: &str, names: &[&str], o: u8| DnsMember {
            container: c.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            ipv4: Some(Ipv4Addr::new(10, 89, 0, o)),
            ipv6: Some(format!("fd00::{o}").parse().unwrap()),
        };
        let mut other = member("c3", &["web"], 2);
        other.ipv4 = Some(Ipv4Addr::new(10, 89, 1, 2));
        other.ipv6 = None;
        DnsConfig {
            upstreams: vec![],
            networks: vec![
                DnsNetwork {
                    name: "front".into(),
                    gateway4: Ipv4Addr::new(10, 89, 0, 1),
                    subnet4: "10.89.0.0/24".parse().unwrap(),
                    subnet6: Some("fd00::/64".parse().unwrap()),
                    internal: false,
                    members: vec![member("c1", &["web", "www"], 2), member("c2", &["db"], 3)],
                },
                DnsNetwork {
                    name: "back".into(),
                    gateway4: Ipv4Addr::new(10, 89, 1, 1),
                    subnet4: "10.89.1.0/24".parse().unwrap(),
                    subnet6: None,
                    internal: true,
                    members: vec![other],
                },
            ],
        }
    }

    fn ask(cfg: &DnsConfig, client: &str, name: &str, t: RecordType) -> Answer {
        let mut q = Message::query();
        q.metadata.id = 7;
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        let local = IpAddr::V4(cfg.networks.iter().find(|n| n.subnet4.contains(&client.parse::<Ipv4Addr>().unwrap())).unwrap().gateway4);
        answer(cfg, local, client.parse().unwrap(), &q)
    }

    fn ips(a: Answer) -> Vec<String> {
        match a {
            Answer::Reply(m) => m.answers.iter().map(|r| r.data.to_string()).collect(),
            Answer::Forward => vec!["forward".into()],
        }
    }

    #[test]
    fn names_resolve_within_the_clients_networks() {
        let c = cfg();
        assert_eq!(ips(ask(&c, "10.89.0.3", "web", RecordType::A)), ["10.89.0.2"]);
        assert_eq!(ips(ask(&c, "10.89.0.3", "WWW.", RecordType::A)), ["10.89.0.2"]);
        assert_eq!(ips(ask(&c, "10.89.0.3", "web", RecordType::AAAA)), ["fd00::2"]);
        // The other network's "web" is someone else.
        assert_eq!(ips(ask(&c, "10.89.1.2", "web", RecordType::A)), ["10.89.1.2"]);
        // Unknown names leave non-internal networks, not internal ones.
        assert_eq!(ips(ask(&c, "10.89.0.3", "example.org", RecordType::A)), ["forward"]);
        match ask(&c, "10.89.1.2", "example.org", RecordType::A) {
            Answer::Reply(m) => assert_eq!(m.metadata.response_code, ResponseCode::NXDomain),
            a => panic!("{a:?}"),
        }
        // A name on another network is not visible.
        match ask(&c, "10.89.1.2", "db", RecordType::A) {
            Answer::Reply(m) => assert!(m.answers.is_empty()),
            a => panic!("{a:?}"),
        }
    }

    #[test]
    fn a_known_name_without_the_asked_type_is_an_empty_answer() {
        match ask(&cfg(), "10.89.0.3", "web", RecordType::MX) {
            Answer::Reply(m) => {
                assert_eq!(m.metadata.response_code, ResponseCode::NoError);
                assert!(m.answers.is_empty());
            }
            a => panic!("{a:?}"),
        }
    }

    #[test]
    fn resolv_conf_upstreams() {
        let ups = upstreams_from_resolv_conf("# c\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nsearch x\nnameserver bogus\n");
        assert_eq!(ups.iter().map(|s| s.to_string()).collect::<Vec<_>>(), ["10.0.0.53:53", "[fe80::1]:53"]);
    }
}
