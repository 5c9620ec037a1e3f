//! Compose files as a stack (`atoll stack deploy`, Docker Swarm's `docker stack deploy`): each
//! service's `deploy:` section read into a [`DeploySpec`] with Swarm's defaults, checked as a
//! whole so that a file is refused with every service's problems at once, and the options a
//! stack does not use listed as Swarm lists them ("Ignoring unsupported options: …").
//!
//! Sources: the Compose Specification's deploy section (`deploy.md`), and swarmkit's defaults
//! (`api/defaults`: one replica; restart on any exit after 5 s; updates one at a time, pausing
//! on failure, watched for 5 s, stopping the old task first).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as J;

use crate::model::syntax::text;
use crate::model::{Project, UpdateConfig};

/// How a service's replicas are counted (`deploy.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Replicated,
    Global,
}

/// When a replica that exited is started again (`deploy.restart_policy.condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

/// `deploy.restart_policy`. Durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay_ms: u64,
    /// 0: no limit.
    pub max_attempts: u64,
    /// 0: every attempt counts.
    pub window_ms: u64,
}

/// What an update does when a replica fails to come up (`failure_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureAction {
    Pause,
    Continue,
    Rollback,
}

/// Whether the new replica starts before the old one stops (`order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    StopFirst,
    StartFirst,
}

/// `deploy.update_config` or `deploy.rollback_config`. Durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Replicas changed at once; 0: all at once.
    pub parallelism: u64,
    pub delay_ms: u64,
    pub failure_action: FailureAction,
    /// How long a new replica is watched for failure.
    pub monitor_ms: u64,
    /// The share of replicas that may fail (0 to 1) before `failure_action`.
    pub max_failure_ratio: f64,
    pub order: Order,
}

/// CPUs (thousandths) and memory (bytes) of `deploy.resources.limits` or `.reservations`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus_milli: Option<u64>,
    pub memory: Option<u64>,
}

/// A service's `deploy:` section, with Swarm's defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploySpec {
    pub mode: Mode,
    /// For `replicated` (1 unless given); unused for `global`.
    pub replicas: u64,
    /// `deploy.placement.constraints`, as written; [`atoll-sched`] parses them.
    pub constraints: Vec<String>,
    /// `deploy.placement.preferences`: the label each `spread` names, in order.
    pub spread: Vec<String>,
    pub max_replicas_per_node: Option<u64>,
    pub reservations: Resources,
    pub limits: Resources,
    pub restart_policy: RestartPolicy,
    pub update_config: Rollout,
    pub rollback_config: Rollout,
    /// `deploy.labels`: the service's labels (not its containers').
    pub labels: BTreeMap<String, String>,
}

/// What `stack deploy` makes of the files: each service's deploy spec, and the options it
/// ignores.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub services: BTreeMap<String, DeploySpec>,
    /// Service options a stack does not use, sorted, as Swarm prints them.
    pub ignored: Vec<String>,
}

/// The files cannot be a stack: every problem found, `service: problem`, in service order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stack cannot be deployed:\n  {}", .0.join("\n  "))]
pub struct StackError(pub Vec<String>);

/// Service options `docker stack deploy` ignores (docker/cli's `convert` package).
const UNSUPPORTED: &[&str] =
    &["build", "cgroup_parent", "container_name", "devices", "external_links", "links", "network_mode", "restart", "userns_mode"];

/// Reads every service's `deploy:` section of `project` (whose services a profile disables are
/// left out, as compose does).
pub fn stack(project: &Project) -> Result<Stack, StackError> {
    let mut problems = Vec::new();
    let mut services = BTreeMap::new();
    let mut ignored = std::collections::BTreeSet::new();
    for (name, svc) in &project.services {
        if project.disabled.contains(name) {
            continue;
        }
        if let Some(raw) = project.config.get("services").and_then(|s| s.get(name)).and_then(J::as_object) {
            ignored.extend(raw.keys().filter(|k| UNSUPPORTED.contains(&k.as_str())).cloned());
        }
        let mut said = |m: String| problems.push(format!("service {name:?}: {m}"));
        match deploy_spec(svc.deploy.as_ref(), &mut said) {
            Some(spec) => {
                services.insert(name.clone(), spec);
            }
            None => continue,
        }
    }
    if problems.is_empty() { Ok(Stack { services, ignored: ignored.into_iter().collect() }) } else { Err(StackError(problems)) }
}

