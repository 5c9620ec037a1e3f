//! The island's scheduler, pure: no IO, no clock, no randomness. The leader's reconciler calls
//! [`plan`] with the services (at their generation), the allocations and the members as
//! [`Node`]s, writes the [`Action`]s it returns to the replicated state (each an allocation
//! record put with compare-and-set), and shows the [`Pending`] reasons in `stack ps`.
//!
//! - [`constraint`]: Swarm's placement constraints, parsed and evaluated as swarmkit does.
//! - [`plan`](mod@plan): constraints, then resources, then spread; stable (what is placed stays
//!   placed), with moved replicas' old allocations marked to stop at their generation.
//! - [`bundles`]: where the island's bundles run (one member each, spread, moved off members
//!   down or drained).
//! - [`check`]: the invariants a plan's result keeps, for tests and simulations here and in
//!   the island.

use std::collections::BTreeMap;

pub use atoll_state::desired::{Allocation, Desired, Mode, Resources, Service};

pub mod bundles;
pub mod check;
pub mod constraint;
pub mod plan;

pub use constraint::{Constraint, ConstraintError};
pub use plan::{Action, AllocRef, Pending, Plan, StopReason, Unplaceable, apply, plan};

/// A service's full name, `<stack>_<service>`, as allocations name it.
pub fn service_name(s: &Service) -> String {
    atoll_state::desired::Kind::name(s)
}

/// A member as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The member's id (`node.id`).
    pub id: String,
    /// Its name (`node.hostname`).
    pub hostname: String,
    pub role: Role,
    /// `atoll node label` (`node.labels.<name>`).
    pub labels: BTreeMap<String, String>,
    /// `node.platform.os` (`linux`).
    pub os: String,
    /// `node.platform.arch`, as `uname -m` says (`x86_64`, `aarch64`).
    pub arch: String,
    pub state: NodeState,
    /// What replicas may reserve on it in all.
    pub capacity: Resources,
}

/// A member's role for placement (`node.role`; see [`constraint`] for Swarm's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// It has a public address (lighthouse, relay, join endpoint).
    Public,
    /// Any other member.
    Private,
}

impl Role {
    /// `public`/`manager` or `private`/`worker`, without regard to case.
    pub fn parse(s: &str) -> Option<Role> {
        match s.to_ascii_lowercase().as_str() {
            "public" | "manager" => Some(Role::Public),
            "private" | "worker" => Some(Role::Private),
            _ => None,
        }
    }
}

/// Whether a member takes work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeState {
    /// Heartbeating and available.
    Up,
    /// Missed its heartbeats: its replicas are placed elsewhere, and their allocations here are
    /// marked to stop, which it does when it returns.
    Down,
    /// `atoll node drain`: up, but its replicas move away and it takes none.
    Drained,
}
