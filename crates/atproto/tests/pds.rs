//! The ATProto client against the real PDS and PLC directory (`atoll_testkit::pds`), dnsmasq
//! for `_atproto` TXT records, and a tiny hostile HTTP server for what a real PDS never sends:
//! handles resolve both ways, records and blobs go up and come back, blobs are checked against
//! their CID, and oversized, over-deep or silent answers get errors that name the problem.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use atoll_atproto::{BlobCache, BlobCid, Client, Config, Error, Limits};
use atoll_testkit::pds::{HandleDns, Pds};

fn client(pds: &Pds, dns: &HandleDns) -> Client {
    client_with(pds, dns, Limits::default())
}

fn client_with(pds: &Pds, dns: &HandleDns, limits: Limits) -> Client {
    Client::new(Config { plc_url: pds.plc_url.clone(), nameserver: Some(dns.addr), limits, insecure_http_port: Some(pds.port) }).unwrap()
}

#[tokio::test]
async fn a_handle_resolves_both_ways_and_a_blob_comes_back_verified_by_its_cid() {
    let pds = Pds::start();
    let alice = pds.create_account("alice.test");
    let bob = pds.create_account("bob.test");
    // alice by DNS; bob has no TXT record, so his handle resolves through the well-known file;
    // mallory claims alice's DID, which does not claim mallory back.
    let dns = HandleDns::start(&[
        ("_atproto.alice.test", &format!("did={}", alice.did)),
        ("_atproto.mallory.test", &format!("did={}", alice.did)),
    ]);
    let c = client(&pds, &dns);

    let id = c.resolve("alice.test").await.unwrap();
    assert_eq!(id.did, alice.did);
    assert_eq!(id.handle.as_deref(), Some("alice.test"));
    assert_eq!(id.pds, format!("http://localhost:{}", pds.port));
    let by_did = c.resolve(&alice.did).await.unwrap();
    assert_eq!(by_did.handle.as_deref(), Some("alice.test"), "the DID's handle resolves back to it");

    let b = c.resolve("bob.test").await.unwrap();
    assert_eq!((b.did.as_str(), b.handle.as_deref()), (bob.did.as_str(), Some("bob.test")));

    let e = c.resolve("mallory.test").await.unwrap_err();
    assert!(matches!(e, Error::HandleNotClaimed { .. }), "{e}");
    assert!(e.to_string().contains("does not claim the handle"), "{e}");
    let e = c.resolve("nobody.test").await.unwrap_err();
    assert!(matches!(e, Error::HandleNotFound { .. }), "{e}");

    // Publish: a blob, and a record pointing at it.
    let session = c.create_session(&id.pds, "alice.test", &alice.app_password).await.unwrap();
    assert_eq!(session.did, alice.did);
    let code = b"\0asm\x01\0\0\0 pretend this is a module".to_vec();
    let blob = c.upload_blob(&session, code.clone(), "application/wasm").await.unwrap();
    assert_eq!(blob.cid, BlobCid::of(&code));
    assert_eq!(blob.mime_type, "application/wasm");
    let record = serde_json::json!({"$type": "dev.atoll.test", "name": "hello", "code": blob.to_json()});
    let (uri, _) = c.put_record(&session, "dev.atoll.test", "hello", &record).await.unwrap();
    assert_eq!(uri, format!("at://{}/dev.atoll.test/hello", alice.did));

    // Read it back as a runner would: record, then blob by CID, then from the cache.
    let got = c.get_record(&id.pds, &id.did, "dev.atoll.test", "hello").await.unwrap();
    assert_eq!(got.value["name"], "hello");
    let referenced = atoll_atproto::Blob::from_json(&got.value["code"]).unwrap();
    assert_eq!(referenced.cid, blob.cid);
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    assert_eq!(c.fetch_blob(&cache, &id.pds, &id.did, &referenced.cid).await.unwrap(), code);
    assert_eq!(std::fs::read(cache.path(&referenced.cid)).unwrap(), code);
    // A tampered cache entry is not used: the blob is fetched (and checked) again.
    std::fs::write(cache.path(&referenced.cid), b"tampered").unwrap();
    assert_eq!(c.fetch_blob(&cache, &id.pds, &id.did, &referenced.cid).await.unwrap(), code);

    let e = c.get_record(&id.pds, &id.did, "dev.atoll.test", "missing").await.unwrap_err();
    assert!(matches!(e, Error::RecordNotFound { .. }), "{e}");
    let e = c.create_session(&id.pds, "alice.test", "wrong-password").await.unwrap_err();
    assert!(e.to_string().contains("com.atproto.server.createSession"), "{e}");
}

#[tokio::test]
async fn hostile_records_from_a_real_pds_are_refused_with_the_limit_they_broke() {
    let pds = Pds::start();
    let alice = pds.create_account("alice.test");
    let dns = HandleDns::start(&[("_atproto.alice.test", &format!("did={}", alice.did))]);
    let limits = Limits { max_json_bytes: 64 << 10, max_json_depth: 16, ..Limits::default() };
    let c = client_with(&pds, &dns, limits);
    let id = c.resolve("alice.test").await.unwrap();
    let session = c.create_session(&id.pds, "alice.test", &alice.app_password).await.unwrap();

    let huge = serde_json::json!({"$type": "dev.atoll.test", "padding": "x".repeat(200 << 10)});
    c.put_record(&session, "dev.atoll.test", "huge", &huge).await.unwrap();
    let e = c.get_record(&id.pds, &id.did, "dev.atoll.test", "huge").await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { limit: 65536, .. }), "{e}");

    let mut deep = serde_json::json!("bottom");
    for _ in 0..40 {
        deep = serde_json::json!({ "n": deep });
    }
    let record = serde_json::json!({"$type": "dev.atoll.test", "deep": deep});
    c.put_record(&session, "dev.atoll.test", "deep", &record).await.unwrap();
    let e = c.get_record(&id.pds, &id.did, "dev.atoll.test", "deep").await.unwrap_err();
    assert!(matches!(e, Error::TooDeep { limit: 16, .. }), "{e}");
    assert!(e.to_string().contains("nests deeper than the limit of 16"), "{e}");
}

