//! The deno runtime end to end with the real Deno binary (`scripts/install-deno.sh`; a
//! missing one fails these tests) as plain processes (`ProcessLauncher`): the hello-deno
//! example, `tests/deno/handlers.ts` and small modules written here. Each permission is
//! tried from inside the handler and each limit hit for real (a loop, a heap past its limit,
//! an exit), and the next request still answers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_atproto::BlobCid;
use atoll_atproto::bundle::Manifest;
use atoll_runner::{Denied, DenoBundle, DenoRuntime, Grants, LoadError, Policy, ProcessLauncher, RunError};
use bytes::Bytes;
use http::{Request, StatusCode};
use serde_json::{Value, json};

fn deno() -> PathBuf {
    atoll_runner::deno::locate().unwrap_or_else(|e| panic!("{e} (tests never skip for a missing tool)"))
}

fn runtime() -> DenoRuntime {
    DenoRuntime::new(Policy::default(), deno(), Arc::new(ProcessLauncher))
}

fn handlers() -> Bytes {
    Bytes::from(std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deno/handlers.ts")).unwrap())
}

fn manifest(code: &[u8], extra: Value) -> Manifest {
    let mut record = json!({
        "name": "t", "version": "1.0.0", "runtime": "deno", "entry": "main.ts",
        "code": {"$type": "blob", "ref": {"$link": BlobCid::of(code).to_string()}, "mimeType": "application/typescript", "size": code.len()},
        "routes": [{"method": "GET", "path": "/hello", "handler": "hello"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        record[k] = v.clone();
    }
    Manifest::from_record(&record).unwrap()
}

/// Routes `*` `/<handler>` to each handler named.
fn routes(handlers: &[&str]) -> Value {
    handlers.iter().map(|h| json!({"method": "*", "path": format!("/{h}"), "handler": h})).collect()
}

/// A loaded bundle and the directory holding its work directory.
struct Loaded {
    bundle: DenoBundle,
    dir: tempfile::TempDir,
}

async fn load_with(code: Bytes, m: &Manifest, grants: Grants) -> Result<Loaded, LoadError> {
    let dir = tempfile::tempdir().unwrap();
    let bundle = runtime().load(&BlobCid::of(&code).to_string(), code, m, grants, &dir.path().join("work")).await?;
    Ok(Loaded { bundle, dir })
}

async fn load(extra: Value) -> Loaded {
    let code = handlers();
    let m = manifest(&code, extra);
    load_with(code, &m, Grants::default()).await.unwrap()
}

fn get(path: &str) -> Request<Bytes> {
    Request::get(path).header("host", "t.example").body(Bytes::new()).unwrap()
}

async fn text(b: &DenoBundle, path: &str) -> (StatusCode, String) {
    let r = b.handle(get(path)).await.unwrap_or_else(|e| panic!("{path}: {e}"));
    (r.status(), String::from_utf8(r.into_body().to_vec()).unwrap())
}

async fn ok(b: &DenoBundle, path: &str) -> String {
    let (status, body) = text(b, path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

#[tokio::test]
async fn the_hello_deno_example_answers_get_hello() {
    let dir = atoll_runner::dir::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bundles/hello-deno")).unwrap();
    let (code, mime) = dir.code.unwrap();
    assert_eq!(mime, "application/typescript");
    let l = load_with(Bytes::from(code), &dir.manifest, Grants::default()).await.unwrap();
    let b = &l.bundle;
    assert_eq!(b.isolation(), "none");
    let r = b.handle(get("/hello")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.into_body(), "hello from deno");
    let head = b.handle(Request::head("/hello").body(Bytes::new()).unwrap()).await.unwrap();
    assert_eq!((head.status(), head.body().len()), (StatusCode::OK, 0));
    let e = b.handle(get("/nope")).await.unwrap_err();
    assert_eq!(e.status(), StatusCode::NOT_FOUND, "{e}");
    let e = b.handle(Request::post("/hello").body(Bytes::new()).unwrap()).await.unwrap_err();
    assert_eq!(e.status(), StatusCode::METHOD_NOT_ALLOWED, "{e}");
    assert_eq!(b.instance_starts(), 1);
}

#[tokio::test]
async fn route_params_the_request_and_the_client_reach_the_handler_and_the_client_cannot_pick_it() {
    let l = load(json!({"routes": [{"method": "POST", "path": "/users/:id/files/:name", "handler": "echo"}]})).await;
    let req = Request::post("/users/al%20ice/files/r%C3%A9sum%C3%A9.txt?x=1&y=2")
        .header("host", "t.example:8080")
        .header("x-test", "yes")
        .header("x-atoll-handler", "env")
        .extension(atoll_runner::ClientAddr("192.0.2.7:5555".parse().unwrap()))
        .body(Bytes::from_static(b"12345"))
        .unwrap();
    let r = l.bundle.handle(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["params"], json!({"id": "al ice", "name": "résumé.txt"}));
    assert_eq!(v["method"], "POST");
    assert_eq!(v["url"], "http://t.example:8080/users/al%20ice/files/r%C3%A9sum%C3%A9.txt?x=1&y=2");
    assert_eq!(v["body"], "12345");
    assert_eq!(v["remoteAddr"], json!({"transport": "tcp", "hostname": "192.0.2.7", "port": 5555}));
    assert_eq!(v["headers"]["x-test"], "yes");
    let ours: Vec<&String> = v["headers"].as_object().unwrap().keys().filter(|k| k.starts_with("x-atoll-")).collect();
    assert!(ours.is_empty(), "the handler saw the runner's headers: {ours:?}");

    // The default export's fetch serves a `fetch` handler; a handler's own x-atoll-* headers
    // do not pass.
    let code = Bytes::from_static(
        b"export default { fetch(req: Request) { return new Response('default fetch ' + new URL(req.url).pathname); } };",
    );
    let m = manifest(&code, json!({"routes": [{"method": "GET", "path": "/*", "handler": "fetch"}]}));
    let d = load_with(code, &m, Grants::default()).await.unwrap();
    assert_eq!(ok(&d.bundle, "/a/b").await, "default fetch /a/b");
    let f = load(json!({"routes": routes(&["forge"])})).await;
    let r = f.bundle.handle(get("/forge")).await.unwrap();
    assert!(r.extensions().get::<Denied>().is_none());
    assert!(!r.headers().keys().any(|k| k.as_str().starts_with("x-atoll-")), "{:?}", r.headers());
}

/// A one-request HTTP server on loopback answering `upstream ok`; its address.
async fn upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client went away");
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nconnection: close\r\n\r\nupstream ok").await.unwrap();
    });
    addr
}

/// Captures the log lines of the current thread (the tests run on one).
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = Buf(buf.clone());
    let subscriber =
        tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).with_max_level(tracing::Level::INFO).finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn only_declared_hosts_are_reached_and_a_denial_is_a_logged_403() {
    let allowed = upstream().await;
    let l = load(json!({"routes": routes(&["fetchUrl", "hello"]), "permissions": {"net": [allowed.to_string()]}})).await;
    let b = &l.bundle;
    assert_eq!(ok(b, &format!("/fetchUrl?url=http://{allowed}/")).await, "fetched 200: upstream ok");

    let (logs, _guard) = capture_logs();
    for url in ["http://example.com/".to_owned(), format!("http://127.0.0.2:{}/", allowed.port())] {
        let r = b.handle(get(&format!("/fetchUrl?url={url}"))).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{url}");
        let denied = r.extensions().get::<Denied>().expect("the denial is reported").0.clone();
        assert!(denied.contains("Requires net access"), "{denied}");
        let body = String::from_utf8(r.into_body().to_vec()).unwrap();
        assert!(body.starts_with("denied: Requires net access"), "{body}");
    }
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("WARN atoll_bundles::denied") && logs.contains("denied: Requires net access to \"example.com:80\""), "{logs}");
    assert_eq!(ok(b, "/hello").await, "hello");
    assert_eq!(b.instance_starts(), 1, "a denial does not cost the instance");
}

#[tokio::test]
async fn only_declared_paths_are_read_and_written() {
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir(data.path().join("config")).unwrap();
    std::fs::write(data.path().join("config/settings.txt"), "from config").unwrap();
    let code = handlers();
    let m = manifest(
        &code,
        json!({"routes": routes(&["readFile", "writeFile", "echo"]), "permissions": {"read": ["/config"], "write": ["/cache"]}}),
    );
    let l = load_with(code, &m, Grants { data_dir: Some(data.path().to_owned()), ..Grants::default() }).await.unwrap();
    let b = &l.bundle;
    let config = data.path().join("config");
    let cache = data.path().join("cache");
    assert!(cache.is_dir(), "declared directories are made");
    let v: Value = serde_json::from_slice(b.handle(get("/echo")).await.unwrap().body()).unwrap();
    assert_eq!(v["paths"], json!({"/config": config, "/cache": cache}));

    assert_eq!(ok(b, &format!("/readFile?path={}/settings.txt", config.display())).await, "from config");
    assert_eq!(ok(b, "/readFile?path=config/settings.txt").await, "from config", "relative to the data directory");
    let w = Request::post(format!("/writeFile?path={}/out.txt", cache.display())).body(Bytes::from_static(b"kept")).unwrap();
    assert_eq!(b.handle(w).await.unwrap().status(), StatusCode::OK);
    assert_eq!(std::fs::read_to_string(cache.join("out.txt")).unwrap(), "kept");

    let outside = l.dir.path().join("secret.txt");
    std::fs::write(&outside, "not for the bundle").unwrap();
    for path in [outside.display().to_string(), "/etc/hostname".into(), format!("{}/../secret.txt", data.path().display())] {
        let (status, body) = text(b, &format!("/readFile?path={path}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.starts_with("denied: Requires read access"), "{body}");
    }
    let w = Request::post(format!("/writeFile?path={}/x.txt", config.display())).body(Bytes::from_static(b"no")).unwrap();
    let r = b.handle(w).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a read path is not writable");
    assert!(!config.join("x.txt").exists());
    // The socket the instance serves on is not the bundle's to touch.
    let sock = l.dir.path().join("work/http.sock").canonicalize().unwrap();
    let w = Request::post(format!("/writeFile?path={}", sock.display())).body(Bytes::new()).unwrap();
    assert_eq!(b.handle(w).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(ok(b, "/readFile?path=config/settings.txt").await, "from config");
}

#[tokio::test]
async fn only_declared_env_names_and_secrets_reach_the_handler() {
    let code = handlers();
    let m = manifest(&code, json!({"routes": routes(&["env"]), "permissions": {"env": ["LOG_LEVEL"]}, "secrets": [{"name": "TOKEN"}]}));
    let grants = Grants {
        env: [("LOG_LEVEL", "debug"), ("UNDECLARED", "x")].map(|(k, v)| (k.to_owned(), v.to_owned())).into(),
        secrets: [("TOKEN".to_owned(), "s3cret".to_owned())].into(),
        ..Grants::default()
    };
    assert!(std::env::var_os("HOME").is_some() && std::env::var_os("PATH").is_some(), "the test's own env has HOME and PATH");
    let l = load_with(code, &m, grants).await.unwrap();
    let v: Value = serde_json::from_str(&ok(&l.bundle, "/env").await).unwrap();
    // (HOME and PATH cannot even be declared: manifests naming them are refused.)
    let denied = "denied (NotCapable)";
    assert_eq!(
        v,
        json!({"HOME": denied, "PATH": denied, "LOG_LEVEL": "debug", "TOKEN": "s3cret", "UNDECLARED": denied, "DENO_DIR": denied})
    );
}

#[tokio::test]
async fn a_request_over_its_wall_time_gets_504_and_the_next_one_answers() {
    let l = load(json!({"routes": routes(&["spin", "hello"]), "limits": {"wallTimeoutMs": 500}})).await;
    let b = &l.bundle;
    let pid = b.instance_id().await.unwrap();
    let started = Instant::now();
    let e = b.handle(get("/spin")).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, RunError::WallTimeout { limit_ms: 500 }), "{e}");
    assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(ok(b, "/hello").await, "hello");
    assert_eq!(b.instance_starts(), 2, "the looping instance was replaced");
    assert_ne!(b.instance_id().await.unwrap(), pid);
    assert!(gone(&pid), "the looping instance {pid} still runs");
}

#[tokio::test]
async fn a_request_over_its_cpu_time_gets_504_long_before_its_wall_time_and_a_waiting_one_does_not() {
    let l = load(json!({"routes": routes(&["spin", "slow", "hello"]), "limits": {"cpuMsPerRequest": 300, "wallTimeoutMs": 30000}})).await;
    let b = &l.bundle;
    let pid = b.instance_id().await.unwrap();
    // Waiting costs no CPU: 1.5 s asleep is not cut by a 300 ms CPU budget.
    let r = b.handle(get("/slow?ms=1500")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(b.instance_starts(), 1);
    let started = Instant::now();
    let e = b.handle(get("/spin")).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, RunError::CpuLimit { limit_ms: 300 }), "{e}");
    assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
    // At one CPU it is cut near 300 ms; other tests share this machine's CPUs.
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(10), "{took:?}");
    assert_eq!(ok(b, "/hello").await, "hello");
    assert_eq!(b.instance_starts(), 2, "the spinning instance was replaced");
    assert!(gone(&pid), "the spinning instance {pid} still runs");
}

