//! The authoritative server: answers from the latest [`Snapshot`] (rebuilt into hickory's
//! `Catalog` of in-memory zones whenever the watch channel changes, without a restart),
//! UPDATE through [`crate::update`] and an [`UpdateSink`], AXFR/IXFR under TSIG, NOTIFY to
//! secondaries when a serial changes. Requests are parsed and answered by hickory-server
//! (`Request`, `Catalog`, `MessageResponse`); TCP is read by a loop of
//! ours around hickory's TCP framing, because hickory's has no connection cap; UDP by a
//! loop of ours too (see [`Server::serve_udp`]).

use std::{collections::HashMap, io, iter, net::SocketAddr, sync::Arc, time::Duration};

use futures_util::StreamExt;
use hickory_net::{
    runtime::{Time, TokioRuntimeProvider, TokioTime, iocompat::AsyncIoTokioAsStd},
    tcp::TcpStream,
    xfer::Protocol,
};
use hickory_proto::{
    op::{Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode},
    rr::{LowerName, Name, Record, RecordType},
    serialize::binary::{BinDecodable, BinDecoder, BinEncoder},
};
use hickory_server::{
    server::{Request, RequestHandler, ResponseHandle, ResponseHandler, ResponseInfo, TimeoutStream},
    store::in_memory::InMemoryZoneHandler,
    zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, Queries, ZoneHandler, ZoneType},
};
use tokio::{
    net::{TcpListener, UdpSocket},
    sync::{Mutex, Semaphore, watch},
    task::JoinSet,
};
use tracing::{debug, info, warn};

use crate::{
    model::{Change, TsigKeySpec, ZoneSpec},
    respond::{Capture, NotAuthoritative, Signing, TSIG_ROOM, UdpResponder},
    tsig::{self, Clock, SystemClock, Verdict},
    update,
};

/// Everything the server serves: the island's zones and the TSIG keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub zones: Vec<ZoneSpec>,
    pub keys: Vec<TsigKeySpec>,
}

/// Where UPDATEs go: the island proposes the changes (through Raft) and returns once they are
/// committed; the new snapshot then arrives through the watch channel. All or nothing.
#[async_trait::async_trait]
pub trait UpdateSink: Send + Sync + 'static {
    async fn apply(&self, zone: &Name, changes: Vec<Change>) -> Result<(), String>;
}

/// Bounds that keep a flood from taking the server down.
#[derive(Debug, Clone)]
pub struct Limits {
    /// TCP connections open at once; more are closed on accept.
    pub tcp_connections: usize,
    /// A TCP connection that sends no request for this long is closed.
    pub tcp_idle: Duration,
    /// The UDP payload size advertised and used (RFC 9715's 1232 by default): larger answers
    /// are truncated (TC) and clients retry over TCP.
    pub udp_payload: u16,
    /// UDP requests being answered at once; more are dropped (the client retries).
    pub udp_in_flight: usize,
    /// UPDATEs waiting for their turn; more are refused.
    pub pending_updates: usize,
    /// How long an UPDATE's answer waits for its change to reach the snapshot.
    pub update_visible: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tcp_connections: 256,
            tcp_idle: Duration::from_secs(10),
            udp_payload: 1232,
            udp_in_flight: 1024,
            pending_updates: 32,
            update_visible: Duration::from_secs(5),
        }
    }
}

/// A zone as served.
struct Served {
    spec: ZoneSpec,
    /// SOA first, then everything else (the order of a zone transfer).
    records: Arc<Vec<Record>>,
    handler: Arc<dyn ZoneHandler>,
    /// Names below the apex with NS records: delegations to other servers.
    cuts: Vec<Name>,
}

/// One build of the snapshot.
struct Built {
    keys: Vec<TsigKeySpec>,
    zones: HashMap<Name, Arc<Served>>,
    catalog: Catalog,
}

struct Shared {
    /// The build being served; a watch channel so UPDATEs can wait for theirs.
    current: watch::Sender<Arc<Built>>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    sink: Arc<dyn UpdateSink>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    update_turn: Mutex<()>,
    update_slots: Semaphore,
}

