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
mod exec;
mod lifecycle;
pub mod names;
pub mod populate;
pub mod record;
mod start;
mod supervise;
pub mod volumes;

pub use exec::{ExecLog, ExecProcess, ExecRequest, ProcessInfo};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::watch;

use atoll_image::{Digest, ImageService, Users};
use atoll_runtime::bundle;
use atoll_runtime::driver::{self, ShimClient};
use atoll_runtime::probe::{CgroupMode, Runtime};
use atoll_runtime::shim::ExitStatus;
use atoll_runtime::{rootfs, user};

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
    #[error("starting container {name} ({hint})", hint = atoll_runtime::failure::MOUNT_TYPE_HINT)]
    StartMountType {
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
            Self::Start { .. } | Self::StartMountType { .. } => K::Invalid,
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
    op: Arc<tokio::sync::Mutex<()>>,
    /// Consecutive restarts without a long-enough run, for the backoff.
    consecutive: Mutex<u32>,
    /// The next start waits for an attacher before running the process.
    attach_next: Mutex<bool>,
}

impl Slot {
    pub(crate) fn new(rec: ContainerRecord) -> Arc<Self> {
        Arc::new(Self {
            rec: Mutex::new(rec),
            changed: watch::channel(0).0,
            op: Arc::new(tokio::sync::Mutex::new(())),
            consecutive: Mutex::new(0),
            attach_next: Mutex::new(false),
        })
    }

