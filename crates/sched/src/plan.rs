//! Placement as one pure function: [`plan`] takes the services (at their generation), the
//! allocations and the members, and returns what to change, as Swarm's orchestrator and
//! scheduler do between them:
//!
//! 1. **Keep.** A running allocation stays where it is (no churn) unless its service is gone,
//!    its slot is past `replicas` (scale down removes the highest slots), its member is down,
//!    drained or gone, the member no longer satisfies the constraints (a label changed), its
//!    member holds more of the service than `max_replicas_per_node`, its member is over capacity
//!    (the highest slots go), or another allocation already runs its slot. Each of those is a
//!    [`Action::Stop`] of that allocation at its generation: the record stays, desired
//!    `shutdown`, so a member that was away stops it when it returns ("a host never runs a
//!    replica the leader has moved"). A kept allocation at an older generation gets an
//!    [`Action::Update`] in place.
//! 2. **Place**, service by service in name order, each missing replica (the lowest free slot
//!    first; for `mode: global`, every up member satisfying the constraints that has none):
//!    constraints first, then resources (the service's reservations must fit what the
//!    member's capacity leaves after what runs there), then spread: the member with the fewest
//!    replicas of this service, then the fewest allocations in all, then the lowest id. A
//!    replica that fits nowhere is [`Pending`] with the reason, never dropped.
//!
//! Applying the actions ([`apply`]) and planning again gives no actions: a plan is its own
//! fixed point. Rolling updates (`update_config`) fit on top without changing this function:
//! the plan lists every change at once; the reconciler carries out the stops and starts that
//! move a slot (a `Stop` and a `Start` of the same service and slot) and the `Update`s
//! `parallelism` at a time, `delay` apart, waiting for the previous batch to run (stop-first:
//! the stop, then the start; start-first: the reverse, the resources of both reserved), and
//! plans again after each batch, so a change mid-rollout is planned from what is.
//!
//! An allocation is named by its service, slot and member ([`AllocRef`]): a moved slot's old
//! record (desired `shutdown`, on the member that was down) and its new one (running
//! elsewhere) are two records, at most one of them running.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::constraint::{self, Constraint, ConstraintError};
use crate::{Allocation, Desired, Mode, Node, NodeState, Resources, Service};

/// One allocation: a slot of a service on a member, at a generation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllocRef {
    /// `<stack>_<service>`.
    pub service: String,
    /// `1`, `2`… for replicated services, the member's id for global ones.
    pub slot: String,
    /// The member's id.
    pub node: String,
    pub generation: u64,
}

/// A change to the allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Put the allocation, desired running, holding `reservations` on its member (replacing a
    /// stopped record of the same service, slot and member, if there is one).
    Start { alloc: AllocRef, reservations: Resources },
    /// Mark the running allocation desired `shutdown`, at the generation it runs.
    Stop { alloc: AllocRef, reason: StopReason },
    /// Move the running allocation from generation `from` to `alloc.generation` where it is:
    /// its member replaces the container.
    Update { alloc: AllocRef, from: u64, reservations: Resources },
}

/// Why an allocation stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopReason {
    /// Its service was removed (`stack rm`, or a deploy without it).
    ServiceRemoved,
    /// Its slot is past `replicas`.
    ScaledDown,
    /// Its slot is not one its service has (`mode` changed, or a global slot on another member).
    NotASlot,
    /// Its member missed its heartbeats.
    NodeDown,
    /// Its member is drained.
    NodeDrained,
    /// Its member left the island.
    NodeGone,
    /// Its member no longer satisfies the service's constraints.
    ConstraintsChanged,
    /// Its member holds more of the service than `max_replicas_per_node`.
    MaxPerNode,
    /// Its member's capacity no longer holds everything placed there.
    OverCapacity,
    /// Another allocation runs the same slot.
    Duplicate,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::ServiceRemoved => "its service was removed",
            StopReason::ScaledDown => "scaled down",
            StopReason::NotASlot => "the service no longer has this slot",
            StopReason::NodeDown => "its node is down",
            StopReason::NodeDrained => "its node is drained",
            StopReason::NodeGone => "its node left the island",
            StopReason::ConstraintsChanged => "its node no longer satisfies the placement constraints",
            StopReason::MaxPerNode => "more replicas on its node than max_replicas_per_node",
            StopReason::OverCapacity => "its node's capacity no longer holds it",
            StopReason::Duplicate => "another allocation runs this slot",
        })
    }
}

