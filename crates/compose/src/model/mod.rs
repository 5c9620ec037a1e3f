//! The normalised project: every short syntax rewritten to the long one (ports, volumes,
//! depends_on, networks, healthcheck tests, string commands split like a shell), env files
//! read into `environment`, resource names settled (`<project>_<network>`), references
//! checked; keys Atoll does not support named in warnings. The JSON form is what
//! `compose config` prints; [`Project`] is the same, typed, for planning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as J, json};

use crate::load::{Loaded, ReadFn};

pub(crate) mod syntax;
mod types;

pub(crate) use syntax::text;
use syntax::*;
use types::Typed;
pub use types::*;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("service {service:?}: {message}")]
    Service { service: String, message: String },
    #[error("reading the env file {path} of service {service:?}")]
    EnvFile {
        service: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the env file {path}")]
    EnvFileSyntax {
        path: PathBuf,
        #[source]
        source: crate::dotenv::DotenvError,
    },
    #[error("{kind} {name:?}: {message}")]
    Resource { kind: &'static str, name: String, message: String },
}

/// Service keys Atoll runs as the specification says.
const SUPPORTED: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "volumes",
    "networks",
    "network_mode",
    "depends_on",
    "healthcheck",
    "restart",
    "user",
    "working_dir",
    "hostname",
    "labels",
    "read_only",
    "cap_add",
    "cap_drop",
    "init",
    "stop_signal",
    "stop_grace_period",
    "mem_limit",
    "cpus",
    "pids_limit",
    "deploy",
    "profiles",
    "configs",
    "secrets",
    "container_name",
    "tty",
    "stdin_open",
    "tmpfs",
    "pull_policy",
    "logging",
    "shm_size",
    "security_opt",
    "sysctls",
    "links",
    "extra_hosts",
    "ulimits",
];

/// What to do instead, for unsupported keys real files use.
fn hint(key: &str) -> &'static str {
    match key {
        "build" => "build the image elsewhere, push it to a registry and reference it with `image:`",
        "links" | "external_links" => "services reach each other by name on their shared networks already",
        "privileged" => "grant the capabilities the service needs with `cap_add`",
        "devices" | "device_cgroup_rules" | "gpus" => "device access is not supported yet",
        "dns" | "dns_search" | "dns_opt" => "containers use Atoll's resolver, which forwards to the host's",
        "container_name" => "",
        _ => "it is ignored",
    }
}

struct Ctx<'a> {
    loaded: &'a Loaded,
    read: ReadFn<'a>,
    warnings: Vec<String>,
}

