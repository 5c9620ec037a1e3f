//! `atoll shim`: one small process per container, detached from the daemon so containers and
//! their logs outlive it. It is a child subreaper: the container's init becomes its child once
//! the runtime's `create` exits, so it learns of the exit through a pidfd, without polling.
//!
//! Lifecycle: `runtime create` (stdout/stderr wired to pipes it owns) → `runtime start` →
//! report `{"pid": N}` (or `{"error": …}`) on stdout to the daemon → serve `shim.sock` and
//! copy output into the rotating log → on exit write `exit.json` atomically, `runtime delete`,
//! answer waiters, remove the socket, exit.
//!
//! Control protocol on `shim.sock`: one JSON line per request, one JSON line in reply.
//! `{"op":"state"}` → `{"pid":N,"running":true}` or the exit status; `{"op":"kill","signal":N}`
//! → `{"ok":true}`; `{"op":"wait"}` → the exit status, sent when the container exits.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};
use serde::{Deserialize, Serialize};

use crate::logs::{LineSplitter, LogWriter, MAX_LINE, Stream, timestamp};

/// Arguments of `atoll shim`.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    pub id: String,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
}

/// How a container ended, as `exit.json` and `wait` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, or 128 + signal for a container killed by a signal.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub finished_at: String,
    /// Set when the shim could not observe the exit (it died, or the host rebooted).
    #[serde(default)]
    pub unknown: bool,
}

/// The shim's first (and only) line on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Started {
    Ok { pid: i32, started_at: String },
    Failed { error: String },
}

pub const SOCKET: &str = "shim.sock";
pub const EXIT_FILE: &str = "exit.json";
pub const PID_FILE: &str = "init.pid";
pub const RUNTIME_LOG: &str = "runtime.log";
pub const LOG_FILE: &str = "container.log";

fn now() -> String {
    timestamp(time::OffsetDateTime::now_utc())
}

/// The last error message the runtime wrote to its JSON log.
pub fn runtime_error(state_dir: &Path) -> Option<String> {
    let text = fs::read_to_string(state_dir.join(RUNTIME_LOG)).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["level"] == "error").then(|| v["msg"].as_str().unwrap_or_default().to_owned())
    })
}

fn report(line: &Started) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(line).expect("serialises"));
    let _ = out.flush();
}

fn runtime(cfg: &ShimConfig) -> Command {
    let mut c = Command::new(&cfg.runtime);
    c.arg("--root").arg(&cfg.runtime_root).arg("--log").arg(cfg.state_dir.join(RUNTIME_LOG)).arg("--log-format").arg("json");
    c
}

/// Runs the shim; returns the process exit code.
pub fn run(cfg: ShimConfig) -> i32 {
    // Our own session, so nothing aimed at the daemon's process group or terminal reaches us.
    let _ = rustix::process::setsid();
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        report(&Started::Failed { error: format!("becoming a child subreaper: {e}") });
        return 1;
    }
    match start(&cfg) {
        Ok((pid, pidfd, out, err)) => {
            // The socket exists before we say "started": the daemon connects right away, and a
            // refused connection would look like a dead shim.
            let sock_path = cfg.state_dir.join(SOCKET);
            let _ = fs::remove_file(&sock_path);
            let listener = match UnixListener::bind(&sock_path) {
                Ok(l) => l,
                Err(e) => {
                    let _ = rustix::process::kill_process(pid, Signal::KILL);
                    report(&Started::Failed { error: format!("binding {}: {e}", sock_path.display()) });
                    return 1;
                }
            };
            let _ = listener.set_nonblocking(true);
            report(&Started::Ok { pid: pid.as_raw_nonzero().get(), started_at: now() });
            // Detach from the daemon's pipe: the daemon reads until EOF.
            if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
                let _ = rustix::stdio::dup2_stdout(&null);
                let _ = rustix::stdio::dup2_stderr(&null);
            }
            serve(&cfg, pid, pidfd, out, err, listener)
        }
        Err(error) => {
            report(&Started::Failed { error });
            1
        }
    }
}

type Started3 = (Pid, OwnedFd, OwnedFd, OwnedFd);

