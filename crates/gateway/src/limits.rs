//! Limits that keep the gateway up under abuse: the token bucket behind per-client rate limits
//! (pure, time passed in), the connection count, and the requests an idle timeout watches.
//! Header size and read time and the HTTP/2 limits are hyper's, set in `server`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crate::config::RateLimit;

/// A token bucket: `burst` tokens, refilled at `per_second`.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last: f64,
}

impl TokenBucket {
    /// A full bucket at time `now` (seconds).
    pub fn new(limit: RateLimit, now: f64) -> Self {
        TokenBucket { tokens: f64::from(limit.burst), last: now }
    }

    /// Takes a token at `now` if there is one.
    pub fn take(&mut self, limit: RateLimit, now: f64) -> bool {
        let elapsed = (now - self.last).max(0.0);
        self.tokens = (self.tokens + elapsed * limit.per_second).min(f64::from(limit.burst));
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full at `now` (it can be forgotten).
    pub fn full_at(&self, limit: RateLimit, now: f64) -> bool {
        self.tokens + (now - self.last).max(0.0) * limit.per_second >= f64::from(limit.burst)
    }
}

/// Buckets per (route, client IP). Full buckets are forgotten when the map grows.
#[derive(Debug)]
pub struct RateLimiter {
    epoch: Instant,
    buckets: Mutex<HashMap<(String, IpAddr), (TokenBucket, RateLimit)>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter { epoch: Instant::now(), buckets: Mutex::default() }
    }
}

const PRUNE_ABOVE: usize = 100_000;

impl RateLimiter {
    /// Whether `client` may make one more request on `route` now.
    pub fn allow(&self, route: &str, client: IpAddr, limit: RateLimit) -> bool {
        let now = self.epoch.elapsed().as_secs_f64();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() > PRUNE_ABOVE {
            b.retain(|_, (bucket, l)| !bucket.full_at(*l, now));
        }
        let (bucket, l) = b.entry((route.to_owned(), client.to_canonical())).or_insert_with(|| (TokenBucket::new(limit, now), limit));
        *l = limit;
        bucket.take(limit, now)
    }
}

/// Open client connections, and a guard that counts one while it lives.
#[derive(Debug, Default)]
pub struct ConnCount(AtomicUsize);

#[derive(Debug)]
pub struct ConnGuard(Arc<ConnCount>);

impl ConnCount {
    /// A guard if fewer than `max` are open.
    pub fn try_open(self: &Arc<Self>, max: usize) -> Option<ConnGuard> {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            if cur >= max {
                return None;
            }
            match self.0.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(ConnGuard(self.clone())),
                Err(now) => cur = now,
            }
        }
    }

    pub fn open(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What an idle timeout looks at for one connection: requests in flight (a response body still
/// streaming counts) and when the last one started or ended. Bytes moving do not count: a
/// client dribbling an HTTP/2 header block, or pinging, with no request is idle.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Default for Activity {
    fn default() -> Self {
        Activity { epoch: Instant::now(), last_ms: AtomicU64::new(0), in_flight: AtomicUsize::new(0) }
    }
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long nothing has moved, if no request is in flight.
    pub fn idle_for(&self) -> Option<std::time::Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        Some(std::time::Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed))))
    }

    /// Counts a request in flight until the guard drops.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.touch();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// One more request in flight on the same connection (a tunnel outliving its response).
    pub fn another(&self) -> InFlight {
        self.0.request()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: RateLimit = RateLimit { per_second: 2.0, burst: 3 };

    #[test]
    fn burst_then_refill() {
        let mut b = TokenBucket::new(L, 0.0);
        assert!((0..3).all(|_| b.take(L, 0.0)));
        assert!(!b.take(L, 0.0));
        assert!(!b.take(L, 0.4));
        assert!(b.take(L, 0.5));
        assert!(!b.take(L, 0.5));
        assert!(b.full_at(L, 10.0));
    }

    #[test]
    fn time_going_backwards_gives_nothing() {
        let mut b = TokenBucket::new(L, 10.0);
        assert!((0..3).all(|_| b.take(L, 10.0)));
        assert!(!b.take(L, 5.0));
        assert!(!b.take(L, 10.2));
    }

    #[test]
    fn limiter_is_per_route_and_client() {
        let r = RateLimiter::default();
        let l = RateLimit { per_second: 0.001, burst: 1 };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(r.allow("x", a, l));
        assert!(!r.allow("x", a, l));
        assert!(!r.allow("x", "::ffff:192.0.2.1".parse().unwrap(), l), "a v4-mapped address is the same client");
        assert!(r.allow("y", a, l));
        assert!(r.allow("x", "192.0.2.2".parse().unwrap(), l));
    }

    #[test]
    fn connection_count_refuses_beyond_max() {
        let c = Arc::new(ConnCount::default());
        let g1 = c.try_open(2).unwrap();
        let _g2 = c.try_open(2).unwrap();
        assert!(c.try_open(2).is_none());
        drop(g1);
        assert!(c.try_open(2).is_some());
    }

    proptest::proptest! {
        /// Over any schedule, no more than burst + rate × elapsed requests pass.
        #[test]
        fn never_more_than_the_rate_allows(steps in proptest::collection::vec(0.0f64..0.5, 1..200), per_second in 0.5f64..50.0, burst in 1u32..20) {
            let l = RateLimit { per_second, burst };
            let mut b = TokenBucket::new(l, 0.0);
            let (mut now, mut passed) = (0.0, 0u32);
            for s in steps {
                now += s;
                if b.take(l, now) { passed += 1 }
            }
            proptest::prop_assert!(f64::from(passed) <= f64::from(burst) + per_second * now + 1e-9);
        }
    }
}
