//! CPU time per request where requests share one process or container (deno, oci), which no
//! runtime can count per request the way wasmtime's fuel does for wasm. A [`CpuClock`] reads
//! the instance's whole CPU time (its cgroup's `cpu.stat` `usage_usec`, or a plain process's
//! `/proc/PID/stat` `utime + stime`); [`Meter::limit`] runs one request's future and, every
//! [`period`] while it is under way, samples the clock into a [`Ledger`], which shares each
//! interval's CPU time equally among the requests that were under way for all of it. A
//! request whose share passes its budget is stopped ([`CpuExceeded`]); the caller answers
//! [`crate::RunError::CpuLimit`] (a 504) and recycles the instance, as for a wall timeout.
//!
//! Precision: a request is charged from its first sample (one [`period`] in) and checked once
//! a period, so it is stopped after at most its budget plus two periods of CPU time, and one
//! shorter than a period is never sampled at all (no cost on the fast path). CPU time the
//! instance spends outside requests (timers, background work between them) is charged to
//! nobody; while requests overlap it is shared among them.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Where an instance's CPU time (user and system, all its threads and processes) is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuClock {
    /// A cgroup v2 `cpu.stat` file (`usage_usec`).
    Cgroup2(PathBuf),
    /// A cgroup v1 `cpuacct.usage` file (nanoseconds).
    Cgroup1(PathBuf),
    /// A process without a cgroup of its own: `/proc/PID/stat` (its threads, not its children).
    Process(u32),
}

/// `/proc` counts CPU time in USER_HZ ticks, 100 a second on every Linux ABI.
const USER_HZ: u64 = 100;

impl CpuClock {
    /// The CPU time used so far; none once the instance is gone (or the file unreadable).
    pub fn read(&self) -> Option<Duration> {
        match self {
            CpuClock::Cgroup2(path) => {
                let text = std::fs::read_to_string(path).ok()?;
                text.lines().find_map(|l| l.strip_prefix("usage_usec ")).and_then(|v| v.trim().parse().ok()).map(Duration::from_micros)
            }
            CpuClock::Cgroup1(path) => std::fs::read_to_string(path).ok()?.trim().parse().ok().map(Duration::from_nanos),
            CpuClock::Process(pid) => parse_proc_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?),
        }
    }
}

