//! The real server on 127.0.0.1 (random ports, inside the test process) against the real
//! tools: dig and nsupdate (bind9-dnsutils), kdig (knot-dnsutils). A missing tool fails the
//! test (scripts/install-deps.sh installs them).

use std::{
    net::{IpAddr, SocketAddr},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use atoll_dns::{Change, Limits, Nameserver, RecordSpec, Server, Snapshot, TsigKeySpec, UpdateSink, ZoneSpec};
use base64::Engine;
use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{Name, RecordType},
};
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream, UdpSocket},
    sync::watch,
};

const ALICE_SECRET: &[u8] = b"alice-secret-0123456789abcdef012";
const XFER_SECRET: &[u8] = b"transfer-secret-0123456789abcdef";
const REVOKED_SECRET: &[u8] = b"revoked-secret-0123456789abcdef0";

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn zone() -> ZoneSpec {
    let origin = name("friends.example.");
    let rec = |n: &str, t: &str, v: &str| RecordSpec::parse(&origin, n, t, v, Some(300)).unwrap();
    let mut records = vec![
        rec("www", "A", "192.0.2.10"),
        rec("www", "AAAA", "2001:db8::10"),
        rec("@", "MX", "10 mail"),
        rec("mail", "A", "192.0.2.25"),
        rec("blog", "CNAME", "www"),
        rec("www.alice", "A", "192.0.2.50"),
        rec("@", "CAA", "0 issue \"letsencrypt.org\""),
    ];
    // Ten 200-byte strings: more than a 1232-byte UDP answer holds.
    for i in 0..10 {
        records.push(rec("big", "TXT", &format!("\"{i}{}\"", "x".repeat(199))));
    }
    ZoneSpec {
        origin,
        serial: 1,
        nameservers: vec![
            Nameserver { name: "ns1".into(), addrs: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()] },
            Nameserver { name: "ns2.friends.example.".into(), addrs: vec!["198.51.100.2".parse().unwrap()] },
        ],
        hostmaster: "hostmaster@friends.example".into(),
        records,
        secondaries: vec![],
        transfer_key: Some(name("xfer.friends.example.")),
    }
}

fn keys() -> Vec<TsigKeySpec> {
    vec![
        TsigKeySpec {
            name: name("alice.friends.example."),
            algorithm: "hmac-sha256".into(),
            secret: ALICE_SECRET.to_vec(),
            scope: name("alice.friends.example."),
            revoked: false,
        },
        TsigKeySpec {
            name: name("xfer.friends.example."),
            algorithm: "hmac-sha512".into(),
            secret: XFER_SECRET.to_vec(),
            scope: name("xfer.friends.example."),
            revoked: false,
        },
        TsigKeySpec {
            name: name("old.friends.example."),
            algorithm: "hmac-sha256".into(),
            secret: REVOKED_SECRET.to_vec(),
            scope: name("friends.example."),
            revoked: true,
        },
    ]
}

/// Applies changes to the snapshot and bumps the serial, as the island does after Raft.
struct Sink {
    tx: watch::Sender<Arc<Snapshot>>,
    applied: Mutex<Vec<Vec<Change>>>,
}

#[async_trait::async_trait]
impl UpdateSink for Sink {
    async fn apply(&self, zone: &Name, changes: Vec<Change>) -> Result<(), String> {
        let mut snap = (**self.tx.borrow()).clone();
        let z = snap.zones.iter_mut().find(|z| z.apex() == *zone).ok_or("no such zone")?;
        z.apply(&changes).map_err(|e| e.to_string())?;
        z.serial += 1;
        self.applied.lock().unwrap().push(changes);
        self.tx.send_replace(Arc::new(snap));
        Ok(())
    }
}

struct Running {
    addr: SocketAddr,
    sink: Arc<Sink>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Running {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.sink.tx.borrow().clone()
    }
    fn set(&self, snap: Snapshot) {
        self.sink.tx.send_replace(Arc::new(snap));
    }
}

async fn bind() -> (UdpSocket, TcpListener, SocketAddr) {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        if let Ok(udp) = UdpSocket::bind(addr).await {
            return (udp, tcp, addr);
        }
    }
}

async fn start_with(snapshot: Snapshot, clock: Arc<dyn atoll_dns::Clock>, limits: Limits) -> Running {
    let (tx, rx) = watch::channel(Arc::new(snapshot));
    let sink = Arc::new(Sink { tx, applied: Mutex::new(vec![]) });
    let server = Server::with(rx, sink.clone(), clock, limits);
    let (udp, tcp, addr) = bind().await;
    let task = tokio::spawn(server.serve(udp, tcp));
    Running { addr, sink, task }
}

