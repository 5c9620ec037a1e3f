//! What a container should be: the options of `atoll run`, validated and normalised.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::health::HealthConfig;
pub use crate::mount::{Mount, MountKind, NO_COPY, path_depth};
use crate::restart::RestartPolicy;

/// Docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// Every capability Linux knows (as of 6.x).
pub const ALL_CAPS: &[&str] = &[
    "CAP_AUDIT_CONTROL",
    "CAP_AUDIT_READ",
    "CAP_AUDIT_WRITE",
    "CAP_BLOCK_SUSPEND",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_KILL",
    "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_MKNOD",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_RAW",
    "CAP_PERFMON",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYSLOG",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT",
    "CAP_SYS_MODULE",
    "CAP_SYS_NICE",
    "CAP_SYS_PACCT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_WAKE_ALARM",
];

/// Longest stop timeout accepted (seconds): a day. Longer ones are mistakes, and would make
/// a stop request wait for them.
pub const MAX_STOP_TIMEOUT: u64 = 86_400;

/// Smallest memory limit accepted (docker's too): below it runtimes fail obscurely.
pub const MIN_MEMORY: u64 = 6 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("invalid container name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    Name(String),
    #[error("image must not be empty")]
    NoImage,
    #[error("invalid environment entry {0:?}: use KEY=VALUE (KEY without '=' or NUL)")]
    Env(String),
    #[error("invalid volume {0:?}: use SOURCE:TARGET[:ro|rw] with an absolute TARGET")]
    Volume(String),
    #[error("invalid tmpfs {0:?}: use TARGET[:OPTIONS] with an absolute TARGET")]
    Tmpfs(String),
    #[error("invalid --mount {0:?}: {1}")]
    MountOption(String, String),
    #[error("{0:?} holds a NUL character, which no argument, variable or path can")]
    Nul(String),
    #[error("mount target {0:?} must be an absolute path other than /")]
    MountTarget(String),
    #[error("two mounts at {0:?}")]
    DuplicateMount(String),
    #[error("unknown capability {0:?}: use a name like NET_ADMIN or CAP_NET_ADMIN, or ALL")]
    Capability(String),
    #[error("memory limit {0} bytes is below the minimum of 6 MiB")]
    Memory(u64),
    #[error("invalid user {0:?}: use USER, UID, USER:GROUP or UID:GID")]
    User(String),
    #[error("working directory {0:?} must be an absolute path")]
    Workdir(String),
    #[error("invalid hostname {0:?}")]
    Hostname(String),
    #[error("invalid log option {0:?}: use max-size=SIZE or max-file=N (N >= 1)")]
    LogOpt(String),
    #[error("stop timeout {0} s is longer than a day ({MAX_STOP_TIMEOUT} s)")]
    StopTimeout(u64),
    #[error("unsupported security option {0:?}: use seccomp=unconfined, no-new-privileges[=true|false], apparmor=… or label=…")]
    SecurityOpt(String),
    #[error(
        "sysctl {0:?} is not namespaced: a container may set net.* (not with --network host), kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.*"
    )]
    Sysctl(String),
    #[error("invalid ulimit {0:?}: use NAME=SOFT[:HARD] with a name like nofile, nproc or memlock, -1 for unlimited, SOFT <= HARD")]
    Ulimit(String),
    #[error("invalid extra host {0:?}: use NAME:IP (or NAME:host-gateway)")]
    ExtraHost(String),
    #[error("shm size {0} bytes is below the minimum of 64 KiB")]
    ShmSize(u64),
    #[error("invalid stop signal {0:?}")]
    Signal(String),
    #[error("the health check needs a command")]
    HealthCommand,
    #[error("invalid label {0:?}: use KEY=VALUE")]
    Label(String),
    #[error("{0}")]
    Unit(#[from] crate::units::UnitError),
    #[error("invalid published port {0:?}: use [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp], ports 1-65535, ranges as A-B")]
    Publish(String),
    #[error(
        "invalid published port {spec:?}: the container ports {container} and the host ports {host} differ in number; \
         give host ports as many as container ports, or one container port with a host range to pick a free port from"
    )]
    PublishRanges { spec: String, container: String, host: String },
    #[error("invalid exposed port {0:?}: use PORT[-PORT][/tcp|udp]")]
    Expose(String),
    #[error("invalid network name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    NetworkName(String),
    #[error("invalid network alias {0:?}: use a DNS name (letters, digits, '-', '_', dots between labels)")]
    NetworkAlias(String),
    #[error("invalid subnet {0:?}: give at most one IPv4 CIDR (/8 to /30) and one IPv6 CIDR (/48 to /120)")]
    Subnet(String),
    #[error("invalid network option {option}: {why}")]
    NetworkOption { option: String, why: String },
    #[error("--network {0} cannot be combined with networks, aliases or published ports; use a bridge network")]
    NetworkModeConflict(String),
    #[error("network {0:?} is named twice")]
    DuplicateNetwork(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The networks of `ContainerSpec::networks` (the default network if none is named).
    #[default]
    Bridge,
    /// A private network namespace with only loopback.
    None,
    /// The host's network namespace.
    Host,
}

