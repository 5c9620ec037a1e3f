//! JavaScript and TypeScript bundles, run by Deno (the binary from npm's
//! `@deno/linux-x64-glibc`, installed by `scripts/install-deno.sh`; [`locate`] finds it).
//! One [`DenoRuntime`] per daemon holds the policy, the binary and the [`Launcher`] (the
//! sandbox); [`DenoRuntime::load`] writes a bundle's module and a bootstrap into its work
//! directory and starts its instance: one `deno run` process, its permissions derived from
//! the manifest ([`flags`]), serving HTTP/1.1 on a unix socket in the work directory.
//! [`DenoBundle::handle`] routes a request ([`crate::route`]), passes it to the instance with
//! the handler's name and the route's parameters ([`proxy`]'s `x-atoll-*` headers), and
//! returns the answer.
//!
//! Handler convention (also in the lexicon's `routes[].handler`): the module exports named
//! functions `(req: Request, ctx) => Response | Promise<Response>`, where `ctx.params` holds
//! the route's `:name` parameters, `ctx.paths` maps each declared `read`/`write` path to its
//! directory on the host, and `ctx.remoteAddr` is the client's `{ transport, hostname, port }`
//! (or null); a route whose handler is `fetch` may also be served by `export default { fetch }`.
//! A handler that throws answers 500 with the error's message; one denied a permission
//! (`Deno.errors.NotCapable` from Deno's checks, `Deno.errors.PermissionDenied` from the
//! system's) answers 403 `denied: …`, and the runner logs the denial at warn on the target
//! `atoll_bundles::denied`.
//!
//! Limits: each request's wall time (the 504; the instance is then killed, since a loop
//! cannot be stopped otherwise, and a new one started at once); requests running at once (a
//! semaphore; more wait up to their wall time, then 503); the JavaScript heap
//! (`--max-old-space-size`: a bundle past it crashes its instance, the request fails with
//! [`RunError::InstanceMemory`], the next one gets a new instance) and, given to the launcher,
//! the process's memory (the heap limit plus [`RUNTIME_OVERHEAD_BYTES`]) and its CPU quota; CPU
//! time per request, the instance's CPU time shared out among the requests under way
//! ([`crate::cpu`]: a request past it gets [`RunError::CpuLimit`], and the instance is recycled
//! as for a wall timeout).
//! An instance that exits is started again by the next request.

mod bootstrap;
pub mod flags;
mod instance;
mod proxy;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use atoll_atproto::bundle::{Isolation, Manifest, Runtime};
use bytes::Bytes;
use http::{Request, Response};
use tokio::time::Instant;

use crate::launch::{LaunchSpec, Launcher};
use crate::policy::{Effective, Policy};
use crate::wasm::ClientAddr;
use crate::{Grants, LoadError, RunError};
pub use flags::{Paths, env, flags};
use instance::{CallError, Instance, StartError};

/// The environment variable naming the deno binary.
pub const DENO_ENV: &str = "ATOLL_DENO";
/// Where `scripts/install-deno.sh` installs it.
pub const DENO_INSTALLED: &str = "/var/cache/atoll-deno/bin/deno";
/// What a deno process needs beyond its JavaScript heap (V8's other spaces, the runtime, code):
/// added to the heap limit for the launcher's memory limit.
pub const RUNTIME_OVERHEAD_BYTES: u64 = 128 << 20;
/// How long an instance may take to start at load (its module read, transpiled, run).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The deno binary: `$ATOLL_DENO` if set (it must exist), else `/var/cache/atoll-deno/bin/deno`
/// if installed, else `deno` on `PATH`.
pub fn locate() -> Result<PathBuf, LoadError> {
    if let Some(p) = std::env::var_os(DENO_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(LoadError::NoDeno(format!("{DENO_ENV}={} is not a file", p.display()))) };
    }
    let installed = PathBuf::from(DENO_INSTALLED);
    if installed.is_file() {
        return Ok(installed);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("deno")).find(|p| p.is_file()).ok_or_else(|| {
        LoadError::NoDeno(format!("{DENO_ENV} is not set, {DENO_INSTALLED} is missing and PATH has no deno; run scripts/install-deno.sh"))
    })
}

