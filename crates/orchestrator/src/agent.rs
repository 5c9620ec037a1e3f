//! Each member's agent: it runs exactly the allocations desired running on this member at
//! their generation, through the node engine, and nothing else of the stacks.
//!
//! A replica is a container named `<service>.<slot>.<generation>` (the slot shortened for
//! global services), labelled with its stack, service, allocation and generation. At each
//! look the agent
//!
//! - removes every stack container whose allocation is gone, desired shut down, or at another
//!   generation (for `order: start-first` updates, only once the new generation runs);
//! - starts, one task per allocation, each one desired running that has no container at its
//!   generation: the stack's networks and volumes are made first, the image pulled if missing;
//! - reports each allocation's state in `observed/task` when it changed, and this member's
//!   capacity and platform in `observed/node` once;
//! - removes the networks of stacks that no longer exist and no container uses;
//! - keeps the island's overlay up while this member has stack networks (each has a prefix
//!   island-wide, and this member's bridge the slice of it at its overlay index), and hands
//!   the networking the other members' running replicas: their addresses, which only the same
//!   network's replicas here may reach, and the names DNS answers with them (`<service>`,
//!   `tasks.<service>`, the compose name).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use atoll_island::Manager;
use atoll_island::model::IslandState;
use atoll_node::{ContainerRecord, Engine, State};
use atoll_spec::{ContainerSpec, NetworkSpec};
use atoll_state::desired::{self, Allocation, Desired, Kind, NodeStatus, Resources, Service, Stack, TaskState, TaskStatus};
use atoll_state::{Expect, Request};
use ipnet::Ipv4Net;

use crate::records::Records;
use crate::{LABEL_ALLOCATION, LABEL_GENERATION, LABEL_SERVICE, LABEL_STACK};

/// A start that failed: at which generation, why, and when to try again.
#[derive(Debug, Clone)]
struct Failure {
    generation: u64,
    why: String,
    attempts: u32,
    retry_at: std::time::Instant,
}

/// How long after its `n`th failed start (from 1) a replica is tried again: 5 s, doubling, at
/// most 5 minutes (a registry that was down, a port another program held).
fn retry_after(n: u32) -> std::time::Duration {
    std::time::Duration::from_secs((5u64 << n.saturating_sub(1).min(6)).min(300))
}

/// One member's agent.
pub struct Agent {
    engine: Arc<Engine>,
    /// Allocations a task is starting or replacing now.
    busy: Arc<Mutex<HashSet<String>>>,
    /// The last start that failed, by allocation.
    failed: Arc<Mutex<HashMap<String, Failure>>>,
    /// Containers being stopped and removed now.
    stopping: Arc<Mutex<HashSet<String>>>,
    /// Told when a start or a stop finished: there is something to report.
    wake: Arc<tokio::sync::Notify>,
    /// Cut off from the leader for this long, this member stops its exclusive replicas
    /// ([`atoll_state::desired::LABEL_EXCLUSIVE`]): less than the leader's failover time.
    fence_after: std::time::Duration,
}

/// When a member stops its exclusive replicas, given after how long the leader declares a
/// silent member down: 3/4 of it (3 s of 4 s), which leaves a look (0.5 s, its report bounded
/// by [`REPORT_TIMEOUT`]) and a SIGKILL before the leader starts them elsewhere, and tolerates
/// a missed ping round (the leader pings each member every 1–2 s).
pub fn fence_after(down_after: std::time::Duration) -> std::time::Duration {
    down_after * 3 / 4
}

/// The longest a look waits for its report to be written: a member cut off from the leader
/// must keep looking (and fencing), not wait on a write that cannot commit.
pub const REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// What this host offers replicas: every CPU and all of its memory (`MemTotal`).
pub fn capacity() -> Resources {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .unwrap_or(0);
    Resources { nano_cpus: cpus * 1_000_000_000, memory_bytes: mem * 1024 }
}

/// The container name of allocation `a` at its generation.
pub fn container_name(a: &Allocation) -> String {
    let slot = if a.slot.len() > 12 { &a.slot[..12] } else { &a.slot };
    format!("{}.{slot}.{}", a.service, a.generation)
}