#[tokio::test]
async fn an_idle_bundle_scales_to_zero_and_its_next_request_starts_an_instance() {
    let l = load(json!({"routes": routes(&["hello"])})).await;
    let b = &l.bundle;
    assert_eq!(ok(b, "/hello").await, "hello");
    let pid = b.instance_id().await.unwrap();
    assert!(!b.park(Duration::from_secs(3600)).await, "not idle for an hour yet");
    assert!(b.park(Duration::ZERO).await, "idle: parked");
    assert!(b.instance_id().await.is_none() && gone(&pid), "the instance {pid} is gone");
    assert_eq!(ok(b, "/hello").await, "hello");
    assert_eq!(b.instance_starts(), 2, "a cold start");
    assert!(b.idle_for() < Duration::from_secs(60));
}

#[tokio::test]
async fn a_heap_past_memory_mb_fails_the_request_and_the_next_one_answers() {
    let l = load(json!({"routes": routes(&["hog", "hello"]), "limits": {"memoryMb": 32, "wallTimeoutMs": 20000}})).await;
    let b = &l.bundle;
    let e = b.handle(get("/hog")).await.unwrap_err();
    assert!(matches!(&e, RunError::InstanceMemory { limit_mb: 32, stderr } if stderr.contains("out of memory")), "{e}");
    assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(ok(b, "/hello").await, "hello");
}

