//! oci bundles: the manifest's `entry` names an image, and the bundle runs as one Atoll
//! container of it (the host's engine, behind [`Containers`]) serving HTTP on its `port`
//! (8080 by default, also given to it as `PORT`). Requests are checked against the manifest's
//! routes here, then proxied to the container's address on its bridge.
//!
//! What the container gets: the declared `permissions.env` names with values and the secrets
//! as environment; the memory limit and CPU quota as its cgroup's (and CPU time per request
//! shared out from the cgroup's, [`atoll_runner::cpu`]); no way out of the host (the `--internal`
//! network `atoll-bundles`) but, when the manifest declares `permissions.net` hosts, an egress
//! proxy that reaches those only ([`crate::egress`]; `HTTP_PROXY`/`HTTPS_PROXY`). A request
//! over its wall time or CPU time gets a 504 and the container is replaced; so is one that
//! stopped.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_atproto::bundle::Manifest;
use atoll_runner::cpu::{CpuClock, Meter};
use atoll_runner::{Effective, Grants, RunError};
use atoll_spec::ContainerSpec;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{Mutex, Semaphore};

/// The container label listing the environment variables that hold secrets (comma-separated):
/// the API shows their values as `<redacted>`.
pub const SECRET_ENV_LABEL: &str = "atoll.bundle.secret-env";

/// The label of oci bundles' containers (the bundle's name).
pub const BUNDLE_LABEL: &str = "atoll.bundle";

/// The port an oci bundle serves on when its manifest names none.
pub const DEFAULT_PORT: u16 = 8080;

/// How long a new container may take to accept connections (its image may be pulled first).
const READY_WITHIN: Duration = Duration::from_secs(120);

/// A container the engine started for a bundle.
#[derive(Debug, Clone)]
pub struct Started {
    pub id: String,
    /// Its address on its bridge network, which this host reaches directly (none without a
    /// network).
    pub ip: Option<IpAddr>,
    /// Where its CPU time is read (its cgroup's), for per-request CPU limits.
    pub cpu: Option<CpuClock>,
}

/// The host's container engine, as bundles use it.
#[async_trait::async_trait]
pub trait Containers: Send + Sync + 'static {
    /// Creates and starts `spec` (pulling its image if missing), replacing a container of the
    /// same name. A bridged container goes on the `--internal` network, which has no way out
    /// of the host (egress goes through [`crate::egress`]).
    async fn run(&self, spec: ContainerSpec) -> Result<Started, String>;
    /// The host's address on that internal network, where egress proxies listen.
    async fn egress_gateway(&self) -> Result<IpAddr, String>;
    /// Its exit code, once it has stopped.
    async fn exited(&self, id: &str) -> Option<i32>;
    /// Resolves when it stops, with its exit code (none if it was removed).
    async fn wait(&self, id: &str) -> Option<i32>;
    /// Imports the image `reference` from the OCI layout archive `build` makes, unless the
    /// image is there already.
    async fn ensure_image(&self, reference: &str, build: fn() -> Vec<u8>) -> Result<(), String>;
    /// The last lines it wrote, for error messages.
    async fn log_tail(&self, id: &str) -> String;
    /// Stops (within `grace`) and removes it.
    async fn remove(&self, id: &str, grace: Duration);
    /// Removes every container that has `label` (whatever its value).
    async fn remove_labelled(&self, label: &str);
}

/// The container name of bundle `name`'s instance of the record version `record_cid`: the
/// CID's last 8 characters tell versions apart while a new one warms beside the old.
pub fn container_name(name: &str, record_cid: Option<&str>) -> String {
    match record_cid {
        Some(cid) if cid.len() >= 8 => format!("atoll-bundle-{name}-{}", &cid[cid.len() - 8..]),
        _ => format!("atoll-bundle-{name}"),
    }
}

/// The container spec an oci bundle runs as. Pure.
pub fn container_spec(name: &str, container: &str, manifest: &Manifest, grants: &Grants, limits: &Effective) -> ContainerSpec {
    let port = manifest.port.unwrap_or(DEFAULT_PORT);
    let mut env = vec![format!("PORT={port}")];
    for k in &manifest.permissions.env {
        if let Some(v) = grants.env.get(k) {
            env.push(format!("{k}={v}"));
        }
    }
    for (k, v) in &grants.secrets {
        env.push(format!("{k}={v}"));
    }
    let mut spec = ContainerSpec {
        name: Some(container.to_owned()),
        image: manifest.entry.clone(),
        cmd: (!manifest.command.is_empty()).then(|| manifest.command.clone()),
        env,
        labels: BTreeMap::from([(BUNDLE_LABEL.to_owned(), name.to_owned())]),
        init: false,
        ..Default::default()
    };
    if !grants.secrets.is_empty() {
        spec.labels.insert(SECRET_ENV_LABEL.to_owned(), grants.secrets.keys().cloned().collect::<Vec<_>>().join(","));
    }
    // The engine's floor is 6 MiB (docker's).
    spec.resources.memory = Some((limits.memory_bytes as u64).max(6 << 20));
    spec.resources.cpus_milli = Some(limits.cpus_milli);
    spec.security.no_new_privileges = true;
    spec
}