fn start(cfg: &ShimConfig) -> Result<Started3, String> {
    let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| format!("creating a pipe: {e}"))?;
    let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| format!("creating a pipe: {e}"))?;
    let pid_file = cfg.state_dir.join(PID_FILE);
    let _ = fs::remove_file(&pid_file);
    let status = runtime(cfg)
        .arg("create")
        .arg("--bundle")
        .arg(&cfg.bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&cfg.id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .status()
        .map_err(|e| format!("running {} create: {e}", cfg.runtime.display()))?;
    if !status.success() {
        let why = runtime_error(&cfg.state_dir).unwrap_or_else(|| format!("exit status {status}"));
        let _ = runtime(cfg).args(["delete", "--force"]).arg(&cfg.id).stdout(Stdio::null()).stderr(Stdio::null()).status();
        return Err(format!("the runtime could not create the container: {why}"));
    }
    let pid: i32 = fs::read_to_string(&pid_file)
        .map_err(|e| format!("reading {}: {e}", pid_file.display()))?
        .trim()
        .parse()
        .map_err(|_| "bad pid file".to_owned())?;
    let pid = Pid::from_raw(pid).ok_or("pid 0 in pid file")?;
    let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(|e| format!("pidfd_open({pid:?}): {e}"))?;
    let status = runtime(cfg)
        .arg("start")
        .arg(&cfg.id)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("running start: {e}"))?;
    if !status.success() {
        let why = runtime_error(&cfg.state_dir).unwrap_or_else(|| format!("exit status {status}"));
        let _ = runtime(cfg).args(["delete", "--force"]).arg(&cfg.id).stdout(Stdio::null()).stderr(Stdio::null()).status();
        return Err(format!("the runtime could not start the container: {why}"));
    }
    Ok((pid, pidfd, out_r, err_r))
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    waiting: bool,
}

#[derive(Deserialize)]
struct Request {
    op: String,
    #[serde(default)]
    signal: Option<i32>,
}

fn exit_of(status: rustix::process::WaitStatus) -> (i32, Option<i32>) {
    if let Some(code) = status.exit_status() {
        (code, None)
    } else if let Some(sig) = status.terminating_signal() {
        (128 + sig, Some(sig))
    } else {
        (255, None)
    }
}

