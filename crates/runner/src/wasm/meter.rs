//! Time limits. An epoch ticker thread advances the engine's epoch every [`TICK`] while any
//! request runs (it sleeps otherwise); each store's deadline is one tick away, so wasm code
//! calls back into the runner about every millisecond. The callback stops the request when
//! its CPU time or its wall time is spent, and otherwise yields to tokio so other tasks (and
//! the wall-time `timeout` around the request, which also covers host calls such as
//! `poll_oneoff` sleeps) get to run.
//!
//! CPU time is the thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`) summed over the polls of
//! the request's future ([`Metered`]): the request runs on whatever tokio worker polls it, and
//! only while it is polled.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// How often the epoch advances while requests run.
pub(crate) const TICK: Duration = Duration::from_millis(1);

pub(crate) struct Ticker {
    state: Arc<TickState>,
    thread: std::thread::Thread,
}

struct TickState {
    busy: AtomicUsize,
    stop: AtomicBool,
}

impl Ticker {
    pub(crate) fn start(engine: wasmtime::Engine) -> std::io::Result<Ticker> {
        let state = Arc::new(TickState { busy: AtomicUsize::new(0), stop: AtomicBool::new(false) });
        let s = state.clone();
        let handle = std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
            while !s.stop.load(Ordering::Acquire) {
                if s.busy.load(Ordering::Acquire) == 0 {
                    std::thread::park();
                    continue;
                }
                std::thread::sleep(TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(Ticker { state, thread: handle.thread().clone() })
    }

    /// Keeps the ticker ticking while the guard lives.
    pub(crate) fn busy(&self) -> BusyGuard<'_> {
        if self.state.busy.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        BusyGuard(self)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

pub(crate) struct BusyGuard<'a>(&'a Ticker);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.state.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The CPU time of one request.
#[derive(Default)]
pub(crate) struct Meter {
    used_ns: AtomicU64,
    poll_start_ns: AtomicU64,
}

impl Meter {
    /// CPU time used so far; called during a poll, on the polling thread.
    pub(crate) fn used(&self) -> Duration {
        let now = thread_cpu_ns();
        let this_poll = now.saturating_sub(self.poll_start_ns.load(Ordering::Relaxed));
        Duration::from_nanos(self.used_ns.load(Ordering::Relaxed) + this_poll)
    }

    /// CPU time of the finished polls.
    pub(crate) fn total(&self) -> Duration {
        Duration::from_nanos(self.used_ns.load(Ordering::Relaxed))
    }
}

fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// A future whose polls are charged to a [`Meter`].
pub(crate) struct Metered<F> {
    pub(crate) inner: Pin<Box<F>>,
    pub(crate) meter: Arc<Meter>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = thread_cpu_ns();
        self.meter.poll_start_ns.store(start, Ordering::Relaxed);
        let out = self.inner.as_mut().poll(cx);
        let spent = thread_cpu_ns().saturating_sub(start);
        self.meter.used_ns.fetch_add(spent, Ordering::Relaxed);
        out
    }
}
