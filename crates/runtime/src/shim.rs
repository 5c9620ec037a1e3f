//! `atoll shim`: one small process per container, detached from the daemon so containers and
//! their logs outlive it. It is a child subreaper: the container's init becomes its child once
//! the runtime's `create` exits, so it learns of the exit through a pidfd, without polling.
//!
//! Lifecycle: `runtime create` (stdout/stderr wired to pipes it owns) → `runtime start` →
//! report `{"pid": N}` (or `{"error": …}`) on stdout to the daemon → serve `shim.sock` and
//! copy output into the rotating log → on exit answer waiters, delete the runtime's state
//! ([`crate::delete`], or `runtime delete` for what it cannot do), write
//! `exit.json` atomically, and go on answering requests until the delete is over → remove the
//! socket, exit.
//!
//! Control protocol on `shim.sock`: one JSON line per request, one JSON line in reply.
//! `{"op":"state"}` → `{"pid":N,"running":true}` or the exit status; `{"op":"kill","signal":N}`
//! → `{"ok":true}`; `{"op":"wait"}` → the exit status, sent when the container exits;
//! `{"op":"done"}` → no reply: the connection closes when the shim has finished (the runtime's
//! state deleted, the socket removed), so a caller learns it without polling.
//! `{"op":"attach"}` turns the connection into a stream: output comes back as frames
//! (`[stream, 0, 0, 0, len: u32 BE]` then `len` bytes; stream 1 = stdout, 2 = stderr), and
//! bytes sent after the request line go to the container's stdin (for `-i` or `-t`). The first
//! attacher also gets the output produced before it arrived (up to [`REPLAY_MAX`]).
//!
//! With `-t`, the runtime hands the pty master over `console.sock` (`--console-socket`); the
//! shim then reads output from and writes input to the master.

use std::fs::{self, File};
use std::io::{self, BufRead, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};
use serde::{Deserialize, Serialize};

use crate::logs::{LineSplitter, LogWriter, MAX_LINE, Stream, timestamp};

/// Arguments of `atoll shim`, or the JSON line a standby shim reads ([`standby`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    pub id: String,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// The container has a terminal (`-t`).
    pub tty: bool,
    /// Keep the container's stdin open for attachers (`-i`).
    pub stdin: bool,
    /// Hold the container at `created` until the first attacher arrives (foreground `run -i/-t`
    /// attaches before starting, so it sees all output), or [`ATTACH_WAIT`] passes.
    pub wait_attach: bool,
    /// Write `exit.json` without fsync: the container is removed when it exits (`--rm`), so
    /// its exit status need not survive a power loss.
    pub no_fsync: bool,
}

/// How long a `wait_attach` container waits for its attacher before starting anyway.
pub const ATTACH_WAIT: Duration = Duration::from_secs(30);
/// What the shim answers a signal for a container that has exited (its init reaped).
pub const NOT_RUNNING: &str = "not running";

/// Output kept for the first attacher.
pub const REPLAY_MAX: usize = 64 * 1024;

/// The container's stdio as the shim holds it.
struct Io {
    /// Output sources: pipes, or the pty master.
    outputs: Vec<(File, Stream)>,
    /// Where attachers' input goes: the stdin pipe, or the pty master.
    input: Option<File>,
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
    /// The kernel's OOM killer killed a process of the container.
    #[serde(default)]
    pub oom_killed: bool,
}

/// The shim's first (and only) line on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Started {
    Ok { pid: i32, started_at: String },
    Failed { error: String },
}

pub const SOCKET: &str = "shim.sock";
/// The shim's stderr, in the state dir.
pub const SHIM_LOG: &str = "shim.log";
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
    // Sockets are bound relative to the state dir: socket paths are limited to 108 bytes, and
    // a data dir plus a 64-digit ID can exceed that. (The shim is single-threaded: its working
    // directory is its own.)
    if let Err(e) = std::env::set_current_dir(&cfg.state_dir) {
        report(&Started::Failed { error: format!("entering {}: {e}", cfg.state_dir.display()) });
        return 1;
    }
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        report(&Started::Failed { error: format!("becoming a child subreaper: {e}") });
        return 1;
    }
    match start(&cfg) {
        Ok((pid, pidfd, io)) => {
            // The socket exists before we say "started": the daemon connects right away, and a
            // refused connection would look like a dead shim.
            let sock_path = Path::new(SOCKET);
            let _ = fs::remove_file(sock_path);
            let listener = match UnixListener::bind(sock_path) {
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
            serve(&cfg, pid, pidfd, io, listener)
        }
        Err(error) => {
            report(&Started::Failed { error });
            1
        }
    }
}

