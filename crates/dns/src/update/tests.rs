use super::*;
use crate::model::Nameserver;
use hickory_proto::rr::rdata::A;

fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn zone() -> ZoneSpec {
    let origin = n("friends.example.");
    let rec = |name: &str, t: &str, v: &str| RecordSpec::parse(&origin, name, t, v, None).unwrap();
    ZoneSpec {
        origin: origin.clone(),
        serial: 1,
        nameservers: vec![Nameserver { name: "ns1".into(), addrs: vec!["192.0.2.1".parse().unwrap()] }],
        hostmaster: "hostmaster".into(),
        records: vec![rec("www.alice", "A", "192.0.2.50"), rec("www.alice", "A", "192.0.2.51"), rec("www", "A", "192.0.2.10")],
        secondaries: vec![],
        transfer_key: None,
    }
}

fn key(scope: &str) -> TsigKeySpec {
    TsigKeySpec { name: n("k."), algorithm: "hmac-sha256".into(), secret: vec![1; 32], scope: n(scope), revoked: false }
}

fn class(mut r: Record, c: DNSClass) -> Record {
    r.dns_class = c;
    r
}

fn exists(name: &str, t: RecordType) -> Record {
    class(Record::update0(n(name), 0, t), DNSClass::ANY)
}

fn absent(name: &str, t: RecordType) -> Record {
    class(Record::update0(n(name), 0, t), DNSClass::NONE)
}

fn a(name: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record::from_rdata(n(name), ttl, RData::A(A::from(std::net::Ipv4Addr::from(ip))))
}

fn rcode(r: Result<(), Refusal>) -> ResponseCode {
    r.err().map(|e| e.rcode).unwrap_or(ResponseCode::NoError)
}

#[test]
fn prerequisites_answer_with_rfc_2136_rcodes() {
    let z = zone();
    let www = "www.alice.friends.example.";
    let cases = [
        (vec![exists(www, RecordType::ANY)], ResponseCode::NoError),
        (vec![exists("none.friends.example.", RecordType::ANY)], ResponseCode::NXDomain),
        (vec![exists(www, RecordType::A)], ResponseCode::NoError),
        (vec![exists(www, RecordType::TXT)], ResponseCode::NXRRSet),
        (vec![absent(www, RecordType::ANY)], ResponseCode::YXDomain),
        (vec![absent("none.friends.example.", RecordType::ANY)], ResponseCode::NoError),
        (vec![absent(www, RecordType::A)], ResponseCode::YXRRSet),
        (vec![absent(www, RecordType::TXT)], ResponseCode::NoError),
        // Value-dependent: the whole RRset, in any order.
        (vec![a(www, 0, [192, 0, 2, 51]), a(www, 0, [192, 0, 2, 50])], ResponseCode::NoError),
        (vec![a(www, 0, [192, 0, 2, 50])], ResponseCode::NXRRSet),
        (vec![a(www, 0, [192, 0, 2, 50]), a(www, 0, [192, 0, 2, 51]), a(www, 0, [192, 0, 2, 52])], ResponseCode::NXRRSet),
        // The apex has the island's SOA and NS.
        (vec![exists("friends.example.", RecordType::NS)], ResponseCode::NoError),
        // Form and zone.
        (vec![a(www, 60, [192, 0, 2, 50])], ResponseCode::FormErr),
        (vec![exists("www.example.org.", RecordType::ANY)], ResponseCode::NotZone),
    ];
    for (prereqs, want) in cases {
        assert_eq!(rcode(check_prerequisites(&z, &prereqs)), want, "{prereqs:?}");
    }
}

#[test]
fn the_update_section_stays_in_the_keys_scope() {
    let z = zone();
    let alice = key("alice.friends.example.");
    let plan = |updates: &[Record]| super::plan(&z, &alice, &[], updates);
    let changes = plan(&[a("new.alice.friends.example.", 60, [192, 0, 2, 7])]).unwrap();
    assert_eq!(changes.len(), 1);
    assert!(matches!(&changes[0], Change::Add(r) if r.name == "new.alice.friends.example." && r.value == "192.0.2.7"));
    // The scope's own name is in it.
    assert!(plan(&[a("alice.friends.example.", 60, [192, 0, 2, 7])]).is_ok());
    // One name outside refuses the whole update.
    let err = plan(&[a("new.alice.friends.example.", 60, [192, 0, 2, 7]), a("www.friends.example.", 60, [192, 0, 2, 66])]).unwrap_err();
    assert_eq!(err.rcode, ResponseCode::Refused);
    assert_eq!(err.reason, "key k. may change names under alice.friends.example. only, not www.friends.example.");
    // A sibling whose name merely ends the same is outside.
    assert_eq!(plan(&[a("malice.friends.example.", 60, [192, 0, 2, 7])]).unwrap_err().rcode, ResponseCode::Refused);
    // Outside the zone is NOTZONE (before the scope is even looked at).
    assert_eq!(plan(&[a("x.example.org.", 60, [192, 0, 2, 7])]).unwrap_err().rcode, ResponseCode::NotZone);
}

