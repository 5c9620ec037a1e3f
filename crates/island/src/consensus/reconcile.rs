//! The leader's care of the Raft group, once a second: every island member joins it as a
//! learner (a full replica), removed members leave it, and the voters follow
//! [`atoll_state::voters::plan`] (1, then 3, then 5; public, long-lived members first; a voter
//! gone too long replaced while a majority remains, the operator asked when none does). One
//! membership change at a time, as openraft wants them; what it will do next is kept for
//! `atoll island status`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_state::schema::{self, SCHEMA, Upgrade};
use atoll_state::voters::{Candidate, Policy, Step, plan};
use atoll_state::{NodeId, Request};
use openraft::{ChangeMembers, ServerState};

use super::{address, raft_id};
use crate::manager::{Manager, unix_now};
use crate::model::{IslandState, Member};
use crate::proto;

/// How often the leader looks.
const EVERY: Duration = Duration::from_secs(1);
/// A learner this close to the leader's last index is caught up (may be promoted).
const CAUGHT_UP: u64 = 16;
/// A voter unheard of for longer is mentioned as silent in the plan.
const QUIET: Duration = Duration::from_secs(3);
/// How long a ping may take: a member on the mesh answers in milliseconds, and one round of
/// pings waits for the slowest, which bounds how soon a dead host is noticed (stacks' failover).
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether the member at `addr` (its control plane, `IP:PORT`) answers a ping in time, and
/// what it said: the newest schema its build reads (1 from builds that answer without a body,
/// which came before schemas).
pub(crate) async fn answers(client: &reqwest::Client, addr: &str) -> Option<proto::Pong> {
    let url = format!("https://{addr}{}", proto::PING);
    let r = client.get(&url).timeout(PING_TIMEOUT).send().await.ok().filter(|r| r.status().is_success())?;
    if r.status() == reqwest::StatusCode::NO_CONTENT {
        return Some(proto::Pong { schema_reads: 1 });
    }
    r.json().await.ok()
}