/// `atoll shim --standby`: a shim started before it is needed ([`crate::driver::Standby`]).
/// It waits for its container's [`ShimConfig`] as one JSON line on stdin, takes
/// [`SHIM_LOG`] in that state dir as its stderr, then runs as [`run`] does. EOF before the
/// line (the daemon is gone) ends it with 0.
pub fn standby() -> i32 {
    let mut line = String::new();
    match io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => return 0,
        Ok(_) => {}
    }
    let cfg: ShimConfig = match serde_json::from_str(&line) {
        Ok(c) => c,
        Err(e) => {
            report(&Started::Failed { error: format!("the standby shim's configuration: {e}") });
            return 1;
        }
    };
    if let Ok(null) = File::open("/dev/null") {
        let _ = rustix::stdio::dup2_stdin(&null);
    }
    let log = cfg.state_dir.join(SHIM_LOG);
    match File::options().create(true).append(true).open(&log) {
        Ok(f) => {
            let _ = rustix::stdio::dup2_stderr(&f);
        }
        Err(e) => {
            report(&Started::Failed { error: format!("opening {}: {e}", log.display()) });
            return 1;
        }
    }
    run(cfg)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| format!("creating a pipe: {e}"))
}

/// Receives the pty master the runtime sends over the console socket.
fn receive_console(listener: &UnixListener) -> Result<OwnedFd, String> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let (conn, _) = listener.accept().map_err(|e| format!("accepting the console socket: {e}"))?;
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut name = [0u8; 256];
    let mut iov = [io::IoSliceMut::new(&mut name)];
    rustix::net::recvmsg(&conn, &mut iov, &mut anc, RecvFlags::CMSG_CLOEXEC).map_err(|e| format!("receiving the console: {e}"))?;
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err("the runtime sent no console".into())
}

/// `runtime start`: the created container runs its process.
fn runtime_start(cfg: &ShimConfig) -> Result<(), String> {
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
    Ok(())
}

fn start(cfg: &ShimConfig) -> Result<(Pid, OwnedFd, Io), String> {
    let pid_file = cfg.state_dir.join(PID_FILE);
    let _ = fs::remove_file(&pid_file);
    // `run --detach` creates and starts in one runtime invocation; `create` alone when the
    // container must wait for its attacher. Only `create` is given a pid file: `run` writes
    // it after the container's process has started, and a process that fills the disk at
    // once (the data dir's, where the file is) made that write, and so the start, fail. The
    // container's init is our only child once the runtime has exited (we are its subreaper).
    let mut create = runtime(cfg);
    if cfg.wait_attach {
        create.arg("create").arg("--pid-file").arg(&pid_file);
    } else {
        create.arg("run").arg("--detach");
    }
    create.arg("--bundle").arg(&cfg.bundle);
    let mut outputs = Vec::new();
    let mut input = None;
    let mut console = None;
    if cfg.tty {
        // Relative, like shim.sock; the runtime runs in our working directory.
        let path = PathBuf::from("console.sock");
        let _ = fs::remove_file(&path);
        let l = UnixListener::bind(&path).map_err(|e| format!("binding {}: {e}", path.display()))?;
        create.arg("--console-socket").arg(&path).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        console = Some((l, path));
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        create.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
        outputs.push((File::from(out_r), Stream::Stdout));
        outputs.push((File::from(err_r), Stream::Stderr));
        if cfg.stdin {
            let (in_r, in_w) = pipe()?;
            create.stdin(Stdio::from(in_r));
            input = Some(File::from(in_w));
        } else {
            create.stdin(Stdio::null());
        }
    }
    let status = create.arg(&cfg.id).status().map_err(|e| format!("running {} create: {e}", cfg.runtime.display()));
    // Our copies of the child ends are closed with `create`.
    drop(create);
    let status = status?;
    if !status.success() {
        let why = runtime_error(&cfg.state_dir).unwrap_or_else(|| format!("exit status {status}"));
        let _ = runtime(cfg).args(["delete", "--force"]).arg(&cfg.id).stdout(Stdio::null()).stderr(Stdio::null()).status();
        return Err(format!("the runtime could not create the container: {why}"));
    }
    let pid = if cfg.wait_attach {
        let pid: i32 = fs::read_to_string(&pid_file)
            .map_err(|e| format!("reading {}: {e}", pid_file.display()))?
            .trim()
            .parse()
            .map_err(|_| "bad pid file".to_owned())?;
        Pid::from_raw(pid).ok_or("pid 0 in pid file")?
    } else {
        only_child()?
    };
    let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(|e| format!("pidfd_open({pid:?}): {e}"))?;
    if let Some((l, path)) = console {
        let master = receive_console(&l);
        let _ = fs::remove_file(path);
        let master = File::from(master.inspect_err(|_| {
            let _ = runtime(cfg).args(["delete", "--force"]).arg(&cfg.id).status();
        })?);
        let _ = rustix::termios::tcsetwinsize(&master, rustix::termios::Winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 });
        input = Some(master.try_clone().map_err(|e| format!("duplicating the console: {e}"))?);
        outputs.push((master, Stream::Stdout));
    }
    Ok((pid, pidfd, Io { outputs, input }))
}

