//! WebAssembly bundles, run in-process by wasmtime. One [`WasmRuntime`] per daemon holds the
//! engine, the compiled modules (by the code's CID) and the epoch ticker; [`WasmRuntime::load`]
//! checks a bundle's module against its manifest and keeps an `InstancePre` (imports
//! resolved once); [`WasmBundle::handle`] runs one request in a new `Store` and instance
//! (nothing survives between requests: no state leaks from one caller to the next, and a
//! trap or a limit hit cannot spoil the next request).
//!
//! Calling conventions: WAGI (`manifest.abi` unset: the route's handler is an export
//! `() -> ()`, usually `_start`, run as a CGI script over WASI preview 1; see [`crate::cgi`])
//! and AT Functions' `pure-v1` (`memory`, `alloc(len) -> ptr`, `run(ptr, len) -> ptr << 32 |
//! len`, JSON in and out, no imports). `host-v1` and `component-v1` are refused at load.
//!
//! What a module gets: WASI preview 1 with the CGI variables, the declared `permissions.env`
//! names the caller gave values for and the secrets; the declared `read` (read-only) and
//! `write` directories, under the bundle's data directory; stdin the request body. No
//! network: preview 1 has no way to open a socket, so a bundle's `permissions.net` hosts are
//! recorded but wasm bundles cannot reach them. No host environment, arguments, or files
//! beyond those.

pub(crate) mod fs;
mod meter;
mod pipe;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_atproto::bundle::functions::Mode;
use atoll_atproto::bundle::{Manifest, Runtime};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use wasmtime::{Engine, ExternType, FuncType, InstancePre, Linker, Module, ResourceLimiter, Store, UpdateDeadline, ValType};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;

use crate::cgi;
pub use crate::grants::Grants;
use crate::grants::bundle_env;
use crate::policy::{Effective, Policy};
use crate::{LoadError, RunError};
use meter::{Meter, Metered, Ticker};
use pipe::CappedPipe;

/// Put in a request's extensions by the caller: the client's address (`REMOTE_ADDR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// In a response's extensions: what the module wrote to standard error (capped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stderr(pub Bytes);

/// In a response's extensions: what the request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub cpu: Duration,
    pub wall: Duration,
}

/// The engine, the module cache and the epoch ticker; one per daemon, cheap to clone.
#[derive(Clone)]
pub struct WasmRuntime {
    shared: Arc<Shared>,
}

struct Shared {
    engine: Engine,
    policy: Policy,
    modules: Mutex<HashMap<String, Module>>,
    wasi: Linker<State>,
    pure: Linker<State>,
    ticker: Ticker,
    /// The memory all requests' instances may hold at once, in MiB ([`Policy::total_memory_mb`]):
    /// each request takes its bundle's memory limit from it before it starts.
    memory: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime").field("policy", &self.shared.policy).finish_non_exhaustive()
    }
}

/// A request's store data.
struct State {
    wasi: Option<WasiP1Ctx>,
    limiter: Limiter,
    cut: Option<Cut>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Cpu,
    Wall,
}

struct Limiter {
    memory_bytes: usize,
    /// The size a refused `memory.grow` asked for.
    refused: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        1
    }
}

