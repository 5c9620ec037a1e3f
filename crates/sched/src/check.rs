//! The invariants a plan's result keeps, as functions returning what is wrong (empty when
//! everything holds): the property tests and the simulation here use them, and the island's
//! simulation of scheduling can use them on its replicated state.
//!
//! A service whose constraints do not parse is checked for everything but its constraints,
//! and left out of what could be placed (nothing is placed for it).

use std::collections::{BTreeMap, HashMap};

use crate::constraint::{self, Constraint};
use crate::plan::slot_number;
use crate::{Allocation, Desired, Mode, Node, NodeState, Resources, Service, service_name};

struct Svc<'a> {
    svc: &'a Service,
    /// None when they do not parse.
    cs: Option<Vec<Constraint>>,
}

fn services(services: &[Service]) -> BTreeMap<String, Svc<'_>> {
    services.iter().map(|s| (service_name(s), Svc { svc: s, cs: Constraint::parse_all(&s.constraints).ok() })).collect()
}

/// The services whose constraints parse, with them.
fn placeable(svcs: &[Service]) -> impl Iterator<Item = (String, &Service, Vec<Constraint>)> {
    services(svcs).into_iter().filter_map(|(name, s)| Some((name, s.svc, s.cs?)))
}

fn used_by_node(allocations: &[Allocation]) -> HashMap<&str, Resources> {
    let mut used: HashMap<&str, Resources> = HashMap::new();
    for a in allocations.iter().filter(|a| a.desired == Desired::Running) {
        let u = used.entry(a.node.as_str()).or_default();
        u.nano_cpus += a.reservations.nano_cpus;
        u.memory_bytes += a.reservations.memory_bytes;
    }
    used
}

fn room(need: Resources, used: Resources, cap: Resources) -> bool {
    used.nano_cpus + need.nano_cpus <= cap.nano_cpus && used.memory_bytes + need.memory_bytes <= cap.memory_bytes
}

/// What is wrong with the running allocations: two running copies of one slot; one on a
/// member that is not up, or gone, or does not satisfy its service's constraints; one of a
/// service that is gone, at another generation than its service's, on a slot its service
/// does not have, or past `max_replicas_per_node`; a member holding more than its capacity.
pub fn violations(svcs: &[Service], allocations: &[Allocation], nodes: &[Node]) -> Vec<String> {
    let svcs = services(svcs);
    let nodes: HashMap<&str, &Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut wrong = Vec::new();
    let mut slots: HashMap<(&str, &str), &str> = HashMap::new();
    let mut per_node: HashMap<(&str, &str), u32> = HashMap::new();
    for a in allocations.iter().filter(|a| a.desired == Desired::Running) {
        let me = format!("{}.{} on {} (generation {})", a.service, a.slot, a.node, a.generation);
        if let Some(other) = slots.insert((&a.service, &a.slot), &a.node) {
            wrong.push(format!("{me} runs the slot also running on {other}"));
        }
        let Some(n) = nodes.get(a.node.as_str()) else {
            wrong.push(format!("{me} is on a node that is gone"));
            continue;
        };
        let waits = n.state == NodeState::Down && svcs.get(&a.service).is_some_and(|s| s.svc.pinned);
        if n.state != NodeState::Up && !waits {
            wrong.push(format!("{me} is on a node that is {:?}", n.state));
        }
        let Some(s) = svcs.get(&a.service) else {
            wrong.push(format!("{me} is of a service that is gone"));
            continue;
        };
        if s.cs.as_ref().is_some_and(|cs| !constraint::all_match(cs, n)) {
            wrong.push(format!("{me} is on a node that does not satisfy {:?}", s.svc.constraints));
        }
        if a.generation != s.svc.generation {
            wrong.push(format!("{me} is not at its service's generation {}", s.svc.generation));
        }
        let slot_ok = match s.svc.mode {
            Mode::Replicated => slot_number(&a.slot).is_some_and(|n| n <= s.svc.replicas),
            Mode::Global => a.slot == a.node,
        };
        if !slot_ok {
            wrong.push(format!("{me} is on a slot its service does not have"));
        }
        let c = per_node.entry((&a.service, &a.node)).or_default();
        *c += 1;
        if s.svc.mode == Mode::Replicated && s.svc.max_replicas_per_node.is_some_and(|m| *c > m) {
            wrong.push(format!("{me} is past max_replicas_per_node"));
        }
    }
    for (id, used) in used_by_node(allocations) {
        if let Some(n) = nodes.get(id)
            && !room(Resources::default(), used, n.capacity)
        {
            wrong.push(format!("{id} holds {used:?}, more than its capacity {:?}", n.capacity));
        }
    }
    wrong
}

