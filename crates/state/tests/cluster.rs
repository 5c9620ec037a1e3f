//! Three Raft members in one process, on the in-process network, under a workload of
//! concurrent writes, compare-and-sets and linearizable reads from several clients while a
//! nemesis isolates the leader, partitions a minority and kills and restarts members (each
//! restart reopens its redb file). The history is checked with `atoll-lincheck`: no
//! acknowledged write lost, no stale linearizable read. The seed is printed; `SEED=n` replays
//! the nemesis' and the clients' choices (thread timing still varies: the deterministic
//! simulation is a later step).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_lincheck::Operation;
use atoll_lincheck::kv::{self, Input, Output};
use atoll_state::local::Router;
use atoll_state::store::{self, Reader};
use atoll_state::{Expect, NodeId, Request, Response, TypeConfig};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft};
use serde_json::json;

struct Member {
    raft: Raft<TypeConfig>,
    reader: Reader,
}

struct Cluster {
    router: Router,
    dir: tempfile::TempDir,
    config: Arc<Config>,
    members: Mutex<BTreeMap<NodeId, Member>>,
}

impl Cluster {
    async fn start(n: u64) -> Arc<Self> {
        let config = Config { heartbeat_interval: 50, election_timeout_min: 200, election_timeout_max: 400, ..Default::default() };
        let c = Arc::new(Cluster {
            router: Router::default(),
            dir: tempfile::tempdir().unwrap(),
            config: Arc::new(config.validate().unwrap()),
            members: Mutex::new(BTreeMap::new()),
        });
        for id in 0..n {
            c.boot(id).await;
        }
        let nodes: BTreeMap<NodeId, BasicNode> = (0..n).map(|i| (i, BasicNode::new(format!("node{i}")))).collect();
        c.raft(0).unwrap().initialize(nodes).await.unwrap();
        c
    }

