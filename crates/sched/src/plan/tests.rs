//! Unit tests of the placement rules, one behaviour each.

use std::collections::BTreeMap;

use serde_json::Map;

use super::*;
use crate::{Role, check};

const GIB: u64 = 1 << 30;

fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        hostname: format!("host-{id}"),
        role: Role::Private,
        labels: BTreeMap::new(),
        os: "linux".into(),
        arch: "x86_64".into(),
        state: NodeState::Up,
        capacity: Resources { nano_cpus: 4_000_000_000, memory_bytes: 8 * GIB },
    }
}

fn nodes(ids: &[&str]) -> Vec<Node> {
    ids.iter().map(|id| node(id)).collect()
}

fn svc(name: &str, replicas: u32) -> Service {
    Service {
        stack: "s".into(),
        name: name.into(),
        mode: Mode::Replicated,
        replicas,
        spec: serde_json::json!({}),
        constraints: vec![],
        max_replicas_per_node: None,
        labels: BTreeMap::new(),
        generation: 1,
        reservations: Resources::default(),
        update_config: Default::default(),
        pinned: false,
        previous: None,
        update_status: None,
        extra: Map::new(),
    }
}

fn global(name: &str) -> Service {
    Service { mode: Mode::Global, replicas: 0, ..svc(name, 0) }
}

/// Plans, applies, checks the invariants and that planning again changes nothing.
fn converge(services: &[Service], allocs: &mut Vec<Allocation>, nodes: &[Node]) -> Plan {
    let p = plan(services, allocs, nodes);
    apply(allocs, &p);
    assert_eq!(check::violations(services, allocs, nodes), Vec::<String>::new());
    assert_eq!(check::placeable_left(services, allocs, nodes), Vec::<String>::new());
    let again = plan(services, allocs, nodes);
    assert_eq!(again.actions, [], "planning again changes nothing");
    assert_eq!(again.pending, p.pending);
    p
}

fn running(allocs: &[Allocation]) -> Vec<(String, String, String, u64)> {
    let mut v: Vec<_> = allocs
        .iter()
        .filter(|a| a.desired == Desired::Running)
        .map(|a| (a.service.clone(), a.slot.clone(), a.node.clone(), a.generation))
        .collect();
    v.sort();
    v
}

fn on(allocs: &[Allocation], node: &str) -> usize {
    allocs.iter().filter(|a| a.desired == Desired::Running && a.node == node).count()
}

fn stops(p: &Plan) -> Vec<(String, String, StopReason)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop { alloc, reason } => Some((alloc.slot.clone(), alloc.node.clone(), *reason)),
            _ => None,
        })
        .collect()
}

fn starts(p: &Plan) -> Vec<(String, String)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { alloc, .. } => Some((alloc.slot.clone(), alloc.node.clone())),
            _ => None,
        })
        .collect()
}

fn reason(p: &Plan) -> String {
    p.pending.iter().map(|p| format!("{} ({} missing): {}", p.service, p.missing, p.reason)).collect::<Vec<_>>().join("; ")
}

#[test]
fn replicas_spread_one_per_node_while_others_have_room() {
    let mut allocs = Vec::new();
    let p = converge(&[svc("web", 3)], &mut allocs, &nodes(&["a", "b", "c"]));
    assert_eq!(starts(&p), [("1".into(), "a".into()), ("2".into(), "b".into()), ("3".into(), "c".into())]);
    let mut allocs = Vec::new();
    converge(&[svc("web", 5)], &mut allocs, &nodes(&["a", "b", "c"]));
    assert_eq!((on(&allocs, "a"), on(&allocs, "b"), on(&allocs, "c")), (2, 2, 1));
}

#[test]
fn the_least_loaded_node_is_chosen_first() {
    let ns = nodes(&["a", "b", "c"]);
    let mut allocs = Vec::new();
    converge(&[svc("db", 2)], &mut allocs, &ns);
    // a and b hold db; web's first replica goes to c, the one with nothing
    let p = converge(&[svc("db", 2), svc("web", 1)], &mut allocs, &ns);
    assert_eq!(starts(&p), [("1".into(), "c".into())]);
}

