//! The shared harness of the consistency tests: Raft members in one process on the
//! in-process network (`atoll_state::local`), each with its own redb file; clients that write,
//! compare-and-set and read linearizably through the same path the product's API takes
//! (following `ForwardToLeader`); a nemesis that isolates the leader, partitions a member away
//! and kills and restarts members; and a recorder of the history for `atoll-lincheck`.
//! All clocks are tokio's, so the same code runs in real time and in simulated time.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::error::Error as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_lincheck::Operation;
use atoll_lincheck::kv::{Input, Output};
use atoll_state::local::Router;
use atoll_state::schema::Code;
use atoll_state::store::{self, Reader};
use atoll_state::{Expect, NodeId, Request, Response, TypeConfig};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState};
use serde_json::json;
use tokio::time::Instant;

pub struct Member {
    pub raft: Raft<TypeConfig>,
    pub reader: Reader,
}

pub struct Cluster {
    pub router: Router,
    dir: tempfile::TempDir,
    /// Each member's config: in simulation each has its own fixed election timeout, so that
    /// nothing depends on openraft's unseeded randomness.
    configs: BTreeMap<NodeId, Arc<Config>>,
    pub voters: u64,
    pub members: Mutex<BTreeMap<NodeId, Member>>,
    /// The build each member runs (the schemas it reads); unset is this build.
    pub codes: Mutex<BTreeMap<NodeId, Code>>,
    /// Every (term, leader) any member reported being leader in.
    pub leaders: Arc<Mutex<Vec<(u64, NodeId)>>>,
}

impl Cluster {
    /// `voters` voters and `learners` learners; `fixed` gives each a fixed election timeout.
    pub async fn start(voters: u64, learners: u64, fixed: bool) -> Arc<Self> {
        Self::start_with(voters, learners, fixed, Code::CURRENT).await
    }

