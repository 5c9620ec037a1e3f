//! `nebula -config FILE` as a managed child that outlives the daemon.
//!
//! Like `atoll dns serve`, Nebula runs in its own process group (a terminal's ^C or the daemon's end
//! do not reach it) and keeps working while the daemon is away. Unlike it, it has no control
//! socket, so the supervisor keeps a pidfile (`nebula.pid`: pid, start time, and the hashes of
//! the config it runs) in its state directory:
//!
//! - [`Supervisor::start`] adopts the Nebula the pidfile names when it is alive (same pid *and*
//!   start time, so a reused pid is not mistaken for it) and its restart-relevant settings are
//!   unchanged (a changed file is then reloaded with SIGHUP); otherwise it stops that one and
//!   starts a new one, and waits until Nebula logs its interface active.
//! - A task watches the process with a pidfd: when Nebula dies it is restarted after a capped
//!   exponential backoff (reset once a run lasted a minute).
//! - [`Supervisor::update`] renders a new config: unchanged, reloaded (SIGHUP) or restarted, as
//!   [`MeshConfig::restart_key`] decides. [`Supervisor::reload`] re-reads the same file (new
//!   certificate files) and returns once Nebula logged that it reloaded its certificate.
//! - Nebula's stdout and stderr go to `nebula.log` (opened `O_APPEND`), kept under
//!   `log_limit` bytes (the older part in `nebula.log.1`).
//! - Dropping the supervisor leaves Nebula running (for the next daemon);
//!   [`Supervisor::stop`] ends it.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal};
use sha2::Digest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Mutex, Notify};

use crate::logfile::{self, Follower};
use crate::{MeshConfig, MeshError, Tunnel, config, status};

pub const CONFIG_FILE: &str = "nebula.yml";
pub const PID_FILE: &str = "nebula.pid";
pub const LOG_FILE: &str = "nebula.log";

/// How the supervisor runs Nebula.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// Holds the config, pidfile, log and the sshd keys; created if missing.
    pub state_dir: PathBuf,
    /// The `nebula` binary.
    pub nebula: PathBuf,
    /// Put before `nebula` on its command line, e.g. `nsenter --net=/run/netns/X --` in tests.
    /// It must exec (not fork) Nebula, so the pid it starts is Nebula's.
    pub command_prefix: Vec<OsString>,
    /// `nebula.log` is kept under this many bytes.
    pub log_limit: u64,
    /// Nebula's sshd on `127.0.0.1:PORT` for [`Supervisor::tunnels`]; None: no status.
    pub status_port: Option<u16>,
    /// How long Nebula may take to bring its interface up, or to reload.
    pub ready_timeout: Duration,
    /// Restart backoff: first delay and cap.
    pub restart_base: Duration,
    pub restart_cap: Duration,
}

impl SupervisorOptions {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            nebula: PathBuf::from("nebula"),
            command_prefix: Vec::new(),
            log_limit: 8 << 20,
            status_port: None,
            ready_timeout: Duration::from_secs(15),
            restart_base: Duration::from_millis(500),
            restart_cap: Duration::from_secs(30),
        }
    }
}

/// What [`Supervisor::update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Reloaded,
    Restarted,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct PidFile {
    pid: i32,
    /// Field 22 of `/proc/PID/stat`: tells a reused pid from ours.
    start_time: u64,
    restart_key: String,
    config_sha256: String,
}

struct Running {
    pid: Pid,
    pidfd: Arc<AsyncFd<OwnedFd>>,
}

struct State {
    config: MeshConfig,
    running: Option<Running>,
    stopping: bool,
    restarts: u64,
}

struct Inner {
    opts: SupervisorOptions,
    state: Mutex<State>,
    changed: Notify,
    /// The running Nebula's pid (None while there is none), for whoever watches.
    pid: tokio::sync::watch::Sender<Option<i32>>,
}