/// The authoritative DNS server of one host.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

fn serve_zone(spec: &ZoneSpec) -> Result<Served, String> {
    let apex = spec.apex();
    let records = spec.records_for_hickory().map_err(|e| e.to_string())?;
    let sets = spec.record_sets().map_err(|e| e.to_string())?;
    let inner = InMemoryZoneHandler::<TokioRuntimeProvider>::new(apex, sets, ZoneType::Primary, AxfrPolicy::Deny, None)?;
    let records = Arc::new(records);
    let handler = crate::glue::Glued { inner, records: records.clone() };
    let cuts = spec.records.iter().filter(|r| r.rtype == crate::model::RType::NS).map(|r| r.owner()).collect();
    Ok(Served { spec: spec.clone(), records, handler: Arc::new(handler), cuts })
}

/// Builds `snapshot`; a zone that cannot be served keeps its previous build (if any), so a bad
/// change never takes a zone off the air.
fn build(snapshot: &Snapshot, previous: Option<&Built>) -> Built {
    let mut zones = HashMap::new();
    let mut catalog = Catalog::new();
    for spec in &snapshot.zones {
        let apex = spec.apex();
        let served = match previous.and_then(|p| p.zones.get(&apex)) {
            Some(old) if old.spec == *spec => Some(old.clone()),
            old => match serve_zone(spec) {
                Ok(s) => Some(Arc::new(s)),
                Err(error) => {
                    warn!(zone = %apex, %error, "dns: cannot serve this version of the zone; keeping the previous one");
                    old.cloned()
                }
            },
        };
        if let Some(served) = served {
            catalog.upsert(LowerName::new(&apex), vec![served.handler.clone()]);
            zones.insert(apex, served);
        }
    }
    Built { keys: snapshot.keys.clone(), zones, catalog }
}

impl Server {
    /// A server for the snapshots `snapshot` delivers, handing UPDATEs to `updates`.
    pub fn new(snapshot: watch::Receiver<Arc<Snapshot>>, updates: Arc<dyn UpdateSink>) -> Server {
        Server::with(snapshot, updates, Arc::new(SystemClock), Limits::default())
    }

    /// With a clock (for TSIG times) and limits of one's choosing.
    pub fn with(
        mut snapshot: watch::Receiver<Arc<Snapshot>>,
        updates: Arc<dyn UpdateSink>,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Server {
        let first = snapshot.borrow_and_update().clone();
        let built = build(&first, None);
        Server {
            shared: Arc::new(Shared {
                current: watch::Sender::new(Arc::new(built)),
                snapshot,
                sink: updates,
                clock,
                update_slots: Semaphore::new(limits.pending_updates),
                limits,
                update_turn: Mutex::new(()),
            }),
        }
    }

    fn current(&self) -> Arc<Built> {
        self.shared.current.borrow().clone()
    }

    /// Serves until the future is dropped (which stops every task it started), or a socket
    /// fails for good.
    pub async fn serve(self, udp: UdpSocket, tcp: TcpListener) -> io::Result<()> {
        let mut tasks = JoinSet::new();
        let me = self.clone();
        tasks.spawn(async move {
            me.follow_snapshots().await;
            Ok(())
        });
        let me = self.clone();
        tasks.spawn(async move { me.serve_udp(udp).await });
        let me = self.clone();
        tasks.spawn(async move { me.serve_tcp(tcp).await });
        match tasks.join_next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(io::Error::other(e)),
            None => Ok(()),
        }
    }

