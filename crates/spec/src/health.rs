//! Health checks: the configuration (`--health-*` flags) and the state machine that turns
//! probe results into `starting` / `healthy` / `unhealthy`, with docker's semantics: failures
//! during the start period do not count until a probe has passed; `retries` consecutive
//! failures make a container unhealthy; one pass makes it healthy.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many recent probe results are kept for `inspect`.
pub const KEPT_RESULTS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthOnFailure {
    #[default]
    None,
    Restart,
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthConfig {
    /// The probe, run inside the container (`["CMD-SHELL", "…"]` runs through `/bin/sh -c`).
    #[schema(schema_with = crate::openapi::health_test)]
    pub test: Vec<String>,
    #[serde(with = "millis")]
    #[schema(value_type = u64)]
    pub interval: Duration,
    #[serde(with = "millis")]
    #[schema(value_type = u64)]
    pub timeout: Duration,
    pub retries: u32,
    #[serde(with = "millis")]
    #[schema(value_type = u64)]
    pub start_period: Duration,
    #[serde(default)]
    pub on_failure: HealthOnFailure,
}

impl HealthConfig {
    /// Docker's defaults: every 30 s, 30 s timeout, 3 retries, no start period.
    pub fn with_command(test: Vec<String>) -> Self {
        Self {
            test,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            retries: 3,
            start_period: Duration::ZERO,
            on_failure: HealthOnFailure::None,
        }
    }

    /// The argv to exec for one probe.
    pub fn argv(&self) -> Vec<String> {
        match self.test.first().map(String::as_str) {
            Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), self.test[1..].join(" ")],
            Some("CMD") => self.test[1..].to_vec(),
            _ => self.test.clone(),
        }
    }
}

mod millis {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = <u64 as serde::Deserialize>::deserialize(d)?;
        Ok(Duration::from_millis(ms))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Starting,
    Healthy,
    Unhealthy,
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        })
    }
}

/// One probe's outcome, as `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProbeResult {
    /// Milliseconds since the container started.
    pub at_ms: u64,
    pub exit_code: i32,
    /// The probe's output, truncated.
    pub output: String,
}

/// The health of one running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthTracker {
    pub status: HealthStatus,
    pub failing_streak: u32,
    #[schema(value_type = Vec<ProbeResult>)]
    pub log: VecDeque<ProbeResult>,
    /// Whether any probe has passed yet (ends the start period's grace).
    passed_once: bool,
}

impl Default for HealthTracker {
    fn default() -> Self {
        Self { status: HealthStatus::Starting, failing_streak: 0, log: VecDeque::new(), passed_once: false }
    }
}

impl HealthTracker {
    /// Records a probe result taken `since_start` after the container started; returns the new
    /// status if it changed.
    pub fn record(&mut self, cfg: &HealthConfig, since_start: Duration, result: ProbeResult) -> Option<HealthStatus> {
        let passed = result.exit_code == 0;
        self.log.push_back(result);
        while self.log.len() > KEPT_RESULTS {
            self.log.pop_front();
        }
        let before = self.status;
        if passed {
            self.passed_once = true;
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else if !self.passed_once && since_start < cfg.start_period {
            // Grace: failures while starting up do not count.
        } else {
            self.failing_streak += 1;
            if self.failing_streak >= cfg.retries.max(1) {
                self.status = HealthStatus::Unhealthy;
            }
        }
        (self.status != before).then_some(self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn probe(code: i32) -> ProbeResult {
        ProbeResult { at_ms: 0, exit_code: code, output: String::new() }
    }

    #[test]
    fn start_period_failures_do_not_count() {
        let mut cfg = HealthConfig::with_command(vec!["CMD".into(), "true".into()]);
        cfg.retries = 2;
        cfg.start_period = Duration::from_secs(10);
        let mut h = HealthTracker::default();
        assert_eq!(h.record(&cfg, Duration::from_secs(1), probe(1)), None);
        assert_eq!(h.record(&cfg, Duration::from_secs(2), probe(1)), None);
        assert_eq!(h.status, HealthStatus::Starting);
        assert_eq!(h.record(&cfg, Duration::from_secs(3), probe(0)), Some(HealthStatus::Healthy));
        assert_eq!(h.record(&cfg, Duration::from_secs(4), probe(1)), None);
        assert_eq!(h.record(&cfg, Duration::from_secs(5), probe(1)), Some(HealthStatus::Unhealthy));
        assert_eq!(h.record(&cfg, Duration::from_secs(6), probe(0)), Some(HealthStatus::Healthy));
    }

    #[test]
    fn argv_forms() {
        let c = HealthConfig::with_command(vec!["CMD-SHELL".into(), "test -f /ready".into()]);
        assert_eq!(c.argv(), vec!["/bin/sh", "-c", "test -f /ready"]);
        let c = HealthConfig::with_command(vec!["CMD".into(), "true".into()]);
        assert_eq!(c.argv(), vec!["true"]);
    }

    proptest! {
        /// Unhealthy exactly when the last `retries` counted probes all failed.
        #[test]
        fn unhealthy_iff_enough_consecutive_failures(results in prop::collection::vec(any::<bool>(), 1..40), retries in 1u32..5) {
            let mut cfg = HealthConfig::with_command(vec!["CMD".into(), "x".into()]);
            cfg.retries = retries;
            let mut h = HealthTracker::default();
            for r in &results {
                h.record(&cfg, Duration::from_secs(100), probe(if *r { 0 } else { 1 }));
            }
            let trailing_failures = results.iter().rev().take_while(|r| !**r).count() as u32;
            let any_pass = results.iter().any(|r| *r);
            let expected = if trailing_failures >= retries {
                HealthStatus::Unhealthy
            } else if any_pass {
                HealthStatus::Healthy
            } else {
                HealthStatus::Starting
            };
            prop_assert_eq!(h.status, expected);
            prop_assert!(h.log.len() <= KEPT_RESULTS);
        }
    }
}