/// How an oci bundle's instance lives: kept warm, or stopped when idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    /// Never stop the container for idleness (pre-warmed: `--min-instances 1`).
    pub keep_warm: bool,
    /// With `keep_warm` off: stop the container after this long without requests (scale to
    /// zero); the next request starts one again (a cold start).
    pub idle_timeout: Duration,
}

/// A running oci bundle.
pub struct OciBundle {
    inner: Arc<Inner>,
    reaper: Option<tokio::task::JoinHandle<()>>,
}

struct Inner {
    name: String,
    manifest: Manifest,
    limits: Effective,
    spec: ContainerSpec,
    port: u16,
    containers: Arc<dyn Containers>,
    live: Mutex<Option<Started>>,
    /// The live container's CPU time, shared out among its requests.
    meter: Meter,
    slots: Semaphore,
    /// When the last request finished (or the bundle started).
    last_used: std::sync::Mutex<Instant>,
    observe: Observe,
    /// The way out to the declared hosts, if any.
    _egress: Option<crate::egress::EgressProxy>,
}

/// Where an oci bundle reports its cold starts and instances.
#[derive(Clone)]
pub struct Observe {
    pub metrics: crate::metrics::Metrics,
    pub labels: crate::metrics::BundleLabels,
    pub journal: crate::journal::Journal,
}

impl Drop for OciBundle {
    fn drop(&mut self) {
        if let Some(r) = &self.reaper {
            r.abort();
        }
    }
}

impl OciBundle {
    /// Starts `name`'s container and waits until it accepts connections (so a bundle that
    /// cannot run is refused at `bundle run`, not at its first request).
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        name: &str,
        container: &str,
        manifest: &Manifest,
        grants: &Grants,
        limits: Effective,
        containers: Arc<dyn Containers>,
        lifecycle: Lifecycle,
        observe: Observe,
    ) -> Result<OciBundle, String> {
        let mut spec = container_spec(name, container, manifest, grants, &limits);
        let egress = if manifest.permissions.net.is_empty() {
            None
        } else {
            let gw = containers.egress_gateway().await?;
            let journal = observe.journal.clone();
            let bundle = name.to_owned();
            let on_denied: crate::egress::OnDenied =
                Arc::new(move |why: String| journal.add(&bundle, crate::journal::Entry::new("denied", why)));
            let proxy = crate::egress::EgressProxy::start(gw, name.to_owned(), manifest.permissions.net.clone(), Some(on_denied))
                .await
                .map_err(|e| format!("starting its egress proxy on {gw}: {e}"))?;
            spec.env.extend(proxy.env().into_iter().map(|(k, v)| format!("{k}={v}")));
            Some(proxy)
        };
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            manifest: manifest.clone(),
            spec,
            port: manifest.port.unwrap_or(DEFAULT_PORT),
            containers,
            live: Mutex::new(None),
            meter: Meter::default(),
            slots: Semaphore::new(limits.concurrent),
            limits,
            last_used: std::sync::Mutex::new(Instant::now()),
            observe,
            _egress: egress,
        });
        let started = inner.launch().await?;
        *inner.live.lock().await = Some(started);
        let reaper = (!lifecycle.keep_warm && !lifecycle.idle_timeout.is_zero())
            .then(|| tokio::spawn(reap(Arc::downgrade(&inner), lifecycle.idle_timeout)));
        Ok(OciBundle { inner, reaper })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    pub fn limits(&self) -> &Effective {
        &self.inner.limits
    }

    /// Answers one request: routed by the manifest, proxied to the container within the
    /// bundle's wall time.
    pub async fn handle(&self, req: Request<Bytes>) -> Result<Response<Bytes>, RunError> {
        atoll_runner::route::route_request(&self.inner.manifest, &req)?;
        self.inner.send(req).await
    }

    /// Runs a cron job or background task: `POST /.well-known/atoll/cron/HANDLER` to the
    /// container, bypassing the routes.
    pub async fn invoke(&self, handler: &str, req: Request<Bytes>) -> Result<Response<Bytes>, RunError> {
        let (mut parts, body) = req.into_parts();
        parts.uri = format!("/.well-known/atoll/cron/{handler}").parse().map_err(|e| RunError::Internal(format!("{e}")))?;
        self.inner.send(Request::from_parts(parts, body)).await
    }

    /// Stops taking requests, lets those under way finish (up to the wall time), and removes
    /// the container.
    pub async fn stop(&self) {
        let inner = &self.inner;
        let all = u32::try_from(inner.limits.concurrent).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(inner.limits.wall, inner.slots.acquire_many(all)).await;
        inner.slots.close();
        inner.retire(Duration::from_secs(2)).await;
    }
}