    /// Rebuilds on every new snapshot and NOTIFYs the secondaries of zones whose serial moved.
    async fn follow_snapshots(&self) {
        let mut rx = self.shared.snapshot.clone();
        while rx.changed().await.is_ok() {
            let snapshot = rx.borrow_and_update().clone();
            let old = self.current();
            let new = Arc::new(build(&snapshot, Some(&old)));
            self.shared.current.send_replace(new.clone());
            for (apex, zone) in &new.zones {
                let moved = old.zones.get(apex).is_some_and(|o| o.spec.serial != zone.spec.serial);
                if moved && !zone.spec.secondaries.is_empty() {
                    let zone = zone.clone();
                    let key = zone.spec.transfer_key.as_ref().and_then(|k| new.keys.iter().find(|x| &x.name == k && !x.revoked)).cloned();
                    let clock = self.shared.clock.clone();
                    tokio::spawn(async move { notify_secondaries(&zone, key.as_ref(), clock.as_ref()).await });
                }
            }
            debug!(zones = new.zones.len(), "dns: serving a new snapshot");
        }
    }

    /// hickory's UDP server leaves the bytes of a record that did not fit after a truncated
    /// answer (kdig: "malformed reply packet (trailing data)") and spawns without bound; this
    /// loop bounds the requests in flight and answers through [`UdpResponder`].
    async fn serve_udp(&self, socket: UdpSocket) -> io::Result<()> {
        let socket = Arc::new(socket);
        let slots = Arc::new(Semaphore::new(self.shared.limits.udp_in_flight));
        let mut buf = vec![0u8; 65535];
        let mut tasks = JoinSet::new();
        loop {
            let (n, src) = match socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "dns: UDP receive");
                    continue;
                }
            };
            while tasks.try_join_next().is_some() {}
            if src.port() == 0 || src.ip().is_unspecified() {
                continue;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                debug!(%src, "dns: too many UDP requests in flight; dropping one");
                continue;
            };
            let bytes = buf[..n].to_vec();
            let me = self.clone();
            let responder = UdpResponder { socket: socket.clone(), dst: src };
            tasks.spawn(async move {
                let _slot = slot;
                me.handle_bytes(bytes, src, Protocol::Udp, responder).await;
            });
        }
    }

    async fn serve_tcp(&self, listener: TcpListener) -> io::Result<()> {
        let slots = Arc::new(Semaphore::new(self.shared.limits.tcp_connections));
        let mut conns = JoinSet::new();
        loop {
            let (stream, src) = match listener.accept().await {
                Ok(x) => x,
                Err(e) if matches!(e.kind(), io::ErrorKind::NotConnected | io::ErrorKind::ConnectionAborted) => return Err(e),
                Err(e) => {
                    debug!(error = %e, "dns: TCP accept");
                    // EMFILE and the like: give the other connections a moment to finish.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            while conns.try_join_next().is_some() {}
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                debug!(%src, "dns: too many TCP connections; closing this one");
                continue;
            };
            let me = self.clone();
            let idle = self.shared.limits.tcp_idle;
            conns.spawn(async move {
                let _slot = slot;
                let (stream, handle) = TcpStream::from_stream_with_buffer_size(AsyncIoTokioAsStd(stream), src, 16);
                let mut stream = TimeoutStream::new(stream, idle);
                while let Some(Ok(message)) = stream.next().await {
                    let (bytes, src) = message.into_parts();
                    let response = ResponseHandle::new(src, handle.clone(), Protocol::Tcp);
                    me.handle_bytes(bytes, src, Protocol::Tcp, response).await;
                }
            });
        }
    }

    /// Answers one message as received on the wire (also the fuzzer's entry point).
    pub async fn handle_bytes<R: ResponseHandler>(&self, bytes: Vec<u8>, src: SocketAddr, protocol: Protocol, response: R) {
        let mut decoder = BinDecoder::new(&bytes);
        let Ok(header) = Header::read(&mut decoder) else { return };
        if header.metadata.message_type == MessageType::Response {
            return;
        }
        let parsed = if compressed_question(&bytes) {
            // hickory echoes a question's bytes as received, and a pointer in the question can
            // only point into the header (changed in the answer) or at itself: found by the
            // fuzzer, an answer that no longer parsed.
            Err("a compression pointer in the question section".to_string())
        } else {
            Request::from_bytes(bytes.clone(), src, protocol).map_err(|e| e.to_string())
        };
        match parsed {
            Ok(request) => {
                Handler(self.clone()).handle_request::<R, TokioTime>(&request, response).await;
            }
            Err(e) => {
                debug!(%src, error = %e, "dns: malformed request");
                // FORMERR with an empty question section: the request's could not be read.
                let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else { return };
                let b = MessageResponseBuilder::new(&queries, None);
                let mut response = response;
                let _ = response.send_response(b.error_msg(&header.metadata, ResponseCode::FormErr)).await;
            }
        }
    }

    /// The answers (none for what deserves none) to one message received from `src` over UDP
    /// or TCP, as they would be sent: the fuzzer's and tests' way in.
    pub async fn answer_bytes(&self, bytes: &[u8], src: SocketAddr, tcp: bool) -> Vec<Vec<u8>> {
        let capture = Capture { tcp, out: Arc::default() };
        let protocol = if tcp { Protocol::Tcp } else { Protocol::Udp };
        self.handle_bytes(bytes.to_vec(), src, protocol, capture.clone()).await;
        std::mem::take(&mut *capture.out.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn answer(&self, request: &Request, mut response: impl ResponseHandler) -> ResponseInfo {
        // EDNS (RFC 6891): answer with our version 0 and the smaller of the two payload sizes.
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_version(0);
            e.set_max_payload(req.max_payload().clamp(512, self.shared.limits.udp_payload.max(512)));
            e
        });
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return error(request, ResponseCode::BADVERS, edns.as_ref(), response).await;
        }
        let edns = edns.as_ref();
        match request.metadata.op_code {
            OpCode::Query => {
                let qtype = request.queries.queries().first().map(|q| q.query_type());
                if request.queries.len() == 1 && matches!(qtype, Some(RecordType::AXFR | RecordType::IXFR)) {
                    return self.transfer(request, edns, response).await;
                }
                let built = self.current();
                let now = self.shared.clock.now();
                if request.signature.is_some() {
                    // RFC 8945 §5.3: the answer to a signed query is signed (dnspython, which
                    // certbot's rfc2136 plugin uses, signs its SOA queries).
                    let signed = match tsig::verify(request.as_slice(), request.metadata.id, request.signature.as_deref(), &built.keys, now)
                    {
                        Verdict::Unsigned => unreachable!("the request has a signature"),
                        Verdict::Failed(f) => return tsig_failure(request, f, edns, response).await,
                        Verdict::Valid(s) => s,
                    };
                    let max = match request.protocol() {
                        Protocol::Udp => edns.map(|e| e.max_payload()).unwrap_or(512),
                        _ => u16::MAX,
                    };
                    // Room for the TSIG record (name, algorithm, a 64-byte MAC).
                    let max = max.saturating_sub(TSIG_ROOM).max(256);
                    let signing = Signing { inner: response, signed, now, max };
                    return built.catalog.lookup(request, edns, now, signing).await;
                }
                // At or below a delegation, the answer is a referral: hickory sets AA on it,
                // RFC 1034 §4.3.2 and RFC 2181 §6.1 say not to.
                let referral = request.queries.queries().first().is_some_and(|q| {
                    let qname = Name::from(q.name());
                    let zone = built.zones.values().filter(|z| z.spec.apex().zone_of(&qname)).max_by_key(|z| z.spec.apex().num_labels());
                    zone.is_some_and(|z| {
                        z.cuts.iter().any(|cut| cut.zone_of(&qname) && !(*cut == qname && q.query_type() == RecordType::DS))
                    })
                });
                if referral {
                    return built.catalog.lookup(request, edns, now, NotAuthoritative(response)).await;
                }
                built.catalog.lookup(request, edns, now, response.clone()).await
            }
            OpCode::Update => self.update(request, edns, response).await,
            // We are a primary: nobody's NOTIFY concerns us.
            OpCode::Notify => error(request, ResponseCode::Refused, edns, response).await,
            _ => {
                let b = MessageResponseBuilder::new(&request.queries, edns);
                send(&mut response, request, b.error_msg(&request.metadata, ResponseCode::NotImp)).await
            }
        }
    }

    async fn transfer(&self, request: &Request, edns: Option<&Edns>, response: impl ResponseHandler) -> ResponseInfo {
        let query = &request.queries.queries()[0];
        let qtype = query.query_type();
        if qtype == RecordType::AXFR && request.protocol() != Protocol::Tcp {
            // RFC 5936 §4.2: AXFR is a TCP affair.
            return error(request, ResponseCode::Refused, edns, response).await;
        }
        let built = self.current();
        let now = self.shared.clock.now();
        let signed = match tsig::verify(request.as_slice(), request.metadata.id, request.signature.as_deref(), &built.keys, now) {
            Verdict::Unsigned => return error(request, ResponseCode::Refused, edns, response).await,
            Verdict::Failed(f) => return tsig_failure(request, f, edns, response).await,
            Verdict::Valid(s) => s,
        };
        let name: Name = Name::from(query.name());
        let zone = built.zones.get(&name.to_lowercase());
        let allowed = zone.filter(|z| z.spec.transfer_key.as_ref().is_some_and(|k| k == signed.key_name()));
        let Some(zone) = allowed else {
            info!(zone = %name, key = %signed.key_name(), "dns: zone transfer refused");
            return signed_answer(request, ResponseCode::Refused, false, &[], edns, &signed, now, response).await;
        };
        let records: Vec<Record> = if qtype == RecordType::IXFR && request.protocol() != Protocol::Tcp {
            // RFC 1995 §2: over UDP, the current SOA alone tells the client to come over TCP.
            vec![zone.records[0].clone()]
        } else {
            // RFC 1995 §4: a full transfer answers IXFR too.
            let mut all = zone.records.as_ref().clone();
            all.push(zone.records[0].clone());
            all
        };
        signed_answer(request, ResponseCode::NoError, true, &records, edns, &signed, now, response).await
    }

    async fn update(&self, request: &Request, edns: Option<&Edns>, response: impl ResponseHandler) -> ResponseInfo {
        let built = self.current();
        let now = self.shared.clock.now();
        let signed = match tsig::verify(request.as_slice(), request.metadata.id, request.signature.as_deref(), &built.keys, now) {
            Verdict::Unsigned => {
                info!(src = %request.src(), "dns: unsigned UPDATE refused");
                return error(request, ResponseCode::Refused, edns, response).await;
            }
            Verdict::Failed(f) => {
                info!(src = %request.src(), error = ?f.error, "dns: UPDATE with a bad TSIG");
                return tsig_failure(request, f, edns, response).await;
            }
            Verdict::Valid(s) => s,
        };
        let reply = |code| signed_answer(request, code, false, &[], edns, &signed, now, response.clone());
        // §3.1: exactly one zone, of type SOA, that we serve.
        let zone_query = match request.queries.queries() {
            [q] if q.query_type() == RecordType::SOA => q,
            _ => return reply(ResponseCode::FormErr).await,
        };
        let apex = Name::from(zone_query.name()).to_lowercase();
        if !built.zones.contains_key(&apex) {
            return reply(ResponseCode::NotAuth).await;
        }
        let Ok(_slot) = self.shared.update_slots.try_acquire() else {
            warn!("dns: too many UPDATEs waiting; refusing one");
            return reply(ResponseCode::Refused).await;
        };
        // One at a time: prerequisites hold against what the previous one left.
        let _turn = self.shared.update_turn.lock().await;
        let built = self.current();
        let Some(zone) = built.zones.get(&apex) else { return reply(ResponseCode::NotAuth).await };
        let changes = match update::plan(&zone.spec, &signed.key, &request.answers, &request.authorities) {
            Ok(c) => c,
            Err(refusal) => {
                info!(zone = %apex, key = %signed.key_name(), rcode = %refusal.rcode, reason = %refusal.reason, "dns: UPDATE refused");
                return reply(refusal.rcode).await;
            }
        };
        if changes.is_empty() {
            return reply(ResponseCode::NoError).await;
        }
        let before = zone.spec.serial;
        info!(zone = %apex, key = %signed.key_name(), changes = changes.len(), "dns: applying UPDATE");
        if let Err(e) = self.shared.sink.apply(&apex, changes).await {
            warn!(zone = %apex, error = %e, "dns: the island did not take an UPDATE");
            return reply(ResponseCode::ServFail).await;
        }
        // Answer once this server serves the change, so a client's next query sees it.
        let mut served = self.shared.current.subscribe();
        let visible = served.wait_for(|b| b.zones.get(&apex).is_none_or(|z| z.spec.serial != before));
        if tokio::time::timeout(self.shared.limits.update_visible, visible).await.is_err() {
            warn!(zone = %apex, "dns: an applied UPDATE is not served yet");
        }
        reply(ResponseCode::NoError).await
    }
}