impl WasmRuntime {
    /// An engine for bundles under `policy`; starts the (idle) epoch ticker thread.
    pub fn new(policy: Policy) -> Result<WasmRuntime, LoadError> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.wasm_multi_memory(false);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let mut wasi = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut wasi, |s: &mut State| s.wasi.as_mut().expect("WAGI stores carry WASI"))
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let pure = Linker::new(&engine);
        let ticker = Ticker::start(engine.clone()).map_err(|e| LoadError::Engine(format!("cannot start the epoch thread: {e}")))?;
        let memory = Arc::new(tokio::sync::Semaphore::new(usize::try_from(policy.total_memory_mb).unwrap_or(usize::MAX)));
        Ok(WasmRuntime { shared: Arc::new(Shared { engine, policy, modules: Mutex::default(), wasi, pure, ticker, memory }) })
    }

    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// The module compiled from `code`, from the cache by `cid` (the code blob's CID, which
    /// the caller has checked `code` against) or compiled now (on a blocking thread).
    pub async fn compile(&self, cid: &str, code: Bytes) -> Result<Module, LoadError> {
        if let Some(m) = self.shared.modules.lock().unwrap_or_else(|e| e.into_inner()).get(cid) {
            return Ok(m.clone());
        }
        let limit = self.shared.policy.max_module_bytes;
        if code.len() > limit {
            return Err(LoadError::TooLarge { size: code.len(), limit });
        }
        let engine = self.shared.engine.clone();
        let module = tokio::task::spawn_blocking(move || Module::new(&engine, &code))
            .await
            .map_err(|e| LoadError::Engine(format!("the compiler thread failed: {e}")))?
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        self.shared.modules.lock().unwrap_or_else(|e| e.into_inner()).insert(cid.to_owned(), module.clone());
        Ok(module)
    }

    /// Drops a compiled module from the cache (when no version of any bundle uses it).
    pub fn forget(&self, cid: &str) {
        self.shared.modules.lock().unwrap_or_else(|e| e.into_inner()).remove(cid);
    }

    /// Prepares `manifest`'s bundle from `code` (whose CID is `cid`): compiles (or reuses) the
    /// module, checks its imports, exports and memory against the manifest and the limits,
    /// opens its directories, and instantiates it once (running its start function) under
    /// its limits.
    pub async fn load(&self, cid: &str, code: Bytes, manifest: &Manifest, grants: Grants) -> Result<WasmBundle, LoadError> {
        let runtime = match manifest.runtime {
            Runtime::Wasm => None,
            Runtime::Deno => Some("deno"),
            Runtime::Oci => Some("oci"),
        };
        if let Some(runtime) = runtime {
            return Err(LoadError::NotWasm { name: manifest.name.clone(), runtime });
        }
        let abi = match manifest.abi {
            None => Abi::Wagi,
            Some(Mode::PureV1) => Abi::Pure,
            Some(Mode::HostV1) => {
                return Err(LoadError::Unsupported(
                    "host-v1 functions import AT Protocol host calls (`host::…`), which Atoll does not provide yet; pure-v1 functions run"
                        .into(),
                ));
            }
            Some(Mode::ComponentV1) => {
                return Err(LoadError::Unsupported(
                    "component-v1 functions are WASI components, which Atoll does not run yet; pure-v1 functions run".into(),
                ));
            }
        };
        let limits = self.shared.policy.effective(manifest);
        let env = bundle_env(manifest, &grants)?;
        let module = self.compile(cid, code).await?;
        check_module(&module, manifest, abi, &limits)?;
        let linker = match abi {
            Abi::Wagi => &self.shared.wasi,
            Abi::Pure => &self.shared.pure,
        };
        let pre = linker.instantiate_pre(&module).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let p = &manifest.permissions;
        let preopens = if p.read.is_empty() && p.write.is_empty() {
            Vec::new()
        } else {
            let Some(dir) = &grants.data_dir else {
                return Err(LoadError::NoDataDir(p.read.iter().chain(&p.write).cloned().collect::<Vec<_>>().join(", ")));
            };
            fs::preopens(dir, &p.read, &p.write)?
        };
        let bundle = WasmBundle {
            runtime: self.clone(),
            manifest: manifest.clone(),
            abi,
            pre,
            limits,
            env,
            preopens,
            slots: tokio::sync::Semaphore::new(limits.concurrent),
        };
        let wasi = match abi {
            Abi::Wagi => Some(bundle.wasi(Bytes::new(), &CappedPipe::new(0, false), &CappedPipe::new(0, false), &[], &[])?),
            Abi::Pure => None,
        };
        let (result, _) = bundle.execute(wasi, Call::Instantiate, &CappedPipe::new(0, false), &CappedPipe::new(0, false)).await;
        result.map_err(|e| LoadError::Start(e.to_string()))?;
        Ok(bundle)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abi {
    Wagi,
    Pure,
}

fn signature(ty: &FuncType) -> String {
    let list = |it: &mut dyn Iterator<Item = ValType>| it.map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
    format!("({}) -> ({})", list(&mut ty.params()), list(&mut ty.results()))
}

fn check_module(module: &Module, manifest: &Manifest, abi: Abi, limits: &Effective) -> Result<(), LoadError> {
    let needed = module.resources_required().max_initial_memory_size.unwrap_or(0).saturating_mul(64 << 10);
    if needed > limits.memory_bytes as u64 {
        return Err(LoadError::MemoryTooLarge { needed_mb: needed.div_ceil(1 << 20), limit_mb: (limits.memory_bytes >> 20) as u64 });
    }
    let func = |name: &str| match module.get_export(name) {
        Some(ExternType::Func(f)) => Some(f),
        _ => None,
    };
    let want = |name: &str, params: &[&str], results: &[&str], wanted: &'static str| -> Result<(), LoadError> {
        let Some(f) = func(name) else {
            return Err(LoadError::WrongSignature { export: name.into(), found: "nothing (not exported)".into(), wanted });
        };
        let ps: Vec<String> = f.params().map(|t| t.to_string()).collect();
        let rs: Vec<String> = f.results().map(|t| t.to_string()).collect();
        if ps != params || rs != results {
            return Err(LoadError::WrongSignature { export: name.into(), found: signature(&f), wanted });
        }
        Ok(())
    };
    match abi {
        Abi::Wagi => {
            for (i, r) in manifest.routes.iter().enumerate() {
                if func(&r.handler).is_none() {
                    let exports: Vec<&str> =
                        module.exports().filter(|e| matches!(e.ty(), ExternType::Func(_))).map(|e| e.name()).take(20).collect();
                    return Err(LoadError::MissingExport { route: i, handler: r.handler.clone(), exports: exports.join(", ") });
                }
                want(&r.handler, &[], &[], "a WAGI handler takes and returns nothing (`_start`, or a function like it)")?;
            }
        }
        Abi::Pure => {
            if let Some(i) = module.imports().next() {
                return Err(LoadError::PureImports { abi: "pure-v1", module: i.module().into(), name: i.name().into() });
            }
            if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
                return Err(LoadError::WrongSignature {
                    export: "memory".into(),
                    found: "nothing (not exported)".into(),
                    wanted: "pure-v1 functions export their memory as `memory`",
                });
            }
            want("alloc", &["i32"], &["i32"], "pure-v1's `alloc` is (i32) -> (i32)")?;
            want("run", &["i32", "i32"], &["i64"], "pure-v1's `run` is (i32, i32) -> (i64)")?;
        }
    }
    Ok(())
}