/// Replicas of a service that could not be placed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub service: String,
    /// How many replicas are not running. 0 for a global service no member may run: it has
    /// nothing to place, and says why it runs nowhere.
    pub missing: u32,
    pub reason: Unplaceable,
}

/// Why a replica fits nowhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unplaceable {
    #[error(transparent)]
    InvalidConstraint(ConstraintError),
    #[error("no node takes work ({down} down, {drained} drained)")]
    NoNodeUp { down: usize, drained: usize },
    #[error("no node that takes work satisfies the constraint `{constraint}`")]
    Constraint { constraint: String },
    #[error("no node that takes work satisfies all of the constraints {}", list(.constraints))]
    Constraints { constraints: Vec<String> },
    #[error("every node that satisfies the constraints and has room already runs {max} (max_replicas_per_node)")]
    MaxPerNode { max: u32 },
    #[error("{}", resources_message(.need, .most_free_memory, .most_free_cpus))]
    Resources {
        /// What one replica reserves.
        need: Resources,
        /// The most memory free on one node satisfying the constraints.
        most_free_memory: u64,
        /// The most CPU free on one node satisfying the constraints.
        most_free_cpus: u64,
    },
}

fn list(cs: &[String]) -> String {
    cs.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
}

fn resources_message(need: &Resources, mem: &u64, cpus: &u64) -> String {
    let (mem_short, cpu_short) = (need.memory_bytes > *mem, need.nano_cpus > *cpus);
    match (mem_short, cpu_short) {
        (true, false) => format!(
            "not enough memory: a replica reserves {}, the most free on a node that satisfies the constraints is {}",
            bytes(need.memory_bytes),
            bytes(*mem)
        ),
        (false, true) => format!(
            "not enough CPU: a replica reserves {} CPUs, the most free on a node that satisfies the constraints is {}",
            cpus_text(need.nano_cpus),
            cpus_text(*cpus)
        ),
        _ => format!(
            "no node that satisfies the constraints has {} CPUs and {} free together",
            cpus_text(need.nano_cpus),
            bytes(need.memory_bytes)
        ),
    }
}

/// Bytes as `512 MiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v.fract() == 0.0 { format!("{v} {}", UNITS[u]) } else { format!("{v:.1} {}", UNITS[u]) }
}

/// Nano-CPUs as compose writes them (`0.5`).
pub fn cpus_text(nano: u64) -> String {
    let s = format!("{:.3}", nano as f64 / 1e9);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// What to change, and what cannot be placed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Stops first, then updates, then starts, each in service and slot order.
    pub actions: Vec<Action>,
    /// By service name.
    pub pending: Vec<Pending>,
}

fn fits(need: Resources, used: Resources, cap: Resources) -> bool {
    used.nano_cpus.saturating_add(need.nano_cpus) <= cap.nano_cpus
        && used.memory_bytes.saturating_add(need.memory_bytes) <= cap.memory_bytes
}

fn add(a: &mut Resources, b: Resources) {
    a.nano_cpus = a.nano_cpus.saturating_add(b.nano_cpus);
    a.memory_bytes = a.memory_bytes.saturating_add(b.memory_bytes);
}

fn free(used: Resources, cap: Resources) -> Resources {
    Resources { nano_cpus: cap.nano_cpus.saturating_sub(used.nano_cpus), memory_bytes: cap.memory_bytes.saturating_sub(used.memory_bytes) }
}

/// A replicated service's slot number, if `slot` is one (`1`, `2`…).
pub fn slot_number(slot: &str) -> Option<u32> {
    slot.parse::<u32>().ok().filter(|n| *n >= 1 && n.to_string() == slot)
}

/// A service short of replicas.
struct Short<'a> {
    name: &'a String,
    svc: &'a Service,
    cs: &'a [Constraint],
    missing: u32,
    /// The members that could have taken one (up, satisfying the constraints).
    could: Vec<usize>,
    /// Those of them at `max_replicas_per_node`.
    full: Vec<usize>,
}

/// An allocation kept where it is.
struct Kept<'a> {
    alloc: &'a Allocation,
    node: usize,
    /// What it holds once updated.
    res: Resources,
}

