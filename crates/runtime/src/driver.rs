//! The daemon's side of a shim: start one, and talk to it over its socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{ChildStdin, ChildStdout};

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
    let log = cfg.state_dir.join(shim::SHIM_LOG);
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
    cmd.arg("--id")
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
        .stdin(std::process::Stdio::null())
        .stderr(log_file);
    let (_, stdout, _) = spawn_detached(cmd)?;
    read_report(stdout, log).await
}

/// Spawns a shim command in its own process group with its stdout piped, and reaps it
/// whenever it exits, so it never lingers as a zombie of the daemon.
/// Returns its stdin (if piped), stdout and pid (also its process group's id).
fn spawn_detached(mut cmd: tokio::process::Command) -> Result<(Option<ChildStdin>, ChildStdout, Option<u32>), DriverError> {
    let mut child = cmd.process_group(0).stdout(std::process::Stdio::piped()).kill_on_drop(false).spawn().map_err(DriverError::Spawn)?;
    let stdout = child.stdout.take().expect("piped");
    let stdin = child.stdin.take();
    let pid = child.id();
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok((stdin, stdout, pid))
}

/// The shim's one report line: the container's pid and start time, or why it did not start.
async fn read_report(stdout: ChildStdout, log: PathBuf) -> Result<(i32, String), DriverError> {
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

/// Shims started before they are needed (`atoll shim --standby`, see [`shim::standby`]): a
/// start hands its [`ShimConfig`] to one that has already been executed and initialised,
/// instead of waiting for a new process to get that far (about 2.5 ms of `atoll run`'s
/// critical path); the next standby is started as this one is handed its container. At most one waits;
/// a start that finds none (the first, or one of several at once) spawns its shim as before.
/// A standby whose daemon is gone reads EOF and exits; one found stopped (SIGSTOP, a
/// debugger) is killed and not used, since nothing would answer its start for a minute.
#[derive(Debug)]
pub struct Standby {
    exe: PathBuf,
    ready: std::sync::Mutex<Option<Ready>>,
}

/// A standby waiting for its container: its stdin, stdout and pid.
type Ready = (ChildStdin, ChildStdout, u32);

/// Whether process `pid` is stopped or traced (state `T` or `t` in `/proc/PID/stat`, proc(5)).
/// A process that is gone is not.
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| atoll_util::proc_stat_fields(&stat).and_then(|mut f| f.next()).and_then(|state| state.chars().next()))
        .is_some_and(|state| matches!(state, 'T' | 't'))
}

impl Standby {
    /// Standbys of `exe` (this binary); [`Standby::warm`] starts the first.
    pub fn new(exe: &Path) -> Self {
        Self { exe: exe.to_owned(), ready: std::sync::Mutex::new(None) }
    }

    /// Starts the shim of `cfg` on a standby if one is ready, else as [`spawn_shim`] does;
    /// then makes sure another is ready for the next start.
    pub async fn start(self: &std::sync::Arc<Self>, cfg: &ShimConfig) -> Result<(i32, String), DriverError> {
        let ready = self.ready.lock().unwrap_or_else(|p| p.into_inner()).take();
        let handed = match ready {
            Some((_, _, pid)) if stopped(pid) => {
                tracing::warn!(pid, "the standby shim is stopped: killed, and this start spawns its own");
                if let Ok(pid) = i32::try_from(pid)
                    && let Some(pid) = rustix::process::Pid::from_raw(pid)
                {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                Err(std::io::ErrorKind::NotFound.into())
            }
            Some((stdin, stdout, _)) => Self::hand_over(stdin, cfg).await.map(|()| stdout),
            None => Err(std::io::ErrorKind::NotFound.into()),
        };
        // The next one starts while the runtime creates this container, off the async
        // threads: the spawn holds its thread until the child has executed (about 1 ms here).
        self.warm();
        match handed {
            Ok(stdout) => read_report(stdout, cfg.state_dir.join(shim::SHIM_LOG)).await,
            // None was ready, or it died (killed by hand, say) before it got its container.
            Err(_) => spawn_shim(&self.exe, cfg).await,
        }
    }

    /// Starts a standby (off the async threads) unless one is ready.
    pub fn warm(self: &std::sync::Arc<Self>) {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.refill());
    }

    async fn hand_over(mut stdin: ChildStdin, cfg: &ShimConfig) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(cfg).expect("a shim config serialises");
        line.push(b'\n');
        stdin.write_all(&line).await?;
        stdin.flush().await
    }

    /// Starts a standby unless one is ready. A failure is logged and the next start spawns
    /// its shim itself.
    fn refill(&self) {
        if self.ready.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return;
        }
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.args(["shim", "--standby"]).stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::null());
        match spawn_detached(cmd) {
            // Two refills at once: the second standby reads EOF as it is dropped, and exits.
            Ok((Some(stdin), stdout, Some(pid))) => {
                self.ready.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert((stdin, stdout, pid));
            }
            // Exited already: the next start spawns its own.
            Ok((_, _, None)) => {}
            Ok((None, _, _)) => unreachable!("stdin is piped"),
            Err(e) => tracing::warn!(error = %e, "starting a standby shim"),
        }
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

#[cfg(test)]
mod tests {
    use super::stopped;

    /// Regression: a standby shim stopped by hand was handed its container, and the start
    /// waited a minute for a report that could not come.
    #[test]
    fn stopped_tells_a_stopped_process_from_a_running_or_gone_one() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(!stopped(pid), "sleeping is not stopped");
        let raw = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::kill_process(raw, rustix::process::Signal::STOP).unwrap();
        // The state changes once the signal is delivered.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !stopped(pid) {
            assert!(std::time::Instant::now() < deadline, "sleep never showed as stopped");
            std::thread::yield_now();
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!stopped(pid), "a reaped process is gone, not stopped");
    }
}