/// Log rotation: the shim keeps at most `max_files` files of `max_size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogOptions {
    /// Bytes per file.
    #[schema(minimum = 4096)]
    pub max_size: u64,
    #[schema(minimum = 1)]
    pub max_files: u32,
}

impl Default for LogOptions {
    /// 10 MiB × 3 files: bounded by default, unlike docker's json-file.
    fn default() -> Self {
        Self { max_size: 10 << 20, max_files: 3 }
    }
}

impl LogOptions {
    /// Applies one `--log-opt KEY=VALUE`.
    pub fn apply(&mut self, opt: &str) -> Result<(), SpecError> {
        let err = || SpecError::LogOpt(opt.to_owned());
        match opt.split_once('=') {
            Some(("max-size", v)) => {
                let n = crate::units::parse_size(v).map_err(|_| err())?;
                if n < 4096 {
                    return Err(err());
                }
                self.max_size = n;
            }
            Some(("max-file", v)) => {
                let n: u32 = v.parse().map_err(|_| err())?;
                if n == 0 {
                    return Err(err());
                }
                self.max_files = n;
            }
            _ => return Err(err()),
        }
        Ok(())
    }
}

/// Resource limits a container's processes start with (setrlimit).
pub const ULIMITS: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// One `--ulimit`: soft and hard values, -1 for unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

impl Ulimit {
    /// Parses docker's `NAME=SOFT[:HARD]`.
    pub fn parse(s: &str) -> Result<(String, Self), SpecError> {
        let err = || SpecError::Ulimit(s.to_owned());
        let (name, values) = s.split_once('=').ok_or_else(err)?;
        let (soft, hard) = values.split_once(':').unwrap_or((values, values));
        let (soft, hard): (i64, i64) = (soft.trim().parse().map_err(|_| err())?, hard.trim().parse().map_err(|_| err())?);
        let u = Self { soft, hard };
        u.check(name).map_err(|_| err())?;
        Ok((name.to_owned(), u))
    }

    /// The value as setrlimit takes it (-1 is RLIM_INFINITY).
    pub fn value(v: i64) -> u64 {
        u64::try_from(v).unwrap_or(u64::MAX)
    }

    fn check(&self, name: &str) -> Result<(), SpecError> {
        let err = || SpecError::Ulimit(format!("{name}={}:{}", self.soft, self.hard));
        if !ULIMITS.contains(&name) || self.soft < -1 || self.hard < -1 || Self::value(self.soft) > Self::value(self.hard) {
            return Err(err());
        }
        Ok(())
    }
}

/// Splits `--add-host NAME:IP` (or `NAME=IP`); IP may be `host-gateway`.
pub fn parse_extra_host(s: &str) -> Result<(String, Option<std::net::IpAddr>), SpecError> {
    let err = || SpecError::ExtraHost(s.to_owned());
    let (name, ip) = s.split_once('=').or_else(|| s.split_once(':')).ok_or_else(err)?;
    if !crate::network::valid_dns_label(name) {
        return Err(err());
    }
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    match ip {
        "host-gateway" => Ok((name.to_owned(), None)),
        _ => Ok((name.to_owned(), Some(ip.parse().map_err(|_| err())?))),
    }
}

