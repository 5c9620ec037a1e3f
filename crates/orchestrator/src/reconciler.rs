//! The leader's reconciler: twice a second, while this member leads, it
//!
//! 1. marks members down that have not answered its pings for [`Config::down_after`] (and up
//!    again when they answer), in `observed/liveness`;
//! 2. when a replica at its service's generation failed, rolls the service back to its
//!    previous spec (a new generation; `failure_action: rollback`) or marks it paused;
//! 3. plans the allocations with [`atoll_sched::plan`] from the services, the allocations and
//!    the members, holding back rolling changes to `update_config.parallelism` replicas of a
//!    service at a time (updates in place, and moves off a drained member), `delay` apart, and
//!    none while a new replica of the service has failed and `failure_action` is `pause`;
//! 4. forgets allocations their member has confirmed stopped, and reports of allocations that
//!    are gone;
//!
//! and writes all of it as one transaction. A write that lost a race is planned again at the
//! next look, from what is then.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use atoll_island::Manager;
use atoll_sched::{Action, AllocRef, Plan, StopReason};
use atoll_state::desired::{self, Allocation, Desired, Kind, Liveness, TaskState, TaskStatus};
use atoll_state::{Expect, Request};

use crate::records::Records;

/// How the reconciler judges members.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// A member silent this long is down: its replicas are placed elsewhere.
    pub down_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config { down_after: Duration::from_secs(4) }
    }
}

/// The reconciler's memory between looks (none of it needed for correctness: a new leader
/// starts without it).
#[derive(Debug, Default)]
pub struct Reconciler {
    cfg: Config,
    /// When each service last started a batch of its rolling change.
    last_batch: HashMap<String, Instant>,
}

impl Reconciler {
    pub fn new(cfg: Config) -> Self {
        Reconciler { cfg, last_batch: HashMap::new() }
    }

