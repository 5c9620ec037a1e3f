//! Bundles on the real PDS: published (code uploaded, record written, older code kept
//! referenced) and fetched by `at://` URI (handle resolved both ways, record validated, code
//! checked against its CID); at.functions.metadata records read as one-route wasm bundles;
//! hostile records and blobs refused with errors naming the problem.

use atoll_atproto::bundle::functions::Mode;
use atoll_atproto::bundle::{Manifest, Method, Runtime};
use atoll_atproto::{AtUri, BlobCache, BlobCid, Client, Config, Error, Limits};
use atoll_testkit::pds::{Account, HandleDns, Pds};
use serde_json::json;

struct Env {
    pds: Pds,
    alice: Account,
    _dns: HandleDns,
    client: Client,
    cache: BlobCache,
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let pds = Pds::start();
    let alice = pds.create_account("alice.test");
    let dns = HandleDns::start(&[("_atproto.alice.test", &format!("did={}", alice.did))]);
    let limits = Limits { max_json_bytes: 256 << 10, ..Limits::default() };
    let client =
        Client::new(Config { plc_url: pds.plc_url.clone(), nameserver: Some(dns.addr), limits, insecure_http_port: Some(pds.port) })
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path().join("blobs")).unwrap();
    Env { pds, alice, _dns: dns, client, cache, _dir: dir }
}

fn hello(version: &str) -> Manifest {
    Manifest::from_record(&json!({
        "name": "hello",
        "version": version,
        "runtime": "wasm",
        "entry": "handle",
        "code": {"$type": "blob", "ref": {"$link": BlobCid::of(b"x").to_string()}, "mimeType": "application/wasm", "size": 1},
        "routes": [{"method": "GET", "path": "/hello", "handler": "hello"}],
        "permissions": {"net": ["api.example.com"]},
        "limits": {"memoryMb": 32, "wallTimeoutMs": 1000},
        "cron": [{"schedule": "*/5 * * * *", "handler": "tick"}]
    }))
    .unwrap()
}

fn pds_url(e: &Env) -> String {
    format!("http://localhost:{}", e.pds.port)
}

#[tokio::test]
async fn a_published_bundle_is_fetched_by_its_at_uri_with_its_code_verified() {
    let e = env();
    let session = e.client.create_session(&pds_url(&e), "alice.test", &e.alice.app_password).await.unwrap();
    let v1 = b"\0asm\x01\0\0\0 version one".to_vec();
    let (uri, _) = e.client.publish_bundle(&session, &hello("1.0.0"), Some((v1.clone(), "application/wasm"))).await.unwrap();
    assert_eq!(uri, format!("at://{}/dev.atoll.bundle/hello", e.alice.did));

    let at = AtUri::parse("at://alice.test/dev.atoll.bundle/hello").unwrap();
    let got = e.client.fetch_bundle(&e.cache, &at, None).await.unwrap();
    assert_eq!(got.uri.to_string(), uri);
    assert_eq!(got.identity.handle.as_deref(), Some("alice.test"));
    assert_eq!(got.manifest.version, "1.0.0");
    assert_eq!(got.manifest.routes[0].method, Method::Get);
    assert_eq!(got.manifest.code.as_ref().unwrap().cid, BlobCid::of(&v1));
    assert_eq!(got.code.as_deref(), Some(&v1[..]));
    assert!(e.cache.path(&BlobCid::of(&v1)).exists());

    // Version two: the record now points at new code and keeps the old code referenced, so the
    // PDS still serves it to islands that run version one.
    let v2 = b"\0asm\x01\0\0\0 version two".to_vec();
    e.client.publish_bundle(&session, &hello("2.0.0"), Some((v2.clone(), "application/wasm"))).await.unwrap();
    let got = e.client.fetch_bundle(&e.cache, &at, None).await.unwrap();
    assert_eq!((got.manifest.version.as_str(), got.code.as_deref()), ("2.0.0", Some(&v2[..])));
    assert_eq!(got.manifest.previous_code.iter().map(|b| b.cid).collect::<Vec<_>>(), [BlobCid::of(&v1)]);
    let fresh = tempfile::tempdir().unwrap();
    let fresh = BlobCache::open(fresh.path()).unwrap();
    let old = e.client.fetch_blob(&fresh, &got.identity.pds, &got.identity.did, &BlobCid::of(&v1)).await.unwrap();
    assert_eq!(old, v1);

    // Without previousCode the PDS drops the old blob as soon as nothing references it: the
    // reason publish keeps it.
    let bare = json!({"$type": "dev.atoll.bundle", "name": "hello", "version": "3.0.0", "runtime": "oci", "entry": "registry.example/hello:3",
        "routes": [{"method": "GET", "path": "/", "handler": "h"}]});
    e.client.put_record(&session, "dev.atoll.bundle", "hello", &bare).await.unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let fresh = BlobCache::open(fresh.path()).unwrap();
    let gone = e.client.fetch_blob(&fresh, &got.identity.pds, &got.identity.did, &BlobCid::of(&v2)).await.unwrap_err();
    assert!(matches!(gone, Error::Status { status: 400 | 404, .. }), "{gone}");
    let got = e.client.fetch_bundle(&e.cache, &at, None).await.unwrap();
    assert_eq!((got.manifest.runtime, got.code), (Runtime::Oci, None));

    // An invalid manifest is refused before anything is uploaded or written.
    let mut bad = hello("4.0.0");
    bad.routes[0].path = "no-slash".into();
    let err = e.client.publish_bundle(&session, &bad, Some((b"x".to_vec(), "application/wasm"))).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidRecord { source, .. } if source.names("routes[0].path")), "{err}");
    assert_eq!(e.client.fetch_bundle(&e.cache, &at, None).await.unwrap().manifest.version, "3.0.0");
}

