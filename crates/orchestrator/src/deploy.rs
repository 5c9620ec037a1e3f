//! `atoll stack deploy`, `stack rm`, `service scale` and `node drain` as writes to the
//! replicated state. As `docker stack deploy`, the CLI turns the compose files into service
//! specs (same loader, same errors as `atoll compose`); here they are checked as a whole, placed
//! in a dry run (a file that cannot be placed is refused with the reason per service), and
//! written in one transaction: the stack and all of its services, or nothing.
//!
//! A service's `generation` moves on only when what a replica runs changes (its container spec
//! or its reservations): deploying the same file again changes nothing, and scaling changes
//! only the replica count.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::Ipv4Net;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use atoll_island::model::IslandState;
use atoll_sched::Constraint;
use atoll_spec::{ContainerSpec, NetworkSpec};
use atoll_state::desired::{self, Kind, Mode, Resources, Service, Stack, UpdateConfig};
use atoll_state::{Expect, Request};

use crate::records::Records;

/// Most replicas a service may ask for.
pub const MAX_REPLICAS: u32 = 1000;

/// A stack to deploy: the body of `POST /v1/stacks/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StackDeploy {
    /// The compose files merged and interpolated (what `compose config` prints), kept with
    /// the stack.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub compose: Value,
    #[schema(min_items = 1)]
    pub services: Vec<ServiceDeploy>,
    /// The networks its services join (full names, `<stack>_<network>`).
    #[serde(default)]
    pub networks: Vec<NetworkSpec>,
    /// Its named volumes (full names).
    #[serde(default)]
    pub volumes: Vec<String>,
}

/// One service of a stack to deploy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceDeploy {
    /// Its name in the compose file (`web`; the island calls it `<stack>_web`).
    #[schema(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")]
    pub name: String,
    /// `replicated` or `global`.
    #[schema(value_type = String, pattern = "^(replicated|global)$")]
    pub mode: Mode,
    /// For `replicated`.
    #[serde(default)]
    #[schema(maximum = 1000)]
    pub replicas: u32,
    /// What each replica runs.
    pub spec: ContainerSpec,
    /// `deploy.placement.constraints`: `node.hostname`, `node.id`, `node.role`,
    /// `node.labels.<name>`, `node.platform.os` or `node.platform.arch`, `==` or `!=`, a value.
    #[serde(default)]
    #[schema(inline, value_type = Vec<String>)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub max_replicas_per_node: Option<u32>,
    /// `deploy.resources.reservations.cpus`, in billionths of a CPU.
    #[serde(default)]
    pub reserve_nano_cpus: u64,
    /// `deploy.resources.reservations.memory`, in bytes.
    #[serde(default)]
    pub reserve_memory_bytes: u64,
    /// `deploy.labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `deploy.update_config`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub update_config: UpdateConfig,
}

/// What a deploy did to each service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeployReport {
    pub stack: String,
    pub generation: u64,
    /// `<stack>_<service>` → `created`, `updated`, `scaled`, `unchanged` or `removed`.
    pub services: BTreeMap<String, String>,
}

