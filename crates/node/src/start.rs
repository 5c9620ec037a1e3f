//! Creating and starting containers: the record and its resources at create (name, network
//! addresses and ports, anonymous volumes), then at each start the overlay rootfs, the user,
//! `/etc` files, volumes (filled from the image on first mount), the OCI bundle and the shim.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atoll_image::Digest;
use atoll_runtime::bundle::{self, BundleInput, ImageDefaults};
use atoll_runtime::driver::{self, ShimClient};
use atoll_runtime::shim::ShimConfig;
use atoll_runtime::{rootfs, user};
use atoll_spec::{ContainerSpec, HealthTracker, NetworkMode};

use crate::{ContainerRecord, Engine, EngineError, Slot, State, boot_id, error_chain, names, now};

/// Reads a file of the container's rootfs, resolving symlinks inside that root only (an image
/// whose `/etc/passwd` links to a host file cannot make the daemon read it).
fn read_in_root(root: &Path, rel: &str) -> Option<String> {
    use rustix::fs::{Mode, OFlags};
    let dir = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let fd = atoll_util::open_in_root(std::os::fd::AsFd::as_fd(&dir), rel, OFlags::RDONLY | OFlags::CLOEXEC).ok()?;
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
    /// Creates a container (pulling its image if missing) and, if `start`, starts it.
    pub async fn create(&self, mut spec: ContainerSpec, start: bool) -> Result<ContainerRecord, EngineError> {
        spec.validate()?;
        // A start usually follows within milliseconds (`run` is a create, then a start): the
        // earlier the priming, the less of its grace period the runtime waits for.
        self.primer.prime();
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
        let image = self.defaults_for(&detail.summary.id);
        // No command is a mistake of the spec's: refused here, before anything is made.
        let argv = bundle::argv(&spec, &image)?;
        // Anonymous volumes: `-v /path`, and each image `VOLUME` nothing else is mounted at.
        for target in &image.volumes {
            let t = target.trim_end_matches('/');
            if !spec.mounts.iter().any(|m| m.target.trim_end_matches('/') == t) {
                spec.mounts.push(atoll_spec::Mount {
                    kind: atoll_spec::MountKind::Volume,
                    source: String::new(),
                    target: t.to_owned(),
                    read_only: false,
                    options: vec![],
                });
            }
        }
        let mut anonymous = Vec::new();
        for m in spec.mounts.iter_mut().filter(|m| m.is_anonymous()) {
            m.source = atoll_util::random_hex(32);
            anonymous.push(m.source.clone());
        }
        let dir = self.state_dir(&id);
        let undo_volumes = |volumes: &crate::volumes::Volumes| {
            for v in &anonymous {
                let _ = volumes.remove(v, &[]);
            }
        };
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
        let anon_label: BTreeMap<String, String> = [(crate::volumes::LABEL_ANONYMOUS.to_owned(), String::new())].into();
        for v in &anonymous {
            if let Err(e) = self.volumes.create(v, anon_label.clone()) {
                undo_volumes(&self.volumes);
                let _ = fs::remove_dir_all(&dir);
                return Err(e.into());
            }
        }
        let (endpoints, ports) = if spec.network == NetworkMode::Bridge {
            let mut exposed = image.exposed.clone();
            exposed.extend(spec.expose.iter().copied());
            match self.nets.allocate(&id, &name, &spec.networks, &spec.publish, &exposed, spec.publish_all).await {
                Ok(r) => r,
                Err(e) => {
                    undo_volumes(&self.volumes);
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
            path: argv[0].clone(),
            args: argv[1..].to_vec(),
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
            undo_volumes(&self.volumes);
            let _ = fs::remove_dir_all(&dir);
        });
        if let Err(e) = inserted {
            let _ = self.nets.release(&id).await;
            return Err(e);
        }
        tracing::info!(container = %slot.get().name, id = %id, image = %slot.get().image, "created");
        self.emit(&slot.get(), "create", &[]);
        if start {
            let started = {
                // Removed meanwhile (by its id, which any caller knew as soon as it was made)?
                let (slot, _op) = self.locked_slot(&id).await?;
                self.start_locked(&slot).await
            };
            self.remove_if_start_failed(&slot, started).await?;
        }
        Ok(slot.get())
    }

    /// Docker's rule: an auto-remove (`--rm`) container whose start failed is removed; the
    /// start's error is returned either way.
    async fn remove_if_start_failed(&self, slot: &Slot, started: Result<(), EngineError>) -> Result<(), EngineError> {
        let Err(e) = started else { return Ok(()) };
        let rec = slot.get();
        if rec.spec.auto_remove
            && let Err(r) = self.remove(&rec.id, true, true).await
        {
            tracing::warn!(container = %rec.name, error = %r, "removing an auto-remove container whose start failed");
        }
        Err(e)
    }

    /// Starts a stopped container (a running one is left as it is). With `attach`, the process
    /// waits for the first attacher, so a foreground client sees all of its output.
    pub async fn start(&self, query: &str, attach: bool) -> Result<ContainerRecord, EngineError> {
        let (slot, op) = self.locked_slot(query).await?;
        let started = {
            let _op = op;
            if slot.get().is_running() {
                return Ok(slot.get());
            }
            *slot.consecutive.lock().unwrap() = 0;
            *slot.attach_next.lock().unwrap() = attach && (slot.get().spec.interactive || slot.get().spec.tty);
            self.start_locked(&slot).await
        };
        self.remove_if_start_failed(&slot, started).await?;
        Ok(slot.get())
    }

    pub(crate) async fn start_locked(&self, slot: &Arc<Slot>) -> Result<(), EngineError> {
        let result = self.start_inner(slot).await;
        if let Err(e) = &result {
            let msg = error_chain(e);
            // Docker's record of a command that cannot run: 127 (not found) or 126.
            let failure = atoll_runtime::failure::classify(&msg);
            let _ = rootfs::unmount(&self.state_dir(&slot.get().id).join("rootfs"));
            let _ = self.update(slot, |r| {
                r.error = Some(msg);
                if let Some(f) = failure {
                    r.exit_code = Some(f.exit_code());
                }
                if r.state == State::Restarting {
                    r.state = State::Exited;
                }
            });
        }
        result
    }

    pub(crate) async fn start_inner(&self, slot: &Arc<Slot>) -> Result<(), EngineError> {
        // The runtime's cgroup migration comes about 10 ms from here (see `migration`).
        self.primer.prime();
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
            if !m.no_copy() {
                self.populate(&rec, &m.source, &root, &m.target).await?;
            }
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
            no_fsync: rec.spec.auto_remove,
        };
        let (pid, started_at) = self.shims.start(&shim).await.map_err(|source| match &source {
            driver::DriverError::Start(m) if atoll_runtime::failure::is_mount_type_mismatch(m) => {
                EngineError::StartMountType { name: rec.name.clone(), source }
            }
            _ => EngineError::Start { name: rec.name.clone(), source },
        })?;
        atoll_util::crash_point("start.shim-spawned");
        let boot = boot_id();
        let has_health = bundle::health_check(&rec.spec, &image).is_some();
        let saved = self.update(slot, |r| {
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
        });
        if let Err(e) = saved {
            // The process runs (a container that fills the disk at once gets here): failing the
            // start would kill it for the daemon's own bookkeeping. The record in memory is
            // right, the next change writes it whole, and a restart re-adopts from the shim.
            tracing::warn!(container = %rec.name, error = %e, "the started container's record could not be saved; it runs, and is saved at its next change");
        }
        tracing::info!(container = %rec.name, pid, "started");
        self.emit(&rec, "start", &[]);
        self.spawn_monitor(slot.clone());
        self.spawn_health(slot.clone());
        Ok(())
    }

    /// Waits until the shim of a container that exited is completely done: it answers
    /// waiters, writes `exit.json`, deletes the runtime's state and removes its socket last.
    /// A socket that outlives its shim (killed) is cleared, with the runtime's state.
    pub(crate) async fn wait_shim_done(&self, id: &str) {
        let dir = self.state_dir(id);
        let sock = dir.join(atoll_runtime::shim::SOCKET);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        // A shim says when it is done by closing a `done` connection (a socket nobody listens
        // on, left by a killed shim, is cleared at once); an older shim that cannot say is
        // watched until its socket goes.
        let told = tokio::time::timeout_at(deadline, ShimClient::new(&dir).done()).await.unwrap_or(false);
        while !told && sock.exists() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if sock.exists() {
            let _ = fs::remove_file(&sock);
            self.runtime_delete(id).await;
        }
    }

    /// `runtime delete --force`: drops whatever state the runtime keeps for the container.
    pub(crate) async fn runtime_delete(&self, id: &str) {
        let _ = tokio::process::Command::new(&self.cfg.runtime.path)
            .arg("--root")
            .arg(self.runtime_root())
            .args(["delete", "--force", id])
            .output()
            .await;
    }

    /// Fills an empty volume from the image before the container first sees it (off the
    /// async threads: an image directory can be large).
    async fn populate(&self, rec: &ContainerRecord, volume: &str, root: &Path, target: &str) -> Result<(), EngineError> {
        let (volumes, name, root, dest) = (self.volumes.clone(), volume.to_owned(), root.to_owned(), target.to_owned());
        let filled = tokio::task::spawn_blocking(move || volumes.populate(&name, &root, &dest))
            .await
            .map_err(|e| EngineError::Prepare(std::io::Error::other(e)))??;
        if let Some(c) = filled
            && c.entries > 0
        {
            tracing::info!(container = %rec.name, volume, target, entries = c.entries, bytes = c.bytes, "filled the volume from the image");
        }
        Ok(())
    }

    pub(crate) async fn write_etc_files(
        &self,
        dir: &Path,
        hostname: &str,
        rec: &ContainerRecord,
    ) -> std::io::Result<Vec<(PathBuf, &'static str)>> {
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
    pub(crate) async fn extra_hosts(&self, rec: &ContainerRecord) -> String {
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
    pub(crate) fn image_defaults(&self, rec: &ContainerRecord) -> ImageDefaults {
        self.defaults_for(&rec.image_id)
    }

    pub(crate) fn defaults_for(&self, image_id: &str) -> ImageDefaults {
        let config: serde_json::Value = image_id
            .parse::<Digest>()
            .ok()
            .and_then(|d| self.images.store().read_metadata_blob(&d).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        ImageDefaults::from_config(&config)
    }
}