/// The container allocation `a` of `service` runs: its spec, named and labelled, answering on
/// each network to its service's names (`web` and `blog_web` for service `web` of stack `blog`)
/// and to `tasks.` and those, as Swarm's do.
pub fn replica_spec(service: &Service, a: &Allocation) -> Result<ContainerSpec, serde_json::Error> {
    let mut spec: ContainerSpec = serde_json::from_value(service.spec.clone())?;
    spec.name = Some(container_name(a));
    spec.labels.insert(LABEL_STACK.into(), service.stack.clone());
    spec.labels.insert(LABEL_SERVICE.into(), a.service.clone());
    spec.labels.insert(LABEL_ALLOCATION.into(), Kind::name(a));
    spec.labels.insert(LABEL_GENERATION.into(), a.generation.to_string());
    for att in &mut spec.networks {
        let names = [service.name.clone(), a.service.clone()];
        for alias in names.iter().cloned().chain(names.iter().map(|n| format!("tasks.{n}"))) {
            if !att.aliases.contains(&alias) {
                att.aliases.push(alias);
            }
        }
    }
    Ok(spec)
}

fn label<'a>(c: &'a ContainerRecord, key: &str) -> Option<&'a str> {
    c.spec.labels.get(key).map(String::as_str)
}

fn generation_of(c: &ContainerRecord) -> u64 {
    label(c, LABEL_GENERATION).and_then(|g| g.parse().ok()).unwrap_or(0)
}

/// What a container says of its replica.
fn task_state(c: &ContainerRecord) -> (TaskState, Option<String>) {
    match c.state {
        State::Running => (TaskState::Running, None),
        State::Created => (TaskState::Preparing, None),
        // Swarm's task would have failed (and a new one started): a rollout must see it.
        State::Restarting => (
            TaskState::Failed,
            Some(format!(
                "exited with code {}; restarting (restart {})",
                c.exit_code.map_or("unknown".into(), |c| c.to_string()),
                c.restart_count
            )),
        ),
        State::Exited if c.exit_code == Some(0) => (TaskState::Complete, None),
        State::Exited => (TaskState::Failed, Some(format!("exited with code {}", c.exit_code.map_or("unknown".into(), |c| c.to_string())))),
    }
}

impl Agent {
    /// An agent for a leader that declares a member down after `down_after` of silence.
    pub fn new(engine: Arc<Engine>, down_after: std::time::Duration) -> Self {
        Agent {
            engine,
            busy: Arc::default(),
            failed: Arc::default(),
            stopping: Arc::default(),
            wake: Arc::default(),
            fence_after: fence_after(down_after),
        }
    }

