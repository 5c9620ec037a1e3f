//! Operations on existing containers: stop, kill, restart, wait, remove, network
//! connect/disconnect, and stopping everything at daemon exit.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use atoll_runtime::driver::ShimClient;
use atoll_runtime::{bundle, rootfs};
use atoll_spec::NetworkMode;

use crate::{ContainerRecord, DEFAULT_STOP_TIMEOUT, Engine, EngineError, KILL_GRACE, Slot, State, WaitCondition, events};

impl Engine {
    /// Stops a container: its stop signal, then SIGKILL after `timeout` seconds.
    pub async fn stop(&self, query: &str, timeout: Option<u64>) -> Result<ContainerRecord, EngineError> {
        let (slot, _op) = self.locked_slot(query).await?;
        self.stop_and_report(&slot, timeout).await?;
        Ok(slot.get())
    }

    pub(crate) async fn stop_locked(&self, slot: &Arc<Slot>, timeout: Option<u64>) -> Result<(), EngineError> {
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
        // The container may have exited since `rec` was read, and its monitor may have set a
        // restart going: the stop cancels that too.
        self.update(slot, |r| {
            r.stopped_by_user = true;
            if r.state == State::Restarting {
                r.state = State::Exited;
            }
        })?;
        if !slot.get().is_running() {
            return Ok(());
        }
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
    pub(crate) async fn stop_and_report(&self, slot: &Arc<Slot>, timeout: Option<u64>) -> Result<(), EngineError> {
        let was_running = slot.get().is_running();
        self.stop_locked(slot, timeout).await?;
        if was_running {
            self.emit(&slot.get(), "stop", &[]);
        }
        Ok(())
    }

    pub(crate) fn stop_signal(&self, rec: &ContainerRecord) -> i32 {
        bundle::stop_signal(&rec.spec, &self.image_defaults(rec))
    }

    /// Waits until the container is no longer running; false on timeout.
    pub(crate) async fn wait_exit(&self, slot: &Arc<Slot>, timeout: Duration) -> bool {
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
        let was = rec.stopped_by_user;
        if matches!(signal, 9 | 15 | 2) {
            self.update(&slot, |r| r.stopped_by_user = true)?;
        }
        match ShimClient::new(&self.state_dir(&rec.id)).kill(signal).await {
            Ok(()) => {
                self.emit(&rec, "kill", &[("signal", signal.to_string())]);
                Ok(())
            }
            // It exited between the look and the signal (found by the API fuzzer, twice): the shim
            // is gone, or it answers that its container has exited. Not a fault of the daemon's,
            // and nobody stopped it.
            Err(e) if exited(&e) => {
                let _ = self.update(&slot, |r| r.stopped_by_user = was);
                Err(EngineError::NotRunning(rec.name))
            }
            Err(source) => Err(EngineError::Signal { name: rec.name, source }),
        }
    }

    pub async fn restart(&self, query: &str, timeout: Option<u64>) -> Result<ContainerRecord, EngineError> {
        let (slot, _op) = self.locked_slot(query).await?;
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
        Ok(self.waiter(query, condition)?.await)
    }

    /// [`Engine::wait`] as a future that watches from the moment of this call: taken before an
    /// operation (a start), it cannot miss what the operation leads to, even a removal.
    pub fn waiter(&self, query: &str, condition: WaitCondition) -> Result<impl Future<Output = i32> + Send + 'static, EngineError> {
        let slot = self.slot(query)?;
        let mut rx = slot.changed.subscribe();
        let first = slot.get().started_at;
        let engine = self.arc();
        Ok(async move {
            loop {
                let rec = slot.get();
                let done = match condition {
                    WaitCondition::NextExit => rec.state == State::Exited && rec.started_at != first,
                    WaitCondition::NotRunning => matches!(rec.state, State::Exited | State::Created),
                    WaitCondition::Removed => !engine.slots.lock().unwrap().contains_key(&rec.id),
                };
                if done {
                    return rec.exit_code.unwrap_or(0);
                }
                if rx.changed().await.is_err() {
                    return slot.get().exit_code.unwrap_or(0);
                }
            }
        })
    }

