//! Benchmark of the deno runtime on `examples/bundles/hello-deno` (run by `bench/bundles.sh`),
//! with plain processes (`ProcessLauncher`): cold start (load → first response: the module
//! and bootstrap written, `deno run` started, the socket and the readiness probe answered,
//! then `GET /hello`), the first one with an empty `DENO_DIR` and then with Deno's cache
//! warm; warm request latency (keep-alive over the unix socket); requests/s with concurrent
//! clients; the instance's memory (RSS) idle. Side by side, the same handler run by `deno run`
//! directly: a script importing it into `Deno.serve` on a unix socket (start → first
//! response, then warm requests over the same kind of connection), and `deno run` of a script
//! calling it once and exiting. Prints Markdown.
//! Usage: deno_bench [ITERATIONS]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_atproto::BlobCid;
use atoll_runner::{DenoRuntime, Grants, Policy, ProcessLauncher};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints a row; returns the median.
fn row(what: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1e3);
    println!(
        "| {what} | {} | {} | {} | {} |",
        samples.len(),
        ms(pct(&samples, 0.5)),
        ms(pct(&samples, 0.99)),
        ms(*samples.last().unwrap())
    );
    pct(&samples, 0.5)
}

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").parse().ok()).unwrap_or(0)
}

fn request() -> http::Request<Bytes> {
    http::Request::get("/hello").header("host", "hello.example").body(Bytes::new()).unwrap()
}