impl Inner {
    fn set_running(&self, st: &mut State, running: Option<Running>) {
        let pid = running.as_ref().map(|r| r.pid.as_raw_nonzero().get());
        st.running = running;
        self.pid.send_replace(pid);
    }
}

/// The supervised Nebula of this host.
pub struct Supervisor {
    inner: Arc<Inner>,
    watcher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").field("state_dir", &self.inner.opts.state_dir).finish_non_exhaustive()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Nebula keeps running; only the watching stops.
        self.watcher.abort();
    }
}

fn sha256_hex(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn start_time(pid: Pid) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())).ok()?;
    // Field 22 of proc(5), the 20th after the command name.
    atoll_util::proc_stat_fields(&stat)?.nth(19)?.parse().ok()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MeshError + '_ {
    move |source| MeshError::Io { path: path.to_owned(), source }
}

impl Inner {
    fn path(&self, name: &str) -> PathBuf {
        self.opts.state_dir.join(name)
    }

    fn read_pidfile(&self) -> Option<PidFile> {
        serde_json::from_slice(&std::fs::read(self.path(PID_FILE)).ok()?).ok()
    }

    fn write_pidfile(&self, p: &PidFile) -> Result<(), MeshError> {
        let path = self.path(PID_FILE);
        atoll_util::atomic_write(&path, &serde_json::to_vec(p).expect("serialises"), 0o644)
            .map_err(|e| MeshError::Io { path, source: std::io::Error::other(e.to_string()) })
    }

    /// Writes the config file; returns its text.
    fn write_config(&self, cfg: &MeshConfig) -> Result<String, MeshError> {
        cfg.validate().map_err(MeshError::Config)?;
        let text = config::render(cfg);
        let path = self.path(CONFIG_FILE);
        atoll_util::atomic_write(&path, text.as_bytes(), 0o600)
            .map_err(|e| MeshError::Io { path, source: std::io::Error::other(e.to_string()) })?;
        Ok(text)
    }

    /// Opens a pidfd for the Nebula the pidfile names, if that process still runs.
    fn adoptable(&self, p: &PidFile) -> Option<Running> {
        let pid = Pid::from_raw(p.pid)?;
        let fd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok()?;
        // Checked after the pidfd pins the process: a reused pid has another start time.
        if start_time(pid)? != p.start_time {
            return None;
        }
        Some(Running { pid, pidfd: Arc::new(logfile::async_fd(fd).ok()?) })
    }

