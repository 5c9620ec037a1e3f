//! The typed project `plan` works from: what `normalise` produced, deserialised.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value as J;

#[derive(Debug, Deserialize)]
pub(super) struct Typed {
    #[serde(default)]
    pub(super) services: BTreeMap<String, Service>,
    #[serde(default)]
    pub(super) networks: BTreeMap<String, Network>,
    #[serde(default)]
    pub(super) volumes: BTreeMap<String, Volume>,
    #[serde(default)]
    pub(super) configs: BTreeMap<String, FileSource>,
    #[serde(default)]
    pub(super) secrets: BTreeMap<String, FileSource>,
}

/// A normalised project.
#[derive(Debug, Clone)]
pub struct Project {
    pub name: String,
    pub dir: PathBuf,
    pub services: BTreeMap<String, Service>,
    pub networks: BTreeMap<String, Network>,
    pub volumes: BTreeMap<String, Volume>,
    pub configs: BTreeMap<String, FileSource>,
    pub secrets: BTreeMap<String, FileSource>,
    /// Every profile the files define.
    pub profiles: BTreeSet<String>,
    /// Services of the files that no active profile enables: not orphans, not run.
    pub disabled: BTreeSet<String>,
    /// What `compose config` prints.
    pub config: J,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Service {
    pub image: Option<String>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub environment: BTreeMap<String, Option<String>>,
    pub ports: Vec<Port>,
    pub expose: Vec<String>,
    pub volumes: Vec<ServiceVolume>,
    pub networks: BTreeMap<String, Option<ServiceNetwork>>,
    pub network_mode: Option<String>,
    pub depends_on: BTreeMap<String, Dependency>,
    pub healthcheck: Option<Healthcheck>,
    pub restart: Option<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, Option<String>>,
    pub read_only: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub init: bool,
    pub stop_signal: Option<String>,
    pub stop_grace_period: Option<String>,
    pub mem_limit: Option<String>,
    pub cpus: Option<String>,
    pub pids_limit: Option<i64>,
    pub deploy: Option<Deploy>,
    pub profiles: Vec<String>,
    pub configs: Vec<FileRef>,
    pub secrets: Vec<FileRef>,
    pub container_name: Option<String>,
    pub tty: bool,
    pub stdin_open: bool,
    pub tmpfs: Vec<String>,
    pub pull_policy: Option<String>,
    pub logging: Option<Logging>,
    pub shm_size: Option<String>,
    pub security_opt: Vec<String>,
    pub sysctls: BTreeMap<String, Option<String>>,
    /// `SERVICE[:ALIAS]`: the alias becomes a name of SERVICE on the networks they share.
    pub links: Vec<String>,
    pub extra_hosts: Vec<String>,
    pub ulimits: BTreeMap<String, atoll_spec::Ulimit>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Port {
    pub target: u16,
    #[serde(default)]
    pub published: Option<String>,
    #[serde(default)]
    pub host_ip: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServiceVolume {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    pub tmpfs: Option<TmpfsOptions>,
    pub volume: Option<VolumeOptions>,
    pub bind: Option<BindOptions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VolumeOptions {
    /// Do not fill an empty volume with the image's content.
    pub nocopy: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BindOptions {
    pub propagation: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TmpfsOptions {
    pub size: Option<J>,
    pub mode: Option<J>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServiceNetwork {
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dependency {
    pub condition: String,
    pub required: bool,
    pub restart: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub start_period: Option<String>,
    pub disable: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Deploy {
    pub resources: Option<Resources>,
    /// `replicated` (the default), `global`, `replicated-job`, `global-job`.
    pub mode: Option<String>,
    pub replicas: Option<J>,
    pub endpoint_mode: Option<String>,
    pub labels: BTreeMap<String, Option<String>>,
    pub placement: Option<Placement>,
    pub restart_policy: Option<RestartPolicy>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Placement {
    pub constraints: Vec<String>,
    pub preferences: Vec<BTreeMap<String, String>>,
    pub max_replicas_per_node: Option<J>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RestartPolicy {
    pub condition: Option<String>,
    pub delay: Option<String>,
    pub max_attempts: Option<J>,
    pub window: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UpdateConfig {
    pub parallelism: Option<J>,
    pub delay: Option<String>,
    pub failure_action: Option<String>,
    pub monitor: Option<String>,
    pub max_failure_ratio: Option<J>,
    pub order: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Resources {
    pub limits: Option<Limits>,
    pub reservations: Option<Limits>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Limits {
    pub cpus: Option<J>,
    pub memory: Option<J>,
    pub pids: Option<J>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FileRef {
    pub source: String,
    pub target: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Logging {
    pub driver: Option<String>,
    pub options: BTreeMap<String, J>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Network {
    pub name: String,
    pub external: bool,
    pub internal: bool,
    pub enable_ipv6: Option<J>,
    pub ipam: Option<Ipam>,
    pub labels: BTreeMap<String, Option<String>>,
    /// Passed to the network as its options (validated there: the gateway modes).
    pub driver_opts: BTreeMap<String, J>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Ipam {
    pub config: Vec<IpamConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct IpamConfig {
    pub subnet: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Volume {
    pub name: String,
    pub external: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FileSource {
    pub name: String,
    pub file: Option<String>,
}