/// This (single-threaded) process's one child, from `/proc/thread-self/children`.
fn only_child() -> Result<Pid, String> {
    let path = "/proc/thread-self/children";
    let text = fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    match text.split_whitespace().map(str::parse::<i32>).collect::<Result<Vec<_>, _>>().as_deref() {
        Ok([pid]) => Pid::from_raw(*pid).ok_or_else(|| "pid 0 among our children".to_owned()),
        _ => Err(format!("the runtime left {} children, not the container's init alone: {text:?}", text.split_whitespace().count())),
    }
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    waiting: bool,
    /// Streams output and feeds stdin.
    attached: bool,
    /// An attacher whose input ended: it still receives output, but is not read any more.
    input_closed: bool,
}

/// Sends one output frame to an attacher; false if it is gone or stuck.
fn send_frame(c: &mut UnixStream, stream: Stream, data: &[u8]) -> bool {
    let mut frame = Vec::with_capacity(data.len() + 8);
    frame.push(match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    });
    frame.extend_from_slice(&[0, 0, 0]);
    frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
    frame.extend_from_slice(data);
    let _ = c.set_nonblocking(false);
    let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
    let ok = c.write_all(&frame).is_ok();
    let _ = c.set_nonblocking(true);
    ok
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

fn serve(cfg: &ShimConfig, pid: Pid, pidfd: OwnedFd, io: Io, listener: UnixListener) -> i32 {
    let log_path = cfg.state_dir.join(LOG_FILE);
    let mut log = LogWriter::open(&log_path, cfg.log_max_size, cfg.log_max_files).ok();
    let sock_path = cfg.state_dir.join(SOCKET);
    let mut pipes: Vec<Option<(File, Stream, LineSplitter)>> =
        io.outputs.into_iter().map(|(f, s)| Some((f, s, LineSplitter::default()))).collect();
    let mut input = io.input;
    let mut clients: Vec<Client> = Vec::new();
    let mut exit: Option<ExitStatus> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    // Output before the first attacher, replayed to it.
    let mut replay: Option<Vec<(Stream, Vec<u8>)>> = (cfg.stdin || cfg.tty).then(Vec::new);
    let mut replay_len = 0usize;
    // Held at `created` until the first attacher (or the deadline).
    let mut start_deadline = cfg.wait_attach.then(|| Instant::now() + ATTACH_WAIT);
    let start_now = |deadline: &mut Option<Instant>| {
        if deadline.take().is_some() && runtime_start(cfg).is_err() {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
    };

    // Set once the container has exited and its output is drained: the runtime's cleanup.
    let mut finishing: Option<Cleanup> = None;
    loop {
        let done_draining = pipes.iter().all(Option::is_none) || drain_deadline.is_some_and(|d| Instant::now() >= d);
        if let Some(e) = exit.as_ref()
            && done_draining
            && finishing.is_none()
        {
            // Waiters first: the daemon records the exit itself. Then the runtime's cleanup,
            // and `exit.json` while it runs; requests are answered until the cleanup is over.
            let line = serde_json::to_string(e).expect("serialises");
            for c in clients.iter_mut().filter(|c| c.waiting) {
                let _ = c.stream.set_nonblocking(false);
                let _ = writeln!(c.stream, "{line}");
                let _ = c.stream.set_nonblocking(true);
                c.waiting = false;
            }
            // Output is over: attachers see its end, stragglers holding a pipe are not read.
            clients.retain(|c| !c.attached);
            pipes.iter_mut().for_each(|p| *p = None);
            input = None;
            let cleanup = Cleanup::start(cfg);
            let path = cfg.state_dir.join(EXIT_FILE);
            let _ = if cfg.no_fsync {
                atoll_util::replace_file(&path, line.as_bytes(), 0o644)
            } else {
                atoll_util::atomic_write(&path, line.as_bytes(), 0o644)
            };
            match cleanup {
                Some(c) => finishing = Some(c),
                None => break,
            }
        }
        if finishing.as_mut().is_some_and(Cleanup::finished) {
            break;
        }
        // The poll set: outputs, pidfd (until exit), the cleanup, listener, clients.
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
        if let Some(c) = finishing.as_ref() {
            fds.push(PollFd::new(&c.pidfd, PollFlags::IN));
            kinds.push((4, 0));
        }
        fds.push(PollFd::new(&listener, PollFlags::IN));
        kinds.push((2, 0));
        for (i, c) in clients.iter().enumerate().filter(|(_, c)| !c.input_closed) {
            fds.push(PollFd::new(&c.stream, PollFlags::IN));
            kinds.push((3, i));
        }
        if start_deadline.is_some_and(|d| Instant::now() >= d) {
            start_now(&mut start_deadline);
        }
        let wake = match (drain_deadline, start_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = wake.map(|d| rustix::event::Timespec::try_from(d.saturating_duration_since(Instant::now())).unwrap_or_default());
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
                    let s = *stream;
                    match f.read(&mut buf) {
                        // EIO: the pty's other side is closed.
                        Ok(0) | Err(_) => {
                            let ts = now();
                            splitter.flush(|c, p| write_log(&mut log, s, p, c, &ts));
                            pipes[i] = None;
                        }
                        Ok(n) => {
                            let ts = now();
                            splitter.push(&buf[..n], MAX_LINE, |c, p| write_log(&mut log, s, p, c, &ts));
                            for (ci, c) in clients.iter_mut().enumerate() {
                                if c.attached && !send_frame(&mut c.stream, s, &buf[..n]) {
                                    closed_clients.push(ci);
                                }
                            }
                            if let Some(r) = replay.as_mut()
                                && replay_len + n <= REPLAY_MAX
                            {
                                r.push((s, buf[..n].to_vec()));
                                replay_len += n;
                            }
                        }
                    }
                }
                1 => {
                    if let Ok(Some((_, status))) = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
                        let (exit_code, signal) = exit_of(status);
                        // Read before the runtime deletes the cgroup.
                        let oom_killed = crate::stats::oom_killed(&format!("/atoll/{}", cfg.id));
                        exit = Some(ExitStatus { exit_code, signal, finished_at: now(), unknown: false, oom_killed });
                        drain_deadline = Some(Instant::now() + Duration::from_secs(2));
                    }
                }
                // The cleanup ended: seen at the top of the loop.
                4 => {}
                2 => {
                    while let Ok((stream, _)) = listener.accept() {
                        let _ = stream.set_nonblocking(true);
                        clients.push(Client { stream, buf: Vec::new(), waiting: false, attached: false, input_closed: false });
                    }
                }
                _ => {
                    let c = &mut clients[i];
                    match c.stream.read(&mut buf) {
                        Ok(0) | Err(_) if c.attached => {
                            // The attacher's input ended; it keeps getting output. Without a
                            // terminal, its EOF is the container's (`echo x | atoll run -i …`).
                            c.input_closed = true;
                            if !cfg.tty {
                                input = None;
                            }
                        }
                        Ok(0) | Err(_) => closed_clients.push(i),
                        Ok(n) if c.attached => {
                            if let Some(inp) = input.as_mut()
                                && inp.write_all(&buf[..n]).is_err()
                            {
                                input = None;
                            }
                        }
                        Ok(n) => {
                            c.buf.extend_from_slice(&buf[..n]);
                            if c.buf.len() > 4096 && !c.buf.contains(&b'\n') {
                                closed_clients.push(i);
                                continue;
                            }
                            while !c.attached
                                && let Some(nl) = c.buf.iter().position(|&b| b == b'\n')
                            {
                                let line: Vec<u8> = c.buf.drain(..=nl).collect();
                                if serde_json::from_slice::<Request>(&line).is_ok_and(|r| r.op == "attach") {
                                    c.attached = true;
                                    if let Some(r) = replay.take() {
                                        for (s, data) in &r {
                                            send_frame(&mut c.stream, *s, data);
                                        }
                                    }
                                    // Bytes that came with the request line are stdin already.
                                    let rest = std::mem::take(&mut c.buf);
                                    if let Some(inp) = input.as_mut()
                                        && !rest.is_empty()
                                    {
                                        let _ = inp.write_all(&rest);
                                    }
                                    start_now(&mut start_deadline);
                                    break;
                                }
                                let final_exit = exit.as_ref().filter(|_| finishing.is_some());
                                let reply = handle(&line, pid, exit.as_ref(), final_exit, &mut c.waiting);
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
        closed_clients.dedup();
        for i in closed_clients.into_iter().rev() {
            clients.remove(i);
        }
    }

    // The socket goes last, so its absence means this shim is completely done (a new start of
    // the container waits for it); the connections still open (`done`) close as we exit.
    let _ = fs::remove_file(&sock_path);
    0
}

/// The runtime's cleanup of an exited container (`runtime delete`), run as a child the poll
/// loop watches through a pidfd, so the shim keeps answering while it runs — when the shim
/// could not delete the runtime's state itself ([`crate::delete`]).
struct Cleanup {
    child: std::process::Child,
    pidfd: OwnedFd,
}

impl Cleanup {
    /// None if the shim deleted the runtime's state itself, or the runtime could not be
    /// started (then there is nothing to wait for).
    fn start(cfg: &ShimConfig) -> Option<Self> {
        if crate::delete::delete_stopped(&cfg.runtime_root, &cfg.id).is_ok() {
            return None;
        }
        let child = runtime(cfg).args(["delete", "--force"]).arg(&cfg.id).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()?;
        let pid = Pid::from_raw(child.id() as i32)?;
        match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
            Ok(pidfd) => Some(Self { child, pidfd }),
            Err(_) => {
                let mut child = child;
                let _ = child.wait();
                None
            }
        }
    }

    /// Whether the cleanup is over (reaping it if so).
    fn finished(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)) | Err(_))
    }
}

