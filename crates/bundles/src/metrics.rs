//! The bundles' Prometheus metrics (`/metrics`, prefix `atoll_bundle_`): requests by bundle,
//! author DID and status, their latency, errors by cause, cold starts, live instances and cron
//! runs. Secrets never reach a label: labels are the bundle's name, its author's DID, a
//! status, a handler name and an outcome.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BundleLabels {
    pub bundle: String,
    pub did: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    bundle: String,
    did: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    bundle: String,
    did: String,
    /// 504 `timeout`, 502 `failed`, 503 `busy`, 4xx `refused`.
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CronLabels {
    bundle: String,
    handler: String,
    outcome: &'static str,
}

/// How many failed requests each bundle remembers, for `inspect` and the dashboard.
pub const RECENT_ERRORS: usize = 5;

/// One failed request, as remembered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RecentError {
    /// Unix seconds.
    pub time: i64,
    pub status: u16,
    pub request_id: String,
    /// `METHOD PATH: why`.
    pub message: String,
}

/// A bundle's numbers, for `inspect` and the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Summary {
    pub requests: u64,
    /// Requests answered 5xx.
    pub errors: u64,
    pub cold_starts: u64,
    pub instances: i64,
    /// The last few failed requests, newest last.
    pub recent_errors: Vec<RecentError>,
}

#[derive(Default)]
struct Book {
    requests: u64,
    errors: u64,
    recent: std::collections::VecDeque<RecentError>,
}

/// The bundles' metrics; cheap to clone (the families are shared).
#[derive(Clone)]
pub struct Metrics {
    /// Per bundle: totals and recent failures, for [`Metrics::summary`].
    books: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Book>>>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<BundleLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
    cold_starts: Family<BundleLabels, Counter>,
    instances: Family<BundleLabels, Gauge>,
    cron: Family<CronLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~30 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            books: Default::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            errors: Family::default(),
            cold_starts: Family::default(),
            instances: Family::default(),
            cron: Family::default(),
        }
    }
}

impl Metrics {
    /// Adds the families to a scrape's registry.
    pub fn register(&self, r: &mut Registry) {
        r.register("bundle_requests", "Requests answered by bundles, by bundle, author and status", self.requests.clone());
        r.register_with_unit("bundle_request_duration", "Time bundles took to answer a request", Unit::Seconds, self.latency.clone());
        r.register("bundle_errors", "Requests a bundle failed, by cause (timeout, failed, busy, refused)", self.errors.clone());
        r.register("bundle_cold_starts", "Instances started: a version loaded, a container launched", self.cold_starts.clone());
        r.register(
            "bundle_instances",
            "Instances running now: containers and processes (a wasm instance lives for one request and is not counted)",
            self.instances.clone(),
        );
        r.register("bundle_cron_runs", "Cron jobs run, by handler and outcome (ok, failed, skipped)", self.cron.clone());
    }

    pub fn request(&self, l: &BundleLabels, status: u16, seconds: f64) {
        {
            let mut books = self.books.lock().expect("not poisoned");
            let b = books.entry(l.bundle.clone()).or_default();
            b.requests += 1;
            b.errors += u64::from(status >= 500);
        }
        self.requests.get_or_create(&RequestLabels { bundle: l.bundle.clone(), did: l.did.clone(), status }).inc();
        self.latency.get_or_create(l).observe(seconds);
        let cause = match status {
            504 => "timeout",
            503 => "busy",
            500..=599 => "failed",
            _ => return,
        };
        self.errors.get_or_create(&ErrorLabels { bundle: l.bundle.clone(), did: l.did.clone(), cause }).inc();
    }

    pub fn cold_start(&self, l: &BundleLabels) {
        self.cold_starts.get_or_create(l).inc();
    }

    /// The live-instance gauge of one bundle.
    pub fn instances(&self, l: &BundleLabels) -> Gauge {
        self.instances.get_or_create(l).clone()
    }

    pub fn cron(&self, bundle: &str, handler: &str, outcome: &'static str) {
        self.cron.get_or_create(&CronLabels { bundle: bundle.to_owned(), handler: handler.to_owned(), outcome }).inc();
    }

    /// Remembers a failed request.
    pub fn failed(&self, bundle: &str, e: RecentError) {
        let mut books = self.books.lock().expect("not poisoned");
        let q = &mut books.entry(bundle.to_owned()).or_default().recent;
        if q.len() == RECENT_ERRORS {
            q.pop_front();
        }
        q.push_back(e);
    }

    /// One bundle's numbers.
    pub fn summary(&self, l: &BundleLabels) -> Summary {
        let books = self.books.lock().expect("not poisoned");
        let book = books.get(&l.bundle);
        Summary {
            requests: book.map_or(0, |b| b.requests),
            errors: book.map_or(0, |b| b.errors),
            cold_starts: self.cold_starts.get(l).map_or(0, |c| c.get()),
            instances: self.instances.get(l).map_or(0, |g| g.get()),
            recent_errors: book.map(|b| b.recent.iter().cloned().collect()).unwrap_or_default(),
        }
    }

    /// Forgets a removed bundle's series.
    pub fn forget(&self, l: &BundleLabels) {
        self.books.lock().expect("not poisoned").remove(&l.bundle);
        self.instances.remove(l);
        self.latency.remove(l);
        self.cold_starts.remove(l);
    }
}
