//! Restart policies (`no`, `always`, `on-failure[:N]`, `unless-stopped`) and the backoff
//! between restarts: exponential, capped, jittered, reset once a container has stayed up.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    Always,
    OnFailure {
        /// At most this many restarts (unlimited if absent).
        max_retries: Option<u32>,
    },
    UnlessStopped,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid restart policy {0:?}: use no, always, unless-stopped, on-failure or on-failure:N")]
pub struct RestartPolicyError(pub String);

impl FromStr for RestartPolicy {
    type Err = RestartPolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || RestartPolicyError(s.to_owned());
        match s.split_once(':') {
            None => match s {
                "no" | "" => Ok(Self::No),
                "always" => Ok(Self::Always),
                "unless-stopped" => Ok(Self::UnlessStopped),
                "on-failure" => Ok(Self::OnFailure { max_retries: None }),
                _ => Err(err()),
            },
            Some(("on-failure", n)) => Ok(Self::OnFailure { max_retries: Some(n.parse().map_err(|_| err())?) }),
            Some(_) => Err(err()),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::No => f.write_str("no"),
            Self::Always => f.write_str("always"),
            Self::UnlessStopped => f.write_str("unless-stopped"),
            Self::OnFailure { max_retries: None } => f.write_str("on-failure"),
            Self::OnFailure { max_retries: Some(n) } => write!(f, "on-failure:{n}"),
        }
    }
}

impl RestartPolicy {
    /// Should a container that just exited with `exit_code` be started again?
    /// `restarts` is how many times the policy already restarted it; `stopped_by_user` is true
    /// when `atoll stop`/`kill` ended it.
    pub fn should_restart(&self, exit_code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            Self::No => false,
            Self::Always | Self::UnlessStopped => true,
            Self::OnFailure { max_retries } => exit_code != 0 && max_retries.is_none_or(|m| restarts < m),
        }
    }

    /// Should the container come back when the daemon starts (after a reboot or a stop of the
    /// daemon that took containers down)? `stopped_by_user` as above.
    pub fn restart_on_daemon_start(&self, stopped_by_user: bool) -> bool {
        match self {
            Self::Always => true,
            Self::UnlessStopped => !stopped_by_user,
            _ => false,
        }
    }
}

/// Backoff between restarts: 100 ms doubling to a 1 min cap, ±25 % jitter, and the count
/// resets when the container ran at least `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(100), max: Duration::from_secs(60), reset_after: Duration::from_secs(10) }
    }
}

impl Backoff {
    /// The delay before restart number `consecutive` (0-based) of a container that ran for
    /// `ran`. `jitter` in [0, 1) comes from the caller (so this stays deterministic).
    /// Returns the delay and the new consecutive count.
    pub fn next(&self, consecutive: u32, ran: Duration, jitter: f64) -> (Duration, u32) {
        let n = if ran >= self.reset_after { 0 } else { consecutive };
        let base = self.initial.saturating_mul(1u32 << n.min(20)).min(self.max);
        let factor = 0.75 + 0.5 * jitter.clamp(0.0, 1.0);
        (base.mul_f64(factor).min(self.max), n + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_print() {
        for s in ["no", "always", "unless-stopped", "on-failure", "on-failure:3"] {
            assert_eq!(s.parse::<RestartPolicy>().unwrap().to_string(), s);
        }
        assert!("sometimes".parse::<RestartPolicy>().is_err());
        assert!("on-failure:x".parse::<RestartPolicy>().is_err());
    }

    #[test]
    fn decisions() {
        let of = RestartPolicy::OnFailure { max_retries: Some(2) };
        assert!(of.should_restart(1, 0, false));
        assert!(of.should_restart(1, 1, false));
        assert!(!of.should_restart(1, 2, false));
        assert!(!of.should_restart(0, 0, false));
        assert!(RestartPolicy::Always.should_restart(0, 100, false));
        assert!(!RestartPolicy::Always.should_restart(1, 0, true));
        assert!(!RestartPolicy::No.should_restart(1, 0, false));
        assert!(RestartPolicy::UnlessStopped.restart_on_daemon_start(false));
        assert!(!RestartPolicy::UnlessStopped.restart_on_daemon_start(true));
        assert!(RestartPolicy::Always.restart_on_daemon_start(true));
    }

    proptest! {
        /// Delays never exceed the cap, grow with consecutive failures, and reset after a long run.
        #[test]
        fn backoff_is_capped_and_resets(n in 0u32..50, jitter in 0.0f64..1.0) {
            let b = Backoff::default();
            let (d, next) = b.next(n, Duration::from_millis(10), jitter);
            prop_assert!(d <= b.max);
            prop_assert!(d >= b.initial.mul_f64(0.75));
            prop_assert_eq!(next, n + 1);
            let (d2, next2) = b.next(n, Duration::from_secs(11), jitter);
            prop_assert_eq!(next2, 1);
            prop_assert!(d2 <= b.initial.mul_f64(1.25));
            let (lo, _) = b.next(n, Duration::ZERO, 0.5);
            let (hi, _) = b.next(n + 1, Duration::ZERO, 0.5);
            prop_assert!(hi >= lo);
        }
    }
}