/// hickory's request handler, over [`Server`].
struct Handler(Server);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, response: R) -> ResponseInfo {
        self.0.answer(request, response).await
    }
}

fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    request: &Request,
    message: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match response.send_response(message).await {
        Ok(info) => info,
        Err(e) => {
            debug!(error = %e, "dns: cannot send a response");
            failed(request)
        }
    }
}

async fn error(request: &Request, code: ResponseCode, edns: Option<&Edns>, mut response: impl ResponseHandler) -> ResponseInfo {
    let b = MessageResponseBuilder::new(&request.queries, edns);
    send(&mut response, request, b.error_msg(&request.metadata, code)).await
}

/// NOTAUTH with the TSIG error record (RFC 8945 §5.2).
async fn tsig_failure(request: &Request, failure: tsig::Failure, edns: Option<&Edns>, mut response: impl ResponseHandler) -> ResponseInfo {
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.response_code = ResponseCode::NotAuth;
    let unsigned =
        MessageResponseBuilder::new(&request.queries, edns).build(meta, iter::empty(), iter::empty(), iter::empty(), iter::empty());
    let mut buf = Vec::with_capacity(512);
    if unsigned.destructive_emit(&mut BinEncoder::new(&mut buf)).is_err() {
        return error(request, ResponseCode::ServFail, edns, response).await;
    }
    let mut message =
        MessageResponseBuilder::new(&request.queries, edns).build(meta, iter::empty(), iter::empty(), iter::empty(), iter::empty());
    if let Some(tsig) = failure.record(&buf) {
        message.set_signature(tsig);
    }
    send(&mut response, request, message).await
}

