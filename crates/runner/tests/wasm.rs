//! The wasm runtime end to end, in-process: real wasmtime running the WAT modules in
//! `tests/wat/` and `examples/bundles/hello-wasm`. Each limit is hit for real (a loop, a
//! growing memory, a sleep in a host call, a flood of output) and the next request still
//! works; denied files and env are checked from inside the module.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_atproto::BlobCid;
use atoll_atproto::bundle::Manifest;
use atoll_atproto::bundle::functions::FunctionRecord;
use atoll_runner::{Grants, LoadError, Policy, RunError, Stderr, Usage, WasmBundle, WasmRuntime};
use bytes::Bytes;
use http::{Request, StatusCode};
use serde_json::{Value, json};

fn wat(name: &str) -> Bytes {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wat").join(name);
    Bytes::from(wat::parse_file(path).unwrap())
}

fn manifest(code: &[u8], extra: Value) -> Manifest {
    let mut record = json!({
        "name": "t", "version": "1.0.0", "runtime": "wasm", "entry": "_start",
        "code": {"$type": "blob", "ref": {"$link": BlobCid::of(code).to_string()}, "mimeType": "application/wasm", "size": code.len()},
        "routes": [{"method": "*", "path": "/:handler/*", "handler": "_start"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        record[k] = v.clone();
    }
    Manifest::from_record(&record).unwrap()
}

/// Routes `/<export>` to each export named.
fn routes(handlers: &[&str]) -> Value {
    handlers.iter().map(|h| json!({"method": "*", "path": format!("/{h}"), "handler": h})).collect()
}

async fn load_with(policy: Policy, code: Bytes, m: &Manifest, grants: Grants) -> Result<WasmBundle, LoadError> {
    let rt = WasmRuntime::new(policy).unwrap();
    rt.load(&BlobCid::of(&code).to_string(), code, m, grants).await
}

async fn load(code: Bytes, extra: Value) -> WasmBundle {
    let m = manifest(&code, extra);
    load_with(Policy::default(), code, &m, Grants::default()).await.unwrap()
}

fn get(path: &str) -> Request<Bytes> {
    Request::get(path).header("host", "t.example").body(Bytes::new()).unwrap()
}

async fn text(b: &WasmBundle, path: &str) -> String {
    let r = b.handle(get(path)).await.unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    String::from_utf8(r.into_body().to_vec()).unwrap()
}

fn env_lines(body: &str) -> BTreeMap<String, String> {
    body.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

#[tokio::test]
async fn the_hello_wasm_example_answers_get_hello() {
    let dir = atoll_runner::dir::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bundles/hello-wasm")).unwrap();
    let (code, _) = dir.code.unwrap();
    let b = load_with(Policy::default(), Bytes::from(code), &dir.manifest, Grants::default()).await.unwrap();
    let r = b.handle(get("/hello")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert!(r.extensions().get::<Usage>().is_some());
    assert_eq!(r.into_body(), "hello from wasm");
    let head = b.handle(Request::head("/hello").body(Bytes::new()).unwrap()).await.unwrap();
    assert_eq!((head.status(), head.body().len()), (StatusCode::OK, 0));
    let e = b.handle(get("/nope")).await.unwrap_err();
    assert_eq!(e.status(), StatusCode::NOT_FOUND, "{e}");
    let e = b.handle(Request::post("/hello").body(Bytes::new()).unwrap()).await.unwrap_err();
    assert_eq!(e.status(), StatusCode::METHOD_NOT_ALLOWED, "{e}");
}

#[tokio::test]
async fn route_params_and_cgi_variables_reach_the_module() {
    let code = wat("wagi.wat");
    let b = load(code, json!({"routes": [{"method": "POST", "path": "/users/:id/*", "handler": "env"}]})).await;
    let req = Request::post("/users/al%20ice/files/a.txt?x=1&y=2")
        .header("host", "t.example:8080")
        .header("x-test", "yes")
        .header("authorization", "Bearer not-for-the-bundle")
        .extension(atoll_runner::ClientAddr("192.0.2.7:5555".parse().unwrap()))
        .body(Bytes::from_static(b"12345"))
        .unwrap();
    let r = b.handle(req).await.unwrap();
    let env = env_lines(std::str::from_utf8(r.body()).unwrap());
    for (k, v) in [
        ("X_PARAM_id", "al ice"),
        ("PATH_INFO", "/files/a.txt"),
        ("SCRIPT_NAME", "/users/al%20ice"),
        ("QUERY_STRING", "x=1&y=2"),
        ("REQUEST_METHOD", "POST"),
        ("CONTENT_LENGTH", "5"),
        ("SERVER_NAME", "t.example"),
        ("SERVER_PORT", "8080"),
        ("HTTP_X_TEST", "yes"),
        ("X_MATCHED_ROUTE", "/users/:id/*"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REMOTE_ADDR", "192.0.2.7"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in {env:?}");
    }
    assert!(!env.contains_key("HTTP_AUTHORIZATION"));
    // The body arrives on stdin.
    let b = load(wat("wagi.wat"), json!({"routes": routes(&["echo"])})).await;
    let r = b.handle(Request::post("/echo").body(Bytes::from(vec![b'z'; 100_000])).unwrap()).await.unwrap();
    assert_eq!(r.body().len(), 100_000);
}

#[tokio::test]
async fn only_declared_env_names_and_secrets_reach_the_module() {
    let code = wat("wagi.wat");
    let m = manifest(
        &code,
        json!({
            "routes": routes(&["env"]),
            "permissions": {"env": ["GREETING", "HTTP_X_OVERRIDE"]},
            "secrets": [{"name": "TOKEN"}, {"name": "OPTIONAL", "required": false}],
        }),
    );
    let grants = Grants {
        data_dir: None,
        env: [("GREETING", "hi"), ("UNDECLARED", "no"), ("HTTP_X_OVERRIDE", "bundle")].map(|(k, v)| (k.into(), v.into())).into(),
        secrets: [("TOKEN".to_owned(), "s3cret".to_owned())].into(),
    };
    let b = load_with(Policy::default(), code.clone(), &m, grants.clone()).await.unwrap();
    let req = Request::get("/env").header("x-override", "client").body(Bytes::new()).unwrap();
    let env = env_lines(std::str::from_utf8(b.handle(req).await.unwrap().body()).unwrap());
    assert_eq!(env.get("GREETING").map(String::as_str), Some("hi"));
    assert_eq!(env.get("TOKEN").map(String::as_str), Some("s3cret"));
    assert_eq!(env.get("HTTP_X_OVERRIDE").map(String::as_str), Some("bundle"), "a request header cannot override the bundle's env");
    for absent in ["UNDECLARED", "OPTIONAL", "PATH", "HOME", "CARGO_MANIFEST_DIR"] {
        assert!(!env.contains_key(absent), "{absent} leaked: {env:?}");
    }
    assert!(!format!("{b:?}{grants:?}").contains("s3cret"), "Debug shows no secret values");

    let undeclared = Grants { secrets: [("OTHER".to_owned(), "x".to_owned())].into(), ..grants.clone() };
    let e = load_with(Policy::default(), code.clone(), &m, undeclared).await.unwrap_err();
    assert!(matches!(&e, LoadError::UndeclaredSecret(n) if n == "OTHER"), "{e}");
    let e = load_with(Policy::default(), code, &m, Grants::default()).await.unwrap_err();
    assert!(matches!(&e, LoadError::MissingSecret(n) if n == "TOKEN"), "{e}");
}

#[tokio::test]
async fn files_outside_the_declared_directories_are_denied() {
    let code = wat("wagi.wat");
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir(data.path().join("in")).unwrap();
    std::fs::write(data.path().join("in/data.txt"), "declared data").unwrap();
    std::fs::write(data.path().join("outside.txt"), "outside").unwrap();
    let handlers = ["read3", "escape", "absolute", "write3", "write4"];
    let m = manifest(&code, json!({"routes": routes(&handlers), "permissions": {"read": ["/in"], "write": ["/out"]}}));
    let grants = Grants { data_dir: Some(data.path().to_owned()), ..Grants::default() };
    let b = load_with(Policy::default(), code.clone(), &m, grants).await.unwrap();
    assert_eq!(text(&b, "/read3").await, "declared data");
    // EPERM (63): cap-std refuses to leave the directory, by `..` or by an absolute path.
    let escape = text(&b, "/escape").await;
    assert_eq!(escape, "errno=63");
    let absolute = text(&b, "/absolute").await;
    assert_eq!(absolute, "errno=63");
    let write_ro = text(&b, "/write3").await;
    assert!(write_ro.starts_with("errno="), "writing into a read directory: {write_ro}");
    assert!(!data.path().join("in/out.txt").exists());
    assert_eq!(text(&b, "/write4").await, "ok");
    assert_eq!(std::fs::read_to_string(data.path().join("out/out.txt")).unwrap(), "ok");

    // Without a declared directory there is no fd 3 at all.
    let b = load(code.clone(), json!({"routes": routes(&["read3"])})).await;
    assert_eq!(text(&b, "/read3").await, "errno=8");
    // Declaring files without a data directory is refused at load.
    let e = load_with(Policy::default(), code, &m, Grants::default()).await.unwrap_err();
    assert!(matches!(e, LoadError::NoDataDir(_)), "{e}");
}

#[tokio::test]
async fn a_module_that_loops_forever_is_cut_by_its_cpu_limit_and_the_next_request_works() {
    let b =
        load(wat("wagi.wat"), json!({"routes": routes(&["spin", "_start"]), "limits": {"cpuMsPerRequest": 50, "wallTimeoutMs": 10000}}))
            .await;
    let started = Instant::now();
    let e = b.handle(get("/spin")).await.unwrap_err();
    assert!(matches!(e, RunError::CpuLimit { limit_ms: 50 }), "{e}");
    assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(3), "cut after {:?}", started.elapsed());
    assert_eq!(text(&b, "/_start").await, "hello from wasm");
}

#[tokio::test]
async fn wall_timeouts_cut_wasm_code_and_host_calls() {
    let b = load(
        wat("wagi.wat"),
        json!({"routes": routes(&["spin", "sleep", "_start"]), "limits": {"cpuMsPerRequest": 60000, "wallTimeoutMs": 200}}),
    )
    .await;
    for path in ["/sleep", "/spin"] {
        let started = Instant::now();
        let e = b.handle(get(path)).await.unwrap_err();
        assert!(matches!(e, RunError::WallTimeout { limit_ms: 200 }), "{path}: {e}");
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(3), "{path}: cut after {took:?}");
        assert_eq!(text(&b, "/_start").await, "hello from wasm");
    }
}

#[tokio::test]
async fn allocating_past_the_memory_limit_fails_cleanly() {
    let b = load(wat("wagi.wat"), json!({"routes": routes(&["grow", "_start"]), "limits": {"memoryMb": 16}})).await;
    let e = b.handle(get("/grow")).await.unwrap_err();
    assert!(matches!(e, RunError::MemoryLimit { limit_mb: 16, wanted_mb: 17.., .. }), "{e}");
    assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(text(&b, "/_start").await, "hello from wasm");
}

#[tokio::test]
async fn oversized_output_fails_and_the_next_request_works() {
    let code = wat("wagi.wat");
    let m = manifest(&code, json!({"routes": routes(&["flood", "_start"])}));
    let policy = Policy { max_output_bytes: 1 << 20, ..Policy::default() };
    let b = load_with(policy, code, &m, Grants::default()).await.unwrap();
    let e = b.handle(get("/flood")).await.unwrap_err();
    assert!(matches!(e, RunError::OutputTooLarge { limit: 1048576 }), "{e}");
    assert_eq!(text(&b, "/_start").await, "hello from wasm");
    // An oversized request body is refused before the module runs.
    let big = Request::post("/_start").body(Bytes::from(vec![0; (16 << 20) + 1])).unwrap();
    assert!(matches!(b.handle(big).await.unwrap_err(), RunError::BodyTooLarge { .. }));
}

#[tokio::test]
async fn traps_exits_and_bad_header_blocks_are_errors_that_name_them() {
    let handlers = ["badheader", "noheader", "status", "trap", "exit3", "exit0", "_start"];
    let b = load(wat("wagi.wat"), json!({"routes": routes(&handlers)})).await;
    let e = b.handle(get("/badheader")).await.unwrap_err();
    assert_eq!(e.to_string(), "the bundle's response is not a CGI response: header line 1 `this is not a header` is not `Name: value`");
    let e = b.handle(get("/noheader")).await.unwrap_err();
    assert!(e.to_string().contains("no blank line"), "{e}");
    let r = b.handle(get("/status")).await.unwrap();
    assert_eq!((r.status(), r.body().as_ref()), (StatusCode::NOT_FOUND, &b"nope"[..]));
    assert_eq!(r.extensions().get::<Stderr>().map(|s| s.0.len()), Some(0));
    let e = b.handle(get("/trap")).await.unwrap_err();
    assert!(matches!(&e, RunError::Trap { trap, stderr } if trap.contains("unreachable") && stderr.contains("oops")), "{e}");
    assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    let e = b.handle(get("/exit3")).await.unwrap_err();
    assert!(matches!(e, RunError::Exit { code: 3, .. }), "{e}");
    assert_eq!(text(&b, "/exit0").await, "ok");
    assert_eq!(text(&b, "/_start").await, "hello from wasm");
}

#[tokio::test]
async fn hostile_modules_are_refused_at_load_with_clear_errors() {
    let hello = json!({"routes": routes(&["_start"])});
    let cases: Vec<(&str, Bytes, Value, &str)> = vec![
        ("garbage", Bytes::from_static(b"\0asm\x01\0\0\0\xff\xff garbage"), hello.clone(), "not a WebAssembly module"),
        ("text garbage", Bytes::from_static(b"(module (func"), hello.clone(), "not a WebAssembly module"),
        (
            "huge memory import",
            Bytes::from(wat::parse_str(r#"(module (import "env" "memory" (memory 65536)) (func (export "_start")))"#).unwrap()),
            hello.clone(),
            "imports what this runtime does not provide",
        ),
        (
            "huge memory",
            Bytes::from(wat::parse_str(r#"(module (memory 65536) (func (export "_start")))"#).unwrap()),
            hello.clone(),
            "needs 4096 MiB of memory to start; its limit is 64 MiB",
        ),
        (
            "trapping start",
            Bytes::from(wat::parse_str(r#"(module (func $s unreachable) (start $s) (func (export "_start")))"#).unwrap()),
            hello.clone(),
            "start function failed: the bundle trapped: wasm trap: wasm `unreachable` instruction executed",
        ),
        (
            "looping start",
            Bytes::from(wat::parse_str(r#"(module (func $s (loop (br 0))) (start $s) (func (export "_start")))"#).unwrap()),
            json!({"routes": routes(&["_start"]), "limits": {"cpuMsPerRequest": 20}}),
            "start function failed: the request used more than its 20 ms of CPU time",
        ),
        (
            "missing handler",
            wat("wagi.wat"),
            json!({"routes": routes(&["nothere"])}),
            "routes[0].handler `nothere` is not a function the module exports",
        ),
        ("handler with params", wat("wagi.wat"), json!({"routes": routes(&["notahandler"])}), "export `notahandler` has type (i32) -> ()"),
    ];
    for (what, code, extra, want) in cases {
        let m = manifest(&code, extra);
        let e = load_with(Policy::default(), code, &m, Grants::default()).await.unwrap_err();
        assert!(e.to_string().contains(want), "{what}: {e}");
    }
    let code = wat("wagi.wat");
    let mut deno = manifest(&code, json!({}));
    deno.runtime = atoll_atproto::bundle::Runtime::Deno;
    let e = load_with(Policy::default(), code, &deno, Grants::default()).await.unwrap_err();
    assert!(matches!(e, LoadError::NotWasm { runtime: "deno", .. }), "{e}");
}

/// The daemon awaits `handle` inside axum handlers and shares bundles between tasks.
#[test]
fn bundles_and_their_requests_can_move_between_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let rt = tokio::runtime::Runtime::new().unwrap();
    let b = rt.block_on(load(wat("wagi.wat"), json!({"routes": routes(&["_start"])})));
    send_sync(&b);
    send(b.handle(get("/_start")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_each_get_their_own_instance() {
    let b = Arc::new(load(wat("wagi.wat"), json!({"routes": routes(&["echo", "spin"]), "limits": {"cpuMsPerRequest": 100}})).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let b = b.clone();
        tasks.spawn(async move {
            if i % 16 == 0 {
                let e = b.handle(get("/spin")).await.unwrap_err();
                assert!(matches!(e, RunError::CpuLimit { .. }), "{e}");
                return;
            }
            let body = format!("request {i}");
            let r = b.handle(Request::post("/echo").body(Bytes::from(body.clone())).unwrap()).await.unwrap();
            assert_eq!(r.into_body(), body);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

#[tokio::test]
async fn at_functions_pure_v1_take_and_give_json() {
    let code = wat("pure.wat");
    let record = |mode: &str| {
        json!({
            "name": "Echo function", "version": "0.1.0", "mode": mode, "entrypoint": "run",
            "code": {"$type": "blob", "ref": {"$link": BlobCid::of(&code).to_string()}, "mimeType": "application/wasm", "size": code.len()},
            "maxMemoryMb": 16, "maxDurationMs": 100,
        })
    };
    let m = FunctionRecord::from_record(&record("pure-v1")).unwrap().to_manifest("echo").unwrap();
    let b = load_with(Policy::default(), code.clone(), &m, Grants::default()).await.unwrap();
    let r = b.handle(Request::post("/").body(Bytes::from_static(br#"{"a":[1,2]}"#)).unwrap()).await.unwrap();
    assert_eq!((r.status(), r.headers()["content-type"].to_str().unwrap()), (StatusCode::OK, "application/json"));
    assert_eq!(serde_json::from_slice::<Value>(r.body()).unwrap(), json!({"got": {"a": [1, 2]}}));
    let e = b.handle(Request::post("/").body(Bytes::from_static(b"not json")).unwrap()).await.unwrap_err();
    assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");

    let host = FunctionRecord::from_record(&record("host-v1")).unwrap().to_manifest("echo").unwrap();
    let e = load_with(Policy::default(), code, &host, Grants::default()).await.unwrap_err();
    assert!(e.to_string().contains("host-v1 functions import AT Protocol host calls"), "{e}");
    let wagi = wat("wagi.wat");
    let mut with_imports = m.clone();
    with_imports.code = manifest(&wagi, json!({})).code;
    let e = load_with(Policy::default(), wagi, &with_imports, Grants::default()).await.unwrap_err();
    assert!(matches!(e, LoadError::PureImports { .. }), "{e}");

    // Hostile pure-v1 functions: pointers and lengths outside their memory or past the cap.
    let hostile = |alloc: &str, run: &str| {
        wat::parse_str(format!(
            r#"(module (memory (export "memory") 1)
                 (func (export "alloc") (param i32) (result i32) {alloc})
                 (func (export "run") (param i32 i32) (result i64) {run}))"#
        ))
        .unwrap()
    };
    let cases = [
        (hostile("i32.const 65530", "i64.const 0"), "`alloc(11)` returned 65530, outside the function's memory"),
        (hostile("i32.const 0", "i64.const 0x0001000000000010"), "(16 bytes at 65536) lies outside the function's memory"),
        (hostile("i32.const 0", "i64.const -1"), "more than 16777216 bytes of output"),
        (hostile("i32.const 0", "i64.const 4"), "is not JSON"),
    ];
    for (code, want) in cases {
        let mut pm = m.clone();
        pm.code = manifest(&code, json!({})).code;
        let b = load_with(Policy::default(), Bytes::from(code), &pm, Grants::default()).await.unwrap();
        let e = b.handle(Request::post("/").body(Bytes::from_static(br#"{"a":[1,2]}"#)).unwrap()).await.unwrap_err();
        assert!(e.to_string().contains(want), "{want}: {e}");
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    }
}