    /// Returns when a start or a stop this agent began has finished.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// One look. Errors are the replicated state's (reading or reporting); a replica that
    /// fails to start is reported as failed instead.
    pub async fn tick(&self, m: &Arc<Manager>) -> Result<(), crate::DeployError> {
        let me = m.id().to_owned();
        let records = m.replica().with(Records::read)?;
        let island = m.state();
        let mut ops = Vec::new();
        self.report_node(&me, &records, &mut ops);

        let mine: BTreeMap<String, &Allocation> =
            records.allocations.iter().filter(|(a, _)| a.node == me).map(|(a, _)| (Kind::name(a), a)).collect();
        let containers: Vec<ContainerRecord> =
            self.engine.list(true).into_iter().filter(|c| c.spec.labels.contains_key(LABEL_ALLOCATION)).collect();
        let busy = self.busy.lock().unwrap().clone();
        let exclusive = |c: &ContainerRecord| label(c, LABEL_SERVICE).and_then(|s| records.service(s)).is_some_and(|(s, _)| s.exclusive());
        let cut_off = m.cut_off_for() >= self.fence_after;

        // Cut off from the leader, which will start them elsewhere: exclusive replicas stop now
        // (SIGKILL: the leader does not wait for a grace period).
        if cut_off {
            for c in containers.iter().filter(|c| exclusive(c) && c.state != State::Exited) {
                if !self.stopping.lock().unwrap().contains(&c.id) {
                    tracing::warn!(container = %c.name, "cut off from the island's leader: stopping an exclusive replica");
                    self.spawn_fence(c.clone());
                }
            }
        }

        // Stop what must not run: gracefully (its stop signal, then its grace period), each in
        // a task of its own. A stop-first update's old replica is stopped by the task that
        // starts the new one, so that the two never run together.
        let stopping = self.stopping.lock().unwrap().clone();
        for c in &containers {
            let name = label(c, LABEL_ALLOCATION).unwrap_or_default();
            if busy.contains(name) || stopping.contains(&c.id) {
                continue;
            }
            let wanted = mine.get(name).filter(|a| a.desired == Desired::Running);
            let stop = match wanted {
                Some(a) if a.generation == generation_of(c) => false,
                Some(a) => {
                    let start_first = records.service(&a.service).is_some_and(|(s, _)| s.update_config.start_first);
                    // start-first: the old generation runs until the new one does.
                    start_first
                        && containers.iter().any(|n| {
                            label(n, LABEL_ALLOCATION) == Some(name) && generation_of(n) == a.generation && n.state == State::Running
                        })
                }
                None => true,
            };
            if stop {
                tracing::info!(container = %c.name, allocation = name, "stopping a replica this member no longer runs");
                self.spawn_stop(c.clone());
            }
        }

        // Start what must run.
        for (name, a) in &mine {
            if a.desired != Desired::Running || busy.contains(name) {
                continue;
            }
            if let Some(c) = containers.iter().find(|c| label(c, LABEL_ALLOCATION) == Some(name) && generation_of(c) == a.generation) {
                // Stopped by hand (`atoll stop`): its service wants it running, as Swarm would
                // replace the task (found by QA: it stayed down). Its restart policy decides.
                if c.state == State::Exited && c.stopped_by_user && c.spec.restart != atoll_spec::RestartPolicy::No {
                    self.spawn_restart(name.clone(), c.id.clone());
                }
                continue;
            }
            if self.failed.lock().unwrap().get(name).is_some_and(|f| f.generation == a.generation && std::time::Instant::now() < f.retry_at)
            {
                // Failed at this generation: tried again after a backoff (or at once for a new one).
                continue;
            }
            let Some((service, _)) = records.service(&a.service) else { continue };
            if cut_off && service.exclusive() {
                continue;
            }
            let Some((stack, _)) = records.stack(&service.stack) else { continue };
            let index = island.members.get(&me).and_then(|x| x.overlay_index);
            self.spawn_start(name.clone(), (*a).clone(), service.clone(), stack.clone(), index);
        }

        // Report.
        let containers: Vec<ContainerRecord> =
            self.engine.list(true).into_iter().filter(|c| c.spec.labels.contains_key(LABEL_ALLOCATION)).collect();
        let mut forwarded = self.sync_forwards(&island, &me, &records, &containers).await;
        let busy = self.busy.lock().unwrap().clone();
        let now = atoll_island::manager::unix_now();
        for (name, a) in &mine {
            let current = records.tasks.get(name);
            let at_gen = containers.iter().find(|c| label(c, LABEL_ALLOCATION) == Some(name) && generation_of(c) == a.generation);
            let any = containers.iter().any(|c| label(c, LABEL_ALLOCATION) == Some(name.as_str()));
            let mut addresses = BTreeMap::new();
            let mut healthy = None;
            let mut forwards = BTreeMap::new();
            let (state, container, error) = match a.desired {
                Desired::Shutdown if !any && !busy.contains(name) => (TaskState::Shutdown, None, None),
                Desired::Shutdown => continue,
                Desired::Running => match at_gen {
                    Some(c) => {
                        let (s, e) = task_state(c);
                        if s == TaskState::Running {
                            addresses = c.endpoints.iter().map(|e| (e.network.clone(), e.ipv4)).collect();
                            healthy = c.health.as_ref().map(|h| h.status == atoll_spec::health::HealthStatus::Healthy);
                            forwards = forwarded.remove(&c.id).unwrap_or_default();
                        }
                        (s, Some(c.name.clone()), e)
                    }
                    None => match self.failed.lock().unwrap().get(name).filter(|f| f.generation == a.generation) {
                        Some(f) => (TaskState::Failed, None, Some(f.why.clone())),
                        None => (TaskState::Preparing, None, None),
                    },
                },
            };
            let same = current.is_some_and(|(t, _)| {
                t.state == state
                    && t.generation == a.generation
                    && t.container == container
                    && t.error == error
                    && t.addresses == addresses
                    && t.healthy == healthy
                    && t.forwards == forwards
            });
            if !same {
                let t = TaskStatus {
                    alloc: name.clone(),
                    generation: a.generation,
                    state,
                    container,
                    error,
                    since: now,
                    addresses,
                    healthy,
                    forwards,
                    extra: Default::default(),
                };
                ops.push(desired::put(&t, current.map_or(Expect::Absent, |(_, v)| Expect::Version(*v))));
            }
        }
        self.remove_stale_networks(&records, &containers).await;
        self.sync_overlay(&island, &me, &records, &containers).await;

        if !ops.is_empty() {
            // Not written in time: the next look computes the report again.
            if let Ok(r) = tokio::time::timeout(REPORT_TIMEOUT, m.propose(Request::Txn { ops })).await {
                r?;
            }
        }
        Ok(())
    }

