//! Stacks across the island (`atoll stack deploy`): compose files with Swarm's `deploy:` keys,
//! placed by the leader, run by each member's agent through the node engine.
//!
//! - [`records`]: the stacks' part of the replicated state, read from one replica.
//! - [`deploy`]: deploys, removals and scaling, checked and placed in a dry run, then written
//!   in one transaction.
//! - [`reconciler`]: on the leader, twice a second: who is down (from its pings), then
//!   [`atoll_sched::plan`], written as allocations; rolling updates `update_config.parallelism`
//!   at a time.
//! - [`agent`]: on every member, twice a second and on every change: runs exactly the
//!   allocations desired running here at their generation, stops everything else of the
//!   stacks, and reports each replica's state.
//! - [`view`]: `stack ls`, `stack ps`, `service ls` from any member's replica.
//!
//! The invariant the pieces keep between them: a member runs a replica only while an
//! allocation for it, on that member, at that generation, is desired running. The leader
//! moves a replica by marking the old allocation shut down before (or in the same write as)
//! starting the new one, so a member that comes back from a partition finds its old replicas
//! marked and stops them.

use std::time::Duration;

use atoll_island::Manager;
use atoll_state::Response;

pub mod agent;
pub mod deploy;
pub mod reconciler;
pub mod records;
pub mod view;

pub use deploy::{DeployError, DeployReport, ServiceDeploy, StackDeploy};
use records::Records;

/// The stack a container belongs to (Swarm's label, which `docker stack ps` also reads).
pub const LABEL_STACK: &str = "com.docker.stack.namespace";
/// Its service's full name, `<stack>_<service>`.
pub const LABEL_SERVICE: &str = "com.docker.swarm.service.name";
/// The allocation it runs, `<service>.<slot>/<member id>`.
pub const LABEL_ALLOCATION: &str = "atoll.allocation";
/// The service generation it runs.
pub const LABEL_GENERATION: &str = "atoll.generation";

/// How many times a write that lost a compare-and-set is planned again.
const ATTEMPTS: u32 = 5;

/// Plans a write from this member's replica with `f`, commits it through the leader, and
/// plans again when the state moved meanwhile; returns once this member's replica holds it.
async fn commit<T>(
    m: &Manager,
    f: impl Fn(&Records, &atoll_island::model::IslandState) -> Result<(atoll_state::Request, T), DeployError>,
) -> Result<T, DeployError> {
    for _ in 0..ATTEMPTS {
        let records = m.replica().with(Records::read)?;
        let (req, out) = f(&records, &m.state())?;
        if matches!(&req, atoll_state::Request::Txn { ops } if ops.is_empty()) {
            return Ok(out);
        }
        match m.propose(req).await? {
            Response::Done { version } => {
                m.wait_applied(version, Duration::from_secs(5)).await;
                return Ok(out);
            }
            Response::Conflict { .. } | Response::TxnConflict { .. } => {
                // This replica was behind the leader: let it catch up, then plan again.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Response::Refused { reason } => return Err(DeployError::Refused(reason)),
            Response::Empty => return Ok(out),
        }
    }
    Err(DeployError::Busy(ATTEMPTS))
}

/// Deploys `req` as stack `name` (creating or converging it).
pub async fn deploy(m: &Manager, name: &str, req: &StackDeploy) -> Result<DeployReport, DeployError> {
    commit(m, |r, island| deploy::plan_deploy(name, req, r, island)).await
}

/// Removes stack `name`: its services, and so its replicas on every member.
pub async fn remove(m: &Manager, name: &str) -> Result<(), DeployError> {
    commit(m, |r, _| deploy::plan_remove(name, r).map(|req| (req, ()))).await
}

/// Sets the replicas of service `full_name` (`<stack>_<service>`).
pub async fn scale(m: &Manager, full_name: &str, replicas: u32) -> Result<(), DeployError> {
    commit(m, |r, _| deploy::plan_scale(full_name, replicas, r).map(|req| (req, ()))).await
}

/// Sets whether member `id` takes work (`atoll node drain` / `node activate`).
pub async fn set_availability(m: &Manager, id: &str, availability: atoll_state::desired::Availability) -> Result<(), DeployError> {
    commit(m, |r, _| {
        let old = r.node_specs.get(id);
        let spec = atoll_state::desired::NodeSpec {
            id: id.to_owned(),
            availability,
            extra: old.map(|(n, _)| n.extra.clone()).unwrap_or_default(),
        };
        let expect = old.map_or(atoll_state::Expect::Absent, |(_, v)| atoll_state::Expect::Version(*v));
        Ok((atoll_state::desired::put(&spec, expect), ()))
    })
    .await
}
