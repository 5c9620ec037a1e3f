//! The seam between a runtime that runs bundles as processes (deno) and the sandbox that holds
//! them: a [`Launcher`] starts a [`LaunchSpec`] and hands back a [`Launched`] to wait for and
//! kill. [`ProcessLauncher`] is the plain implementation (isolation `none`): a child process
//! of the daemon in its own process group, with only the spec's environment, its standard
//! output and error logged line by line (target `atoll_bundles::output`) and the tail of its
//! standard error kept for the exit report. It applies none of `mounts`, `network`,
//! `memory_bytes` and `cpus_milli` (a process cannot be held to them without a sandbox): the
//! deno runtime's own permission flags and heap limit are then all there is. A container
//! launcher (the daemon's) applies all four.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

/// One program to start. Paths are host paths, and the sandbox mounts each at the same path.
#[derive(Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// A name for logs and the sandbox (letters, digits, `-`, `.`; unique among running ones).
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments (without the program's name).
    pub args: Vec<String>,
    /// Its whole environment (nothing of the daemon's is inherited). May hold secrets: never
    /// log the values.
    pub env: BTreeMap<String, String>,
    /// What it may see of the host's files, each `(path, writable)`: the program itself, its
    /// work directory, its data directories.
    pub mounts: Vec<(PathBuf, bool)>,
    /// Whether it may open network connections at all (the runtime narrows them to hosts).
    pub network: bool,
    /// The hosts it may reach (`permissions.net`): a sandbox with a network of its own lets
    /// only these through.
    pub egress: Vec<String>,
    /// The most memory it may use, all of it counted (the sandbox's cgroup limit).
    pub memory_bytes: Option<u64>,
    /// The most CPU it may use at once, in thousandths of a CPU (the sandbox's cgroup quota).
    pub cpus_milli: Option<u64>,
    /// Its working directory.
    pub workdir: PathBuf,
}

impl std::fmt::Debug for LaunchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchSpec")
            .field("name", &self.name)
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("mounts", &self.mounts)
            .field("network", &self.network)
            .field("egress", &self.egress)
            .field("memory_bytes", &self.memory_bytes)
            .field("cpus_milli", &self.cpus_milli)
            .field("workdir", &self.workdir)
            .finish()
    }
}

/// Why a program did not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot start {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the sandbox cannot run it: {0}")]
    Sandbox(String),
}

/// Starts programs in some sandbox.
#[async_trait]
pub trait Launcher: Send + Sync + 'static {
    /// Starts `spec`; returns once the program runs (not once it is ready for anything).
    async fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Launched>, LaunchError>;
    /// The sandbox's name: `none`, `container`, `vm`.
    fn isolation(&self) -> &'static str;
}

/// A started program. Dropping it kills the program.
#[async_trait]
pub trait Launched: Send + Sync {
    /// What identifies it in the sandbox (a pid, a container id), for logs.
    fn id(&self) -> String;
    /// Resolves when it exits, with its exit code (none when a signal ended it) and the tail of
    /// its stderr if known. Cancel-safe, and answers the same again once it has exited.
    async fn wait(&mut self) -> (Option<i32>, String);
    /// Kills it (and whatever it started) at once; [`Launched::wait`] then resolves.
    async fn kill(&mut self);
    /// Where its CPU time is read (per-request CPU limits need it), if anywhere.
    fn cpu_clock(&self) -> Option<crate::cpu::CpuClock> {
        None
    }
}

/// Children of this process, isolation `none` (see the module's documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessLauncher;

/// How much of a child's stderr is kept for its exit report.
const TAIL_BYTES: usize = 16 << 10;
/// Longer output lines are logged in pieces of this size.
const LINE_BYTES: usize = 4 << 10;

#[async_trait]
impl Launcher for ProcessLauncher {
    async fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Launched>, LaunchError> {
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .current_dir(&spec.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn { program: spec.program.clone(), source })?;
        let pid = child.id().unwrap_or(0);
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(out, spec.name.clone(), "stdout", None)));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(err, spec.name.clone(), "stderr", Some(tail.clone()))));
        }
        tracing::debug!(instance = %spec.name, pid, program = %spec.program.display(), "started");
        Ok(Box::new(Process { name: spec.name, pid, child, tail, pumps, exited: None }))
    }

    fn isolation(&self) -> &'static str {
        "none"
    }
}

struct Process {
    name: String,
    pid: u32,
    child: tokio::process::Child,
    tail: Arc<Mutex<VecDeque<u8>>>,
    pumps: Vec<JoinHandle<()>>,
    exited: Option<(Option<i32>, String)>,
}