impl Ctx<'_> {
    fn service(&mut self, name: &str, svc: &J, all: &Map<String, J>) -> Result<J, ModelError> {
        let bad = |m: String| ModelError::Service { service: name.to_owned(), message: m };
        let Some(src) = svc.as_object() else { return Err(bad("must be a mapping".into())) };
        let mut out = Map::new();
        for (k, v) in src {
            if k.starts_with("x-") {
                out.insert(k.clone(), v.clone());
                continue;
            }
            if !SUPPORTED.contains(&k.as_str()) {
                self.warnings.push(format!("service {name:?}: `{k}` is not supported; {}", hint(k)));
                out.insert(k.clone(), v.clone());
                continue;
            }
            let nv = match k.as_str() {
                "command" | "entrypoint" => command(name, v)?,
                "ports" => J::Array(v.as_array().into_iter().flatten().map(|p| port(name, p)).collect::<Result<Vec<_>, _>>()?.concat()),
                "expose" => json!(strings(v)),
                "volumes" => J::Array(v.as_array().into_iter().flatten().map(|m| volume(name, m)).collect::<Result<_, _>>()?),
                "healthcheck" => healthcheck(v),
                "labels" | "sysctls" => J::Object(named_kv_map(name, k, v)?),
                "links" => json!(strings(v)),
                // `name: ip` mappings or `name:ip`/`name=ip` strings, as `name:ip` strings.
                "extra_hosts" => match v {
                    J::Object(o) => json!(o.iter().map(|(k, ip)| format!("{k}:{}", text(ip).unwrap_or_default())).collect::<Vec<_>>()),
                    other => json!(strings(other)),
                },
                // `nofile: 65536` or `nofile: {soft, hard}`, as {soft, hard}.
                "ulimits" => J::Object(
                    v.as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, u)| {
                            let (soft, hard) = match u {
                                J::Object(o) => (o.get("soft").cloned().unwrap_or(J::Null), o.get("hard").cloned().unwrap_or(J::Null)),
                                other => (other.clone(), other.clone()),
                            };
                            let num = |x: J| text(&x).and_then(|t| t.parse::<i64>().ok()).map_or(J::Null, |n| json!(n));
                            (k.clone(), json!({"soft": num(soft), "hard": num(hard)}))
                        })
                        .collect(),
                ),
                "read_only" | "init" | "tty" | "stdin_open" => json!(truthy(v)),
                "cap_add" | "cap_drop" | "profiles" | "tmpfs" => json!(strings(v)),
                "security_opt" => json!(strings(v)),
                "mem_limit" | "cpus" | "stop_grace_period" | "restart" | "user" | "working_dir" | "hostname" | "stop_signal"
                | "shm_size" => text(v).map_or(J::Null, J::String),
                "pids_limit" => text(v).and_then(|p| p.parse::<i64>().ok()).map_or(J::Null, |p| json!(p)),
                "configs" | "secrets" => J::Array(
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| match e {
                            J::String(src) => json!({ "source": src }),
                            other => other.clone(),
                        })
                        .collect(),
                ),
                "depends_on" => {
                    let mut deps = Map::new();
                    let entries: Vec<(String, J)> = match v {
                        J::Array(a) => a.iter().filter_map(text).map(|d| (d, json!({}))).collect(),
                        J::Object(o) => o.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        _ => vec![],
                    };
                    for (dep, spec) in entries {
                        let condition = spec.get("condition").and_then(text).unwrap_or_else(|| "service_started".into());
                        let required = spec.get("required").is_none_or(truthy);
                        let restart = spec.get("restart").is_some_and(truthy);
                        // As compose-go: an optional dependency a profile disables is left out;
                        // any other missing one is an error.
                        if !all.contains_key(&dep) {
                            match self.loaded.disabled.get(&dep) {
                                Some(_) if !required => continue,
                                Some(ps) => {
                                    return Err(bad(format!(
                                        "depends on {dep:?}, which its profiles ({}) disable: enable one with --profile {}, or name {dep} on the command line too",
                                        ps.join(", "),
                                        ps[0]
                                    )));
                                }
                                None => return Err(bad(format!("depends on {dep:?}, which is not a service"))),
                            }
                        }
                        deps.insert(dep, json!({"condition": condition, "required": required, "restart": restart}));
                    }
                    J::Object(deps)
                }
                "networks" => {
                    let mut nets = Map::new();
                    match v {
                        J::Array(a) => a.iter().filter_map(text).for_each(|n| {
                            nets.insert(n, J::Null);
                        }),
                        J::Object(o) => o.iter().for_each(|(k, v)| {
                            nets.insert(k.clone(), v.clone());
                        }),
                        _ => {}
                    }
                    J::Object(nets)
                }
                "logging" => {
                    let driver = v.get("driver").and_then(text).unwrap_or_else(|| "json-file".into());
                    if !matches!(driver.as_str(), "json-file" | "local") {
                        self.warnings.push(format!("service {name:?}: logging driver {driver:?} is not supported; logs are kept by Atoll"));
                    }
                    v.clone()
                }
                "deploy" => {
                    if let Some(r) = v.get("replicas").and_then(text)
                        && r != "1"
                    {
                        self.warnings.push(format!("service {name:?}: deploy.replicas {r} is not supported; one container runs"));
                    }
                    // `deploy.labels` as a list or a mapping, as a mapping.
                    let mut d = v.clone();
                    if let Some(l) = v.get("labels") {
                        d["labels"] = J::Object(named_kv_map(name, "deploy.labels", l)?);
                    }
                    d
                }
                "network_mode" => {
                    let mode = text(v).unwrap_or_default();
                    if !matches!(mode.as_str(), "host" | "none" | "bridge") {
                        self.warnings.push(format!(
                            "service {name:?}: network_mode {mode:?} is not supported; put the services on a shared network instead"
                        ));
                    }
                    J::String(mode)
                }
                _ => v.clone(),
            };
            if !nv.is_null() {
                out.insert(k.clone(), nv);
            }
        }
        // env_file under environment.
        let mut env = Map::new();
        if let Some(files) = src.get("env_file") {
            let list: Vec<(String, bool)> = match files {
                J::Array(a) => a
                    .iter()
                    .filter_map(|e| match e {
                        J::Object(o) => Some((o.get("path").and_then(text)?, o.get("required").is_none_or(truthy))),
                        other => text(other).map(|p| (p, true)),
                    })
                    .collect(),
                other => text(other).map(|p| vec![(p, true)]).unwrap_or_default(),
            };
            for (path, required) in &list {
                let p = Path::new(path);
                match (self.read)(p) {
                    Ok(text) => {
                        let lookup = |k: &str| self.loaded.env.get(k).cloned();
                        let pairs = crate::dotenv::parse(&text, &lookup)
                            .map_err(|source| ModelError::EnvFileSyntax { path: p.to_owned(), source })?;
                        env.extend(pairs.into_iter().map(|(k, v)| (k, J::String(v))));
                    }
                    Err(_) if !required => {}
                    Err(source) => return Err(ModelError::EnvFile { service: name.to_owned(), path: p.to_owned(), source }),
                }
            }
        }
        // Inlined into `environment`, as docker compose's config does: printed, the files
        // would be read again (or be missing) when the output is loaded.
        out.remove("env_file");
        if let Some(e) = src.get("environment") {
            for (k, v) in named_kv_map(name, "environment", e)? {
                let v = if v.is_null() { self.loaded.env.get(&k).map_or(J::Null, |x| J::String(x.clone())) } else { v };
                env.insert(k, v);
            }
        }
        if !env.is_empty() || src.contains_key("environment") {
            out.insert("environment".into(), J::Object(env));
        }
        if !out.contains_key("networks") && !out.contains_key("network_mode") {
            out.insert("networks".into(), json!({"default": null}));
        }
        if out.get("image").and_then(text).is_none() {
            if src.contains_key("build") {
                self.warnings.push(format!("service {name:?} has `build:` and no `image:`; `up` cannot run it until an image is pushed"));
            } else {
                return Err(bad("has neither `image` nor `build`".into()));
            }
        }
        Ok(J::Object(out))
    }
}

