//! The container engine of one host.
//!
//! Each container lives in `containers/<id>/`: `container.json` (its [`ContainerRecord`],
//! replaced atomically), the bundle's `config.json`, the overlay `rootfs/` with its `upper/`
//! and `work/`, the files bind-mounted over `/etc/{hosts,hostname,resolv.conf}`, and what the
//! shim keeps: `shim.sock`, `container.log*`, `exit.json`.
//!
//! A monitor task per running container waits on its shim's socket; the exit drives the
//! restart policy (with [`Backoff`]). A health task runs the probe with `runtime exec`. At
//! start, [`Engine::open`] re-adopts containers whose shims are alive, records exits that
//! happened while the daemon was away, and brings back `always`/`unless-stopped` containers
//! after a reboot.
#![forbid(unsafe_code)]

pub mod events;
pub mod names;
pub mod record;
pub mod volumes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::watch;

use atoll_image::{Digest, ImageService, Users};
use atoll_runtime::bundle::{self, BundleInput, ImageDefaults};
use atoll_runtime::driver::{self, ShimClient};
use atoll_runtime::probe::{CgroupMode, Runtime};
use atoll_runtime::shim::{ExitStatus, ShimConfig};
use atoll_runtime::{rootfs, user};
use atoll_spec::health::ProbeResult;
use atoll_spec::{Backoff, ContainerSpec, HealthOnFailure, HealthStatus, HealthTracker, NetworkMode};

pub use record::{ContainerRecord, State};

/// How long `stop` waits for the container to exit after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_STOP_TIMEOUT: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("{query:?} matches several containers ({candidates}); give more of the ID")]
    Ambiguous { query: String, candidates: String },
    #[error("the name {0:?} is already used by another container; remove it or pick another name")]
    NameTaken(String),
    #[error(transparent)]
    Spec(#[from] atoll_spec::SpecError),
    #[error("container {0} is running: stop it first, or use --force")]
    Running(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("image {image}")]
    Image {
        image: String,
        #[source]
        source: Box<atoll_image::ImageError>,
    },
    #[error("preparing the container")]
    Prepare(#[source] std::io::Error),
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error("starting container {name}")]
    Start {
        name: String,
        #[source]
        source: driver::DriverError,
    },
    #[error("signalling container {name}")]
    Signal {
        name: String,
        #[source]
        source: driver::DriverError,
    },
    #[error("--init needs a static init binary (Debian package tini provides /usr/bin/tini-static)")]
    NoInit,
    #[error("running {what}")]
    Exec {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Network(#[from] atoll_net::NetError),
    #[error(transparent)]
    Volume(#[from] volumes::VolumeError),
    #[error("saving the state of container {id}")]
    Save {
        id: String,
        #[source]
        source: atoll_util::Error,
    },
}

impl EngineError {
    /// Whether the caller asked for something wrong (vs. the engine failing).
    pub fn kind(&self) -> atoll_image::ErrorKind {
        use atoll_image::ErrorKind as K;
        match self {
            Self::NotFound(_) => K::NotFound,
            Self::Ambiguous { .. } | Self::NameTaken(_) | Self::Running(_) | Self::NotRunning(_) => K::Conflict,
            Self::Spec(_) | Self::User(_) | Self::NoInit => K::Invalid,
            Self::Bundle(bundle::BundleError::NoCommand) => K::Invalid,
            Self::Image { source, .. } => source.kind(),
            Self::Network(e) => e.kind(),
            Self::Volume(e) => e.kind(),
            Self::Rootfs(rootfs::RootfsError::TooManyLayers { .. }) => K::Invalid,
            // A runtime refusing a container is mostly the configuration's fault (bad
            // workdir, command not found in the image…).
            Self::Start { .. } => K::Invalid,
            _ => K::Internal,
        }
    }
}

/// What `Engine::wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    /// Not running (now, or after the current run).
    NotRunning,
    /// The end of the next run, even if it has not started yet.
    NextExit,
    /// The container is removed (`--rm` after its exit, or `rm`).
    Removed,
}

/// Fixed facts about this host and how to run containers on it.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// This binary, re-executed as `atoll shim`.
    pub exe: PathBuf,
    pub runtime: Runtime,
    pub cgroup_mode: CgroupMode,
    /// A static init for `--init` (tini-static), if installed.
    pub init_binary: Option<PathBuf>,
}

struct Slot {
    rec: Mutex<ContainerRecord>,
    /// Bumped on every change, so waiters can watch the record.
    changed: watch::Sender<u64>,
    /// Serialises lifecycle operations (start, stop, remove) on one container.
    op: tokio::sync::Mutex<()>,
    /// Consecutive restarts without a long-enough run, for the backoff.
    consecutive: Mutex<u32>,
    /// The next start waits for an attacher before running the process.
    attach_next: Mutex<bool>,
}

impl Slot {
    fn new(rec: ContainerRecord) -> Arc<Self> {
        Arc::new(Self {
            rec: Mutex::new(rec),
            changed: watch::channel(0).0,
            op: tokio::sync::Mutex::new(()),
            consecutive: Mutex::new(0),
            attach_next: Mutex::new(false),
        })
    }

    fn get(&self) -> ContainerRecord {
        self.rec.lock().unwrap().clone()
    }
}

pub struct Engine {
    cfg: EngineConfig,
    images: Arc<ImageService>,
    nets: Arc<atoll_net::Networks>,
    events: Arc<events::EventBus>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    volumes: volumes::Volumes,
    this: Weak<Engine>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("data_dir", &self.cfg.data_dir).finish_non_exhaustive()
    }
}

/// Lets the image service ask the engine what is in use, without a reference cycle.
#[derive(Debug, Default)]
pub struct EngineUsers(OnceLock<Weak<Engine>>);

impl EngineUsers {
    pub fn set(&self, engine: &Arc<Engine>) {
        let _ = self.0.set(Arc::downgrade(engine));
    }
}

impl Users for EngineUsers {
    fn containers_using(&self, id: &Digest) -> Vec<String> {
        let Some(e) = self.0.get().and_then(Weak::upgrade) else { return Vec::new() };
        let id = id.to_string();
        e.list(true).into_iter().filter(|r| r.image_id == id).map(|r| r.name).collect()
    }

    fn layers_in_use(&self) -> BTreeSet<Digest> {
        let Some(e) = self.0.get().and_then(Weak::upgrade) else { return BTreeSet::new() };
        e.list(true).iter().flat_map(|r| r.layers.iter().filter_map(|l| l.parse().ok())).collect()
    }
}