/// An HTTP server on 127.0.0.1 that answers every request with `response` (raw bytes), or
/// never answers if it is `None`.
fn hostile_server(response: Option<Vec<u8>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    serve_or_hold(listener, response);
    port
}

fn serve(listener: TcpListener, response: Vec<u8>) {
    serve_or_hold(listener, Some(response));
}

fn serve_or_hold(listener: TcpListener, response: Option<Vec<u8>>) {
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            match &response {
                Some(r) => {
                    let _ = conn.write_all(r);
                }
                None => held.push(conn),
            }
        }
    });
}

fn http_response(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len())
        .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test]
async fn a_blob_whose_bytes_do_not_match_its_cid_is_refused_and_not_cached() {
    let pds = Pds::start();
    let dns = HandleDns::start(&[]);
    let c = client(&pds, &dns);
    let port = hostile_server(Some(http_response("application/octet-stream", b"not the code you asked for")));
    let cid = BlobCid::of(b"the real code");
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let e = c.fetch_blob(&cache, &format!("http://127.0.0.1:{port}"), "did:plc:abcdefghijklmnopqrstuvwx", &cid).await.unwrap_err();
    assert!(matches!(e, Error::CidMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&cid.to_string()) && e.to_string().contains("refusing"), "{e}");
    assert!(!cache.path(&cid).exists());
}

#[tokio::test]
async fn oversized_blobs_and_silent_servers_are_cut_off() {
    let pds = Pds::start();
    let dns = HandleDns::start(&[]);
    let limits = Limits { max_blob_bytes: 1024, timeout: Duration::from_secs(1), ..Limits::default() };
    let c = client_with(&pds, &dns, limits);
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let did = "did:plc:abcdefghijklmnopqrstuvwx";
    let big = vec![7u8; 4096];
    let port = hostile_server(Some(http_response("application/octet-stream", &big)));
    let e = c.fetch_blob(&cache, &format!("http://127.0.0.1:{port}"), did, &BlobCid::of(&big)).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { what: "a blob", limit: 1024, .. }), "{e}");

    let silent = hostile_server(None);
    let started = std::time::Instant::now();
    let e = c.fetch_blob(&cache, &format!("http://127.0.0.1:{silent}"), did, &BlobCid::of(b"x")).await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // A DID document that nests without end never reaches the parser.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let plc = hostile_server(Some(http_response("application/json", deep.as_bytes())));
    let c = Client::new(Config {
        plc_url: format!("http://127.0.0.1:{plc}"),
        nameserver: Some(dns.addr),
        limits: Limits::default(),
        insecure_http_port: Some(pds.port),
    })
    .unwrap();
    let e = c.resolve_did(did).await.unwrap_err();
    assert!(matches!(e, Error::TooDeep { what: "a DID document", .. }), "{e}");
}

#[tokio::test]
async fn a_did_web_document_is_fetched_from_its_host_and_must_be_that_dids() {
    let pds = Pds::start();
    let dns = HandleDns::start(&[]);
    let c = client(&pds, &dns);
    // did:web:web.test%3APORT: the port is percent-encoded; dnsmasq sends web.test to 127.0.0.1.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let did = format!("did:web:web.test%3A{port}");
    let doc = serde_json::json!({
        "id": did, "alsoKnownAs": ["at://web.test"],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": format!("http://localhost:{}", pds.port)}]
    });
    serve(listener, http_response("application/json", doc.to_string().as_bytes()));
    let got = c.resolve_did(&did).await.unwrap();
    assert_eq!(got.id, did);
    let id = c.resolve(&did).await.unwrap();
    assert_eq!(id.pds, format!("http://localhost:{}", pds.port));
    assert_eq!(id.handle, None, "web.test names no DID, so the claimed handle is not verified");

    // A document served for another DID is refused.
    let other = hostile_server(Some(http_response("application/json", doc.to_string().as_bytes())));
    let e = c.resolve_did(&format!("did:web:web.test%3A{other}")).await.unwrap_err();
    assert!(matches!(e, Error::DocumentIdMismatch { .. }), "{e}");
    // ATProto's did:web names a host, not a path.
    let e = c.resolve_did("did:web:web.test:users:alice").await.unwrap_err();
    assert!(matches!(e, Error::InvalidDid(_)), "{e}");
}

#[tokio::test]
async fn without_the_test_only_switch_plain_http_is_refused() {
    let e = Client::new(Config { plc_url: "http://127.0.0.1:1".into(), ..Config::default() }).unwrap_err();
    assert!(matches!(e, Error::InsecureUrl(_)), "{e}");
    let c = Client::new(Config::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let e = c.fetch_blob(&cache, "http://localhost:2583", "did:plc:abcdefghijklmnopqrstuvwx", &BlobCid::of(b"x")).await.unwrap_err();
    assert!(matches!(e, Error::InsecureUrl(_)), "{e}");
    assert!(e.to_string().contains("must use https"), "{e}");
}
