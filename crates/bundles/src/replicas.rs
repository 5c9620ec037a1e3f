//! Several instances of one bundle version (`bundle run --min-instances N --max-instances M`,
//! for oci and deno bundles, whose instance is a container or a Deno process): a request goes
//! to the instance with the fewest requests under way; when every instance is full (its
//! `maxConcurrent` under way) and there are fewer than M, another starts beside them (the
//! request waits on the least busy meanwhile, so a burst is never held up by a cold start);
//! instances beyond N idle for the idle timeout are stopped, down to none when N is 0 (the
//! next request then starts one: a cold start). Each instance is a whole [`Instance`], with
//! its own container or process, started by the caller's [`Start`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_atproto::bundle::Manifest;
use atoll_runner::{Effective, RunError};
use bytes::Bytes;
use hyper::{Request, Response};

use crate::instance::Instance;

/// Starts instance number `n` (its container or work directory is named after it).
pub type Start = Arc<dyn Fn(usize) -> std::pin::Pin<Box<dyn Future<Output = Result<Instance, String>> + Send>> + Send + Sync>;

/// The most instances of one bundle a host runs.
pub const MAX_INSTANCES: u32 = 16;

/// Which instance takes the next request (the fewest under way, the oldest of those), given
/// each one's requests under way; and whether to start another: every one is full
/// (`per_instance` under way) and there are fewer than `max`. Pure.
pub fn pick(loads: &[usize], per_instance: usize, max: usize) -> (Option<usize>, bool) {
    let best = loads.iter().enumerate().min_by_key(|(i, l)| (**l, *i)).map(|(i, _)| i);
    let full = best.is_none_or(|i| loads[i] >= per_instance.max(1));
    (best, full && loads.len() < max)
}

struct Member {
    n: usize,
    instance: Instance,
    in_flight: AtomicUsize,
    last_used: Mutex<Instant>,
}

/// The instances of one bundle version.
pub struct Replicas {
    manifest: Manifest,
    limits: Effective,
    min: usize,
    max: usize,
    members: Arc<Mutex<Vec<Arc<Member>>>>,
    start: Start,
    /// An instance is starting beside the others.
    growing: Arc<AtomicBool>,
    /// Set by [`Replicas::stop`]: no request is taken and no instance started after it (a
    /// keep-alive connection still holding this version must not bring it back).
    stopped: Arc<AtomicBool>,
    /// Held while the first instance starts after a scale to zero.
    cold: tokio::sync::Mutex<()>,
    /// Instances being stopped: in tasks of their own, so that a caller cancelled meanwhile
    /// (the idle task of a bundle being removed) leaves no container behind; [`Replicas::stop`]
    /// waits for them.
    stopping: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    next: Arc<AtomicUsize>,
}

/// Counts a request under way on a member until dropped.
struct InFlight(Arc<Member>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        *self.0.last_used.lock().expect("not poisoned") = Instant::now();
    }
}

impl Replicas {
    /// Starts `max(min, 1)` instances, one after the other; the first failure fails it all
    /// (those started are stopped).
    pub async fn start(manifest: Manifest, limits: Effective, min: u32, max: u32, start: Start) -> Result<Replicas, String> {
        let (min, max) = (min as usize, (max as usize).max(min as usize).max(1));
        let r = Replicas {
            manifest,
            limits,
            min,
            max,
            members: Arc::default(),
            start,
            growing: Arc::default(),
            stopped: Arc::default(),
            cold: tokio::sync::Mutex::new(()),
            stopping: Mutex::default(),
            next: Arc::default(),
        };
        for _ in 0..min.max(1) {
            if let Err(e) = r.add().await {
                r.stop().await;
                return Err(e);
            }
        }
        Ok(r)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn limits(&self) -> &Effective {
        &self.limits
    }

    /// Instances running now.
    pub fn len(&self) -> usize {
        self.members.lock().expect("not poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn add(&self) -> Result<Arc<Member>, String> {
        add(&self.start, &self.next, &self.members, &self.stopped).await
    }

    /// The member for the next request, counted as busy; another started beside when all are full.
    async fn choose(&self) -> Result<InFlight, RunError> {
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return Err(RunError::Stopping);
            }
            let chosen = {
                let members = self.members.lock().expect("not poisoned");
                let loads: Vec<usize> = members.iter().map(|m| m.in_flight.load(Ordering::SeqCst)).collect();
                let (best, grow) = pick(&loads, self.limits.concurrent, self.max);
                if grow && !members.is_empty() && !self.growing.swap(true, Ordering::SeqCst) {
                    let (start, next, all, growing, stopped) =
                        (self.start.clone(), self.next.clone(), self.members.clone(), self.growing.clone(), self.stopped.clone());
                    tokio::spawn(async move {
                        if let Err(e) = add(&start, &next, &all, &stopped).await {
                            tracing::warn!(error = %e, "starting another instance of a busy bundle");
                        }
                        growing.store(false, Ordering::SeqCst);
                    });
                }
                best.map(|i| {
                    let m = members[i].clone();
                    m.in_flight.fetch_add(1, Ordering::SeqCst);
                    InFlight(m)
                })
            };
            if let Some(m) = chosen {
                return Ok(m);
            }
            // Scaled to zero: the first request starts one (the others wait for it).
            let _cold = self.cold.lock().await;
            if self.is_empty() {
                self.add().await.map_err(|e| RunError::Internal(format!("starting an instance: {e}")))?;
            }
        }
    }

