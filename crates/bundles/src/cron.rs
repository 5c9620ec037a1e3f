//! Cron jobs of a running bundle: each `cron[]` entry's schedule (five fields, or six with
//! seconds first; croner's grammar) fires its handler on the version being served
//! ([`Instance::invoke`]), as a `POST` with `x-atoll-cron` (the schedule) and
//! `x-atoll-scheduled` (the time it was due, RFC 3339) headers. A job still running when it is
//! due again is skipped, not stacked (Kubernetes' `concurrencyPolicy: Forbid`); at most
//! [`MAX_BACKGROUND`] jobs of one bundle run at once. Times are UTC. A new version's schedules
//! take over when it is swapped in.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, watch};

use crate::instance::Instance;
use crate::metrics::Metrics;

/// Jobs of one bundle running at once.
pub const MAX_BACKGROUND: usize = 4;

/// When `schedule` next fires strictly after `after`; `None` for a schedule that never does
/// (or does not parse, which validation refuses before).
pub fn next_fire(schedule: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = atoll_atproto::bundle::cron_parser().parse(schedule).ok()?;
    cron.find_next_occurrence(&after, false).ok()
}

/// Runs `bundle`'s cron jobs until the task is aborted.
pub(crate) async fn run(bundle: String, mut versions: watch::Receiver<Arc<Instance>>, metrics: Metrics, journal: crate::journal::Journal) {
    let slots = Arc::new(Semaphore::new(MAX_BACKGROUND));
    let busy: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    let mut last = Utc::now();
    loop {
        let instance = versions.borrow_and_update().clone();
        let jobs = instance.manifest().cron.clone();
        let next = jobs.iter().filter_map(|j| next_fire(&j.schedule, last).map(|t| (t, j))).min_by_key(|(t, _)| *t);
        let Some((due, _)) = next else {
            // No jobs in this version: wait for another.
            if versions.changed().await.is_err() {
                return;
            }
            continue;
        };
        let wait = (due - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = versions.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        for job in jobs.iter().filter(|j| next_fire(&j.schedule, last).is_some_and(|t| t <= due)) {
            let key = (job.schedule.clone(), job.handler.clone());
            if !busy.lock().expect("not poisoned").insert(key.clone()) {
                tracing::warn!(target: "atoll_bundles::cron", bundle = %bundle, handler = %job.handler, "skipped: the previous run is still going");
                metrics.cron(&bundle, &job.handler, "skipped");
                journal.add(
                    &bundle,
                    crate::journal::Entry::new(
                        "cron",
                        format!("{} ({}): skipped, the previous run is still going", job.handler, job.schedule),
                    ),
                );
                continue;
            }
            let (instance, slots, busy, metrics, bundle, journal) =
                (instance.clone(), slots.clone(), busy.clone(), metrics.clone(), bundle.clone(), journal.clone());
            tokio::spawn(async move {
                let _slot = slots.acquire().await;
                let req = hyper::Request::post("/")
                    .header("x-atoll-cron", &key.0)
                    .header("x-atoll-scheduled", due.to_rfc3339())
                    .body(bytes::Bytes::new())
                    .expect("a valid request");
                let start = std::time::Instant::now();
                let outcome = instance.invoke(&key.1, req).await;
                let ms = start.elapsed().as_millis() as u64;
                let mut entry = crate::journal::Entry::new("cron", format!("{} ({})", key.1, key.0));
                entry.ms = Some(ms);
                match &outcome {
                    Ok(r) => entry.status = Some(r.status().as_u16()),
                    Err(e) => {
                        entry.message = format!("{}: {}", entry.message, e.without_stderr());
                        entry.status = Some(e.status().as_u16());
                    }
                }
                journal.add(&bundle, entry);
                match outcome {
                    Ok(r) if r.status().is_success() => {
                        tracing::info!(target: "atoll_bundles::cron", bundle = %bundle, handler = %key.1, status = r.status().as_u16(), ms, "cron job ran");
                        metrics.cron(&bundle, &key.1, "ok");
                    }
                    Ok(r) => {
                        tracing::warn!(target: "atoll_bundles::cron", bundle = %bundle, handler = %key.1, status = r.status().as_u16(), ms, "cron job failed");
                        metrics.cron(&bundle, &key.1, "failed");
                    }
                    Err(e) => {
                        tracing::warn!(target: "atoll_bundles::cron", bundle = %bundle, handler = %key.1, ms, error = %e, "cron job failed");
                        metrics.cron(&bundle, &key.1, "failed");
                    }
                }
                busy.lock().expect("not poisoned").remove(&key);
            });
        }
        last = due;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn schedules_fire_strictly_after_and_take_seconds_first() {
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        assert_eq!(next_fire("*/5 * * * *", t), Some(Utc.with_ymd_and_hms(2026, 12, 1, 10, 5, 0).unwrap()));
        assert_eq!(next_fire("*/2 * * * * *", t), Some(Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 2).unwrap()));
        assert_eq!(next_fire("@hourly", t), Some(Utc.with_ymd_and_hms(2026, 12, 1, 11, 0, 0).unwrap()));
        assert_eq!(next_fire("not a schedule", t), None);
    }
}
