//! The daemon's side of `atoll dns`, the per-host helper process: writing its configuration,
//! starting it when needed and having it reload.

use std::fs;

use tokio::io::AsyncBufReadExt;

use crate::records::State;
use crate::{NetError, Networks, dns};

impl Networks {
    pub(crate) async fn dns_sync(&self, st: &State) -> Result<(), NetError> {
        let dir = self.dns_dir();
        let cfg = st.dns_config(&self.cfg.upstreams);
        let data = serde_json::to_vec_pretty(&cfg).expect("config serialises");
        fs::create_dir_all(&dir).map_err(|e| NetError::Dns(format!("creating {}: {e}", dir.display())))?;
        atoll_util::replace_file(&dir.join(dns::CONFIG_FILE), &data, 0o644).map_err(|e| NetError::Dns(e.to_string()))?;
        if dns::control(&dir, "ping").await.is_err() {
            if cfg.networks.is_empty() {
                // Nothing to serve: started with the first network that has containers.
                return Ok(());
            }
            self.spawn_dns().await?;
        }
        match dns::control(&dir, "reload").await {
            Ok(r) if r == "ok" => Ok(()),
            Ok(r) => Err(NetError::Dns(r.trim_start_matches("error ").to_owned())),
            Err(e) => Err(NetError::Dns(e.to_string())),
        }
    }

    pub(crate) async fn spawn_dns(&self) -> Result<(), NetError> {
        let dir = self.dns_dir();
        fs::create_dir_all(&dir).map_err(|e| NetError::Dns(e.to_string()))?;
        let log = fs::OpenOptions::new().create(true).append(true).open(dir.join("dns.log")).map_err(|e| NetError::Dns(e.to_string()))?;
        let mut child = tokio::process::Command::new(&self.cfg.exe)
            .arg("dns")
            .arg("--state")
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
                tracing::info!("started the DNS server");
                Ok(())
            }
            _ => Err(NetError::Dns(format!("it did not start; see {}", dir.join("dns.log").display()))),
        }
    }

    // ---- networks ----
}
