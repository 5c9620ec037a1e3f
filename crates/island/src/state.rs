//! The replicated state as the layers above the island use it (stacks today; names,
//! certificates and the gateway next): this member's replica to read, writes through the
//! leader, and what only the leader knows (who it hears from).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use atoll_state::store::Reader;
use atoll_state::{Request, Response};
use openraft::ServerState;

use crate::consensus::raft_id;
use crate::manager::{IslandError, Manager};

impl Manager {
    /// This member's replica of the state, as it last applied it (a local read: it may lag
    /// the leader by what is in flight).
    pub fn replica(&self) -> &Reader {
        &self.consensus.reader
    }

    /// The index of the last entry this member applied: it changes whenever the replica does.
    pub fn applied_index(&self) -> u64 {
        self.consensus.raft.metrics().borrow().last_applied.map_or(0, |l| l.index)
    }

    /// Commits `req` through the leader (forwarded from a follower), up to the island's write
    /// timeout.
    pub async fn propose(&self, req: Request) -> Result<Response, IslandError> {
        self.present()?;
        Ok(self.consensus.write(req).await?)
    }

    /// Whether this member leads the island now (and a majority acknowledged it lately).
    pub fn leads(&self) -> bool {
        let m = self.consensus.raft.metrics().borrow().clone();
        m.state == ServerState::Leader && self.consensus.leader() == Some(self.consensus.id)
    }

    /// How long this member has been cut off from the leader: zero while it leads, else the
    /// time since the leader last pinged it (the leader pings every member each second, and
    /// declares one down after its `--failover-after` of silence).
    pub fn cut_off_for(&self) -> Duration {
        let mut pinged = self.pinged.lock().unwrap();
        if self.leads() {
            // Leading counts as hearing the leader: stepping down starts the clock afresh.
            *pinged = Instant::now();
        }
        pinged.elapsed()
    }

    /// Notes a ping from `caller` (a node ID): from the leader, this member is not cut off.
    pub(crate) fn pinged_by(&self, caller: &str) {
        if self.consensus.leader() == Some(raft_id(caller)) {
            *self.pinged.lock().unwrap() = Instant::now();
        }
    }

    /// While this member leads: how long each member (by id) has been silent, from its pings
    /// (counted from when this member started leading for one never heard since; zero for this
    /// member). `None` when it does not lead.
    pub fn silence(&self) -> Option<BTreeMap<String, Duration>> {
        let (_, since) = (*self.consensus.leading_since.lock().unwrap())?;
        if !self.leads() {
            return None;
        }
        let now = Instant::now();
        let heard = self.consensus.last_ok.lock().unwrap().clone();
        Some(
            self.state()
                .members
                .values()
                .map(|m| {
                    let id = raft_id(&m.id);
                    let silent = if m.id == self.me { Duration::ZERO } else { now - heard.get(&id).copied().unwrap_or(since).max(since) };
                    (m.id.clone(), silent)
                })
                .collect(),
        )
    }
}

impl Manager {
    /// The names' data key (32 bytes, base64): what certificates' private keys are sealed
    /// with before they enter the replicated state. The CA host makes it once and keeps it
    /// with the CA keys; every other member fetches it from the CA host over the control
    /// plane and caches it (0600), so it never enters the Raft log. Errors while the CA host
    /// cannot be reached and this member never fetched it.
    pub async fn names_key(&self) -> Result<String, IslandError> {
        let ca_host = self.is_ca_host();
        let path = self.paths.names_key(ca_host);
        if let Ok(k) = std::fs::read_to_string(&path) {
            return Ok(k.trim().to_owned());
        }
        let key = if ca_host {
            use base64::Engine;
            use ring::rand::SecureRandom;
            let mut bytes = [0u8; 32];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| IslandError::Io { path: path.clone(), source: std::io::Error::other("the system's random source failed") })?;
            base64::engine::general_purpose::STANDARD.encode(bytes)
        } else {
            let url = self.ca_url(&self.state(), crate::proto::NAMES_KEY);
            crate::transport::get::<crate::proto::NamesKey>(&self.client(), &url).await?.key
        };
        // Two callers at once (the certificate worker and the gateway, as the daemon starts)
        // must end with one key: the first to store it wins, the other takes what it stored.
        // (Found by CI: two keys were made on the CA host, certificates sealed under one and
        // opened with the other.)
        match atoll_util::write_new(&path, key.as_bytes(), 0o600) {
            Ok(()) => Ok(key),
            Err(atoll_util::Error::Write { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::read_to_string(&path).map(|k| k.trim().to_owned()).map_err(|source| IslandError::Io { path: path.clone(), source })
            }
            Err(e) => Err(IslandError::Io { path: path.clone(), source: std::io::Error::other(e) }),
        }
    }

    /// Makes this member's replica hold `key` as it is now on the island: asks the leader for
    /// it (ReadIndex) and waits until the replica has applied its version. For a write that
    /// found `key` missing in a replica that may lag (a member that just joined): true if the
    /// key exists after all (plan again), false if it does not.
    pub async fn catch_up_to(&self, key: &str) -> Result<bool, IslandError> {
        self.present()?;
        match self.consensus.read(key, true).await? {
            Some(v) => Ok(self.wait_applied(v.version, Duration::from_secs(5)).await),
            None => Ok(false),
        }
    }

    /// Waits (up to `timeout`) until this member's replica has applied the entry at `index`:
    /// after a write, its own reads see it (read-your-writes on one member).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        self.consensus
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.last_applied.is_some_and(|l| l.index >= index), "the replica to apply a write")
            .await
            .is_ok()
    }
}

/// The stacks' view of every member (from `desired/node`, `observed/node` and the
/// allocations), for `node ls`. Records that do not decode are left out.
#[derive(Debug, Default)]
pub(crate) struct NodeStacks {
    pub availability: BTreeMap<String, String>,
    pub resources: BTreeMap<String, crate::manager::NodeResources>,
}

pub(crate) fn node_stacks(ks: &atoll_state::keyspace::Keyspace) -> NodeStacks {
    use atoll_state::desired::{self, Allocation, Availability, Desired, NodeSpec, NodeStatus};
    let mut out = NodeStacks::default();
    for (n, _) in desired::list::<NodeSpec>(ks).unwrap_or_default() {
        out.availability.insert(n.id, if n.availability == Availability::Drain { "drain" } else { "active" }.into());
    }
    for (n, _) in desired::list::<NodeStatus>(ks).unwrap_or_default() {
        out.resources.insert(
            n.id,
            crate::manager::NodeResources {
                nano_cpus: n.capacity.nano_cpus,
                memory_bytes: n.capacity.memory_bytes,
                reserved_nano_cpus: 0,
                reserved_memory_bytes: 0,
                replicas: 0,
            },
        );
    }
    for (a, _) in desired::list::<Allocation>(ks).unwrap_or_default() {
        if let (Desired::Running, Some(r)) = (a.desired, out.resources.get_mut(&a.node)) {
            r.reserved_nano_cpus += a.reservations.nano_cpus;
            r.reserved_memory_bytes += a.reservations.memory_bytes;
            r.replicas += 1;
        }
    }
    out
}

impl Manager {
    /// Waits until this member's replica applies an entry past `index`, or `timeout` passes:
    /// what the stacks' loops wait on between looks.
    pub async fn applied_past(&self, index: u64, timeout: Duration) {
        let _ = self
            .consensus
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.last_applied.is_some_and(|l| l.index > index), "the replica to change")
            .await;
    }
}
