//! From a normalised [`Project`] to what the engine runs: one [`ContainerSpec`] per service
//! (labelled with the project, the service and a hash of the spec), the networks and volumes
//! to create, the order `depends_on` imposes, and the reconciliation of that with what
//! already runs: unchanged containers are kept, changed ones recreated, missing ones
//! created, the rest reported as orphans.

use std::collections::{BTreeMap, BTreeSet};

use atoll_spec::{ContainerSpec, HealthConfig, Mount, MountKind, NetworkAttachment, NetworkMode, NetworkSpec, RestartPolicy};
use sha2::{Digest, Sha256};

use crate::model::{Project, Service, text};

pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
pub const LABEL_NUMBER: &str = "com.docker.compose.container-number";
pub const LABEL_ONEOFF: &str = "com.docker.compose.oneoff";
pub const LABEL_HASH: &str = "com.docker.compose.config-hash";
pub const LABEL_NETWORK: &str = "com.docker.compose.network";
pub const LABEL_VOLUME: &str = "com.docker.compose.volume";
pub const LABEL_WORKDIR: &str = "com.docker.compose.project.working_dir";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("service {service:?}: {message}")]
    Service { service: String, message: String },
    #[error("depends_on forms a cycle: {0}")]
    Cycle(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Started,
    Healthy,
    CompletedSuccessfully,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub service: String,
    pub condition: Condition,
    pub required: bool,
}