    /// The same, every member running a build that can do `code`. Members may be added
    /// later up to id 15.
    pub async fn start_with(voters: u64, learners: u64, fixed: bool, code: Code) -> Arc<Self> {
        let configs = (0..16)
            .map(|id| {
                let (min, max) = if fixed { (200 + 70 * id, 201 + 70 * id) } else { (200, 400) };
                let c = Config { heartbeat_interval: 50, election_timeout_min: min, election_timeout_max: max, ..Default::default() };
                (id, Arc::new(c.validate().unwrap()))
            })
            .collect();
        let c = Arc::new(Cluster {
            router: Router::default(),
            dir: tempfile::tempdir().unwrap(),
            configs,
            voters,
            members: Mutex::new(BTreeMap::new()),
            codes: Mutex::new((0..voters + learners).map(|id| (id, code)).collect()),
            leaders: Default::default(),
        });
        for id in 0..voters + learners {
            c.boot(id).await;
        }
        let nodes: BTreeMap<NodeId, BasicNode> = (0..voters).map(|i| (i, BasicNode::new(format!("node{i}")))).collect();
        let first = c.raft(0).unwrap();
        first.initialize(nodes).await.unwrap();
        first.wait(Some(Duration::from_secs(10))).metrics(|m| m.current_leader.is_some(), "a leader").await.unwrap();
        for id in voters..voters + learners {
            // Until the new leader has committed the initial membership, a change is refused as
            // "in progress": ask again.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let leader = c.raft(c.leader().unwrap()).unwrap();
                match leader.add_learner(id, BasicNode::new(format!("node{id}")), true).await {
                    Ok(_) => break,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("adding learner {id}: {e}; again");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("adding learner {id}: {e}"),
                }
            }
        }
        c
    }

    pub fn path(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("{id}.redb"))
    }

    /// Starts member `id` from its file (again, after a kill).
    pub async fn boot(&self, id: NodeId) {
        self.try_boot(id).await.unwrap()
    }

    /// Starts member `id` from its file running a build that can do `code` from now on; why
    /// it did not start, if it did not.
    pub async fn boot_with(&self, id: NodeId, code: Code) -> Result<(), String> {
        self.codes.lock().unwrap().insert(id, code);
        self.try_boot(id).await
    }

    /// The build member `id` runs.
    pub fn code(&self, id: NodeId) -> Code {
        self.codes.lock().unwrap().get(&id).copied().unwrap_or_default()
    }

    async fn try_boot(&self, id: NodeId) -> Result<(), String> {
        let (log, sm) = store::open_with(&self.path(id), self.code(id)).map_err(|e| format!("{e}: {}", e.source().unwrap()))?;
        let reader = sm.reader();
        let raft = Raft::new(id, self.configs[&id].clone(), self.router.network(id), log, sm).await.map_err(|e| e.to_string())?;
        self.router.add(id, raft.clone());
        // Record every term in which this member leads.
        let mut metrics = raft.metrics();
        let leaders = self.leaders.clone();
        tokio::spawn(async move {
            loop {
                // A leader of term T holds a committed vote for itself in T: the vote, not
                // `current_term` read beside a server state that may be mid-transition.
                let led = {
                    let m = metrics.borrow_and_update();
                    let v = m.vote;
                    (m.state == ServerState::Leader && v.is_committed() && v.leader_id().voted_for() == Some(id))
                        .then(|| v.leader_id().get_term())
                };
                if let Some(term) = led {
                    leaders.lock().unwrap().push((term, id));
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
        self.members.lock().unwrap().insert(id, Member { raft, reader });
        Ok(())
    }

    /// Kills member `id`: off the network, its Raft stopped, its file closed.
    pub async fn kill(&self, id: NodeId) {
        self.router.remove(id);
        let m = self.members.lock().unwrap().remove(&id);
        if let Some(m) = m {
            m.raft.shutdown().await.unwrap();
        }
    }

    pub fn raft(&self, id: NodeId) -> Option<Raft<TypeConfig>> {
        self.members.lock().unwrap().get(&id).map(|m| m.raft.clone())
    }

    pub fn reader(&self, id: NodeId) -> Option<Reader> {
        self.members.lock().unwrap().get(&id).map(|m| m.reader.clone())
    }

    pub fn leader(&self) -> Option<NodeId> {
        let members = self.members.lock().unwrap();
        members.values().filter_map(|m| m.raft.metrics().borrow().current_leader).max()
    }

    /// A write as the product's API makes it: to any member, following `ForwardToLeader`.
    /// `None` if no answer came within the deadline (it may or may not have happened).
    pub async fn write(&self, mut at: NodeId, req: Request) -> Option<Response> {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let Some(raft) = self.raft(at) else {
                at = (at + 1) % self.voters;
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(1), raft.client_write(req.clone())).await {
                Ok(Ok(r)) => return Some(r.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => match f.leader_id {
                    Some(l) => at = l,
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                },
                // A timeout or an error after the entry may have been appended: unknown.
                _ => return None,
            }
        }
        None
    }

    /// A linearizable read: the leader confirms it still leads (ReadIndex), waits until it
    /// has applied that far, and reads locally.
    pub async fn read(&self, mut at: NodeId, key: &str) -> Option<Option<u64>> {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let (Some(raft), Some(reader)) = (self.raft(at), self.reader(at)) else {
                at = (at + 1) % self.voters;
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(1), raft.ensure_linearizable()).await {
                Ok(Ok(_)) => return Some(reader.get(key).map(|d| d.value.as_u64().unwrap())),
                Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)))) => match f.leader_id {
                    Some(l) => at = l,
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                },
                _ => return None,
            }
        }
        None
    }

    /// Waits until every member has applied everything the leader has, and returns each
    /// member's keyspace (learners included): they must all be the same.
    pub async fn converged(&self) -> BTreeMap<NodeId, atoll_state::keyspace::Keyspace> {
        let leader = self.raft(self.leader().expect("a leader")).unwrap();
        let last = leader.metrics().borrow().last_log_index;
        let ids: Vec<NodeId> = self.members.lock().unwrap().keys().copied().collect();
        for id in &ids {
            let raft = self.raft(*id).unwrap();
            raft.wait(Some(Duration::from_secs(10))).applied_index_at_least(last, "caught up").await.unwrap();
        }
        ids.iter().map(|id| (*id, self.reader(*id).unwrap().with(|k| k.clone()))).collect()
    }
}

