//! The island's DNS server, from the bytes of one message: whatever arrives over UDP or TCP,
//! the server answers with a message that parses, fits the UDP bound, and never hands the
//! island a change outside the signing key's sub-zone. What parses as a message is also
//! signed with a known key and sent again, so the UPDATE and transfer paths past the TSIG
//! check see arbitrary content too.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use atoll_dns::{Change, Nameserver, RecordSpec, Server, Snapshot, TsigKeySpec, UpdateSink, ZoneSpec};
use hickory_proto::{
    op::{Message, MessageType},
    rr::{Name, TSigner, rdata::tsig::TsigAlgorithm},
};

/// The clock of the fixture: TSIG times are checked against it.
const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef0123";

struct Fixture {
    rt: tokio::runtime::Runtime,
    server: Server,
    signer: TSigner,
    _tx: tokio::sync::watch::Sender<Arc<Snapshot>>,
}

/// Refuses every change after checking it stays in the key's scope.
struct ScopeCheck;

#[async_trait::async_trait]
impl UpdateSink for ScopeCheck {
    async fn apply(&self, zone: &Name, changes: Vec<Change>) -> Result<(), String> {
        let scope = Name::from_ascii("alice.friends.example.").unwrap();
        assert_eq!(zone, &Name::from_ascii("friends.example.").unwrap());
        for c in &changes {
            let name = Name::from_ascii(c.name()).expect("a change names a valid name");
            assert!(scope.zone_of(&name), "a change outside the key's scope: {c:?}");
        }
        Err("the fuzzer keeps the zone as it is".into())
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let origin = Name::from_ascii("friends.example.").unwrap();
        let rec = |n: &str, t: &str, v: &str| RecordSpec::parse(&origin, n, t, v, None).unwrap();
        let zone = ZoneSpec {
            origin: origin.clone(),
            serial: 1,
            nameservers: vec![Nameserver { name: "ns1".into(), addrs: vec!["192.0.2.1".parse().unwrap()] }],
            hostmaster: "hostmaster".into(),
            records: vec![
                rec("www", "A", "192.0.2.10"),
                rec("www.alice", "A", "192.0.2.50"),
                rec("blog", "CNAME", "www"),
                rec("@", "MX", "10 www"),
                rec("big", "TXT", &format!("\"{}\" \"{}\"", "a".repeat(255), "b".repeat(255))),
                rec("big", "TXT", &format!("\"{}\" \"{}\"", "c".repeat(255), "d".repeat(255))),
                rec("big", "TXT", &format!("\"{}\" \"{}\"", "e".repeat(255), "f".repeat(255))),
            ],
            secondaries: vec![],
            transfer_key: Some(Name::from_ascii("alice.friends.example.").unwrap()),
        };
        let key = TsigKeySpec {
            name: Name::from_ascii("alice.friends.example.").unwrap(),
            algorithm: "hmac-sha256".into(),
            secret: SECRET.to_vec(),
            scope: Name::from_ascii("alice.friends.example.").unwrap(),
            revoked: false,
        };
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(Snapshot { zones: vec![zone], keys: vec![key.clone()] }));
        let limits = atoll_dns::Limits { update_visible: std::time::Duration::ZERO, ..Default::default() };
        let server = Server::with(rx, Arc::new(ScopeCheck), Arc::new(|| NOW), limits);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let signer = TSigner::new(SECRET.to_vec(), TsigAlgorithm::HmacSha256, key.name, 300).unwrap();
        Fixture { rt, server, signer, _tx: tx }
    })
}

fn check(answer: &[u8], tcp: bool) {
    assert!(answer.len() <= usize::from(u16::MAX));
    if !tcp {
        assert!(answer.len() <= 1232, "a {}-byte UDP answer", answer.len());
    }
    let m = Message::from_vec(answer).unwrap_or_else(|e| panic!("an answer that does not parse: {e}"));
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert!(!m.metadata.recursion_available);
}

/// Bytes of one DNS message, over UDP and TCP, unsigned and signed.
pub fn dns_message(data: &[u8]) {
    let f = fixture();
    let src: SocketAddr = "192.0.2.200:5300".parse().unwrap();
    f.rt.block_on(async {
        for tcp in [false, true] {
            for answer in f.server.answer_bytes(data, src, tcp).await {
                check(&answer, tcp);
            }
        }
        let Ok(mut message) = Message::from_vec(data) else { return };
        message.signature = None;
        if message.finalize(&f.signer, NOW).is_err() {
            return;
        }
        let Ok(signed) = message.to_vec() else { return };
        for tcp in [false, true] {
            for answer in f.server.answer_bytes(&signed, src, tcp).await {
                check(&answer, tcp);
            }
        }
    });
}
