//! One running deno process of a bundle ([`Instance`]): started through the [`Launcher`],
//! ready once its socket accepts and its bootstrap answers the readiness probe (the module
//! loaded, its handlers checked), then called over HTTP/1.1 on the unix socket with
//! keep-alive connections kept in a small pool. A task owns the [`crate::launch::Launched`] process and
//! reports its exit; dropping the instance (or [`Instance::kill`]) kills it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::cpu::{CpuClock, CpuExceeded, Meter};
use crate::launch::{LaunchError, LaunchSpec, Launcher};

/// How an instance ended: its exit code (none for a signal) and the tail of its stderr.
pub(crate) type Exit = (Option<i32>, String);

/// The first and the longest wait between two tries of a starting instance's socket (a
/// failed connect costs microseconds; a start takes 15-40 ms).
const POLL_FIRST: Duration = Duration::from_micros(250);
const POLL_MAX: Duration = Duration::from_millis(2);
/// How long a dead connection waits for the process's exit to be reported.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Why an instance did not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("{0}")]
    Failed(String),
}

/// Why a call got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("cannot connect to the instance's socket: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Http(hyper::Error),
    #[error("the response's body is larger than {0} bytes")]
    TooLarge(usize),
}

pub(crate) struct Instance {
    name: String,
    id: String,
    socket: PathBuf,
    pool: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    pool_max: usize,
    exit: watch::Receiver<Option<Exit>>,
    kill: Mutex<Option<oneshot::Sender<()>>>,
    /// Why the runner stopped it, if it did.
    recycled: Mutex<Option<String>>,
    /// Its CPU time, shared out among its requests.
    cpu: Option<CpuClock>,
    meter: Meter,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("name", &self.name).field("id", &self.id).finish_non_exhaustive()
    }
}

impl Instance {
    /// Starts `spec` and waits, until `deadline`, for it to serve on `socket`: the socket
    /// tried with a bounded backoff (at once when the process exits), then the readiness
    /// probe. A failure carries the `atoll-load-error:` line the bootstrap wrote, or the tail
    /// of its stderr.
    pub(crate) async fn start(
        launcher: &dyn Launcher,
        spec: LaunchSpec,
        socket: PathBuf,
        deadline: Instant,
        pool_max: usize,
    ) -> Result<Arc<Instance>, StartError> {
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StartError::Failed(format!("cannot remove the old socket {}: {e}", socket.display()))),
        }
        let name = spec.name.clone();
        let mut launched = launcher.launch(spec).await?;
        let id = launched.id();
        let cpu = launched.cpu_clock();
        let (exit_tx, exit) = watch::channel(None);
        let (kill_tx, mut kill_rx) = oneshot::channel::<()>();
        // The process's owner: reports its exit; kills it when told or when the instance is
        // dropped (the sender with it).
        tokio::spawn(async move {
            let exited = tokio::select! {
                e = launched.wait() => Some(e),
                _ = &mut kill_rx => None,
            };
            let e = match exited {
                Some(e) => e,
                None => {
                    launched.kill().await;
                    launched.wait().await
                }
            };
            let _ = exit_tx.send(Some(e));
        });
        let instance = Arc::new(Instance {
            name,
            id,
            socket,
            pool: Mutex::new(Vec::new()),
            pool_max,
            exit,
            kill: Mutex::new(Some(kill_tx)),
            recycled: Mutex::new(None),
            cpu,
            meter: Meter::default(),
        });
        match tokio::time::timeout_at(deadline, instance.ready()).await {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(why)) => Err(StartError::Failed(why)),
            Err(_) => {
                instance.kill("it did not start in time");
                let stderr = instance.exited(EXIT_GRACE).await.map(|(_, s)| s).unwrap_or_default();
                Err(StartError::Failed(format!("it was not ready in time{}", describe_stderr(&stderr))))
            }
        }
    }

    async fn ready(&self) -> Result<(), String> {
        let mut exit = self.exit.clone();
        let mut pause = POLL_FIRST;
        let stream = loop {
            if let Some(e) = exit.borrow_and_update().clone() {
                return Err(exited(&e));
            }
            match UnixStream::connect(&self.socket).await {
                Ok(s) => break s,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {}
                Err(e) => return Err(format!("cannot connect to {}: {e}", self.socket.display())),
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = exit.changed() => {}
            }
            pause = (pause * 2).min(POLL_MAX);
        };
        let mut sender = self.handshake(stream).await.map_err(|e| e.to_string())?;
        let probe = Request::get("/")
            .header("host", "localhost")
            .header("x-atoll-ready", "1")
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let answer = async {
            let r = sender.send_request(probe).await?;
            let status = r.status();
            r.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        };
        match answer.await {
            Ok(status) if status.is_success() => {
                self.checkin(sender);
                Ok(())
            }
            Ok(status) => Err(format!("its readiness probe answered {status}")),
            Err(e) => match self.exited(EXIT_GRACE).await {
                Some(e) => Err(exited(&e)),
                None => Err(format!("its readiness probe failed: {e}")),
            },
        }
    }

    /// The sandbox's id of the process.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Whether it still runs and has not been told to stop.
    pub(crate) fn alive(&self) -> bool {
        self.exit.borrow().is_none() && self.kill.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Kills it for `reason` (calls in flight fail, and say why).
    pub(crate) fn kill(&self, reason: &str) {
        self.recycled.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| reason.to_owned());
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).clear();
        if let Some(kill) = self.kill.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = kill.send(());
        }
    }

    /// Why the runner stopped it, if it did.
    pub(crate) fn recycled(&self) -> Option<String> {
        self.recycled.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Its exit, once it has exited, waiting at most `within`.
    pub(crate) async fn exited(&self, within: Duration) -> Option<Exit> {
        let mut exit = self.exit.clone();
        let done = tokio::time::timeout(within, exit.wait_for(Option::is_some)).await;
        match done {
            Ok(Ok(e)) => e.clone(),
            _ => self.exit.borrow().clone(),
        }
    }

    /// [`Instance::call`], stopped once the request's share of the instance's CPU time passes
    /// `cpu` ([`crate::cpu`]).
    pub(crate) async fn metered_call(
        &self,
        req: Request<Full<Bytes>>,
        max_body: usize,
        cpu: Duration,
    ) -> Result<Result<Response<Bytes>, CallError>, CpuExceeded> {
        self.meter.limit(self.cpu.as_ref(), cpu, self.call(req, max_body)).await
    }

    /// Sends `req` and reads its whole response, the body at most `max_body` bytes.
    pub(crate) async fn call(&self, req: Request<Full<Bytes>>, max_body: usize) -> Result<Response<Bytes>, CallError> {
        let mut sender = self.checkout().await?;
        let response = sender.send_request(req).await.map_err(CallError::Http)?;
        let (head, body) = response.into_parts();
        let body = Limited::new(body, max_body).collect().await.map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(e) => CallError::Http(*e),
            Err(_) => CallError::TooLarge(max_body),
        })?;
        self.checkin(sender);
        Ok(Response::from_parts(head, body.to_bytes()))
    }

    async fn checkout(&self) -> Result<SendRequest<Full<Bytes>>, CallError> {
        loop {
            let idle = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(mut sender) = idle else { break };
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let stream = UnixStream::connect(&self.socket).await.map_err(CallError::Connect)?;
        self.handshake(stream).await
    }

    fn checkin(&self, sender: SendRequest<Full<Bytes>>) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if !sender.is_closed() && pool.len() < self.pool_max && self.alive() {
            pool.push(sender);
        }
    }

    async fn handshake(&self, stream: UnixStream) -> Result<SendRequest<Full<Bytes>>, CallError> {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(CallError::Http)?;
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(instance = %name, "connection to the instance ended: {e}");
            }
        });
        Ok(sender)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = kill.send(());
        }
    }
}