#[tokio::test]
async fn errors_and_exits_of_handlers_are_answered_and_the_instance_comes_back() {
    let l = load(json!({"routes": routes(&["fail", "exit", "notAResponse", "hello"])})).await;
    let b = &l.bundle;
    assert_eq!(text(b, "/fail").await, (StatusCode::INTERNAL_SERVER_ERROR, "the handler failed on purpose\n".into()));
    let (status, body) = text(b, "/notAResponse").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, "handler `notAResponse` returned string, not a Response\n");
    let e = b.handle(get("/exit")).await.unwrap_err();
    assert!(matches!(e, RunError::InstanceExited { code: Some(9), .. }), "{e}");
    assert_eq!(ok(b, "/hello").await, "hello");
    assert_eq!(b.instance_starts(), 2);
}

#[tokio::test]
async fn requests_beyond_max_concurrent_wait_their_turn() {
    let l = load(json!({"routes": routes(&["slow"]), "limits": {"maxConcurrent": 1, "wallTimeoutMs": 5000}})).await;
    let b = &l.bundle;
    let started = Instant::now();
    let (one, two) = tokio::join!(b.handle(get("/slow?ms=300")), b.handle(get("/slow?ms=300")));
    assert_eq!((one.unwrap().status(), two.unwrap().status()), (StatusCode::OK, StatusCode::OK));
    assert!(started.elapsed() >= Duration::from_millis(600), "they ran one after the other: {:?}", started.elapsed());
    // One that waits for its turn longer than its wall time is told the bundle is busy: the
    // third waits for the first (300 ms) and the second (300 ms more), past its 400 ms.
    let l = load(json!({"routes": routes(&["slow"]), "limits": {"maxConcurrent": 1, "wallTimeoutMs": 400}})).await;
    let b = &l.bundle;
    let (one, _, three) = tokio::join!(biased; b.handle(get("/slow?ms=300")), b.handle(get("/slow?ms=300")), b.handle(get("/slow?ms=300")));
    assert_eq!(one.unwrap().status(), StatusCode::OK);
    assert!(matches!(three, Err(RunError::Busy { concurrent: 1, waited_ms: 400 })), "{three:?}");
}