    fn path(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("{id}.redb"))
    }

    async fn boot(&self, id: NodeId) {
        let (log, sm) = store::open(&self.path(id)).unwrap();
        let reader = sm.reader();
        let raft = Raft::new(id, self.config.clone(), self.router.network(id), log, sm).await.unwrap();
        self.router.add(id, raft.clone());
        self.members.lock().unwrap().insert(id, Member { raft, reader });
    }

    async fn kill(&self, id: NodeId) {
        self.router.remove(id);
        let m = self.members.lock().unwrap().remove(&id);
        if let Some(m) = m {
            m.raft.shutdown().await.unwrap();
        }
    }

    fn raft(&self, id: NodeId) -> Option<Raft<TypeConfig>> {
        self.members.lock().unwrap().get(&id).map(|m| m.raft.clone())
    }

    fn reader(&self, id: NodeId) -> Option<Reader> {
        self.members.lock().unwrap().get(&id).map(|m| m.reader.clone())
    }

    fn leader(&self) -> Option<NodeId> {
        let members = self.members.lock().unwrap();
        members.values().filter_map(|m| m.raft.metrics().borrow().current_leader).max()
    }

    /// A write as the product's API makes it: to any member, following `ForwardToLeader`.
    /// `None` if no answer came within the deadline (it may or may not have happened).
    async fn write(&self, mut at: NodeId, req: Request) -> Option<Response> {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let Some(raft) = self.raft(at) else {
                at = (at + 1) % 3;
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
    async fn read(&self, mut at: NodeId, key: &str) -> Option<Option<u64>> {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let (Some(raft), Some(reader)) = (self.raft(at), self.reader(at)) else {
                at = (at + 1) % 3;
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
}

/// Records operations with times from one clock.
#[derive(Clone)]
struct Recorder {
    start: Instant,
    ops: Arc<Mutex<Vec<Operation<Input, Output>>>>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    fn record(&self, client: u64, call: u64, input: Input, out: Option<Output>) {
        let ret = out.map(|o| (self.now(), o));
        self.ops.lock().unwrap().push(Operation { client, call, ret, input });
    }
}

async fn client(c: Arc<Cluster>, rec: Recorder, id: u64, seed: u64, ops: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    // What this client last read of each key, with the version it read.
    let mut seen: BTreeMap<String, (Option<u64>, Option<u64>)> = BTreeMap::new();
    for seq in 0..ops {
        let key = format!("k{}", rng.u64(0..3));
        let at = rng.u64(0..3);
        let value = id * 1_000_000 + seq as u64;
        let call = rec.now();
        match rng.u8(0..10) {
            0..4 => {
                let r = c.write(at, Request::Put { key: key.clone(), value: json!(value), expect: Expect::Any }).await;
                rec.record(id, call, Input::Write { key, value }, r.map(|_| Output::Written));
            }
            4..6 if seen.contains_key(&key) => {
                let (expect_value, expect_version) = seen[&key];
                let expect = expect_version.map_or(Expect::Absent, Expect::Version);
                let r = c.write(at, Request::Put { key: key.clone(), value: json!(value), expect }).await;
                let out = r.map(|r| Output::Cas { ok: matches!(r, Response::Done { .. }) });
                rec.record(id, call, Input::Cas { key, expect: expect_value, value }, out);
            }
            _ => {
                // Read through the API, remembering the version for a later compare-and-set.
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

async fn nemesis(c: Arc<Cluster>, seed: u64, rounds: usize, log: Arc<Mutex<Vec<String>>>) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
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
                let victim = rng.u64(0..3);
                log.lock().unwrap().push(format!("kill {victim}"));
                c.kill(victim).await;
                tokio::time::sleep(Duration::from_millis(rng.u64(100..700))).await;
                c.boot(victim).await;
            }
            _ => {
                let other = (leader + 1 + rng.u64(0..2)) % 3;
                log.lock().unwrap().push(format!("partition {other} away"));
                c.router.partition(&[other]);
                tokio::time::sleep(Duration::from_millis(rng.u64(300..900))).await;
                c.router.heal();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_under_partitions_kills_and_restarts() {
    let seed = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("SEED={seed}");
    let c = Cluster::start(3).await;
    c.raft(0).unwrap().wait(Some(Duration::from_secs(10))).metrics(|m| m.current_leader.is_some(), "a leader").await.unwrap();
    let rec = Recorder { start: Instant::now(), ops: Default::default() };
    let log = Arc::new(Mutex::new(Vec::new()));
    let chaos = tokio::spawn(nemesis(c.clone(), seed, 6, log.clone()));
    let clients: Vec<_> = (0..4).map(|i| tokio::spawn(client(c.clone(), rec.clone(), i, seed.wrapping_add(i), 60))).collect();
    for t in clients {
        t.await.unwrap();
    }
    chaos.await.unwrap();
    c.router.heal();
    // Every key once more, after the faults: what was acknowledged must be there.
    for key in ["k0", "k1", "k2"] {
        let call = rec.now();
        let r = c.read(0, key).await;
        assert!(r.is_some(), "the healed cluster answers");
        rec.record(99, call, Input::Read { key: key.into() }, r.map(|value| Output::Read { value }));
    }
    let history = rec.ops.lock().unwrap().clone();
    let answered = history.iter().filter(|o| o.ret.is_some()).count();
    let report = kv::check(&history, 20_000_000);
    let failures: Vec<_> = report.failures().collect();
    assert!(
        failures.is_empty(),
        "SEED={seed}: not linearizable: {failures:?}\nnemesis: {:?}\nhistory: {}",
        log.lock().unwrap(),
        serde_json::to_string(&history).unwrap()
    );
    assert!(answered * 2 > history.len(), "SEED={seed}: most operations are answered ({answered} of {})", history.len());
    let keys: BTreeSet<_> = history.iter().map(|o| o.input.key().to_owned()).collect();
    eprintln!("{} operations ({answered} answered) on {} keys, faults: {:?}", history.len(), keys.len(), log.lock().unwrap());
}
