//! Benchmark of the wasm runtime on `examples/bundles/hello-wasm` (run by
//! `bench/bundles.sh`): compile time; cold start (a bundle loaded from its already compiled
//! module, then its first response); warm request latency (each request is a new instance);
//! requests/s with concurrent clients; memory per loaded bundle; and, as the floor, the same
//! module run by bare wasmtime (compiled `Module`, sync WASI p1 linker, a new `Store` and
//! instance per call, no limits, no routing, no CGI parsing). Prints Markdown.
//! Usage: bundle_bench [ITERATIONS]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_atproto::BlobCid;
use atoll_runner::{Grants, Policy, WasmRuntime};
use bytes::Bytes;
use wasmtime_wasi::p1::WasiP1Ctx;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn row(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let us = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e6);
    println!(
        "| {what} | {} | {} | {} | {} |",
        samples.len(),
        us(pct(&samples, 0.5)),
        us(pct(&samples, 0.99)),
        us(*samples.last().unwrap())
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").parse().ok()).unwrap_or(0)
}

fn request() -> http::Request<Bytes> {
    http::Request::get("/hello").header("host", "hello.example").body(Bytes::new()).unwrap()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).map_or(2000, |a| a.parse().expect("ITERATIONS is a number"));
    let dir = atoll_runner::dir::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bundles/hello-wasm")).unwrap();
    let (code, _) = dir.code.unwrap();
    let code = Bytes::from(code);
    let cid = BlobCid::of(&code).to_string();
    let manifest = dir.manifest;
    let rt = WasmRuntime::new(Policy::default()).unwrap();

    println!("| Measure | n | median µs | p99 µs | max µs |");
    println!("|---|---|---|---|---|");
    let started = Instant::now();
    rt.compile(&cid, code.clone()).await.unwrap();
    row("compile hello-wasm (cranelift, once per CID)", vec![started.elapsed()]);

    let mut cold = Vec::new();
    let mut load = Vec::new();
    for _ in 0..n.min(1000) {
        let started = Instant::now();
        let b = rt.load(&cid, code.clone(), &manifest, Grants::default()).await.unwrap();
        load.push(started.elapsed());
        let r = b.handle(request()).await.unwrap();
        cold.push(started.elapsed());
        assert_eq!(r.body(), "hello from wasm");
    }
    row("load (compiled module) → bundle ready", load);
    row("**cold start**: load (compiled module) → first response", cold);

    let b = Arc::new(rt.load(&cid, code.clone(), &manifest, Grants::default()).await.unwrap());
    for _ in 0..100 {
        b.handle(request()).await.unwrap();
    }
    let mut warm = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let r = b.handle(request()).await.unwrap();
        warm.push(started.elapsed());
        assert_eq!(r.body(), "hello from wasm");
    }
    row("**warm request** (route, new instance, CGI in and out)", warm);

    // The floor: bare wasmtime, the same module, a new store and instance per call.
    // (Sync wasmtime-wasi blocks on its own runtime: off the tokio workers.)
    let floor_code = code.clone();
    let mut bare = tokio::task::spawn_blocking(move || {
        let code = floor_code;
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, &code).unwrap();
        let mut linker: wasmtime::Linker<WasiP1Ctx> = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |c| c).unwrap();
        let pre = linker.instantiate_pre(&module).unwrap();
        let mut bare = Vec::with_capacity(n);
        for _ in 0..n + 100 {
            let started = Instant::now();
            let out = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(1 << 20);
            let wasi = wasmtime_wasi::WasiCtxBuilder::new().stdout(out.clone()).build_p1();
            let mut store = wasmtime::Store::new(&engine, wasi);
            let instance = pre.instantiate(&mut store).unwrap();
            instance.get_typed_func::<(), ()>(&mut store, "_start").unwrap().call(&mut store, ()).unwrap();
            bare.push(started.elapsed());
            assert!(out.contents().ends_with(b"hello from wasm"));
        }
        bare
    })
    .await
    .unwrap();
    row("floor: bare wasmtime, new store + instance + `_start` (sync)", bare.split_off(100));

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

    // Memory per loaded (idle) bundle: there are no idle instances, only the bundle's
    // InstancePre, limits and directory handles over the shared compiled module.
    let before = rss_kib();
    let mut many = Vec::new();
    for _ in 0..1000 {
        many.push(rt.load(&cid, code.clone(), &manifest, Grants::default()).await.unwrap());
    }
    let after = rss_kib();
    println!(
        "Memory per loaded, idle bundle (1000 loaded, RSS delta / 1000): **{:.1} KiB**",
        (after.saturating_sub(before)) as f64 / 1000.0
    );
    drop(many);
}
