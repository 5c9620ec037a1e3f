//! OCI runtime bundle generation: `config.json` from the image config, the container spec and
//! what the daemon resolved (identity, paths, limits). Pure: no IO. The result is a typed
//! `oci_spec::runtime::Spec`, and tests snapshot it.
//!
//! Hardening by default: docker's capability set, no-new-privileges, masked and read-only
//! `/proc` and `/sys` paths, the seccomp profile in `data/seccomp.json`, rlimits no higher than
//! the host allows, memory/CPU/pids limits as cgroup resources.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};

use atoll_spec::container::parse_signal;
use atoll_spec::{ContainerSpec, MountKind, NetworkMode};

use crate::seccomp;
use crate::user::Identity;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Paths hidden from containers (docker's list).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths containers may read but not write.
pub const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("no command: the image has no Entrypoint or Cmd, so give one after the image name")]
    NoCommand,
    #[error("the generated config is not a valid OCI runtime spec")]
    Invalid(#[source] serde_json::Error),
}

/// The parts of an image config that shape a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    /// The image's HEALTHCHECK (absent, or `NONE`: none).
    pub healthcheck: Option<atoll_spec::HealthConfig>,
    /// The image's `ExposedPorts` (what `-P` publishes).
    pub exposed: Vec<atoll_spec::ExposedPort>,
    /// The image's `Volumes`: targets that get an anonymous volume unless the container
    /// mounts something there.
    pub volumes: Vec<String>,
}

