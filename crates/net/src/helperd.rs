//! The per-host helper process, `atoll dns serve`: the resolver on every network's gateway
//! ([`crate::dns`]) and a socket on every published host port ([`crate::proxy`]). It runs on
//! its own (re-executed and detached by the daemon), so containers keep resolving, and
//! published ports stay reserved and reachable over IPv6 loopback, while the daemon is down,
//! restarting or being upgraded.
//!
//! The daemon writes the whole [`Config`] to `config.json` and sends `reload` over
//! `control.sock`; the answer comes once the new configuration is served and every socket is
//! bound: `ok`, `ok busy BINDING…` (ports another program holds), or `error MESSAGE`. `ping`
//! answers `ok PROTOCOL`, so a daemon can tell a helper left by an older version (which would
//! ignore what it does not know) and replace it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::dns::{self, DnsConfig};
use crate::nft::PortRule;
use crate::proxy::{Binding, Proxies};

pub const CONFIG_FILE: &str = "config.json";
pub const CONTROL_SOCKET: &str = "control.sock";
/// What `ping` answers after `ok`; raised when the configuration gains what an older helper
/// would ignore. 1 (a bare `ok`): DNS only; 2: published ports too.
pub const PROTOCOL: u32 = 2;

/// The protocol a helper speaks, from its answer to `ping` (a bare `ok`: 1).
pub fn protocol_of(pong: &str) -> u32 {
    pong.strip_prefix("ok").and_then(|v| v.trim().parse().ok()).unwrap_or(1)
}

/// Everything the helper serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub dns: DnsConfig,
    /// Published ports: each reserved by a socket, relayed where DNAT does not reach.
    #[serde(default)]
    pub ports: Vec<PortRule>,
}

/// What a `reload` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// Served, except for these bindings, which other programs hold.
    Ok {
        busy: Vec<Binding>,
    },
    Error(String),
}

impl Reloaded {
    pub fn parse(reply: &str) -> Self {
        match reply.strip_prefix("ok") {
            Some(rest) => Self::Ok {
                busy: rest.trim().strip_prefix("busy").unwrap_or("").split_whitespace().filter_map(|b| b.parse().ok()).collect(),
            },
            None => Self::Error(reply.strip_prefix("error ").unwrap_or(reply).to_owned()),
        }
    }

    fn render(&self) -> String {
        match self {
            Self::Ok { busy } if busy.is_empty() => "ok".into(),
            Self::Ok { busy } => format!("ok busy {}", busy.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" ")),
            Self::Error(e) => format!("error {e}"),
        }
    }
}

fn read_config(dir: &Path) -> Result<Config, String> {
    let path = dir.join(CONFIG_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

struct Served {
    shared: dns::Shared,
    listeners: dns::Listeners,
    proxies: Proxies,
    dir: PathBuf,
    port: u16,
}

impl Served {
    async fn reload(&mut self) -> Reloaded {
        let cfg = match read_config(&self.dir) {
            Ok(c) => c,
            Err(e) => return Reloaded::Error(e),
        };
        let dns = self.listeners.reconcile(&cfg.dns, &self.shared, self.port).await;
        *self.shared.write().unwrap() = Arc::new(cfg.dns);
        let ports = self.proxies.reconcile(&cfg.ports);
        match (dns, ports) {
            (Ok(()), Ok(busy)) => Reloaded::Ok { busy },
            (Err(e), Ok(_)) | (Ok(()), Err(e)) => Reloaded::Error(e),
            (Err(a), Err(b)) => Reloaded::Error(format!("{a}; {b}")),
        }
    }
}

/// The `atoll dns serve` process: serves until killed. Prints `ready` on stdout once the control
/// socket is bound and the current configuration is served.
pub async fn serve(dir: PathBuf, port: u16) -> std::io::Result<()> {
    // A socket per published port and per relayed connection: the soft descriptor limit
    // (often 1024) would be reached long before the hard one.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, raised);
    let mut served = Served {
        shared: Arc::new(RwLock::new(Arc::new(DnsConfig::default()))),
        listeners: dns::Listeners::default(),
        proxies: Proxies::default(),
        dir: dir.clone(),
        port,
    };
    let (_dir_fd, sock_path) = atoll_util::short_path_in(&dir, CONTROL_SOCKET)?;
    let _ = std::fs::remove_file(&sock_path);
    let control = UnixListener::bind(&sock_path)?;
    if let Reloaded::Error(e) = served.reload().await {
        tracing::warn!(error = %e, "initial configuration");
    }
    println!("ready");
    loop {
        let (conn, _) = control.accept().await?;
        let (r, mut w) = conn.into_split();
        let mut line = String::new();
        if BufReader::new(r).read_line(&mut line).await.is_err() {
            continue;
        }
        let reply = match line.trim() {
            "ping" => format!("ok {PROTOCOL}"),
            "reload" => served.reload().await.render(),
            other => format!("error unknown command {other:?}"),
        };
        let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
    }
}

/// Sends one control command; Ok(reply, the helper's pid) or Err if nobody answers.
pub async fn control(dir: &Path, command: &str) -> std::io::Result<(String, Option<i32>)> {
    let fut = async {
        let (_dir_fd, path) = atoll_util::short_path_in(dir, CONTROL_SOCKET)?;
        let mut conn = UnixStream::connect(&path).await?;
        let pid = conn.peer_cred().ok().and_then(|c| c.pid());
        conn.write_all(format!("{command}\n").as_bytes()).await?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply).await?;
        Ok((reply.trim().to_owned(), pid))
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.map_err(|_| std::io::Error::other("the helper did not answer"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_replies_round_trip() {
        for r in [
            Reloaded::Ok { busy: vec![] },
            Reloaded::Ok { busy: vec!["0.0.0.0:8080/tcp".parse().unwrap(), "[::1]:53/udp".parse().unwrap()] },
            Reloaded::Error("binding 10.0.0.1:53: no".into()),
        ] {
            assert_eq!(Reloaded::parse(&r.render()), r);
        }
        // An older helper's answers.
        assert_eq!(Reloaded::parse("ok"), Reloaded::Ok { busy: vec![] });
    }

    #[test]
    fn a_helper_of_an_older_version_is_told_apart() {
        assert_eq!(protocol_of("ok"), 1);
        assert_eq!(protocol_of(&format!("ok {PROTOCOL}")), PROTOCOL);
        assert!(protocol_of("ok") < PROTOCOL, "an older helper would keep serving without the published ports");
    }

    #[test]
    fn configs_without_ports_still_load() {
        let old = r#"{"upstreams":["10.0.0.53:53"],"networks":[]}"#;
        let c: Config = serde_json::from_str(old).unwrap();
        assert!(c.ports.is_empty() && c.dns.upstreams.len() == 1);
    }
}