    /// This member's capacity and platform, when the state lacks them or they changed.
    fn report_node(&self, me: &str, records: &Records, ops: &mut Vec<Request>) {
        let status = NodeStatus {
            id: me.to_owned(),
            capacity: capacity(),
            arch: std::env::consts::ARCH.into(),
            os: std::env::consts::OS.into(),
            extra: Default::default(),
        };
        let current = records.node_status.get(me);
        if current.is_none_or(|(s, _)| s.capacity != status.capacity || s.arch != status.arch) {
            ops.push(desired::put(&status, current.map_or(Expect::Absent, |(_, v)| Expect::Version(*v))));
        }
    }

    fn spawn_stop(&self, c: ContainerRecord) {
        self.stopping.lock().unwrap().insert(c.id.clone());
        let (engine, stopping, wake) = (self.engine.clone(), self.stopping.clone(), self.wake.clone());
        tokio::spawn(async move {
            if let Err(e) = stop_and_remove(&engine, &c).await {
                tracing::warn!(container = %c.name, error = %e, "removing a replica");
            }
            stopping.lock().unwrap().remove(&c.id);
            wake.notify_one();
        });
    }

    /// Kills and removes `c` at once.
    fn spawn_fence(&self, c: ContainerRecord) {
        self.stopping.lock().unwrap().insert(c.id.clone());
        let (engine, stopping, wake) = (self.engine.clone(), self.stopping.clone(), self.wake.clone());
        tokio::spawn(async move {
            if let Err(e) = engine.remove(&c.id, true, false).await {
                tracing::warn!(container = %c.name, error = %atoll_node::error_chain(&e), "removing an exclusive replica");
            }
            stopping.lock().unwrap().remove(&c.id);
            wake.notify_one();
        });
    }

    fn spawn_restart(&self, name: String, id: String) {
        self.busy.lock().unwrap().insert(name.clone());
        let (engine, busy, wake) = (self.engine.clone(), self.busy.clone(), self.wake.clone());
        tokio::spawn(async move {
            tracing::info!(allocation = %name, "starting a replica that was stopped by hand");
            if let Err(e) = engine.start(&id, false).await {
                tracing::warn!(allocation = %name, error = %atoll_node::error_chain(&e), "starting a replica again");
            }
            busy.lock().unwrap().remove(&name);
            wake.notify_one();
        });
    }

    fn spawn_start(&self, name: String, a: Allocation, service: Service, stack: Stack, index: Option<u16>) {
        self.busy.lock().unwrap().insert(name.clone());
        let (engine, busy, failed, wake) = (self.engine.clone(), self.busy.clone(), self.failed.clone(), self.wake.clone());
        tokio::spawn(async move {
            match start(&engine, &a, &service, &stack, index).await {
                Ok(c) => {
                    tracing::info!(container = %c.name, allocation = %name, "started a replica");
                    failed.lock().unwrap().remove(&name);
                }
                Err(why) => {
                    tracing::warn!(allocation = %name, error = %why, "starting a replica");
                    let mut failed = failed.lock().unwrap();
                    let attempts = failed.get(&name).filter(|f| f.generation == a.generation).map_or(0, |f| f.attempts) + 1;
                    let retry_at = std::time::Instant::now() + retry_after(attempts);
                    failed.insert(name.clone(), Failure { generation: a.generation, why, attempts, retry_at });
                }
            }
            busy.lock().unwrap().remove(&name);
            wake.notify_one();
        });
    }

