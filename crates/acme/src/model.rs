//! The certificate record the island keeps per set of names, and when to act on it: renewal at
//! about two thirds of a certificate's life, retries with capped exponential backoff. Pure: the
//! time is passed in (unix seconds).

use serde::{Deserialize, Serialize};

use crate::seal::SealedKey;

/// Where a certificate record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertState {
    /// Never obtained yet: the first attempt is coming, or under way.
    Pending,
    /// A certificate is held and not yet due for renewal.
    Valid,
    /// A certificate is held and still serves, and its renewal is due or under way (after a
    /// failed attempt, `last_error` says why and `next_attempt_at` when the next one comes).
    Renewing,
    /// No usable certificate: the first attempt failed, or the one held has expired.
    Failed,
}

impl CertState {
    /// The word `cert ls` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Pending => "pending",
            CertState::Valid => "valid",
            CertState::Renewing => "renewing",
            CertState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for CertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The certificate currently held for a record: its chain and its sealed private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentCertificate {
    /// The issuer's common name (or organisation when it has no CN), e.g. `Pebble Intermediate CA 1a2b3c`.
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Leaf first, then the intermediates, as the CA sent them.
    pub chain_pem: String,
    /// The leaf's private key, encrypted under the island's data key (see [`crate::seal`]).
    pub sealed_key: SealedKey,
}

/// One certificate the island wants for a set of names (the unit `cert ls` lists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// The names asked for (wildcards as `*.example.org`), normalised by [`crate::normalize_names`].
    pub names: Vec<String>,
    /// The certificate held, if one was ever obtained. A renewal replaces it whole.
    pub current: Option<CurrentCertificate>,
    pub state: CertState,
    /// The last failure, in words; cleared by a success.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub attempts: u32,
    /// Unix seconds: when to renew (after a success) or retry (after a failure).
    pub next_attempt_at: i64,
}

impl CertificateRecord {
    /// A record for names never obtained yet, due at once.
    pub fn pending(names: Vec<String>, now: i64) -> Self {
        CertificateRecord { names, current: None, state: CertState::Pending, last_error: None, attempts: 0, next_attempt_at: now }
    }

    /// Whether an attempt (first issue, renewal or retry) is due at `now`.
    pub fn is_due(&self, now: i64) -> bool {
        now >= self.next_attempt_at
    }

    /// Whether the certificate held (if any) can still be served at `now`.
    pub fn serves_at(&self, now: i64) -> bool {
        self.current.as_ref().is_some_and(|c| c.not_before <= now && now < c.not_after)
    }

    /// Marks an attempt as started: a held certificate that was `Valid` is now `Renewing`.
    pub fn start_attempt(&mut self) {
        if self.state == CertState::Valid {
            self.state = CertState::Renewing;
        }
    }

    /// Records a new certificate obtained at `obtained_at`: `Valid`, errors cleared, next
    /// renewal at two thirds of its life ([`renewal_due`]).
    pub fn succeeded(&mut self, current: CurrentCertificate, obtained_at: i64) {
        self.next_attempt_at = renewal_due(current.not_before, current.not_after, obtained_at);
        self.current = Some(current);
        self.state = CertState::Valid;
        self.last_error = None;
        self.attempts = 0;
    }

    /// Records a failed attempt at `now`: `Renewing` while the held certificate still serves,
    /// `Failed` otherwise; the next attempt after the backoff of [`next_retry_at`]. `jitter` is
    /// a number in `[0, 1)` (e.g. `fastrand::f64()`), so hosts that failed together do not retry
    /// together.
    pub fn failed(&mut self, error: String, now: i64, policy: &RetryPolicy, jitter: f64) {
        self.attempts = self.attempts.saturating_add(1);
        self.last_error = Some(error);
        let serving = self.serves_at(now);
        self.state = if serving { CertState::Renewing } else { CertState::Failed };
        let not_after = if serving { self.current.as_ref().map(|c| c.not_after) } else { None };
        self.next_attempt_at = next_retry_at(policy, self.attempts, jitter, now, not_after);
    }

    /// The held certificate's private key, opened with `data_key` (what a public host loads
    /// into its TLS configuration, and keeps only in memory).
    pub fn open_key(&self, data_key: &crate::DataKey) -> Result<Option<String>, crate::SealError> {
        self.current.as_ref().map(|c| crate::open(&c.sealed_key, data_key, &self.names)).transpose()
    }