#[test]
fn constraints_come_first() {
    let mut ns = nodes(&["a", "b", "c"]);
    ns[1].labels.insert("disk".into(), "ssd".into());
    ns[2].role = Role::Public;
    let mut db = svc("db", 2);
    db.constraints = vec!["node.labels.disk == ssd".into()];
    let mut proxy = svc("proxy", 1);
    proxy.constraints = vec!["node.role == manager".into()];
    let mut other = svc("other", 3);
    other.constraints = vec!["node.hostname != host-a".into(), "node.platform.os == linux".into()];
    let mut allocs = Vec::new();
    converge(&[db, proxy, other], &mut allocs, &ns);
    let placed = running(&allocs);
    assert!(placed.iter().filter(|a| a.0 == "s_db").all(|a| a.2 == "b"), "{placed:?}");
    assert!(placed.iter().filter(|a| a.0 == "s_proxy").all(|a| a.2 == "c"), "{placed:?}");
    assert!(placed.iter().filter(|a| a.0 == "s_other").all(|a| a.2 != "a"), "{placed:?}");
    assert_eq!(placed.len(), 6);
}

#[test]
fn reservations_must_fit_what_is_left_on_the_node() {
    let mut ns = nodes(&["a", "b"]);
    ns[0].capacity.memory_bytes = 3 * GIB;
    ns[1].capacity.memory_bytes = GIB;
    let mut big = svc("big", 3);
    big.reservations.memory_bytes = GIB;
    let mut allocs = Vec::new();
    let p = converge(&[big], &mut allocs, &ns);
    assert_eq!((on(&allocs, "a"), on(&allocs, "b")), (2, 1));
    assert_eq!(p.pending, []);
    let mut cpu = svc("cpu", 1);
    cpu.reservations.nano_cpus = 5_000_000_000;
    let p = plan(&[cpu], &[], &ns);
    assert_eq!(
        reason(&p),
        "s_cpu (1 missing): not enough CPU: a replica reserves 5 CPUs, the most free on a node that satisfies the constraints is 4"
    );
}

#[test]
fn not_enough_memory_anywhere_is_pending_with_the_numbers() {
    let ns = nodes(&["a", "b"]);
    let mut big = svc("big", 3);
    big.reservations.memory_bytes = 5 * GIB;
    let mut allocs = Vec::new();
    let p = converge(&[big], &mut allocs, &ns);
    assert_eq!(starts(&p).len(), 2);
    assert_eq!(
        reason(&p),
        "s_big (1 missing): not enough memory: a replica reserves 5 GiB, the most free on a node that satisfies the constraints is 3 GiB"
    );
    let mut both = svc("both", 1);
    both.reservations = Resources { nano_cpus: 3_500_000_000, memory_bytes: 7 * GIB };
    let mut ns2 = nodes(&["a", "b"]);
    ns2[0].capacity.nano_cpus = 1_000_000_000;
    ns2[1].capacity.memory_bytes = GIB + GIB / 2;
    assert_eq!(
        reason(&plan(&[both], &[], &ns2)),
        "s_both (1 missing): no node that satisfies the constraints has 3.5 CPUs and 7 GiB free together"
    );
}

#[test]
fn max_replicas_per_node_is_honoured_and_named_when_it_blocks() {
    let mut web = svc("web", 5);
    web.max_replicas_per_node = Some(2);
    let mut allocs = Vec::new();
    let p = converge(&[web.clone()], &mut allocs, &nodes(&["a", "b"]));
    assert_eq!((on(&allocs, "a"), on(&allocs, "b")), (2, 2));
    assert_eq!(
        reason(&p),
        "s_web (1 missing): every node that satisfies the constraints and has room already runs 2 (max_replicas_per_node)"
    );
    // lowering it moves the extra replica's slot, which then stays pending
    web.max_replicas_per_node = Some(1);
    let p = converge(&[web], &mut allocs, &nodes(&["a", "b"]));
    assert_eq!(stops(&p).iter().filter(|s| s.2 == StopReason::MaxPerNode).count(), 2);
    assert_eq!((on(&allocs, "a"), on(&allocs, "b")), (1, 1));
}

#[test]
fn a_global_service_runs_once_on_every_eligible_node_and_follows_new_ones() {
    let mut ns = nodes(&["a", "b", "c"]);
    ns[2].labels.insert("edge".into(), "no".into());
    let mut agent = global("agent");
    agent.constraints = vec!["node.labels.edge != no".into()];
    let mut allocs = Vec::new();
    let p = converge(&[agent.clone()], &mut allocs, &ns);
    assert_eq!(starts(&p), [("a".into(), "a".into()), ("b".into(), "b".into())]);
    ns.push(node("d"));
    let p = converge(&[agent], &mut allocs, &ns);
    assert_eq!(starts(&p), [("d".into(), "d".into())]);
    assert_eq!(p.actions.len(), 1, "the others stay as they are");
}