/// `--security-opt`s: docker's defaults unless changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Security {
    /// `seccomp=unconfined`: no seccomp filter.
    #[serde(default)]
    pub seccomp_unconfined: bool,
    /// `no-new-privileges`: setuid binaries and file capabilities cannot raise privileges.
    /// Off by default, as in docker (images run `su`, `sudo` and setuid helpers).
    #[serde(default)]
    pub no_new_privileges: bool,
}

impl Security {
    /// Applies one docker `--security-opt` (`=` or `:` between key and value). AppArmor and
    /// SELinux options are accepted and have no effect: Atoll uses neither.
    pub fn apply(&mut self, opt: &str) -> Result<(), SpecError> {
        let err = || SpecError::SecurityOpt(opt.to_owned());
        let (k, v) = match opt.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        match (k, v) {
            ("seccomp", Some("unconfined")) => self.seccomp_unconfined = true,
            ("no-new-privileges", None | Some("true")) => self.no_new_privileges = true,
            ("no-new-privileges", Some("false")) => self.no_new_privileges = false,
            ("apparmor" | "label", Some(_)) => {}
            _ => return Err(err()),
        }
        Ok(())
    }
}

/// Resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resources {
    /// Bytes, at least 6 MiB.
    #[schema(minimum = 6291456)]
    pub memory: Option<u64>,
    /// Thousandths of a CPU.
    pub cpus_milli: Option<u64>,
    pub pids_limit: Option<i64>,
}