/// The plan that converges `allocations` to `services` on `nodes` (see the module's doc).
pub fn plan(services: &[Service], allocations: &[Allocation], nodes: &[Node]) -> Plan {
    let node_at: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
    let mut svcs: BTreeMap<String, (&Service, Result<Vec<Constraint>, ConstraintError>)> = BTreeMap::new();
    for s in services {
        svcs.insert(crate::service_name(s), (s, Constraint::parse_all(&s.constraints)));
    }
    let mut running: BTreeMap<&str, Vec<&Allocation>> = BTreeMap::new();
    for a in allocations.iter().filter(|a| a.desired == Desired::Running) {
        running.entry(a.service.as_str()).or_default().push(a);
    }

    let mut stops: Vec<(AllocRef, StopReason)> = Vec::new();
    let stop = |stops: &mut Vec<_>, a: &Allocation, reason| stops.push((alloc_ref(a), reason));
    let mut kept: BTreeMap<&str, Vec<Kept>> = BTreeMap::new();

    // 1. keep what may stay
    for (name, mut allocs) in running {
        let Some((svc, cs)) = svcs.get(name) else {
            allocs.iter().for_each(|a| stop(&mut stops, a, StopReason::ServiceRemoved));
            continue;
        };
        // a service whose constraints do not parse (a deploy refuses them) keeps what it has
        // where it may still run, and gets nothing new
        let cs: &[Constraint] = cs.as_deref().unwrap_or_default();
        // by slot, the service's generation before others, then by member: the first of a
        // slot that may stay is the one kept
        allocs.sort_by(|a, b| {
            (slot_number(&a.slot), &a.slot, a.generation != svc.generation, &a.node).cmp(&(
                slot_number(&b.slot),
                &b.slot,
                b.generation != svc.generation,
                &b.node,
            ))
        });
        let mut mine: Vec<Kept> = Vec::new();
        for a in allocs {
            let at = node_at.get(a.node.as_str()).copied();
            let reason = match at.map(|i| &nodes[i]) {
                None => Some(StopReason::NodeGone),
                // Unless its named volumes are there: then it waits for its member (and is
                // judged by everything else as if the member were up).
                Some(n) if n.state == NodeState::Down && !svc.pinned => Some(StopReason::NodeDown),
                Some(n) if n.state == NodeState::Drained => Some(StopReason::NodeDrained),
                Some(n) => match svc.mode {
                    Mode::Replicated => match slot_number(&a.slot) {
                        None => Some(StopReason::NotASlot),
                        Some(s) if s > svc.replicas => Some(StopReason::ScaledDown),
                        Some(_) if !constraint::all_match(cs, n) => Some(StopReason::ConstraintsChanged),
                        Some(_) => None,
                    },
                    Mode::Global if a.slot != a.node => Some(StopReason::NotASlot),
                    Mode::Global if !constraint::all_match(cs, n) => Some(StopReason::ConstraintsChanged),
                    Mode::Global => None,
                },
            };
            let reason = reason.or_else(|| mine.iter().any(|k| k.alloc.slot == a.slot).then_some(StopReason::Duplicate));
            match (reason, at) {
                (None, Some(node)) => {
                    let res = if a.generation == svc.generation { a.reservations } else { svc.reservations };
                    mine.push(Kept { alloc: a, node, res });
                }
                (reason, _) => stop(&mut stops, a, reason.unwrap_or(StopReason::NodeGone)),
            }
        }
        if let (Some(max), Mode::Replicated) = (svc.max_replicas_per_node, svc.mode) {
            // mine is in slot order: the lowest slots on each member stay
            let mut on: HashMap<usize, u32> = HashMap::new();
            mine.retain(|k| {
                let c = on.entry(k.node).or_default();
                *c += 1;
                let keep = *c <= max;
                if !keep {
                    stops.push((alloc_ref(k.alloc), StopReason::MaxPerNode));
                }
                keep
            });
        }
        kept.insert(name, mine);
    }

    // what each member holds, and members over capacity give up their highest slots
    let mut used = vec![Resources::default(); nodes.len()];
    let mut tasks = vec![0u32; nodes.len()];
    let mut on_node: Vec<Vec<(&str, usize)>> = vec![Vec::new(); nodes.len()];
    for (name, ks) in &kept {
        for (i, k) in ks.iter().enumerate() {
            add(&mut used[k.node], k.res);
            tasks[k.node] += 1;
            on_node[k.node].push((name, i));
        }
    }
    let mut dropped: Vec<(&str, usize)> = Vec::new();
    for (n, held) in on_node.iter_mut().enumerate() {
        held.sort_by_key(|(name, i)| (slot_number(&kept[name][*i].alloc.slot), *name, *i));
        while !fits(Resources::default(), used[n], nodes[n].capacity) {
            let Some((name, i)) = held.pop() else { break };
            let k = &kept[name][i];
            used[n] = free(k.res, used[n]); // what it held, taken off
            tasks[n] -= 1;
            stops.push((alloc_ref(k.alloc), StopReason::OverCapacity));
            dropped.push((name, i));
        }
    }
    dropped.sort_unstable_by(|a, b| b.cmp(a));
    for (name, i) in dropped {
        kept.get_mut(name).expect("kept").remove(i);
    }

    let mut actions: Vec<Action> = Vec::new();
    stops.sort();
    actions.extend(stops.into_iter().map(|(alloc, reason)| Action::Stop { alloc, reason }));
    for (name, ks) in &kept {
        let Some((svc, _)) = svcs.get(*name) else { continue };
        for k in ks.iter().filter(|k| k.alloc.generation != svc.generation) {
            let alloc = AllocRef { generation: svc.generation, ..alloc_ref(k.alloc) };
            actions.push(Action::Update { alloc, from: k.alloc.generation, reservations: svc.reservations });
        }
    }

    // 2. place what is missing
    let mut pending = Vec::new();
    // services short of replicas: the members that could have taken one, and those of them
    // at max_replicas_per_node; why is asked once everything is placed
    let mut short: Vec<Short> = Vec::new();
    for (name, (svc, cs)) in &svcs {
        let cs = match cs {
            Ok(cs) => cs,
            Err(e) => {
                let missing = match svc.mode {
                    Mode::Replicated => svc.replicas.saturating_sub(kept.get(name.as_str()).map_or(0, |k| k.len() as u32)),
                    Mode::Global => 0,
                };
                pending.push(Pending { service: name.clone(), missing, reason: Unplaceable::InvalidConstraint(e.clone()) });
                continue;
            }
        };
        let mine = kept.get(name.as_str()).map(Vec::as_slice).unwrap_or_default();
        let eligible: Vec<usize> =
            (0..nodes.len()).filter(|&i| nodes[i].state == NodeState::Up && constraint::all_match(cs, &nodes[i])).collect();
        let mut count: HashMap<usize, u32> = HashMap::new();
        for k in mine {
            *count.entry(k.node).or_default() += 1;
        }
        let need = svc.reservations;
        let start = |actions: &mut Vec<Action>, slot: String, n: usize| {
            let alloc = AllocRef { service: name.clone(), slot, node: nodes[n].id.clone(), generation: svc.generation };
            actions.push(Action::Start { alloc, reservations: need });
        };
        match svc.mode {
            Mode::Replicated => {
                let max = svc.max_replicas_per_node.unwrap_or(u32::MAX);
                let taken: std::collections::HashSet<&str> = mine.iter().map(|k| k.alloc.slot.as_str()).collect();
                let mut missing = 0;
                for slot in (1..=svc.replicas).map(|s| s.to_string()).filter(|s| !taken.contains(s.as_str())) {
                    if missing > 0 {
                        // room only shrinks: once one fails, the rest do
                        missing += 1;
                        continue;
                    }
                    let best = eligible
                        .iter()
                        .copied()
                        .filter(|&n| count.get(&n).copied().unwrap_or(0) < max && fits(need, used[n], nodes[n].capacity))
                        .min_by(|&a, &b| {
                            (count.get(&a).copied().unwrap_or(0), tasks[a], &nodes[a].id).cmp(&(
                                count.get(&b).copied().unwrap_or(0),
                                tasks[b],
                                &nodes[b].id,
                            ))
                        });
                    match best {
                        Some(n) => {
                            add(&mut used[n], need);
                            tasks[n] += 1;
                            *count.entry(n).or_default() += 1;
                            start(&mut actions, slot, n);
                        }
                        None => missing += 1,
                    }
                }
                if missing > 0 {
                    let full: Vec<usize> = eligible.iter().copied().filter(|n| count.get(n).copied().unwrap_or(0) >= max).collect();
                    short.push(Short { name, svc, cs, missing, could: eligible, full });
                }
            }
            Mode::Global => {
                let mut lacking = Vec::new();
                let mut ids: Vec<usize> = eligible.iter().copied().filter(|n| !count.contains_key(n)).collect();
                ids.sort_by(|&a, &b| nodes[a].id.cmp(&nodes[b].id));
                for n in ids {
                    if fits(need, used[n], nodes[n].capacity) {
                        add(&mut used[n], need);
                        tasks[n] += 1;
                        start(&mut actions, nodes[n].id.clone(), n);
                    } else {
                        lacking.push(n);
                    }
                }
                if eligible.is_empty() || !lacking.is_empty() {
                    short.push(Short { name, svc, cs, missing: lacking.len() as u32, could: lacking, full: Vec::new() });
                }
            }
        }
    }
    for Short { name, svc, cs, missing, could, full } in short {
        let reason = why(svc, cs, nodes, &could, &used, |n| !full.contains(&n));
        pending.push(Pending { service: name.clone(), missing, reason });
    }
    pending.sort_by(|a, b| a.service.cmp(&b.service));
    Plan { actions, pending }
}