    /// The overlay while this member has stack networks (none otherwise), the other members'
    /// running replicas, and which of this member's `containers` (its stack replicas) DNS
    /// leaves unnamed: those whose health check has not passed. Failures are logged and tried
    /// again at the next look.
    async fn sync_overlay(&self, island: &IslandState, me: &str, records: &Records, containers: &[ContainerRecord]) {
        let nets = self.engine.networks();
        let prefixes: BTreeMap<String, Ipv4Net> = nets.list().await.into_iter().filter_map(|n| Some((n.name, n.overlay4?))).collect();
        let overlay = if prefixes.is_empty() { None } else { overlay(island, me, &prefixes.values().copied().collect::<Vec<_>>()) };
        if let Err(e) = nets.set_overlay(overlay).await {
            tracing::warn!(error = %atoll_node::error_chain(&e), "bringing up the island's overlay");
        }
        let index_of = |node: &str| island.members.get(node).and_then(|x| x.overlay_index);
        let remote = remote_endpoints(me, records, &prefixes, index_of);
        let unnamed = containers
            .iter()
            .filter(|c| c.health.as_ref().is_some_and(|h| h.status != atoll_spec::health::HealthStatus::Healthy))
            .map(|c| c.id.clone())
            .collect();
        if let Err(e) = nets.set_replicas(remote, unnamed).await {
            tracing::warn!(error = %atoll_node::error_chain(&e), "telling DNS and the firewall of the island's replicas");
        }
    }

    /// Forwards from this member's mesh address the ports the gateway needs of each running
    /// replica here ([`atoll_state::ingress::forwarded_ports`]): a forward that stays keeps its
    /// port, a new one takes the lowest free in [`atoll_island::FORWARD_PORTS`]. Returns them
    /// by container ID, as tasks report them (`2368/tcp` → port).
    async fn sync_forwards(
        &self,
        island: &IslandState,
        me: &str,
        records: &Records,
        containers: &[ContainerRecord],
    ) -> BTreeMap<String, BTreeMap<String, u16>> {
        use atoll_net::overlay::{MeshForward, MeshForwards};
        use atoll_state::ingress::{Transport, forwarded_ports, port_key};
        let nets = self.engine.networks();
        let current = nets.forwards().await;
        let mesh_ip = island.members.get(me).map(|m| m.mesh_ip);
        let routes: Vec<atoll_state::ingress::GatewayRoute> = records.routes.iter().map(|(r, _)| r.clone()).collect();
        let protocol = |t| match t {
            Transport::Tcp => atoll_spec::Protocol::Tcp,
            Transport::Udp => atoll_spec::Protocol::Udp,
        };
        let wanted: Vec<(&ContainerRecord, u16, Transport)> = containers
            .iter()
            .filter(|c| c.state == State::Running)
            .filter_map(|c| Some((c, &label(c, LABEL_SERVICE).and_then(|s| records.service(s))?.0)))
            .flat_map(|(c, svc)| forwarded_ports(svc, &routes).into_iter().map(move |(p, t)| (c, p, t)))
            .collect();
        let kept = |c: &ContainerRecord, port: u16, t: Transport| {
            current
                .forwards
                .iter()
                .find(|f| current.mesh_ip == mesh_ip && f.owner == c.id && f.container_port == port && f.protocol == protocol(t))
                .map(|f| f.host_port)
        };
        let used: std::collections::BTreeSet<u16> = wanted.iter().filter_map(|(c, p, t)| kept(c, *p, *t)).collect();
        let mut free = (atoll_island::FORWARD_PORTS.0..=atoll_island::FORWARD_PORTS.1).filter(|p| !used.contains(p));
        let mut forwards = Vec::new();
        let mut out: BTreeMap<String, BTreeMap<String, u16>> = BTreeMap::new();
        for (c, port, t) in wanted {
            let Some(host_port) = kept(c, port, t).or_else(|| free.next()) else {
                tracing::warn!(container = %c.name, port, "every port the gateway's forwards may use is taken: this replica is not reachable from the public hosts");
                continue;
            };
            forwards.push(MeshForward { owner: c.id.clone(), host_port, protocol: protocol(t), container_port: port });
            out.entry(c.id.clone()).or_default().insert(port_key(port, t), host_port);
        }
        if mesh_ip.is_none() {
            out.clear();
            forwards.clear();
        }
        if let Err(e) = nets.set_forwards(MeshForwards { mesh_ip, forwards }).await {
            tracing::warn!(error = %atoll_node::error_chain(&e), "forwarding replicas' ports from the mesh address");
            out.clear();
        }
        out
    }