/// A container's desired state: `atoll run`'s options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContainerSpec {
    #[serde(default)]
    #[schema(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]
    pub name: Option<String>,
    #[schema(schema_with = crate::openapi::image)]
    pub image: String,
    /// Replaces the image's Cmd.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::cmd)]
    pub cmd: Option<Vec<String>>,
    /// Replaces the image's Entrypoint (`[""]` clears it).
    #[serde(default)]
    #[schema(schema_with = crate::openapi::entrypoint)]
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE`, added to (and overriding) the image's.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::env_list)]
    pub env: Vec<String>,
    /// An absolute path.
    #[serde(default)]
    #[schema(pattern = "^/[^\\u0000]*$")]
    pub workdir: Option<String>,
    /// `USER`, `UID`, `USER:GROUP` or `UID:GID` (names must exist in the image).
    #[serde(default)]
    #[schema(pattern = "^[^:/\\u0000]+(:[^:/\\u0000]+)?$")]
    pub user: Option<String>,
    #[serde(default)]
    #[schema(pattern = "^[a-zA-Z0-9.-]{1,64}$")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Replaces the image's health check.
    #[serde(default)]
    pub health: Option<HealthConfig>,
    /// Disables the image's health check.
    #[serde(default)]
    pub no_healthcheck: bool,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    #[schema(schema_with = crate::openapi::capabilities)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = crate::openapi::capabilities)]
    pub cap_drop: Vec<String>,
    /// Run a minimal init as PID 1 that reaps zombies and forwards signals.
    #[serde(default)]
    pub init: bool,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub interactive: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    #[schema(
        pattern = "^((SIG)?(HUP|INT|QUIT|ILL|TRAP|ABRT|IOT|BUS|FPE|KILL|USR1|SEGV|USR2|PIPE|ALRM|TERM|STKFLT|CHLD|CLD|CONT|STOP|TSTP|TTIN|TTOU|URG|XCPU|XFSZ|VTALRM|PROF|WINCH|IO|POLL|PWR|SYS|RTMIN|RTMIN\\+([1-9]|1[0-5])|RTMAX|RTMAX-([1-9]|1[0-4]))|0*([1-9]|[1-5][0-9]|6[0-4]))$"
    )]
    pub stop_signal: Option<String>,
    /// Seconds between the stop signal and SIGKILL.
    #[serde(default)]
    #[schema(maximum = 86400)]
    pub stop_timeout: Option<u64>,
    #[serde(default)]
    pub log: LogOptions,
    /// Size of `/dev/shm` in bytes (64 MiB if absent).
    #[serde(default)]
    #[schema(minimum = 65536)]
    pub shm_size: Option<u64>,
    /// `--security-opt`s that change the defaults.
    #[serde(default)]
    pub security: Security,
    /// Namespaced kernel parameters (`--sysctl net.ipv4.ip_forward=1`).
    #[serde(default)]
    #[schema(schema_with = crate::openapi::sysctls)]
    pub sysctls: BTreeMap<String, String>,
    /// `--add-host NAME:IP` lines for `/etc/hosts`; IP may be `host-gateway` (the host's
    /// address on the container's first network).
    #[serde(default)]
    #[schema(schema_with = crate::openapi::extra_hosts)]
    pub extra_hosts: Vec<String>,
    /// `--ulimit NAME=SOFT[:HARD]`, by name (`nofile`…); -1 is unlimited.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::ulimits)]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(default)]
    pub network: NetworkMode,
    /// The networks to join (bridge mode only); the engine fills in the default network.
    #[serde(default)]
    pub networks: Vec<crate::NetworkAttachment>,
    /// `-p`: ports published on the host.
    #[serde(default)]
    pub publish: Vec<crate::PortSpec>,
    /// `-P`: publish every exposed port (the image's and `--expose`) on a free host port.
    #[serde(default)]
    pub publish_all: bool,
    /// `--expose`: more ports the container listens on.
    #[serde(default)]
    pub expose: Vec<crate::ExposedPort>,
    /// Remove the container when it exits (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
}

/// Container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 characters.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b.len() <= 128 && b[0].is_ascii_alphanumeric() && b.iter().all(|&c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

/// Normalises `net_admin` / `CAP_NET_ADMIN` to `CAP_NET_ADMIN`; `ALL` stays `ALL`.
pub fn normalize_cap(c: &str) -> Result<String, SpecError> {
    let up = c.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let full = if up.starts_with("CAP_") { up } else { format!("CAP_{up}") };
    if ALL_CAPS.contains(&full.as_str()) { Ok(full) } else { Err(SpecError::Capability(c.to_owned())) }
}

/// Parses a signal name or number to its number, as docker's `signal.ParseSignal` does on Linux:
/// a name with or without `SIG` in any case (`TERM`, `sigterm`, and the aliases `CLD`, `IOT`,
/// `POLL`), a real-time name (`RTMIN`, `RTMIN+1`…`RTMIN+15`, `RTMAX-14`…`RTMAX-1`, `RTMAX`,
/// signal(7) numbering with glibc's SIGRTMIN of 34, so systemd's `SIGRTMIN+3` is 37), or a
/// number from 1 to 64 (the kernel's `_NSIG`).
pub fn parse_signal(s: &str) -> Result<i32, SpecError> {
    const NAMES: &[(&str, i32)] = &[
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ILL", 4),
        ("TRAP", 5),
        ("ABRT", 6),
        ("IOT", 6),
        ("BUS", 7),
        ("FPE", 8),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("STKFLT", 16),
        ("CHLD", 17),
        ("CLD", 17),
        ("CONT", 18),
        ("STOP", 19),
        ("TSTP", 20),
        ("TTIN", 21),
        ("TTOU", 22),
        ("URG", 23),
        ("XCPU", 24),
        ("XFSZ", 25),
        ("VTALRM", 26),
        ("PROF", 27),
        ("WINCH", 28),
        ("IO", 29),
        ("POLL", 29),
        ("PWR", 30),
        ("SYS", 31),
    ];
    const RTMIN: i32 = 34;
    const RTMAX: i32 = 64;
    let bad = || SpecError::Signal(s.to_owned());
    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        return s.parse::<i32>().ok().filter(|n| (1..=RTMAX).contains(n)).ok_or_else(bad);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    // An offset is one or two digits without a sign or leading zero, as docker's map spells them.
    let offset = |o: &str, max: i32| -> Option<i32> {
        let plain = !o.is_empty() && o.len() <= 2 && !o.starts_with('0') && o.bytes().all(|b| b.is_ascii_digit());
        o.parse::<i32>().ok().filter(|n| plain && (1..=max).contains(n))
    };
    let rt = match name {
        "RTMIN" => Some(RTMIN),
        "RTMAX" => Some(RTMAX),
        _ => match (name.strip_prefix("RTMIN+"), name.strip_prefix("RTMAX-")) {
            (Some(o), _) => offset(o, 15).map(|n| RTMIN + n),
            (_, Some(o)) => offset(o, 14).map(|n| RTMAX - n),
            _ => None,
        },
    };
    rt.or_else(|| NAMES.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)).ok_or_else(bad)
}

/// Parses a docker env file: `KEY=VALUE` lines, `#` comments, blank lines; a bare `KEY` takes
/// its value from `lookup` (the client's environment) and is dropped if unset.
pub fn parse_env_file(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Vec<String>, SpecError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match l.split_once('=') {
            Some((k, _)) if valid_env_key(k) => out.push(l.to_owned()),
            None if valid_env_key(l.trim_end()) => {
                if let Some(v) = lookup(l.trim_end()) {
                    out.push(format!("{}={v}", l.trim_end()));
                }
            }
            _ => return Err(SpecError::Env(line.to_owned())),
        }
    }
    Ok(out)
}