    fn spawn(&self, cfg_text: &str, cfg: &MeshConfig) -> Result<(Running, Follower), MeshError> {
        let log_path = self.path(LOG_FILE);
        logfile::bound(&log_path, self.opts.log_limit);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(io(&log_path))?;
        let follower = Follower::from_end(&log_path)?;
        let (program, args): (OsString, Vec<OsString>) = match self.opts.command_prefix.split_first() {
            Some((first, rest)) => (first.clone(), rest.iter().cloned().chain([self.opts.nebula.clone().into_os_string()]).collect()),
            None => (self.opts.nebula.clone().into_os_string(), Vec::new()),
        };
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new(&program)
            .args(args)
            .arg("-config")
            .arg(self.path(CONFIG_FILE))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(io(&log_path))?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|source| MeshError::Spawn { program: PathBuf::from(&program), source })?;
        let pid = Pid::from_child(&child);
        // The child is reaped through its pidfd (`reap`), never through `child`.
        drop(child);
        let fd = rustix::process::pidfd_open(pid, PidfdFlags::empty())
            .map_err(|e| MeshError::Spawn { program: PathBuf::from(&program), source: e.into() })?;
        let running = Running { pid, pidfd: Arc::new(logfile::async_fd(fd).map_err(io(&log_path))?) };
        let p = PidFile {
            pid: pid.as_raw_nonzero().get(),
            start_time: start_time(pid).unwrap_or(0),
            restart_key: sha256_hex(&cfg.restart_key()),
            config_sha256: sha256_hex(cfg_text),
        };
        self.write_pidfile(&p)?;
        tracing::info!(pid = pid.as_raw_nonzero().get(), "started nebula");
        Ok((running, follower))
    }

    /// Waits until a Nebula just spawned logs its interface active, or exits.
    async fn wait_ready(&self, running: &Running, follower: &mut Follower) -> Result<(), MeshError> {
        let timeout = self.opts.ready_timeout;
        let active = follower.wait_for(timeout, |l| logfile::message(l).filter(|(m, _)| m == "Nebula interface is active").map(|_| ()));
        tokio::select! {
            r = active => r.ok_or(MeshError::NotReady(timeout)),
            _ = running.pidfd.readable() => {
                reap(running);
                Err(MeshError::Exited(logfile::tail(&self.path(LOG_FILE), 5)))
            }
        }
    }

    /// Ends a Nebula: SIGTERM through its pidfd, SIGKILL if it lingers, and waits on the pidfd.
    async fn terminate(&self, running: &Running) {
        let _ = rustix::process::pidfd_send_signal(running.pidfd.get_ref(), Signal::TERM);
        if tokio::time::timeout(Duration::from_secs(5), running.pidfd.readable()).await.is_err() {
            let _ = rustix::process::pidfd_send_signal(running.pidfd.get_ref(), Signal::KILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), running.pidfd.readable()).await;
        }
        reap(running);
    }

    async fn start_new(&self, st: &mut State) -> Result<(), MeshError> {
        let text = self.write_config(&st.config)?;
        let (running, mut follower) = self.spawn(&text, &st.config)?;
        let ready = self.wait_ready(&running, &mut follower).await;
        self.set_running(st, Some(running));
        self.changed.notify_one();
        ready
    }

    /// SIGHUP, then waits for Nebula to log that it reloaded its certificate (or refused to).
    /// Those lines are info-level: with a quieter log level the signal is only sent.
    async fn hup(&self, running: &Running, level: crate::LogLevel) -> Result<(), MeshError> {
        let mut follower = Follower::from_end(&self.path(LOG_FILE))?;
        rustix::process::pidfd_send_signal(running.pidfd.get_ref(), Signal::HUP).map_err(|e| MeshError::Signal(e.into()))?;
        if matches!(level, crate::LogLevel::Error | crate::LogLevel::Warning) {
            return Ok(());
        }
        let outcome = follower
            .wait_for(self.opts.ready_timeout, |l| {
                let (msg, v) = logfile::message(l)?;
                match msg.as_str() {
                    "Client cert refreshed from disk" => Some(Ok(())),
                    "Could not refresh client cert"
                    | "IP in new cert was different from old"
                    | "Could not refresh trusted CA certificates" => {
                        let err = v.get("error").and_then(|e| e.as_str()).unwrap_or_default();
                        Some(Err(MeshError::Reload(if err.is_empty() { msg } else { format!("{msg}: {err}") })))
                    }
                    _ => None,
                }
            })
            .await;
        outcome.unwrap_or(Err(MeshError::NotReady(self.opts.ready_timeout)))
    }
}

/// Collects the exit status if Nebula is our child (it is not when adopted).
fn reap(running: &Running) {
    let _ = rustix::process::waitid(
        rustix::process::WaitId::PidFd(std::os::fd::AsFd::as_fd(running.pidfd.get_ref())),
        rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
    );
}

