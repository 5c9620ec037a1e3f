//! The stacks' part of the replicated state, read at once from one replica: stacks, services,
//! allocations and what members report of them, the members as the scheduler sees them, and
//! what the gateway serves besides (users' routes, the island's bundles, the zones' names).

use std::collections::BTreeMap;

use atoll_island::model::IslandState;
use atoll_sched::{Node, NodeState, Role};
use atoll_state::desired::{
    self, Allocation, Availability, Bundle, BundleEndpoints, DecodeError, Kind, Liveness, NodeSpec, NodeStatus, Service, Stack, TaskStatus,
};
use atoll_state::keyspace::Keyspace;

/// Everything of the stacks in one replica, each record with its version.
#[derive(Debug, Clone, Default)]
pub struct Records {
    pub stacks: Vec<(Stack, u64)>,
    pub services: Vec<(Service, u64)>,
    pub allocations: Vec<(Allocation, u64)>,
    /// By allocation name.
    pub tasks: BTreeMap<String, (TaskStatus, u64)>,
    pub node_specs: BTreeMap<String, (NodeSpec, u64)>,
    pub node_status: BTreeMap<String, (NodeStatus, u64)>,
    pub liveness: BTreeMap<String, (Liveness, u64)>,
    /// The routes users added to the gateway (`atoll gateway route add`).
    pub routes: Vec<(atoll_state::ingress::GatewayRoute, u64)>,
    /// The island's bundles (`atoll bundle run` on a member), and where each member serves its.
    pub bundles: Vec<(Bundle, u64)>,
    /// By member id.
    pub bundle_endpoints: BTreeMap<String, (BundleEndpoints, u64)>,
    /// The island's zones' domains (`atoll domain add`).
    pub zones: Vec<String>,
}

fn by_name<K: Kind>(v: Vec<(K, u64)>) -> BTreeMap<String, (K, u64)> {
    v.into_iter().map(|(r, v)| (r.name(), (r, v))).collect()
}

impl Records {
    /// Reads them from `ks`.
    pub fn read(ks: &Keyspace) -> Result<Records, DecodeError> {
        Ok(Records {
            stacks: desired::list(ks)?,
            services: desired::list(ks)?,
            allocations: desired::list(ks)?,
            tasks: by_name(desired::list(ks)?),
            node_specs: by_name(desired::list(ks)?),
            node_status: by_name(desired::list(ks)?),
            liveness: by_name(desired::list(ks)?),
            routes: desired::list(ks)?,
            bundles: desired::list(ks)?,
            bundle_endpoints: by_name(desired::list(ks)?),
            zones: desired::list::<desired::Zone>(ks)?.into_iter().map(|(z, _)| z.domain).collect(),
        })
    }

    pub fn stack(&self, name: &str) -> Option<&(Stack, u64)> {
        self.stacks.iter().find(|(s, _)| s.name == name)
    }

    /// The services of stack `name`.
    pub fn services_of<'a>(&'a self, stack: &'a str) -> impl Iterator<Item = &'a (Service, u64)> {
        self.services.iter().filter(move |(s, _)| s.stack == stack)
    }

    pub fn service(&self, full_name: &str) -> Option<&(Service, u64)> {
        self.services.iter().find(|(s, _)| Kind::name(s) == full_name)
    }

    /// Stack `name`, or the error that names the stacks there are.
    pub fn existing_stack(&self, name: &str) -> Result<&(Stack, u64), crate::DeployError> {
        self.stack(name).ok_or_else(|| crate::DeployError::NoSuchStack {
            name: name.to_owned(),
            known: self.stacks.iter().map(|(s, _)| s.name.clone()).collect(),
        })
    }

    /// Service `full_name`, or the error that names the services there are.
    pub fn existing_service(&self, full_name: &str) -> Result<&(Service, u64), crate::DeployError> {
        self.service(full_name).ok_or_else(|| crate::DeployError::NoSuchService {
            name: full_name.to_owned(),
            known: self.services.iter().map(|(s, _)| Kind::name(s)).collect(),
        })
    }

    /// The members as the scheduler sees them: role from their public addresses, labels from
    /// the membership, availability from `desired/node`, liveness from the leader's reports,
    /// capacity and platform from their own.
    pub fn nodes(&self, island: &IslandState) -> Vec<Node> {
        island
            .members
            .values()
            .map(|m| {
                let status = self.node_status.get(&m.id).map(|(s, _)| s);
                let state = if self.liveness.get(&m.id).is_some_and(|(l, _)| l.down) {
                    NodeState::Down
                } else if self.node_specs.get(&m.id).is_some_and(|(n, _)| n.availability == Availability::Drain) {
                    NodeState::Drained
                } else {
                    NodeState::Up
                };
                Node {
                    id: m.id.clone(),
                    hostname: m.name.clone(),
                    role: if m.public.is_empty() { Role::Private } else { Role::Public },
                    labels: m.labels.clone(),
                    os: status.map_or_else(|| "linux".into(), |s| s.os.clone()),
                    arch: status.map_or_else(|| std::env::consts::ARCH.into(), |s| s.arch.clone()),
                    state,
                    capacity: status.map(|s| s.capacity).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The allocations alone.
    pub fn allocations_only(&self) -> Vec<Allocation> {
        self.allocations.iter().map(|(a, _)| a.clone()).collect()
    }

    /// The services alone.
    pub fn services_only(&self) -> Vec<Service> {
        self.services.iter().map(|(s, _)| s.clone()).collect()
    }
}