fn valid_env_key(k: &str) -> bool {
    !k.is_empty() && !k.contains(['=', '\0']) && !k.chars().any(char::is_whitespace)
}

impl ContainerSpec {
    /// Checks everything that can be checked without IO.
    fn validate_network(&self) -> Result<(), SpecError> {
        if self.network != NetworkMode::Bridge {
            let bridged = !self.networks.is_empty() || !self.publish.is_empty() || self.publish_all;
            if bridged {
                let mode = if self.network == NetworkMode::Host { "host" } else { "none" };
                return Err(SpecError::NetworkModeConflict(mode.into()));
            }
        }
        let mut seen = BTreeSet::new();
        for a in &self.networks {
            a.validate()?;
            if !seen.insert(a.network.as_str()) {
                return Err(SpecError::DuplicateNetwork(a.network.clone()));
            }
        }
        for p in &self.publish {
            p.validate()?;
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(n) = &self.name
            && !valid_name(n)
        {
            return Err(SpecError::Name(n.clone()));
        }
        if self.image.trim().is_empty() {
            return Err(SpecError::NoImage);
        }
        for e in &self.env {
            match e.split_once('=') {
                Some((k, v)) if valid_env_key(k) && !v.contains('\0') => {}
                _ => return Err(SpecError::Env(e.clone())),
            }
        }
        let mut targets = BTreeSet::new();
        for m in &self.mounts {
            let t = m.target.trim_end_matches('/');
            if !m.target.starts_with('/') || t.is_empty() || m.target.split('/').any(|c| c == "..") {
                return Err(SpecError::MountTarget(m.target.clone()));
            }
            if !targets.insert(t.to_owned()) {
                return Err(SpecError::DuplicateMount(m.target.clone()));
            }
            if m.kind == MountKind::Bind && !m.source.starts_with('/') {
                return Err(SpecError::Volume(format!("{}:{}", m.source, m.target)));
            }
            if m.kind == MountKind::Volume && !m.source.is_empty() && !valid_name(&m.source) {
                return Err(SpecError::Volume(format!("{}:{}", m.source, m.target)));
            }
        }
        for c in self.cap_add.iter().chain(&self.cap_drop) {
            normalize_cap(c)?;
        }
        if let Some(s) = self.shm_size
            && s < 64 << 10
        {
            return Err(SpecError::ShmSize(s));
        }
        for (name, u) in &self.ulimits {
            u.check(name)?;
        }
        for h in &self.extra_hosts {
            let (_, ip) = parse_extra_host(h)?;
            if ip.is_none() && self.network == NetworkMode::None {
                return Err(SpecError::ExtraHost(format!("{h} (a container without a network has no host gateway)")));
            }
        }
        for (k, v) in &self.sysctls {
            let ipc = matches!(k.as_str(), "kernel.shmmax" | "kernel.shmall" | "kernel.shmmni" | "kernel.shm_rmid_forced")
                || matches!(k.as_str(), "kernel.msgmax" | "kernel.msgmnb" | "kernel.msgmni" | "kernel.sem")
                || k.starts_with("fs.mqueue.");
            let net = k.starts_with("net.") && self.network != NetworkMode::Host;
            let well_formed = !k.contains(['/', '\0', ' ']) && !k.split('.').any(str::is_empty) && !v.contains(['\0', '\n']);
            if !(ipc || net) || !well_formed {
                return Err(SpecError::Sysctl(format!("{k}={v}")));
            }
        }
        if let Some(t) = self.stop_timeout
            && t > MAX_STOP_TIMEOUT
        {
            return Err(SpecError::StopTimeout(t));
        }
        if let Some(m) = self.resources.memory
            && m < MIN_MEMORY
        {
            return Err(SpecError::Memory(m));
        }
        if let Some(u) = &self.user {
            let ok = !u.is_empty() && u.split(':').count() <= 2 && u.split(':').all(|p| !p.is_empty() && !p.contains(['/', '\0']));
            if !ok {
                return Err(SpecError::User(u.clone()));
            }
        }
        if let Some(w) = &self.workdir
            && !w.starts_with('/')
        {
            return Err(SpecError::Workdir(w.clone()));
        }
        // An argument or path cannot hold a NUL (execve and the runtime's JSON would cut it):
        // refused here rather than at start.
        let health = self.health.iter().flat_map(|h| &h.test);
        let words = self.cmd.iter().chain(&self.entrypoint).flatten().chain(&self.workdir).chain(health);
        if let Some(bad) = words.into_iter().find(|s| s.contains('\0')) {
            return Err(SpecError::Nul(bad.replace('\0', "\\0")));
        }
        if let Some(h) = &self.hostname {
            let ok = !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(SpecError::Hostname(h.clone()));
            }
        }
        if let Some(s) = &self.stop_signal {
            parse_signal(s)?;
        }
        self.validate_network()?;
        if let Some(h) = &self.health
            && h.argv().is_empty()
        {
            return Err(SpecError::HealthCommand);
        }
        if self.log.max_files == 0 || self.log.max_size < 4096 {
            return Err(SpecError::LogOpt(format!("max-size={},max-file={}", self.log.max_size, self.log.max_files)));
        }
        Ok(())
    }