/// Whether the question section of `msg` (a message as received) holds a compression pointer
/// (RFC 1035 §4.1.4) or a reserved label type, in any of its questions: hickory echoes the
/// questions' bytes as received, so a pointer into the header (which the answer changes) or
/// past the questions (which the answer does not carry) would make the answer unreadable. The
/// first name of a message has nothing before it but the header, and real clients send one
/// question, so such a message is refused as malformed rather than told apart.
fn compressed_question(msg: &[u8]) -> bool {
    let qdcount = msg.get(4..6).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let mut at = 12;
    for _ in 0..qdcount {
        loop {
            let Some(&len) = msg.get(at) else { return false };
            match len {
                0 => break,
                l if l & 0xC0 != 0 => return true,
                l => at += 1 + usize::from(l),
            }
        }
        at += 1 + 4; // the root label, QTYPE and QCLASS
    }
    false
}

/// An answer signed with the request's key.
#[allow(clippy::too_many_arguments)]
async fn signed_answer(
    request: &Request,
    code: ResponseCode,
    authoritative: bool,
    answers: &[Record],
    edns: Option<&Edns>,
    signed: &tsig::Signed,
    now: u64,
    mut response: impl ResponseHandler,
) -> ResponseInfo {
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.response_code = code;
    meta.authoritative = authoritative;
    let build =
        || MessageResponseBuilder::new(&request.queries, edns).build(meta, answers.iter(), iter::empty(), iter::empty(), iter::empty());
    let mut buf = Vec::with_capacity(512);
    if build().destructive_emit(&mut BinEncoder::new(&mut buf)).is_err() {
        return error(request, ResponseCode::ServFail, edns, response).await;
    }
    let Some(tsig) = signed.sign(request.metadata.id, now, &buf) else {
        return error(request, ResponseCode::ServFail, edns, response).await;
    };
    let mut message = build();
    message.set_signature(tsig);
    send(&mut response, request, message).await
}