/// What could still be placed: a service short of replicas while an up member satisfying its
/// constraints has room for one (its reservations free, under `max_replicas_per_node`, and for
/// a global service, none there yet).
pub fn placeable_left(svcs: &[Service], allocations: &[Allocation], nodes: &[Node]) -> Vec<String> {
    let used = used_by_node(allocations);
    let mut count: HashMap<(&str, &str), u32> = HashMap::new();
    let mut total: HashMap<&str, u32> = HashMap::new();
    for a in allocations.iter().filter(|a| a.desired == Desired::Running) {
        *count.entry((&a.service, &a.node)).or_default() += 1;
        *total.entry(&a.service).or_default() += 1;
    }
    let mut wrong = Vec::new();
    for (name, svc, cs) in placeable(svcs) {
        let eligible = nodes.iter().filter(|n| n.state == NodeState::Up && constraint::all_match(&cs, n));
        let has = |n: &Node| count.get(&(name.as_str(), n.id.as_str())).copied().unwrap_or(0);
        let fits = |n: &Node| room(svc.reservations, used.get(n.id.as_str()).copied().unwrap_or_default(), n.capacity);
        let open: Vec<&str> = match svc.mode {
            Mode::Replicated if total.get(name.as_str()).copied().unwrap_or(0) < svc.replicas => {
                let max = svc.max_replicas_per_node.unwrap_or(u32::MAX);
                eligible.filter(|n| has(n) < max && fits(n)).map(|n| n.id.as_str()).collect()
            }
            Mode::Replicated => Vec::new(),
            Mode::Global => eligible.filter(|n| has(n) == 0 && fits(n)).map(|n| n.id.as_str()).collect(),
        };
        if !open.is_empty() {
            wrong.push(format!("{name} is short of replicas while {open:?} have room"));
        }
    }
    wrong
}

/// Where spread does not hold: a replicated service with two more replicas on one up member
/// than on another that satisfies its constraints and has room for one more. (A placement
/// keeps it; stability does not restore it when a member returns, as in Swarm.)
pub fn spread(svcs: &[Service], allocations: &[Allocation], nodes: &[Node]) -> Vec<String> {
    let used = used_by_node(allocations);
    let mut count: HashMap<(&str, &str), u32> = HashMap::new();
    for a in allocations.iter().filter(|a| a.desired == Desired::Running) {
        *count.entry((&a.service, &a.node)).or_default() += 1;
    }
    let mut wrong = Vec::new();
    for (name, svc, cs) in placeable(svcs).filter(|(_, s, _)| s.mode == Mode::Replicated) {
        let eligible: Vec<&Node> = nodes.iter().filter(|n| n.state == NodeState::Up && constraint::all_match(&cs, n)).collect();
        let has = |n: &Node| count.get(&(name.as_str(), n.id.as_str())).copied().unwrap_or(0);
        let max = svc.max_replicas_per_node.unwrap_or(u32::MAX);
        let most = eligible.iter().max_by_key(|n| has(n));
        let roomy = eligible
            .iter()
            .filter(|n| has(n) < max && room(svc.reservations, used.get(n.id.as_str()).copied().unwrap_or_default(), n.capacity));
        if let (Some(most), Some(least)) = (most, roomy.min_by_key(|n| has(n)))
            && has(most) >= has(least) + 2
        {
            wrong.push(format!("{name} has {} replicas on {} but {} on {}, which has room", has(most), most.id, has(least), least.id));
        }
    }
    wrong
}