/// Records operations with times from one clock.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    pub ops: Arc<Mutex<Vec<Operation<Input, Output>>>>,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder { start: Instant::now(), ops: Default::default() }
    }
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    pub fn record(&self, client: u64, call: u64, input: Input, out: Option<Output>) {
        let ret = out.map(|o| (self.now(), o));
        self.ops.lock().unwrap().push(Operation { client, call, ret, input });
    }
}

/// One client: `ops` operations on three keys against random members.
pub async fn client(c: Arc<Cluster>, rec: Recorder, id: u64, seed: u64, ops: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    // What this client last read of each key, with the version it read.
    let mut seen: BTreeMap<String, (Option<u64>, Option<u64>)> = BTreeMap::new();
    for seq in 0..ops {
        let key = format!("k{}", rng.u64(0..3));
        let at = rng.u64(0..c.voters);
        let value = id * 1_000_000 + seq as u64;
        let call = rec.now();
        match rng.u8(0..10) {
            0..4 => {
                let r = c.write(at, Request::Put { key: key.clone(), value: json!(value), expect: Expect::Any }).await;
                rec.record(id, call, Input::Write { key, value }, r.map(|_| Output::Written));
            }
            // A compare-and-set on the version last read: values are unique, so expecting a
            // version is expecting the value written at it.
            4..6 if seen.contains_key(&key) => {
                let (expect_value, expect_version) = seen[&key];
                let expect = expect_version.map_or(Expect::Absent, Expect::Version);
                let r = c.write(at, Request::Put { key: key.clone(), value: json!(value), expect }).await;
                let out = r.map(|r| Output::Cas { ok: matches!(r, Response::Done { .. }) });
                rec.record(id, call, Input::Cas { key, expect: expect_value, value }, out);
            }
            _ => {
                let r = c.read(at, &key).await;
                if let (Some(v), Some(reader)) = (r, c.leader().and_then(|l| c.reader(l))) {
                    let version = reader.get(&key).filter(|d| d.value.as_u64() == v).map(|d| d.version);
                    if version.is_some() || v.is_none() {
                        seen.insert(key.clone(), (v, version));
                    }
                }
                rec.record(id, call, Input::Read { key }, r.map(|value| Output::Read { value }));
            }
        }
    }
}

/// The nemesis: `rounds` faults, each healed before the next.
pub async fn nemesis(c: Arc<Cluster>, seed: u64, rounds: usize, log: Arc<Mutex<Vec<String>>>) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let n = c.voters;
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(rng.u64(200..600))).await;
        let leader = c.leader().unwrap_or(0);
        match rng.u8(0..3) {
            0 => {
                log.lock().unwrap().push(format!("isolate leader {leader}"));
                c.router.partition(&[leader]);
                tokio::time::sleep(Duration::from_millis(rng.u64(300..900))).await;
                c.router.heal();
            }
            1 => {
                let victim = rng.u64(0..n);
                log.lock().unwrap().push(format!("kill {victim}"));
                c.kill(victim).await;
                tokio::time::sleep(Duration::from_millis(rng.u64(100..700))).await;
                c.boot(victim).await;
            }
            _ => {
                let other = (leader + 1 + rng.u64(0..n - 1)) % n;
                log.lock().unwrap().push(format!("partition {other} away"));
                c.router.partition(&[other]);
                tokio::time::sleep(Duration::from_millis(rng.u64(300..900))).await;
                c.router.heal();
            }
        }
    }
}

/// What one run gives: its history and its faults.
pub struct Run {
    pub history: Vec<Operation<Input, Output>>,
    pub faults: Vec<String>,
    pub leaders: Vec<(u64, NodeId)>,
    pub keyspaces: BTreeMap<NodeId, atoll_state::keyspace::Keyspace>,
}