    /// One look, if this member leads. Returns whether it wrote anything.
    pub async fn tick(&mut self, m: &Manager) -> Result<bool, crate::DeployError> {
        let Some(silence) = m.silence() else { return Ok(false) };
        let island = m.state();
        let mut records = m.replica().with(Records::read)?;
        let mut ops = Vec::new();

        // 1. Liveness.
        let now = atoll_island::manager::unix_now();
        for (id, silent) in &silence {
            let down = *silent > self.cfg.down_after;
            let current = records.liveness.get(id);
            if current.map_or(down, |(l, _)| l.down != down) {
                let l = Liveness { id: id.clone(), down, since: now, extra: Default::default() };
                ops.push(desired::put(&l, current.map_or(Expect::Absent, |(_, v)| Expect::Version(*v))));
                tracing::info!(node = %island.members.get(id).map_or(id.as_str(), |m| m.name.as_str()), down, "member liveness changed");
                records.liveness.insert(id.clone(), (l, 0));
            }
        }
        for (id, (_, v)) in &records.liveness {
            if !island.members.contains_key(id) {
                ops.push(desired::delete::<Liveness>(id, Expect::Version(*v)));
            }
        }

        // 2. Rollouts that failed: rolled back, or marked paused (`failure_action`).
        for i in 0..records.services.len() {
            let (svc, v) = &records.services[i];
            let name = Kind::name(svc);
            let failed = records
                .allocations
                .iter()
                .filter(|(a, _)| a.service == name && a.desired == Desired::Running && a.generation == svc.generation)
                .find_map(|(a, _)| {
                    records
                        .tasks
                        .get(&Kind::name(a))
                        .map(|(t, _)| t)
                        .filter(|t| t.generation == a.generation && t.state == TaskState::Failed)
                });
            let Some(t) = failed else { continue };
            // Only while a rollout is under way (some replica still at another generation): a
            // replica that fails later is its restart policy's business (found by QA: any
            // failure marked the service paused).
            let rolling = records
                .allocations
                .iter()
                .any(|(a, _)| a.service == name && a.desired == Desired::Running && a.generation != svc.generation);
            if !rolling {
                continue;
            }
            let why = format!("{} failed ({})", t.alloc, t.error.as_deref().unwrap_or("no reason given"));
            let mut next = svc.clone();
            match (next.update_config.failure_action.as_str(), next.previous.take()) {
                ("rollback", Some(prev)) => {
                    next.spec = prev.spec;
                    next.reservations = prev.reservations;
                    next.generation += 1;
                    next.update_status = Some(format!("rolled back to the previous spec: {why}"));
                }
                ("pause", _) if svc.update_status.is_none() => next.update_status = Some(format!("paused: {why}")),
                _ => continue,
            }
            tracing::warn!(service = %name, status = next.update_status.as_deref().unwrap_or_default(), "a rollout failed");
            ops.push(desired::put(&next, Expect::Version(*v)));
            records.services[i].0 = next;
        }

        // 3. Placement.
        let allocations = records.allocations_only();
        let mut plan = atoll_sched::plan(&records.services_only(), &allocations, &records.nodes(&island));
        self.pace(&mut plan, &records);
        let mut after = allocations.clone();
        atoll_sched::apply(&mut after, &plan);
        let before: BTreeMap<String, (&Allocation, u64)> = records.allocations.iter().map(|(a, v)| (Kind::name(a), (a, *v))).collect();
        let mut touched = BTreeSet::new();
        for a in &after {
            let name = Kind::name(a);
            match before.get(&name) {
                Some((old, _)) if *old == a => {}
                Some((_, v)) => {
                    ops.push(desired::put(a, Expect::Version(*v)));
                    touched.insert(name);
                }
                None => {
                    ops.push(desired::put(a, Expect::Absent));
                    touched.insert(name);
                }
            }
        }

        // 4. Forgetting.
        for (a, v) in &records.allocations {
            let name = Kind::name(a);
            let confirmed = records.tasks.get(&name).is_some_and(|(t, _)| t.state == TaskState::Shutdown);
            if a.desired == Desired::Shutdown && !touched.contains(&name) && (confirmed || !island.members.contains_key(&a.node)) {
                ops.push(desired::delete::<Allocation>(&name, Expect::Version(*v)));
                if let Some((_, tv)) = records.tasks.get(&name) {
                    ops.push(desired::delete::<TaskStatus>(&name, Expect::Version(*tv)));
                }
            }
        }
        for (name, (_, v)) in &records.tasks {
            if !before.contains_key(name) {
                ops.push(desired::delete::<TaskStatus>(name, Expect::Version(*v)));
            }
        }

        if ops.is_empty() {
            return Ok(false);
        }
        let n = ops.len();
        match m.propose(Request::Txn { ops }).await? {
            atoll_state::Response::Done { .. } => {
                tracing::debug!(writes = n, "reconciled the stacks");
                Ok(true)
            }
            atoll_state::Response::Refused { reason } => Err(crate::DeployError::Refused(reason)),
            _ => Ok(false),
        }
    }