/// NOTIFY (RFC 1996) to each secondary of `zone`, signed with its transfer key when it has
/// one; one retry, failures logged.
async fn notify_secondaries(zone: &Served, key: Option<&TsigKeySpec>, clock: &dyn Clock) {
    let apex = zone.spec.apex();
    for secondary in &zone.spec.secondaries {
        let mut ok = false;
        for attempt in 0..2 {
            match notify_one(&apex, &zone.records[0], *secondary, key, clock).await {
                Ok(()) => {
                    ok = true;
                    break;
                }
                Err(e) => debug!(zone = %apex, %secondary, attempt, error = %e, "dns: NOTIFY"),
            }
        }
        if ok {
            info!(zone = %apex, %secondary, serial = zone.spec.serial, "dns: secondary notified");
        } else {
            warn!(zone = %apex, %secondary, "dns: secondary did not acknowledge NOTIFY");
        }
    }
}

async fn notify_one(apex: &Name, soa: &Record, to: SocketAddr, key: Option<&TsigKeySpec>, clock: &dyn Clock) -> io::Result<()> {
    let mut message = Message::new(fastid(), MessageType::Query, OpCode::Notify);
    message.metadata.authoritative = true;
    message.add_query(Query::query(apex.clone(), RecordType::SOA));
    message.add_answer(soa.clone());
    if let Some(signer) = key.and_then(tsig::signer) {
        message.finalize(&signer, clock.now()).map_err(io::Error::other)?;
    }
    let bytes = message.to_vec().map_err(io::Error::other)?;
    let bind: SocketAddr = if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(to).await?;
    socket.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))??;
    let answer = Message::from_vec(&buf[..n]).map_err(io::Error::other)?;
    if answer.metadata.id != message.metadata.id || answer.metadata.op_code != OpCode::Notify {
        return Err(io::Error::other("an unrelated answer"));
    }
    if answer.metadata.response_code != ResponseCode::NoError {
        return Err(io::Error::other(format!("answered {}", answer.metadata.response_code)));
    }
    Ok(())
}