impl Supervisor {
    /// Adopts the running Nebula or starts one, with `config`.
    pub async fn start(opts: SupervisorOptions, mut config: MeshConfig) -> Result<Supervisor, MeshError> {
        std::fs::create_dir_all(&opts.state_dir).map_err(io(&opts.state_dir))?;
        if let Some(port) = opts.status_port {
            config.sshd = Some(status::prepare(&opts.state_dir, port).await?);
        }
        let inner = Arc::new(Inner {
            opts,
            state: Mutex::new(State { config, running: None, stopping: false, restarts: 0 }),
            changed: Notify::new(),
            pid: tokio::sync::watch::Sender::new(None),
        });
        {
            let mut st = inner.state.lock().await;
            let previous = inner.read_pidfile();
            let adopted = previous.as_ref().and_then(|p| inner.adoptable(p).map(|r| (p.clone(), r)));
            match adopted {
                Some((p, running)) if p.restart_key == sha256_hex(&st.config.restart_key()) => {
                    let text = inner.write_config(&st.config)?;
                    let sha = sha256_hex(&text);
                    tracing::info!(pid = p.pid, "adopted the running nebula");
                    if sha != p.config_sha256 {
                        inner.hup(&running, st.config.log_level).await?;
                        inner.write_pidfile(&PidFile { config_sha256: sha, ..p })?;
                    }
                    inner.set_running(&mut st, Some(running));
                }
                Some((p, running)) => {
                    tracing::info!(pid = p.pid, "replacing the running nebula: its configuration changed in a way a reload cannot apply");
                    inner.terminate(&running).await;
                    inner.start_new(&mut st).await?;
                }
                None => inner.start_new(&mut st).await?,
            }
        }
        let watcher = tokio::spawn(watch(inner.clone()));
        Ok(Supervisor { inner, watcher })
    }

    /// Applies a new configuration: nothing, a reload, or a restart.
    pub async fn update(&self, mut config: MeshConfig) -> Result<Applied, MeshError> {
        let inner = &self.inner;
        let mut st = inner.state.lock().await;
        config.sshd = st.config.sshd.clone();
        if config == st.config {
            return Ok(Applied::Unchanged);
        }
        let restart = config.restart_key() != st.config.restart_key();
        let old = std::mem::replace(&mut st.config, config);
        if restart || st.running.is_none() {
            if let Some(r) = st.running.take() {
                inner.terminate(&r).await;
            }
            return match inner.start_new(&mut st).await {
                Ok(()) => Ok(Applied::Restarted),
                Err(e) => {
                    st.config = old;
                    Err(e)
                }
            };
        }
        let text = match inner.write_config(&st.config) {
            Ok(t) => t,
            Err(e) => {
                st.config = old;
                return Err(e);
            }
        };
        let running = st.running.as_ref().expect("checked");
        inner.hup(running, st.config.log_level).await?;
        if let Some(p) = inner.read_pidfile() {
            inner.write_pidfile(&PidFile { config_sha256: sha256_hex(&text), ..p })?;
        }
        Ok(Applied::Reloaded)
    }

    /// Has Nebula re-read its files (after the certificate, key or CA files were replaced).
    pub async fn reload(&self) -> Result<(), MeshError> {
        let st = self.inner.state.lock().await;
        let running = st.running.as_ref().ok_or(MeshError::NotRunning)?;
        self.inner.hup(running, st.config.log_level).await
    }

    /// Stops Nebula and forgets it (the next `start` starts a new one).
    pub async fn stop(self) -> Result<(), MeshError> {
        let mut st = self.inner.state.lock().await;
        st.stopping = true;
        if let Some(r) = st.running.take() {
            self.inner.terminate(&r).await;
        }
        self.inner.set_running(&mut st, None);
        self.inner.changed.notify_one();
        let _ = std::fs::remove_file(self.inner.path(PID_FILE));
        Ok(())
    }

    /// Nebula's pid, while it runs.
    pub async fn pid(&self) -> Option<i32> {
        self.inner.state.lock().await.running.as_ref().map(|r| r.pid.as_raw_nonzero().get())
    }

    /// Nebula's pid as it changes: None while none runs, a new pid after each (re)start (set
    /// once it is ready, or once it failed to become ready).
    pub fn watch_pid(&self) -> tokio::sync::watch::Receiver<Option<i32>> {
        self.inner.pid.subscribe()
    }

