use super::*;
use expect_test::expect;
use proptest::prelude::*;

fn origin() -> Name {
    Name::from_ascii("friends.example.").unwrap()
}

fn parse(name: &str, t: &str, v: &str) -> Result<RecordSpec, RecordError> {
    RecordSpec::parse(&origin(), name, t, v, None)
}

fn zone() -> ZoneSpec {
    ZoneSpec {
        origin: origin(),
        serial: 3,
        nameservers: vec![
            Nameserver { name: "ns1".into(), addrs: vec!["192.0.2.1".parse().unwrap()] },
            Nameserver { name: "ns.elsewhere.example.".into(), addrs: vec!["192.0.2.9".parse().unwrap()] },
        ],
        hostmaster: "hostmaster@friends.example".into(),
        records: vec![parse("www", "A", "192.0.2.10").unwrap(), parse("blog", "CNAME", "www").unwrap()],
        secondaries: vec![],
        transfer_key: None,
    }
}

#[test]
fn names_are_made_absolute_relative_to_the_zone() {
    assert_eq!(parse("www", "A", "192.0.2.1").unwrap().name, "www.friends.example.");
    assert_eq!(parse("www.friends.example", "A", "192.0.2.1").unwrap().name, "www.friends.example.");
    assert_eq!(parse("WWW.Friends.Example.", "A", "192.0.2.1").unwrap().name, "www.friends.example.");
    assert_eq!(parse("@", "A", "192.0.2.1").unwrap().name, "friends.example.");
    assert_eq!(parse("blog", "CNAME", "gateway").unwrap().value, "gateway.friends.example.");
    assert_eq!(parse("@", "MX", "10 mail").unwrap().value, "10 mail.friends.example.");
    assert_eq!(parse("_x._tcp", "SRV", "0 5 443 www").unwrap().value, "0 5 443 www.friends.example.");
    assert_eq!(parse("www", "a", "192.0.2.1").unwrap().rtype, RType::A);
}

