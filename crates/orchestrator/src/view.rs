//! What `stack ls`, `stack ps`, `service ls` and `service ps` show, from any member's replica
//! (a local read: it may lag the leader by what is in flight). Replicas that cannot be placed
//! are shown as pending with the scheduler's reason, never left out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use atoll_island::model::IslandState;
use atoll_state::desired::{Desired, Kind, Mode, TaskState};

use crate::records::Records;

/// One stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StackSummary {
    pub name: String,
    pub services: usize,
    pub generation: u64,
}

/// One replica (Swarm's task), or the replicas of a service that cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    /// The allocation, `<service>.<slot>/<member id>` (empty for pending replicas).
    pub id: String,
    /// `<service>.<slot>` as Swarm names tasks (`<service>.?` for pending ones).
    pub name: String,
    pub service: String,
    pub image: String,
    /// The member's name (empty for pending replicas).
    pub node: String,
    pub generation: u64,
    /// `running` or `shutdown`.
    pub desired_state: String,
    /// `preparing`, `running`, `complete`, `failed`, `shutdown`, `pending` (not placed),
    /// `assigned` (not reported yet) or `unknown` (its member is down).
    pub current_state: String,
    /// Unix seconds of the last change its member reported.
    pub since: Option<i64>,
    /// Why it failed or is pending, in words.
    pub error: Option<String>,
    /// The container on its member.
    pub container: Option<String>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceSummary {
    /// `<stack>_<service>`.
    pub name: String,
    pub stack: String,
    /// `replicated` or `global`.
    pub mode: String,
    /// Replicas running now.
    pub running: usize,
    /// Replicas wanted (for a global service, the members it may run on).
    pub desired: usize,
    pub image: String,
    pub generation: u64,
    /// Why replicas are not placed, if some are not.
    pub pending: Option<String>,
    /// How its last rollout ended, when not simply done (`paused: …`, `rolled back …`).
    pub update_status: Option<String>,
}

fn image(s: &atoll_state::desired::Service) -> String {
    s.spec.get("image").and_then(|i| i.as_str()).unwrap_or_default().to_owned()
}

fn state_word(s: TaskState) -> &'static str {
    match s {
        TaskState::Preparing => "preparing",
        TaskState::Running => "running",
        TaskState::Complete => "complete",
        TaskState::Failed => "failed",
        TaskState::Shutdown => "shutdown",
    }
}

/// Every stack, by name.
pub fn stacks(r: &Records) -> Vec<StackSummary> {
    r.stacks
        .iter()
        .map(|(s, _)| StackSummary { name: s.name.clone(), services: r.services_of(&s.name).count(), generation: s.generation })
        .collect()
}

/// The replicas of the services `which` selects, placed ones by service and slot, then the
/// pending ones.
pub fn tasks(r: &Records, island: &IslandState, which: impl Fn(&atoll_state::desired::Service) -> bool) -> Vec<Task> {
    let name_of = |id: &str| island.members.get(id).map_or_else(|| id.to_owned(), |m| m.name.clone());
    let mut out = Vec::new();
    for (a, _) in &r.allocations {
        // (A removed service's replicas still stopping are not shown: it is gone.)
        let Some((svc, _)) = r.service(&a.service).filter(|(s, _)| which(s)) else { continue };
        let id = Kind::name(a);
        let task = r.tasks.get(&id).map(|(t, _)| t).filter(|t| t.generation == a.generation);
        let down = r.liveness.get(&a.node).is_some_and(|(l, _)| l.down);
        let (current, error) = match task {
            _ if down && svc.pinned => {
                ("unknown".to_owned(), Some(format!("its node {} is down; it waits there: it has named volumes", name_of(&a.node))))
            }
            _ if down => ("unknown".to_owned(), Some(format!("its node {} is down", name_of(&a.node)))),
            Some(t) => (state_word(t.state).to_owned(), t.error.clone()),
            None => ("assigned".to_owned(), None),
        };
        // A shut-down replica its member confirmed stopped is history: `ps` shows what is.
        if a.desired == Desired::Shutdown && current == "shutdown" {
            continue;
        }
        out.push(Task {
            id: id.clone(),
            name: format!("{}.{}", a.service, a.slot),
            service: a.service.clone(),
            image: image(svc),
            node: name_of(&a.node),
            generation: a.generation,
            desired_state: if a.desired == Desired::Running { "running" } else { "shutdown" }.into(),
            current_state: current,
            since: task.map(|t| t.since),
            error,
            container: task.and_then(|t| t.container.clone()),
        });
    }
    let plan = atoll_sched::plan(&r.services_only(), &r.allocations_only(), &r.nodes(island));
    for p in &plan.pending {
        let Some((svc, _)) = r.service(&p.service).filter(|(s, _)| which(s)) else { continue };
        for _ in 0..p.missing.max(1) {
            out.push(Task {
                id: String::new(),
                name: format!("{}.?", p.service),
                service: p.service.clone(),
                image: image(svc),
                node: String::new(),
                generation: svc.generation,
                desired_state: "running".into(),
                current_state: "pending".into(),
                since: None,
                error: Some(p.reason.to_string()),
                container: None,
            });
        }
    }
    out
}

/// The services `which` selects, by name.
pub fn services(r: &Records, island: &IslandState, which: impl Fn(&atoll_state::desired::Service) -> bool) -> Vec<ServiceSummary> {
    let nodes = r.nodes(island);
    let plan = atoll_sched::plan(&r.services_only(), &r.allocations_only(), &nodes);
    let pending: BTreeMap<&str, String> = plan.pending.iter().map(|p| (p.service.as_str(), p.reason.to_string())).collect();
    r.services
        .iter()
        .filter(|(s, _)| which(s))
        .map(|(s, _)| {
            let name = Kind::name(s);
            let running = r
                .allocations
                .iter()
                .filter(|(a, _)| a.service == name && a.desired == Desired::Running)
                .filter(|(a, _)| {
                    r.tasks.get(&Kind::name(a)).is_some_and(|(t, _)| t.state == TaskState::Running && t.generation == a.generation)
                })
                .count();
            let desired = match s.mode {
                Mode::Replicated => s.replicas as usize,
                Mode::Global => r.allocations.iter().filter(|(a, _)| a.service == name && a.desired == Desired::Running).count(),
            };
            ServiceSummary {
                name: name.clone(),
                stack: s.stack.clone(),
                mode: if s.mode == Mode::Global { "global" } else { "replicated" }.into(),
                running,
                desired,
                image: image(s),
                generation: s.generation,
                pending: pending.get(name.as_str()).cloned(),
                update_status: s.update_status.clone(),
            }
        })
        .collect()
}
