//! The daemon's side of `atoll dns serve`, the per-host helper process (`helperd`): writing its
//! configuration, starting it when needed (or replacing an older version's) and having it
//! reload.

use std::fs;

use tokio::io::AsyncBufReadExt;

use std::sync::atomic::Ordering;

use crate::proxy::Binding;
use crate::records::State;
use crate::{NetError, Networks, helperd};

/// Whether a change waits for the helper to serve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reload {
    Wait,
    /// Only names went away: the helper reloads on its own time (the file is written first, so
    /// a later reload never serves older names).
    Later,
}

impl Networks {
    /// Writes the helper's configuration and has it (started, or replaced if it is an older
    /// version's, when needed) serve it. Returns the published bindings other programs hold
    /// (None when not waited for).
    pub(crate) async fn helper_sync(&self, st: &State, reload: Reload) -> Result<Option<Vec<Binding>>, NetError> {
        let dir = self.dns_dir();
        let mut rules = st.ruleset();
        let cfg = helperd::Config { dns: st.dns_config(&self.cfg.upstreams), ports: std::mem::take(&mut rules.ports) };
        let data = serde_json::to_vec(&cfg).expect("config serialises");
        fs::create_dir_all(&dir).map_err(|e| NetError::Dns(format!("creating {}: {e}", dir.display())))?;
        atoll_util::replace_file(&dir.join(helperd::CONFIG_FILE), &data, 0o644).map_err(|e| NetError::Dns(e.to_string()))?;
        let checked = self.helper_checked.load(Ordering::SeqCst);
        if reload == Reload::Later && checked {
            tokio::spawn(async move {
                let _ = helperd::control(&dir, "reload").await;
            });
            return Ok(None);
        }
        if !checked {
            self.check_helper_version(&dir).await?;
        }
        let reply = match helperd::control(&dir, "reload").await {
            Ok((r, _)) => r,
            // Nothing to serve: started with the first network that has containers.
            Err(_) if cfg.dns.networks.is_empty() && cfg.ports.is_empty() => return Ok(Some(Vec::new())),
            Err(_) => {
                self.spawn_dns().await?;
                helperd::control(&dir, "reload").await.map_err(|e| NetError::Dns(e.to_string()))?.0
            }
        };
        match helperd::Reloaded::parse(&reply) {
            helperd::Reloaded::Ok { busy } => Ok(Some(busy)),
            helperd::Reloaded::Error(e) => Err(NetError::Dns(e)),
        }
    }

    /// Stops a running helper that speaks an older protocol (it would ignore published
    /// ports); the next reload starts the current one. Once per daemon.
    async fn check_helper_version(&self, dir: &std::path::Path) -> Result<(), NetError> {
        if let Ok((reply, pid)) = helperd::control(dir, "ping").await {
            let version = helperd::protocol_of(&reply);
            if version < helperd::PROTOCOL
                && let Some(pid) = pid.and_then(rustix::process::Pid::from_raw)
            {
                tracing::info!(version, "replacing the helper of an older version");
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while helperd::control(dir, "ping").await.is_ok() && std::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
        self.helper_checked.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub(crate) async fn spawn_dns(&self) -> Result<(), NetError> {
        let dir = self.dns_dir();
        fs::create_dir_all(&dir).map_err(|e| NetError::Dns(e.to_string()))?;
        let log = fs::OpenOptions::new().create(true).append(true).open(dir.join("dns.log")).map_err(|e| NetError::Dns(e.to_string()))?;
        let mut child = tokio::process::Command::new(&self.cfg.exe)
            .args(["dns", "serve", "--state"])
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            // Its own process group: a terminal's ^C or the daemon's end do not reach it.
            .process_group(0)
            .spawn()
            .map_err(|e| NetError::Dns(format!("starting {} dns: {e}", self.cfg.exe.display())))?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), tokio::io::BufReader::new(stdout).read_line(&mut line)).await;
        // Reap it whenever it ends, so no zombie stays behind.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        match read {
            Ok(Ok(_)) if line.trim() == "ready" => {
                tracing::info!("started the network helper (atoll dns serve)");
                Ok(())
            }
            _ => Err(NetError::Dns(format!("it did not start; see {}", dir.join("dns.log").display()))),
        }
    }

    // ---- networks ----
}