fn write_log(log: &mut Option<LogWriter>, stream: Stream, partial: bool, content: &[u8], ts: &str) {
    if let Some(w) = log
        && w.write(stream, partial, content, ts).is_err()
    {
        // A full disk: drop the entry rather than block the container on a full pipe (the
        // writer notes the loss once it can write again).
    }
}

/// Any signal number Linux delivers (1 to 64), real-time ones included: `Signal::from_named_raw`
/// knows only the named 31, and a container's `SIGRTMIN+3` (systemd's stop signal) is 37.
fn signal(sig: i32) -> Option<Signal> {
    // SAFETY: `sig` is within 1..=64, so a valid, non-zero signal number. The value is only sent
    // to the container's init, another process: it never blocks, consumes or handles a signal in
    // this one, which is what libc's reservation of some real-time numbers for itself protects.
    #[allow(unsafe_code)]
    (1..=64).contains(&sig).then(|| unsafe { Signal::from_raw_unchecked(sig) })
}

/// Answers one request. `exit` is set once the container has exited; `final_exit` once its
/// output is also drained (a waiter told of the exit may expect all of the output logged).
fn handle(line: &[u8], pid: Pid, exit: Option<&ExitStatus>, final_exit: Option<&ExitStatus>, waiting: &mut bool) -> Option<String> {
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
                return Some(serde_json::json!({ "error": NOT_RUNNING }).to_string());
            }
            let sig = req.signal.unwrap_or(15);
            // The init is our unreaped child until we see its exit, so its pid cannot be reused.
            match signal(sig) {
                Some(s) => match rustix::process::kill_process(pid, s) {
                    Ok(()) => Some(r#"{"ok":true}"#.to_owned()),
                    Err(e) => Some(format!(r#"{{"error":"kill: {e}"}}"#)),
                },
                None => Some(format!(r#"{{"error":"invalid signal {sig}"}}"#)),
            }
        }
        "wait" => match final_exit {
            Some(e) => Some(serde_json::to_string(e).expect("serialises")),
            None => {
                *waiting = true;
                None
            }
        },
        // Answered by closing the connection, when the shim exits.
        "done" => None,
        _ => Some(r#"{"error":"unknown op"}"#.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How the shim finds the container's init after `run --detach`: its one child.
    #[test]
    fn the_only_child_is_found_and_two_are_refused() {
        let mut first = Command::new("sleep").arg("30").spawn().unwrap();
        assert_eq!(only_child().unwrap().as_raw_nonzero().get() as u32, first.id());
        let mut second = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(only_child().unwrap_err().contains("2 children"));
        for c in [&mut first, &mut second] {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        assert!(only_child().unwrap_err().contains("0 children"));
    }
}
