//! Serving a router on a listener (the API's unix socket, the dashboard's TCP port) with the
//! limits `axum::serve` does not set, so slow or hostile clients cannot exhaust the daemon:
//! at most [`MAX_CONNECTIONS`] at once (more wait in the kernel's backlog), request headers
//! bounded in size and in time (a client that stalls mid-header, or connects and says nothing,
//! is dropped after [`HEADER_READ_TIMEOUT`]), and a graceful shutdown that waits a bounded
//! time for streams (`logs -f`, `events`) to end.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Time a client has to send a request's headers (and to start one on an idle connection).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 32 << 10;
/// How long shutdown waits for open connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve<L>(mut listener: L, router: axum::Router, shutdown: impl Future<Output = ()>)
where
    L: axum::serve::Listener,
    L::Io: Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_header_size(MAX_HEADER_BYTES).max_buf_size(64 << 10);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (io, _addr) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(router.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::info!("closing connections still open after {SHUTDOWN_GRACE:?}");
    }
}