#[test]
fn a_global_service_no_node_may_run_says_why() {
    let mut agent = global("agent");
    agent.constraints = vec!["node.labels.gpu == yes".into()];
    let p = plan(&[agent], &[], &nodes(&["a"]));
    assert_eq!(reason(&p), "s_agent (0 missing): no node that takes work satisfies the constraint `node.labels.gpu == yes`");
}

/// Named volumes stay on their member: its replica waits for it to come back; a drain still
/// moves it (the user asked).
#[test]
fn a_pinned_replica_waits_for_its_down_node_and_moves_off_a_drained_one() {
    let mut ns = nodes(&["a", "b"]);
    let db = Service { pinned: true, ..svc("db", 1) };
    let mut allocs = Vec::new();
    converge(std::slice::from_ref(&db), &mut allocs, &ns);
    let on = allocs[0].node.clone();
    let i = ns.iter().position(|n| n.id == on).unwrap();
    ns[i].state = NodeState::Down;
    assert_eq!(plan(std::slice::from_ref(&db), &allocs, &ns), Plan::default(), "it waits");
    ns[i].state = NodeState::Drained;
    let p = converge(std::slice::from_ref(&db), &mut allocs, &ns);
    assert!(matches!(p.actions[0], Action::Stop { reason: StopReason::NodeDrained, .. }), "{p:?}");
}

#[test]
fn replicas_on_a_down_node_move_and_their_old_allocation_stops_at_its_generation() {
    let mut ns = nodes(&["a", "b", "c"]);
    let web = svc("web", 2);
    let mut allocs = Vec::new();
    converge(std::slice::from_ref(&web), &mut allocs, &ns);
    ns[0].state = NodeState::Down;
    let p = converge(std::slice::from_ref(&web), &mut allocs, &ns);
    assert_eq!(
        p.actions,
        [
            Action::Stop {
                alloc: AllocRef { service: "s_web".into(), slot: "1".into(), node: "a".into(), generation: 1 },
                reason: StopReason::NodeDown
            },
            Action::Start {
                alloc: AllocRef { service: "s_web".into(), slot: "1".into(), node: "c".into(), generation: 1 },
                reservations: Resources::default()
            },
        ]
    );
    // the record stays on a, desired shutdown, for a to stop when it returns
    assert!(allocs.iter().any(|a| a.node == "a" && a.slot == "1" && a.desired == Desired::Shutdown));
    // it returns: nothing moves back (no churn), its old allocation stays stopped
    ns[0].state = NodeState::Up;
    assert_eq!(plan(std::slice::from_ref(&web), &allocs, &ns), Plan::default());
}

#[test]
fn a_drained_node_takes_no_work_and_its_replicas_move() {
    let mut ns = nodes(&["a", "b"]);
    let mut allocs = Vec::new();
    converge(&[svc("web", 2), global("agent")], &mut allocs, &ns);
    ns[1].state = NodeState::Drained;
    let p = converge(&[svc("web", 2), global("agent")], &mut allocs, &ns);
    assert_eq!(
        stops(&p),
        [("b".into(), "b".into(), StopReason::NodeDrained), ("2".into(), "b".into(), StopReason::NodeDrained)],
        "s_agent, then s_web"
    );
    assert_eq!(starts(&p), [("2".into(), "a".into())]);
    assert_eq!(on(&allocs, "b"), 0);
}

#[test]
fn unchanged_services_keep_their_allocations_when_nodes_join() {
    let mut ns = nodes(&["a"]);
    let mut allocs = Vec::new();
    converge(&[svc("web", 3)], &mut allocs, &ns);
    ns.extend(nodes(&["b", "c"]));
    assert_eq!(plan(&[svc("web", 3)], &allocs, &ns), Plan::default());
}