#[tokio::test]
async fn stop_lets_requests_in_flight_finish_then_ends_the_instance() {
    let l = load(json!({"routes": routes(&["slow", "hello"])})).await;
    let b = &l.bundle;
    let pid = b.instance_id().await.unwrap();
    let (slow, (), after) = tokio::join!(biased; b.handle(get("/slow?ms=300")), b.stop(), b.handle(get("/hello")));
    assert_eq!(slow.unwrap().into_body(), "slept 300");
    assert!(matches!(after, Err(RunError::Stopping)), "{after:?}");
    assert!(gone(&pid), "the instance {pid} outlived stop");
    assert_eq!(b.instance_id().await, None);
}

#[tokio::test]
async fn bad_bundles_do_not_load_and_say_why() {
    let code = handlers();
    let e = load_with(code.clone(), &manifest(&code, json!({"routes": routes(&["nope"])})), Grants::default()).await.err().unwrap();
    assert!(e.to_string().contains("routes[0].handler `nope` is not a function the module exports"), "{e}");
    assert!(e.to_string().contains("(it exports: echo, env, exit, fail,"), "it lists the exports: {e}");

    let broken = Bytes::from_static(b"export function hello( {");
    let e = load_with(broken.clone(), &manifest(&broken, json!({})), Grants::default()).await.err().unwrap();
    assert!(matches!(e, LoadError::InstanceStart(_)) && e.to_string().contains("main.ts"), "{e}");

    // Top-level code is held to the permissions too.
    let snoop =
        Bytes::from_static(b"const x = Deno.readTextFileSync('/etc/hostname'); export function hello() { return new Response(x); }");
    let e = load_with(snoop.clone(), &manifest(&snoop, json!({})), Grants::default()).await.err().unwrap();
    assert!(e.to_string().contains("denied: ") && e.to_string().contains("Requires read access"), "{e}");

    let e = load_with(code.clone(), &manifest(&code, json!({"entry": "other.ts"})), Grants::default()).await.err().unwrap();
    assert!(matches!(e, LoadError::Entry { expected: "main.ts", .. }), "{e}");
    let e = load_with(code.clone(), &manifest(&code, json!({"isolation": "vm"})), Grants::default()).await.err().unwrap();
    assert!(matches!(e, LoadError::Isolation { asked: "vm", given: "none" }), "{e}");
    let e = load_with(code.clone(), &manifest(&code, json!({"isolation": "container"})), Grants::default()).await.err().unwrap();
    assert!(matches!(e, LoadError::Isolation { asked: "container", given: "none" }), "{e}");
    let mut wasm = manifest(&code, json!({}));
    wasm.runtime = atoll_atproto::bundle::Runtime::Wasm;
    let e = load_with(code.clone(), &wasm, Grants::default()).await.err().unwrap();
    assert!(matches!(e, LoadError::NotDeno { runtime: "wasm", .. }), "{e}");
    let e = load_with(code.clone(), &manifest(&code, json!({"secrets": [{"name": "TOKEN"}]})), Grants::default()).await.err().unwrap();
    assert!(matches!(e, LoadError::MissingSecret(_)), "{e}");
    let mut tar = manifest(&code, json!({}));
    tar.code.as_mut().unwrap().mime_type = "application/x-tar".into();
    let e = load_with(code.clone(), &tar, Grants::default()).await.err().unwrap();
    assert!(matches!(e, LoadError::DenoCode(_)), "{e}");
}

/// Whether process `pid` is gone (or a zombie about to be).
fn gone(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
}

#[tokio::test]
async fn dropping_a_bundle_ends_its_instance() {
    let l = load(json!({})).await;
    let pid = l.bundle.instance_id().await.unwrap();
    assert!(!gone(&pid));
    drop(l.bundle);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(&pid) {
        assert!(Instant::now() < deadline, "instance {pid} outlived its bundle");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