/// An exit in words, with the bootstrap's `atoll-load-error:` line if it wrote one, else the
/// stderr's tail.
pub(crate) fn exited((code, stderr): &Exit) -> String {
    let status = match code {
        Some(c) => format!("it exited with status {c}"),
        None => "it was killed by a signal".to_owned(),
    };
    if let Some(why) = stderr.lines().rev().find_map(|l| l.strip_prefix("atoll-load-error: ")) {
        return why.to_owned();
    }
    format!("{status}{}", describe_stderr(stderr))
}

fn describe_stderr(stderr: &str) -> String {
    let s = stderr.trim_end();
    if s.is_empty() {
        return String::new();
    }
    let start = s.char_indices().rev().nth(999).map_or(0, |(i, _)| i);
    // The mark `crate::cut_stderr` cuts at.
    format!(" (stderr: {})", &s[start..])
}

/// The line of a V8 heap exhaustion in `stderr`, if it says one ended the process.
pub(crate) fn out_of_memory(stderr: &str) -> Option<&str> {
    stderr.lines().find(|l| l.contains("JavaScript out of memory") || l.contains("JavaScript heap out of memory")).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_described_by_the_load_error_or_the_stderr() {
        let e = (Some(3), "noise\natoll-load-error: routes[0].handler `x` is missing\n".to_owned());
        assert_eq!(exited(&e), "routes[0].handler `x` is missing");
        let e = (None, "boom\n".to_owned());
        assert_eq!(exited(&e), "it was killed by a signal (stderr: boom)");
        let e = (Some(1), String::new());
        assert_eq!(exited(&e), "it exited with status 1");
        let oom = "<--- Last few GCs --->\n\n#\n# Fatal JavaScript out of memory: Reached heap limit\n#\n";
        assert_eq!(out_of_memory(oom), Some("# Fatal JavaScript out of memory: Reached heap limit"));
        assert_eq!(out_of_memory("fine"), None);
    }
}