#[derive(Debug, Clone)]
pub struct DesiredService {
    pub name: String,
    pub spec: ContainerSpec,
    /// Hash of the spec: a container whose label differs is recreated.
    pub hash: String,
    pub depends_on: Vec<Dependency>,
    /// `always`, `missing` (default), `never`…
    pub pull_policy: String,
    /// Host directories of bind mounts to create if missing (`create_host_path`).
    pub bind_dirs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct DesiredVolume {
    pub key: String,
    pub name: String,
    pub external: bool,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct DesiredNetwork {
    pub key: String,
    pub spec: NetworkSpec,
    pub external: bool,
}

#[derive(Debug, Clone)]
pub struct Desired {
    /// In dependency order: every service after those it depends on.
    pub services: Vec<DesiredService>,
    pub networks: Vec<DesiredNetwork>,
    pub volumes: Vec<DesiredVolume>,
    /// Services of the files that profiles disable.
    pub disabled: BTreeSet<String>,
}

fn bad(service: &str, message: impl Into<String>) -> PlanError {
    PlanError::Service { service: service.to_owned(), message: message.into() }
}

fn duration_secs(service: &str, what: &str, s: &str) -> Result<std::time::Duration, PlanError> {
    atoll_spec::units::parse_duration(s).map_err(|e| bad(service, format!("{what}: {e}")))
}

/// The container name of a service: `container_name`, or `<project>-<service>-1`.
pub fn container_name(project: &str, service: &str, svc: &Service) -> String {
    svc.container_name.clone().unwrap_or_else(|| format!("{project}-{service}-1"))
}

fn service_spec(p: &Project, name: &str, svc: &Service) -> Result<(ContainerSpec, Vec<String>), PlanError> {
    let image = svc.image.clone().ok_or_else(|| bad(name, "has no image: build it elsewhere, push it to a registry and set `image:`"))?;
    let mut spec = ContainerSpec {
        name: Some(container_name(&p.name, name, svc)),
        image,
        cmd: svc.command.clone(),
        entrypoint: svc.entrypoint.clone(),
        env: svc.environment.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}"))).collect(),
        workdir: svc.working_dir.clone(),
        user: svc.user.clone(),
        hostname: svc.hostname.clone(),
        read_only: svc.read_only,
        cap_add: svc.cap_add.clone(),
        cap_drop: svc.cap_drop.clone(),
        init: svc.init,
        tty: svc.tty,
        interactive: svc.stdin_open,
        stop_signal: svc.stop_signal.clone(),
        ..Default::default()
    };
    if let Some(r) = &svc.restart {
        spec.restart = r.parse::<RestartPolicy>().map_err(|e| bad(name, e.to_string()))?;
    }
    if let Some(g) = &svc.stop_grace_period {
        spec.stop_timeout = Some(duration_secs(name, "stop_grace_period", g)?.as_secs());
    }
    // Resources: deploy.resources.limits wins over the older keys.
    let limits = svc.deploy.as_ref().and_then(|d| d.resources.as_ref()).and_then(|r| r.limits.as_ref());
    let memory = limits.and_then(|l| l.memory.as_ref()).and_then(text).or_else(|| svc.mem_limit.clone());
    if let Some(m) = memory {
        spec.resources.memory = Some(atoll_spec::units::parse_size(&m).map_err(|e| bad(name, e.to_string()))?);
    }
    let cpus = limits.and_then(|l| l.cpus.as_ref()).and_then(text).or_else(|| svc.cpus.clone());
    if let Some(c) = cpus.filter(|c| c != "0") {
        spec.resources.cpus_milli = Some(atoll_spec::units::parse_cpus(&c).map_err(|e| bad(name, e.to_string()))?);
    }
    spec.resources.pids_limit = limits.and_then(|l| l.pids.as_ref()).and_then(text).and_then(|p| p.parse().ok()).or(svc.pids_limit);
    if let Some(s) = &svc.shm_size {
        spec.shm_size = Some(atoll_spec::units::parse_size(s).map_err(|e| bad(name, e.to_string()))?);
    }
    spec.extra_hosts = svc.extra_hosts.clone();
    spec.ulimits = svc.ulimits.clone();
    spec.sysctls = svc.sysctls.iter().map(|(k, v)| (k.clone(), v.clone().unwrap_or_default())).collect();
    for o in &svc.security_opt {
        spec.security.apply(o).map_err(|e| bad(name, e.to_string()))?;
    }
    if let Some(l) = &svc.logging {
        for (k, v) in &l.options {
            if let Some(v) = text(v)
                && matches!(k.as_str(), "max-size" | "max-file")
            {
                spec.log.apply(&format!("{k}={v}")).map_err(|e| bad(name, e.to_string()))?;
            }
        }
    }
    if let Some(h) = &svc.healthcheck {
        if h.disable {
            spec.no_healthcheck = true;
        } else if !h.test.is_empty() {
            let mut hc = HealthConfig::with_command(h.test.clone());
            if let Some(i) = &h.interval {
                hc.interval = duration_secs(name, "healthcheck.interval", i)?;
            }
            if let Some(t) = &h.timeout {
                hc.timeout = duration_secs(name, "healthcheck.timeout", t)?;
            }
            if let Some(s) = &h.start_period {
                hc.start_period = duration_secs(name, "healthcheck.start_period", s)?;
            }
            if let Some(r) = h.retries {
                hc.retries = r;
            }
            spec.health = Some(hc);
        }
    }
    // Mounts.
    let mut bind_dirs = Vec::new();
    for v in &svc.volumes {
        let m = match v.kind.as_str() {
            "bind" => {
                let src = v.source.clone().ok_or_else(|| bad(name, format!("the bind mount at {} needs a source", v.target)))?;
                bind_dirs.push(src.clone());
                let options = v.bind.as_ref().and_then(|b| b.propagation.clone()).into_iter().collect();
                Mount { kind: MountKind::Bind, source: src, target: v.target.clone(), read_only: v.read_only, options }
            }
            "volume" => {
                let source = match &v.source {
                    Some(key) => p.volumes.get(key).map(|d| d.name.clone()).unwrap_or_else(|| key.clone()),
                    // Anonymous: a stable name, so a recreated container finds its data again.
                    None => format!("{}_{name}_{}", p.name, &hex::encode(Sha256::digest(v.target.as_bytes()))[..12]),
                };
                let nocopy = v.volume.as_ref().is_some_and(|o| o.nocopy);
                let options = if nocopy { vec![atoll_spec::container::NO_COPY.to_owned()] } else { vec![] };
                Mount { kind: MountKind::Volume, source, target: v.target.clone(), read_only: v.read_only, options }
            }
            "tmpfs" => {
                let mut options = Vec::new();
                if let Some(t) = &v.tmpfs {
                    if let Some(s) = t.size.as_ref().and_then(text) {
                        options.push(format!("size={s}"));
                    }
                    if let Some(m) = t.mode.as_ref().and_then(text) {
                        options.push(format!("mode={m}"));
                    }
                }
                Mount { kind: MountKind::Tmpfs, source: String::new(), target: v.target.clone(), read_only: v.read_only, options }
            }
            other => return Err(bad(name, format!("volume type {other:?} is not supported; use bind, volume or tmpfs"))),
        };
        spec.mounts.push(m);
    }
    for t in &svc.tmpfs {
        spec.mounts.push(Mount::parse_tmpfs(t).map_err(|e| bad(name, e.to_string()))?);
    }
    for (kind, refs, files, default_dir) in
        [("config", &svc.configs, &p.configs, "/"), ("secret", &svc.secrets, &p.secrets, "/run/secrets/")]
    {
        for r in refs {
            let file = files
                .get(&r.source)
                .and_then(|f| f.file.clone())
                .ok_or_else(|| bad(name, format!("{kind} {:?} has no file: only file-based {kind}s are supported", r.source)))?;
            let target = match &r.target {
                Some(t) if t.starts_with('/') => t.clone(),
                Some(t) => format!("{default_dir}{t}"),
                None => format!("{default_dir}{}", r.source),
            };
            spec.mounts.push(Mount { kind: MountKind::Bind, source: file, target, read_only: true, options: vec![] });
        }
    }
    // Networks.
    match svc.network_mode.as_deref() {
        Some("host") => spec.network = NetworkMode::Host,
        Some("none") => spec.network = NetworkMode::None,
        _ => {
            // Legacy links name this service from another one: `web: {links: [db:database]}`.
            let linked: Vec<&str> = p
                .services
                .values()
                .flat_map(|o| o.links.iter())
                .filter_map(|l| l.split_once(':').filter(|(s, _)| *s == name).map(|(_, alias)| alias))
                .collect();
            for (key, opts) in &svc.networks {
                let net = p.networks.get(key).map(|n| n.name.clone()).unwrap_or_else(|| key.clone());
                let mut att = NetworkAttachment::new(&net);
                att.aliases.push(name.to_owned());
                att.aliases.extend(linked.iter().map(|a| (*a).to_owned()));
                if let Some(o) = opts {
                    att.aliases.extend(o.aliases.iter().filter(|a| *a != name).cloned());
                    att.ipv4 = o.ipv4_address.as_deref().map(str::parse).transpose().map_err(|_| bad(name, "invalid ipv4_address"))?;
                    att.ipv6 = o.ipv6_address.as_deref().map(str::parse).transpose().map_err(|_| bad(name, "invalid ipv6_address"))?;
                }
                spec.networks.push(att);
            }
            for port in &svc.ports {
                let mut text = String::new();
                match port.host_ip.as_deref() {
                    Some(ip) if ip.contains(':') => text.push_str(&format!("[{ip}]:")),
                    Some(ip) => text.push_str(&format!("{ip}:")),
                    None => {}
                }
                if let Some(p) = &port.published {
                    text.push_str(&format!("{p}:"));
                } else if port.host_ip.is_some() {
                    text.push(':');
                }
                text.push_str(&format!("{}/{}", port.target, port.protocol.as_deref().unwrap_or("tcp")));
                spec.publish.extend(atoll_spec::network::parse_publish(&text).map_err(|e| bad(name, e.to_string()))?);
            }
        }
    }
    for e in &svc.expose {
        spec.expose.extend(atoll_spec::network::parse_expose(e).map_err(|e| bad(name, e.to_string()))?);
    }
    // Labels.
    spec.labels = svc.labels.iter().map(|(k, v)| (k.clone(), v.clone().unwrap_or_default())).collect();
    spec.labels.insert(LABEL_PROJECT.into(), p.name.clone());
    spec.labels.insert(LABEL_SERVICE.into(), name.to_owned());
    spec.labels.insert(LABEL_NUMBER.into(), "1".into());
    spec.labels.insert(LABEL_ONEOFF.into(), "False".into());
    spec.labels.insert(LABEL_WORKDIR.into(), p.dir.to_string_lossy().into_owned());
    spec.validate().map_err(|e| bad(name, e.to_string()))?;
    Ok((spec, bind_dirs))
}

/// The hash that decides whether a container is up to date.
pub fn spec_hash(spec: &ContainerSpec) -> String {
    let mut s = spec.clone();
    s.labels.remove(LABEL_HASH);
    hex::encode(Sha256::digest(serde_json::to_vec(&s).expect("specs serialise")))
}

/// Orders services so each comes after its dependencies (ties by name).
pub fn order(deps: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>, PlanError> {
    let mut done: Vec<String> = Vec::new();
    let mut visiting: Vec<String> = Vec::new();
    fn visit(n: &str, deps: &BTreeMap<String, Vec<String>>, done: &mut Vec<String>, visiting: &mut Vec<String>) -> Result<(), PlanError> {
        if done.iter().any(|d| d == n) {
            return Ok(());
        }
        if let Some(i) = visiting.iter().position(|v| v == n) {
            let mut cycle = visiting[i..].to_vec();
            cycle.push(n.to_owned());
            return Err(PlanError::Cycle(cycle.join(" -> ")));
        }
        visiting.push(n.to_owned());
        for d in deps.get(n).into_iter().flatten() {
            if deps.contains_key(d) {
                visit(d, deps, done, visiting)?;
            }
        }
        visiting.pop();
        done.push(n.to_owned());
        Ok(())
    }
    for n in deps.keys() {
        visit(n, deps, &mut done, &mut visiting)?;
    }
    Ok(done)
}

/// Everything `up` should make.
pub fn desired(p: &Project) -> Result<Desired, PlanError> {
    let deps: BTreeMap<String, Vec<String>> = p.services.iter().map(|(n, s)| (n.clone(), s.depends_on.keys().cloned().collect())).collect();
    let mut services = Vec::new();
    for name in order(&deps)? {
        let svc = &p.services[&name];
        let (mut spec, bind_dirs) = service_spec(p, &name, svc)?;
        let hash = spec_hash(&spec);
        spec.labels.insert(LABEL_HASH.into(), hash.clone());
        let depends_on = svc
            .depends_on
            .iter()
            .map(|(d, dep)| {
                let condition = match dep.condition.as_str() {
                    "service_healthy" => Condition::Healthy,
                    "service_completed_successfully" => Condition::CompletedSuccessfully,
                    _ => Condition::Started,
                };
                Dependency { service: d.clone(), condition, required: dep.required }
            })
            .collect();
        let pull_policy = svc.pull_policy.clone().unwrap_or_else(|| "missing".into());
        services.push(DesiredService { name, spec, hash, depends_on, pull_policy, bind_dirs });
    }
    let used_networks: BTreeSet<&String> = p.services.values().flat_map(|s| s.networks.keys()).collect();
    let networks = p
        .networks
        .iter()
        .filter(|(k, _)| used_networks.contains(k))
        .map(|(key, n)| {
            let mut labels: BTreeMap<String, String> = n.labels.iter().map(|(k, v)| (k.clone(), v.clone().unwrap_or_default())).collect();
            labels.insert(LABEL_PROJECT.into(), p.name.clone());
            labels.insert(LABEL_NETWORK.into(), key.clone());
            let subnets = n.ipam.iter().flat_map(|i| i.config.iter().filter_map(|c| c.subnet.clone())).collect();
            let ipv6 = n.enable_ipv6.as_ref().is_some_and(|v| v == &serde_json::json!(true) || v == &serde_json::json!("true"));
            DesiredNetwork {
                key: key.clone(),
                spec: NetworkSpec {
                    name: n.name.clone(),
                    subnets,
                    ipv6,
                    internal: n.internal,
                    labels,
                    options: n.driver_opts.iter().map(|(k, v)| (k.clone(), text(v).unwrap_or_default())).collect(),
                },
                external: n.external,
            }
        })
        .collect();
    let mut volumes: Vec<DesiredVolume> = p
        .volumes
        .iter()
        .map(|(key, v)| {
            let labels = [(LABEL_PROJECT.to_owned(), p.name.clone()), (LABEL_VOLUME.to_owned(), key.clone())].into();
            DesiredVolume { key: key.clone(), name: v.name.clone(), external: v.external, labels }
        })
        .collect();
    // Anonymous volumes belong to the project too (so `down -v` removes them).
    for s in &services {
        for m in s.spec.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
            if !volumes.iter().any(|v| v.name == m.source) {
                let labels = [(LABEL_PROJECT.to_owned(), p.name.clone()), (LABEL_VOLUME.to_owned(), m.source.clone())].into();
                volumes.push(DesiredVolume { key: m.source.clone(), name: m.source.clone(), external: false, labels });
            }
        }
    }
    Ok(Desired { services, networks, volumes, disabled: p.disabled.clone() })
}

/// A container of the project as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub id: String,
    pub name: String,
    pub service: String,
    pub hash: String,
    /// Running, or a one-shot job that finished with 0: nothing to start.
    pub settled: bool,
    pub oneoff: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Up to date and settled.
    Keep {
        service: String,
        id: String,
    },
    /// Up to date but stopped.
    Start {
        service: String,
        id: String,
    },
    /// Out of date (or forced): remove, then create.
    Recreate {
        service: String,
        id: String,
    },
    Create {
        service: String,
    },
}