/// A loaded bundle: its module ready to instantiate, its limits, env and directories. Shared
/// by concurrent requests (`&self`).
pub struct WasmBundle {
    runtime: WasmRuntime,
    manifest: Manifest,
    abi: Abi,
    pre: InstancePre<State>,
    limits: Effective,
    env: Vec<(String, String)>,
    preopens: Vec<fs::Preopen>,
    slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for WasmBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmBundle")
            .field("name", &self.manifest.name)
            .field("version", &self.manifest.version)
            .field("abi", &self.abi)
            .field("limits", &self.limits)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("preopens", &self.preopens)
            .finish()
    }
}

enum Call {
    /// Instantiate only (the start function runs).
    Instantiate,
    /// A WAGI handler.
    Export(String),
    /// pure-v1 `run` with this input.
    Pure(Bytes),
}

enum Fail {
    Wasm(wasmtime::Error),
    Run(RunError),
}

impl From<wasmtime::Error> for Fail {
    fn from(e: wasmtime::Error) -> Fail {
        Fail::Wasm(e)
    }
}

impl WasmBundle {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The limits requests run under.
    pub fn limits(&self) -> &Effective {
        &self.limits
    }

    /// Answers `req` (its `ClientAddr` extension, if any, gives `REMOTE_ADDR`): routes it,
    /// runs the handler in a fresh instance under the bundle's limits, and returns the
    /// response, with [`Stderr`] and [`Usage`] in its extensions.
    pub async fn handle(&self, req: Request<Bytes>) -> Result<Response<Bytes>, RunError> {
        let m = crate::route::route_request(&self.manifest, &req)?;
        let pattern = self.manifest.routes[m.index].path.clone();
        self.run(req, m, &pattern).await
    }

    /// Runs `handler` (an export) for `req` without routing it: how cron jobs and background
    /// tasks call a bundle. The CGI script name is `/`, the path all `PATH_INFO`.
    pub async fn invoke(&self, handler: &str, req: Request<Bytes>) -> Result<Response<Bytes>, RunError> {
        let m = crate::RouteMatch {
            index: usize::MAX,
            handler: handler.to_owned(),
            params: Vec::new(),
            script_name: String::new(),
            rest: req.uri().path().to_owned(),
        };
        self.run(req, m, "").await
    }