#[test]
fn scale_down_removes_the_highest_slots_and_scale_up_fills_the_lowest_free() {
    let ns = nodes(&["a", "b", "c"]);
    let mut allocs = Vec::new();
    converge(&[svc("web", 5)], &mut allocs, &ns);
    let p = converge(&[svc("web", 2)], &mut allocs, &ns);
    let stopped: Vec<_> = stops(&p).into_iter().map(|s| (s.0, s.2)).collect();
    assert_eq!(stopped, [("3".into(), StopReason::ScaledDown), ("4".into(), StopReason::ScaledDown), ("5".into(), StopReason::ScaledDown)]);
    let p = converge(&[svc("web", 3)], &mut allocs, &ns);
    assert_eq!(starts(&p).into_iter().map(|s| s.0).collect::<Vec<_>>(), ["3"]);
}

#[test]
fn a_new_generation_updates_replicas_where_they_are() {
    let ns = nodes(&["a", "b"]);
    let mut allocs = Vec::new();
    converge(&[svc("web", 2)], &mut allocs, &ns);
    let mut v2 = svc("web", 2);
    v2.generation = 2;
    v2.reservations.memory_bytes = GIB;
    let p = converge(std::slice::from_ref(&v2), &mut allocs, &ns);
    let updates: Vec<_> = p
        .actions
        .iter()
        .map(|a| match a {
            Action::Update { alloc, from, reservations } => {
                (alloc.slot.as_str(), alloc.node.as_str(), *from, alloc.generation, reservations.memory_bytes)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(updates, [("1", "a", 1, 2, GIB), ("2", "b", 1, 2, GIB)]);
}

#[test]
fn an_update_that_no_longer_fits_its_node_moves() {
    let mut ns = nodes(&["a", "b"]);
    ns[0].capacity.memory_bytes = GIB;
    let mut allocs = Vec::new();
    converge(&[svc("web", 2)], &mut allocs, &ns);
    let mut v2 = svc("web", 2);
    v2.generation = 2;
    v2.reservations.memory_bytes = 2 * GIB;
    let p = converge(&[v2], &mut allocs, &ns);
    assert_eq!(stops(&p), [("1".into(), "a".into(), StopReason::OverCapacity)]);
    assert_eq!(starts(&p), [("1".into(), "b".into())]);
}

#[test]
fn a_label_change_rechecks_placements() {
    let mut ns = nodes(&["a", "b"]);
    ns[0].labels.insert("disk".into(), "ssd".into());
    let mut db = svc("db", 1);
    db.constraints = vec!["node.labels.disk==ssd".into()];
    let mut allocs = Vec::new();
    converge(std::slice::from_ref(&db), &mut allocs, &ns);
    ns[0].labels.clear();
    ns[1].labels.insert("disk".into(), "ssd".into());
    let p = converge(&[db], &mut allocs, &ns);
    assert_eq!(stops(&p), [("1".into(), "a".into(), StopReason::ConstraintsChanged)]);
    assert_eq!(starts(&p), [("1".into(), "b".into())]);
}

#[test]
fn a_removed_service_and_a_departed_node_stop_their_allocations() {
    let mut ns = nodes(&["a", "b"]);
    let mut allocs = Vec::new();
    converge(&[svc("web", 2), svc("db", 1)], &mut allocs, &ns);
    ns.remove(1);
    let p = converge(&[svc("db", 1)], &mut allocs, &ns);
    let mut why: Vec<_> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop { alloc, reason } => Some((alloc.service.as_str(), alloc.node.as_str(), *reason)),
            _ => None,
        })
        .collect();
    why.sort();
    assert_eq!(why, [("s_web", "a", StopReason::ServiceRemoved), ("s_web", "b", StopReason::ServiceRemoved)]);
    assert_eq!(running(&allocs), [("s_db".into(), "1".into(), "a".into(), 1)]);
}

#[test]
fn two_running_copies_of_a_slot_keep_one() {
    let ns = nodes(&["a", "b"]);
    let copy = |node: &str, generation| Allocation {
        service: "s_web".into(),
        slot: "1".into(),
        node: node.into(),
        desired: Desired::Running,
        generation,
        reservations: Resources::default(),
        extra: Map::new(),
    };
    let mut allocs = vec![copy("a", 0), copy("b", 1)];
    let p = converge(&[svc("web", 1)], &mut allocs, &ns);
    assert_eq!(stops(&p), [("1".into(), "a".into(), StopReason::Duplicate)], "the copy at the service's generation stays");
}

#[test]
fn a_shrunk_node_gives_up_its_highest_slots() {
    let mut ns = nodes(&["a"]);
    let mut web = svc("web", 4);
    web.reservations.memory_bytes = GIB;
    let mut allocs = Vec::new();
    converge(std::slice::from_ref(&web), &mut allocs, &ns);
    ns[0].capacity.memory_bytes = 2 * GIB;
    let p = converge(&[web], &mut allocs, &ns);
    let stopped: Vec<_> = stops(&p).into_iter().map(|s| (s.0, s.2)).collect();
    assert_eq!(stopped, [("3".into(), StopReason::OverCapacity), ("4".into(), StopReason::OverCapacity)]);
    assert_eq!(p.pending.len(), 1);
}

#[test]
fn unplaceable_services_are_pending_with_the_reason_never_dropped() {
    let mut ns = nodes(&["a", "b"]);
    let mut gpu = svc("gpu", 2);
    gpu.constraints = vec!["node.role == public".into(), "node.labels.gpu == yes".into()];
    ns[0].role = Role::Public;
    assert_eq!(
        reason(&plan(&[gpu.clone()], &[], &ns)),
        "s_gpu (2 missing): no node that takes work satisfies the constraint `node.labels.gpu == yes`"
    );
    ns[1].labels.insert("gpu".into(), "yes".into());
    assert_eq!(
        reason(&plan(&[gpu], &[], &ns)),
        "s_gpu (2 missing): no node that takes work satisfies all of the constraints `node.role == public`, `node.labels.gpu == yes`"
    );
    ns[0].state = NodeState::Down;
    ns[1].state = NodeState::Drained;
    assert_eq!(reason(&plan(&[svc("web", 1)], &[], &ns)), "s_web (1 missing): no node takes work (1 down, 1 drained)");
    let mut bad = svc("bad", 1);
    bad.constraints = vec!["node.labels.x = y".into()];
    assert_eq!(
        reason(&plan(&[bad], &[], &nodes(&["a"]))),
        "s_bad (1 missing): the placement constraint \"node.labels.x = y\" has no operator: write `KEY == VALUE` or `KEY != VALUE`"
    );
}

#[test]
fn sizes_read_as_compose_writes_them() {
    assert_eq!((bytes(512 << 20), bytes(3 * GIB / 2), bytes(100)), ("512 MiB".into(), "1.5 GiB".into(), "100 B".into()));
    assert_eq!((cpus_text(500_000_000), cpus_text(2_000_000_000), cpus_text(1_250_000_000)), ("0.5".into(), "2".into(), "1.25".into()));
}

/// A slot moved off a member and back before that member confirmed the stop: the start puts
/// the stopped record back to running (one record per service, slot and member).
#[test]
fn a_slot_returning_to_a_member_reuses_its_stopped_record() {
    let mut ns = nodes(&["a", "b"]);
    let web = svc("web", 1);
    let mut allocs = Vec::new();
    converge(std::slice::from_ref(&web), &mut allocs, &ns);
    ns[0].state = NodeState::Down;
    converge(std::slice::from_ref(&web), &mut allocs, &ns);
    ns[0].state = NodeState::Up;
    ns[1].state = NodeState::Down;
    let p = converge(std::slice::from_ref(&web), &mut allocs, &ns);
    assert_eq!(starts(&p), [("1".into(), "a".into())]);
    assert_eq!(allocs.len(), 2, "{allocs:?}");
    assert_eq!(running(&allocs), [("s_web".into(), "1".into(), "a".into(), 1)]);
}

/// A service whose constraints stopped parsing keeps its replicas where they may run, gets
/// none placed, and says why.
#[test]
fn a_service_with_a_bad_constraint_keeps_what_it_has_and_gets_nothing_new() {
    let mut ns = nodes(&["a", "b", "c"]);
    let mut allocs = Vec::new();
    converge(&[svc("web", 2)], &mut allocs, &ns);
    let mut bad = svc("web", 2);
    bad.constraints = vec!["node.labels.x = y".into()];
    assert_eq!(plan(std::slice::from_ref(&bad), &allocs, &ns).actions, []);
    ns[0].state = NodeState::Down;
    let p = converge(&[bad], &mut allocs, &ns);
    assert_eq!(stops(&p), [("1".into(), "a".into(), StopReason::NodeDown)]);
    assert_eq!(starts(&p), []);
    assert!(reason(&p).starts_with("s_web (1 missing): the placement constraint \"node.labels.x = y\" has no operator"), "{}", reason(&p));
}