fn serve(cfg: &ShimConfig, pid: Pid, pidfd: OwnedFd, out: OwnedFd, err: OwnedFd, listener: UnixListener) -> i32 {
    let log_path = cfg.state_dir.join(LOG_FILE);
    let mut log = LogWriter::open(&log_path, cfg.log_max_size, cfg.log_max_files).ok();
    let sock_path = cfg.state_dir.join(SOCKET);
    let listener = Some(listener);
    let mut pipes: [Option<(File, Stream, LineSplitter)>; 2] = [
        Some((File::from(out), Stream::Stdout, LineSplitter::default())),
        Some((File::from(err), Stream::Stderr, LineSplitter::default())),
    ];
    let mut clients: Vec<Client> = Vec::new();
    let mut exit: Option<ExitStatus> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];

    loop {
        let done_draining = pipes.iter().all(Option::is_none) || drain_deadline.is_some_and(|d| Instant::now() >= d);
        if exit.is_some() && done_draining {
            break;
        }
        // Build the poll set: pipes, pidfd (until exit), listener, clients.
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        let mut kinds: Vec<(u8, usize)> = Vec::new();
        for (i, p) in pipes.iter().enumerate() {
            if let Some((f, _, _)) = p {
                fds.push(PollFd::new(f, PollFlags::IN));
                kinds.push((0, i));
            }
        }
        if exit.is_none() {
            fds.push(PollFd::new(&pidfd, PollFlags::IN));
            kinds.push((1, 0));
        }
        if let Some(l) = &listener {
            fds.push(PollFd::new(l, PollFlags::IN));
            kinds.push((2, 0));
        }
        for (i, c) in clients.iter().enumerate() {
            fds.push(PollFd::new(&c.stream, PollFlags::IN));
            kinds.push((3, i));
        }
        let timeout =
            drain_deadline.map(|d| rustix::event::Timespec::try_from(d.saturating_duration_since(Instant::now())).unwrap_or_default());
        if poll(&mut fds, timeout.as_ref()).is_err() {
            continue;
        }
        let ready: Vec<(u8, usize)> = fds.iter().zip(&kinds).filter(|(f, _)| !f.revents().is_empty()).map(|(_, k)| *k).collect();
        drop(fds);
        let mut closed_clients = Vec::new();
        for (kind, i) in ready {
            match kind {
                0 => {
                    let Some((f, stream, splitter)) = pipes[i].as_mut() else { continue };
                    match f.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let ts = now();
                            let s = *stream;
                            splitter.flush(|c, p| write_log(&mut log, s, p, c, &ts));
                            pipes[i] = None;
                        }
                        Ok(n) => {
                            let ts = now();
                            let s = *stream;
                            splitter.push(&buf[..n], MAX_LINE, |c, p| write_log(&mut log, s, p, c, &ts));
                        }
                    }
                }
                1 => {
                    if let Ok(Some((_, status))) = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
                        let (exit_code, signal) = exit_of(status);
                        exit = Some(ExitStatus { exit_code, signal, finished_at: now(), unknown: false });
                        drain_deadline = Some(Instant::now() + Duration::from_secs(2));
                    }
                }
                2 => {
                    if let Some(l) = &listener {
                        while let Ok((stream, _)) = l.accept() {
                            let _ = stream.set_nonblocking(true);
                            clients.push(Client { stream, buf: Vec::new(), waiting: false });
                        }
                    }
                }
                _ => {
                    let c = &mut clients[i];
                    match c.stream.read(&mut buf) {
                        Ok(0) | Err(_) => closed_clients.push(i),
                        Ok(n) => {
                            c.buf.extend_from_slice(&buf[..n]);
                            if c.buf.len() > 4096 {
                                closed_clients.push(i);
                                continue;
                            }
                            while let Some(nl) = c.buf.iter().position(|&b| b == b'\n') {
                                let line: Vec<u8> = c.buf.drain(..=nl).collect();
                                let reply = handle(&line, pid, exit.as_ref(), &mut c.waiting);
                                if let Some(r) = reply {
                                    let _ = c.stream.set_nonblocking(false);
                                    let _ = writeln!(c.stream, "{r}");
                                    let _ = c.stream.set_nonblocking(true);
                                }
                            }
                        }
                    }
                }
            }
        }
        closed_clients.sort_unstable();
        for i in closed_clients.into_iter().rev() {
            clients.remove(i);
        }
    }

    let exit = exit.expect("loop ends after exit");
    let data = serde_json::to_vec(&exit).expect("serialises");
    let _ = atoll_util::atomic_write(&cfg.state_dir.join(EXIT_FILE), &data, 0o644);
    let _ = runtime(cfg).args(["delete", "--force"]).arg(&cfg.id).stdout(Stdio::null()).stderr(Stdio::null()).status();
    let line = String::from_utf8_lossy(&data).into_owned();
    for c in clients.iter_mut().filter(|c| c.waiting) {
        let _ = c.stream.set_nonblocking(false);
        let _ = writeln!(c.stream, "{line}");
    }
    let _ = fs::remove_file(&sock_path);
    0
}

fn write_log(log: &mut Option<LogWriter>, stream: Stream, partial: bool, content: &[u8], ts: &str) {
    if let Some(w) = log
        && w.write(stream, partial, content, ts).is_err()
    {
        // A full disk: drop lines rather than block the container on a full pipe.
    }
}

fn handle(line: &[u8], pid: Pid, exit: Option<&ExitStatus>, waiting: &mut bool) -> Option<String> {
    let Ok(req) = serde_json::from_slice::<Request>(line) else {
        return Some(r#"{"error":"bad request"}"#.to_owned());
    };
    match req.op.as_str() {
        "state" => Some(match exit {
            Some(e) => serde_json::to_string(e).expect("serialises"),
            None => format!(r#"{{"pid":{},"running":true}}"#, pid.as_raw_nonzero()),
        }),
        "kill" => {
            if exit.is_some() {
                return Some(r#"{"error":"not running"}"#.to_owned());
            }
            let sig = req.signal.unwrap_or(15);
            // The init is our unreaped child until we see its exit, so its pid cannot be reused.
            match Signal::from_named_raw(sig) {
                Some(s) => match rustix::process::kill_process(pid, s) {
                    Ok(()) => Some(r#"{"ok":true}"#.to_owned()),
                    Err(e) => Some(format!(r#"{{"error":"kill: {e}"}}"#)),
                },
                None => Some(format!(r#"{{"error":"invalid signal {sig}"}}"#)),
            }
        }
        "wait" => match exit {
            Some(e) => Some(serde_json::to_string(e).expect("serialises")),
            None => {
                *waiting = true;
                None
            }
        },
        _ => Some(r#"{"error":"unknown op"}"#.to_owned()),
    }
}