impl Action {
    pub fn service(&self) -> &str {
        match self {
            Self::Keep { service, .. } | Self::Start { service, .. } | Self::Recreate { service, .. } | Self::Create { service } => service,
        }
    }
}

/// Decides, per selected service (in dependency order), what `up` does; also returns the
/// project's containers that belong to no service of the files (orphans). One-off containers
/// (`compose run`) are never orphans.
pub fn reconcile(desired: &Desired, existing: &[Existing], selected: &BTreeSet<String>, force: bool) -> (Vec<Action>, Vec<Existing>) {
    let mut actions = Vec::new();
    for d in desired.services.iter().filter(|d| selected.is_empty() || selected.contains(&d.name)) {
        let current = existing.iter().find(|e| e.service == d.name && !e.oneoff);
        actions.push(match current {
            None => Action::Create { service: d.name.clone() },
            Some(e) if force || e.hash != d.hash => Action::Recreate { service: d.name.clone(), id: e.id.clone() },
            Some(e) if e.settled => Action::Keep { service: d.name.clone(), id: e.id.clone() },
            Some(e) => Action::Start { service: d.name.clone(), id: e.id.clone() },
        });
    }
    // A service a profile disables is still the project's: its container is no orphan.
    let known = |e: &Existing| desired.services.iter().any(|d| d.name == e.service) || desired.disabled.contains(&e.service);
    let orphans = existing.iter().filter(|e| !e.oneoff && !known(e)).cloned().collect();
    (actions, orphans)
}