    /// Holds back the plan's rolling changes (updates in place, and moves off drained
    /// members) beyond each service's `update_config`.
    fn pace(&mut self, plan: &mut Plan, records: &Records) {
        let now = Instant::now();
        let mut budget: HashMap<String, usize> = HashMap::new();
        for (s, _) in &records.services {
            let name = Kind::name(s);
            let ours = |a: &&(Allocation, u64)| a.0.service == name && a.0.desired == Desired::Running && a.0.generation == s.generation;
            let task = |a: &Allocation| records.tasks.get(&Kind::name(a)).map(|(t, _)| t).filter(|t| t.generation == a.generation);
            let u = &s.update_config;
            // With `continue`, a replica that failed no longer holds up the rollout.
            let settled =
                |t: &TaskStatus| t.state == TaskState::Running || (t.state == TaskState::Failed && u.failure_action == "continue");
            let in_flight = records.allocations.iter().filter(ours).filter(|(a, _)| task(a).is_none_or(|t| !settled(t))).count();
            let failed = records.allocations.iter().filter(ours).any(|(a, _)| task(a).is_some_and(|t| t.state == TaskState::Failed));
            let paused = failed && u.failure_action == "pause";
            let waiting = self.last_batch.get(&name).is_some_and(|t| now < *t + Duration::from_millis(u.delay_ms));
            let allowed = if paused || waiting {
                0
            } else if u.parallelism == 0 {
                usize::MAX
            } else {
                (u.parallelism as usize).saturating_sub(in_flight)
            };
            budget.insert(name, allowed);
        }
        let slot = |a: &AllocRef| (a.service.clone(), a.slot.clone());
        let mut held: BTreeSet<(String, String)> = BTreeSet::new();
        let mut started: BTreeSet<String> = BTreeSet::new();
        for action in &plan.actions {
            let alloc = match action {
                Action::Update { alloc, .. } | Action::Stop { alloc, reason: StopReason::NodeDrained } => alloc,
                _ => continue,
            };
            let left = budget.entry(alloc.service.clone()).or_insert(usize::MAX);
            if *left == 0 {
                held.insert(slot(alloc));
            } else {
                *left -= 1;
                started.insert(alloc.service.clone());
            }
        }
        plan.actions.retain(|a| match a {
            Action::Update { alloc, .. } | Action::Start { alloc, .. } => !held.contains(&slot(alloc)),
            Action::Stop { alloc, reason: StopReason::NodeDrained } => !held.contains(&slot(alloc)),
            Action::Stop { .. } => true,
        });
        for s in started {
            self.last_batch.insert(s, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use atoll_sched::{Node, NodeState, Role};
    use atoll_state::desired::{Mode, Resources, Service, UpdateConfig};

    use super::*;

    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            hostname: id.into(),
            role: Role::Private,
            labels: Default::default(),
            os: "linux".into(),
            arch: "x86_64".into(),
            state: NodeState::Up,
            capacity: Resources { nano_cpus: 4_000_000_000, memory_bytes: 8 << 30 },
        }
    }

    fn records(update: UpdateConfig, task: Option<TaskState>) -> Records {
        let svc = Service {
            stack: "s".into(),
            name: "web".into(),
            mode: Mode::Replicated,
            replicas: 3,
            spec: serde_json::json!({"image": "x"}),
            constraints: vec![],
            max_replicas_per_node: None,
            labels: Default::default(),
            generation: 2,
            reservations: Resources::default(),
            update_config: update,
            pinned: false,
            previous: None,
            update_status: None,
            extra: Default::default(),
        };
        let mut r = Records { services: vec![(svc, 1)], ..Default::default() };
        for (slot, n) in [("1", "a"), ("2", "b"), ("3", "c")] {
            let a = Allocation {
                service: "s_web".into(),
                slot: slot.into(),
                node: n.into(),
                desired: Desired::Running,
                generation: 1,
                reservations: Resources::default(),
                extra: Default::default(),
            };
            r.allocations.push((a, 1));
        }
        if let Some(state) = task {
            // The first replica already moved to generation 2 and is in `state` there.
            r.allocations[0].0.generation = 2;
            let t = TaskStatus {
                alloc: Kind::name(&r.allocations[0].0),
                generation: 2,
                state,
                container: None,
                error: None,
                since: 0,
                addresses: Default::default(),
                healthy: None,
                forwards: Default::default(),
                extra: Default::default(),
            };
            r.tasks.insert(t.alloc.clone(), (t, 1));
        }
        r
    }

    fn updates(r: &Records) -> usize {
        let mut plan = atoll_sched::plan(&r.services_only(), &r.allocations_only(), &[node("a"), node("b"), node("c")]);
        Reconciler::default().pace(&mut plan, r);
        plan.actions.iter().filter(|a| matches!(a, Action::Update { .. })).count()
    }

    #[test]
    fn updates_roll_parallelism_at_a_time_and_pause_on_a_failure() {
        let one = UpdateConfig { parallelism: 1, ..Default::default() };
        assert_eq!(updates(&records(one.clone(), None)), 1, "one at a time");
        assert_eq!(updates(&records(UpdateConfig { parallelism: 0, ..Default::default() }, None)), 3, "0 is all at once");
        assert_eq!(updates(&records(one.clone(), Some(TaskState::Running))), 1, "the first one runs: the next goes");
        assert_eq!(updates(&records(one.clone(), Some(TaskState::Preparing))), 0, "the first one is not up yet: wait");
        assert_eq!(updates(&records(one.clone(), Some(TaskState::Failed))), 0, "failure_action pause");
        let go_on = UpdateConfig { parallelism: 1, failure_action: "continue".into(), ..Default::default() };
        assert_eq!(updates(&records(go_on, Some(TaskState::Failed))), 1, "failure_action continue");
    }
}