    /// Answers one request on the least busy instance.
    pub async fn handle(&self, req: Request<Bytes>) -> Result<Response<Bytes>, RunError> {
        let m = self.choose().await?;
        m.0.instance.handle(req).await
    }

    /// Runs `handler` (a cron job) on the least busy instance.
    pub async fn invoke(&self, handler: &str, req: Request<Bytes>) -> Result<Response<Bytes>, RunError> {
        let m = self.choose().await?;
        m.0.instance.invoke(handler, req).await
    }

    /// Stops the instances beyond `min` that have had no request for `idle` (newest first);
    /// returns how many.
    pub async fn shrink(&self, idle: Duration) -> usize {
        let gone: Vec<Arc<Member>> = {
            let mut members = self.members.lock().expect("not poisoned");
            let mut gone = Vec::new();
            while members.len() > self.min {
                let Some(i) = members
                    .iter()
                    .rposition(|m| m.in_flight.load(Ordering::SeqCst) == 0 && m.last_used.lock().expect("not poisoned").elapsed() >= idle)
                else {
                    break;
                };
                gone.push(members.remove(i));
            }
            gone
        };
        let n = gone.len();
        let mut handles = Vec::new();
        for m in gone {
            tracing::info!(bundle = %self.manifest.name, instance = m.n, "stopping an idle instance");
            handles.push(tokio::spawn(async move { m.instance.stop().await }));
        }
        let mut stopping = self.stopping.lock().expect("not poisoned");
        stopping.retain(|h| !h.is_finished());
        stopping.extend(handles);
        n
    }

    /// Stops every instance (requests under way finish first).
    pub async fn stop(&self) {
        let all: Vec<Arc<Member>> = {
            let mut members = self.members.lock().expect("not poisoned");
            self.stopped.store(true, Ordering::SeqCst);
            std::mem::take(&mut *members)
        };
        for m in all {
            m.instance.stop().await;
        }
        let stopping: Vec<_> = std::mem::take(&mut *self.stopping.lock().expect("not poisoned"));
        for h in stopping {
            let _ = h.await;
        }
    }
}

/// Starts another instance; one that comes up after [`Replicas::stop`] is stopped again.
async fn add(start: &Start, next: &AtomicUsize, members: &Mutex<Vec<Arc<Member>>>, stopped: &AtomicBool) -> Result<Arc<Member>, String> {
    let n = next.fetch_add(1, Ordering::SeqCst);
    let instance = start(n).await?;
    let m = Arc::new(Member { n, instance, in_flight: AtomicUsize::new(0), last_used: Mutex::new(Instant::now()) });
    let late = {
        let mut all = members.lock().expect("not poisoned");
        // Checked under the lock `stop` takes the members with: either it sees this one, or
        // this sees it stopped.
        let late = stopped.load(Ordering::SeqCst);
        if !late {
            all.push(m.clone());
        }
        late
    };
    if late {
        m.instance.stop().await;
        return Err("the bundle was stopped meanwhile".into());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_least_busy_takes_a_request_and_another_starts_only_when_all_are_full() {
        assert_eq!(pick(&[], 4, 2), (None, true), "none yet: start one");
        assert_eq!(pick(&[], 4, 0), (None, false));
        assert_eq!(pick(&[2, 1, 1], 4, 4), (Some(1), false));
        assert_eq!(pick(&[4, 4], 4, 3), (Some(0), true), "all full: the oldest takes it while another starts");
        assert_eq!(pick(&[4, 4, 4], 4, 3), (Some(0), false), "at the most already");
        assert_eq!(pick(&[1], 0, 2), (Some(0), true), "a concurrency of 0 counts as 1");
    }

    proptest! {
        #[test]
        fn pick_chooses_a_least_loaded_and_grows_only_when_full_and_below_max(
            loads in proptest::collection::vec(0usize..8, 0..6), per in 1usize..6, max in 0usize..8,
        ) {
            let (best, grow) = pick(&loads, per, max);
            match best {
                Some(i) => prop_assert_eq!(loads[i], *loads.iter().min().unwrap()),
                None => prop_assert!(loads.is_empty()),
            }
            prop_assert_eq!(grow, loads.iter().all(|l| *l >= per) && loads.len() < max);
        }
    }
}