#[async_trait]
impl Launched for Process {
    fn id(&self) -> String {
        self.pid.to_string()
    }

    fn cpu_clock(&self) -> Option<crate::cpu::CpuClock> {
        Some(crate::cpu::CpuClock::Process(self.pid))
    }

    async fn wait(&mut self) -> (Option<i32>, String) {
        if let Some(e) = &self.exited {
            return e.clone();
        }
        let code = match self.child.wait().await {
            Ok(status) => status.code(),
            Err(e) => {
                tracing::warn!(instance = %self.name, pid = self.pid, "cannot wait for the instance: {e}");
                None
            }
        };
        // Its output ends with it (the whole group is gone, or the pipes are the last holders'):
        // the pumps finish at end of file. A descendant that escaped the group could hold a
        // pipe open, so they get a bound.
        for pump in &mut self.pumps {
            let _ = tokio::time::timeout(Duration::from_secs(1), pump).await;
        }
        let tail: Vec<u8> = self.tail.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
        let text = String::from_utf8_lossy(&tail).into_owned();
        tracing::debug!(instance = %self.name, pid = self.pid, ?code, "exited");
        self.exited = Some((code, text));
        self.exited.clone().expect("just set")
    }

    async fn kill(&mut self) {
        if self.exited.is_some() {
            return;
        }
        // Not reaped yet, so its pid (the group's id) is still its own.
        if let Ok(None) = self.child.try_wait()
            && let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.start_kill();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited.is_none()
            && let Ok(None) = self.child.try_wait()
            && let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        for pump in &self.pumps {
            pump.abort();
        }
    }
}

/// Logs `stream` line by line (lines cut at [`LINE_BYTES`]) until its end; keeps its last
/// [`TAIL_BYTES`] in `tail` if given.
async fn pump(mut stream: impl AsyncRead + Unpin, instance: String, which: &'static str, tail: Option<Arc<Mutex<VecDeque<u8>>>>) {
    let mut buf = vec![0u8; 8 << 10];
    let mut line: Vec<u8> = Vec::new();
    let log = |line: &[u8]| {
        let text = String::from_utf8_lossy(line);
        tracing::info!(target: "atoll_bundles::output", instance = %instance, stream = which, "{}", text.trim_end_matches('\r'));
    };
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(tail) = &tail {
            let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
            t.extend(&buf[..n]);
            let excess = t.len().saturating_sub(TAIL_BYTES);
            t.drain(..excess);
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                log(&line);
                line.clear();
            } else {
                line.push(b);
                if line.len() >= LINE_BYTES {
                    log(&line);
                    line.clear();
                }
            }
        }
    }
    if !line.is_empty() {
        log(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(script: &str) -> LaunchSpec {
        LaunchSpec {
            name: "t".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: [("ONLY".to_owned(), "this".to_owned())].into(),
            mounts: Vec::new(),
            network: false,
            egress: vec![],
            memory_bytes: None,
            cpus_milli: None,
            workdir: std::env::temp_dir(),
        }
    }

    #[tokio::test]
    async fn the_exit_code_and_the_stderr_tail_are_reported_and_the_env_is_only_the_specs() {
        let mut p = ProcessLauncher.launch(spec(r#"echo "env: $(env | grep -v '^PWD=' | tr '\n' ' ')" >&2; exit 7"#)).await.unwrap();
        let (code, tail) = p.wait().await;
        assert_eq!(code, Some(7));
        assert_eq!(tail, "env: ONLY=this \n");
        assert_eq!(p.wait().await, (code, tail), "answers the same again");
    }

    #[tokio::test]
    async fn kill_ends_the_whole_group() {
        let mut p = ProcessLauncher.launch(spec("sleep 1000 & wait")).await.unwrap();
        let pid = p.id();
        // The shell's child is in the launched program's group.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let grandchild = loop {
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
            if let Some(c) = status.split_whitespace().next() {
                break c.to_owned();
            }
            assert!(std::time::Instant::now() < deadline, "the shell started no child");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        p.kill().await;
        let (code, _) = p.wait().await;
        assert_eq!(code, None, "killed by a signal");
        let gone = |p: &str| std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |s| s.contains(") Z "));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !gone(&grandchild) {
            assert!(std::time::Instant::now() < deadline, "the group's other process {grandchild} outlived the kill");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let mut s = spec("");
        s.program = "/nonexistent/deno".into();
        let e = ProcessLauncher.launch(s).await.err().unwrap();
        assert!(e.to_string().contains("/nonexistent/deno"), "{e}");
    }
}