/// `deno run` of `script` with `args`, env as the runner gives it (nothing but Deno's own).
fn deno_cmd(deno: &Path, dir: &Path, script: &str, args: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(deno);
    cmd.arg("run").args(args).arg(dir.join(script)).env_clear();
    cmd.env("DENO_DIR", dir.join("deno")).env("DENO_NO_UPDATE_CHECK", "1").env("NO_COLOR", "1");
    cmd.current_dir(dir).kill_on_drop(true).stdin(std::process::Stdio::null());
    cmd
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Connects to `socket`, trying until it accepts.
async fn connect(socket: &Path) -> Sender {
    let deadline = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        match tokio::net::UnixStream::connect(socket).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => panic!("{} never accepted: {e}", socket.display()),
        }
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn hello(sender: &mut Sender) {
    sender.ready().await.unwrap();
    let req = http::Request::get("/hello").header("host", "localhost").body(Full::new(Bytes::new())).unwrap();
    let r = sender.send_request(req).await.unwrap();
    assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "hello from deno");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).map_or(2000, |a| a.parse().expect("ITERATIONS is a number"));
    let cold_n = (n / 50).clamp(5, 50);
    let deno = atoll_runner::deno::locate().unwrap_or_else(|e| panic!("{e}"));
    let dir = atoll_runner::dir::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bundles/hello-deno")).unwrap();
    let (code, _) = dir.code.unwrap();
    let code = Bytes::from(code);
    let cid = BlobCid::of(&code).to_string();
    let manifest = dir.manifest;
    let rt = DenoRuntime::new(Policy::default(), deno.clone(), Arc::new(ProcessLauncher));
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "{}",
        String::from_utf8_lossy(&std::process::Command::new(&deno).arg("--version").output().unwrap().stdout).lines().next().unwrap()
    );
    println!();
    println!("| Measure | n | median ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");

    // Cold starts: with an empty DENO_DIR (a new work directory each), then warm (one).
    let mut empty = Vec::new();
    for i in 0..cold_n.min(10) {
        let started = Instant::now();
        let b = rt.load(&cid, code.clone(), &manifest, Grants::default(), &tmp.path().join(format!("fresh{i}"))).await.unwrap();
        assert_eq!(b.handle(request()).await.unwrap().into_body(), "hello from deno");
        empty.push(started.elapsed());
        b.stop().await;
    }
    row("cold start, empty DENO_DIR: load → first response", empty);
    let work = tmp.path().join("work");
    let mut cold = Vec::new();
    for _ in 0..cold_n {
        let started = Instant::now();
        let b = rt.load(&cid, code.clone(), &manifest, Grants::default(), &work).await.unwrap();
        assert_eq!(b.handle(request()).await.unwrap().into_body(), "hello from deno");
        cold.push(started.elapsed());
        b.stop().await;
    }
    let atoll_cold = row("**cold start**: load → first response (Deno's cache warm)", cold);

    // The same handler, `deno run` directly: Deno.serve on a unix socket.
    let direct = tmp.path().join("direct");
    std::fs::create_dir_all(&direct).unwrap();
    std::fs::write(direct.join("main.ts"), &code).unwrap();
    std::fs::write(
        direct.join("serve.ts"),
        "import { hello } from \"./main.ts\";\nDeno.serve({ path: Deno.args[0], onListen() {} }, (req) => hello(req, { params: {} }));\n",
    )
    .unwrap();
    std::fs::write(
        direct.join("once.ts"),
        "import { hello } from \"./main.ts\";\nconsole.log(await hello(new Request(\"http://localhost/hello\"), { params: {} }).text());\n",
    )
    .unwrap();
    let socket = direct.join("http.sock");
    let perms = vec![
        format!("--allow-read={}", direct.display()),
        format!("--allow-write={}", socket.display()),
        format!("--allow-net=unix:{}", socket.display()),
    ];
    let mut bare_cold = Vec::new();
    let mut bare = None;
    for i in 0..=cold_n {
        let _ = std::fs::remove_file(&socket);
        let started = Instant::now();
        let mut child = deno_cmd(&deno, &direct, "serve.ts", &perms).arg(&socket).spawn().unwrap();
        let mut sender = connect(&socket).await;
        hello(&mut sender).await;
        if i > 0 {
            bare_cold.push(started.elapsed()); // the first one filled DENO_DIR
        }
        if i == cold_n {
            bare = Some((child, sender)); // kept for the warm requests, side by side
        } else {
            child.kill().await.unwrap();
        }
    }
    let bare_cold = row("floor: `deno run` serve.ts directly: start → first response", bare_cold);
    let (mut bare_child, mut bare_sender) = bare.unwrap();
    let mut once = Vec::new();
    for _ in 0..cold_n {
        let started = Instant::now();
        let out = deno_cmd(&deno, &direct, "once.ts", &[format!("--allow-read={}", direct.display())]).output().await.unwrap();
        once.push(started.elapsed());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello from deno", "{}", String::from_utf8_lossy(&out.stderr));
    }
    row("`deno run` once.ts: process start → handler called once → exit", once);

    // Warm requests through the runner and to the direct server, interleaved (the machine's
    // load changes under both alike).
    let b = Arc::new(rt.load(&cid, code.clone(), &manifest, Grants::default(), &work).await.unwrap());
    for _ in 0..100 {
        b.handle(request()).await.unwrap();
        hello(&mut bare_sender).await;
    }
    let mut warm = Vec::with_capacity(n);
    let mut bare_warm = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let r = b.handle(request()).await.unwrap();
        warm.push(started.elapsed());
        assert_eq!(r.body(), "hello from deno");
        let started = Instant::now();
        hello(&mut bare_sender).await;
        bare_warm.push(started.elapsed());
    }
    let atoll_warm = row("**warm request**: route, proxy over the unix socket (keep-alive), bootstrap, handler", warm);
    let bare_warm = row("floor: `deno run` serve.ts directly: warm request (keep-alive, unix socket)", bare_warm);
    let bare_rss = rss_kib(&bare_child.id().unwrap().to_string());
    bare_child.kill().await.unwrap();
    let pid = b.instance_id().await.unwrap();
    let atoll_rss = rss_kib(&pid);
    println!();
    println!(
        "Atoll / `deno run` directly, medians: cold start **{:.2}x**, warm request **{:.2}x**.",
        atoll_cold.as_secs_f64() / bare_cold.as_secs_f64(),
        atoll_warm.as_secs_f64() / bare_warm.as_secs_f64()
    );

    // Throughput: concurrent clients for 3 s.
    let clients = 16;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let b = b.clone();
        tasks.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                b.handle(request()).await.unwrap();
                done += 1;
            }
            done
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r.unwrap();
    }
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    println!();
    println!("Requests/s, {clients} concurrent clients on {workers} tokio workers, 3 s: **{:.0}**", total as f64 / 3.0);
    println!(
        "Memory of an idle warm instance (RSS, after {} requests): **{:.1} MiB** (`deno run` serve.ts directly: {:.1} MiB)",
        n + 100,
        atoll_rss as f64 / 1024.0,
        bare_rss as f64 / 1024.0
    );
    b.stop().await;
}