/// In a response's extensions: the permission the handler was denied (its 403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

/// The policy, the binary and the sandbox; one per daemon, cheap to clone.
#[derive(Clone)]
pub struct DenoRuntime {
    shared: Arc<RuntimeShared>,
}

struct RuntimeShared {
    policy: Policy,
    deno: PathBuf,
    launcher: Arc<dyn Launcher>,
}

impl std::fmt::Debug for DenoRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenoRuntime")
            .field("policy", &self.shared.policy)
            .field("deno", &self.shared.deno)
            .field("isolation", &self.shared.launcher.isolation())
            .finish()
    }
}

impl DenoRuntime {
    /// Bundles under `policy`, run by the binary `deno_path` (see [`locate`]) through `launcher`.
    pub fn new(policy: Policy, deno_path: PathBuf, launcher: Arc<dyn Launcher>) -> DenoRuntime {
        DenoRuntime { shared: Arc::new(RuntimeShared { policy, deno: deno_path, launcher }) }
    }

    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// The launcher's sandbox (`none`, `container`).
    pub fn isolation(&self) -> &'static str {
        self.shared.launcher.isolation()
    }

    /// Prepares `manifest`'s bundle from `code` (the blob whose CID is `cid`, checked by the
    /// caller) in `work_dir` (created if missing; one per loaded bundle version, reused across
    /// loads of the same one for Deno's cache): writes the module (`main.ts` or `main.js`, by
    /// the blob's MIME type; `entry` names it) and the bootstrap, creates the declared
    /// directories under `grants.data_dir`, and starts the instance; returns once it answers.
    pub async fn load(
        &self,
        cid: &str,
        code: Bytes,
        manifest: &Manifest,
        grants: Grants,
        work_dir: &Path,
    ) -> Result<DenoBundle, LoadError> {
        let runtime = match manifest.runtime {
            Runtime::Deno => None,
            Runtime::Wasm => Some("wasm"),
            Runtime::Oci => Some("oci"),
        };
        if let Some(runtime) = runtime {
            return Err(LoadError::NotDeno { name: manifest.name.clone(), runtime });
        }
        let given = self.isolation();
        let asked = match manifest.isolation {
            Isolation::Vm => Some("vm"),
            Isolation::Container if given == "none" => Some("container"),
            Isolation::Auto | Isolation::None | Isolation::Container => None,
        };
        if let Some(asked) = asked {
            return Err(LoadError::Isolation { asked, given });
        }
        let mime = manifest.code.as_ref().map_or("", |c| c.mime_type.as_str());
        let module = match mime {
            "application/typescript" => "main.ts",
            "application/javascript" | "text/javascript" => "main.js",
            other => return Err(LoadError::DenoCode(other.to_owned())),
        };
        if manifest.entry != module && manifest.entry.strip_prefix("./") != Some(module) {
            return Err(LoadError::Entry { entry: manifest.entry.clone(), expected: module });
        }
        let limit = self.shared.policy.max_module_bytes;
        if code.len() > limit {
            return Err(LoadError::TooLarge { size: code.len(), limit });
        }
        let limits = self.shared.policy.effective(manifest);
        let work_err = |source| LoadError::WorkDir { path: work_dir.to_owned(), source };
        std::fs::create_dir_all(work_dir).map_err(work_err)?;
        let work = std::fs::canonicalize(work_dir).map_err(work_err)?;
        let paths = Paths::new(&work, grants.data_dir.as_deref(), manifest)?;
        let env = env(manifest, &grants, &paths)?;
        if let Some(data_dir) = &grants.data_dir {
            // Created beneath the data directory without following symlinks (as for wasm).
            crate::wasm::fs::preopens(data_dir, &manifest.permissions.read, &manifest.permissions.write)?;
        }
        let write =
            |path: &Path, bytes: &[u8]| std::fs::write(path, bytes).map_err(|source| LoadError::WorkDir { path: path.to_owned(), source });
        write(&work.join(module), &code)?;
        write(&paths.bootstrap, bootstrap::source(manifest, module, &paths).as_bytes())?;
        std::fs::create_dir_all(&paths.deno_dir).map_err(|source| LoadError::WorkDir { path: paths.deno_dir.clone(), source })?;
        let mut mounts = vec![(self.shared.deno.clone(), false), (work.clone(), true)];
        mounts.extend(paths.read.iter().map(|(_, host)| (host.clone(), false)));
        mounts.extend(paths.write.iter().map(|(_, host)| (host.clone(), true)));
        let spec = LaunchSpec {
            name: String::new(),
            program: self.shared.deno.clone(),
            args: flags(manifest, &paths, &limits),
            env,
            mounts,
            network: !manifest.permissions.net.is_empty(),
            egress: manifest.permissions.net.clone(),
            memory_bytes: Some(limits.memory_bytes as u64 + RUNTIME_OVERHEAD_BYTES),
            cpus_milli: Some(limits.cpus_milli),
            workdir: paths.data_dir.clone().unwrap_or_else(|| work.clone()),
        };
        let short = &cid[cid.len().saturating_sub(8)..];
        let inner = Arc::new(Inner {
            runtime: self.clone(),
            manifest: manifest.clone(),
            limits,
            spec,
            socket: paths.socket.clone(),
            // The work directory's name when it has one (the daemon names it after the bundle as
            // it runs here, unique on this host), else the manifest's name and the code's CID.
            prefix: work
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
                .map_or_else(|| format!("{}-{short}", manifest.name), str::to_owned),
            starts: AtomicU64::new(0),
            current: tokio::sync::Mutex::new(None),
            slots: tokio::sync::Semaphore::new(limits.concurrent),
            stopping: AtomicBool::new(false),
            last_used: std::sync::Mutex::new(Instant::now()),
        });
        let deadline = Instant::now() + START_TIMEOUT;
        inner.instance(deadline).await.map_err(|e| match e {
            StartError::Launch(e) => LoadError::Launch(e),
            StartError::Failed(why) => LoadError::InstanceStart(why),
        })?;
        Ok(DenoBundle { inner })
    }
}