impl Manager {
    /// Runs on every member; acts while it leads.
    pub(crate) async fn reconcile_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = crate::transport::stopped(&mut stop) => return,
            }
            if self.removed() {
                return;
            }
            if let Some(newer) = self.consensus.epoch.newer() {
                self.go_stale(newer).await;
                return;
            }
            let (state, term) = {
                let m = self.consensus.raft.metrics();
                let m = m.borrow();
                (m.state, m.current_term)
            };
            if state != ServerState::Leader {
                *self.consensus.leading_since.lock().unwrap() = None;
                continue;
            }
            let since = {
                let mut l = self.consensus.leading_since.lock().unwrap();
                match *l {
                    Some((t, at)) if t == term => at,
                    _ => l.insert((term, Instant::now())).1,
                }
            };
            if let Err(e) = self.reconcile(since).await {
                tracing::debug!(error = %e, "changing the Raft membership");
                *self.consensus.next.lock().unwrap() = format!("retrying: {e}");
            }
        }
    }

    /// One look: pings, then at most one membership change.
    async fn reconcile(&self, leading_since: Instant) -> Result<(), String> {
        let state = self.state();
        // A leader a majority has not acknowledged lately (cut off with a minority) pings no
        // one: its followers must see that they are cut off (exclusive services fence).
        if self.consensus.leader() == Some(self.consensus.id) {
            self.ping_members(&state).await;
        }
        let c = &self.consensus;
        let metrics = c.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let nodes: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: BTreeMap<NodeId, &Member> = state.members.values().map(|m| (raft_id(&m.id), m)).collect();
        let say = |s: String| *c.next.lock().unwrap() = s;
        let changing =
            |e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, openraft::BasicNode>>| e.to_string();

        if let Some((&id, m)) = members.iter().find(|(id, _)| !nodes.contains(id)) {
            say(format!("adding {} as a learner", m.name));
            c.raft.add_learner(id, address(m, state.island.control_port), false).await.map_err(changing)?;
            tracing::info!(node = %m.name, "added a learner");
            return Ok(());
        }
        let gone: BTreeSet<NodeId> = nodes.iter().filter(|id| !members.contains_key(id)).copied().collect();
        if !gone.is_empty() {
            let remaining: BTreeSet<NodeId> = voters.difference(&gone).copied().collect();
            say(format!("taking {} removed member(s) out of the Raft group", gone.len()));
            let change = if remaining.len() == voters.len() {
                ChangeMembers::RemoveNodes(gone)
            } else if remaining.is_empty() {
                return Err("every voter was removed from the island".into());
            } else {
                ChangeMembers::ReplaceAllVoters(remaining)
            };
            c.raft.change_membership(change, false).await.map_err(changing)?;
            return Ok(());
        }

        let now = Instant::now();
        let heard = c.last_ok.lock().unwrap().clone();
        let last = metrics.last_log_index.unwrap_or(0);
        let replication = metrics.replication.clone().unwrap_or_default();
        let candidates: Vec<Candidate> = members
            .iter()
            .map(|(&id, m)| Candidate {
                id,
                public: !m.public.is_empty(),
                age: Duration::from_secs((unix_now() - m.joined).max(0) as u64),
                silent: if id == c.id { Duration::ZERO } else { now - heard.get(&id).copied().unwrap_or(leading_since) },
                caught_up: id == c.id || replication.get(&id).copied().flatten().is_some_and(|l| l.index + CAUGHT_UP >= last),
                leading: id == c.id,
            })
            .collect();
        let policy = Policy { max_voters: 5, down_after: self.cfg.replace_voter_after };
        let names = |ids: &BTreeSet<NodeId>| c.names_of(ids);
        match plan(&voters, &candidates, policy) {
            Step::Keep => {
                if let Some(said) = self.upgrade_schema(&nodes).await? {
                    say(said);
                    return Ok(());
                }
                let silent: Vec<String> = candidates
                    .iter()
                    .filter(|m| voters.contains(&m.id) && m.silent > QUIET)
                    .map(|m| format!("{} (silent {} s)", names(&BTreeSet::from([m.id])), m.silent.as_secs()))
                    .collect();
                if silent.is_empty() {
                    say(format!("nothing: {} voter(s) ({}) of {} member(s)", voters.len(), names(&voters), members.len()));
                } else {
                    say(format!(
                        "waiting for {}: a voter silent for {} s is replaced by a member that is up, if a majority remains",
                        silent.join(", "),
                        policy.down_after.as_secs()
                    ));
                }
            }
            Step::Change { voters: next, .. } => {
                let why = format!("making {} the voters (were {})", names(&next), names(&voters));
                say(why.clone());
                c.raft.change_membership(ChangeMembers::ReplaceAllVoters(next), true).await.map_err(changing)?;
                tracing::info!(change = %why, "changed the voters");
            }
            Step::AskOperator { lost, why } => say(format!(
                "nothing on its own: {why}. Voters lost: {}. Start them again; Atoll will not guess which writes may be given up",
                names(&lost)
            )),
        }
        Ok(())
    }

    /// Asks every other member whether it is up, all at once; records who answered.
    async fn ping_members(&self, state: &IslandState) {
        let client = self.client();
        let port = state.island.control_port;
        let pings = state.members.values().filter(|m| m.id != self.me).map(|m| {
            let (client, addr, id) = (client.clone(), format!("{}:{port}", m.mesh_ip), raft_id(&m.id));
            async move { (id, answers(&client, &addr).await) }
        });
        let results = futures_util::future::join_all(pings).await;
        let now = Instant::now();
        let mut last = self.consensus.last_ok.lock().unwrap();
        let mut reads = self.consensus.reads.lock().unwrap();
        for (id, pong) in results {
            match pong {
                Some(p) => {
                    last.insert(id, now);
                    reads.insert(id, p.schema_reads);
                }
                None => {
                    reads.remove(&id);
                }
            }
        }
    }

    /// Moves the island to the next schema once every member's build reads it
    /// ([`atoll_state::schema::plan`]); otherwise says who holds it back.
    async fn upgrade_schema(&self, nodes: &BTreeSet<NodeId>) -> Result<Option<String>, String> {
        let c = &self.consensus;
        let active = c.reader.with(|k| k.schema);
        let heard = c.reads.lock().unwrap().clone();
        let reads = nodes.iter().map(|&id| (id, if id == c.id { Some(SCHEMA) } else { heard.get(&id).copied() })).collect();
        match schema::plan(active, SCHEMA, &reads) {
            Upgrade::Current => Ok(None),
            Upgrade::Migrate { to } => {
                c.raft.client_write(Request::Migrate { to }).await.map_err(|e| e.to_string())?;
                let what: Vec<&str> = schema::MIGRATIONS.iter().filter(|m| m.to == to).map(|m| m.what).collect();
                tracing::info!(schema = to, migrations = ?what, "migrated the island's state");
                Ok(Some(format!("migrated the island's state to schema {to}")))
            }
            Upgrade::Wait { to, behind } => {
                let who: Vec<String> = behind
                    .iter()
                    .map(|(id, r)| match r {
                        Some(r) => format!("{} (reads {r})", c.name(*id)),
                        None => format!("{} (not answering)", c.name(*id)),
                    })
                    .collect();
                Ok(Some(format!("schema {to} (this build's) waits for every member to run a build that reads it: {}", who.join(", "))))
            }
        }
    }
}