/// A whole run: the workload under the nemesis, a final read of every key once healed, and
/// every member's converged keyspace.
pub async fn run(voters: u64, learners: u64, fixed: bool, seed: u64, clients: u64, ops: usize, faults: usize) -> Run {
    let c = Cluster::start(voters, learners, fixed).await;
    let rec = Recorder::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let chaos = tokio::spawn(nemesis(c.clone(), seed, faults, log.clone()));
    let tasks: Vec<_> = (0..clients).map(|i| tokio::spawn(client(c.clone(), rec.clone(), i, seed.wrapping_add(i), ops))).collect();
    for t in tasks {
        t.await.unwrap();
    }
    chaos.await.unwrap();
    c.router.heal();
    finish(&c, &rec, &log, seed).await
}

/// The end of a run, healed: a final read of every key, every member's converged keyspace,
/// then every member stopped.
pub async fn finish(c: &Cluster, rec: &Recorder, log: &Mutex<Vec<String>>, seed: u64) -> Run {
    for key in ["k0", "k1", "k2"] {
        let call = rec.now();
        let r = c.read(0, key).await;
        assert!(r.is_some(), "SEED={seed}: the healed cluster answers");
        rec.record(99, call, Input::Read { key: key.into() }, r.map(|value| Output::Read { value }));
    }
    let keyspaces = c.converged().await;
    let history = rec.ops.lock().unwrap().clone();
    let faults = log.lock().unwrap().clone();
    let leaders = c.leaders.lock().unwrap().clone();
    let ids: Vec<NodeId> = c.members.lock().unwrap().keys().copied().collect();
    for id in ids {
        c.kill(id).await;
    }
    Run { history, faults, leaders, keyspaces }
}

/// Runs `one` for `SIM_SEEDS` seeds (`default` unless set) from [`seed`], then the first seed
/// twice more: the same faults and history, operation for operation (a failing seed replays).
pub async fn replay_seeds<F: std::future::Future<Output = Run>>(default: u64, one: impl Fn(u64) -> F) {
    let first = seed();
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    for seed in first..first.saturating_add(seeds) {
        one(seed).await;
    }
    let a = one(first).await;
    let b = one(first).await;
    assert_eq!(a.faults, b.faults, "SEED={first}: the nemesis replays");
    assert_eq!(a.history, b.history, "SEED={first}: the history replays");
}

/// The invariants every run must keep: linearizable (no acknowledged write lost, no stale
/// read), at most one leader per term, every member (learners too) converged to one keyspace,
/// and most operations answered.
pub fn check(seed: u64, r: &Run) {
    let report = atoll_lincheck::kv::check(&r.history, 20_000_000);
    let failures: Vec<_> = report.failures().collect();
    assert!(
        failures.is_empty(),
        "SEED={seed}: not linearizable: {failures:?}\nnemesis: {:?}\nhistory: {}",
        r.faults,
        serde_json::to_string(&r.history).unwrap()
    );
    let mut by_term: BTreeMap<u64, NodeId> = BTreeMap::new();
    for &(term, id) in &r.leaders {
        let first = *by_term.entry(term).or_insert(id);
        assert_eq!(first, id, "SEED={seed}: two leaders in term {term}: {first} and {id}");
    }
    let mut spaces = r.keyspaces.values();
    let first = spaces.next().unwrap();
    assert!(spaces.all(|k| k == first), "SEED={seed}: members diverged: {:?}", r.keyspaces);
    let answered = r.history.iter().filter(|o| o.ret.is_some()).count();
    assert!(answered * 2 > r.history.len(), "SEED={seed}: most operations are answered ({answered} of {})", r.history.len());
}

/// The seed: `SEED` from the environment, or a random one (printed, to replay a failure).
pub fn seed() -> u64 {
    let seed = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("SEED={seed}");
    seed
}