/// A loaded bundle and its instance; shared by concurrent requests (`&self`). Dropping it
/// kills the instance; [`DenoBundle::stop`] lets requests in flight finish first.
pub struct DenoBundle {
    inner: Arc<Inner>,
}

/// Marks the bundle used when a request ends, however it ends.
struct Used<'a>(&'a std::sync::Mutex<Instant>);

impl Drop for Used<'_> {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

struct Inner {
    runtime: DenoRuntime,
    manifest: Manifest,
    limits: Effective,
    /// The instance's spec but for its name.
    spec: LaunchSpec,
    socket: PathBuf,
    /// Instances are `<prefix>-<n>`.
    prefix: String,
    starts: AtomicU64,
    current: tokio::sync::Mutex<Option<Arc<Instance>>>,
    slots: tokio::sync::Semaphore,
    stopping: AtomicBool,
    /// When the last request ended (or the bundle loaded).
    last_used: std::sync::Mutex<Instant>,
}

impl std::fmt::Debug for DenoBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenoBundle")
            .field("name", &self.inner.manifest.name)
            .field("version", &self.inner.manifest.version)
            .field("limits", &self.inner.limits)
            .field("spec", &self.inner.spec)
            .finish()
    }
}

impl Inner {
    /// The running instance, or a new one (started by one caller while the others wait).
    async fn instance(&self, deadline: Instant) -> Result<Arc<Instance>, StartError> {
        let mut current = self.current.lock().await;
        if self.stopping.load(Ordering::SeqCst) {
            return Err(StartError::Failed("the bundle is stopping".into()));
        }
        if let Some(i) = current.as_ref().filter(|i| i.alive()) {
            return Ok(i.clone());
        }
        if let Some(old) = current.take() {
            old.kill("it had exited");
        }
        let n = self.starts.fetch_add(1, Ordering::SeqCst);
        let mut spec = self.spec.clone();
        spec.name = format!("{}-{n}", self.prefix);
        let launcher = self.runtime.shared.launcher.as_ref();
        let i = Instance::start(launcher, spec, self.socket.clone(), deadline, self.limits.concurrent).await?;
        tracing::debug!(bundle = %self.manifest.name, instance = i.id(), "instance ready");
        *current = Some(i.clone());
        Ok(i)
    }