/// Why no node in `eligible` (the up members satisfying `cs`) takes a replica of `svc`:
/// `under_max` says whether a member holds fewer than `max_replicas_per_node`.
fn why(
    svc: &Service,
    cs: &[Constraint],
    nodes: &[Node],
    eligible: &[usize],
    used: &[Resources],
    under_max: impl Fn(usize) -> bool,
) -> Unplaceable {
    let up: Vec<&Node> = nodes.iter().filter(|n| n.state == NodeState::Up).collect();
    if up.is_empty() {
        let count = |s| nodes.iter().filter(|n| n.state == s).count();
        return Unplaceable::NoNodeUp { down: count(NodeState::Down), drained: count(NodeState::Drained) };
    }
    if eligible.is_empty() {
        return match cs.iter().find(|c| !up.iter().any(|n| c.matches(n))) {
            Some(c) => Unplaceable::Constraint { constraint: c.text.clone() },
            None => Unplaceable::Constraints { constraints: cs.iter().map(|c| c.text.clone()).collect() },
        };
    }
    if eligible.iter().any(|&n| fits(svc.reservations, used[n], nodes[n].capacity)) && !eligible.iter().any(|&n| under_max(n)) {
        return Unplaceable::MaxPerNode { max: svc.max_replicas_per_node.unwrap_or(u32::MAX) };
    }
    let most = |f: fn(&Resources) -> u64| eligible.iter().map(|&n| f(&free(used[n], nodes[n].capacity))).max().unwrap_or(0);
    Unplaceable::Resources { need: svc.reservations, most_free_memory: most(|r| r.memory_bytes), most_free_cpus: most(|r| r.nano_cpus) }
}