    async fn run(&self, req: Request<Bytes>, m: crate::RouteMatch, pattern: &str) -> Result<Response<Bytes>, RunError> {
        let started = Instant::now();
        let (head, body) = req.into_parts();
        if body.len() > self.limits.max_body_bytes {
            return Err(RunError::BodyTooLarge { limit: self.limits.max_body_bytes });
        }
        let busy = || RunError::Busy { concurrent: self.limits.concurrent, waited_ms: self.limits.wall.as_millis() as u64 };
        let _slot = tokio::time::timeout(self.limits.wall, self.slots.acquire()).await.map_err(|_| busy())?;
        // The host's budget: every instance at its limit at once must fit in it.
        let mb = u32::try_from(self.limits.memory_bytes.div_ceil(1 << 20)).unwrap_or(u32::MAX);
        let _memory = tokio::time::timeout(self.limits.wall.saturating_sub(started.elapsed()), self.runtime.shared.memory.acquire_many(mb))
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let stdout = CappedPipe::new(self.limits.max_output_bytes, true);
        let stderr = CappedPipe::new(self.limits.max_stderr_bytes, false);
        let (mut response, cpu) = match self.abi {
            Abi::Wagi => {
                let info = cgi::RequestInfo {
                    route_pattern: pattern,
                    body_len: body.len(),
                    remote_addr: head.extensions.get::<ClientAddr>().map(|a| a.0.ip()),
                };
                let vars = cgi::env(&head, &m, &info);
                let args = cgi::args(&m.handler, head.uri.query());
                let wasi = self.wasi(body, &stdout, &stderr, &vars, &args).map_err(|e| RunError::Internal(e.to_string()))?;
                let (result, cpu) = self.execute(Some(wasi), Call::Export(m.handler.clone()), &stdout, &stderr).await;
                result?;
                let mut response = cgi::response(&stdout.take())?;
                if head.method == http::Method::HEAD {
                    *response.body_mut() = Bytes::new();
                }
                (response, cpu)
            }
            Abi::Pure => {
                if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                    return Err(RunError::NotJson(e.to_string()));
                }
                let (result, cpu) = self.execute(None, Call::Pure(body), &stdout, &stderr).await;
                let out = result?.unwrap_or_default();
                if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&out) {
                    return Err(RunError::BadOutput(format!("is not JSON: {e}")));
                }
                let mut response = Response::new(out);
                response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                *response.status_mut() = StatusCode::OK;
                (response, cpu)
            }
        };
        response.extensions_mut().insert(Stderr(stderr.take()));
        response.extensions_mut().insert(Usage { cpu, wall: started.elapsed() });
        Ok(response)
    }

    fn wasi(
        &self,
        body: Bytes,
        stdout: &CappedPipe,
        stderr: &CappedPipe,
        cgi_vars: &[(String, String)],
        args: &[String],
    ) -> Result<WasiP1Ctx, LoadError> {
        let mut b = WasiCtxBuilder::new();
        b.stdin(MemoryInputPipe::new(body)).stdout(stdout.clone()).stderr(stderr.clone()).args(args);
        // The bundle's own env and secrets win over request-derived names.
        for (k, v) in cgi_vars {
            if !self.env.iter().any(|(name, _)| name == k) {
                b.env(k, v);
            }
        }
        b.envs(&self.env);
        for p in &self.preopens {
            b.preopened_dir(p.host_path(), &p.guest, p.perms).map_err(|e| LoadError::DataDir {
                guest: p.guest.clone(),
                data_dir: PathBuf::from(p.host_path()),
                source: std::io::Error::other(format!("{e:#}")),
            })?;
        }
        Ok(b.build_p1())
    }

    /// Runs `call` in a new store under the limits; returns its result (pure-v1's output) and
    /// the CPU time it used.
    async fn execute(
        &self,
        wasi: Option<WasiP1Ctx>,
        call: Call,
        stdout: &CappedPipe,
        stderr: &CappedPipe,
    ) -> (Result<Option<Bytes>, RunError>, Duration) {
        let shared = &self.runtime.shared;
        let _busy = shared.ticker.busy();
        let limits = self.limits;
        let meter = Arc::new(Meter::default());
        let wall_deadline = Instant::now() + limits.wall;
        let m = meter.clone();
        let work = async move {
            let mut store = Store::new(
                &shared.engine,
                State { wasi, limiter: Limiter { memory_bytes: limits.memory_bytes, refused: None }, cut: None },
            );
            store.limiter(|s| &mut s.limiter);
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |mut ctx| {
                let cut = if Instant::now() >= wall_deadline {
                    Cut::Wall
                } else if m.used() > limits.cpu {
                    Cut::Cpu
                } else {
                    return Ok(UpdateDeadline::Yield(1));
                };
                ctx.data_mut().cut = Some(cut);
                Err(wasmtime::format_err!("stopped: {cut:?} limit"))
            });
            let result = run(&mut store, &self.pre, call, limits.max_output_bytes).await;
            (result, store.into_data())
        };
        let metered = Metered { inner: Box::pin(work), meter: meter.clone() };
        let outcome = tokio::time::timeout(limits.wall, metered).await;
        let cpu = meter.total();
        let Ok((result, state)) = outcome else {
            return (Err(RunError::WallTimeout { limit_ms: limits.wall.as_millis() as u64 }), cpu);
        };
        let e = match result {
            Ok(out) => return (Ok(out), cpu),
            Err(Fail::Run(e)) => return (Err(e), cpu),
            Err(Fail::Wasm(e)) => e,
        };
        let stderr_text = || String::from_utf8_lossy(&stderr.take()).into_owned();
        let err = match state.cut {
            Some(Cut::Wall) => RunError::WallTimeout { limit_ms: limits.wall.as_millis() as u64 },
            Some(Cut::Cpu) => RunError::CpuLimit { limit_ms: limits.cpu.as_millis() as u64 },
            None if stdout.overflowed() => RunError::OutputTooLarge { limit: limits.max_output_bytes },
            None => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) if exit.0 == 0 => return (Ok(None), cpu),
                Some(exit) => RunError::Exit { code: exit.0, stderr: stderr_text() },
                None => match state.limiter.refused {
                    Some(wanted) => RunError::MemoryLimit {
                        wanted_mb: (wanted as u64).div_ceil(1 << 20),
                        limit_mb: (limits.memory_bytes >> 20) as u64,
                        stderr: stderr_text(),
                    },
                    None => RunError::Trap { trap: describe(&e), stderr: stderr_text() },
                },
            },
        };
        (Err(err), cpu)
    }
}