    /// Kills `instance` for `reason` and starts the next one now, so the next request finds
    /// it ready.
    fn recycle(self: &Arc<Self>, instance: &Arc<Instance>, reason: &str) {
        tracing::info!(bundle = %self.manifest.name, instance = instance.id(), "restarting the instance: {reason}");
        instance.kill(reason);
        let weak: Weak<Inner> = Arc::downgrade(self);
        tokio::spawn(async move {
            let Some(inner) = weak.upgrade() else { return };
            if inner.stopping.load(Ordering::SeqCst) {
                return;
            }
            if let Err(e) = inner.instance(Instant::now() + START_TIMEOUT).await {
                tracing::warn!(bundle = %inner.manifest.name, "the instance did not start again: {e}");
            }
        });
    }

    /// Why a call on `instance` failed: a restart the runner made, an exit (out of memory or
    /// not), or the connection alone.
    async fn failure(self: &Arc<Self>, instance: &Arc<Instance>, e: CallError) -> RunError {
        if let Some(reason) = instance.recycled() {
            return RunError::Recycled(reason);
        }
        let Some((code, stderr)) = instance.exited(Duration::from_secs(2)).await else {
            return RunError::Instance(e.to_string());
        };
        if let Some(reason) = instance.recycled() {
            return RunError::Recycled(reason);
        }
        let err = match instance::out_of_memory(&stderr) {
            Some(line) => RunError::InstanceMemory { limit_mb: (self.limits.memory_bytes >> 20) as u64, stderr: line.to_owned() },
            None => RunError::InstanceExited { code, stderr },
        };
        self.recycle(instance, "it exited");
        err
    }
}

impl DenoBundle {
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// The limits requests run under.
    pub fn limits(&self) -> &Effective {
        &self.inner.limits
    }

