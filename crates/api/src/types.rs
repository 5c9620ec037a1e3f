//! Wire types of the API that are not image-store types.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Every error response: the top-level message and the chain of causes under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub message: String,
    pub causes: Vec<String>,
}

impl ErrorBody {
    /// Builds the body from an error and its `source()` chain.
    pub fn from_error(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut causes = atoll_util::causes(e);
        if out_of_space(e) {
            causes.push(OUT_OF_SPACE_HINT.into());
        }
        Self { message: e.to_string(), causes }
    }
}

/// Said after an error caused by a full disk.
pub const OUT_OF_SPACE_HINT: &str = "the filesystem of Atoll's data dir is full: free space (atoll image prune, atoll volume prune, \
     remove containers) and try again";

pub use atoll_util::out_of_space;

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for c in &self.causes {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionInfo {
    pub version: String,
    pub api_version: String,
    pub os: String,
    /// The OCI (Go) architecture name: `amd64`, `arm64`.
    pub arch: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Info {
    pub version: String,
    pub data_dir: String,
    pub socket: String,
    pub platform: String,
    pub images: usize,
    pub containers: usize,
    pub containers_running: usize,
    pub runtime: RuntimeInfo,
    /// Registries spoken to over plain HTTP besides loopback.
    pub insecure_registries: Vec<String>,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    pub network: NetworkInfo,
    pub host: HostInfo,
    /// The island this host is in (absent when it is in none).
    pub island: Option<atoll_island::IslandStatus>,
}

/// The host's capacity and what is free.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct HostInfo {
    pub cpus: usize,
    /// 1-minute load average.
    pub load1: f64,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    /// The filesystem of the data dir.
    pub disk_total_bytes: u64,
    pub disk_free_bytes: u64,
    pub kernel: String,
}

impl HostInfo {
    /// Reads /proc and statvfs(`data_dir`).
    pub fn read(data_dir: &std::path::Path) -> Self {
        let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib = |k: &str| {
            mem.lines().find_map(|l| l.strip_prefix(k)?.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap_or(0) * 1024
        };
        let (total, free) = rustix::fs::statvfs(data_dir).map(|s| (s.f_blocks * s.f_frsize, s.f_bavail * s.f_frsize)).unwrap_or((0, 0));
        Self {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            load1: std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0.0),
            memory_total_bytes: kib("MemTotal:"),
            memory_available_bytes: kib("MemAvailable:"),
            disk_total_bytes: total,
            disk_free_bytes: free,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        }
    }
}

/// How containers are networked on this host.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NetworkInfo {
    /// Where new networks' IPv4 subnets come from.
    pub subnet_pool: String,
    /// Where names that are not containers' are resolved.
    pub dns_upstreams: Vec<String>,
    /// Other tables' `input` chains with a drop policy: published ports do not pass them.
    pub firewall_input_drop_chains: Vec<String>,
    /// What keeps container networking from working here, each with what to do about it.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The OCI runtime the daemon picked, and why others were not.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuntimeInfo {
    pub name: String,
    pub path: String,
    pub version: String,
    /// `v1`, `hybrid` or `v2`.
    pub cgroup_mode: String,
    /// Candidates that were not picked, with the reason.
    pub rejected: Vec<String>,
    /// The static init used for `--init`, if installed.
    pub init: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PullRequest {
    /// An image reference: `alpine`, `registry:5000/app:v1`, `name@sha256:…`.
    #[schema(schema_with = atoll_spec::openapi::image)]
    pub reference: String,
    /// `os/arch[/variant]` to pick from a multi-platform index; the host's by default.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")]
    pub platform: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TagRequest {
    pub source: String,
    pub target: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// `HOST[:PORT]` of the registry.
    #[schema(pattern = "^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:[0-9]{1,5})?$")]
    pub registry: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReferenceQuery {
    /// An image reference, ID or ID prefix.
    pub reference: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// An image reference, ID or ID prefix.
    pub reference: String,
    /// Remove even if the image has several tags or containers use it.
    #[serde(default)]
    pub force: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PruneQuery {
    /// Remove every image no container uses, not only untagged ones.
    #[serde(default)]
    pub all: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Repository name for images the archive gives only a tag (or nothing) for.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogoutQuery {
    pub registry: String,
}

/// A login link to the dashboard.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebLogin {
    pub url: String,
}