/// Stops the container of an idle bundle (scale to zero).
async fn reap(inner: std::sync::Weak<Inner>, idle: Duration) {
    let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(100)));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let quiet = || inner.last_used.lock().expect("not poisoned").elapsed() >= idle;
        if !quiet() {
            continue;
        }
        // Only with no request under way: holding every slot keeps new ones out meanwhile;
        // idleness is checked again under them (a request may have ended since).
        let all = u32::try_from(inner.limits.concurrent).unwrap_or(u32::MAX);
        let Ok(_all) = inner.slots.try_acquire_many(all) else { continue };
        if quiet() && inner.live.lock().await.is_some() {
            tracing::info!(bundle = %inner.name, idle_s = idle.as_secs(), "scaling an idle bundle to zero");
            let entry = format!("idle for {} s: scaled to zero", idle.as_secs());
            inner.observe.journal.add(&inner.name, crate::journal::Entry::new("instance", entry));
            inner.retire(Duration::from_secs(2)).await;
        }
    }
}

impl Inner {
    /// Runs a new container and waits for its port.
    async fn launch(&self) -> Result<Started, String> {
        let started = self.containers.run(self.spec.clone()).await?;
        let Some(ip) = started.ip else {
            self.containers.remove(&started.id, Duration::ZERO).await;
            return Err("its container has no address on a bridge".into());
        };
        let addr = SocketAddr::new(ip, self.port);
        let deadline = Instant::now() + READY_WITHIN;
        let mut pause = Duration::from_millis(5);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let entry = format!("container {} ready on port {} (a cold start)", &started.id[..12.min(started.id.len())], self.port);
                self.observe.journal.add(&self.name, crate::journal::Entry::new("instance", entry));
                self.observe.metrics.cold_start(&self.observe.labels);
                self.observe.metrics.instances(&self.observe.labels).inc();
                return Ok(started);
            }
            if let Some(code) = self.containers.exited(&started.id).await {
                let tail = self.containers.log_tail(&started.id).await;
                self.containers.remove(&started.id, Duration::ZERO).await;
                // The tail stays in this host's log and the bundle's journal: it may hold anything.
                tracing::warn!(bundle = %self.name, code, output = %tail, "a bundle's container exited before serving");
                self.observe.journal.add(&self.name, crate::journal::Entry::new("instance", format!("exited with status {code}: {tail}")));
                return Err(format!(
                    "its container exited with status {code} before serving on port {} (its output: `atoll bundle logs {}` on this host)",
                    self.port, self.name
                ));
            }
            if Instant::now() >= deadline {
                self.containers.remove(&started.id, Duration::ZERO).await;
                return Err(format!(
                    "its container did not accept connections on port {} within {} s (does the image serve HTTP there? set `port`)",
                    self.port,
                    READY_WITHIN.as_secs()
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// The live container's address and CPU clock, started anew if it was recycled, scaled to
    /// zero or has stopped.
    async fn instance(&self) -> Result<(SocketAddr, Option<CpuClock>), RunError> {
        let mut live = self.live.lock().await;
        if let Some(s) = live.as_ref()
            && let Some(code) = self.containers.exited(&s.id).await
        {
            tracing::warn!(bundle = %self.name, container = %s.id, code, "the bundle's container stopped; starting another");
            self.containers.remove(&s.id, Duration::ZERO).await;
            self.observe.metrics.instances(&self.observe.labels).dec();
            *live = None;
        }
        if live.is_none() {
            *live = Some(self.launch().await.map_err(RunError::InstanceStart)?);
        }
        let s = live.as_ref().expect("set above");
        let ip = s.ip.expect("launched with an address");
        Ok((SocketAddr::new(ip, self.port), s.cpu.clone()))
    }

    /// Removes the container (after a request it did not answer in time, when idle, or at
    /// stop).
    async fn retire(&self, grace: Duration) {
        if let Some(s) = self.live.lock().await.take() {
            self.containers.remove(&s.id, grace).await;
            self.observe.metrics.instances(&self.observe.labels).dec();
        }
    }

    /// Proxies `req` to the container within the bundle's wall time and CPU time.
    async fn send(&self, req: Request<Bytes>) -> Result<Response<Bytes>, RunError> {
        let wall = self.limits.wall;
        let start = Instant::now();
        let _slot = tokio::time::timeout(wall, self.slots.acquire())
            .await
            .map_err(|_| RunError::Busy { concurrent: self.limits.concurrent, waited_ms: wall.as_millis() as u64 })?
            .map_err(|_| RunError::Stopping)?;
        let (addr, clock) = self.instance().await?;
        let left = wall.saturating_sub(start.elapsed());
        let cpu = self.limits.cpu;
        let request = self.meter.limit(clock.as_ref(), cpu, forward(addr, req, self.limits.max_output_bytes));
        let result = match tokio::time::timeout(left, request).await {
            Ok(Ok(r)) => r,
            Ok(Err(over)) => {
                tracing::warn!(bundle = %self.name, "a request ran past its {} ms of CPU time ({over}): replacing the container", cpu.as_millis());
                let entry = format!("a request ran past its {} ms of CPU time ({over}): container replaced", cpu.as_millis());
                self.observe.journal.add(&self.name, crate::journal::Entry::new("limit", entry));
                self.retire(Duration::ZERO).await;
                Err(RunError::CpuLimit { limit_ms: cpu.as_millis() as u64 })
            }
            Err(_) => {
                tracing::warn!(bundle = %self.name, "a request ran past its wall time: replacing the container");
                self.retire(Duration::ZERO).await;
                Err(RunError::WallTimeout { limit_ms: wall.as_millis() as u64 })
            }
        };
        *self.last_used.lock().expect("not poisoned") = Instant::now();
        result
    }
}

/// Sends `req` to `addr` over a new HTTP/1.1 connection.
async fn forward(addr: SocketAddr, req: Request<Bytes>, max_output: usize) -> Result<Response<Bytes>, RunError> {
    let unreachable = |e: &dyn std::fmt::Display| RunError::Instance(format!("{addr}: {e}"));
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| unreachable(&e))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| unreachable(&e))?;
    tokio::spawn(conn);
    let (parts, body) = req.into_parts();
    let resp = send.send_request(Request::from_parts(parts, Full::new(body))).await.map_err(|e| unreachable(&e))?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, max_output).collect().await.map_err(|_| RunError::OutputTooLarge { limit: max_output })?.to_bytes();
    Ok(Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_carries_port_env_secrets_limits_and_label() {
        let m = Manifest::from_record(&serde_json::json!({
            "name": "hello-oci", "version": "1.0.0", "runtime": "oci", "entry": "docker.io/library/busybox:1.36",
            "command": ["httpd", "-f", "-p", "9000"], "port": 9000,
            "routes": [{"method": "GET", "path": "/hello", "handler": "http"}],
            "permissions": {"env": ["GREETING", "UNSET"]},
            "limits": {"memoryMb": 32},
        }))
        .unwrap();
        let grants = Grants {
            data_dir: None,
            env: BTreeMap::from([("GREETING".into(), "hi".into()), ("UNDECLARED".into(), "x".into())]),
            secrets: BTreeMap::from([("TOKEN".into(), "s3cret".into())]),
        };
        let limits = atoll_runner::Policy::default().effective(&m);
        let spec = container_spec("hello", &container_name("hello", Some("bafyreiabcdefgh12345678")), &m, &grants, &limits);
        assert_eq!(spec.name.as_deref(), Some("atoll-bundle-hello-12345678"));
        assert_eq!(spec.image, "docker.io/library/busybox:1.36");
        assert_eq!(spec.cmd.as_deref(), Some(&["httpd".to_owned(), "-f".into(), "-p".into(), "9000".into()][..]));
        assert_eq!(spec.env, ["PORT=9000", "GREETING=hi", "TOKEN=s3cret"]);
        assert_eq!((spec.resources.memory, spec.resources.cpus_milli), (Some(32 << 20), Some(1000)));
        assert_eq!(spec.labels.get("atoll.bundle").map(String::as_str), Some("hello"));
        assert!(spec.security.no_new_privileges);
        assert_eq!(spec.labels.get(SECRET_ENV_LABEL).map(String::as_str), Some("TOKEN"));
        spec.validate().unwrap();
    }
}