fn fastid() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    (t as u16) ^ NEXT.fetch_add(7919, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::compressed_question;

    /// Regression (fuzzer, `dns_message-crash-e90cd74b…`): a question whose name pointed into
    /// the header was echoed as received, and the answer's changed header made it unreadable.
    #[test]
    fn a_question_with_a_compression_pointer_is_malformed() {
        let mut q = vec![0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let plain =
            [q.clone(), vec![3, b'w', b'w', b'w', 7], b"friends".to_vec(), vec![7], b"example".to_vec(), vec![0, 0, 1, 0, 1]].concat();
        assert!(!compressed_question(&plain));
        q.extend([3, b'w', b'w', b'w', 0xC0, 2, 0, 1, 0, 1]);
        assert!(compressed_question(&q));
        // In a later question too (fuzzer, `dns_message-crash-2872cd5e…`: the fifth of 19).
        let mut many = vec![0, 2, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0];
        for _ in 0..5 {
            many.extend([1, b'a', 0, 0, 1, 0, 1]);
        }
        assert!(!compressed_question(&many));
        many.extend([1, b'b', 0xC0, 3, 0, 1, 0, 1]);
        assert!(compressed_question(&many));
        // Truncated or empty messages are for the parser to refuse.
        assert!(!compressed_question(&[0, 2, 0, 0, 0, 1]));
        assert!(!compressed_question(&[]));
    }
}