    pub(crate) fn get(&self) -> ContainerRecord {
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
    /// The next container's shim, already started.
    shims: Arc<atoll_runtime::driver::Standby>,
    /// Makes the kernel ready for the runtime's cgroup migration as a start is requested.
    primer: atoll_runtime::migration::Primer,
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

impl Engine {
    /// Opens the engine: loads every container record, re-adopts live shims, records exits
    /// that happened meanwhile and restarts what the policies ask for.
    pub async fn open(cfg: EngineConfig, images: Arc<ImageService>, net: atoll_net::NetConfig) -> Result<Arc<Self>, EngineError> {
        let dir = cfg.data_dir.join("containers");
        fs::create_dir_all(&dir).map_err(EngineError::Prepare)?;
        fs::create_dir_all(cfg.data_dir.join("runtime")).map_err(EngineError::Prepare)?;
        let mut slots = Vec::new();
        let mut half_made = Vec::new();
        for entry in fs::read_dir(&dir).map_err(EngineError::Prepare)?.flatten() {
            let path = entry.path();
            let rec: Option<ContainerRecord> = fs::read(path.join("container.json")).ok().and_then(|d| serde_json::from_slice(&d).ok());
            let Some(rec) = rec else {
                // A create that never finished, or a removal that had dropped the record:
                // nothing refers to it.
                tracing::warn!(dir = %path.display(), "removing a half-made or half-removed container");
                // Never removed through a mounted rootfs: if it stays mounted, so does the directory.
                if rootfs::unmount(&path.join("rootfs")).is_ok() {
                    half_made.push(entry.file_name().to_string_lossy().into_owned());
                }
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
        let shims = Arc::new(atoll_runtime::driver::Standby::new(&cfg.exe));
        // Ready for the first start too.
        shims.warm();
        let primer = atoll_runtime::migration::Primer::new(cfg.cgroup_mode);
        let engine =
            Arc::new_cyclic(|this| Self { cfg, images, nets, events, slots: Mutex::default(), volumes, shims, primer, this: this.clone() });
        for id in half_made {
            // Its shim may still be finishing (its runtime delete), or have died before it did.
            engine.wait_shim_done(&id).await;
            let _ = fs::remove_dir_all(engine.state_dir(&id));
        }
        let boot = boot_id();
        for slot in slots {
            let rec = slot.get();
            if rec.path.is_empty()
                && let Ok(argv) = bundle::argv(&rec.spec, &engine.image_defaults(&rec))
            {
                // Records made before they kept the command.
                let _ = engine.update(&slot, |r| (r.path, r.args) = (argv[0].clone(), argv[1..].to_vec()));
            }
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

    /// The file holding container `id`'s CPU time while it runs, and the cgroup version that
    /// says its format ([`atoll_runtime::stats::cpu_usage_file`]).
    pub fn cpu_usage_file(&self, id: &str) -> (atoll_runtime::probe::CgroupMode, std::path::PathBuf) {
        (self.cfg.cgroup_mode, atoll_runtime::stats::cpu_usage_file(self.cfg.cgroup_mode, &format!("/atoll/{id}")))
    }

    /// Lifecycle events of this daemon.
    pub fn events(&self) -> &Arc<events::EventBus> {
        &self.events
    }

    /// Emits a container event carrying its name and image, plus `extra`.
    pub(crate) fn emit(&self, rec: &ContainerRecord, action: &str, extra: &[(&str, String)]) {
        let mut attrs = vec![("name", rec.name.clone()), ("image", rec.image.clone())];
        attrs.extend(extra.iter().cloned());
        self.events.emit(events::Event::new("container", action, &rec.id, &attrs));
    }

    pub(crate) fn arc(&self) -> Arc<Engine> {
        self.this.upgrade().expect("engine alive")
    }

    pub(crate) async fn readopt(&self, slot: &Arc<Slot>, boot: Option<&str>) {
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
        if rec.spec.auto_remove && !matches!(rec.state, State::Running | State::Restarting) {
            // Docker's rule: an auto-remove container that is not running is removed at start.
            self.spawn_auto_remove(&rec.id);
            return;
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
        if rec.spec.auto_remove {
            self.spawn_auto_remove(&rec.id);
            return;
        }
        if !rebooted && rec.spec.restart.should_restart(exit.exit_code, rec.restart_count, rec.stopped_by_user) {
            // The policy would have restarted it had we been here.
            self.spawn_start(slot.clone(), true, "restart policy");
        } else if rec.spec.restart.restart_on_daemon_start(rec.stopped_by_user) {
            self.spawn_start(slot.clone(), false, "daemon start");
        }
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

    pub(crate) fn runtime_root(&self) -> PathBuf {
        self.cfg.data_dir.join("runtime").join(&self.cfg.runtime.name)
    }

    /// Persists the record. Watchers are told first: they learn of a change as soon as it is
    /// made, and what they see is at worst a moment ahead of the disk (re-adoption reconciles
    /// after a crash).
    ///
    /// Always replaced atomically; fsynced unless the container is removed when it exits
    /// (`--rm`): a daemon crash loses nothing either way (the page cache outlives it), and after
    /// a power loss such a container is removed at the next start whatever its record says
    /// (or, if the record itself was lost, its directory is removed as a half-made one).
    pub(crate) fn save(&self, slot: &Slot) -> Result<(), EngineError> {
        slot.changed.send_modify(|v| *v += 1);
        let rec = slot.get();
        let data = serde_json::to_vec_pretty(&rec).expect("record serialises");
        let path = self.state_dir(&rec.id).join("container.json");
        let written = if rec.spec.auto_remove {
            atoll_util::replace_file(&path, &data, 0o600)
        } else {
            atoll_util::atomic_write(&path, &data, 0o600)
        };
        written.map_err(|source| EngineError::Save { id: rec.id.clone(), source })
    }

    pub(crate) fn update(&self, slot: &Slot, f: impl FnOnce(&mut ContainerRecord)) -> Result<(), EngineError> {
        f(&mut slot.rec.lock().unwrap());
        self.save(slot)
    }

    /// Finds a container by exact ID, exact name, or unique ID prefix.
    /// The container `query` names with its operation lock held, once it is sure to still be
    /// one of this engine's: a removal that held the lock first makes this `NotFound`, never an
    /// operation on a container whose directory is gone (found by the API fuzzer: a restart
    /// racing a removal answered 500).
    pub(crate) async fn locked_slot(&self, query: &str) -> Result<(Arc<Slot>, tokio::sync::OwnedMutexGuard<()>), EngineError> {
        let slot = self.slot(query)?;
        let guard = slot.op.clone().lock_owned().await;
        if !self.slots.lock().unwrap().contains_key(&slot.get().id) {
            return Err(EngineError::NotFound(query.to_owned()));
        }
        Ok((slot, guard))
    }

    pub(crate) fn slot(&self, query: &str) -> Result<Arc<Slot>, EngineError> {
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
}

/// `error: cause: cause`, for records and logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