fn alloc_ref(a: &Allocation) -> AllocRef {
    AllocRef { service: a.service.clone(), slot: a.slot.clone(), node: a.node.clone(), generation: a.generation }
}

/// `allocations` with `plan`'s actions carried out, as the reconciler's writes would leave
/// the state: a `Start` puts a running record (over a stopped one of the same service, slot and
/// member), a `Stop` marks one `shutdown`, an `Update` moves one to its new generation.
pub fn apply(allocations: &mut Vec<Allocation>, plan: &Plan) {
    let key = |a: &Allocation| (a.service.clone(), a.slot.clone(), a.node.clone());
    let mut at: HashMap<(String, String, String), usize> = allocations.iter().enumerate().map(|(i, a)| (key(a), i)).collect();
    for action in &plan.actions {
        let (r, desired, res) = match action {
            Action::Start { alloc, reservations } => (alloc, Desired::Running, Some(*reservations)),
            Action::Stop { alloc, .. } => (alloc, Desired::Shutdown, None),
            Action::Update { alloc, reservations, .. } => (alloc, Desired::Running, Some(*reservations)),
        };
        let k = (r.service.clone(), r.slot.clone(), r.node.clone());
        match at.get(&k) {
            Some(&i) => {
                let a = &mut allocations[i];
                a.desired = desired;
                if let Some(res) = res {
                    a.generation = r.generation;
                    a.reservations = res;
                }
            }
            None => {
                at.insert(k, allocations.len());
                allocations.push(Allocation {
                    service: r.service.clone(),
                    slot: r.slot.clone(),
                    node: r.node.clone(),
                    desired,
                    generation: r.generation,
                    reservations: res.unwrap_or_default(),
                    extra: Default::default(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
