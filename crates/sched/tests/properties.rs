//! Properties of `plan` over arbitrary members, services and earlier allocations: the result
//! never violates a constraint, a slot, a member's capacity or `max_replicas_per_node`; every
//! replica that could be placed is; planning again changes nothing; a fresh placement spreads;
//! members joining move nothing. Some services have a constraint that does not parse: they
//! keep what they have and get nothing new.

mod common;

use std::collections::BTreeMap;

use atoll_sched::{Action, Allocation, Desired, Mode, Node, NodeState, Resources, Role, Service, apply, check, plan};
use common::{CONSTRAINTS, CPU, GIB};
use proptest::prelude::*;

fn arb_node(i: usize) -> impl Strategy<Value = Node> {
    (
        prop::option::of(prop::sample::select(vec!["ssd", "hdd"])),
        prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![NodeState::Up, NodeState::Up, NodeState::Up, NodeState::Down, NodeState::Drained]),
        0..=8u64,
        0..=16u64,
    )
        .prop_map(move |(disk, zone, public, arm, state, cpus, mem)| {
            let mut labels = BTreeMap::new();
            disk.map(|d| labels.insert("disk".to_owned(), d.to_owned()));
            zone.map(|z| labels.insert("zone".to_owned(), z.to_owned()));
            Node {
                id: format!("n{i}"),
                hostname: format!("host-{i}"),
                role: if public { Role::Public } else { Role::Private },
                labels,
                os: "linux".into(),
                arch: if arm { "aarch64" } else { "x86_64" }.into(),
                state,
                capacity: Resources { nano_cpus: cpus * CPU / 2, memory_bytes: mem * GIB / 2 },
            }
        })
}

fn arb_nodes() -> impl Strategy<Value = Vec<Node>> {
    (0..8usize).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>())
}

fn arb_service(i: usize) -> impl Strategy<Value = Service> {
    (
        prop::bool::weighted(0.15),
        0..7u32,
        prop::collection::vec(prop::sample::select([CONSTRAINTS, &["node.labels.disk = ssd"]].concat()), 0..3),
        prop::option::of(1..3u32),
        1..4u64,
        0..=4u64,
        0..=8u64,
    )
        .prop_map(move |(global, replicas, cs, max, generation, cpus, mem)| Service {
            stack: "p".into(),
            name: format!("s{i}"),
            mode: if global { Mode::Global } else { Mode::Replicated },
            replicas,
            spec: serde_json::json!({}),
            constraints: cs.into_iter().map(str::to_owned).collect(),
            max_replicas_per_node: max,
            labels: BTreeMap::new(),
            generation,
            reservations: Resources { nano_cpus: cpus * CPU / 4, memory_bytes: mem * GIB / 4 },
            update_config: Default::default(),
            pinned: false,
            previous: None,
            update_status: None,
            extra: serde_json::Map::new(),
        })
}

fn arb_services() -> impl Strategy<Value = Vec<Service>> {
    (0..7usize).prop_flat_map(|n| (0..n).map(arb_service).collect::<Vec<_>>())
}

/// Allocations as a history leaves them: what an earlier plan placed for other services and
/// members, plus stray records (unknown services and members, duplicates, odd slots).
fn arb_history() -> impl Strategy<Value = (Vec<Node>, Vec<Service>, Vec<Allocation>)> {
    (arb_nodes(), arb_services(), prop::collection::vec((0..8usize, 0..8usize, 0..9u32, 0..4u64, any::<bool>()), 0..6)).prop_map(
        |(nodes, services, stray)| {
            let up: Vec<Node> = nodes.iter().cloned().map(|n| Node { state: NodeState::Up, ..n }).collect();
            let mut allocs = Vec::new();
            apply(&mut allocs, &plan(&services, &[], &up));
            for (svc, node, slot, generation, running) in stray {
                let slot = if slot == 0 { format!("n{node}") } else { slot.to_string() };
                // one record per service, slot and member, as the state keys them
                if allocs.iter().any(|a| a.service == format!("p_s{svc}") && a.slot == slot && a.node == format!("n{node}")) {
                    continue;
                }
                allocs.push(Allocation {
                    service: format!("p_s{svc}"),
                    slot,
                    node: format!("n{node}"),
                    desired: if running { Desired::Running } else { Desired::Shutdown },
                    generation,
                    reservations: Resources { nano_cpus: 0, memory_bytes: generation * GIB / 4 },
                    extra: serde_json::Map::new(),
                });
            }
            (nodes, services, allocs)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Constraints never violated, never two running allocations of one slot, no member over
    /// its capacity, nothing on a member that is not up; every placeable replica placed.
    #[test]
    fn a_plan_leaves_every_invariant_holding((nodes, mut services, mut allocs) in arb_history(), bump in any::<bool>()) {
        if bump {
            services.iter_mut().for_each(|s| s.generation += 1);
        }
        let p = plan(&services, &allocs, &nodes);
        apply(&mut allocs, &p);
        prop_assert_eq!(check::violations(&services, &allocs, &nodes), Vec::<String>::new());
        prop_assert_eq!(check::placeable_left(&services, &allocs, &nodes), Vec::<String>::new());
    }

    /// Applying a plan and planning again gives no actions and the same pending reasons.
    #[test]
    fn a_plan_is_its_own_fixed_point((nodes, services, mut allocs) in arb_history()) {
        let p = plan(&services, &allocs, &nodes);
        apply(&mut allocs, &p);
        let again = plan(&services, &allocs, &nodes);
        prop_assert_eq!(again.actions, vec![]);
        prop_assert_eq!(again.pending, p.pending);
    }

    /// A stop names a running allocation at the generation it runs (what a returning member
    /// compares), and every action names a member that exists.
    #[test]
    fn stops_name_running_allocations_at_their_generation((nodes, services, allocs) in arb_history()) {
        for a in plan(&services, &allocs, &nodes).actions {
            match a {
                Action::Stop { alloc, .. } => prop_assert!(allocs.iter().any(|x| x.desired == Desired::Running
                    && (&x.service, &x.slot, &x.node, x.generation) == (&alloc.service, &alloc.slot, &alloc.node, alloc.generation))),
                Action::Start { alloc, .. } | Action::Update { alloc, .. } => {
                    prop_assert!(nodes.iter().any(|n| n.id == alloc.node && n.state == NodeState::Up));
                }
            }
        }
    }

    /// From nothing, no service has two more replicas on one member than on another that
    /// satisfies its constraints and has room.
    #[test]
    fn a_fresh_placement_spreads(nodes in arb_nodes(), services in arb_services()) {
        let mut allocs = Vec::new();
        apply(&mut allocs, &plan(&services, &[], &nodes));
        prop_assert_eq!(check::spread(&services, &allocs, &nodes), Vec::<String>::new());
    }

    /// Members joining stop nothing and move nothing: they only take new work.
    #[test]
    fn members_joining_move_nothing(nodes in arb_nodes(), services in arb_services(), more in 1..3usize) {
        let mut allocs = Vec::new();
        apply(&mut allocs, &plan(&services, &[], &nodes));
        let mut grown = nodes.clone();
        grown.extend((0..more).map(|i| Node { id: format!("new{i}"), hostname: format!("new-{i}"), ..common::node(&mut fastrand::Rng::with_seed(i as u64), 0) }));
        for a in plan(&services, &allocs, &grown).actions {
            prop_assert!(matches!(&a, Action::Start { alloc, .. } if alloc.node.starts_with("new")), "{:?}", a);
        }
    }
}