/// One service's deploy spec; `None` after saying what is wrong.
fn deploy_spec(d: Option<&crate::model::Deploy>, said: &mut impl FnMut(String)) -> Option<DeploySpec> {
    let problems = std::cell::RefCell::new(Vec::new());
    let say = |m: String| problems.borrow_mut().push(m);
    let default = crate::model::Deploy::default();
    let d = d.unwrap_or(&default);
    let mode = match d.mode.as_deref().unwrap_or("replicated") {
        "replicated" => Mode::Replicated,
        "global" => Mode::Global,
        m @ ("replicated-job" | "global-job") => {
            say(format!("deploy.mode {m} (jobs that run to completion) is not supported yet: use replicated or global"));
            Mode::Replicated
        }
        other => {
            say(format!("deploy.mode {other:?} is not a mode: use replicated or global"));
            Mode::Replicated
        }
    };
    let count = |what: &str, v: Option<&J>, default: u64| -> u64 {
        match v.map(|v| text(v).and_then(|t| t.parse::<u64>().ok())) {
            None => default,
            Some(Some(n)) => n,
            Some(None) => {
                say(format!("{what} must be a whole number ≥ 0"));
                default
            }
        }
    };
    let replicas = count("deploy.replicas", d.replicas.as_ref(), 1);
    if mode == Mode::Global && d.replicas.is_some() {
        say("deploy.replicas can only be used with mode replicated: a global service runs one replica on every eligible node".into());
    }
    let placement = d.placement.clone().unwrap_or_default();
    // 0 is no limit, as swarmkit reads it (found by QA: it pended forever).
    let max_replicas_per_node =
        placement.max_replicas_per_node.as_ref().map(|v| count("deploy.placement.max_replicas_per_node", Some(v), 0)).filter(|m| *m > 0);
    if mode == Mode::Global && max_replicas_per_node.is_some() {
        say("deploy.placement.max_replicas_per_node can only be used with mode replicated".into());
    }
    // The schema admits only `spread` preferences.
    let spread = placement.preferences.iter().filter_map(|p| p.get("spread").cloned()).collect();
    let resources = |what: &str, l: Option<&crate::model::Limits>| -> Resources {
        let Some(l) = l else { return Resources::default() };
        let cpus_milli = l
            .cpus
            .as_ref()
            .and_then(text)
            .filter(|c| c != "0")
            .and_then(|c| atoll_spec::units::parse_cpus(&c).map_err(|e| say(format!("deploy.resources.{what}.cpus: {e}"))).ok());
        let memory = l
            .memory
            .as_ref()
            .and_then(text)
            .and_then(|m| atoll_spec::units::parse_size(&m).map_err(|e| say(format!("deploy.resources.{what}.memory: {e}"))).ok());
        Resources { cpus_milli, memory }
    };
    let res = d.resources.clone().unwrap_or_default();
    let reservations = resources("reservations", res.reservations.as_ref());
    let limits = resources("limits", res.limits.as_ref());
    for (what, r, l) in [("cpus", reservations.cpus_milli, limits.cpus_milli), ("memory", reservations.memory, limits.memory)] {
        if let (Some(r), Some(l)) = (r, l)
            && r > l
        {
            say(format!("deploy.resources.reservations.{what} is more than its limit: a replica could never get what it reserves"));
        }
    }
    let ms = |what: &str, v: Option<&String>, default: Duration| -> u64 {
        let d = match v {
            None => default,
            Some(s) => atoll_spec::units::parse_duration(s).unwrap_or_else(|e| {
                say(format!("{what}: {e}"));
                default
            }),
        };
        d.as_millis() as u64
    };
    let rp = d.restart_policy.clone().unwrap_or_default();
    let condition = match rp.condition.as_deref().unwrap_or("any") {
        "any" => RestartCondition::Any,
        "on-failure" => RestartCondition::OnFailure,
        "none" => RestartCondition::None,
        other => {
            say(format!("deploy.restart_policy.condition {other:?}: use none, on-failure or any"));
            RestartCondition::Any
        }
    };
    let restart_policy = RestartPolicy {
        condition,
        delay_ms: ms("deploy.restart_policy.delay", rp.delay.as_ref(), Duration::from_secs(5)),
        max_attempts: count("deploy.restart_policy.max_attempts", rp.max_attempts.as_ref(), 0),
        window_ms: ms("deploy.restart_policy.window", rp.window.as_ref(), Duration::ZERO),
    };
    let update_config = rollout("deploy.update_config", d.update_config.as_ref(), FailureAction::Pause, true, &say);
    let rollback_config = rollout("deploy.rollback_config", d.rollback_config.as_ref(), FailureAction::Pause, false, &say);
    let labels = d.labels.iter().map(|(k, v)| (k.clone(), v.clone().unwrap_or_default())).collect();
    let problems = problems.into_inner();
    let ok = problems.is_empty();
    problems.into_iter().for_each(said);
    ok.then_some(DeploySpec {
        mode,
        replicas,
        constraints: placement.constraints,
        spread,
        max_replicas_per_node,
        reservations,
        limits,
        restart_policy,
        update_config,
        rollback_config,
        labels,
    })
}