async fn start() -> Running {
    start_with(Snapshot { zones: vec![zone()], keys: keys() }, Arc::new(atoll_dns::SystemClock), Limits::default()).await
}

async fn run(tool: &str, args: &[String], stdin: Option<&str>) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(tool);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{tool}: {e} (scripts/install-deps.sh installs it)"));
    {
        use tokio::io::AsyncWriteExt;
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).await.unwrap();
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.expect("tool hung").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

async fn dig(server: &Running, args: &str) -> String {
    let mut a = vec![
        format!("@{}", server.addr.ip()),
        "-p".into(),
        server.addr.port().to_string(),
        "+norec".into(),
        "+time=5".into(),
        "+tries=1".into(),
    ];
    a.extend(args.split_whitespace().map(String::from));
    let (_, out) = run("dig", &a, None).await;
    out
}

async fn kdig(server: &Running, args: &str) -> String {
    let mut a = vec![
        format!("@{}", server.addr.ip()),
        "-p".into(),
        server.addr.port().to_string(),
        "+norec".into(),
        "+time=5".into(),
        "+retry=0".into(),
    ];
    a.extend(args.split_whitespace().map(String::from));
    let (_, out) = run("kdig", &a, None).await;
    out
}

/// The header line's flags, e.g. "qr aa".
fn flags(out: &str) -> String {
    // dig writes "flags:", kdig "Flags:".
    let line = out.lines().find(|l| l.to_lowercase().contains(";; flags:")).unwrap_or_else(|| panic!("no flags in:\n{out}"));
    line[line.to_lowercase().find(";; flags:").unwrap() + 9..].split(';').next().unwrap().trim().to_string()
}

fn status(out: &str) -> String {
    let line = out.lines().find(|l| l.contains("status:")).unwrap_or_else(|| panic!("no status in:\n{out}"));
    line.split("status:").nth(1).unwrap().split([',', ';']).next().unwrap().trim().to_string()
}