/// `utime + stime` of a `/proc/PID/stat` line (proc(5): fields 14 and 15, counted after the
/// command's closing parenthesis, since the command may hold spaces and parentheses).
fn parse_proc_stat(line: &str) -> Option<Duration> {
    let rest = &line[line.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// How often a request with `budget` of CPU time is sampled: a tenth of it, between 5 ms and
/// 100 ms.
pub fn period(budget: Duration) -> Duration {
    (budget / 10).clamp(Duration::from_millis(5), Duration::from_millis(100))
}

/// Who used an instance's CPU time: requests under way and their shares. Pure.
#[derive(Debug, Default)]
pub struct Ledger {
    next: u64,
    /// The clock at the last sample, while any request is under way.
    last: Option<Duration>,
    under_way: BTreeMap<u64, Share>,
}

#[derive(Debug, Default)]
struct Share {
    used: Duration,
    /// Under way since the last sample at least (so charged a part of the next interval).
    whole: bool,
}

impl Ledger {
    /// A request starts; returns its key.
    pub fn begin(&mut self) -> u64 {
        self.next += 1;
        self.under_way.insert(self.next, Share::default());
        self.next
    }

    /// A request ends; returns its share.
    pub fn end(&mut self, key: u64) -> Duration {
        let used = self.under_way.remove(&key).map(|s| s.used).unwrap_or_default();
        if self.under_way.is_empty() {
            // Time until the next request belongs to nobody.
            self.last = None;
        }
        used
    }

    /// The clock read `now`: the time since the last sample is shared equally among the
    /// requests under way for all of it. A clock that went back (a new instance) starts over.
    pub fn sample(&mut self, now: Duration) {
        if self.under_way.is_empty() {
            return;
        }
        if let Some(last) = self.last {
            let whole = self.under_way.values().filter(|s| s.whole).count();
            if let (Some(delta), Ok(n @ 1..)) = (now.checked_sub(last), u32::try_from(whole)) {
                let share = delta / n;
                self.under_way.values_mut().filter(|s| s.whole).for_each(|s| s.used += share);
            }
        }
        self.under_way.values_mut().for_each(|s| s.whole = true);
        self.last = Some(now);
    }

    /// The share of request `key` so far.
    pub fn used(&self, key: u64) -> Duration {
        self.under_way.get(&key).map(|s| s.used).unwrap_or_default()
    }
}

/// A request used more than its CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request used {} ms of CPU time", .used.as_millis())]
pub struct CpuExceeded {
    pub used: Duration,
}

/// The [`Ledger`] of one instance, shared by its requests.
#[derive(Debug, Default)]
pub struct Meter {
    ledger: Mutex<Ledger>,
}

impl Meter {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `request`, stopping it (dropping the future) once its share of `clock` passes
    /// `budget`. Without a clock it just runs.
    pub async fn limit<F: Future>(&self, clock: Option<&CpuClock>, budget: Duration, request: F) -> Result<F::Output, CpuExceeded> {
        let Some(clock) = clock else { return Ok(request.await) };
        struct End<'a>(&'a Meter, u64);
        impl Drop for End<'_> {
            fn drop(&mut self) {
                self.0.ledger().end(self.1);
            }
        }
        let key = self.ledger().begin();
        let _end = End(self, key);
        let every = period(budget);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(request);
        loop {
            tokio::select! {
                biased;
                out = &mut request => return Ok(out),
                _ = tick.tick() => {
                    let now = clock.read();
                    let mut ledger = self.ledger();
                    if let Some(now) = now {
                        ledger.sample(now);
                    }
                    let used = ledger.used(key);
                    if used > budget {
                        return Err(CpuExceeded { used });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_lone_request_is_charged_the_clock_from_its_first_sample() {
        let mut l = Ledger::default();
        let a = l.begin();
        l.sample(100 * MS); // the baseline: what came before is nobody's
        assert_eq!(l.used(a), Duration::ZERO);
        l.sample(130 * MS);
        l.sample(180 * MS);
        assert_eq!(l.end(a), 80 * MS);
    }

    #[test]
    fn overlapping_requests_share_and_a_newcomer_waits_a_whole_interval() {
        let mut l = Ledger::default();
        let a = l.begin();
        l.sample(Duration::ZERO);
        let b = l.begin();
        l.sample(40 * MS); // b was not under way for all of it
        assert_eq!((l.used(a), l.used(b)), (40 * MS, Duration::ZERO));
        l.sample(100 * MS);
        assert_eq!((l.used(a), l.used(b)), (70 * MS, 30 * MS));
        assert_eq!(l.end(a), 70 * MS);
        l.sample(110 * MS);
        assert_eq!(l.end(b), 40 * MS);
    }

    #[test]
    fn idle_time_and_a_clock_that_went_back_are_nobodys() {
        let mut l = Ledger::default();
        let a = l.begin();
        l.sample(10 * MS);
        l.end(a);
        l.sample(500 * MS); // nothing under way
        let b = l.begin();
        l.sample(900 * MS);
        assert_eq!(l.used(b), Duration::ZERO, "the idle 890 ms are not b's");
        l.sample(5 * MS); // a new instance's clock
        l.sample(25 * MS);
        assert_eq!(l.end(b), 20 * MS);
    }

    #[test]
    fn proc_stat_with_a_hostile_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
        let line = "4242 (a) b) (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 123 4096 10\n";
        assert_eq!(parse_proc_stat(line), Some(Duration::from_millis(2810)));
        assert_eq!(parse_proc_stat("4242 (x) S 1"), None);
    }

    #[test]
    fn the_period_is_a_tenth_of_the_budget_within_bounds() {
        assert_eq!(period(Duration::from_secs(1)), 100 * MS);
        assert_eq!(period(200 * MS), 20 * MS);
        assert_eq!(period(MS), 5 * MS);
        assert_eq!(period(Duration::from_secs(30)), 100 * MS);
    }

    #[test]
    fn this_process_clock_moves_with_work() {
        let clock = CpuClock::Process(std::process::id());
        let before = clock.read().expect("our own /proc/self/stat");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(clock.read().expect("readable") >= before + 20 * MS, "60 ms of spinning shows as CPU time");
        assert_eq!(CpuClock::Cgroup2("/nonexistent/cpu.stat".into()).read(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spinning_request_is_stopped_near_its_budget_and_a_quick_one_is_not() {
        let meter = Meter::default();
        let clock = CpuClock::Process(std::process::id());
        let budget = 50 * MS;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spin = std::thread::spawn({
            let done = done.clone();
            move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::black_box(0);
                }
            }
        });
        let stopped = meter.limit(Some(&clock), budget, std::future::pending::<()>()).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        spin.join().expect("the spinner ends");
        let stopped = stopped.expect_err("over budget");
        // Other tests of this process spin too, and /proc counts in 10 ms ticks: a loose bound.
        assert!(stopped.used > budget && stopped.used < 3 * budget, "{stopped:?}");
        assert_eq!(meter.limit(Some(&clock), budget, async { 7 }).await, Ok(7));
        assert_eq!(meter.ledger().under_way.len(), 0, "both ended");
    }

    proptest! {
        /// However requests come and go, no more is charged than the clock moved while some
        /// were under way.
        #[test]
        fn charges_never_exceed_the_clock(steps in proptest::collection::vec((0u8..3, 0u64..50), 1..80)) {
            let mut l = Ledger::default();
            let (mut now, mut open, mut charged, mut moved) = (Duration::ZERO, Vec::new(), Duration::ZERO, Duration::ZERO);
            let mut sampled_with_work = false;
            for (op, ms) in steps {
                match op {
                    0 => open.push(l.begin()),
                    1 if !open.is_empty() => charged += l.end(open.remove(ms as usize % open.len())),
                    _ => {
                        let before = now;
                        now += Duration::from_millis(ms);
                        if sampled_with_work && !open.is_empty() {
                            moved += now - before;
                        }
                        l.sample(now);
                        sampled_with_work = !open.is_empty();
                    }
                }
                if open.is_empty() {
                    sampled_with_work = false;
                }
            }
            charged += open.iter().map(|k| l.used(*k)).sum::<Duration>();
            prop_assert!(charged <= moved, "charged {charged:?} of {moved:?}");
        }
    }
}