/// The normalised project as `compose config` prints it, so that the output loaded again is
/// the same project: every `$` of a value written `$$` (keys are not interpolated), as
/// docker compose prints it.
pub fn printable(config: &J) -> J {
    match config {
        J::String(s) => J::String(s.replace('$', "$$")),
        J::Array(a) => J::Array(a.iter().map(printable).collect()),
        J::Object(o) => J::Object(o.iter().map(|(k, v)| (k.clone(), printable(v))).collect()),
        other => other.clone(),
    }
}

/// Normalises a loaded project into `compose config` JSON and the typed project.
pub fn normalise(loaded: &Loaded, read: ReadFn<'_>) -> Result<Project, ModelError> {
    let doc = loaded.doc.to_json();
    let p = &loaded.name;
    let mut ctx = Ctx { loaded, read, warnings: loaded.warnings.clone() };
    let services_in = doc.get("services").and_then(J::as_object).cloned().unwrap_or_default();
    let mut services = Map::new();
    for (name, svc) in &services_in {
        services.insert(name.clone(), ctx.service(name, svc, &services_in)?);
    }

    // Networks: named `<project>_<key>` unless `name:` or external.
    let mut networks = doc.get("networks").and_then(J::as_object).cloned().unwrap_or_default();
    let used: Vec<String> =
        services.values().filter_map(|s| s.get("networks").and_then(J::as_object)).flat_map(|n| n.keys().cloned()).collect();
    if used.iter().any(|n| n == "default") && !networks.contains_key("default") {
        networks.insert("default".into(), json!({}));
    }
    for (svc, n) in services.iter().flat_map(|(s, v)| v.get("networks").and_then(J::as_object).into_iter().flatten().map(move |n| (s, n))) {
        if !networks.contains_key(n.0) {
            return Err(ModelError::Service { service: svc.clone(), message: format!("refers to the undefined network {:?}", n.0) });
        }
    }
    for (key, net) in networks.iter_mut() {
        let mut o = net.as_object().cloned().unwrap_or_default();
        let external = o.get("external").is_some_and(truthy);
        let name = o.get("name").and_then(text).unwrap_or_else(|| if external { key.clone() } else { format!("{p}_{key}") });
        o.insert("name".into(), json!(name));
        if external {
            o.insert("external".into(), json!(true));
        }
        if let Some(i) = o.get("internal") {
            let i = truthy(i);
            o.insert("internal".into(), json!(i));
        }
        if let Some(d) = o.get("driver").and_then(text)
            && d != "bridge"
        {
            ctx.warnings.push(format!("network {key:?}: driver {d:?} is not supported; a bridge network is used"));
        }
        if o.get("labels").is_some() {
            let l = kv_map(&o["labels"]);
            o.insert("labels".into(), J::Object(l));
        }
        *net = J::Object(o);
    }

    // Volumes: named `<project>_<key>` unless `name:` or external; references checked.
    let mut volumes = doc.get("volumes").and_then(J::as_object).cloned().unwrap_or_default();
    for (svc, v) in services.iter().flat_map(|(s, v)| v.get("volumes").and_then(J::as_array).into_iter().flatten().map(move |m| (s, m))) {
        if v.get("type").and_then(J::as_str) == Some("volume")
            && let Some(src) = v.get("source").and_then(text)
            && !volumes.contains_key(&src)
        {
            return Err(ModelError::Service {
                service: svc.clone(),
                message: format!("refers to the undefined volume {src:?}: declare it under the top-level `volumes:`"),
            });
        }
    }
    for (key, vol) in volumes.iter_mut() {
        let mut o = vol.as_object().cloned().unwrap_or_default();
        let external = o.get("external").is_some_and(truthy);
        let name = o.get("name").and_then(text).unwrap_or_else(|| if external { key.clone() } else { format!("{p}_{key}") });
        o.insert("name".into(), json!(name));
        if external {
            o.insert("external".into(), json!(true));
        }
        if let Some(d) = o.get("driver").and_then(text)
            && d != "local"
        {
            ctx.warnings.push(format!("volume {key:?}: driver {d:?} is not supported; a local volume is used"));
        }
        if o.contains_key("driver_opts") {
            ctx.warnings.push(format!("volume {key:?}: driver_opts are not supported; bind-mount a host path instead"));
        }
        *vol = J::Object(o);
    }

    let mut files = BTreeMap::new();
    for kind in ["configs", "secrets"] {
        let mut section = doc.get(kind).and_then(J::as_object).cloned().unwrap_or_default();
        for (key, item) in section.iter_mut() {
            let mut o = item.as_object().cloned().unwrap_or_default();
            if o.get("external").is_some_and(truthy) || !o.contains_key("file") {
                ctx.warnings.push(format!("{} {key:?}: only `file:` sources are supported", &kind[..kind.len() - 1]));
            }
            o.entry("name").or_insert_with(|| json!(format!("{p}_{key}")));
            *item = J::Object(o);
        }
        files.insert(kind, section);
    }
    for (svc, kind, r) in services.iter().flat_map(|(sn, v)| {
        ["configs", "secrets"].into_iter().flat_map(move |k| v.get(k).and_then(J::as_array).into_iter().flatten().map(move |r| (sn, k, r)))
    }) {
        let src = r.get("source").and_then(text).unwrap_or_default();
        if !files[kind].contains_key(&src) {
            return Err(ModelError::Service {
                service: svc.clone(),
                message: format!("refers to the undefined {} {src:?}", &kind[..kind.len() - 1]),
            });
        }
    }

    let mut config = Map::new();
    config.insert("name".into(), json!(p));
    config.insert("services".into(), J::Object(services));
    for (k, v) in [("networks", networks), ("volumes", volumes)] {
        if !v.is_empty() {
            config.insert(k.into(), J::Object(v));
        }
    }
    for kind in ["configs", "secrets"] {
        if !files[kind].is_empty() {
            config.insert(kind.into(), J::Object(files[kind].clone()));
        }
    }
    for (k, v) in doc.as_object().into_iter().flatten() {
        if k.starts_with("x-") {
            config.insert(k.clone(), v.clone());
        }
    }
    let config = J::Object(config);
    let typed: Typed = serde_json::from_value(config.clone()).map_err(|e| ModelError::Resource {
        kind: "project",
        name: p.clone(),
        message: format!("normalised badly: {e}"),
    })?;
    Ok(Project {
        profiles: loaded.profiles.clone(),
        disabled: loaded.disabled.keys().cloned().collect(),
        name: p.clone(),
        dir: loaded.dir.clone(),
        services: typed.services,
        networks: typed.networks,
        volumes: typed.volumes,
        configs: typed.configs,
        secrets: typed.secrets,
        config,
        warnings: ctx.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Options, load};

    pub(crate) fn project(files: &[(&str, &str)]) -> Result<Project, String> {
        project_with(files, Options::default())
    }

    fn project_with(files: &[(&str, &str)], opts: Options) -> Result<Project, String> {
        let map: BTreeMap<PathBuf, String> = files.iter().map(|(p, t)| (PathBuf::from(p), (*t).to_owned())).collect();
        let read = move |p: &Path| map.get(p).cloned().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound));
        let opts = Options { workdir: "/p/app".into(), ..opts };
        let l = load(&opts, &read).map_err(|e| e.to_string())?;
        normalise(&l, &read).map_err(|e| e.to_string())
    }

    const PROFILED: &str = "services:\n  web: {image: x}\n  debug: {image: x, profiles: [debug], depends_on: [helper]}\n  helper: {image: x, profiles: [debug]}\n  admin: {image: x, profiles: [admin], depends_on: [db]}\n  db: {image: x, profiles: [dev]}\n  opt: {image: x, depends_on: {db: {condition: service_started, required: false}}}\n";

    fn names(p: &Project) -> Vec<&str> {
        p.services.keys().map(String::as_str).collect()
    }

    /// Issue 12: `up debug` where debug and its dependency helper both have the debug
    /// profile: naming debug enables its profile, so helper too.
    #[test]
    fn a_service_named_on_the_command_line_enables_its_profiles() {
        let files = [("/p/app/compose.yaml", PROFILED)];
        let p = project(&files).unwrap();
        assert_eq!(names(&p), ["opt", "web"]);
        assert_eq!(p.profiles.iter().collect::<Vec<_>>(), ["admin", "debug", "dev"], "every profile the file defines");
        assert_eq!(p.disabled.iter().collect::<Vec<_>>(), ["admin", "db", "debug", "helper"]);
        assert!(p.services["opt"].depends_on.is_empty(), "an optional dependency a profile disables is left out");

        let p = project_with(&files, Options { services: vec!["debug".into()], ..Default::default() }).unwrap();
        assert_eq!(names(&p), ["debug", "helper", "opt", "web"]);
        assert!(p.services["debug"].depends_on.contains_key("helper"));

        // A dependency of another profile is not enabled (docker compose's documented rule):
        // the error says how to enable it.
        let e = project_with(&files, Options { services: vec!["admin".into()], ..Default::default() }).unwrap_err();
        assert_eq!(
            e,
            "service \"admin\": depends on \"db\", which its profiles (dev) disable: enable one with --profile dev, or name db on the command line too"
        );
        let p = project_with(&files, Options { services: vec!["admin".into(), "db".into()], ..Default::default() }).unwrap();
        assert_eq!(names(&p), ["admin", "db", "opt", "web"]);
        assert!(p.services["opt"].depends_on.contains_key("db"), "enabled, the optional dependency counts");
    }

    #[test]
    fn profile_flags_win_over_compose_profiles() {
        let files = [("/p/app/compose.yaml", PROFILED)];
        let environ: BTreeMap<String, String> = [("COMPOSE_PROFILES".to_owned(), "debug, dev".to_owned())].into();
        let p = project_with(&files, Options { environ: environ.clone(), ..Default::default() }).unwrap();
        assert_eq!(names(&p), ["db", "debug", "helper", "opt", "web"]);
        let p = project_with(&files, Options { environ, profiles: vec!["dev".into()], ..Default::default() }).unwrap();
        assert_eq!(names(&p), ["db", "opt", "web"]);
        let p = project_with(&files, Options { profiles: vec!["*".into()], ..Default::default() }).unwrap();
        assert_eq!(names(&p), ["admin", "db", "debug", "helper", "opt", "web"]);
    }

    /// compose-go refuses a dependency on a service no file defines, optional or not.
    #[test]
    fn an_undefined_optional_dependency_is_an_error() {
        let e = project(&[(
            "/p/app/compose.yaml",
            "services:\n  a: {image: x, depends_on: {nope: {condition: service_started, required: false}}}\n",
        )])
        .unwrap_err();
        assert_eq!(e, "service \"a\": depends on \"nope\", which is not a service");
    }

    #[test]
    fn config_prints_the_long_syntax() {
        let p = project(&[
            (
                "/p/app/compose.yaml",
                "services:\n  web:\n    image: nginx\n    command: sh -c 'echo \"a b\"'\n    ports: ['127.0.0.1:8080-8081:80-81/udp', 443]\n    volumes: ['data:/data:ro', './site:/srv', '/tmp']\n    depends_on: [db]\n    environment: [A=1, HOME]\n    env_file: web.env\n    healthcheck: {test: curl -f localhost}\n    build: .\n  db:\n    image: postgres\n    networks: {back: {aliases: [database]}}\nvolumes:\n  data:\nnetworks:\n  back: {internal: true}\n",
            ),
            ("/p/app/web.env", "A=0\nB=2\n"),
        ])
        .unwrap();
        expect_test::expect![[r#"
            name: app
            networks:
              back:
                internal: true
                name: app_back
              default:
                name: app_default
            services:
              db:
                image: postgres
                networks:
                  back:
                    aliases:
                      - database
              web:
                build: /p/app
                command:
                  - sh
                  - "-c"
                  - echo "a b"
                depends_on:
                  db:
                    condition: service_started
                    required: true
                    restart: false
                environment:
                  A: "1"
                  B: "2"
                  HOME: null
                healthcheck:
                  test:
                    - CMD-SHELL
                    - curl -f localhost
                image: nginx
                networks:
                  default: null
                ports:
                  - host_ip: 127.0.0.1
                    mode: ingress
                    protocol: udp
                    published: "8080"
                    target: 80
                  - host_ip: 127.0.0.1
                    mode: ingress
                    protocol: udp
                    published: "8081"
                    target: 81
                  - mode: ingress
                    protocol: tcp
                    target: 443
                volumes:
                  - read_only: true
                    source: data
                    target: /data
                    type: volume
                  - bind:
                      create_host_path: true
                    source: /p/app/site
                    target: /srv
                    type: bind
                  - target: /tmp
                    type: volume
            volumes:
              data:
                name: app_data
        "#]]
        .assert_eq(&crate::yaml::emit(&p.config));
        assert_eq!(
            p.warnings,
            vec![
                "service \"web\": `build` is not supported; build the image elsewhere, push it to a registry and reference it with `image:`"
            ]
        );
    }

    /// go-yaml types `0755` as octal and `1_000` as 1000, and Go prints 1e6 as `1e+06`:
    /// docker compose sets those values, so Atoll does too.
    #[test]
    fn numbers_used_as_text_read_as_docker_compose_reads_them() {
        let p = project(&[(
            "/p/app/compose.yaml",
            "services:\n  s:\n    image: x\n    environment: {MODE: 0755, N: 1_000, BIG: 1e6, F: 1.50, H: 0x1F, T: 08:00}\n",
        )])
        .unwrap();
        let env: Vec<(String, Option<String>)> = p.services["s"].environment.clone().into_iter().collect();
        let want = [("BIG", "1e+06"), ("F", "1.5"), ("H", "31"), ("MODE", "493"), ("N", "1000"), ("T", "08:00")];
        assert_eq!(env, want.map(|(k, v)| (k.to_owned(), Some(v.to_owned()))));
    }

    /// Found by the compose fuzz target: `environment: ["=x"]` normalised to an empty key,
    /// which `config` printed and the schema refused on reload.
    #[test]
    fn an_entry_without_a_name_is_refused() {
        for key in ["environment", "labels", "sysctls"] {
            let e = project(&[("/p/app/compose.yaml", &format!("services:\n  s:\n    image: x\n    {key}: ['=x']\n"))]).unwrap_err();
            assert_eq!(e, format!("service \"s\": the {key} entry \"=x\" has no name: write NAME=x"));
        }
    }

    #[test]
    fn undefined_references_are_errors() {
        let e = project(&[("/p/app/compose.yaml", "services:\n  web:\n    image: x\n    volumes: ['data:/d']\n")]).unwrap_err();
        assert!(e.contains("undefined volume \"data\""), "{e}");
        let e = project(&[("/p/app/compose.yaml", "services:\n  web:\n    image: x\n    networks: [back]\n")]).unwrap_err();
        assert!(e.contains("undefined network \"back\""), "{e}");
        let e = project(&[("/p/app/compose.yaml", "services:\n  web:\n    image: x\n    depends_on: [db]\n")]).unwrap_err();
        assert!(e.contains("depends on \"db\""), "{e}");
        let e = project(&[("/p/app/compose.yaml", "services:\n  web:\n    env_file: missing.env\n    image: x\n")]).unwrap_err();
        assert!(e.contains("missing.env"), "{e}");
    }
}