/// Records of a section (lines after ";; SECTION SECTION:" up to a blank line), whitespace
/// collapsed.
fn section(out: &str, title: &str) -> Vec<String> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with(&format!(";; {title} SECTION:"))).skip(1);
    let mut v = vec![];
    for l in lines.by_ref() {
        if l.trim().is_empty() {
            break;
        }
        v.push(l.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_and_kdig_see_soa_ns_glue_and_records_authoritatively() {
    let s = start().await;
    let out = dig(&s, "friends.example SOA").await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    let f = flags(&out);
    assert!(f.contains("aa") && !f.contains("ra"), "AA set, RA clear: {out}");
    assert_eq!(
        section(&out, "ANSWER"),
        ["friends.example. 3600 IN SOA ns1.friends.example. hostmaster.friends.example. 1 3600 600 1209600 300"]
    );
    assert!(out.contains("; EDNS: version: 0"), "EDNS answered: {out}");

    let out = dig(&s, "friends.example NS").await;
    let mut ns = section(&out, "ANSWER");
    ns.sort();
    assert_eq!(ns, ["friends.example. 3600 IN NS ns1.friends.example.", "friends.example. 3600 IN NS ns2.friends.example."]);
    let glue = section(&out, "ADDITIONAL");
    for want in [
        "ns1.friends.example. 3600 IN A 192.0.2.1",
        "ns1.friends.example. 3600 IN AAAA 2001:db8::1",
        "ns2.friends.example. 3600 IN A 198.51.100.2",
    ] {
        assert!(glue.iter().any(|g| g == want), "glue {want} in {out}");
    }

    let out = kdig(&s, "www.friends.example A").await;
    assert!(out.contains("status: NOERROR") && flags(&out).contains("aa"), "{out}");
    assert!(out.contains("192.0.2.10"), "{out}");
    let out = kdig(&s, "blog.friends.example A").await;
    assert!(out.contains("CNAME") && out.contains("www.friends.example."), "{out}");
    // EDNS: a version we do not speak is BADVERS (RFC 6891 §6.1.3); no EDNS, no OPT back.
    let out = dig(&s, "+edns=1 +noednsnegotiation friends.example SOA").await;
    assert_eq!(status(&out), "BADVERS", "{out}");
    let out = dig(&s, "+noedns friends.example SOA").await;
    assert!(!out.contains("OPT PSEUDOSECTION"), "{out}");
    let out = dig(&s, "friends.example CAA").await;
    assert_eq!(section(&out, "ANSWER"), ["friends.example. 300 IN CAA 0 issue \"letsencrypt.org\""], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_answers_carry_the_soa_nxdomain_apart_from_nodata() {
    let s = start().await;
    let soa = "friends.example. 300 IN SOA ns1.friends.example. hostmaster.friends.example. 1 3600 600 1209600 300";
    let out = dig(&s, "nope.friends.example A").await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(flags(&out).contains("aa"), "{out}");
    let auth = section(&out, "AUTHORITY");
    assert_eq!(auth.len(), 1, "{out}");
    assert!(auth[0].contains("IN SOA ns1.friends.example."), "{out}");

    let out = dig(&s, "www.friends.example TXT").await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(out.contains("ANSWER: 0"), "{out}");
    let auth = section(&out, "AUTHORITY");
    assert_eq!(auth.len(), 1, "NODATA carries the SOA: {out}");
    assert!(auth[0].contains("IN SOA"), "{out}");
    let _ = soa;

    // An empty non-terminal (alice has only www.alice under it) exists: NODATA.
    let out = kdig(&s, "alice.friends.example A").await;
    assert!(out.contains("status: NOERROR"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_not_served_is_refused() {
    let s = start().await;
    for q in ["example.org A", "friends.example.org SOA", ". NS"] {
        let out = dig(&s, q).await;
        assert_eq!(status(&out), "REFUSED", "{q}: {out}");
    }
    let out = kdig(&s, "example.com A").await;
    assert!(out.contains("status: REFUSED"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let s = start().await;
    let out = dig(&s, "+ignore +bufsize=1232 big.friends.example TXT").await;
    assert!(flags(&out).contains("tc"), "TC over UDP: {out}");
    let out = dig(&s, "+ignore +noedns big.friends.example TXT").await;
    assert!(flags(&out).contains("tc"), "TC over UDP without EDNS: {out}");
    // dig retries over TCP on its own.
    let out = dig(&s, "+bufsize=1232 big.friends.example TXT").await;
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert_eq!(section(&out, "ANSWER").len(), 10, "{out}");
    // kdig too.
    let out = kdig(&s, "big.friends.example TXT").await;
    assert!(out.contains("TCP"), "kdig retried over TCP: {out}");
    assert!(!out.contains("malformed"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("big.friends.example.") && l.contains("TXT")).count(), 10, "{out}");
    // A client advertising 4096 still gets at most our 1232.
    let out = dig(&s, "+ignore +bufsize=4096 big.friends.example TXT").await;
    assert!(flags(&out).contains("tc"), "{out}");
    assert!(out.contains("udp: 1232"), "advertises 1232: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axfr_and_ixfr_need_the_zones_transfer_key() {
    let s = start().await;
    let out = dig(&s, "friends.example AXFR").await;
    assert!(out.contains("Transfer failed") || out.contains("REFUSED"), "unsigned AXFR refused: {out}");
    assert!(!out.contains("192.0.2.10"), "{out}");

    let alice = format!("-y hmac-sha256:alice.friends.example:{}", b64(ALICE_SECRET));
    let out = dig(&s, &format!("{alice} friends.example AXFR")).await;
    assert!(out.contains("Transfer failed") || out.contains("REFUSED"), "another key's AXFR refused: {out}");

    let bad = format!("-y hmac-sha512:xfer.friends.example:{}", b64(b"not the secret"));
    let out = dig(&s, &format!("{bad} friends.example AXFR")).await;
    assert!(!out.contains("192.0.2.10"), "bad secret: {out}");

    let xfer = format!("-y hmac-sha512:xfer.friends.example:{}", b64(XFER_SECRET));
    let out = dig(&s, &format!("{xfer} friends.example AXFR")).await;
    assert!(!out.contains("Transfer failed") && !out.contains("tsig verify failure"), "{out}");
    let soas = out.lines().filter(|l| l.contains("\tSOA\t")).count();
    assert_eq!(soas, 2, "SOA first and last: {out}");
    assert!(out.contains("192.0.2.10") && out.contains("198.51.100.2"), "{out}");

    // IXFR is answered as a full transfer (RFC 1995 §4).
    let out = dig(&s, &format!("{xfer} +tcp friends.example IXFR=0")).await;
    assert!(out.contains("192.0.2.10"), "{out}");

    let out = kdig(&s, &format!("-y hmac-sha512:xfer.friends.example:{} friends.example AXFR", b64(XFER_SECRET))).await;
    assert!(out.contains("192.0.2.10"), "kdig AXFR: {out}");
}

fn nsupdate_script(s: &Running, body: &str) -> String {
    format!("server {} {}\nzone friends.example\n{body}\nsend\n", s.addr.ip(), s.addr.port())
}

async fn nsupdate(s: &Running, key: Option<(&str, &[u8])>, body: &str) -> (bool, String) {
    let mut args = vec!["-t".to_string(), "10".into()];
    if let Some((name, secret)) = key {
        args.push("-y".into());
        args.push(format!("hmac-sha256:{name}:{}", b64(secret)));
    }
    run("nsupdate", &args, Some(&nsupdate_script(s, body))).await
}

const ALICE: (&str, &[u8]) = ("alice.friends.example", ALICE_SECRET);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsupdate_inside_its_scope_adds_and_removes_records() {
    let s = start().await;
    let (ok, out) = nsupdate(
        &s,
        Some(ALICE),
        "update add _acme-challenge.alice.friends.example 60 TXT \"token-1\"\nupdate add host.alice.friends.example 300 A 192.0.2.77",
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(s.snapshot().zones[0].serial, 2);
    let out = dig(&s, "_acme-challenge.alice.friends.example TXT").await;
    assert_eq!(section(&out, "ANSWER"), ["_acme-challenge.alice.friends.example. 60 IN TXT \"token-1\""], "{out}");
    let out = dig(&s, "friends.example SOA").await;
    assert!(section(&out, "ANSWER")[0].contains(" 2 3600 600"), "serial bumped: {out}");

    let (ok, out) = nsupdate(&s, Some(ALICE), "update delete _acme-challenge.alice.friends.example TXT").await;
    assert!(ok, "{out}");
    let out = dig(&s, "_acme-challenge.alice.friends.example TXT").await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    let (ok, out) = nsupdate(&s, Some(ALICE), "update delete host.alice.friends.example A 192.0.2.77").await;
    assert!(ok, "{out}");
    assert!(!s.snapshot().zones[0].records.iter().any(|r| r.name.starts_with("host.")));
    assert_eq!(s.snapshot().zones[0].serial, 4);
    // Deleting what is not there changes nothing (and bumps nothing).
    let (ok, out) = nsupdate(&s, Some(ALICE), "update delete nothing.alice.friends.example A").await;
    assert!(ok, "{out}");
    assert_eq!(s.snapshot().zones[0].serial, 4);
    assert_eq!(s.sink.applied.lock().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsupdate_outside_its_scope_unsigned_or_badly_signed_changes_nothing() {
    let s = start().await;
    let before = s.snapshot();
    // One name in scope, one outside: nothing at all is applied.
    let (ok, out) =
        nsupdate(&s, Some(ALICE), "update add ok.alice.friends.example 60 A 192.0.2.1\nupdate add www.friends.example 60 A 192.0.2.66")
            .await;
    assert!(!ok && out.contains("REFUSED"), "{out}");
    // The apex NS is the island's.
    let (ok, out) = nsupdate(&s, Some(("old.friends.example", REVOKED_SECRET)), "update add friends.example 60 NS evil.example.").await;
    assert!(!ok && out.contains("NOTAUTH"), "revoked key: {out}");
    let (ok, out) = nsupdate(&s, None, "update add x.alice.friends.example 60 A 192.0.2.1").await;
    assert!(!ok && out.contains("REFUSED"), "unsigned: {out}");
    let (ok, out) =
        nsupdate(&s, Some(("alice.friends.example", b"wrong secret")), "update add x.alice.friends.example 60 A 192.0.2.1").await;
    assert!(!ok && out.contains("NOTAUTH"), "bad secret: {out}");
    let (ok, out) = nsupdate(&s, Some(("nobody.friends.example", ALICE_SECRET)), "update add x.alice.friends.example 60 A 192.0.2.1").await;
    assert!(!ok && out.contains("NOTAUTH"), "unknown key: {out}");
    assert_eq!(s.snapshot(), before);
    assert!(s.sink.applied.lock().unwrap().is_empty());
    let out = dig(&s, "ok.alice.friends.example A").await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsupdate_prerequisites_fail_with_their_rcode() {
    let s = start().await;
    for (prereq, rcode) in [
        ("prereq nxdomain www.alice.friends.example", "YXDOMAIN"),
        ("prereq yxdomain none.alice.friends.example", "NXDOMAIN"),
        ("prereq yxrrset www.alice.friends.example TXT", "NXRRSET"),
        ("prereq nxrrset www.alice.friends.example A", "YXRRSET"),
        ("prereq yxrrset www.alice.friends.example A 192.0.2.99", "NXRRSET"),
    ] {
        let (ok, out) = nsupdate(&s, Some(ALICE), &format!("{prereq}\nupdate add p.alice.friends.example 60 A 192.0.2.3")).await;
        assert!(!ok && out.contains(rcode), "{prereq}: want {rcode}: {out}");
    }
    assert!(s.sink.applied.lock().unwrap().is_empty());
    // A prerequisite that holds lets the update through.
    let (ok, out) = nsupdate(&s, Some(ALICE), "prereq yxrrset www.alice.friends.example A 192.0.2.50\nprereq nxdomain p.alice.friends.example\nupdate add p.alice.friends.example 60 A 192.0.2.3").await;
    assert!(ok, "{out}");
    assert_eq!(s.sink.applied.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_signed_outside_the_time_window_is_badtime() {
    // The server's clock runs 20 minutes ahead of nsupdate's.
    let clock = || atoll_dns::Clock::now(&atoll_dns::SystemClock) + 1200;
    let s = start_with(Snapshot { zones: vec![zone()], keys: keys() }, Arc::new(clock), Limits::default()).await;
    let (ok, out) = nsupdate(&s, Some(ALICE), "update add t.alice.friends.example 60 A 192.0.2.1").await;
    assert!(!ok && out.contains("NOTAUTH"), "{out}");
    assert!(out.contains("BADTIME") || out.contains("tsig"), "{out}");
    assert!(s.sink.applied.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_snapshot_is_served_without_a_restart_and_notifies_secondaries() {
    let secondary = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut z = zone();
    z.secondaries = vec![secondary.local_addr().unwrap()];
    let s = start_with(Snapshot { zones: vec![z.clone()], keys: keys() }, Arc::new(atoll_dns::SystemClock), Limits::default()).await;
    z.serial = 7;
    z.records.push(RecordSpec::parse(&z.origin, "new", "A", "192.0.2.200", None).unwrap());
    s.set(Snapshot { zones: vec![z], keys: keys() });

    // The secondary hears of it (and answers, as a secondary does).
    let mut buf = vec![0u8; 4096];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), secondary.recv_from(&mut buf)).await.expect("a NOTIFY").unwrap();
    let notify = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(notify.metadata.op_code, OpCode::Notify);
    assert_eq!(notify.queries[0].query_type(), RecordType::SOA);
    assert_eq!(notify.queries[0].name(), &name("friends.example."));
    assert!(notify.signature().is_some(), "signed with the transfer key");
    let mut answer = Message::new(notify.metadata.id, MessageType::Response, OpCode::Notify);
    answer.add_query(notify.queries[0].clone());
    answer.metadata.response_code = ResponseCode::NoError;
    secondary.send_to(&answer.to_vec().unwrap(), from).await.unwrap();

    let out = dig(&s, "new.friends.example A").await;
    assert!(out.contains("192.0.2.200"), "{out}");
    let out = dig(&s, "friends.example SOA").await;
    assert!(section(&out, "ANSWER")[0].contains(" 7 3600 600"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_capped_and_idle_ones_closed() {
    let limits = Limits { tcp_connections: 2, tcp_idle: Duration::from_millis(500), ..Limits::default() };
    let s = start_with(Snapshot { zones: vec![zone()], keys: keys() }, Arc::new(atoll_dns::SystemClock), limits).await;
    let a = TcpStream::connect(s.addr).await.unwrap();
    let b = TcpStream::connect(s.addr).await.unwrap();
    // The third is closed at once (the first two are still within their idle time).
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_millis(400), c.read(&mut buf)).await.expect("closed at once").unwrap_or(0);
    assert_eq!(n, 0);
    // The idle ones are closed after their idle time.
    for mut conn in [a, b] {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await.expect("closed when idle").unwrap_or(0);
        assert_eq!(n, 0);
    }
    // And the server still answers, over TCP too.
    let out = dig(&s, "+tcp www.friends.example A").await;
    assert!(out.contains("192.0.2.10"), "{out}");
    let _ = IpAddr::from([0, 0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegated_sub_zone_gets_a_referral_with_glue() {
    let mut z = zone();
    let o = z.origin.clone();
    for (n, t, v) in [
        ("sub.alice", "NS", "ns.sub.alice"),
        ("sub.alice", "NS", "ns2.sub.alice"),
        ("ns.sub.alice", "A", "192.0.2.70"),
        ("ns2.sub.alice", "A", "192.0.2.71"),
    ] {
        z.add_record(RecordSpec::parse(&o, n, t, v, None).unwrap()).unwrap();
    }
    let s = start_with(Snapshot { zones: vec![z], keys: keys() }, Arc::new(atoll_dns::SystemClock), Limits::default()).await;
    let out = dig(&s, "host.sub.alice.friends.example A").await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(!flags(&out).contains("aa"), "a referral is not authoritative: {out}");
    assert!(out.contains("ANSWER: 0"), "{out}");
    let mut auth = section(&out, "AUTHORITY");
    auth.sort();
    assert_eq!(
        auth,
        [
            "sub.alice.friends.example. 300 IN NS ns.sub.alice.friends.example.",
            "sub.alice.friends.example. 300 IN NS ns2.sub.alice.friends.example."
        ],
        "{out}"
    );
    let glue = section(&out, "ADDITIONAL");
    assert!(glue.iter().any(|g| g.ends_with("IN A 192.0.2.70")) && glue.iter().any(|g| g.ends_with("IN A 192.0.2.71")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_queries_and_oversized_garbage_leave_it_answering() {
    use tokio::io::AsyncWriteExt;
    let s = start().await;
    // 20,000 queries from 8 sockets, as fast as they go, never reading the answers.
    let mut query = Message::query();
    query.add_query(hickory_proto::op::Query::query(name("www.friends.example."), RecordType::A));
    let bytes = query.to_vec().unwrap();
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let bytes = bytes.clone();
        let to = s.addr;
        flood.spawn(async move {
            let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            for _ in 0..2500 {
                let _ = sock.send_to(&bytes, to).await;
            }
        });
    }
    // A 65,535-byte TCP message of garbage, and one that claims more than it sends.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(&u16::MAX.to_be_bytes()).await.unwrap();
    c.write_all(&vec![0xffu8; 65535]).await.unwrap();
    let mut d = TcpStream::connect(s.addr).await.unwrap();
    d.write_all(&[0x40, 0x00, 1, 2, 3]).await.unwrap();
    while flood.join_next().await.is_some() {}
    let started = std::time::Instant::now();
    let out = dig(&s, "www.friends.example A").await;
    assert!(out.contains("192.0.2.10"), "{out}");
    let out = dig(&s, "+tcp www.friends.example A").await;
    assert!(out.contains("192.0.2.10"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(5), "answers within bounds after the flood: {:?}", started.elapsed());
    assert!(!s.task.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_query_gets_a_signed_answer() {
    let s = start().await;
    let alice = format!("-y hmac-sha256:alice.friends.example:{}", b64(ALICE_SECRET));
    let out = dig(&s, &format!("{alice} friends.example SOA")).await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(!out.contains("tsig verify failure") && !out.contains("Couldn't verify"), "{out}");
    assert!(out.contains("TSIG\thmac-sha256.") && out.contains("NOERROR 0"), "signed: {out}");
    // A large signed answer: truncated over UDP with its signature, whole over TCP.
    let out = dig(&s, &format!("{alice} +ignore big.friends.example TXT")).await;
    assert!(flags(&out).contains("tc") && !out.contains("tsig verify failure"), "{out}");
    let out = dig(&s, &format!("{alice} big.friends.example TXT")).await;
    assert!(!out.contains("tsig verify failure"), "{out}");
    assert_eq!(section(&out, "ANSWER").len(), 10, "{out}");
    // kdig checks the signature too.
    let out = kdig(&s, &format!("-y hmac-sha256:alice.friends.example:{} nope.friends.example A", b64(ALICE_SECRET))).await;
    assert!(out.contains("status: NXDOMAIN") && !out.to_lowercase().contains("tsig error") && !out.contains("BADSIG"), "{out}");
    // A query signed with a bad secret: NOTAUTH with BADSIG.
    let out = dig(&s, &format!("-y hmac-sha256:alice.friends.example:{} friends.example SOA", b64(b"wrong"))).await;
    assert!(out.contains("NOTAUTH") || out.contains("BADSIG") || out.contains("tsig"), "{out}");
}