#[test]
fn the_apex_soa_and_ns_are_the_islands() {
    let z = zone();
    let all = key("friends.example.");
    for t in [RecordType::SOA, RecordType::NS] {
        let err = super::plan(&z, &all, &[], &[exists("friends.example.", t)]).unwrap_err();
        assert_eq!(err.rcode, ResponseCode::Refused, "{t}");
    }
    // Deleting everything at the apex leaves the island's records (and here changes nothing).
    assert_eq!(super::plan(&z, &all, &[], &[exists("friends.example.", RecordType::ANY)]).unwrap(), vec![]);
}

#[test]
fn deletions_follow_rfc_2136_section_2_5() {
    let z = zone();
    let alice = key("alice.friends.example.");
    let www = "www.alice.friends.example.";
    let one = super::plan(&z, &alice, &[], &[class(a(www, 0, [192, 0, 2, 50]), DNSClass::NONE)]).unwrap();
    let mut after = z.clone();
    after.apply(&one).unwrap();
    assert_eq!(after.lookup(&n(www), None).len(), 1);
    let set = super::plan(&z, &alice, &[], &[exists(www, RecordType::A)]).unwrap();
    assert_eq!(set, vec![Change::DeleteRrset { name: www.into(), rtype: RType::A }]);
    let name = super::plan(&z, &alice, &[], &[exists(www, RecordType::ANY)]).unwrap();
    assert_eq!(name, vec![Change::DeleteName { name: www.into() }]);
    // Deleting what is not there is no change at all.
    assert_eq!(super::plan(&z, &alice, &[], &[exists("none.alice.friends.example.", RecordType::TXT)]).unwrap(), vec![]);
    assert_eq!(super::plan(&z, &alice, &[], &[class(a(www, 0, [192, 0, 2, 99]), DNSClass::NONE)]).unwrap(), vec![]);
}

#[test]
fn malformed_updates_are_formerr_and_unsupported_types_refused() {
    let z = zone();
    let alice = key("alice.friends.example.");
    let www = "www.alice.friends.example.";
    let code = |u: Record| super::plan(&z, &alice, &[], &[u]).unwrap_err().rcode;
    // Class ANY with a TTL, class NONE with a TTL, class IN without data, another class.
    assert_eq!(code(class(Record::update0(n(www), 60, RecordType::A), DNSClass::ANY)), ResponseCode::FormErr);
    assert_eq!(code(class(a(www, 60, [192, 0, 2, 50]), DNSClass::NONE)), ResponseCode::FormErr);
    assert_eq!(code(Record::update0(n(www), 60, RecordType::A)), ResponseCode::FormErr);
    assert_eq!(code(class(a(www, 60, [192, 0, 2, 50]), DNSClass::CH)), ResponseCode::FormErr);
    assert_eq!(code(exists(www, RecordType::AXFR)), ResponseCode::FormErr);
    let ptr = Record::from_rdata(n(www), 60, RData::PTR(hickory_proto::rr::rdata::PTR(n("x.example."))));
    assert_eq!(code(ptr), ResponseCode::Refused);
    // A CNAME onto a name with data is ignored, as RFC 2136 §3.4.2.2 says: no change.
    let cname = Record::from_rdata(n(www), 60, RData::CNAME(hickory_proto::rr::rdata::CNAME(n("x.example."))));
    assert_eq!(super::plan(&z, &alice, &[], &[cname]).unwrap(), vec![], "RFC 2136 §3.4.2.2: ignored");
    let many: Vec<Record> = (0..=MAX_UPDATE_RECORDS).map(|i| a(www, 60, [10, 0, (i / 256) as u8, i as u8])).collect();
    assert_eq!(super::plan(&z, &alice, &[], &many).unwrap_err().rcode, ResponseCode::Refused);
}