    /// Marks a held certificate that has expired by `now` as `Failed` (nothing usable is held
    /// any more); returns whether it changed anything.
    pub fn expire(&mut self, now: i64) -> bool {
        let expired = self.current.as_ref().is_some_and(|c| now >= c.not_after);
        if expired && self.state != CertState::Failed {
            self.state = CertState::Failed;
            if self.last_error.is_none() {
                self.last_error = Some("the certificate expired before it could be renewed".to_owned());
            }
            return true;
        }
        false
    }
}

/// When a certificate valid from `not_before` to `not_after`, obtained at `obtained_at`, should
/// be renewed: two thirds of the way from when it was obtained (CAs backdate `not_before`, Let's
/// Encrypt by an hour, which would renew a short-lived certificate too early) to its end. The
/// time obtained is clamped into the validity; an empty or reversed validity is due at once
/// (`not_before`).
pub fn renewal_due(not_before: i64, not_after: i64, obtained_at: i64) -> i64 {
    if not_after <= not_before {
        return not_before;
    }
    let start = obtained_at.clamp(not_before, not_after);
    let life = i128::from(not_after) - i128::from(start);
    (i128::from(start) + life * 2 / 3) as i64
}

/// How failed attempts back off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Seconds before the first retry…
    pub base_secs: u64,
    /// …doubling per failure up to this.
    pub cap_secs: u64,
}

impl Default for RetryPolicy {
    /// 2 minutes doubling up to 6 hours: five failures take about an hour, which stays under
    /// Let's Encrypt's limit of five failed validations per name per hour.
    fn default() -> Self {
        RetryPolicy { base_secs: 120, cap_secs: 6 * 3600 }
    }
}

/// Seconds to wait after failure number `attempt` (1 for the first): `base · 2^(attempt-1)`
/// capped at `cap`, scaled by a factor between 0.5 and 1.0 taken from `jitter` (in `[0, 1)`;
/// anything else counts as 0). At least 1 second.
pub fn retry_delay(policy: &RetryPolicy, attempt: u32, jitter: f64) -> u64 {
    let shift = attempt.saturating_sub(1).min(63);
    let exp = policy.base_secs.saturating_mul(1u64 << shift);
    let capped = exp.min(policy.cap_secs);
    let j = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
    ((capped as f64) * (0.5 + j / 2.0)).max(1.0) as u64
}