/// A trap's kind, or the error's chain, on one line and bounded.
fn describe(e: &wasmtime::Error) -> String {
    let text = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{e:#}").replace('\n', " "),
    };
    text.chars().take(1000).collect()
}

async fn run(store: &mut Store<State>, pre: &InstancePre<State>, call: Call, max_output: usize) -> Result<Option<Bytes>, Fail> {
    let instance = pre.instantiate_async(&mut *store).await?;
    match call {
        Call::Instantiate => Ok(None),
        Call::Export(name) => {
            let f = instance.get_typed_func::<(), ()>(&mut *store, &name)?;
            f.call_async(&mut *store, ()).await?;
            Ok(None)
        }
        Call::Pure(input) => {
            let bad = |what: String| Fail::Run(RunError::BadOutput(what));
            let memory = instance
                .get_memory(&mut *store, "memory")
                .ok_or_else(|| Fail::Run(RunError::Internal("the function exports no memory".into())))?;
            let alloc = instance.get_typed_func::<i32, i32>(&mut *store, "alloc")?;
            let run = instance.get_typed_func::<(i32, i32), i64>(&mut *store, "run")?;
            let len = i32::try_from(input.len()).map_err(|_| Fail::Run(RunError::BodyTooLarge { limit: i32::MAX as usize }))?;
            let ptr = alloc.call_async(&mut *store, len).await?;
            memory
                .write(&mut *store, ptr as u32 as usize, &input)
                .map_err(|_| bad(format!("buffer: `alloc({len})` returned {ptr}, outside the function's memory")))?;
            let packed = run.call_async(&mut *store, (ptr, len)).await? as u64;
            let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
            if out_len > max_output {
                return Err(Fail::Run(RunError::OutputTooLarge { limit: max_output }));
            }
            let mut out = vec![0; out_len];
            memory
                .read(&*store, out_ptr, &mut out)
                .map_err(|_| bad(format!("({out_len} bytes at {out_ptr}) lies outside the function's memory")))?;
            Ok(Some(Bytes::from(out)))
        }
    }
}
