//! Processes in running containers: attach to the main process, `exec` (with a pty for
//! `-t`), and `top`.

use std::fs;

use atoll_runtime::driver::ShimClient;

use crate::{ContainerRecord, Engine, EngineError};

impl Engine {
    /// Attaches to a running container's stdio through its shim.
    pub async fn attach(&self, query: &str) -> Result<tokio::net::UnixStream, EngineError> {
        let rec = self.get(query)?;
        if !rec.is_running() {
            return Err(EngineError::NotRunning(rec.name));
        }
        ShimClient::new(&self.state_dir(&rec.id)).attach().await.map_err(|source| EngineError::Signal { name: rec.name, source })
    }

    /// A `runtime exec` command for `req` in container `rec` (not yet spawned); the runtime's
    /// own messages go to `log` (JSON lines) when given.
    pub fn exec_command(&self, rec: &ContainerRecord, req: &ExecRequest, log: Option<&ExecLog>) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.cfg.runtime.path);
        c.arg("--root").arg(self.runtime_root());
        if let Some(l) = log {
            c.arg(format!("--log={}", l.path.display())).arg("--log-format=json");
        }
        c.arg("exec");
        if let Some(u) = &req.user {
            c.arg("--user").arg(u);
        }
        if let Some(w) = &req.workdir {
            c.arg("--cwd").arg(w);
        }
        if req.tty {
            c.arg("--tty");
        }
        for e in &req.env {
            c.arg("--env").arg(e);
        }
        c.arg(&rec.id).args(&req.cmd);
        c
    }

    /// Starts a process in a running container; the caller streams its output. With `tty`,
    /// the runtime runs on the slave side of a pty pair whose master comes back: the runtime
    /// sees a real terminal and gives the process its own.
    pub fn exec(&self, query: &str, req: &ExecRequest) -> Result<ExecProcess, EngineError> {
        let rec = self.get(query)?;
        if !rec.is_running() {
            return Err(EngineError::NotRunning(rec.name));
        }
        if req.cmd.is_empty() {
            return Err(EngineError::Spec(atoll_spec::SpecError::HealthCommand));
        }
        // An argument, variable or path cannot hold a NUL: refused as the caller's mistake.
        let all = req.cmd.iter().chain(&req.env).chain(&req.user).chain(&req.workdir);
        if let Some(bad) = all.into_iter().find(|s| s.contains('\0')) {
            return Err(EngineError::Spec(atoll_spec::SpecError::Nul(bad.replace('\0', "\\0"))));
        }
        // `runtime exec` moves its process into the container's cgroups too (see `migration`).
        // Not for health probes: they do not wait on a user, and each priming write takes a
        // host-wide lock.
        self.primer.prime();
        let what = || format!("exec in {}", rec.name);
        let log = ExecLog { path: self.state_dir(&rec.id).join(format!("exec-{}.log", atoll_util::random_hex(8))) };
        let mut c = self.exec_command(&rec, req, Some(&log));
        c.kill_on_drop(true);
        if req.tty {
            let (master, slave) = open_pty(req.tty_size).map_err(|source| EngineError::Exec { what: what(), source })?;
            let io = |f: &std::fs::File| f.try_clone().map(std::process::Stdio::from);
            let wrap = |source| EngineError::Exec { what: what(), source };
            c.stdin(io(&slave).map_err(wrap)?).stdout(io(&slave).map_err(wrap)?).stderr(io(&slave).map_err(wrap)?);
            let child = c.spawn().map_err(wrap)?;
            drop(slave);
            return Ok(ExecProcess { child, pty: Some(master), log });
        }
        c.stdin(if req.interactive { std::process::Stdio::piped() } else { std::process::Stdio::null() })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = c.spawn().map_err(|source| EngineError::Exec { what: what(), source })?;
        Ok(ExecProcess { child, pty: None, log })
    }

    /// The processes of a container: (pid, uid, cpu seconds, command line).
    pub async fn top(&self, query: &str) -> Result<Vec<ProcessInfo>, EngineError> {
        let rec = self.get(query)?;
        if !rec.is_running() {
            return Err(EngineError::NotRunning(rec.name));
        }
        let out = tokio::process::Command::new(&self.cfg.runtime.path)
            .arg("--root")
            .arg(self.runtime_root())
            .args(["ps", "--format", "json", &rec.id])
            .output()
            .await
            .map_err(|source| EngineError::Exec { what: "runtime ps".into(), source })?;
        let pids: Vec<i32> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let ticks = 100.0;
        Ok(pids
            .into_iter()
            .filter_map(|pid| {
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let f: Vec<&str> = atoll_util::proc_stat_fields(&stat)?.collect();
                let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks;
                let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()?;
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let cmd = cmdline
                    .split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ");
                Some(ProcessInfo { pid, uid, cpu_seconds: cpu, command: cmd })
            })
            .collect())
    }
}

/// A started exec: its process, the pty master for a terminal session, and the runtime's log.
#[derive(Debug)]
pub struct ExecProcess {
    pub child: tokio::process::Child,
    pub pty: Option<std::fs::File>,
    pub log: ExecLog,
}

/// The runtime's log of one exec (`--log`, JSON lines), removed when dropped: it says why the
/// runtime could not start the command, if it could not.
#[derive(Debug)]
pub struct ExecLog {
    path: std::path::PathBuf,
}

impl ExecLog {
    /// The exit code to report for an exec whose runtime exited with `code`: docker's 127 or
    /// 126 when the runtime could not start the command, else `code`.
    pub fn exit_code(&self, code: i32) -> i32 {
        if code == 0 {
            return 0;
        }
        let text = fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] == "error")
            .find_map(|v| v["msg"].as_str().and_then(atoll_runtime::failure::classify))
            .map_or(code, |f| f.exit_code())
    }
}

impl Drop for ExecLog {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A pty pair (master, slave) of `size` (rows, cols).
fn open_pty(size: Option<(u16, u16)>) -> std::io::Result<(std::fs::File, std::fs::File)> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(name.as_c_str(), OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())?;
    // The runtime's side is a plain byte pipe: only the container's own terminal should echo
    // and translate.
    let mut t = rustix::termios::tcgetattr(&slave)?;
    t.make_raw();
    rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &t)?;
    let (rows, cols) = size.unwrap_or((24, 80));
    rustix::termios::tcsetwinsize(&master, rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 })?;
    Ok((std::fs::File::from(master), std::fs::File::from(slave)))
}

/// `exec` options.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ExecRequest {
    #[schema(schema_with = atoll_spec::openapi::command)]
    pub cmd: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = atoll_spec::openapi::env_list)]
    pub env: Vec<String>,
    /// An absolute path.
    #[serde(default)]
    #[schema(pattern = "^/[^\\u0000]*$")]
    pub workdir: Option<String>,
    /// `UID[:GID]`, or names the image knows.
    #[serde(default)]
    #[schema(pattern = "^[^:/\\u0000]+(:[^:/\\u0000]+)?$")]
    pub user: Option<String>,
    /// Pass the request body to the process's stdin.
    #[serde(default)]
    pub interactive: bool,
    /// Give the process a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Terminal size (rows, columns).
    #[serde(default)]
    #[schema(schema_with = atoll_spec::openapi::terminal_size)]
    pub tty_size: Option<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ProcessInfo {
    pub pid: i32,
    pub uid: u32,
    pub cpu_seconds: f64,
    pub command: String,
}