    /// The capability set after `--cap-add` / `--cap-drop`, applied to docker's defaults.
    pub fn capabilities(&self) -> BTreeSet<String> {
        let mut caps: BTreeSet<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
        let norm = |v: &[String]| v.iter().filter_map(|c| normalize_cap(c).ok()).collect::<Vec<_>>();
        let (add, drop) = (norm(&self.cap_add), norm(&self.cap_drop));
        if drop.iter().any(|c| c == "ALL") {
            caps.clear();
        }
        for c in drop.iter().filter(|c| *c != "ALL") {
            caps.remove(c);
        }
        if add.iter().any(|c| c == "ALL") {
            caps.extend(ALL_CAPS.iter().map(|s| s.to_string()));
        }
        caps.extend(add.into_iter().filter(|c| c != "ALL"));
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec() -> ContainerSpec {
        ContainerSpec { image: "busybox".into(), ..Default::default() }
    }

    #[test]
    fn security_options_docker_spells() {
        let mut s = Security::default();
        for o in ["seccomp=unconfined", "seccomp:unconfined", "apparmor:unconfined", "label=disable", "no-new-privileges:false"] {
            s.apply(o).unwrap();
        }
        assert_eq!(s, Security { seccomp_unconfined: true, no_new_privileges: false });
        s.apply("no-new-privileges").unwrap();
        assert!(s.no_new_privileges);
        assert!(!Security::default().no_new_privileges, "docker's default");
        for bad in ["seccomp=/x.json", "privileged", "no-new-privileges=maybe", ""] {
            assert!(Security::default().apply(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let mut s = spec();
        s.name = Some("-bad".into());
        assert!(matches!(s.validate(), Err(SpecError::Name(_))));
        let mut s = spec();
        s.env = vec!["NOEQUALS".into()];
        assert!(matches!(s.validate(), Err(SpecError::Env(_))));
        let mut s = spec();
        s.cap_add = vec!["NET_FLY".into()];
        assert!(matches!(s.validate(), Err(SpecError::Capability(_))));
        let mut s = spec();
        s.resources.memory = Some(1024);
        assert!(matches!(s.validate(), Err(SpecError::Memory(_))));
        let mut s = spec();
        s.mounts = vec![Mount::parse_tmpfs("/a").unwrap(), Mount::parse_tmpfs("/a/").unwrap()];
        assert!(matches!(s.validate(), Err(SpecError::DuplicateMount(_))));
        assert!(spec().validate().is_ok());
    }

    /// Found by the API fuzzer: a NUL in an argument or the working directory was accepted at
    /// create (or exec) and failed later, while the document allowed it.
    #[test]
    fn nul_in_an_argument_or_path_is_refused_at_create() {
        let nul = || vec!["sh".to_owned(), "a\0b".to_owned()];
        let cases: [fn(&mut ContainerSpec, Vec<String>); 4] = [
            |s, v| s.cmd = Some(v),
            |s, v| s.entrypoint = Some(v),
            |s, v| s.workdir = Some(format!("/{}", v[1])),
            |s, v| s.health = Some(crate::health::HealthConfig::with_command(vec!["CMD".into(), v[1].clone()])),
        ];
        for set in cases {
            let mut s = spec();
            set(&mut s, nul());
            assert!(matches!(s.validate(), Err(SpecError::Nul(ref w)) if w.contains("a\\0b")), "{s:?}");
        }
    }

    #[test]
    fn capabilities_follow_docker() {
        let mut s = spec();
        assert_eq!(s.capabilities().len(), DEFAULT_CAPS.len());
        s.cap_drop = vec!["all".into()];
        s.cap_add = vec!["net_admin".into()];
        assert_eq!(s.capabilities().into_iter().collect::<Vec<_>>(), vec!["CAP_NET_ADMIN"]);
        s.cap_add = vec!["ALL".into()];
        assert_eq!(s.capabilities().len(), ALL_CAPS.len());
    }

    #[test]
    fn signals_and_log_opts() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("kill").unwrap(), 9);
        assert_eq!(parse_signal("10").unwrap(), 10);
        assert!(parse_signal("SIGNOPE").is_err());
    }

    /// Regression: `SIGRTMIN+3` (systemd's stop signal) and the other names docker accepts were
    /// refused, and an image's `StopSignal` of that kind fell back to TERM without a word.
    #[test]
    fn parse_signal_takes_docker_real_time_names_and_aliases() {
        for (s, n) in [
            ("SIGRTMIN+3", 37),
            ("rtmin", 34),
            ("RTMIN+15", 49),
            ("RTMAX-14", 50),
            ("SIGRTMAX", 64),
            ("IOT", 6),
            ("SIGCLD", 17),
            ("poll", 29),
            ("64", 64),
            ("1", 1),
        ] {
            assert_eq!(parse_signal(s).unwrap(), n, "{s}");
        }
        for s in [
            "0",
            "65",
            "-1",
            "+9",
            "RTMIN+0",
            "RTMIN+16",
            "RTMIN+03",
            "RTMAX-15",
            "RTMAX+1",
            "RTMIN-1",
            "SIG",
            "",
            "SIGSIGTERM",
            "99999999999",
        ] {
            assert!(parse_signal(s).is_err(), "{s}");
        }
        let mut l = LogOptions::default();
        l.apply("max-size=1m").unwrap();
        l.apply("max-file=2").unwrap();
        assert_eq!(l, LogOptions { max_size: 1 << 20, max_files: 2 });
        assert!(l.apply("max-file=0").is_err());
        assert!(l.apply("compress=true").is_err());
    }

    #[test]
    fn env_files() {
        let env = parse_env_file("# c\nA=1\n\nB\nC=x=y\n  D=\n", |k| (k == "B").then(|| "from-env".into())).unwrap();
        assert_eq!(env, vec!["A=1", "B=from-env", "C=x=y", "D="]);
        assert!(parse_env_file("=x\n", |_| None).is_err());
    }

    proptest! {
        #[test]
        fn volume_parser_never_panics(s in "\\PC{0,40}") {
            let _ = Mount::parse_volume(&s);
            let _ = Mount::parse_tmpfs(&s);
        }

        /// A spec that survives JSON keeps its meaning.
        #[test]
        fn spec_json_roundtrip(name in "[a-z][a-z0-9_.-]{0,10}", env in prop::collection::vec("[A-Z]{1,5}=[a-z]{0,5}", 0..4)) {
            let s = ContainerSpec { name: Some(name), image: "busybox".into(), env, ..Default::default() };
            s.validate().unwrap();
            let back: ContainerSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            prop_assert_eq!(back, s);
        }
    }
}
