//! Worlds of members and services for the simulation, the property tests and the benchmark:
//! small label and constraint vocabularies so that constraints both hold and fail often.

#![allow(dead_code)]

use std::collections::BTreeMap;

use atoll_sched::{Mode, Node, NodeState, Resources, Role, Service};

pub const GIB: u64 = 1 << 30;
pub const CPU: u64 = 1_000_000_000;

/// Constraints the generated services pick from (each holds on some members and not others).
pub const CONSTRAINTS: &[&str] = &[
    "node.labels.disk == ssd",
    "node.labels.disk != ssd",
    "node.labels.zone == a",
    "node.labels.zone != b",
    "node.role == manager",
    "node.role != public",
    "node.platform.arch == x86_64",
    "node.hostname != host-0",
];

pub fn node(rng: &mut fastrand::Rng, i: usize) -> Node {
    let mut labels = BTreeMap::new();
    if rng.bool() {
        labels.insert("disk".into(), ["ssd", "hdd"][rng.usize(..2)].into());
    }
    if rng.bool() {
        labels.insert("zone".into(), ["a", "b", "c"][rng.usize(..3)].into());
    }
    Node {
        id: format!("n{i:04}"),
        hostname: format!("host-{i}"),
        role: if rng.u8(..4) == 0 { Role::Public } else { Role::Private },
        labels,
        os: "linux".into(),
        arch: ["x86_64", "aarch64"][usize::from(rng.u8(..4) == 0)].into(),
        state: NodeState::Up,
        capacity: Resources { nano_cpus: rng.u64(1..=8) * CPU, memory_bytes: rng.u64(1..=16) * GIB },
    }
}

pub fn service(rng: &mut fastrand::Rng, i: usize, max_replicas: u32) -> Service {
    let constraints = (0..rng.usize(..3)).map(|_| CONSTRAINTS[rng.usize(..CONSTRAINTS.len())].to_owned()).collect();
    Service {
        stack: "sim".into(),
        name: format!("svc{i:04}"),
        mode: if rng.u8(..8) == 0 { Mode::Global } else { Mode::Replicated },
        replicas: rng.u32(0..=max_replicas),
        spec: serde_json::json!({}),
        constraints,
        max_replicas_per_node: if rng.u8(..4) == 0 { Some(rng.u32(1..=2)) } else { None },
        labels: if rng.u8(..3) == 0 {
            BTreeMap::from([(atoll_state::desired::LABEL_EXCLUSIVE.to_owned(), "true".to_owned())])
        } else {
            BTreeMap::new()
        },
        generation: 1,
        reservations: Resources { nano_cpus: rng.u64(0..=4) * CPU / 4, memory_bytes: rng.u64(0..=8) * GIB / 8 },
        update_config: Default::default(),
        pinned: rng.u8(0..4) == 0,
        previous: None,
        update_status: None,
        extra: serde_json::Map::new(),
    }
}

pub fn world(seed: u64, nodes: usize, services: usize, max_replicas: u32) -> (Vec<Node>, Vec<Service>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let ns = (0..nodes).map(|i| node(&mut rng, i)).collect();
    let ss = (0..services).map(|i| service(&mut rng, i, max_replicas)).collect();
    (ns, ss)
}