/// `update_config` or `rollback_config` (whose failure action cannot be `rollback`).
fn rollout(what: &str, u: Option<&UpdateConfig>, default_action: FailureAction, may_roll_back: bool, say: &impl Fn(String)) -> Rollout {
    let default = UpdateConfig::default();
    let u = u.unwrap_or(&default);
    let parallelism = match u.parallelism.as_ref().map(|v| text(v).and_then(|t| t.parse::<u64>().ok())) {
        None => 1,
        Some(Some(n)) => n,
        Some(None) => {
            say(format!("{what}.parallelism must be a whole number ≥ 0"));
            1
        }
    };
    let ms = |key: &str, v: Option<&String>, default: Duration| -> u64 {
        v.map_or(Ok(default), |s| atoll_spec::units::parse_duration(s))
            .unwrap_or_else(|e| {
                say(format!("{what}.{key}: {e}"));
                default
            })
            .as_millis() as u64
    };
    let delay_ms = ms("delay", u.delay.as_ref(), Duration::ZERO);
    let monitor_ms = ms("monitor", u.monitor.as_ref(), Duration::from_secs(5));
    let failure_action = match u.failure_action.as_deref() {
        None => default_action,
        Some("pause") => FailureAction::Pause,
        Some("continue") => FailureAction::Continue,
        Some("rollback") if may_roll_back => FailureAction::Rollback,
        Some(other) => {
            let allowed = if may_roll_back { "pause, continue or rollback" } else { "pause or continue" };
            say(format!("{what}.failure_action {other:?}: use {allowed}"));
            default_action
        }
    };
    let max_failure_ratio = match u.max_failure_ratio.as_ref().map(|v| text(v).and_then(|t| t.parse::<f64>().ok())) {
        None => 0.0,
        Some(Some(r)) if (0.0..=1.0).contains(&r) => r,
        Some(_) => {
            say(format!("{what}.max_failure_ratio must be a number from 0 to 1"));
            0.0
        }
    };
    let order = match u.order.as_deref() {
        None | Some("stop-first") => Order::StopFirst,
        Some("start-first") => Order::StartFirst,
        Some(other) => {
            say(format!("{what}.order {other:?}: use stop-first or start-first"));
            Order::StopFirst
        }
    };
    Rollout { parallelism, delay_ms, failure_action, monitor_ms, max_failure_ratio, order }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(text: &str) -> Project {
        crate::plan::tests::project_in("/p/blog", text)
    }

    #[test]
    fn swarm_defaults_for_a_service_without_deploy() {
        let s = stack(&project("services:\n  web:\n    image: nginx\n")).unwrap();
        let swarm_rollout = Rollout {
            parallelism: 1,
            delay_ms: 0,
            failure_action: FailureAction::Pause,
            monitor_ms: 5000,
            max_failure_ratio: 0.0,
            order: Order::StopFirst,
        };
        let expected = DeploySpec {
            mode: Mode::Replicated,
            replicas: 1,
            constraints: vec![],
            spread: vec![],
            max_replicas_per_node: None,
            reservations: Resources::default(),
            limits: Resources::default(),
            restart_policy: RestartPolicy { condition: RestartCondition::Any, delay_ms: 5000, max_attempts: 0, window_ms: 0 },
            update_config: swarm_rollout.clone(),
            rollback_config: swarm_rollout,
            labels: BTreeMap::new(),
        };
        assert_eq!(s.services["web"], expected);
        assert!(s.ignored.is_empty());
    }

    #[test]
    fn every_deploy_key_is_read() {
        let s = stack(&project(
            r#"
services:
  web:
    image: ghost
    container_name: blog
    restart: always
    deploy:
      replicas: 3
      labels: [tier=front, owner=alice]
      placement:
        constraints: [node.role == manager, "node.labels.disk==ssd"]
        preferences: [{spread: node.labels.zone}]
        max_replicas_per_node: 1
      resources:
        limits: {cpus: "1.5", memory: 512M}
        reservations: {cpus: "0.25", memory: 128M}
      restart_policy: {condition: on-failure, delay: 2s, max_attempts: 3, window: 1m}
      update_config: {parallelism: 2, delay: 10s, failure_action: rollback, monitor: 30s, max_failure_ratio: 0.5, order: start-first}
      rollback_config: {parallelism: 0, failure_action: continue}
  agent:
    image: agent
    deploy: {mode: global}
"#,
        ))
        .unwrap();
        let web = &s.services["web"];
        assert_eq!((web.mode, web.replicas, web.max_replicas_per_node), (Mode::Replicated, 3, Some(1)));
        assert_eq!(web.constraints, ["node.role == manager", "node.labels.disk==ssd"]);
        assert_eq!(web.spread, ["node.labels.zone"]);
        assert_eq!(web.limits, Resources { cpus_milli: Some(1500), memory: Some(512 << 20) });
        assert_eq!(web.reservations, Resources { cpus_milli: Some(250), memory: Some(128 << 20) });
        assert_eq!(
            web.restart_policy,
            RestartPolicy { condition: RestartCondition::OnFailure, delay_ms: 2000, max_attempts: 3, window_ms: 60_000 }
        );
        let u = &web.update_config;
        assert_eq!(
            (u.parallelism, u.delay_ms, u.failure_action, u.monitor_ms, u.max_failure_ratio, u.order),
            (2, 10_000, FailureAction::Rollback, 30_000, 0.5, Order::StartFirst)
        );
        assert_eq!((web.rollback_config.parallelism, web.rollback_config.failure_action), (0, FailureAction::Continue));
        assert_eq!(web.labels, BTreeMap::from([("owner".into(), "alice".into()), ("tier".into(), "front".into())]));
        assert_eq!(s.services["agent"].mode, Mode::Global);
        assert_eq!(s.ignored, ["container_name", "restart"], "as `docker stack deploy` says: Ignoring unsupported options");
    }

    /// Every problem of every service at once, each naming its service and key.
    #[test]
    fn a_file_that_cannot_be_a_stack_says_every_problem() {
        let e = stack(&project(
            r#"
services:
  a:
    image: x
    deploy: {mode: global, replicas: 2}
  b:
    image: x
    deploy:
      mode: replicated-job
      resources: {limits: {memory: 64M}, reservations: {memory: 1G, cpus: lots}}
  c:
    image: x
    deploy:
      restart_policy: {condition: sometimes, delay: soon}
      update_config: {max_failure_ratio: 2}
      rollback_config: {failure_action: rollback}
"#,
        ))
        .unwrap_err();
        expect_test::expect![[r#"
            the stack cannot be deployed:
              service "a": deploy.replicas can only be used with mode replicated: a global service runs one replica on every eligible node
              service "b": deploy.mode replicated-job (jobs that run to completion) is not supported yet: use replicated or global
              service "b": deploy.resources.reservations.cpus: invalid CPU count "lots": use a positive number such as 0.5 or 2
              service "b": deploy.resources.reservations.memory is more than its limit: a replica could never get what it reserves
              service "c": deploy.restart_policy.condition "sometimes": use none, on-failure or any
              service "c": deploy.restart_policy.delay: invalid duration "soon": use a number with a unit, e.g. 30s, 1m30s, 500ms, 2h
              service "c": deploy.update_config.max_failure_ratio must be a number from 0 to 1
              service "c": deploy.rollback_config.failure_action "rollback": use pause or continue"#]]
        .assert_eq(&e.to_string());
    }
}