/// The services to bring up for `selected`: those and, transitively, what they depend on.
pub fn with_dependencies(desired: &[DesiredService], selected: &[String]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = selected.to_vec();
    while let Some(s) = todo.pop() {
        if out.insert(s.clone())
            && let Some(d) = desired.iter().find(|d| d.name == s)
        {
            todo.extend(d.depends_on.iter().map(|d| d.service.clone()));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn project(text: &str) -> Project {
        project_in("/p/app", text)
    }

    /// The project of one `compose.yaml` holding `text` in directory `dir`.
    pub(crate) fn project_in(dir: &str, text: &str) -> Project {
        let file = std::path::Path::new(dir).join("compose.yaml");
        let read = |p: &std::path::Path| if p == file { Ok(text.to_owned()) } else { Err(std::io::ErrorKind::NotFound.into()) };
        let opts = crate::load::Options { workdir: dir.into(), ..Default::default() };
        crate::model::normalise(&crate::load::load(&opts, &read).unwrap(), &read).unwrap()
    }

    const APP: &str = "services:\n  web:\n    image: nginx\n    ports: ['8080:80']\n    depends_on: {db: {condition: service_healthy}, migrate: {condition: service_completed_successfully}}\n    volumes: [data:/srv]\n  db:\n    image: postgres\n    healthcheck: {test: [CMD, pg_isready], interval: 1s, retries: 30}\n    mem_limit: 256m\n    deploy: {resources: {limits: {cpus: '0.5'}}}\n  migrate:\n    image: tool\n    command: migrate up\n    depends_on: {db: {condition: service_healthy}}\nvolumes:\n  data: {}\n";

    #[test]
    fn specs_order_and_labels() {
        let d = desired(&project(APP)).unwrap();
        let names: Vec<&str> = d.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db", "migrate", "web"]);
        let web = &d.services[2].spec;
        assert_eq!(web.name.as_deref(), Some("app-web-1"));
        assert_eq!(web.networks[0].network, "app_default");
        assert_eq!(web.networks[0].aliases, ["web"]);
        assert_eq!(web.mounts[0].source, "app_data");
        assert_eq!(web.publish[0].host_port, 8080);
        assert_eq!(web.labels[LABEL_PROJECT], "app");
        let db = &d.services[0].spec;
        assert_eq!(db.resources.memory, Some(256 << 20));
        assert_eq!(db.resources.cpus_milli, Some(500));
        assert_eq!(db.health.as_ref().unwrap().retries, 30);
        assert_eq!(d.services[1].spec.cmd, Some(vec!["migrate".into(), "up".into()]));
        assert_eq!(d.networks.len(), 1);
        assert_eq!(d.volumes[0].name, "app_data");
    }

    /// Compose's `nocopy` (short `vol:/x:nocopy` and long `volume: {nocopy: true}`) and bind
    /// propagation reach the container's mounts.
    #[test]
    fn volume_nocopy_and_bind_propagation_reach_the_mounts() {
        let p = project(
            "services:\n  s:\n    image: x\n    volumes: ['a:/a:nocopy', {type: volume, source: b, target: /b, volume: {nocopy: true}}, 'c:/c', '/srv:/srv:rshared']\nvolumes: {a: {}, b: {}, c: {}}\n",
        );
        let d = desired(&p).unwrap();
        let m = &d.services[0].spec.mounts;
        assert!(m[0].no_copy() && m[1].no_copy() && !m[2].no_copy());
        assert_eq!(m[3].options, ["rshared"]);
    }

    #[test]
    fn links_become_aliases_and_sysctls_pass_through() {
        let p = project(
            "services:\n  web: {image: x, links: ['db:database', 'cache'], sysctls: [net.core.somaxconn=1024]}\n  db: {image: y}\n  cache: {image: z}\n",
        );
        let d = desired(&p).unwrap();
        let db = &d.services.iter().find(|s| s.name == "db").unwrap().spec;
        assert_eq!(db.networks[0].aliases, ["db", "database"]);
        let web = &d.services.iter().find(|s| s.name == "web").unwrap().spec;
        assert_eq!(web.sysctls["net.core.somaxconn"], "1024");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn extra_hosts_and_ulimits_in_both_forms() {
        let p = project(
            "services:\n  a: {image: x, extra_hosts: ['h1:10.0.0.1', 'gw=host-gateway'], ulimits: {nproc: 512, nofile: {soft: 1024, hard: 4096}}}\n  b: {image: x, extra_hosts: {h2: 10.0.0.2}}\n",
        );
        let d = desired(&p).unwrap();
        let a = &d.services.iter().find(|s| s.name == "a").unwrap().spec;
        assert_eq!(a.extra_hosts, ["h1:10.0.0.1", "gw=host-gateway"]);
        assert_eq!(a.ulimits["nproc"], atoll_spec::Ulimit { soft: 512, hard: 512 });
        assert_eq!(a.ulimits["nofile"], atoll_spec::Ulimit { soft: 1024, hard: 4096 });
        assert_eq!(d.services.iter().find(|s| s.name == "b").unwrap().spec.extra_hosts, ["h2:10.0.0.2"]);
    }

    #[test]
    fn a_dependency_cycle_is_named() {
        let p =
            project("services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [c]}\n  c: {image: x, depends_on: [a]}\n");
        assert_eq!(desired(&p).unwrap_err(), PlanError::Cycle("a -> b -> c -> a".into()));
    }

    #[test]
    fn reconcile_keeps_recreates_creates_and_finds_orphans() {
        let d = desired(&project(APP)).unwrap();
        let hash = |n: &str| d.services.iter().find(|s| s.name == n).unwrap().hash.clone();
        let existing = vec![
            Existing { id: "1".into(), name: "app-db-1".into(), service: "db".into(), hash: hash("db"), settled: true, oneoff: false },
            Existing { id: "2".into(), name: "app-web-1".into(), service: "web".into(), hash: "old".into(), settled: true, oneoff: false },
            Existing { id: "3".into(), name: "app-old-1".into(), service: "old".into(), hash: "x".into(), settled: true, oneoff: false },
            Existing { id: "4".into(), name: "app-web-run-1".into(), service: "web".into(), hash: "x".into(), settled: true, oneoff: true },
        ];
        let (actions, orphans) = reconcile(&d, &existing, &BTreeSet::new(), false);
        assert_eq!(
            actions,
            vec![
                Action::Keep { service: "db".into(), id: "1".into() },
                Action::Create { service: "migrate".into() },
                Action::Recreate { service: "web".into(), id: "2".into() },
            ]
        );
        assert_eq!(orphans.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["app-old-1"]);
        let (actions, _) = reconcile(&d, &existing, &BTreeSet::new(), true);
        // A service a profile disables is the project's: not an orphan.
        let mut d2 = d.clone();
        d2.disabled.insert("old".into());
        assert!(reconcile(&d2, &existing, &BTreeSet::new(), false).1.is_empty());
        assert!(matches!(actions[0], Action::Recreate { .. }), "--force-recreate");
        assert_eq!(with_dependencies(&d.services, &["web".into()]).len(), 3);
    }

    proptest! {
        /// Every service comes after all its dependencies, for any acyclic graph.
        #[test]
        fn order_respects_dependencies(edges in prop::collection::vec((0usize..8, 0usize..8), 0..20)) {
            let mut deps: BTreeMap<String, Vec<String>> = (0..8).map(|i| (format!("s{i}"), vec![])).collect();
            for (a, b) in edges {
                if a > b {
                    deps.get_mut(&format!("s{a}")).unwrap().push(format!("s{b}"));
                }
            }
            let o = order(&deps).unwrap();
            prop_assert_eq!(o.len(), 8);
            for (s, ds) in &deps {
                let i = o.iter().position(|x| x == s).unwrap();
                for d in ds {
                    prop_assert!(o.iter().position(|x| x == d).unwrap() < i);
                }
            }
        }

        /// A spec hashes the same however often it is computed, and any change to it shows.
        #[test]
        fn hashes_are_stable_and_sensitive(env in prop::collection::vec("[A-Z]{1,3}=[a-z]{0,3}", 0..4), extra in "[a-z]{1,4}") {
            let s = ContainerSpec { image: "x".into(), env: env.clone(), ..Default::default() };
            prop_assert_eq!(spec_hash(&s), spec_hash(&s.clone()));
            let mut t = s.clone();
            t.env.push(format!("Z={extra}"));
            prop_assert_ne!(spec_hash(&s), spec_hash(&t));
        }
    }
}