#[tokio::test]
async fn an_at_functions_record_is_fetched_as_a_one_route_wasm_bundle() {
    let e = env();
    let session = e.client.create_session(&pds_url(&e), "alice.test", &e.alice.app_password).await.unwrap();
    let wasm = b"\0asm\x01\0\0\0 echo".to_vec();
    let blob = e.client.upload_blob(&session, wasm.clone(), "application/wasm").await.unwrap();
    let record = json!({"$type": "at.functions.metadata", "name": "Echo", "version": "0.1.0", "mode": "pure-v1", "code": blob.to_json(),
        "entrypoint": "run", "inputEncoding": "application/json", "outputEncoding": "application/json", "maxMemoryMb": 16, "maxDurationMs": 250});
    e.client.put_record(&session, "at.functions.metadata", "echo-v1", &record).await.unwrap();
    let at = AtUri::parse(&format!("at://{}/at.functions.metadata/echo-v1", e.alice.did)).unwrap();
    let got = e.client.fetch_bundle(&e.cache, &at, None).await.unwrap();
    assert_eq!((got.manifest.name.as_str(), got.manifest.abi, got.manifest.runtime), ("echo-v1", Some(Mode::PureV1), Runtime::Wasm));
    assert_eq!((got.manifest.limits.memory_mb, got.manifest.limits.wall_timeout_ms), (Some(16), Some(250)));
    assert_eq!(got.code.as_deref(), Some(&wasm[..]));
    let named = e.client.fetch_bundle(&e.cache, &at, Some("echo")).await.unwrap();
    assert_eq!(named.manifest.name, "echo");
}

#[tokio::test]
async fn hostile_bundle_records_and_blobs_are_refused_naming_the_problem() {
    let e = env();
    let session = e.client.create_session(&pds_url(&e), "alice.test", &e.alice.app_password).await.unwrap();
    let at = |rkey: &str| AtUri::parse(&format!("at://alice.test/dev.atoll.bundle/{rkey}")).unwrap();
    let put = |rkey: &'static str, record: serde_json::Value| {
        let c = e.client.clone();
        let s = session.clone();
        async move { c.put_record(&s, "dev.atoll.bundle", rkey, &record).await.unwrap() }
    };
    // Records without code (oci): the PDS refuses records naming blobs it does not have.
    let mut base = hello("1.0.0");
    (base.runtime, base.entry, base.code) = (Runtime::Oci, "registry.example/hello:1".into(), None);
    let base = base.to_record();
    put("valid", base.clone()).await;
    assert_eq!(e.client.fetch_bundle(&e.cache, &at("valid"), None).await.unwrap().manifest.runtime, Runtime::Oci);

    // Wrong types: routes as a string, a limit as a string.
    let mut wrong = base.clone();
    wrong["routes"] = json!("GET /hello");
    put("wrong", wrong).await;
    let err = e.client.fetch_bundle(&e.cache, &at("wrong"), None).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidRecord { source, .. } if source.names("routes")), "{err}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("is not a valid bundle record: ") && chain.contains("`routes`: invalid type: string"), "{chain}");
    assert_eq!(chain.matches("invalid type").count(), 1, "said once: {chain}");

    // Huge: over the client's record limit (256 KiB here).
    let mut huge = base.clone();
    huge["description"] = json!("x".repeat(300 << 10));
    put("huge", huge).await;
    let err = e.client.fetch_bundle(&e.cache, &at("huge"), None).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");

    // Deeply nested: refused before parsing.
    let mut deep = json!(1);
    for _ in 0..64 {
        deep = json!([deep]);
    }
    let mut nested = base.clone();
    nested["permissions"]["extra"] = deep;
    put("nested", nested).await;
    let err = e.client.fetch_bundle(&e.cache, &at("nested"), None).await.unwrap_err();
    assert!(matches!(err, Error::TooDeep { .. }), "{err}");

    // A record that is not a bundle, and one that does not exist.
    let err = e.client.fetch_bundle(&e.cache, &AtUri::parse("at://alice.test/app.bsky.feed.post/x").unwrap(), None).await.unwrap_err();
    assert!(matches!(err, Error::NotABundle { .. }), "{err}");
    let err = e.client.fetch_bundle(&e.cache, &at("missing"), None).await.unwrap_err();
    assert!(matches!(err, Error::RecordNotFound { .. }), "{err}");

    // The PDS serves other bytes for the code's CID (its blob store tampered with): refused,
    // and nothing cached.
    let code = b"\0asm\x01\0\0\0 the real code".to_vec();
    e.client.publish_bundle(&session, &hello("1.0.0"), Some((code.clone(), "application/wasm"))).await.unwrap();
    let cid = BlobCid::of(&code);
    let stored = e.pds.blob_path(&e.alice.did, &cid.to_string());
    assert!(stored.exists(), "{}", stored.display());
    std::fs::write(&stored, b"\0asm\x01\0\0\0 the evil code").unwrap();
    let err = e.client.fetch_bundle(&e.cache, &at("hello"), None).await.unwrap_err();
    assert!(matches!(err, Error::CidMismatch { .. }), "{err}");
    assert!(!e.cache.path(&cid).exists());
}