impl ImageDefaults {
    /// Reads the `config` object of an OCI image config.
    pub fn from_config(config: &Value) -> Self {
        let c = &config["config"];
        let strings =
            |v: &Value| v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default();
        let opt = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        Self {
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            env: strings(&c["Env"]),
            workdir: opt(&c["WorkingDir"]),
            user: opt(&c["User"]),
            stop_signal: opt(&c["StopSignal"]),
            healthcheck: healthcheck(&c["Healthcheck"]),
            exposed: c["ExposedPorts"]
                .as_object()
                .map(|m| m.keys().filter_map(|k| atoll_spec::network::parse_expose(k).ok()).flatten().collect())
                .unwrap_or_default(),
            volumes: c["Volumes"]
                .as_object()
                .map(|m| m.keys().filter(|k| k.starts_with('/') && k.len() > 1).cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// The image config's `Healthcheck` (durations in nanoseconds, zero meaning the default).
fn healthcheck(hc: &Value) -> Option<atoll_spec::HealthConfig> {
    let test: Vec<String> = hc["Test"].as_array()?.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    if test.is_empty() || test[0] == "NONE" {
        return None;
    }
    let mut cfg = atoll_spec::HealthConfig::with_command(test);
    let ns = |k: &str| hc[k].as_u64().filter(|n| *n > 0).map(std::time::Duration::from_nanos);
    cfg.interval = ns("Interval").unwrap_or(cfg.interval);
    cfg.timeout = ns("Timeout").unwrap_or(cfg.timeout);
    cfg.start_period = ns("StartPeriod").unwrap_or(cfg.start_period);
    cfg.retries = hc["Retries"].as_u64().filter(|n| *n > 0).map_or(cfg.retries, |n| n as u32);
    Some(cfg)
}

/// The signal `stop` sends: `--stop-signal`, else the image's, else SIGTERM.
pub fn stop_signal(spec: &ContainerSpec, image: &ImageDefaults) -> i32 {
    spec.stop_signal.as_deref().or(image.stop_signal.as_deref()).and_then(|s| parse_signal(s).ok()).unwrap_or(15)
}

/// The health check that applies: `--health-*`, else the image's, unless `--no-healthcheck`.
pub fn health_check(spec: &ContainerSpec, image: &ImageDefaults) -> Option<atoll_spec::HealthConfig> {
    if spec.no_healthcheck {
        return None;
    }
    spec.health.clone().or_else(|| image.healthcheck.clone())
}

/// The argv: docker's rules for combining Entrypoint and Cmd with their overrides.
pub fn argv(spec: &ContainerSpec, image: &ImageDefaults) -> Result<Vec<String>, BundleError> {
    let entrypoint: Vec<String> = match &spec.entrypoint {
        Some(ep) => ep.iter().filter(|s| !s.is_empty()).cloned().collect(),
        None => image.entrypoint.clone(),
    };
    let cmd = match (&spec.cmd, &spec.entrypoint) {
        (Some(c), _) => c.clone(),
        // Setting --entrypoint drops the image's Cmd, as docker does.
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd.clone(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() { Err(BundleError::NoCommand) } else { Ok(args) }
}

/// The environment: image, then spec (later keys win), plus PATH/HOME/HOSTNAME/TERM defaults.
pub fn environment(spec: &ContainerSpec, image: &ImageDefaults, hostname: &str, home: &str) -> Vec<String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut put = |kv: &str, env: &mut BTreeMap<String, String>| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if env.insert(k.to_owned(), v.to_owned()).is_none() {
            order.push(k.to_owned());
        }
    };
    put(&format!("PATH={DEFAULT_PATH}"), &mut env);
    put(&format!("HOSTNAME={hostname}"), &mut env);
    for kv in image.env.iter().chain(&spec.env) {
        put(kv, &mut env);
    }
    if !env.contains_key("HOME") {
        put(&format!("HOME={home}"), &mut env);
    }
    if spec.tty && !env.contains_key("TERM") {
        put("TERM=xterm", &mut env);
    }
    order.into_iter().map(|k| format!("{k}={}", env[&k])).collect()
}

/// What the daemon resolved for one container.
#[derive(Debug, Clone)]
pub struct BundleInput<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub spec: &'a ContainerSpec,
    pub image: &'a ImageDefaults,
    pub identity: &'a Identity,
    pub rootfs: PathBuf,
    pub hostname: String,
    /// Files bind-mounted read-only over `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`.
    pub etc_files: Vec<(PathBuf, &'static str)>,
    /// Host paths for the spec's volume mounts, by target.
    pub volume_sources: BTreeMap<String, PathBuf>,
    pub cgroups_path: String,
    /// Resource limits by name (`nofile`, `nproc`, and the spec's `--ulimit`s): (soft, hard),
    /// already clamped to the host's hard limits.
    pub rlimits: BTreeMap<String, (u64, u64)>,
    /// A static init to run as PID 1 for `--init` (mounted at /sbin/atoll-init).
    pub init_binary: Option<PathBuf>,
    /// Seccomp architectures for this host.
    pub arch: &'static str,
    /// The network namespace to join (bridge networking); the engine made it.
    pub netns: Option<PathBuf>,
}

/// Where `--init` is mounted inside the container.
pub const INIT_PATH: &str = "/sbin/atoll-init";

/// Options of a tmpfs mount: docker's defaults (`noexec`, `nosuid`, `nodev`) under the
/// user's, where a later flag wins over its opposite (`exec` over `noexec`) and a later
/// `size=`/`mode=` over an earlier one (docker's `MergeTmpfsOptions`).
pub fn tmpfs_options(user: &[String]) -> Vec<String> {
    const PAIRS: &[(&str, &str)] = &[("exec", "noexec"), ("suid", "nosuid"), ("dev", "nodev"), ("rw", "ro"), ("atime", "noatime")];
    let mut out: Vec<String> = Vec::new();
    for o in ["noexec", "nosuid", "nodev"].iter().map(|s| s.to_string()).chain(user.iter().cloned()) {
        let opposite = PAIRS.iter().find_map(|&(a, b)| {
            if o == a {
                Some(b)
            } else if o == b {
                Some(a)
            } else {
                None
            }
        });
        let key = o.split_once('=').map(|(k, _)| format!("{k}="));
        out.retain(|e| Some(e.as_str()) != opposite && *e != o && key.as_deref().is_none_or(|k| !e.starts_with(k)));
        out.push(o);
    }
    out
}

/// Docker's namespaced defaults for a container with a network of its own — any user may
/// bind ports below 1024 and send ICMP echo — under the user's `--sysctl`s.
pub fn sysctls(spec: &ContainerSpec) -> BTreeMap<String, String> {
    let mut out = spec.sysctls.clone();
    if spec.network != NetworkMode::Host {
        out.entry("net.ipv4.ip_unprivileged_port_start".into()).or_insert_with(|| "0".into());
        out.entry("net.ipv4.ping_group_range".into()).or_insert_with(|| "0 2147483647".into());
    }
    out
}

/// The mount list, in the order the runtime makes them: the runtime's own filesystems
/// (`/proc`, `/dev`…) unless the user mounts over them, then the user's mounts, Atoll's
/// `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` and the init binary, sorted parents
/// first (docker sorts by path depth, keeping the given order among equals), so no mount
/// hides another; a user mount at one of Atoll's files replaces it.
fn mounts(input: &BundleInput<'_>) -> Vec<Value> {
    let spec = input.spec;
    let shm_size = format!("size={}k", spec.shm_size.unwrap_or(64 << 20).div_ceil(1024));
    let defaults = [
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", shm_size]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    let user_targets: Vec<&str> = spec.mounts.iter().map(|m| m.target.trim_end_matches('/')).collect();
    let dev_mounted = user_targets.contains(&"/dev");
    let mut out: Vec<Value> = defaults
        .into_iter()
        .filter(|m| {
            let d = m["destination"].as_str().unwrap_or_default();
            let replaced = user_targets.contains(&d) || (dev_mounted && d.starts_with("/dev/"));
            !replaced
        })
        .collect();

    // (depth, mount) for everything else, sorted stably by depth.
    let depth = atoll_spec::container::path_depth;
    let mut rest: Vec<(usize, Value)> = Vec::new();
    for m in &spec.mounts {
        let ro = if m.read_only { "ro" } else { "rw" };
        let mount = match m.kind {
            MountKind::Bind | MountKind::Volume => {
                let source = match m.kind {
                    MountKind::Bind => PathBuf::from(&m.source),
                    _ => input.volume_sources.get(&m.target).cloned().unwrap_or_else(|| PathBuf::from(&m.source)),
                };
                let propagation = |o: &String| o.contains("private") || o.contains("slave") || o.contains("shared");
                let mut opts = vec!["rbind".to_owned(), ro.to_owned()];
                opts.extend(m.options.iter().filter(|o| propagation(o)).cloned());
                if !m.options.iter().any(propagation) {
                    opts.push("rprivate".into());
                }
                json!({"destination": m.target, "type": "bind", "source": source, "options": opts})
            }
            MountKind::Tmpfs => json!({"destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": tmpfs_options(&m.options)}),
        };
        rest.push((m.depth(), mount));
    }
    // Atoll's files are the container's own (as docker's are): writable unless the root is.
    let own = if spec.read_only { "ro" } else { "rw" };
    for (src, dst) in &input.etc_files {
        if !user_targets.contains(dst) {
            rest.push((depth(dst), json!({"destination": dst, "type": "bind", "source": src, "options": ["rbind", "rprivate", own]})));
        }
    }
    if let (true, Some(init)) = (spec.init, &input.init_binary) {
        rest.push((
            depth(INIT_PATH),
            json!({"destination": INIT_PATH, "type": "bind", "source": init, "options": ["rbind", "rprivate", "ro"]}),
        ));
    }
    rest.sort_by_key(|(d, _)| *d);
    out.extend(rest.into_iter().map(|(_, m)| m));
    out
}

/// Builds the runtime config.
pub fn config(input: &BundleInput<'_>) -> Result<oci_spec::runtime::Spec, BundleError> {
    let spec = input.spec;
    let mut args = argv(spec, input.image)?;
    if spec.init && input.init_binary.is_some() {
        args.splice(0..0, [INIT_PATH.to_owned(), "--".to_owned()]);
    }
    let caps: Vec<String> = spec.capabilities().into_iter().collect();
    let env = environment(spec, input.image, &input.hostname, &input.identity.home);
    let cwd = spec.workdir.clone().or_else(|| input.image.workdir.clone()).unwrap_or_else(|| "/".into());

    let mounts = mounts(input);

    let mut namespaces = vec![json!({"type": "pid"}), json!({"type": "ipc"}), json!({"type": "uts"}), json!({"type": "mount"})];
    match (&spec.network, &input.netns) {
        (NetworkMode::Host, _) => {}
        (_, Some(path)) => namespaces.push(json!({"type": "network", "path": path})),
        (_, None) => namespaces.push(json!({"type": "network"})),
    }

    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(m) = spec.resources.memory {
        // Swap equal to the limit: the limit is a real ceiling, as tests and users expect.
        resources["memory"] = json!({"limit": m, "swap": m});
    }
    if let Some(c) = spec.resources.cpus_milli {
        resources["cpu"] = json!({"quota": c * 100, "period": 100_000});
    }
    if let Some(p) = spec.resources.pids_limit {
        resources["pids"] = json!({"limit": p});
    }

    let stop_signal = stop_signal(spec, input.image);
    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": spec.tty,
            "user": {"uid": input.identity.uid, "gid": input.identity.gid, "additionalGids": input.identity.additional_gids},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []},
            "rlimits": input.rlimits.iter().map(|(name, (soft, hard))| json!({"type": format!("RLIMIT_{}", name.to_ascii_uppercase()), "soft": soft, "hard": hard})).collect::<Vec<_>>(),
            "noNewPrivileges": spec.security.no_new_privileges,
            "oomScoreAdj": 0,
        },
        "root": {"path": input.rootfs, "readonly": spec.read_only},
        "hostname": input.hostname,
        "mounts": mounts,
        "annotations": {
            "io.atoll.container.id": input.id,
            "io.atoll.container.name": input.name,
            "io.atoll.stop-signal": stop_signal.to_string(),
        },
        "linux": {
            "namespaces": namespaces,
            "resources": resources,
            "cgroupsPath": input.cgroups_path,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp::profile(&spec.capabilities(), input.arch),
            "sysctl": sysctls(spec),
        },
    });
    if spec.security.seccomp_unconfined
        && let Some(linux) = config.get_mut("linux").and_then(|l| l.as_object_mut())
    {
        linux.remove("seccomp");
    }
    serde_json::from_value(config).map_err(BundleError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageDefaults {
        ImageDefaults { entrypoint: vec![], cmd: vec!["/bin/sh".into()], env: vec!["PATH=/bin".into(), "A=1".into()], ..Default::default() }
    }

    #[test]
    fn argv_follows_docker() {
        let mut s = ContainerSpec { image: "x".into(), ..Default::default() };
        let mut img = image();
        assert_eq!(argv(&s, &img).unwrap(), vec!["/bin/sh"]);
        img.entrypoint = vec!["/entry".into()];
        assert_eq!(argv(&s, &img).unwrap(), vec!["/entry", "/bin/sh"]);
        s.cmd = Some(vec!["run".into()]);
        assert_eq!(argv(&s, &img).unwrap(), vec!["/entry", "run"]);
        s.entrypoint = Some(vec!["".into()]);
        assert_eq!(argv(&s, &img).unwrap(), vec!["run"]);
        s.cmd = None;
        assert!(matches!(argv(&s, &img), Err(BundleError::NoCommand)));
    }

    #[test]
    fn env_merges_with_overrides_and_defaults() {
        let s = ContainerSpec { image: "x".into(), env: vec!["A=2".into(), "B=3".into()], tty: true, ..Default::default() };
        let env = environment(&s, &image(), "web", "/root");
        assert_eq!(env, vec!["PATH=/bin", "HOSTNAME=web", "A=2", "B=3", "HOME=/root", "TERM=xterm"]);
    }

    #[test]
    fn tmpfs_options_follow_docker() {
        let o = |v: &[&str]| tmpfs_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(o(&[]), ["noexec", "nosuid", "nodev"]);
        assert_eq!(o(&["exec", "size=1m"]), ["nosuid", "nodev", "exec", "size=1m"]);
        assert_eq!(o(&["size=1m", "mode=700", "size=2m", "noexec"]), ["nosuid", "nodev", "mode=700", "size=2m", "noexec"]);
    }

    #[test]
    fn sysctls_default_as_docker_for_own_networks() {
        let mut s = ContainerSpec { image: "x".into(), ..Default::default() };
        s.sysctls.insert("net.ipv4.ip_unprivileged_port_start".into(), "80".into());
        let got = sysctls(&s);
        assert_eq!(got["net.ipv4.ip_unprivileged_port_start"], "80");
        assert_eq!(got["net.ipv4.ping_group_range"], "0 2147483647");
        s.network = NetworkMode::Host;
        s.sysctls.clear();
        assert!(sysctls(&s).is_empty());
    }

    static ROOT: std::sync::LazyLock<Identity> =
        std::sync::LazyLock::new(|| Identity { uid: 0, gid: 0, additional_gids: vec![], home: "/root".into() });

    /// The input of container `abc` in `/var/lib/atoll` for `spec`.
    fn input<'a>(spec: &'a ContainerSpec, img: &'a ImageDefaults, etc: &[&'static str]) -> BundleInput<'a> {
        BundleInput {
            id: "abc",
            name: "web",
            spec,
            image: img,
            identity: &ROOT,
            rootfs: "/var/lib/atoll/containers/abc/rootfs".into(),
            hostname: "abc".into(),
            etc_files: etc.iter().map(|d| (PathBuf::from(format!("/var/lib/atoll/containers/abc{}", &d[4..])), *d)).collect(),
            volume_sources: BTreeMap::new(),
            cgroups_path: "/atoll/abc".into(),
            rlimits: BTreeMap::new(),
            init_binary: None,
            arch: "x86_64",
            netns: Some("/var/lib/atoll/netns/abc".into()),
        }
    }

    fn destinations(user: &[&str], etc: &[&'static str]) -> Vec<String> {
        let spec = ContainerSpec {
            image: "x".into(),
            mounts: user.iter().map(|m| atoll_spec::Mount::parse_volume(m).unwrap()).collect(),
            ..Default::default()
        };
        let img = image();
        let input = input(&spec, &img, etc);
        mounts(&input).iter().map(|m| m["destination"].as_str().unwrap().to_owned()).collect()
    }

    /// `-v child:/data/sub -v parent:/data` mounted /data/sub first, then hid it under /data.
    #[test]
    fn mounts_are_made_parents_first_and_atolls_files_stay_visible() {
        let d = destinations(&["child:/data/sub", "parent:/data", "etc:/etc"], &["/etc/hosts", "/etc/hostname"]);
        let pos = |t: &str| d.iter().position(|x| x == t).unwrap();
        assert!(pos("/data") < pos("/data/sub"));
        assert!(pos("/etc") < pos("/etc/hosts") && pos("/etc") < pos("/etc/hostname"));
        // A user's own file at one of Atoll's paths replaces Atoll's.
        let d = destinations(&["/srv/hosts:/etc/hosts"], &["/etc/hosts"]);
        assert_eq!(d.iter().filter(|x| *x == "/etc/hosts").count(), 1);
        // Mounting over /dev replaces the runtime's /dev and everything under it.
        let d = destinations(&["/srv/dev:/dev"], &[]);
        assert!(!d.iter().any(|x| x.starts_with("/dev/")), "{d:?}");
        assert_eq!(d.iter().filter(|x| *x == "/dev").count(), 1);
    }

    /// Keys sorted, and capability sets sorted: oci-spec keeps annotations in a HashMap and
    /// capabilities in HashSets, whose order changes from run to run.
    fn sorted(v: Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut entries: Vec<(String, Value)> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                let sets = ["bounding", "effective", "permitted", "inheritable", "ambient"];
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| match v {
                            Value::Array(mut a) if sets.contains(&k.as_str()) => {
                                a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
                                (k, Value::Array(a))
                            }
                            v => (k, sorted(v)),
                        })
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
            other => other,
        }
    }

    #[test]
    fn config_snapshot() {
        let spec = ContainerSpec {
            image: "x".into(),
            env: vec!["K=V".into()],
            mounts: vec![
                atoll_spec::Mount::parse_volume("/srv:/data:ro").unwrap(),
                atoll_spec::Mount::parse_tmpfs("/run:size=1m").unwrap(),
            ],
            resources: atoll_spec::container::Resources { memory: Some(64 << 20), cpus_milli: Some(500), pids_limit: Some(50) },
            cap_drop: vec!["NET_RAW".into()],
            ..Default::default()
        };
        let img = image();
        let mut input = input(&spec, &img, &["/etc/hosts"]);
        input.rlimits = [("nofile".to_owned(), (1024, 4096)), ("nproc".to_owned(), (4096, 4096))].into();
        let cfg = config(&input).unwrap();
        let mut v = sorted(serde_json::to_value(&cfg).unwrap());
        // The seccomp profile has its own test; keep this snapshot about the rest.
        v["linux"]["seccomp"] = json!("<profile>");
        expect_test::expect_file!["../tests/snapshots/config.json"].assert_eq(&(serde_json::to_string_pretty(&v).unwrap() + "\n"));
    }
}
