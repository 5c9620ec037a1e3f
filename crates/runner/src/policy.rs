//! The island's side of a bundle's limits: defaults for what a manifest leaves out, ceilings
//! for what it asks ([`Policy`]), and the limits a bundle then runs under ([`Effective`]).
//! Pure.

use std::time::Duration;

use atoll_atproto::bundle::Manifest;

/// What the island allows a bundle; the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Linear memory of one instance, MiB: the default and the most a manifest may ask.
    pub default_memory_mb: u64,
    pub max_memory_mb: u64,
    /// CPU time of one request, ms.
    pub default_cpu_ms: u64,
    pub max_cpu_ms: u64,
    /// The CPU one deno or oci instance may use at once, thousandths of a CPU (its cgroup's
    /// quota, docker's `--cpus`).
    pub instance_cpus_milli: u64,
    /// Wall time of one request, ms (the 504).
    pub default_wall_ms: u64,
    pub max_wall_ms: u64,
    /// Requests of one bundle running at once; more wait (up to their wall time) for a slot.
    pub default_concurrent: u64,
    pub max_concurrent: u64,
    /// A request body larger than this is refused (413).
    pub max_body_bytes: usize,
    /// Standard output (the response) larger than this fails the request.
    pub max_output_bytes: usize,
    /// Standard error kept per request (the rest is dropped).
    pub max_stderr_bytes: usize,
    /// The largest module accepted.
    pub max_module_bytes: usize,
    /// Memory of all wasm instances at once, MiB: a request waits (up to its wall time, then
    /// 503) until its bundle's memory limit fits, so many requests of large bundles cannot
    /// take the host's memory.
    pub total_memory_mb: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_memory_mb: 64,
            max_memory_mb: 512,
            default_cpu_ms: 1_000,
            max_cpu_ms: 30_000,
            instance_cpus_milli: 1_000,
            default_wall_ms: 10_000,
            max_wall_ms: 60_000,
            default_concurrent: 32,
            max_concurrent: 256,
            max_body_bytes: 16 << 20,
            max_output_bytes: 16 << 20,
            max_stderr_bytes: 64 << 10,
            max_module_bytes: 64 << 20,
            total_memory_mb: 2048,
        }
    }
}

/// The limits one bundle runs under: its manifest's asks, defaulted and capped by the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    pub memory_bytes: usize,
    pub cpu: Duration,
    /// Of a deno or oci instance, thousandths of a CPU.
    pub cpus_milli: u64,
    pub wall: Duration,
    pub concurrent: usize,
    pub max_body_bytes: usize,
    pub max_output_bytes: usize,
    pub max_stderr_bytes: usize,
}

impl Policy {
    /// The limits `manifest` runs under.
    pub fn effective(&self, manifest: &Manifest) -> Effective {
        let l = &manifest.limits;
        let pick = |ask: Option<u64>, default: u64, max: u64| ask.unwrap_or(default).min(max).max(1);
        Effective {
            memory_bytes: usize::try_from(pick(l.memory_mb, self.default_memory_mb, self.max_memory_mb) << 20).unwrap_or(usize::MAX),
            cpu: Duration::from_millis(pick(l.cpu_ms_per_request, self.default_cpu_ms, self.max_cpu_ms)),
            cpus_milli: self.instance_cpus_milli,
            wall: Duration::from_millis(pick(l.wall_timeout_ms, self.default_wall_ms, self.max_wall_ms)),
            concurrent: usize::try_from(pick(l.max_concurrent, self.default_concurrent, self.max_concurrent)).unwrap_or(usize::MAX),
            max_body_bytes: self.max_body_bytes,
            max_output_bytes: self.max_output_bytes,
            max_stderr_bytes: self.max_stderr_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_atproto::bundle::Limits;

    #[test]
    fn asks_are_defaulted_and_capped() {
        let mut m = crate::testing::manifest(&[("GET", "/", "_start")]);
        let p = Policy::default();
        let e = p.effective(&m);
        assert_eq!((e.memory_bytes, e.cpu, e.wall, e.concurrent), (64 << 20, Duration::from_secs(1), Duration::from_secs(10), 32));
        m.limits = Limits { memory_mb: Some(4096), cpu_ms_per_request: Some(5), wall_timeout_ms: Some(999_999), max_concurrent: Some(2) };
        let e = p.effective(&m);
        assert_eq!((e.memory_bytes, e.cpu, e.wall, e.concurrent), (512 << 20, Duration::from_millis(5), Duration::from_secs(60), 2));
    }
}