fn now() -> String {
    atoll_util::now_rfc3339()
}

fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_owned())
}

/// Reads a file of the container's rootfs, resolving symlinks inside that root only (an image
/// whose `/etc/passwd` links to a host file cannot make the daemon read it).
fn read_in_root(root: &Path, rel: &str) -> Option<String> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let fd = rustix::fs::openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut s = String::new();
    fs::File::from(fd).take(4 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

/// RLIMIT (soft, hard) for containers: `want`, but never above the host's hard limit (raising
/// it needs CAP_SYS_RESOURCE, which a sandbox may lack).
fn clamp_rlimit(resource: rustix::process::Resource, want: (u64, u64)) -> (u64, u64) {
    let r = rustix::process::getrlimit(resource);
    let hard = r.maximum.unwrap_or(u64::MAX);
    (want.0.min(hard), want.1.min(hard))
}

/// A container's rlimits: nofile and nproc at 1048576 unless its `--ulimit`s say otherwise,
/// each clamped to the host's hard limit.
fn rlimits(spec: &ContainerSpec) -> BTreeMap<String, (u64, u64)> {
    use rustix::process::Resource as R;
    let resource = |name: &str| match name {
        "as" => Some(R::As),
        "core" => Some(R::Core),
        "cpu" => Some(R::Cpu),
        "data" => Some(R::Data),
        "fsize" => Some(R::Fsize),
        "locks" => Some(R::Locks),
        "memlock" => Some(R::Memlock),
        "msgqueue" => Some(R::Msgqueue),
        "nice" => Some(R::Nice),
        "nofile" => Some(R::Nofile),
        "nproc" => Some(R::Nproc),
        "rss" => Some(R::Rss),
        "rtprio" => Some(R::Rtprio),
        "rttime" => Some(R::Rttime),
        "sigpending" => Some(R::Sigpending),
        "stack" => Some(R::Stack),
        _ => None,
    };
    let mut wanted: BTreeMap<String, (u64, u64)> =
        [("nofile".to_owned(), (1_048_576, 1_048_576)), ("nproc".to_owned(), (1_048_576, 1_048_576))].into();
    for (name, u) in &spec.ulimits {
        wanted.insert(name.clone(), (atoll_spec::Ulimit::value(u.soft), atoll_spec::Ulimit::value(u.hard)));
    }
    wanted.into_iter().filter_map(|(name, want)| resource(&name).map(|r| (name, clamp_rlimit(r, want)))).collect()
}

impl Engine {
    /// Opens the engine: loads every container record, re-adopts live shims, records exits
    /// that happened meanwhile and restarts what the policies ask for.
    pub async fn open(cfg: EngineConfig, images: Arc<ImageService>, net: atoll_net::NetConfig) -> Result<Arc<Self>, EngineError> {
        let dir = cfg.data_dir.join("containers");
        fs::create_dir_all(&dir).map_err(EngineError::Prepare)?;
        fs::create_dir_all(cfg.data_dir.join("runtime")).map_err(EngineError::Prepare)?;
        let mut slots = Vec::new();
        for entry in fs::read_dir(&dir).map_err(EngineError::Prepare)?.flatten() {
            let path = entry.path();
            let rec: Option<ContainerRecord> = fs::read(path.join("container.json")).ok().and_then(|d| serde_json::from_slice(&d).ok());
            let Some(rec) = rec else {
                // A create that never finished: nothing refers to it.
                tracing::warn!(dir = %path.display(), "removing a half-created container");
                let _ = rootfs::unmount(&path.join("rootfs"));
                let _ = fs::remove_dir_all(&path);
                continue;
            };
            slots.push(Slot::new(rec));
        }
        // Networking first: a re-adopted container's namespace gets back what it is missing.
        let owners = slots
            .iter()
            .map(|s| s.get())
            .map(|r| atoll_net::OwnerInit { id: r.id, name: r.name, endpoints: r.endpoints, ports: r.ports })
            .collect();
        let nets = atoll_net::Networks::open(net, owners).await?;
        let events = Arc::new(events::EventBus::default());
        let volumes = volumes::Volumes::new(&cfg.data_dir);
        let engine = Arc::new_cyclic(|this| Self { cfg, images, nets, events, slots: Mutex::default(), volumes, this: this.clone() });
        let boot = boot_id();
        for slot in slots {
            engine.slots.lock().unwrap().insert(slot.get().id, slot.clone());
            engine.readopt(&slot, boot.as_deref()).await;
        }
        Ok(engine)
    }

    /// The host's container networks.
    pub fn networks(&self) -> &Arc<atoll_net::Networks> {
        &self.nets
    }

    /// The containers (names) whose mounts name volume `name`.
    pub fn volume_users(&self, name: &str) -> Vec<String> {
        self.volume_users_all().remove(name).unwrap_or_default()
    }

    /// For every volume some container mounts, those containers (names).
    pub fn volume_users_all(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.list(true) {
            for m in r.spec.mounts.iter().filter(|m| m.kind == atoll_spec::MountKind::Volume) {
                out.entry(m.source.clone()).or_default().push(r.name.clone());
            }
        }
        out
    }

    pub fn volumes(&self) -> &volumes::Volumes {
        &self.volumes
    }

    /// Removes a volume no container refers to.
    pub fn remove_volume(&self, name: &str) -> Result<volumes::VolumeRecord, volumes::VolumeError> {
        self.volumes.remove(name, &self.volume_users(name))
    }

    /// Resource usage of a running container (None if it is not running).
    pub fn usage(&self, rec: &ContainerRecord) -> Option<atoll_runtime::stats::Usage> {
        rec.is_running().then(|| atoll_runtime::stats::read_usage(self.cfg.cgroup_mode, &format!("/atoll/{}", rec.id), rec.pid))
    }

    /// Lifecycle events of this daemon.
    pub fn events(&self) -> &Arc<events::EventBus> {
        &self.events
    }

    /// Emits a container event carrying its name and image, plus `extra`.
    fn emit(&self, rec: &ContainerRecord, action: &str, extra: &[(&str, String)]) {
        let mut attrs = vec![("name", rec.name.clone()), ("image", rec.image.clone())];
        attrs.extend(extra.iter().cloned());
        self.events.emit(events::Event::new("container", action, &rec.id, &attrs));
    }

    fn arc(&self) -> Arc<Engine> {
        self.this.upgrade().expect("engine alive")
    }

    async fn readopt(&self, slot: &Arc<Slot>, boot: Option<&str>) {
        let rec = slot.get();
        let dir = self.state_dir(&rec.id);
        if !matches!(rec.state, State::Running | State::Restarting) {
            let client = ShimClient::new(&dir);
            if client.alive().await {
                // The daemon died between spawning the shim and recording the start: the record
                // never called it started, so undo the start and let record and kernel agree.
                tracing::warn!(container = %rec.name, "stopping a container whose start was interrupted");
                let _ = client.kill(9).await;
                self.wait_shim_done(&rec.id).await;
            }
        }
        if rec.state == State::Exited && rec.spec.restart.restart_on_daemon_start(rec.stopped_by_user) {
            // Docker's rule: `always` (and `unless-stopped` unless the user stopped it) come back
            // whenever the daemon starts.
            self.spawn_start(slot.clone(), false, "daemon start");
            return;
        }
        if !matches!(rec.state, State::Running | State::Restarting) {
            return;
        }
        let client = ShimClient::new(&dir);
        if rec.state == State::Running && client.alive().await {
            tracing::info!(container = %rec.name, "re-adopted running container");
            self.spawn_monitor(slot.clone());
            self.spawn_health(slot.clone());
            return;
        }
        let rebooted = rec.boot_id.as_deref() != boot;
        let exit = driver::read_exit(&dir).unwrap_or(ExitStatus {
            exit_code: 255,
            signal: None,
            finished_at: now(),
            unknown: true,
            oom_killed: false,
        });
        tracing::info!(container = %rec.name, exit_code = exit.exit_code, rebooted, "container exited while the daemon was away");
        self.record_exit(slot, &exit);
        let rec = slot.get();
        if !rebooted && rec.spec.restart.should_restart(exit.exit_code, rec.restart_count, rec.stopped_by_user) {
            // The policy would have restarted it had we been here.
            self.spawn_start(slot.clone(), true, "restart policy");
        } else if rec.spec.restart.restart_on_daemon_start(rec.stopped_by_user) {
            self.spawn_start(slot.clone(), false, "daemon start");
        }
    }

    fn spawn_start(&self, slot: Arc<Slot>, count_restart: bool, why: &'static str) {
        let engine = self.arc();
        tokio::spawn(async move {
            let _op = slot.op.lock().await;
            if slot.get().is_running() {
                return;
            }
            if count_restart {
                let _ = engine.update(&slot, |r| r.restart_count += 1);
            }
            tracing::info!(container = %slot.get().name, why, "starting");
            if let Err(e) = engine.start_locked(&slot).await {
                tracing::warn!(container = %slot.get().name, error = %e, why, "start at daemon start failed");
            }
        });
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.cfg.data_dir.join("containers").join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.state_dir(id).join(atoll_runtime::shim::LOG_FILE)
    }

    fn runtime_root(&self) -> PathBuf {
        self.cfg.data_dir.join("runtime").join(&self.cfg.runtime.name)
    }

    /// Persists the record. Watchers are told first: they learn of a change as soon as it is
    /// made, and what they see is at worst a moment ahead of the disk (re-adoption reconciles
    /// after a crash).
    fn save(&self, slot: &Slot) -> Result<(), EngineError> {
        slot.changed.send_modify(|v| *v += 1);
        let rec = slot.get();
        let data = serde_json::to_vec_pretty(&rec).expect("record serialises");
        atoll_util::atomic_write(&self.state_dir(&rec.id).join("container.json"), &data, 0o600)
            .map_err(|source| EngineError::Save { id: rec.id.clone(), source })
    }

    fn update(&self, slot: &Slot, f: impl FnOnce(&mut ContainerRecord)) -> Result<(), EngineError> {
        f(&mut slot.rec.lock().unwrap());
        self.save(slot)
    }

    /// Finds a container by exact ID, exact name, or unique ID prefix.
    fn slot(&self, query: &str) -> Result<Arc<Slot>, EngineError> {
        let slots = self.slots.lock().unwrap();
        if let Some(s) = slots.get(query) {
            return Ok(s.clone());
        }
        if let Some(s) = slots.values().find(|s| s.rec.lock().unwrap().name == query) {
            return Ok(s.clone());
        }
        let hits: Vec<&Arc<Slot>> =
            if query.len() >= 3 { slots.iter().filter(|(id, _)| id.starts_with(query)).map(|(_, s)| s).collect() } else { vec![] };
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(EngineError::NotFound(query.to_owned())),
            many => Err(EngineError::Ambiguous {
                query: query.to_owned(),
                candidates: many.iter().map(|s| s.rec.lock().unwrap().id[..12].to_owned()).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    pub fn get(&self, query: &str) -> Result<ContainerRecord, EngineError> {
        Ok(self.slot(query)?.get())
    }

    /// All containers (running ones only unless `all`), newest first.
    pub fn list(&self, all: bool) -> Vec<ContainerRecord> {
        let mut v: Vec<ContainerRecord> = self
            .slots
            .lock()
            .unwrap()
            .values()
            .map(|s| s.get())
            .filter(|r| all || matches!(r.state, State::Running | State::Restarting))
            .collect();
        v.sort_by(|a, b| b.created.cmp(&a.created).then(a.name.cmp(&b.name)));
        v
    }

    /// A receiver that changes whenever the container's record does.
    pub fn watch(&self, query: &str) -> Result<(ContainerRecord, watch::Receiver<u64>), EngineError> {
        let slot = self.slot(query)?;
        Ok((slot.get(), slot.changed.subscribe()))
    }

    /// Creates a container (pulling its image if missing) and, if `start`, starts it.
    pub async fn create(&self, mut spec: ContainerSpec, start: bool) -> Result<ContainerRecord, EngineError> {
        spec.validate()?;
        if spec.network == NetworkMode::Bridge && spec.networks.is_empty() {
            spec.networks.push(atoll_spec::NetworkAttachment::new(atoll_spec::DEFAULT_NETWORK));
        }
        if spec.init && self.cfg.init_binary.is_none() {
            return Err(EngineError::NoInit);
        }
        let image_err = |source| EngineError::Image { image: spec.image.clone(), source: Box::new(source) };
        let detail = match self.images.inspect(&spec.image) {
            Ok(d) => d,
            Err(atoll_image::ImageError::NotFound(_)) => {
                tracing::info!(image = %spec.image, "image not present, pulling");
                self.images.pull(&spec.image, None, Arc::new(|_| {})).await.map_err(image_err)?;
                self.images.inspect(&spec.image).map_err(image_err)?
            }
            Err(e) => return Err(image_err(e)),
        };
        let id = atoll_util::random_hex(32);
        let name = {
            let slots = self.slots.lock().unwrap();
            let taken = |n: &str| slots.values().any(|s| s.rec.lock().unwrap().name == n);
            match &spec.name {
                Some(n) if taken(n) => return Err(EngineError::NameTaken(n.clone())),
                Some(n) => n.clone(),
                None => names::generate(taken),
            }
        };
        let dir = self.state_dir(&id);
        let made = (|| {
            for d in ["rootfs", "upper", "work"] {
                fs::create_dir_all(dir.join(d))?;
            }
            // The log exists from the start, so followers can open it before the first line.
            fs::File::create(dir.join(atoll_runtime::shim::LOG_FILE))?;
            Ok::<(), std::io::Error>(())
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&dir);
            return Err(EngineError::Prepare(e));
        }
        atoll_util::crash_point("create.dir-made");
        let (endpoints, ports) = if spec.network == NetworkMode::Bridge {
            let mut exposed = self.defaults_for(&detail.summary.id).exposed;
            exposed.extend(spec.expose.iter().copied());
            match self.nets.allocate(&id, &name, &spec.networks, &spec.publish, &exposed, spec.publish_all).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(e.into());
                }
            }
        } else {
            Default::default()
        };
        for (a, e) in spec.networks.iter_mut().zip(&endpoints) {
            a.network = e.network.clone();
        }
        atoll_util::crash_point("create.allocated");
        let rec = ContainerRecord {
            id: id.clone(),
            name,
            image: spec.image.clone(),
            image_id: detail.summary.id.clone(),
            layers: detail.layers.iter().map(|l| l.diff_id.clone()).collect(),
            spec,
            created: now(),
            state: State::Created,
            pid: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            exit_unknown: false,
            restart_count: 0,
            oom_killed: false,
            stopped_by_user: false,
            health: None,
            boot_id: None,
            error: None,
            endpoints,
            ports,
        };
        let slot = Slot::new(rec);
        // Insert under the lock that checked the name, re-checking it (two creates may race).
        let inserted = {
            let mut slots = self.slots.lock().unwrap();
            let n = slot.get().name;
            if slots.values().any(|s| s.rec.lock().unwrap().name == n) {
                Err(EngineError::NameTaken(n))
            } else {
                slots.insert(id.clone(), slot.clone());
                Ok(())
            }
        }
        .and_then(|()| self.save(&slot))
        .inspect_err(|_| {
            self.slots.lock().unwrap().remove(&id);
            let _ = fs::remove_dir_all(&dir);
        });
        if let Err(e) = inserted {
            let _ = self.nets.release(&id).await;
            return Err(e);
        }
        tracing::info!(container = %slot.get().name, id = %id, image = %slot.get().image, "created");
        self.emit(&slot.get(), "create", &[]);
        if start {
            let _op = slot.op.lock().await;
            self.start_locked(&slot).await?;
        }
        Ok(slot.get())
    }

    /// Starts a stopped container (a running one is left as it is). With `attach`, the process
    /// waits for the first attacher, so a foreground client sees all of its output.
    pub async fn start(&self, query: &str, attach: bool) -> Result<ContainerRecord, EngineError> {
        let slot = self.slot(query)?;
        let _op = slot.op.lock().await;
        if slot.get().is_running() {
            return Ok(slot.get());
        }
        *slot.consecutive.lock().unwrap() = 0;
        *slot.attach_next.lock().unwrap() = attach && (slot.get().spec.interactive || slot.get().spec.tty);
        self.start_locked(&slot).await?;
        Ok(slot.get())
    }

    async fn start_locked(&self, slot: &Arc<Slot>) -> Result<(), EngineError> {
        let result = self.start_inner(slot).await;
        if let Err(e) = &result {
            let msg = error_chain(e);
            let _ = rootfs::unmount(&self.state_dir(&slot.get().id).join("rootfs"));
            let _ = self.update(slot, |r| {
                r.error = Some(msg);
                if r.state == State::Restarting {
                    r.state = State::Exited;
                }
            });
        }
        result
    }

    async fn start_inner(&self, slot: &Arc<Slot>) -> Result<(), EngineError> {
        let rec = slot.get();
        let dir = self.state_dir(&rec.id);
        let store = self.images.store();
        let root = dir.join("rootfs");
        if !rootfs::is_mounted(&root) {
            let lowers: Vec<PathBuf> =
                rec.layers.iter().rev().filter_map(|d| d.parse::<Digest>().ok()).map(|d| store.layer_diff(&d)).collect();
            rootfs::mount_overlay(&lowers, &dir.join("upper"), &dir.join("work"), &root)?;
        }
        let image = self.image_defaults(&rec);
        let user_spec = rec.spec.user.clone().or_else(|| image.user.clone()).unwrap_or_default();
        let identity = user::resolve(
            &user_spec,
            &read_in_root(&root, "etc/passwd").unwrap_or_default(),
            &read_in_root(&root, "etc/group").unwrap_or_default(),
        )?;
        let hostname = rec.spec.hostname.clone().unwrap_or_else(|| rec.id[..12].to_owned());
        let netns = if rec.spec.network == NetworkMode::Bridge { Some(self.nets.activate(&rec.id).await?) } else { None };
        atoll_util::crash_point("start.network-up");
        let etc = self.write_etc_files(&dir, &hostname, &rec).await.map_err(EngineError::Prepare)?;
        let mut volume_sources = std::collections::BTreeMap::new();
        for m in rec.spec.mounts.iter().filter(|m| m.kind == atoll_spec::MountKind::Volume) {
            self.volumes.create(&m.source, BTreeMap::new())?;
            volume_sources.insert(m.target.clone(), self.volumes.data_path(&m.source));
        }
        let input = BundleInput {
            id: &rec.id,
            name: &rec.name,
            spec: &rec.spec,
            image: &image,
            identity: &identity,
            rootfs: root.clone(),
            hostname,
            etc_files: etc,
            volume_sources,
            cgroups_path: format!("/atoll/{}", rec.id),
            rlimits: rlimits(&rec.spec),
            init_binary: self.cfg.init_binary.clone(),
            arch: std::env::consts::ARCH,
            netns,
        };
        let spec = bundle::config(&input)?;
        let data = serde_json::to_vec_pretty(&spec).expect("spec serialises");
        // Regenerated at every start: atomic, but not worth an fsync.
        atoll_util::replace_file(&dir.join("config.json"), &data, 0o600)
            .map_err(|source| EngineError::Save { id: rec.id.clone(), source })?;
        // The previous shim of this container (if it just exited) finishes with a runtime
        // delete; a create before that would collide.
        self.wait_shim_done(&rec.id).await;
        let _ = fs::remove_file(dir.join(atoll_runtime::shim::EXIT_FILE));
        let shim = ShimConfig {
            id: rec.id.clone(),
            bundle: dir.clone(),
            state_dir: dir.clone(),
            runtime: self.cfg.runtime.path.clone(),
            runtime_root: self.runtime_root(),
            log_max_size: rec.spec.log.max_size,
            log_max_files: rec.spec.log.max_files,
            tty: rec.spec.tty,
            stdin: rec.spec.interactive,
            wait_attach: std::mem::take(&mut *slot.attach_next.lock().unwrap()),
        };
        let (pid, started_at) =
            driver::spawn_shim(&self.cfg.exe, &shim).await.map_err(|source| EngineError::Start { name: rec.name.clone(), source })?;
        atoll_util::crash_point("start.shim-spawned");
        let boot = boot_id();
        let has_health = bundle::health_check(&rec.spec, &image).is_some();
        self.update(slot, |r| {
            r.state = State::Running;
            r.pid = Some(pid);
            r.started_at = Some(started_at);
            r.finished_at = None;
            r.exit_code = None;
            r.exit_unknown = false;
            r.stopped_by_user = false;
            r.boot_id = boot;
            r.error = None;
            r.health = has_health.then(HealthTracker::default);
        })?;
        tracing::info!(container = %rec.name, pid, "started");
        self.emit(&rec, "start", &[]);
        self.spawn_monitor(slot.clone());
        self.spawn_health(slot.clone());
        Ok(())
    }

    /// Waits until the shim of a container that exited is completely done: it answers
    /// waiters, writes `exit.json`, deletes the runtime's state and removes its socket last.
    /// A socket that outlives its shim (killed) is cleared, with the runtime's state.
    async fn wait_shim_done(&self, id: &str) {
        let sock = self.state_dir(id).join(atoll_runtime::shim::SOCKET);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while sock.exists() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if sock.exists() {
            let _ = fs::remove_file(&sock);
            self.runtime_delete(id).await;
        }
    }

    /// `runtime delete --force`: drops whatever state the runtime keeps for the container.
    async fn runtime_delete(&self, id: &str) {
        let _ = tokio::process::Command::new(&self.cfg.runtime.path)
            .arg("--root")
            .arg(self.runtime_root())
            .args(["delete", "--force", id])
            .output()
            .await;
    }

    async fn write_etc_files(&self, dir: &Path, hostname: &str, rec: &ContainerRecord) -> std::io::Result<Vec<(PathBuf, &'static str)>> {
        let host_resolv = || fs::read_to_string(&self.nets.config().resolv_conf).unwrap_or_default();
        let (hosts, resolv) = match rec.spec.network {
            NetworkMode::Host => (fs::read_to_string("/etc/hosts").unwrap_or_default(), host_resolv()),
            NetworkMode::None => {
                (format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"), host_resolv())
            }
            NetworkMode::Bridge => self.nets.etc_files(&rec.id, hostname).await,
        };
        let hosts = hosts + &self.extra_hosts(rec).await;
        let files = [
            ("hosts", hosts, "/etc/hosts"),
            ("hostname", format!("{hostname}\n"), "/etc/hostname"),
            ("resolv.conf", resolv, "/etc/resolv.conf"),
        ];
        let mut out = Vec::new();
        for (name, content, target) in files {
            let p = dir.join(name);
            atoll_util::replace_file(&p, content.as_bytes(), 0o644).map_err(std::io::Error::other)?;
            out.push((p, target));
        }
        Ok(out)
    }

    /// The `--add-host` lines of a container's `/etc/hosts`; `host-gateway` is the host's
    /// address on its first network (127.0.0.1 with the host's network).
    async fn extra_hosts(&self, rec: &ContainerRecord) -> String {
        let mut gateway = None;
        if rec.spec.network == NetworkMode::Host {
            gateway = Some(std::net::IpAddr::from([127, 0, 0, 1]));
        } else if let Some(e) = rec.endpoints.first() {
            gateway = self.nets.list().await.into_iter().find(|n| n.id == e.network_id).map(|n| n.gateway4.into());
        }
        let mut out = String::new();
        for h in &rec.spec.extra_hosts {
            if let Ok((name, ip)) = atoll_spec::container::parse_extra_host(h)
                && let Some(ip) = ip.or(gateway)
            {
                out.push_str(&format!("{ip}\t{name}\n"));
            }
        }
        out
    }

    /// What the container's image config says (empty if the image is gone from the store).
    fn image_defaults(&self, rec: &ContainerRecord) -> ImageDefaults {
        self.defaults_for(&rec.image_id)
    }

    fn defaults_for(&self, image_id: &str) -> ImageDefaults {
        let config: serde_json::Value = image_id
            .parse::<Digest>()
            .ok()
            .and_then(|d| self.images.store().read_metadata_blob(&d).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        ImageDefaults::from_config(&config)
    }

    fn spawn_monitor(&self, slot: Arc<Slot>) {
        let engine = self.arc();
        tokio::spawn(async move {
            let id = slot.get().id;
            let dir = engine.state_dir(&id);
            let exit = match ShimClient::new(&dir).wait().await {
                Ok(e) => e,
                // A short-lived container can be gone before we ask: its exit file says how it ended.
                Err(e) => driver::read_exit(&dir).unwrap_or_else(|| {
                    tracing::warn!(container = %slot.get().name, error = %e, "lost the shim and it left no exit status");
                    ExitStatus { exit_code: 255, signal: None, finished_at: now(), unknown: true, oom_killed: false }
                }),
            };
            engine.on_exit(&slot, exit).await;
        });
    }

    fn record_exit(&self, slot: &Slot, exit: &ExitStatus) {
        let dir = self.state_dir(&slot.get().id);
        if let Err(e) = rootfs::unmount(&dir.join("rootfs")) {
            tracing::warn!(error = %e, "unmounting a stopped container's rootfs");
        }
        let _ = self.update(slot, |r| {
            r.state = State::Exited;
            r.pid = None;
            r.exit_code = Some(exit.exit_code);
            r.exit_unknown = exit.unknown;
            r.oom_killed = exit.oom_killed;
            r.finished_at = Some(exit.finished_at.clone());
        });
        if exit.oom_killed {
            self.emit(&slot.get(), "oom", &[]);
        }
        let mut extra = vec![("exitCode", exit.exit_code.to_string())];
        if let Some(s) = exit.signal {
            extra.push(("signal", s.to_string()));
        }
        self.emit(&slot.get(), "die", &extra);
    }

    async fn on_exit(&self, slot: &Arc<Slot>, exit: ExitStatus) {
        let rec = slot.get();
        if rec.state != State::Running {
            return;
        }
        tracing::info!(container = %rec.name, exit_code = exit.exit_code, "exited");
        self.record_exit(slot, &exit);
        let rec = slot.get();
        if rec.spec.auto_remove {
            let engine = self.arc();
            let id = rec.id.clone();
            tokio::spawn(async move {
                if let Err(e) = engine.remove(&id, true).await {
                    tracing::warn!(container = %id, error = %e, "auto-remove failed");
                }
            });
            return;
        }
        if !rec.spec.restart.should_restart(exit.exit_code, rec.restart_count, rec.stopped_by_user) {
            return;
        }
        let ran = match (rec.started_at.as_deref().and_then(record::parse_time), rec.finished_at.as_deref().and_then(record::parse_time)) {
            (Some(s), Some(f)) => (f - s).try_into().unwrap_or(Duration::ZERO),
            _ => Duration::ZERO,
        };
        let delay = {
            let mut c = slot.consecutive.lock().unwrap();
            let (d, next) = Backoff::default().next(*c, ran, fastrand::f64());
            *c = next;
            d
        };
        let _ = self.update(slot, |r| r.state = State::Restarting);
        tracing::info!(container = %rec.name, delay_ms = delay.as_millis() as u64, "restarting after backoff");
        let engine = self.arc();
        let slot = slot.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _op = slot.op.lock().await;
            // Stopped or removed meanwhile?
            if slot.get().state != State::Restarting || !engine.slots.lock().unwrap().contains_key(&slot.get().id) {
                return;
            }
            let _ = engine.update(&slot, |r| r.restart_count += 1);
            engine.emit(&slot.get(), "restart", &[("restartCount", slot.get().restart_count.to_string())]);
            if let Err(e) = engine.start_locked(&slot).await {
                tracing::warn!(container = %slot.get().name, error = %e, "restart failed");
            }
        });
    }

    fn spawn_health(&self, slot: Arc<Slot>) {
        let rec = slot.get();
        let Some(cfg) = bundle::health_check(&rec.spec, &self.image_defaults(&rec)) else { return };
        let engine = self.arc();
        let started = rec.started_at.clone();
        tokio::spawn(async move {
            let started_instant = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(cfg.interval).await;
                let now_rec = slot.get();
                if now_rec.state != State::Running || now_rec.started_at != started {
                    return;
                }
                let (code, output) = match engine.probe(&now_rec, &cfg).await {
                    Ok(r) => r,
                    Err(e) => (-1, e.to_string()),
                };
                let since = started_instant.elapsed();
                let result = ProbeResult { at_ms: since.as_millis() as u64, exit_code: code, output };
                let mut changed = None;
                let _ = engine.update(&slot, |r| {
                    if let Some(h) = r.health.as_mut() {
                        changed = h.record(&cfg, since, result);
                    }
                });
                if let Some(status) = changed {
                    tracing::info!(container = %now_rec.name, health = %status, "health changed");
                    engine.emit(&now_rec, "health_status", &[("healthStatus", status.to_string())]);
                    if status == HealthStatus::Unhealthy {
                        match cfg.on_failure {
                            HealthOnFailure::None => {}
                            HealthOnFailure::Stop => {
                                let _ = engine.stop(&now_rec.id, None).await;
                                return;
                            }
                            HealthOnFailure::Restart => {
                                let _ = engine.restart(&now_rec.id, None).await;
                                return;
                            }
                        }
                    }
                }
            }
        });
    }

    /// Runs the health probe once, with its timeout.
    async fn probe(&self, rec: &ContainerRecord, cfg: &atoll_spec::HealthConfig) -> Result<(i32, String), EngineError> {
        let mut cmd = self.exec_command(rec, &ExecRequest { cmd: cfg.argv(), ..Default::default() });
        cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| EngineError::Exec { what: "the health probe".into(), source })?;
        match tokio::time::timeout(cfg.timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                text.truncate(4096);
                Ok((out.status.code().unwrap_or(-1), text))
            }
            Ok(Err(source)) => Err(EngineError::Exec { what: "the health probe".into(), source }),
            Err(_) => Ok((-1, format!("timed out after {:?}", cfg.timeout))),
        }
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout` seconds.
    pub async fn stop(&self, query: &str, timeout: Option<u64>) -> Result<ContainerRecord, EngineError> {
        let slot = self.slot(query)?;
        let _op = slot.op.lock().await;
        self.stop_and_report(&slot, timeout).await?;
        Ok(slot.get())
    }

    async fn stop_locked(&self, slot: &Arc<Slot>, timeout: Option<u64>) -> Result<(), EngineError> {
        let rec = slot.get();
        if rec.state == State::Restarting {
            // Cancel the pending restart.
            self.update(slot, |r| {
                r.state = State::Exited;
                r.stopped_by_user = true;
            })?;
            return Ok(());
        }
        if rec.state != State::Running {
            return Ok(());
        }
        self.update(slot, |r| r.stopped_by_user = true)?;
        let secs = timeout.or(rec.spec.stop_timeout).unwrap_or(DEFAULT_STOP_TIMEOUT);
        let signal = self.stop_signal(&rec);
        let client = ShimClient::new(&self.state_dir(&rec.id));
        if signal != 9 && client.kill(signal).await.is_ok() && self.wait_exit(slot, Duration::from_secs(secs)).await {
            return Ok(());
        }
        let _ = client.kill(9).await;
        self.wait_exit(slot, KILL_GRACE).await;
        Ok(())
    }

    /// `stop` with its event.
    async fn stop_and_report(&self, slot: &Arc<Slot>, timeout: Option<u64>) -> Result<(), EngineError> {
        let was_running = slot.get().is_running();
        self.stop_locked(slot, timeout).await?;
        if was_running {
            self.emit(&slot.get(), "stop", &[]);
        }
        Ok(())
    }

    fn stop_signal(&self, rec: &ContainerRecord) -> i32 {
        bundle::stop_signal(&rec.spec, &self.image_defaults(rec))
    }

    /// Waits until the container is no longer running; false on timeout.
    async fn wait_exit(&self, slot: &Arc<Slot>, timeout: Duration) -> bool {
        let mut rx = slot.changed.subscribe();
        let fut = async {
            loop {
                if !slot.get().is_running() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, fut).await.is_ok()
    }

    /// Sends a signal. Like docker, a killed container is not restarted by its policy.
    pub async fn kill(&self, query: &str, signal: i32) -> Result<(), EngineError> {
        let slot = self.slot(query)?;
        let rec = slot.get();
        if !rec.is_running() {
            return Err(EngineError::NotRunning(rec.name));
        }
        if matches!(signal, 9 | 15 | 2) {
            self.update(&slot, |r| r.stopped_by_user = true)?;
        }
        self.emit(&rec, "kill", &[("signal", signal.to_string())]);
        ShimClient::new(&self.state_dir(&rec.id)).kill(signal).await.map_err(|source| EngineError::Signal { name: rec.name, source })
    }

    pub async fn restart(&self, query: &str, timeout: Option<u64>) -> Result<ContainerRecord, EngineError> {
        let slot = self.slot(query)?;
        let _op = slot.op.lock().await;
        self.stop_and_report(&slot, timeout).await?;
        *slot.consecutive.lock().unwrap() = 0;
        self.emit(&slot.get(), "restart", &[]);
        self.start_locked(&slot).await?;
        Ok(slot.get())
    }

    /// Blocks until the container is not running and returns its exit code. With `next_exit`,
    /// waits for the end of the next run even if it has not started yet (for `run`, which
    /// attaches before starting).
    pub async fn wait(&self, query: &str, condition: WaitCondition) -> Result<i32, EngineError> {
        let slot = self.slot(query)?;
        let mut rx = slot.changed.subscribe();
        let first = slot.get().started_at;
        loop {
            let rec = slot.get();
            let done = match condition {
                WaitCondition::NextExit => rec.state == State::Exited && rec.started_at != first,
                WaitCondition::NotRunning => matches!(rec.state, State::Exited | State::Created),
                WaitCondition::Removed => !self.slots.lock().unwrap().contains_key(&rec.id),
            };
            if done {
                return Ok(rec.exit_code.unwrap_or(0));
            }
            if rx.changed().await.is_err() {
                return Ok(slot.get().exit_code.unwrap_or(0));
            }
        }
    }

    /// Removes a container (killing it first with `force`).
    pub async fn remove(&self, query: &str, force: bool) -> Result<ContainerRecord, EngineError> {
        let slot = self.slot(query)?;
        let _op = slot.op.lock().await;
        let rec = slot.get();
        if matches!(rec.state, State::Running | State::Restarting) {
            if !force {
                return Err(EngineError::Running(rec.name));
            }
            self.update(&slot, |r| r.stopped_by_user = true)?;
            if rec.state == State::Running {
                let _ = ShimClient::new(&self.state_dir(&rec.id)).kill(9).await;
                self.wait_exit(&slot, KILL_GRACE).await;
            }
        }
        let dir = self.state_dir(&rec.id);
        if rec.state != State::Created {
            self.wait_shim_done(&rec.id).await;
        }
        rootfs::unmount(&dir.join("rootfs"))?;
        atoll_util::crash_point("remove.unmounted");
        if let Err(e) = self.nets.release(&rec.id).await {
            tracing::warn!(container = %rec.name, error = %e, "tearing down the container's network");
        }
        atoll_util::crash_point("remove.released");
        // A shim that saw the exit deletes the runtime's state itself; otherwise do it here.
        if slot.get().exit_unknown || slot.get().state == State::Created {
            self.runtime_delete(&rec.id).await;
        }
        self.slots.lock().unwrap().remove(&rec.id);
        // Waiters learn it is gone (no need to save a record about to be deleted).
        slot.rec.lock().unwrap().state = State::Exited;
        slot.changed.send_modify(|v| *v += 1);
        fs::remove_dir_all(&dir).map_err(EngineError::Prepare)?;
        tracing::info!(container = %rec.name, "removed");
        self.emit(&rec, "destroy", &[]);
        Ok(slot.get())
    }

    /// Connects a container to one more network (`atoll network connect`).
    pub async fn connect(&self, query: &str, mut att: atoll_spec::NetworkAttachment) -> Result<ContainerRecord, EngineError> {
        let slot = self.slot(query)?;
        let _op = slot.op.lock().await;
        let rec = slot.get();
        if rec.spec.network != NetworkMode::Bridge {
            let mode = if rec.spec.network == NetworkMode::Host { "host" } else { "none" };
            return Err(atoll_spec::SpecError::NetworkModeConflict(mode.into()).into());
        }
        let e = self.nets.connect(&rec.id, &rec.name, &att).await?;
        att.network = e.network.clone();
        let attrs = [("name", e.network.clone()), ("container", rec.id.clone()), ("containerName", rec.name.clone())];
        self.events.emit(events::Event::new("network", "connect", &e.network_id, &attrs));
        self.update(&slot, |r| {
            r.endpoints.push(e);
            r.spec.networks.push(att);
        })?;
        self.refresh_hosts(&slot.get()).await;
        Ok(slot.get())
    }

    /// Rewrites a running container's `/etc/hosts` after its addresses changed. In place, not
    /// by rename: the file is bind-mounted, and a rename would leave the container the old one.
    async fn refresh_hosts(&self, rec: &ContainerRecord) {
        if !rec.is_running() {
            return;
        }
        let hostname = rec.spec.hostname.clone().unwrap_or_else(|| rec.id[..12].to_owned());
        let (hosts, _) = self.nets.etc_files(&rec.id, &hostname).await;
        let hosts = hosts + &self.extra_hosts(rec).await;
        if let Err(e) = fs::write(self.state_dir(&rec.id).join("hosts"), hosts) {
            tracing::warn!(container = %rec.name, error = %e, "updating /etc/hosts");
        }
    }

    /// Disconnects a container from a network (`atoll network disconnect`).
    pub async fn disconnect(&self, query: &str, network: &str) -> Result<ContainerRecord, EngineError> {
        let slot = self.slot(query)?;
        let _op = slot.op.lock().await;
        let rec = slot.get();
        let rest = self.nets.disconnect(&rec.id, network).await?;
        if let Some(e) = rec.endpoints.iter().find(|e| !rest.contains(e)) {
            let attrs = [("name", e.network.clone()), ("container", rec.id.clone()), ("containerName", rec.name.clone())];
            self.events.emit(events::Event::new("network", "disconnect", &e.network_id, &attrs));
        }
        self.update(&slot, |r| {
            r.spec.networks.retain(|a| rest.iter().any(|e| e.network == a.network));
            r.endpoints = rest;
        })?;
        self.refresh_hosts(&slot.get()).await;
        Ok(slot.get())
    }

    /// Attaches to a running container's stdio through its shim.
    pub async fn attach(&self, query: &str) -> Result<tokio::net::UnixStream, EngineError> {
        let rec = self.get(query)?;
        if !rec.is_running() {
            return Err(EngineError::NotRunning(rec.name));
        }
        ShimClient::new(&self.state_dir(&rec.id)).attach().await.map_err(|source| EngineError::Signal { name: rec.name, source })
    }

    /// A `runtime exec` command for `req` in container `rec` (not yet spawned).
    pub fn exec_command(&self, rec: &ContainerRecord, req: &ExecRequest) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.cfg.runtime.path);
        c.arg("--root").arg(self.runtime_root()).arg("exec");
        if let Some(u) = &req.user {
            c.arg("--user").arg(u);
        }
        if let Some(w) = &req.workdir {
            c.arg("--cwd").arg(w);
        }
        if req.tty {
            c.arg("--tty");
        }
        for e in &req.env {
            c.arg("--env").arg(e);
        }
        c.arg(&rec.id).args(&req.cmd);
        c
    }

    /// Starts a process in a running container; the caller streams its output. With `tty`,
    /// the runtime runs on the slave side of a pty pair whose master comes back: the runtime
    /// sees a real terminal and gives the process its own.
    pub fn exec(&self, query: &str, req: &ExecRequest) -> Result<ExecProcess, EngineError> {
        let rec = self.get(query)?;
        if !rec.is_running() {
            return Err(EngineError::NotRunning(rec.name));
        }
        if req.cmd.is_empty() {
            return Err(EngineError::Spec(atoll_spec::SpecError::HealthCommand));
        }
        let what = || format!("exec in {}", rec.name);
        let mut c = self.exec_command(&rec, req);
        c.kill_on_drop(true);
        if req.tty {
            let (master, slave) = open_pty(req.tty_size).map_err(|source| EngineError::Exec { what: what(), source })?;
            let io = |f: &std::fs::File| f.try_clone().map(std::process::Stdio::from);
            let wrap = |source| EngineError::Exec { what: what(), source };
            c.stdin(io(&slave).map_err(wrap)?).stdout(io(&slave).map_err(wrap)?).stderr(io(&slave).map_err(wrap)?);
            let child = c.spawn().map_err(wrap)?;
            drop(slave);
            return Ok(ExecProcess { child, pty: Some(master) });
        }
        c.stdin(if req.interactive { std::process::Stdio::piped() } else { std::process::Stdio::null() })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = c.spawn().map_err(|source| EngineError::Exec { what: what(), source })?;
        Ok(ExecProcess { child, pty: None })
    }

    /// The processes of a container: (pid, uid, cpu seconds, command line).
    pub async fn top(&self, query: &str) -> Result<Vec<ProcessInfo>, EngineError> {
        let rec = self.get(query)?;
        if !rec.is_running() {
            return Err(EngineError::NotRunning(rec.name));
        }
        let out = tokio::process::Command::new(&self.cfg.runtime.path)
            .arg("--root")
            .arg(self.runtime_root())
            .args(["ps", "--format", "json", &rec.id])
            .output()
            .await
            .map_err(|source| EngineError::Exec { what: "runtime ps".into(), source })?;
        let pids: Vec<i32> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let ticks = 100.0;
        Ok(pids
            .into_iter()
            .filter_map(|pid| {
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let after = stat.rsplit_once(')')?.1;
                let f: Vec<&str> = after.split_whitespace().collect();
                let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks;
                let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()?;
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let cmd = cmdline
                    .split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ");
                Some(ProcessInfo { pid, uid, cpu_seconds: cpu, command: cmd })
            })
            .collect())
    }

    /// Stops every running container (for `atoll daemon --stop-containers-on-exit`).
    pub async fn stop_all(&self) {
        let running: Vec<String> = self.list(false).into_iter().map(|r| r.id).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for id in running {
            let e = self.arc();
            tasks.spawn(async move {
                let slot = e.slot(&id)?;
                let _op = slot.op.lock().await;
                let was_stopped = slot.get().stopped_by_user;
                e.stop_locked(&slot, None).await?;
                // Stopped by the daemon, not the user: unless-stopped comes back at next start.
                e.update(&slot, |r| r.stopped_by_user = was_stopped)
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// A started exec: its process, and the pty master for a terminal session.
#[derive(Debug)]
pub struct ExecProcess {
    pub child: tokio::process::Child,
    pub pty: Option<std::fs::File>,
}

/// A pty pair (master, slave) of `size` (rows, cols).
fn open_pty(size: Option<(u16, u16)>) -> std::io::Result<(std::fs::File, std::fs::File)> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(name.as_c_str(), OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())?;
    // The runtime's side is a plain byte pipe: only the container's own terminal should echo
    // and translate.
    let mut t = rustix::termios::tcgetattr(&slave)?;
    t.make_raw();
    rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &t)?;
    let (rows, cols) = size.unwrap_or((24, 80));
    rustix::termios::tcsetwinsize(&master, rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 })?;
    Ok((std::fs::File::from(master), std::fs::File::from(slave)))
}

/// `exec` options.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// `UID[:GID]`.
    #[serde(default)]
    pub user: Option<String>,
    /// Pass the request body to the process's stdin.
    #[serde(default)]
    pub interactive: bool,
    /// Give the process a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Terminal size (rows, columns).
    #[serde(default)]
    pub tty_size: Option<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ProcessInfo {
    pub pid: i32,
    pub uid: u32,
    pub cpu_seconds: f64,
    pub command: String,
}

/// `error: cause: cause`, for records and logs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