    /// How many times Nebula was restarted after dying.
    pub async fn restarts(&self) -> u64 {
        self.inner.state.lock().await.restarts
    }

    pub fn log_path(&self) -> PathBuf {
        self.inner.path(LOG_FILE)
    }

    /// Every tunnel Nebula has, and whether it is direct or relayed.
    pub async fn tunnels(&self) -> Result<Vec<Tunnel>, MeshError> {
        let port = self.inner.opts.status_port.ok_or(MeshError::NoStatus)?;
        status::tunnels(&self.inner.opts.state_dir, port, &self.inner.opts.command_prefix).await
    }
}

/// Stops the Nebula a pidfile in `state_dir` names, when no [`Supervisor`] can be made for it
/// (its host lost the configuration it ran with); a process that is gone, or a pid reused by
/// another process, is left alone.
pub async fn stop_orphan(state_dir: &Path) {
    let path = state_dir.join(PID_FILE);
    let Some(p) = std::fs::read(&path).ok().and_then(|d| serde_json::from_slice::<PidFile>(&d).ok()) else { return };
    let Some(pid) = Pid::from_raw(p.pid) else { return };
    if let Ok(fd) = rustix::process::pidfd_open(pid, PidfdFlags::empty())
        && start_time(pid) == Some(p.start_time)
        && let Ok(fd) = logfile::async_fd(fd)
    {
        let running = Running { pid, pidfd: Arc::new(fd) };
        let _ = rustix::process::pidfd_send_signal(running.pidfd.get_ref(), Signal::TERM);
        if tokio::time::timeout(Duration::from_secs(5), running.pidfd.readable()).await.is_err() {
            let _ = rustix::process::pidfd_send_signal(running.pidfd.get_ref(), Signal::KILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), running.pidfd.readable()).await;
        }
        reap(&running);
    }
    let _ = std::fs::remove_file(&path);
}

/// Restarts Nebula whenever it dies, until `stop`.
async fn watch(inner: Arc<Inner>) {
    let mut failures: u32 = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        let current = {
            let st = inner.state.lock().await;
            if st.stopping {
                return;
            }
            st.running.as_ref().map(|r| (r.pid, r.pidfd.clone()))
        };
        let started = tokio::time::Instant::now();
        let exited = match &current {
            Some((_, fd)) => {
                tokio::select! {
                    _ = fd.readable() => true,
                    _ = inner.changed.notified() => false,
                    _ = tick.tick() => { logfile::bound(&inner.path(LOG_FILE), inner.opts.log_limit); false }
                }
            }
            None => {
                tokio::select! {
                    _ = inner.changed.notified() => false,
                    _ = tick.tick() => true,
                }
            }
        };
        if !exited {
            continue;
        }
        let mut st = inner.state.lock().await;
        if st.stopping {
            return;
        }
        // Replaced meanwhile by update(): watch the new one.
        if st.running.as_ref().map(|r| r.pid) != current.as_ref().map(|c| c.0) {
            continue;
        }
        if let Some(r) = st.running.take() {
            inner.set_running(&mut st, None);
            reap(&r);
            tracing::warn!(pid = r.pid.as_raw_nonzero().get(), log = %logfile::tail(&inner.path(LOG_FILE), 3), "nebula exited; restarting it");
        }
        if started.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        let delay = inner.opts.restart_base.saturating_mul(1 << failures.min(16)).min(inner.opts.restart_cap);
        failures = failures.saturating_add(1);
        drop(st);
        tokio::time::sleep(delay).await;
        let mut st = inner.state.lock().await;
        if st.stopping || st.running.is_some() {
            continue;
        }
        st.restarts += 1;
        // A Nebula that started but died again is noticed by the next round through its pidfd.
        if let Err(e) = inner.start_new(&mut st).await {
            tracing::warn!(error = %e, "restarting nebula failed");
        }
    }
}