    /// Leaves the island's networking (this host is no longer a member).
    pub async fn off_island(&self) {
        let nets = self.engine.networks();
        let _ = nets.set_forwards(Default::default()).await;
        if nets.overlay().await.is_some() {
            let _ = nets.set_replicas(Default::default(), Default::default()).await;
            if let Err(e) = nets.set_overlay(None).await {
                tracing::warn!(error = %atoll_node::error_chain(&e), "removing the island's overlay");
            }
        }
    }

    /// Removes networks this agent made for stacks that no longer exist, once no container
    /// uses them.
    async fn remove_stale_networks(&self, records: &Records, containers: &[ContainerRecord]) {
        for n in self.engine.networks().list().await {
            let Some(stack) = n.labels.get(LABEL_STACK) else { continue };
            if records.stack(stack).is_some() || containers.iter().any(|c| label(c, LABEL_STACK) == Some(stack.as_str())) {
                continue;
            }
            if let Err(e) = self.engine.networks().remove(&n.id).await {
                tracing::debug!(network = %n.name, error = %e, "removing a stack's network");
            }
        }
    }
}

/// This member's part of the overlay, for its stack networks' island-wide `prefixes`: every
/// other member with an overlay index, and its slice of each of those networks.
pub fn overlay(state: &IslandState, me: &str, prefixes: &[Ipv4Net]) -> Option<atoll_net::overlay::Overlay> {
    let index = state.members.get(me)?.overlay_index?;
    let mut peers: Vec<atoll_net::overlay::Peer> = state
        .members
        .values()
        .filter(|x| x.id != me)
        .filter_map(|x| Some(atoll_net::overlay::Peer { index: x.overlay_index?, mesh_ip: x.mesh_ip }))
        .collect();
    peers.sort();
    let mut routes: Vec<(Ipv4Net, std::net::Ipv4Addr)> = peers
        .iter()
        .flat_map(|p| prefixes.iter().filter_map(move |n| Some((atoll_island::model::member_slice(*n, p.index)?, p.mesh_ip))))
        .collect();
    routes.sort();
    Some(atoll_net::overlay::Overlay {
        index,
        port: atoll_island::OVERLAY_PORT,
        mesh_dev: atoll_island::MESH_DEV.into(),
        mesh_mtu: atoll_island::MESH_MTU.into(),
        peers,
        routes,
    })
}

/// The running replicas of other members on this member's stack networks (`prefixes`: their
/// island-wide prefixes by name), by network: their address and the names their container
/// answers to there (its name, and its aliases: the service's names). Only an address in its
/// member's slice of the network's prefix (`index_of` gives a member's overlay index) is taken:
/// addresses on host-local networks (another member's, an older stack's) mean nothing here,
/// and may even be a local container's.
pub fn remote_endpoints(
    me: &str,
    records: &Records,
    prefixes: &BTreeMap<String, Ipv4Net>,
    index_of: impl Fn(&str) -> Option<u16>,
) -> atoll_net::overlay::Remote {
    let mut out = atoll_net::overlay::Remote::new();
    for (a, _) in &records.allocations {
        if a.node == me || a.desired != Desired::Running {
            continue;
        }
        let Some((t, _)) = records.tasks.get(&Kind::name(a)) else { continue };
        if t.state != TaskState::Running || t.generation != a.generation {
            continue;
        }
        let Some((service, _)) = records.service(&a.service) else { continue };
        let Ok(spec) = replica_spec(service, a) else { continue };
        let index = index_of(&a.node);
        for att in &spec.networks {
            let Some(ip) = t.addresses.get(&att.network) else { continue };
            let slice = prefixes.get(&att.network).zip(index).and_then(|(p, i)| atoll_island::model::member_slice(*p, i));
            if !slice.is_some_and(|s| s.contains(ip)) {
                continue;
            }
            let mut names: Vec<String> =
                std::iter::once(container_name(a)).chain(att.aliases.iter().cloned()).map(|n| n.to_ascii_lowercase()).collect();
            names.dedup();
            // A replica whose health check has not passed is reachable, but not named.
            let names = if t.healthy == Some(false) { Vec::new() } else { names };
            out.entry(att.network.clone()).or_default().push(atoll_net::overlay::RemoteEndpoint { names, ipv4: *ip });
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|r| r.ipv4);
    }
    out
}

