//! When to renew a certificate, and how long to wait after a failed attempt.
//!
//! Renewal starts at two thirds of the lifetime, so a certificate of 7 days is renewed after
//! about 4.7 days and a failure leaves 2.3 days of retries before anything stops working (the
//! k3s lock-out, where a year-long certificate expires unnoticed, is the failure to avoid).

use std::time::{Duration, SystemTime};

/// The first retry waits this long…
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// …doubling up to this.
pub const RETRY_CAP: Duration = Duration::from_secs(60);

/// When a certificate valid from `not_before` to `not_after` should be renewed: two thirds of
/// the way through its lifetime (`not_before` if the interval is empty or reversed).
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    match not_after.duration_since(not_before) {
        Ok(life) => not_before + life * 2 / 3,
        Err(_) => not_before,
    }
}

/// When a certificate of the island CA should be renewed: two thirds of its real life, which
/// starts when it was issued — [`crate::ca::CLOCK_SKEW`] after its backdated `not_before`. (Counting
/// from `not_before` would renew a 15 s certificate 10 s before it was even issued.)
pub fn renew_at_issued(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let issued = not_before.checked_add(crate::ca::CLOCK_SKEW).map_or(not_before, |t| t.min(not_after).max(not_before));
    renew_at(issued, not_after)
}

/// How long to wait before retry number `attempt` (0 for the first retry): exponential from
/// [`RETRY_BASE`] capped at [`RETRY_CAP`], scaled by a jitter factor between 0.5 and 1.0 taken
/// from `jitter` (a number in `[0, 1)`, e.g. `fastrand::f64()`), so that hosts that failed
/// together do not retry together. The caller should also cap it by the time left before
/// expiry when lifetimes are short.
pub fn retry_after(attempt: u32, jitter: f64) -> Duration {
    let exp = RETRY_BASE.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
    let d = exp.min(RETRY_CAP);
    let j = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
    d.mul_f64(0.5 + j / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn two_thirds() {
        let t = SystemTime::UNIX_EPOCH;
        assert_eq!(renew_at(t, t + Duration::from_secs(300)), t + Duration::from_secs(200));
        assert_eq!(renew_at(t + Duration::from_secs(5), t), t + Duration::from_secs(5));
    }

    #[test]
    fn short_lifetimes_renew_at_two_thirds_of_their_life_from_issue_not_from_the_backdated_start() {
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let nb = issued - crate::ca::CLOCK_SKEW;
        assert_eq!(renew_at_issued(nb, issued + Duration::from_secs(15)), issued + Duration::from_secs(10));
        assert_eq!(renew_at_issued(nb, issued + Duration::from_secs(7 * 86_400)), issued + Duration::from_secs(7 * 86_400 * 2 / 3));
        // Reversed or empty: at its end, never before its start.
        assert_eq!(renew_at_issued(nb + Duration::from_secs(5), nb), nb + Duration::from_secs(5));
    }

    #[test]
    fn retries_back_off_up_to_the_cap() {
        assert_eq!(retry_after(0, 0.999_999).as_millis(), 999);
        assert_eq!(retry_after(0, 0.0), Duration::from_millis(500));
        assert_eq!(retry_after(3, 0.0), Duration::from_secs(4));
        assert_eq!(retry_after(10, 0.0), Duration::from_secs(30));
        assert_eq!(retry_after(u32::MAX, 0.0), Duration::from_secs(30));
        assert_eq!(retry_after(2, f64::NAN), Duration::from_secs(2));
    }

    proptest! {
        #[test]
        fn renewal_is_within_the_lifetime(start in 0u64..4_000_000_000, life in 1u64..400_000_000) {
            let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(start);
            let na = nb + Duration::from_secs(life);
            let r = renew_at(nb, na);
            prop_assert!(r > nb && r < na || life < 2);
            prop_assert!(r >= nb && r <= na);
            // At least a third of the lifetime is left for retries.
            prop_assert!(na.duration_since(r).unwrap() * 3 >= Duration::from_secs(life));
        }

        #[test]
        fn retries_stay_within_bounds(attempt in 0u32..100, jitter in 0.0f64..1.0) {
            let d = retry_after(attempt, jitter);
            prop_assert!(d >= RETRY_BASE / 2 && d <= RETRY_CAP);
            prop_assert!(retry_after(attempt + 1, jitter) >= d);
        }
    }
}