/// When to retry after failure number `attempt` at `now`. While a certificate valid until
/// `not_after` still serves, the wait is also at most a quarter of the time it has left, so
/// several attempts come before it expires whatever the policy says.
pub fn next_retry_at(policy: &RetryPolicy, attempt: u32, jitter: f64, now: i64, not_after: Option<i64>) -> i64 {
    let mut delay = retry_delay(policy, attempt, jitter);
    if let Some(end) = not_after {
        let left = u64::try_from(i128::from(end) - i128::from(now)).unwrap_or(0);
        delay = delay.min((left / 4).max(1));
    }
    now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealed() -> SealedKey {
        SealedKey { key_id: "00".into(), nonce: "AA".into(), ciphertext: "AA".into() }
    }

    fn cert(not_before: i64, not_after: i64) -> CurrentCertificate {
        CurrentCertificate { issuer: "CA".into(), not_before, not_after, chain_pem: String::new(), sealed_key: sealed() }
    }

    #[test]
    fn renewal_comes_at_two_thirds_of_the_life_left_when_obtained() {
        // A 90-day certificate backdated by an hour, obtained at its start + 1 h.
        let nb = 1_000_000;
        let obtained = nb + 3600;
        let na = obtained + 90 * 86_400;
        assert_eq!(renewal_due(nb, na, obtained), obtained + 60 * 86_400);
        // Obtained before its validity (clock skew): counted from not_before.
        assert_eq!(renewal_due(100, 400, 0), 300);
        // Reversed or empty: due at once.
        assert_eq!(renewal_due(500, 400, 450), 500);
        assert_eq!(renewal_due(500, 500, 450), 500);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_halving_at_most() {
        let p = RetryPolicy { base_secs: 10, cap_secs: 100 };
        assert_eq!(retry_delay(&p, 1, 0.0), 5);
        assert_eq!(retry_delay(&p, 1, 0.999_999), 9);
        assert_eq!(retry_delay(&p, 2, 0.0), 10);
        assert_eq!(retry_delay(&p, 4, 0.0), 40);
        assert_eq!(retry_delay(&p, 5, 0.0), 50);
        assert_eq!(retry_delay(&p, u32::MAX, 0.0), 50);
        assert_eq!(retry_delay(&p, 0, f64::NAN), 5);
        assert_eq!(retry_delay(&RetryPolicy { base_secs: 0, cap_secs: 0 }, 3, 0.5), 1);
    }

    #[test]
    fn a_failed_renewal_keeps_serving_and_retries_before_expiry() {
        let mut r = CertificateRecord::pending(vec!["a.test".into()], 0);
        assert!(r.is_due(0));
        r.succeeded(cert(0, 300), 0);
        assert_eq!((r.state, r.next_attempt_at), (CertState::Valid, 200));
        assert!(!r.is_due(199) && r.is_due(200));
        r.start_attempt();
        assert_eq!(r.state, CertState::Renewing);
        r.failed("DNS said no".into(), 200, &RetryPolicy::default(), 0.0);
        // 100 s left: at most 25 s, not the policy's 60.
        assert_eq!((r.state, r.attempts, r.next_attempt_at), (CertState::Renewing, 1, 225));
        assert_eq!(r.last_error.as_deref(), Some("DNS said no"));
        assert!(!r.expire(299));
        assert!(r.expire(300));
        assert_eq!(r.state, CertState::Failed);
        r.succeeded(cert(300, 600), 310);
        assert_eq!((r.state, r.attempts, r.last_error.clone(), r.next_attempt_at), (CertState::Valid, 0, None, 503));
    }

    #[test]
    fn a_first_attempt_that_fails_is_failed_and_backs_off_by_the_policy() {
        let mut r = CertificateRecord::pending(vec!["a.test".into()], 0);
        r.start_attempt();
        assert_eq!(r.state, CertState::Pending);
        r.failed("no".into(), 1000, &RetryPolicy { base_secs: 10, cap_secs: 1000 }, 0.0);
        assert_eq!((r.state, r.next_attempt_at), (CertState::Failed, 1005));
        r.failed("no".into(), 1005, &RetryPolicy { base_secs: 10, cap_secs: 1000 }, 0.0);
        assert_eq!((r.attempts, r.next_attempt_at), (2, 1015));
    }

    #[test]
    fn records_round_trip_through_json_with_readable_states() {
        let mut r = CertificateRecord::pending(vec!["*.a.test".into(), "a.test".into()], 5);
        r.succeeded(cert(0, 90), 0);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""state":"valid""#), "{json}");
        assert_eq!(serde_json::from_str::<CertificateRecord>(&json).unwrap(), r);
    }

    proptest! {
        #[test]
        fn renewal_is_inside_the_validity_and_after_it_was_obtained(
            nb in -1_000_000_000i64..4_000_000_000, life in 1i64..400_000_000, obtained_off in -1_000_000i64..500_000_000,
        ) {
            let na = nb + life;
            let obtained = nb + obtained_off;
            let due = renewal_due(nb, na, obtained);
            prop_assert!(due >= nb && due <= na);
            prop_assert!(due >= obtained.min(na));
            // About two thirds of the life left when obtained: at least half of it passes first.
            let start = obtained.clamp(nb, na);
            prop_assert!(due - start >= (na - start) / 2);
        }

        #[test]
        fn backoff_is_bounded_and_never_shrinks_with_more_failures(
            base in 0u64..100_000, extra in 0u64..1_000_000, a in 0u32..100, j in 0.0f64..1.0,
        ) {
            let p = RetryPolicy { base_secs: base, cap_secs: base + extra };
            let d = retry_delay(&p, a, j);
            prop_assert!(d >= 1);
            prop_assert!(d <= p.cap_secs.max(1));
            prop_assert!(retry_delay(&p, a + 1, j) >= d);
        }

        #[test]
        fn retries_come_before_a_serving_certificate_expires(
            now in 0i64..4_000_000_000, left in 2i64..100_000_000, a in 1u32..60, j in 0.0f64..1.0,
        ) {
            let at = next_retry_at(&RetryPolicy::default(), a, j, now, Some(now + left));
            prop_assert!(at > now && at < now + left);
        }
    }
}
