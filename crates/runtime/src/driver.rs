//! The daemon's side of a shim: start one, and talk to it over its socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::shim::{self, ExitStatus, ShimConfig, Started};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("starting the shim")]
    Spawn(#[source] std::io::Error),
    #[error("the shim did not report within {0:?}")]
    Timeout(Duration),
    #[error("the shim exited without reporting (see {log})")]
    NoReport { log: PathBuf },
    #[error("{0}")]
    Start(String),
    #[error("the shim is gone")]
    Gone(#[source] std::io::Error),
    #[error("the shim answered {0:?}")]
    Protocol(String),
    #[error("{0}")]
    Refused(String),
}

/// How long a shim may take to create and start a container.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a shim may take to answer `state` or `kill`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts `atoll shim` for `cfg` (detached in its own process group) and returns what it
/// reported: the container's pid and start time.
pub async fn spawn_shim(exe: &Path, cfg: &ShimConfig) -> Result<(i32, String), DriverError> {
    let log = cfg.state_dir.join("shim.log");
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).map_err(DriverError::Spawn)?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("shim");
    if cfg.tty {
        cmd.arg("--tty");
    }
    if cfg.stdin {
        cmd.arg("--stdin");
    }
    if cfg.wait_attach {
        cmd.arg("--wait-attach");
    }
    if cfg.no_fsync {
        cmd.arg("--no-fsync");
    }
    let mut child = cmd
        .arg("--id")
        .arg(&cfg.id)
        .arg("--bundle")
        .arg(&cfg.bundle)
        .arg("--state-dir")
        .arg(&cfg.state_dir)
        .arg("--runtime")
        .arg(&cfg.runtime)
        .arg("--runtime-root")
        .arg(&cfg.runtime_root)
        .arg("--log-max-size")
        .arg(cfg.log_max_size.to_string())
        .arg("--log-max-files")
        .arg(cfg.log_max_files.to_string())
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log_file)
        .kill_on_drop(false)
        .spawn()
        .map_err(DriverError::Spawn)?;
    let stdout = child.stdout.take().expect("piped");
    // Reap the shim whenever it exits, so it never lingers as a zombie of the daemon.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    let read = reader.read_line(&mut line);
    match tokio::time::timeout(START_TIMEOUT, read).await {
        Err(_) => Err(DriverError::Timeout(START_TIMEOUT)),
        Ok(Err(e)) => Err(DriverError::Spawn(e)),
        Ok(Ok(0)) => Err(DriverError::NoReport { log }),
        Ok(Ok(_)) => match serde_json::from_str::<Started>(&line) {
            Ok(Started::Ok { pid, started_at }) => Ok((pid, started_at)),
            Ok(Started::Failed { error }) => Err(DriverError::Start(error)),
            Err(_) => Err(DriverError::Protocol(line)),
        },
    }
}

/// A connection-per-request client of one shim.
#[derive(Debug, Clone)]
pub struct ShimClient {
    dir: PathBuf,
}

impl ShimClient {
    pub fn new(state_dir: &Path) -> Self {
        Self { dir: state_dir.to_owned() }
    }

    /// Connects through `/proc/self/fd/N/shim.sock`, N an open handle on the state dir: the
    /// path stays short whatever the data dir (socket paths are limited to 108 bytes).
    async fn connect(&self) -> Result<UnixStream, DriverError> {
        let (dir, path) = atoll_util::short_path_in(&self.dir, shim::SOCKET).map_err(DriverError::Gone)?;
        let s = UnixStream::connect(&path).await.map_err(DriverError::Gone);
        drop(dir);
        s
    }

    async fn request(&self, req: &str) -> Result<serde_json::Value, DriverError> {
        let mut s = self.connect().await?;
        s.write_all(req.as_bytes()).await.map_err(DriverError::Gone)?;
        s.write_all(b"\n").await.map_err(DriverError::Gone)?;
        let mut line = String::new();
        let n = BufReader::new(s).read_line(&mut line).await.map_err(DriverError::Gone)?;
        if n == 0 {
            return Err(DriverError::Gone(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
        }
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|_| DriverError::Protocol(line.clone()))?;
        if let Some(e) = v["error"].as_str() {
            return Err(DriverError::Refused(e.to_owned()));
        }
        Ok(v)
    }

    /// Attaches to the container: output frames come back on the stream, and what is written
    /// to it goes to the container's stdin.
    pub async fn attach(&self) -> Result<UnixStream, DriverError> {
        let mut s = self.connect().await?;
        s.write_all(b"{\"op\":\"attach\"}\n").await.map_err(DriverError::Gone)?;
        Ok(s)
    }

    /// Is the shim alive and answering?
    pub async fn alive(&self) -> bool {
        matches!(tokio::time::timeout(REQUEST_TIMEOUT, self.request(r#"{"op":"state"}"#)).await, Ok(Ok(_)))
    }

    pub async fn kill(&self, signal: i32) -> Result<(), DriverError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.request(&format!(r#"{{"op":"kill","signal":{signal}}}"#))).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(DriverError::Timeout(REQUEST_TIMEOUT)),
        }
    }

    /// Waits until the shim has finished with an exited container (the runtime's state
    /// deleted, its socket removed): it closes the connection then. True once it has, if
    /// there is no socket, or if nothing listens on it (a shim that died: the caller clears
    /// what it left); false if this shim cannot say (an older shim answers the request), and
    /// the caller must find out otherwise.
    pub async fn done(&self) -> bool {
        use std::io::ErrorKind;
        let mut s = match self.connect().await {
            Ok(s) => s,
            Err(DriverError::Gone(e)) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => return true,
            Err(_) => return false,
        };
        if s.write_all(b"{\"op\":\"done\"}\n").await.is_err() {
            // It exited between our connect and the request.
            return true;
        }
        let mut line = String::new();
        // EOF, or a reset if it exited before reading the request: either way it is gone.
        !matches!(BufReader::new(s).read_line(&mut line).await, Ok(n) if n > 0)
    }

    /// Waits until the container exits. Errors if the shim goes away without saying.
    pub async fn wait(&self) -> Result<ExitStatus, DriverError> {
        let v = self.request(r#"{"op":"wait"}"#).await?;
        serde_json::from_value(v.clone()).map_err(|_| DriverError::Protocol(v.to_string()))
    }
}

/// Reads `exit.json` if the shim wrote one.
pub fn read_exit(state_dir: &Path) -> Option<ExitStatus> {
    serde_json::from_slice(&std::fs::read(state_dir.join(shim::EXIT_FILE)).ok()?).ok()
}