#[test]
fn bad_records_are_refused_naming_what_is_wrong() {
    let e = |n: &str, t: &str, v: &str| parse(n, t, v).unwrap_err().to_string();
    expect![[r#"A value "192.0.2.300" is not valid: network address parse error: invalid IPv4 address syntax"#]].assert_eq(&e(
        "www",
        "A",
        "192.0.2.300",
    ));
    expect![[r#"AAAA value "192.0.2.1" is not valid: network address parse error: invalid IPv6 address syntax"#]].assert_eq(&e(
        "www",
        "AAAA",
        "192.0.2.1",
    ));
    expect!["CNAME at the zone apex friends.example. (the apex has SOA and NS records; use A/AAAA there)"]
        .assert_eq(&e("@", "CNAME", "www"));
    expect!["NS at the zone apex friends.example. is managed by the island (one per public host)"].assert_eq(&e("@", "NS", "ns9"));
    expect!["name www.example.org. is outside the zone friends.example."].assert_eq(&e("www.example.org.", "A", "192.0.2.1"));
    expect![[r#"record type "PTR" is not supported (use A, AAAA, CNAME, TXT, MX, SRV, CAA or NS)"#]].assert_eq(&e("www", "PTR", "x."));
    let long = format!("\"{}\"", "x".repeat(300));
    expect![[r#"TXT value "\"x…\"" is not valid: a TXT string is 300 bytes long; split it into quoted strings of at most 255"#]]
        .assert_eq(&e("t", "TXT", &long).replace(&"x".repeat(300), "x…"));
    let many = (0..5).map(|_| format!("\"{}\"", "y".repeat(250))).collect::<Vec<_>>().join(" ");
    expect!["TXT value is 1250 bytes long; at most 1024 are accepted"].assert_eq(&e("t", "TXT", &many));
    assert!(matches!(parse("a..b", "A", "192.0.2.1"), Err(RecordError::BadName { .. })));
    assert!(matches!(parse("", "A", "192.0.2.1"), Err(RecordError::BadName { .. })));
    assert!(matches!(parse("www", "A", ""), Err(RecordError::BadValue { .. })));
    assert!(matches!(RecordSpec::parse(&origin(), "www", "A", "192.0.2.1", Some(u32::MAX)), Err(RecordError::BadTtl(_))));
}

#[test]
fn a_cname_stands_alone() {
    let mut z = zone();
    let e = z.add_record(parse("www", "CNAME", "elsewhere.example.").unwrap()).unwrap_err();
    expect!["CNAME at www.friends.example. next to other data (a name with a CNAME can have no other record)"].assert_eq(&e.to_string());
    let e = z.add_record(parse("blog", "TXT", "\"hi\"").unwrap()).unwrap_err();
    assert_eq!(e, RecordError::CnameNextToOtherData("blog.friends.example.".into()));
    let e = z.add_record(parse("blog", "CNAME", "other").unwrap()).unwrap_err();
    assert_eq!(e, RecordError::CnameNextToOtherData("blog.friends.example.".into()));
    // The same CNAME again only changes the TTL.
    z.add_record(RecordSpec::parse(&origin(), "blog", "CNAME", "www", Some(60)).unwrap()).unwrap();
    assert_eq!(z.records.iter().filter(|r| r.rtype == RType::CNAME).map(|r| r.ttl).collect::<Vec<_>>(), [60]);
    // The nameservers' addresses are the island's.
    assert_eq!(z.add_record(parse("ns1", "A", "192.0.2.66").unwrap()), Err(RecordError::NameserverName("ns1.friends.example.".into())));
}

#[test]
fn changes_apply_in_order_all_or_nothing() {
    let mut z = zone();
    let a = |n: &str, v: &str| parse(n, "A", v).unwrap();
    z.apply(&[Change::Add(a("x", "192.0.2.1")), Change::Add(a("x", "192.0.2.2")), Change::Add(a("y", "192.0.2.3"))]).unwrap();
    assert_eq!(z.records.len(), 5);
    z.apply(&[Change::DeleteRecord(a("x", "192.0.2.1"))]).unwrap();
    assert_eq!(z.lookup(&Name::from_ascii("x.friends.example.").unwrap(), None).len(), 1);
    z.apply(&[Change::DeleteRrset { name: "x.friends.example.".into(), rtype: RType::A }]).unwrap();
    z.apply(&[Change::DeleteName { name: "y.friends.example.".into() }]).unwrap();
    assert_eq!(z.records, zone().records);
    // A CNAME next to data is ignored, as RFC 2136 §3.4.2.2 says.
    z.apply(&[Change::Add(parse("www", "CNAME", "blog").unwrap())]).unwrap();
    assert_eq!(z.records, zone().records);
    // Anything outside the zone: nothing at all.
    let before = z.clone();
    let outside = RecordSpec { name: "a.example.org.".into(), ..a("x", "192.0.2.1") };
    assert!(z.apply(&[Change::Add(a("z", "192.0.2.4")), Change::Add(outside)]).is_err());
    assert_eq!(z, before);
}

#[test]
fn the_zone_has_soa_ns_and_glue_inside_it_only() {
    let rendered: Vec<String> = zone().records_for_hickory().unwrap().iter().map(|r| r.to_string()).collect();
    expect![[r#"
        friends.example. 3600 IN SOA ns1.friends.example. hostmaster.friends.example. 3 3600 600 1209600 300
        friends.example. 3600 IN NS ns1.friends.example.
        ns1.friends.example. 3600 IN A 192.0.2.1
        friends.example. 3600 IN NS ns.elsewhere.example.
        www.friends.example. 300 IN A 192.0.2.10
        blog.friends.example. 300 IN CNAME www.friends.example."#]]
    .assert_eq(&rendered.join("\n"));
    let mut z = zone();
    z.nameservers.clear();
    expect!["zone friends.example. has no nameservers"].assert_eq(&z.validate().unwrap_err().to_string());
    let mut z = zone();
    z.hostmaster = "a@b@c".into();
    expect![[r#"zone friends.example.: hostmaster "a@b@c" is neither a domain name nor a mail address"#]]
        .assert_eq(&z.validate().unwrap_err().to_string());
    // A stored zone whose records break the rules is refused as a whole.
    let mut z = zone();
    z.records.push(RecordSpec { name: "www.friends.example.".into(), ttl: 1, rtype: RType::CNAME, value: "x.example.".into() });
    assert!(matches!(z.validate(), Err(ZoneError::Record { source: RecordError::CnameNextToOtherData(_), .. })));
}

#[test]
fn keys_and_changes_in_json() {
    let key = TsigKeySpec {
        name: Name::from_ascii("alice.friends.example.").unwrap(),
        algorithm: "hmac-sha256".into(),
        secret: b"0123456789".to_vec(),
        scope: Name::from_ascii("alice.friends.example.").unwrap(),
        revoked: false,
    };
    let json = serde_json::to_string(&key).unwrap();
    expect![[r#"{"name":"alice.friends.example.","algorithm":"hmac-sha256","secret":"MDEyMzQ1Njc4OQ==","scope":"alice.friends.example.","revoked":false}"#]]
        .assert_eq(&json);
    assert_eq!(serde_json::from_str::<TsigKeySpec>(&json).unwrap(), key);
    let changes = vec![
        Change::Add(parse("www", "TXT", "\"v=1\"").unwrap()),
        Change::DeleteRrset { name: "x.friends.example.".into(), rtype: RType::AAAA },
        Change::DeleteName { name: "y.friends.example.".into() },
    ];
    let json = serde_json::to_string(&changes).unwrap();
    expect![[r#"[{"op":"add","name":"www.friends.example.","ttl":300,"rtype":"TXT","value":"\"v=1\""},{"op":"delete_rrset","name":"x.friends.example.","rtype":"AAAA"},{"op":"delete_name","name":"y.friends.example."}]"#]]
        .assert_eq(&json);
    assert_eq!(serde_json::from_str::<Vec<Change>>(&json).unwrap(), changes);
    let z = zone();
    assert_eq!(serde_json::from_str::<ZoneSpec>(&serde_json::to_string(&z).unwrap()).unwrap(), z);
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
}

fn value() -> impl Strategy<Value = (&'static str, String)> {
    prop_oneof![
        any::<std::net::Ipv4Addr>().prop_map(|a| ("A", a.to_string())),
        any::<std::net::Ipv6Addr>().prop_map(|a| ("AAAA", a.to_string())),
        label().prop_map(|l| ("CNAME", l)),
        (any::<u16>(), label()).prop_map(|(p, l)| ("MX", format!("{p} {l}"))),
        (any::<u16>(), any::<u16>(), any::<u16>(), label()).prop_map(|(a, b, c, l)| ("SRV", format!("{a} {b} {c} {l}.example."))),
        proptest::collection::vec("[ -~]{0,60}", 1..4).prop_map(|v| {
            let quoted: Vec<String> = v.iter().map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))).collect();
            ("TXT", quoted.join(" "))
        }),
        label().prop_map(|l| ("CAA", format!("0 issue \"{l}.org\""))),
        label().prop_map(|l| ("NS", format!("{l}.example."))),
    ]
}

proptest! {
    /// What parses prints back to itself: the stored value is a fixed point.
    #[test]
    fn a_parsed_record_round_trips(owner in label(), (t, v) in value(), ttl in 0u32..=MAX_TTL) {
        let r = RecordSpec::parse(&origin(), &owner, t, &v, Some(ttl)).unwrap();
        let again = RecordSpec::parse(&origin(), &r.name, &r.rtype.to_string(), &r.value, Some(r.ttl)).unwrap();
        prop_assert_eq!(&again, &r);
        // And through a hickory record (as UPDATE brings them).
        let rec = Record::from_rdata(r.owner(), r.ttl, r.rdata(&origin()).unwrap());
        prop_assert_eq!(RecordSpec::from_record(&origin(), &rec).unwrap(), r);
    }

    /// A name is in a scope exactly when the scope's labels end it.
    #[test]
    fn scope_is_a_label_suffix(name in proptest::collection::vec(label(), 1..5), scope in proptest::collection::vec(label(), 1..4)) {
        let n = Name::from_ascii(format!("{}.", name.join("."))).unwrap();
        let s = Name::from_ascii(format!("{}.", scope.join("."))).unwrap();
        let suffix = name.len() >= scope.len() && name[name.len() - scope.len()..] == scope[..];
        prop_assert_eq!(in_zone(&s, &n), suffix);
        // Case never matters.
        prop_assert_eq!(in_zone(&Name::from_ascii(s.to_string().to_uppercase()).unwrap(), &n), suffix);
    }
}
