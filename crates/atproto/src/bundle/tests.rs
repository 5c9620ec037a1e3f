//! The manifest's parser: valid records round-trip, each kind of bad field is named, the Rust
//! type and the published lexicon list the same fields, and at.functions.metadata records read.

use proptest::prelude::*;
use serde_json::json;

use super::functions::{FunctionRecord, Mode};
use super::*;
use crate::BlobCid;

fn wasm_blob() -> serde_json::Value {
    json!({"$type": "blob", "ref": {"$link": BlobCid::of(b"module").to_string()}, "mimeType": "application/wasm", "size": 6})
}

fn hello() -> serde_json::Value {
    json!({
        "$type": "dev.atoll.bundle",
        "name": "hello",
        "version": "1.0.0",
        "runtime": "wasm",
        "entry": "handle",
        "code": wasm_blob(),
        "routes": [{"method": "GET", "path": "/hello", "handler": "hello"}, {"method": "*", "path": "/users/:id/*", "handler": "user"}],
        "permissions": {"net": ["api.example.com:443", "*.example.org", "[::1]:8080"], "read": ["/data"], "write": ["/tmp/out"], "env": ["GREETING"]},
        "limits": {"memoryMb": 64, "cpuMsPerRequest": 50, "wallTimeoutMs": 1000, "maxConcurrent": 8},
        "cron": [{"schedule": "*/5 * * * *", "handler": "tick"}, {"schedule": "@daily", "handler": "tick"}],
        "secrets": [{"name": "API_KEY"}],
        "isolation": "auto"
    })
}

fn problems(v: serde_json::Value) -> ManifestError {
    Manifest::from_record(&v).expect_err("must be refused")
}

#[test]
fn a_full_record_parses_and_round_trips() {
    let m = Manifest::from_record(&hello()).unwrap();
    assert_eq!((m.name.as_str(), m.runtime, m.isolation), ("hello", Runtime::Wasm, Isolation::Auto));
    assert_eq!(m.code.as_ref().unwrap().cid, BlobCid::of(b"module"));
    assert_eq!(m.routes[1].method, Method::Any);
    assert_eq!(m.limits.memory_mb, Some(64));
    assert!(m.secrets[0].required, "secrets are required unless they say not");
    assert_eq!(Manifest::from_record(&m.to_record()).unwrap(), m);
    assert_eq!(m.to_record()["$type"], NSID);
}

