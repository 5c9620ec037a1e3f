//! The island's mesh: Nebula 1.6.1 (Debian's `nebula` and `nebula-cert`).
//!
//! - [`config`]: the YAML configuration, rendered from [`MeshConfig`] (pure, snapshot-tested),
//!   and which changes need a restart rather than a SIGHUP.
//! - [`cert`]: `nebula-cert` behind a small API (CA, keygen on the host that uses the key,
//!   sign with `-in-pub` on the CA host, print).
//! - [`supervisor`]: `nebula` as a managed child that outlives the daemon: own process group,
//!   a pidfile, adopted by the next daemon, restarted with backoff when it dies (watched with a
//!   pidfd), its log bounded in size; reload with SIGHUP.
//! - [`status`]: per-peer tunnel state (direct or relayed) from Nebula's own hostmap, read
//!   through its sshd on loopback (`list-hostmap -json`).

pub mod cert;
pub mod config;
mod logfile;
pub mod status;
pub mod supervisor;

pub use cert::{NebulaCert, NebulaCertInfo, SignRequest};
pub use config::{InboundRule, Lighthouse, LogLevel, MTU, MeshConfig, Peer, PkiPaths, Port, Proto, TUN_DEV, UnsafeRoute, render};
pub use status::{Tunnel, TunnelPath};
pub use supervisor::{Applied, Supervisor, SupervisorOptions, stop_orphan};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("starting {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("nebula-cert {op}: {message}")]
    CertTool { op: &'static str, message: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected output: {0}")]
    Parse(String),
    #[error("invalid mesh configuration: {0}")]
    Config(String),
    #[error("nebula exited while starting: {0}")]
    Exited(String),
    #[error("nebula did not report its interface active within {0:?}; see its log")]
    NotReady(std::time::Duration),
    #[error("nebula refused the reload: {0}")]
    Reload(String),
    #[error("nebula is not running")]
    NotRunning,
    #[error("signalling nebula")]
    Signal(#[source] std::io::Error),
    #[error("the tunnel status needs SupervisorOptions::status_port")]
    NoStatus,
    #[error("asking nebula's sshd for its hostmap: {0}")]
    Status(String),
}