    /// The sandbox the instance runs in (the launcher's).
    pub fn isolation(&self) -> &'static str {
        self.inner.runtime.isolation()
    }

    /// How many instances were started so far (the first at load: more are restarts).
    pub fn instance_starts(&self) -> u64 {
        self.inner.starts.load(Ordering::SeqCst)
    }

    /// The running instance's id in the sandbox (a pid for [`crate::launch::ProcessLauncher`]).
    pub async fn instance_id(&self) -> Option<String> {
        self.inner.current.lock().await.as_ref().filter(|i| i.alive()).map(|i| i.id().to_owned())
    }

    /// Answers `req` (its `ClientAddr` extension, if any, becomes `ctx.remoteAddr`): routes
    /// it, passes it to the instance (starting one if none runs) under the wall timeout, and
    /// returns the answer, with [`Denied`] in its extensions when the handler was denied a
    /// permission.
    pub async fn handle(&self, req: Request<Bytes>) -> Result<Response<Bytes>, RunError> {
        let m = crate::route::route_request(&self.inner.manifest, &req)?;
        self.call(req, m).await
    }

    /// Calls the exported function `handler` with `req`, without routing it: how cron jobs and
    /// background tasks call a bundle (`ctx.params` is empty).
    pub async fn invoke(&self, handler: &str, req: Request<Bytes>) -> Result<Response<Bytes>, RunError> {
        let m = crate::RouteMatch {
            index: usize::MAX,
            handler: handler.to_owned(),
            params: Vec::new(),
            script_name: String::new(),
            rest: req.uri().path().to_owned(),
        };
        self.call(req, m).await
    }

    async fn call(&self, req: Request<Bytes>, m: crate::RouteMatch) -> Result<Response<Bytes>, RunError> {
        let inner = &self.inner;
        if inner.stopping.load(Ordering::SeqCst) {
            return Err(RunError::Stopping);
        }
        let (head, body) = req.into_parts();
        if body.len() > inner.limits.max_body_bytes {
            return Err(RunError::BodyTooLarge { limit: inner.limits.max_body_bytes });
        }
        let wall = inner.limits.wall;
        let busy = || RunError::Busy { concurrent: inner.limits.concurrent, waited_ms: wall.as_millis() as u64 };
        let _slot = tokio::time::timeout(wall, inner.slots.acquire()).await.map_err(|_| busy())?.map_err(|_| RunError::Stopping)?;
        let _used = Used(&inner.last_used);
        if inner.stopping.load(Ordering::SeqCst) {
            return Err(RunError::Stopping);
        }
        let deadline = Instant::now() + wall;
        let timeout = || RunError::WallTimeout { limit_ms: wall.as_millis() as u64 };
        let instance = match tokio::time::timeout_at(deadline, inner.instance(deadline)).await {
            Err(_) => return Err(timeout()),
            Ok(Err(StartError::Failed(why))) if inner.stopping.load(Ordering::SeqCst) => {
                tracing::debug!(bundle = %inner.manifest.name, "no instance: {why}");
                return Err(RunError::Stopping);
            }
            Ok(Err(e)) => return Err(RunError::InstanceStart(e.to_string())),
            Ok(Ok(i)) => i,
        };
        let head_request = head.method == http::Method::HEAD;
        let remote = head.extensions.get::<ClientAddr>().map(|a| a.0);
        let upstream = proxy::upstream(head, body, &m, remote);
        let cpu = inner.limits.cpu;
        let response = match tokio::time::timeout_at(deadline, instance.metered_call(upstream, inner.limits.max_output_bytes, cpu)).await {
            Err(_) => {
                inner.recycle(&instance, &format!("a request ran over its {} ms wall timeout", wall.as_millis()));
                return Err(timeout());
            }
            Ok(Err(over)) => {
                inner.recycle(&instance, &format!("a request ran over its {} ms of CPU time ({over})", cpu.as_millis()));
                return Err(RunError::CpuLimit { limit_ms: cpu.as_millis() as u64 });
            }
            Ok(Ok(Err(CallError::TooLarge(limit)))) => return Err(RunError::OutputTooLarge { limit }),
            Ok(Ok(Err(e))) => return Err(inner.failure(&instance, e).await),
            Ok(Ok(Ok(r))) => r,
        };
        let (mut response, denied) = proxy::downstream(response, head_request);
        if let Some(what) = denied {
            tracing::warn!(target: "atoll_bundles::denied", bundle = %inner.manifest.name, handler = %m.handler, "denied: {what}");
            response.extensions_mut().insert(Denied(what));
        }
        Ok(response)
    }

    /// How long since the last request ended.
    pub fn idle_for(&self) -> Duration {
        self.inner.last_used.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }

    /// Scale to zero: stops the instance if at least `idle` passed since the last request and
    /// none runs now; the next request starts one (a cold start). Returns whether it stopped
    /// one.
    pub async fn park(&self, idle: Duration) -> bool {
        let inner = &self.inner;
        let all = u32::try_from(inner.limits.concurrent).unwrap_or(u32::MAX);
        // Holding every slot keeps requests out while the instance goes.
        let Ok(_all) = inner.slots.try_acquire_many(all) else { return false };
        if self.idle_for() < idle {
            return false;
        }
        let instance = inner.current.lock().await.take();
        let Some(i) = instance else { return false };
        tracing::info!(bundle = %inner.manifest.name, instance = i.id(), idle_s = idle.as_secs(), "scaling an idle bundle to zero");
        i.kill("the bundle was idle");
        i.exited(Duration::from_secs(10)).await;
        true
    }

    /// Stops taking requests (they get [`RunError::Stopping`]), lets those in flight finish
    /// (each within its wall time), then kills the instance and waits for its exit.
    pub async fn stop(&self) {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        let all = u32::try_from(inner.limits.concurrent).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(inner.limits.wall + Duration::from_secs(1), inner.slots.acquire_many(all)).await;
        if drained.is_err() {
            tracing::warn!(bundle = %inner.manifest.name, "requests still ran past their wall time at stop");
        }
        inner.slots.close();
        let instance = inner.current.lock().await.take();
        if let Some(i) = instance {
            i.kill("the bundle stopped");
            i.exited(Duration::from_secs(10)).await;
        }
    }
}