#[test]
fn each_bad_field_is_named() {
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("name", json!("Hello World"), "DNS label"),
        ("version", json!("one"), "semantic version"),
        ("runtime", json!("python"), "unknown variant `python`"),
        ("entry", json!("has space"), "without spaces"),
        ("code", json!({"nope": 1}), "not a blob reference"),
        ("routes", json!([]), "at least one route"),
        ("isolation", json!("chroot"), "unknown variant"),
        ("limits", json!({"memoryMb": 0}), "between 1 and 65536"),
        ("limits", json!({"memoryMb": "lots"}), "invalid type"),
        ("permissions", json!({"net": ["bad host!"]}), "not a host name"),
        ("permissions", json!({"read": ["relative/path"]}), "absolute path"),
        ("permissions", json!({"write": ["/a/../etc"]}), "normal"),
        ("permissions", json!({"env": ["1BAD"]}), "environment variable"),
        ("cron", json!([{"schedule": "61 * * * *", "handler": "t"}]), "61"),
        ("cron", json!([{"schedule": "* * * * * * *", "handler": "t"}]), "five fields"),
        ("secrets", json!([{"name": "GREETING"}]), "also in permissions.env"),
        ("secrets", json!([{"name": "K", "sealed": [{"recipient": "short", "ciphertext": "x"}]}]), "X25519"),
        ("secrets", json!([{"name": "LD_PRELOAD"}]), "reserved"),
        ("secrets", json!([{"name": "deno_v8_flags"}]), "reserved"),
        ("permissions", json!({"env": ["HTTPS_PROXY"]}), "reserved"),
        ("unknown", json!(1), "unknown field `unknown`"),
    ];
    let field_of = |e: &ManifestError| e.problems.iter().map(|p| p.field.clone()).collect::<Vec<_>>();
    for (key, value, says) in cases {
        let mut v = hello();
        v[key] = value.clone();
        let e = problems(v);
        let text = e.to_string();
        assert!(text.contains(says), "{key} = {value}: {text}");
        assert!(field_of(&e).iter().any(|f| f.starts_with(key) || (key == "unknown" && f == ".")), "{key} = {value}: {:?}", e.problems);
    }
    // Several problems at once are all reported, each with its path.
    let mut v = hello();
    v["routes"] = json!([{"method": "GET", "path": "nope", "handler": "h"}, {"method": "GET", "path": "/a/*/b", "handler": "1x"}]);
    v["limits"] = json!({"wallTimeoutMs": 0});
    let e = problems(v);
    for f in ["routes[0].path", "routes[1].path", "routes[1].handler", "limits.wallTimeoutMs"] {
        assert!(e.names(f), "{f}: {e}");
    }
    expect_test::expect!["invalid dev.atoll.bundle record: `routes[0].path`: `nope` must start with /; `routes[1].path`: `/a/*/b`: * may only be the last segment; `routes[1].handler`: `1x` is not a handler name (letters, digits, _ $ . -, at most 128); `limits.wallTimeoutMs`: is 0; it must be between 1 and 3600000"].assert_eq(&e.to_string());
    let mut v = hello();
    v["limits"]["memoryMb"] = json!("lots");
    expect_test::expect![[r#"invalid dev.atoll.bundle record: `limits.memoryMb`: invalid type: string "lots", expected u64"#]]
        .assert_eq(&problems(v).to_string());
}

#[test]
fn wrong_types_deep_in_the_record_name_their_path() {
    let mut v = hello();
    v["routes"][1]["method"] = json!(7);
    let e = problems(v);
    assert_eq!(e.problems[0].field, "routes[1].method", "{e}");
    let mut v = hello();
    v["permissions"]["net"] = json!("api.example.com");
    assert_eq!(problems(v).problems[0].field, "permissions.net");
    assert!(problems(json!([1, 2])).to_string().contains("must be an object"));
    let mut v = hello();
    v["$type"] = json!("app.bsky.feed.post");
    assert!(problems(v).names("$type"));
}

#[test]
fn runtimes_and_their_code_agree() {
    let mut oci = hello();
    oci["runtime"] = json!("oci");
    oci["entry"] = json!("registry.example/hello:1");
    assert!(problems(oci.clone()).names("code"), "oci names an image, not code");
    oci.as_object_mut().unwrap().remove("code");
    assert_eq!(Manifest::from_record(&oci).unwrap().runtime, Runtime::Oci);
    let mut deno = hello();
    deno["runtime"] = json!("deno");
    assert!(problems(deno.clone()).names("code.mimeType"));
    deno["code"]["mimeType"] = json!("application/typescript");
    deno["entry"] = json!("main.ts");
    Manifest::from_record(&deno).unwrap();
    deno["entry"] = json!("../escape.ts");
    assert!(problems(deno).names("entry"));
    let mut wasm = hello();
    wasm.as_object_mut().unwrap().remove("code");
    assert!(problems(wasm).to_string().contains("required for the wasm runtime"));
}

#[test]
fn path_patterns() {
    for ok in ["/", "/hello", "/hello/", "/a/:id", "/a/:id/b/:other", "/static/*", "/v1/x.json"] {
        validate::path_pattern(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, says) in [
        ("hello", "start with /"),
        ("/a//b", "empty segment"),
        ("/*/x", "last segment"),
        ("/:id/:id", "twice"),
        ("/a/../b", "`..`"),
        ("/a b", "not allowed"),
        ("/:", "needs a name"),
    ] {
        let e = validate::path_pattern(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn the_lexicon_and_the_type_list_the_same_fields() {
    let lexicon: serde_json::Value = serde_json::from_str(LEXICON).unwrap();
    assert_eq!(lexicon["id"], NSID);
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let record = &lexicon["defs"]["main"]["record"];
    // A record with every field set, serialised by the type, has exactly the lexicon's fields.
    let mut full = Manifest::from_record(&hello()).unwrap();
    full.description = Some("d".into());
    full.previous_code = vec![full.code.clone().unwrap()];
    full.created_at = Some("2026-01-01T00:00:00Z".into());
    // oci's (not valid with wasm; to_record does not check).
    full.command = vec!["serve".into()];
    full.port = Some(9000);
    let mut ours = full.to_record();
    ours.as_object_mut().unwrap().remove("$type");
    assert_eq!(keys(&ours), keys(&record["properties"]));
    let required: Vec<String> = serde_json::from_value(record["required"].clone()).unwrap();
    for r in &required {
        let mut v = hello();
        v.as_object_mut().unwrap().remove(r);
        assert!(Manifest::from_record(&v).is_err(), "{r} is required by the lexicon");
    }
    for (def, value) in
        [("route", &ours["routes"][0]), ("permissions", &ours["permissions"]), ("limits", &ours["limits"]), ("cronJob", &ours["cron"][0])]
    {
        assert_eq!(keys(value), keys(&lexicon["defs"][def]["properties"]), "{def}");
    }
    let runtimes: Vec<String> = serde_json::from_value(record["properties"]["runtime"]["knownValues"].clone()).unwrap();
    for r in runtimes {
        assert!(serde_json::from_value::<Runtime>(json!(r)).is_ok(), "{r}");
    }
}

#[test]
fn at_functions_records_become_one_route_wasm_bundles() {
    let record = json!({
        "$type": "at.functions.metadata",
        "name": "Echo function",
        "version": "0.1.0",
        "mode": "pure-v1",
        "code": wasm_blob(),
        "entrypoint": "run",
        "inputEncoding": "application/json",
        "outputEncoding": "application/json",
        "maxMemoryMb": 16,
        "public": true,
        "inputSchema": {"type": "object"},
        "somethingNewer": 1
    });
    let f = FunctionRecord::from_record(&record).unwrap();
    assert_eq!((f.mode, f.max_memory_mb, f.max_duration_ms), (Mode::PureV1, Some(16), None));
    let m = f.to_manifest("echo").unwrap();
    assert_eq!((m.runtime, m.abi, m.entry.as_str()), (Runtime::Wasm, Some(Mode::PureV1), "run"));
    assert_eq!(m.routes, vec![Route { method: Method::Post, path: "/".into(), handler: "run".into() }]);
    assert_eq!((m.limits.memory_mb, m.limits.wall_timeout_ms), (Some(16), Some(100)));
    assert!(f.to_manifest("Echo function").unwrap_err().to_string().contains("--name"));

    for (key, value, says) in [
        ("entrypoint", json!("main"), "through `run`"),
        ("mode", json!("native-v9"), "unknown variant"),
        ("maxMemoryMb", json!(1024), "between 1 and 256"),
        ("maxDurationMs", json!(0), "between 1 and 5000"),
        ("inputEncoding", json!("text/plain"), "application/json"),
        ("public", json!("yes"), "invalid type"),
    ] {
        let mut v = record.clone();
        v[key] = value.clone();
        let e = FunctionRecord::from_record(&v).unwrap_err();
        assert!(e.names(key) && e.to_string().contains(says), "{key} = {value}: {e}");
    }
    let mut v = record.clone();
    v["code"]["mimeType"] = json!("text/plain");
    assert!(FunctionRecord::from_record(&v).unwrap_err().names("code.mimeType"));
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
}

fn manifest() -> impl Strategy<Value = Manifest> {
    let route = (
        prop_oneof![Just(Method::Get), Just(Method::Post), Just(Method::Any)],
        prop::collection::vec(prop_oneof![label(), label().prop_map(|l| format!(":p{l}").replace('-', "_"))], 0..4),
        "[a-z_][a-z0-9_]{0,8}",
    )
        .prop_map(|(method, segs, handler)| {
            // Parameter names must be unique in a path: number them.
            let segs: Vec<String> =
                segs.into_iter().enumerate().map(|(i, s)| if s.starts_with(':') { format!("{s}{i}") } else { s }).collect();
            Route { method, path: format!("/{}", segs.join("/")), handler }
        });
    (
        label(),
        (0u64..20, 0u64..20, 0u64..20),
        prop::collection::vec(route, 1..5),
        prop::collection::vec(
            prop_oneof![label().prop_map(|l| format!("{l}.example")), label().prop_map(|l| format!("*.{l}.example:443"))],
            0..3,
        ),
        prop::collection::vec("/[a-z]{1,6}(/[a-z]{1,6}){0,2}", 0..3),
        prop::option::of(1u64..=65_536),
        prop::option::of(1u64..=3_600_000),
        prop_oneof![Just(Isolation::Auto), Just(Isolation::None), Just(Isolation::Container), Just(Isolation::Vm)],
    )
        .prop_map(|(name, (ma, mi, pa), mut routes, net, read, memory_mb, wall_timeout_ms, isolation)| {
            let mut seen = HashSet::new();
            routes.retain(|r| seen.insert((r.method, r.path.clone())));
            Manifest {
                record_type: Some(NSID.into()),
                name,
                version: format!("{ma}.{mi}.{pa}"),
                description: None,
                runtime: Runtime::Wasm,
                entry: "handle".into(),
                code: Some(Blob { cid: BlobCid::of(b"m"), mime_type: "application/wasm".into(), size: 1 }),
                previous_code: vec![],
                routes,
                command: Vec::new(),
                port: None,
                permissions: Permissions { net, read, write: vec![], env: vec![] },
                limits: Limits { memory_mb, wall_timeout_ms, ..Limits::default() },
                cron: vec![],
                secrets: vec![],
                isolation,
                created_at: None,
                abi: None,
            }
        })
}

use std::collections::HashSet;

proptest! {
    #[test]
    fn valid_manifests_round_trip_through_their_record(m in manifest()) {
        let record = m.to_record();
        let back = Manifest::from_record(&record);
        prop_assert_eq!(back.as_ref(), Ok(&m), "{}", record);
    }

    #[test]
    fn a_limit_out_of_range_is_always_named(m in manifest(), which in 0usize..4, zero in any::<bool>()) {
        let mut record = m.to_record();
        let (key, max) = [("memoryMb", 65_536u64), ("cpuMsPerRequest", 3_600_000), ("wallTimeoutMs", 3_600_000), ("maxConcurrent", 100_000)][which];
        record["limits"][key] = json!(if zero { 0 } else { max + 1 });
        let e = Manifest::from_record(&record).unwrap_err();
        let field = format!("limits.{key}");
        prop_assert!(e.names(&field), "{}", e);
    }

    #[test]
    fn arbitrary_json_never_panics_the_parser(v in any_json()) {
        let _ = Manifest::from_record(&v);
        let _ = FunctionRecord::from_record(&v);
    }
}

fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z/:*@ .]{0,10}".prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("version".to_owned()),
                    Just("runtime".to_owned()),
                    Just("routes".to_owned()),
                    Just("code".to_owned()),
                    Just("limits".to_owned()),
                    Just("mode".to_owned()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