    /// Removes a container (killing it first with `force`), and with `volumes` its anonymous
    /// volumes that no other container uses (docker's `rm -v`; `run --rm` does it too).
    pub async fn remove(&self, query: &str, force: bool, volumes: bool) -> Result<ContainerRecord, EngineError> {
        let (slot, _op) = self.locked_slot(query).await?;
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
        // The shim of an exited container deletes the runtime's state meanwhile (a runtime
        // process of its own): the network goes in parallel with that.
        if let Err(e) = self.nets.release(&rec.id).await {
            tracing::warn!(container = %rec.name, error = %e, "tearing down the container's network");
        }
        atoll_util::crash_point("remove.released");
        // A shim that saw the exit deletes the runtime's state itself; otherwise do it here.
        if slot.get().exit_unknown || slot.get().state == State::Created {
            self.runtime_delete(&rec.id).await;
        }
        // The record goes first: from here a restarted daemon unmounts and removes the
        // directory as a half-made one, so the container is gone whatever happens next. What
        // is left need not delay its waiters: the rootfs's unmount (it waits for an RCU grace
        // period, milliseconds on a busy host), the shim finishing its runtime delete, and the
        // directory.
        match fs::remove_file(dir.join("container.json")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::Prepare(e)),
        }
        atoll_util::crash_point("remove.unrecorded");
        self.slots.lock().unwrap().remove(&rec.id);
        if volumes {
            for m in rec.spec.mounts.iter().filter(|m| m.kind == atoll_spec::MountKind::Volume) {
                let anonymous = self.volumes.get(&m.source).is_ok_and(|v| v.labels.contains_key(crate::volumes::LABEL_ANONYMOUS));
                if anonymous && let Err(e) = self.remove_volume(&m.source) {
                    tracing::warn!(container = %rec.name, volume = %m.source, error = %e, "keeping an anonymous volume");
                }
            }
        }
        // Waiters learn it is gone (no need to save a record about to be deleted).
        slot.rec.lock().unwrap().state = State::Exited;
        slot.changed.send_modify(|v| *v += 1);
        tracing::info!(container = %rec.name, "removed");
        self.emit(&rec, "destroy", &[]);
        // The caller (`rm`) is answered once the rest is done too; the container's waiters
        // (`run --rm`) already know.
        let root = dir.join("rootfs");
        let unmounted = tokio::task::spawn_blocking(move || rootfs::unmount(&root)).await.map_err(std::io::Error::other);
        atoll_util::crash_point("remove.unmounted");
        if rec.state != State::Created {
            self.wait_shim_done(&rec.id).await;
        }
        match unmounted {
            Ok(Ok(())) => {
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || fs::remove_dir_all(&dir)).await {
                    tracing::warn!(container = %rec.name, error = %e, "removing the container's directory");
                }
            }
            // Not through a mounted rootfs: the next daemon start tries again.
            Ok(Err(e)) => tracing::warn!(container = %rec.name, error = %e, "unmounting the container's rootfs; its directory stays"),
            Err(e) => tracing::warn!(container = %rec.name, error = %e, "unmounting the container's rootfs; its directory stays"),
        }
        Ok(slot.get())
    }

    /// Connects a container to one more network (`atoll network connect`).
    pub async fn connect(&self, query: &str, mut att: atoll_spec::NetworkAttachment) -> Result<ContainerRecord, EngineError> {
        let (slot, _op) = self.locked_slot(query).await?;
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
    pub(crate) async fn refresh_hosts(&self, rec: &ContainerRecord) {
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
        let (slot, _op) = self.locked_slot(query).await?;
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

    /// Stops every running container (for `atoll daemon --stop-containers-on-exit`).
    pub async fn stop_all(&self) {
        let running: Vec<String> = self.list(false).into_iter().map(|r| r.id).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for id in running {
            let e = self.arc();
            tasks.spawn(async move {
                let (slot, _op) = e.locked_slot(&id).await?;
                let was_stopped = slot.get().stopped_by_user;
                e.stop_locked(&slot, None).await?;
                // Stopped by the daemon, not the user: unless-stopped comes back at next start.
                e.update(&slot, |r| r.stopped_by_user = was_stopped)
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Whether a signal failed because the container had already exited: its shim is gone, or
/// answers that its init was reaped.
fn exited(e: &atoll_runtime::driver::DriverError) -> bool {
    use atoll_runtime::driver::DriverError as D;
    match e {
        D::Gone(_) => true,
        D::Refused(why) => why == atoll_runtime::shim::NOT_RUNNING,
        _ => false,
    }
}