/// Stops `c` as `docker stop` would (its stop signal, then SIGKILL after its grace period),
/// then removes it.
async fn stop_and_remove(engine: &Engine, c: &ContainerRecord) -> Result<(), String> {
    if c.state == State::Running || c.state == State::Restarting {
        engine.stop(&c.id, None).await.map_err(|e| atoll_node::error_chain(&e))?;
    }
    engine.remove(&c.id, true, false).await.map(|_| ()).map_err(|e| atoll_node::error_chain(&e))
}

/// Starts allocation `a`: the stack's networks and volumes it uses, then its container (the
/// image pulled if missing). With `order: stop-first`, the older generation's container is
/// stopped first, here; with start-first, the agent stops it once this one runs.
async fn start(engine: &Engine, a: &Allocation, service: &Service, stack: &Stack, index: Option<u16>) -> Result<ContainerRecord, String> {
    let spec = replica_spec(service, a).map_err(|e| format!("the service's spec does not decode: {e}"))?;
    for att in &spec.networks {
        let Some(n) =
            stack.networks.iter().filter_map(|n| serde_json::from_value::<NetworkSpec>(n.clone()).ok()).find(|n| n.name == att.network)
        else {
            continue;
        };
        // Its island-wide prefix (given at deploy), and this member's slice of it.
        let prefix = n.subnets.first().and_then(|s| s.parse::<Ipv4Net>().ok());
        let slice = prefix.zip(index).and_then(|(p, i)| atoll_island::model::member_slice(p, i));
        if let Ok((rec, users)) = engine.networks().inspect(&n.name).await {
            // Made host-local (before this member had an overlay index, or by an older build):
            // made again from the island's prefix once nothing uses it.
            if rec.overlay4.is_some() || slice.is_none() || !users.is_empty() || engine.networks().remove(&rec.id).await.is_err() {
                continue;
            }
        }
        let mut n = n;
        n.labels.insert(LABEL_STACK.into(), stack.name.clone());
        let made = match (prefix, slice) {
            (Some(p), Some(slice)) => engine.networks().create_overlay(&n, slice, p).await,
            // A member without an overlay index: its replicas reach only this host's.
            (Some(_), None) => engine.networks().create(&NetworkSpec { subnets: Vec::new(), ..n.clone() }).await,
            (None, _) => engine.networks().create(&n).await,
        };
        match made {
            Ok(_) => {}
            // Made meanwhile by another replica's start.
            Err(_) if engine.networks().inspect(&n.name).await.is_ok() => {}
            Err(e) => return Err(format!("creating network {}: {}", n.name, atoll_node::error_chain(&e))),
        }
    }
    for m in spec.mounts.iter().filter(|m| m.kind == atoll_spec::MountKind::Volume && stack.volumes.contains(&m.source)) {
        let labels = BTreeMap::from([(LABEL_STACK.to_owned(), stack.name.clone())]);
        engine.volumes().create(&m.source, labels).map_err(|e| format!("creating volume {}: {}", m.source, atoll_node::error_chain(&e)))?;
    }
    // stop-first: the older generation's replica stops before this one starts.
    if !service.update_config.start_first {
        let name = Kind::name(a);
        for old in
            engine.list(true).into_iter().filter(|c| label(c, LABEL_ALLOCATION) == Some(name.as_str()) && generation_of(c) != a.generation)
        {
            stop_and_remove(engine, &old).await?;
        }
    }
    // A leftover of an earlier try at this generation (created, never started) goes first.
    if let Some(name) = &spec.name
        && let Ok(old) = engine.get(name)
    {
        let _ = engine.remove(&old.id, true, false).await;
    }
    engine.create(spec, true).await.map_err(|e| atoll_node::error_chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What another member's agent hands its networking: other members' running replicas at
    /// their generation, under the service's names (none while their health check has not
    /// passed), per network.
    #[test]
    fn remote_endpoints_are_other_members_running_replicas_under_their_names() {
        use atoll_state::desired::{Mode, UpdateConfig};
        let svc = Service {
            stack: "blog".into(),
            name: "web".into(),
            mode: Mode::Replicated,
            replicas: 4,
            spec: serde_json::json!({"image": "x", "networks": [{"network": "blog_default", "aliases": ["web"]}]}),
            constraints: vec![],
            max_replicas_per_node: None,
            labels: Default::default(),
            generation: 1,
            reservations: Resources::default(),
            update_config: UpdateConfig::default(),
            pinned: false,
            previous: None,
            update_status: None,
            extra: Default::default(),
        };
        let mut r = Records { services: vec![(svc, 1)], ..Default::default() };
        // Slot 1 here; 2 elsewhere, running; 3 elsewhere, unhealthy; 4 elsewhere, at an old generation.
        for (slot, node, state, healthy, generation) in [
            ("1", "me", TaskState::Running, None, 1),
            ("2", "b", TaskState::Running, Some(true), 1),
            ("3", "c", TaskState::Running, Some(false), 1),
            ("4", "d", TaskState::Running, None, 0),
        ] {
            let a = Allocation {
                service: "blog_web".into(),
                slot: slot.into(),
                node: node.into(),
                desired: Desired::Running,
                generation: 1,
                reservations: Resources::default(),
                extra: Default::default(),
            };
            let t = TaskStatus {
                alloc: Kind::name(&a),
                generation,
                state,
                container: Some(container_name(&a)),
                error: None,
                since: 0,
                addresses: BTreeMap::from([("blog_default".to_owned(), std::net::Ipv4Addr::new(10, 128, 0, slot.parse().unwrap()))]),
                healthy,
                forwards: Default::default(),
                extra: Default::default(),
            };
            r.tasks.insert(t.alloc.clone(), (t, 1));
            r.allocations.push((a, 1));
        }
        // Each member's slice of the network's /19 (a /26 per index): b is 0, c is 0 too here,
        // so that one address is outside its member's slice and left out; d has no index.
        let prefixes = BTreeMap::from([("blog_default".to_owned(), "10.128.0.0/19".parse::<Ipv4Net>().unwrap())]);
        let index_of = |n: &str| match n {
            "b" | "c" => Some(0),
            "me" => Some(1),
            _ => None,
        };
        let remote = remote_endpoints("me", &r, &prefixes, index_of);
        let net = &remote["blog_default"];
        let ips: Vec<String> = net.iter().map(|e| e.ipv4.to_string()).collect();
        assert_eq!(ips, ["10.128.0.2", "10.128.0.3"]);
        // Not a stack network here: nothing.
        assert!(remote_endpoints("me", &r, &BTreeMap::new(), index_of).is_empty());
        // An address outside its member's slice (a host-local network's, say): left out.
        let shifted = |n: &str| if n == "c" { Some(5) } else { index_of(n) };
        let ips: Vec<String> = remote_endpoints("me", &r, &prefixes, shifted)["blog_default"].iter().map(|e| e.ipv4.to_string()).collect();
        assert_eq!(ips, ["10.128.0.2"]);
        assert_eq!(net[0].names, ["blog_web.2.1", "web", "blog_web", "tasks.web", "tasks.blog_web"]);
        assert!(net[1].names.is_empty(), "not named while unhealthy: {:?}", net[1].names);
    }

    #[test]
    fn failed_starts_are_retried_with_a_capped_backoff() {
        let secs: Vec<u64> = (1..=9).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }
}