/// Why a stack request was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the stack cannot be deployed:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
    #[error("the stack cannot be placed on this island (nothing was changed):\n  {}", .0.join("\n  "))]
    Unplaceable(Vec<String>),
    #[error("no such stack: {name} ({})", known_list(.known))]
    NoSuchStack { name: String, known: Vec<String> },
    #[error("no such service: {name} ({})", known_list(.known))]
    NoSuchService { name: String, known: Vec<String> },
    #[error("{0} is a global service: it runs one replica on every node that may run it, and cannot be scaled")]
    Global(String),
    #[error("{service}: {replicas} replicas; at most {MAX_REPLICAS}")]
    TooManyReplicas { service: String, replicas: u32 },
    #[error("the island's state changed under this request {0} times in a row: try again")]
    Busy(u32),
    #[error("the island refused the write: {0}")]
    Refused(String),
    #[error(transparent)]
    Island(#[from] atoll_island::IslandError),
    #[error(transparent)]
    Decode(#[from] desired::DecodeError),
}

fn known_list(known: &[String]) -> String {
    atoll_util::known_list(known, "there are none")
}

impl DeployError {
    /// The error's kind, for the API's status.
    pub fn kind(&self) -> atoll_util::ErrorKind {
        use atoll_util::ErrorKind as K;
        match self {
            DeployError::Invalid(_) | DeployError::Global(_) | DeployError::TooManyReplicas { .. } => K::Invalid,
            DeployError::Unplaceable(_) | DeployError::Busy(_) | DeployError::Refused(_) => K::Conflict,
            DeployError::NoSuchStack { .. } | DeployError::NoSuchService { .. } => K::NotFound,
            DeployError::Island(e) => e.kind(),
            DeployError::Decode(_) => K::Internal,
        }
    }
}

/// Whether `name` may name a stack: as a compose project name, `[a-z0-9][a-z0-9_-]*`, at most
/// 63 characters (its services are `<stack>_<service>`).
pub fn valid_stack_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

fn valid_service_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Checks `req` as a whole: every problem, one per line, `service "web": problem`.
pub fn check(stack: &str, req: &StackDeploy) -> Result<(), DeployError> {
    let mut problems = Vec::new();
    if !valid_stack_name(stack) {
        problems.push(format!(
            "{stack:?} is not a stack name: use 1 to 63 of lowercase letters, digits, '_' and '-', starting with a letter or digit"
        ));
    }
    if req.services.is_empty() {
        problems.push("the files define no service".into());
    }
    let mut seen = BTreeSet::new();
    for s in &req.services {
        let mut say = |m: String| problems.push(format!("service {:?}: {m}", s.name));
        if !valid_service_name(&s.name) {
            say("not a service name: use letters, digits, '_', '.' and '-'".into());
        }
        if !seen.insert(s.name.to_ascii_lowercase()) {
            say("defined twice (service names do not differ by case alone)".into());
        }
        if let Err(e) = s.spec.validate() {
            say(e.to_string());
        }
        if let Err(e) = Constraint::parse_all(&s.constraints) {
            say(e.to_string());
        }
        if s.replicas > MAX_REPLICAS {
            say(format!("deploy.replicas is {}; at most {MAX_REPLICAS}", s.replicas));
        }
        if s.mode == Mode::Global && s.max_replicas_per_node.is_some() {
            say("deploy.placement.max_replicas_per_node can only be used with mode replicated".into());
        }
        if s.mode == Mode::Global && s.replicas > 0 {
            say("deploy.replicas can only be used with mode replicated: a global service runs one replica on every eligible node".into());
        }
        if s.name.contains('.') {
            // Replicas are `<service>.<slot>`: `a.1` would be replica 1 of `a`.
            say("a service of a stack cannot have '.' in its name (its replicas are named <service>.<slot>)".into());
        }
    }
    for n in &req.networks {
        if let Err(e) = n.validate() {
            problems.push(format!("network {:?}: {e}", n.name));
        }
        // Each member takes its own /26 of the network's prefix in the island's stack pool.
        if !n.subnets.is_empty() {
            problems.push(format!(
                "network {:?}: a stack network's subnets come from the island's stack pool (a /26 on each member): remove its ipam subnets",
                n.name
            ));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(DeployError::Invalid(problems)) }
}

/// The service record `s` of `stack` becomes, given the record it replaces (its generation
/// moves on when what a replica runs changed).
fn service_record(stack: &str, s: &ServiceDeploy, old: Option<&Service>) -> Service {
    let mut spec = s.spec.clone();
    // Each replica gets its own name on its member.
    spec.name = None;
    let spec = serde_json::to_value(&spec).expect("a spec serialises");
    let reservations = Resources { nano_cpus: s.reserve_nano_cpus, memory_bytes: s.reserve_memory_bytes };
    let generation = match old {
        Some(o) if o.spec == spec && o.reservations == reservations => o.generation,
        Some(o) => o.generation + 1,
        None => 1,
    };
    Service {
        stack: stack.to_owned(),
        name: s.name.clone(),
        mode: s.mode,
        replicas: if s.mode == Mode::Global { 0 } else { s.replicas },
        spec,
        constraints: s.constraints.clone(),
        max_replicas_per_node: s.max_replicas_per_node,
        labels: s.labels.clone(),
        generation,
        reservations,
        update_config: s.update_config.clone(),
        pinned: s.spec.mounts.iter().any(|m| m.kind == atoll_spec::MountKind::Volume && !m.source.is_empty()),
        previous: match old {
            Some(o) if o.generation != generation => Some(desired::PreviousSpec { spec: o.spec.clone(), reservations: o.reservations }),
            Some(o) => o.previous.clone(),
            None => None,
        },
        update_status: old.filter(|o| o.generation == generation).and_then(|o| o.update_status.clone()),
        extra: old.map(|o| o.extra.clone()).unwrap_or_default(),
    }
}

fn expect(version: Option<u64>) -> Expect {
    version.map_or(Expect::Absent, Expect::Version)
}

/// The transaction that deploys `req` as stack `name` over `records`, after a dry run of the
/// placement on `island`'s members; and what it does to each service.
pub fn plan_deploy(name: &str, req: &StackDeploy, records: &Records, island: &IslandState) -> Result<(Request, DeployReport), DeployError> {
    check(name, req)?;
    let old_stack = records.stack(name);
    let mut ops = Vec::new();
    let mut report = BTreeMap::new();
    let mut new_services = Vec::new();
    for s in &req.services {
        let full = format!("{name}_{}", s.name);
        let old = records.service(&full).filter(|(o, _)| o.stack == name);
        let record = service_record(name, s, old.map(|(o, _)| o));
        let what = match old {
            None => "created",
            Some((o, _)) if *o == record => "unchanged",
            Some((o, _)) if o.generation == record.generation => "scaled",
            Some(_) => "updated",
        };
        report.insert(full, what.to_owned());
        if what != "unchanged" {
            ops.push(desired::put(&record, expect(old.map(|(_, v)| *v))));
        }
        new_services.push(record);
    }
    // `a` + `b_c` and `a_b` + `c` are both `a_b_c`: a name belongs to one stack.
    let taken: Vec<String> = req
        .services
        .iter()
        .filter_map(|s| {
            let full = format!("{name}_{}", s.name);
            records
                .service(&full)
                .filter(|(o, _)| o.stack != name)
                .map(|(o, _)| format!("service {:?}: {full} is already a service of stack {}", s.name, o.stack))
        })
        .collect();
    if !taken.is_empty() {
        return Err(DeployError::Invalid(taken));
    }
    for (old, version) in records.services_of(name) {
        if !req.services.iter().any(|s| s.name == old.name) {
            report.insert(Kind::name(old), "removed".into());
            ops.push(desired::delete::<Service>(&Kind::name(old), Expect::Version(*version)));
        }
    }

    // The dry run: every service of the island as it would be, placed from what runs now.
    let changed: BTreeSet<String> =
        report.iter().filter(|(_, w)| matches!(w.as_str(), "created" | "updated" | "scaled")).map(|(n, _)| n.clone()).collect();
    let mut services: Vec<Service> = records.services_only().into_iter().filter(|s| s.stack != name).collect();
    services.extend(new_services);
    let plan = atoll_sched::plan(&services, &records.allocations_only(), &records.nodes(island));
    let unplaceable: Vec<String> =
        plan.pending.iter().filter(|p| changed.contains(&p.service)).map(|p| format!("service {:?}: {}", p.service, p.reason)).collect();
    if !unplaceable.is_empty() {
        return Err(DeployError::Unplaceable(unplaceable));
    }

    let networks = overlay_prefixes(name, &req.networks, records, island.island.stack_pool)?;
    let networks: Vec<Value> = networks.iter().map(|n| serde_json::to_value(n).expect("a spec serialises")).collect();
    let mut stack = Stack {
        name: name.to_owned(),
        compose: req.compose.clone(),
        generation: old_stack.map_or(1, |(s, _)| s.generation),
        networks,
        volumes: req.volumes.clone(),
        extra: old_stack.map(|(s, _)| s.extra.clone()).unwrap_or_default(),
    };
    let stack_changed =
        old_stack.is_none_or(|(s, _)| s.compose != stack.compose || s.networks != stack.networks || s.volumes != stack.volumes);
    if stack_changed || !ops.is_empty() {
        stack.generation += u64::from(old_stack.is_some());
        ops.insert(0, desired::put(&stack, expect(old_stack.map(|(_, v)| *v))));
    }
    Ok((Request::Txn { ops }, DeployReport { stack: name.to_owned(), generation: stack.generation, services: report }))
}

/// The stack's networks, each with its island-wide prefix (a /19 of the stack pool) in
/// `subnets`: the one it had, or a free one. The search starts at a place given by the
/// network's name, so that two stacks deployed at once hardly ever pick the same.
fn overlay_prefixes(stack: &str, networks: &[NetworkSpec], records: &Records, pool: Ipv4Net) -> Result<Vec<NetworkSpec>, DeployError> {
    let prefix = |n: &NetworkSpec| n.subnets.first().and_then(|s| s.parse::<Ipv4Net>().ok());
    let spec = |v: &Value| serde_json::from_value::<NetworkSpec>(v.clone()).ok();
    let mine: BTreeMap<String, Ipv4Net> = records
        .stack(stack)
        .into_iter()
        .flat_map(|(s, _)| s.networks.iter().filter_map(spec))
        .filter_map(|n| Some((n.name.clone(), prefix(&n)?)))
        .collect();
    let mut used: BTreeSet<Ipv4Net> =
        records.stacks.iter().flat_map(|(s, _)| s.networks.iter().filter_map(spec)).filter_map(|n| prefix(&n)).collect();
    let candidates: Vec<Ipv4Net> = pool.subnets(atoll_island::model::STACK_NETWORK_PREFIX).map(Iterator::collect).unwrap_or_default();
    let mut out = Vec::new();
    for n in networks {
        let chosen = match mine.get(&n.name) {
            Some(p) => *p,
            None => {
                let start = {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::hash::DefaultHasher::new();
                    n.name.hash(&mut h);
                    h.finish() as usize % candidates.len().max(1)
                };
                let free = (0..candidates.len()).map(|i| candidates[(start + i) % candidates.len()]).find(|c| !used.contains(c));
                free.ok_or_else(|| {
                    DeployError::Invalid(vec![format!(
                        "network {:?}: the island's stack pool {pool} has no /{} left: remove stacks you no longer need",
                        n.name,
                        atoll_island::model::STACK_NETWORK_PREFIX
                    )])
                })?
            }
        };
        used.insert(chosen);
        out.push(NetworkSpec { subnets: vec![chosen.to_string()], ..n.clone() });
    }
    Ok(out)
}

/// The transaction that removes stack `name` and its services (their replicas stop on every
/// member as the reconciler marks them).
pub fn plan_remove(name: &str, records: &Records) -> Result<Request, DeployError> {
    let (_, version) = records.existing_stack(name)?;
    let mut ops = vec![desired::delete::<Stack>(name, Expect::Version(*version))];
    ops.extend(records.services_of(name).map(|(s, v)| desired::delete::<Service>(&Kind::name(s), Expect::Version(*v))));
    Ok(Request::Txn { ops })
}

/// The write that sets service `full_name`'s replicas to `replicas`.
pub fn plan_scale(full_name: &str, replicas: u32, records: &Records) -> Result<Request, DeployError> {
    let (s, version) = records.existing_service(full_name)?;
    if s.mode == Mode::Global {
        return Err(DeployError::Global(full_name.to_owned()));
    }
    if replicas > MAX_REPLICAS {
        return Err(DeployError::TooManyReplicas { service: full_name.to_owned(), replicas });
    }
    let mut s = s.clone();
    s.replicas = replicas;
    Ok(desired::put(&s, Expect::Version(*version)))
}

#[cfg(test)]
mod tests;
