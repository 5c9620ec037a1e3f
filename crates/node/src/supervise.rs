//! Supervision: a monitor task per running container waits on its shim and applies the
//! restart policy (with backoff) when it exits; a health task runs the probe on schedule.

use std::sync::Arc;
use std::time::Duration;

use atoll_runtime::driver::{self, ShimClient};
use atoll_runtime::shim::ExitStatus;
use atoll_runtime::{bundle, rootfs};
use atoll_spec::health::ProbeResult;
use atoll_spec::{Backoff, HealthOnFailure, HealthStatus};

use crate::{ContainerRecord, Engine, EngineError, ExecRequest, Slot, State, now, record};

impl Engine {
    pub(crate) fn spawn_monitor(&self, slot: Arc<Slot>) {
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

    pub(crate) fn record_exit(&self, slot: &Slot, exit: &ExitStatus) {
        let dir = self.state_dir(&slot.get().id);
        // An auto-remove container's rootfs goes with its removal, after its waiters are told.
        if !slot.get().spec.auto_remove
            && let Err(e) = rootfs::unmount(&dir.join("rootfs"))
        {
            tracing::warn!(error = %e, "unmounting a stopped container's rootfs");
        }
        let exited = |r: &mut ContainerRecord| {
            r.state = State::Exited;
            r.pid = None;
            r.exit_code = Some(exit.exit_code);
            r.exit_unknown = exit.unknown;
            r.oom_killed = exit.oom_killed;
            r.finished_at = Some(exit.finished_at.clone());
        };
        if slot.get().spec.auto_remove {
            // Removed next, record and all: not written (a daemon that dies first finds it
            // running, reads the shim's `exit.json` at its next start, and removes it then).
            exited(&mut slot.rec.lock().unwrap());
            slot.changed.send_modify(|v| *v += 1);
        } else {
            let _ = self.update(slot, exited);
        }
        if exit.oom_killed {
            self.emit(&slot.get(), "oom", &[]);
        }
        let mut extra = vec![("exitCode", exit.exit_code.to_string())];
        if let Some(s) = exit.signal {
            extra.push(("signal", s.to_string()));
        }
        self.emit(&slot.get(), "die", &extra);
    }

    pub(crate) async fn on_exit(&self, slot: &Arc<Slot>, exit: ExitStatus) {
        let rec = slot.get();
        if rec.state != State::Running {
            return;
        }
        tracing::info!(container = %rec.name, exit_code = exit.exit_code, "exited");
        self.record_exit(slot, &exit);
        let rec = slot.get();
        if rec.spec.auto_remove {
            self.spawn_auto_remove(&rec.id);
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
        // A stop that came since the exit was recorded wins (it set `stopped_by_user` under
        // the same lock): found by CI, a `stop` racing a quick container's exit left it
        // restarting.
        let mut restarting = false;
        let _ = self.update(slot, |r| {
            if r.state == State::Exited && !r.stopped_by_user {
                r.state = State::Restarting;
                restarting = true;
            }
        });
        if !restarting {
            return;
        }
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

    /// Removes an auto-remove (`--rm`) container, with its anonymous volumes, in the background.
    pub(crate) fn spawn_auto_remove(&self, id: &str) {
        let engine = self.arc();
        let id = id.to_owned();
        tokio::spawn(async move {
            match engine.remove(&id, true, true).await {
                // Removed meanwhile (`rm -f` of a running --rm container): what was asked.
                Ok(_) | Err(EngineError::NotFound(_)) => {}
                Err(e) => tracing::warn!(container = %id, error = %e, "auto-remove failed"),
            }
        });
    }

    pub(crate) fn spawn_health(&self, slot: Arc<Slot>) {
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
    pub(crate) async fn probe(&self, rec: &ContainerRecord, cfg: &atoll_spec::HealthConfig) -> Result<(i32, String), EngineError> {
        let mut cmd = self.exec_command(rec, &ExecRequest { cmd: cfg.argv(), ..Default::default() }, None);
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

    pub(crate) fn spawn_start(&self, slot: Arc<Slot>, count_restart: bool, why: &'static str) {
        let engine = self.arc();
        tokio::spawn(async move {
            let _op = slot.op.lock().await;
            if slot.get().is_running() || !engine.slots.lock().unwrap().contains_key(&slot.get().id) {
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
}
