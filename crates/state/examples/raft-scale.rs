//! `raft-scale`: how the island's Raft group scales with its number of learners (issue 14's
//! scale estimate), in one process, in real time (`bench/raft-scale.sh`).
//!
//! `raft-scale run VOTERS LEARNERS[s]` runs one island and prints one JSON line (`s`: the
//! learners are stubs that accept every RPC at once, to measure the leader alone — see
//! [`CountedConnection`]):
//! - the product's Raft config, `atoll_state::config` (heartbeat 250 ms, election 1.5–3 s, snapshot every 1000
//!   entries, 200 kept), each member with its own redb file (voters on disk, learners on
//!   `/dev/shm`: their fsyncs are their own hosts' cost, not the leader's);
//! - the leader (member 0) runs on its own single-threaded tokio runtime on its own OS thread,
//!   so its core, its replication streams (one per follower and learner) and its log store all
//!   run there; that thread's CPU time and run-queue wait come from
//!   `/proc/self/task/<tid>/schedstat`. Every other member shares a 2-worker runtime;
//! - the network is `atoll_state::local` wrapped in a counter that also encodes each request
//!   and decodes each answer as JSON, as the product's transport does, on the leader's thread;
//!   TLS, HTTP/2 and the syscalls are not in it;
//! - a state of `KEYS` documents of `VALUE` bytes is written first (1500 writes: a snapshot
//!   is built and the log purged), then all learners are added in one membership change, so
//!   each needs the snapshot at once ("initial sync");
//! - then two windows of `WINDOW`: idle, and `RATE` writes/s to the leader; for each, the
//!   leader's AppendEntries/s, bytes/s, CPU, the longest gap between two RPCs to one follower,
//!   and (under load) commit latency; then, under load, one more learner is added and the time
//!   until it has caught up is measured; the process's RSS per member at the end.
//! - The reconciler's once-a-second ping of every member is emulated as a small request from
//!   the leader's thread to every member's runtime, so its share of the leader's CPU counts.
//!
//! `raft-scale all RUNS` runs each configuration RUNS times (each in a fresh process, killed
//! after 300 s) and prints the medians as Markdown (`RAFT_SCALE_CONFIGS=3:0,3:1000s` picks).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use atoll_state::local::{Connection, Network, Router};
use atoll_state::{NodeId, Request, TypeConfig, store};
use openraft::error::{InstallSnapshotError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState};
use serde_json::{Value, json};

const KEYS: usize = 500;
const VALUE: usize = 400;
const PREFILL: usize = 1500;
const WINDOW: Duration = Duration::from_secs(10);
const RATE: u64 = 20;
const LEADER: NodeId = 0;
/// The configurations `all` runs: `VOTERS:LEARNERS`, `s` for stub learners.
const CONFIGS: &str = "3:0,3:10,3:100,5:100,3:300,3:100s,3:1000s,3:3000s,3:1000";

type Rpc<T, E = RaftError<NodeId>> = Result<T, RPCError<NodeId, BasicNode, E>>;

/// What the leader sent (every sender counts; only the leader sends AppendEntries).
#[derive(Default)]
struct Stats {
    append: AtomicU64,
    append_entries: AtomicU64,
    append_bytes: AtomicU64,
    snapshot: AtomicU64,
    snapshot_bytes: AtomicU64,
    vote: AtomicU64,
    /// The longest time between two RPCs to one voter, and to one learner, since the last
    /// reset (µs). A voter that hears nothing for an election timeout (1.5–3 s) stands.
    max_gap_voter_us: AtomicU64,
    max_gap_learner_us: AtomicU64,
}

impl Stats {
    fn read(&self) -> [u64; 6] {
        [&self.append, &self.append_entries, &self.append_bytes, &self.snapshot, &self.snapshot_bytes, &self.vote].map(|a| a.load(Relaxed))
    }
}

/// The router's network, counted and JSON-encoded as the product's transport would.
#[derive(Clone)]
struct Counted {
    inner: Network,
    stats: Arc<Stats>,
    voters: u64,
    /// Learners are stubs: see [`CountedConnection::stub`].
    stubs: bool,
}

impl RaftNetworkFactory<TypeConfig> for Counted {
    type Network = CountedConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> CountedConnection {
        let (voter, stub) = (target < self.voters, self.stubs && target >= self.voters);
        CountedConnection { inner: self.inner.new_client(target, node).await, stats: self.stats.clone(), voter, stub, last: None }
    }
}

struct CountedConnection {
    inner: Connection,
    stats: Arc<Stats>,
    voter: bool,
    /// The target is a stub learner: no Raft, no store, it accepts every AppendEntries and
    /// snapshot at once. The leader's side of each RPC is unchanged (the entries read from its
    /// log, encoded, the answer decoded and handled), so a stub island measures the leader
    /// alone, without the followers' CPU that one machine cannot supply for 1000 real ones.
    stub: bool,
    last: Option<Instant>,
}

impl CountedConnection {
    fn sent(&mut self) {
        let now = Instant::now();
        if let Some(last) = self.last.replace(now) {
            let max = if self.voter { &self.stats.max_gap_voter_us } else { &self.stats.max_gap_learner_us };
            max.fetch_max((now - last).as_micros() as u64, Relaxed);
        }
    }
}

/// The answer through JSON and back, as the transport decodes it.
fn through_json<T: serde::Serialize + serde::de::DeserializeOwned>(v: T) -> T {
    serde_json::from_slice(&serde_json::to_vec(&v).expect("encodes")).expect("decodes")
}

impl RaftNetwork<TypeConfig> for CountedConnection {
    async fn append_entries(&mut self, rpc: AppendEntriesRequest<TypeConfig>, o: RPCOption) -> Rpc<AppendEntriesResponse<NodeId>> {
        self.sent();
        let body = serde_json::to_vec(&rpc).expect("encodes");
        self.stats.append.fetch_add(1, Relaxed);
        self.stats.append_entries.fetch_add(rpc.entries.len() as u64, Relaxed);
        self.stats.append_bytes.fetch_add(body.len() as u64, Relaxed);
        if self.stub {
            return Ok(through_json(AppendEntriesResponse::Success));
        }
        self.inner.append_entries(rpc, o).await.map(through_json)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        o: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.sent();
        let body = serde_json::to_vec(&rpc).expect("encodes");
        self.stats.snapshot.fetch_add(1, Relaxed);
        self.stats.snapshot_bytes.fetch_add(body.len() as u64, Relaxed);
        if self.stub {
            return Ok(through_json(InstallSnapshotResponse { vote: rpc.vote }));
        }
        self.inner.install_snapshot(rpc, o).await.map(through_json)
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, o: RPCOption) -> Rpc<VoteResponse<NodeId>> {
        self.stats.vote.fetch_add(1, Relaxed);
        self.inner.vote(rpc, o).await.map(through_json)
    }
}

/// A thread's time on a CPU and waiting for one (ns), from the kernel's schedstat.
fn schedstat(tid: &str) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).expect("schedstat (CONFIG_SCHED_INFO)");
    let mut f = s.split_whitespace().map(|x| x.parse::<u64>().expect("a number"));
    (f.next().unwrap(), f.next().unwrap())
}

/// The process's CPU time, all threads (s).
fn process_cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).map(|x| x.parse().unwrap()).collect();
    (f[0] + f[1]) as f64 / 100.0
}

/// `VmRSS` or `VmHWM` (MiB).
fn memory(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

fn node(id: NodeId) -> BasicNode {
    BasicNode::new(format!("10.42.{}.{}:7946", id / 250, id % 250 + 1))
}

fn put(i: usize) -> Request {
    Request::Put { key: format!("stacks/{:04}", i % KEYS), value: Value::String("x".repeat(VALUE)), expect: atoll_state::Expect::Any }
}

struct Island {
    router: Router,
    stats: Arc<Stats>,
    members: BTreeMap<NodeId, Raft<TypeConfig>>,
    disk: tempfile::TempDir,
    shm: tempfile::TempDir,
    voters: u64,
    stubs: bool,
}

impl Island {
    /// Starts member `id`; on `rt` (the leader's runtime) or the current one.
    async fn boot(&mut self, id: NodeId, rt: Option<&tokio::runtime::Handle>) {
        let dir = if id < self.voters { self.disk.path() } else { self.shm.path() };
        let (log, sm) = store::open(&dir.join(format!("{id}.redb"))).unwrap();
        let net = Counted { inner: self.router.network(id), stats: self.stats.clone(), voters: self.voters, stubs: self.stubs };
        let new = Raft::new(id, atoll_state::config("atoll-scale"), net, log, sm);
        let raft = match rt {
            Some(rt) => rt.spawn(new).await.unwrap(),
            None => new.await,
        }
        .unwrap();
        self.router.add(id, raft.clone());
        self.members.insert(id, raft);
    }

    fn leader(&self) -> &Raft<TypeConfig> {
        &self.members[&LEADER]
    }

    /// Waits until every member in `ids` has applied the leader's last entry (a stub: the
    /// leader counts it as having it).
    async fn caught_up(&self, ids: impl Iterator<Item = NodeId>) {
        let last = self.leader().metrics().borrow().last_log_index;
        let (real, stubs): (Vec<NodeId>, Vec<NodeId>) = ids.partition(|id| self.members.contains_key(id));
        for id in real {
            self.members[&id].wait(Some(Duration::from_secs(900))).applied_index_at_least(last, "caught up").await.unwrap();
        }
        let has = |m: &openraft::RaftMetrics<NodeId, BasicNode>, id: &NodeId| {
            m.replication.as_ref().and_then(|r| r.get(id).copied().flatten()).map(|l| l.index) >= last
        };
        self.leader()
            .wait(Some(Duration::from_secs(900)))
            .metrics(|m| stubs.iter().all(|id| has(m, id)), "the stubs caught up")
            .await
            .unwrap();
    }
}

/// A window's measurements.
struct Window {
    at: Instant,
    stats: [u64; 6],
    leader_cpu: (u64, u64),
    process_cpu: f64,
}

fn window(island: &Island, tid: &str) -> Window {
    island.stats.max_gap_voter_us.store(0, Relaxed);
    island.stats.max_gap_learner_us.store(0, Relaxed);
    Window { at: Instant::now(), stats: island.stats.read(), leader_cpu: schedstat(tid), process_cpu: process_cpu() }
}

fn report(island: &Island, tid: &str, w: Window) -> Value {
    let secs = w.at.elapsed().as_secs_f64();
    let now = island.stats.read();
    let d: Vec<f64> = now.iter().zip(w.stats).map(|(a, b)| (a - b) as f64 / secs).collect();
    let (run, wait) = schedstat(tid);
    let leader_cpu = (run - w.leader_cpu.0) as f64 / 1e9 / secs;
    json!({
        "append_per_s": d[0],
        "entries_per_s": d[1],
        "append_kib_per_s": d[2] / 1024.0,
        "snapshot_per_s": d[3],
        "votes": now[5] - w.stats[5],
        "leader_cpu": leader_cpu,
        "leader_us_per_append": leader_cpu * 1e6 / d[0],
        "leader_runq_wait": (wait - w.leader_cpu.1) as f64 / 1e9 / secs,
        "process_cpu": (process_cpu() - w.process_cpu) / secs,
        "max_gap_voter_ms": island.stats.max_gap_voter_us.load(Relaxed) as f64 / 1000.0,
        "max_gap_learner_ms": island.stats.max_gap_learner_us.load(Relaxed) as f64 / 1000.0,
    })
}

/// The reconciler's pings: once a second, a request from the leader's thread to every other
/// member's runtime and its answer.
async fn pings(members: Vec<NodeId>, others: tokio::runtime::Handle) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let all = members.iter().map(|&id| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            others.spawn(async move {
                let _ = tx.send(through_json(json!({ "ok": id })));
            });
            async move { tokio::time::timeout(Duration::from_secs(2), rx).await.is_ok() }
        });
        futures_join_all(all).await;
    }
}

/// `join_all` without the futures crate: spawn each on the current (leader's) runtime.
async fn futures_join_all<F: std::future::Future<Output = bool> + Send + 'static>(all: impl Iterator<Item = F>) {
    let handles: Vec<_> = all.map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn run(voters: u64, learners: u64, stubs: bool, others: tokio::runtime::Handle) -> Value {
    let rss_before = memory("VmRSS:");
    // The leader's own thread and runtime.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("leader".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let me = std::fs::read_link("/proc/thread-self").unwrap();
            tx.send((rt.handle().clone(), me.file_name().unwrap().to_string_lossy().into_owned())).unwrap();
            rt.block_on(std::future::pending::<()>());
        })
        .unwrap();
    let (leader_rt, tid) = rx.recv().unwrap();
    // Named by pid, so that `all` can remove them after killing a run that overran.
    let tempdir = |dir: &str| tempfile::Builder::new().prefix(&format!("raft-scale-{}-", std::process::id())).tempdir_in(dir);
    let shm = if Path::new("/dev/shm").is_dir() { tempdir("/dev/shm") } else { tempfile::tempdir() };
    let mut island = Island {
        router: Router::default(),
        stats: Default::default(),
        members: BTreeMap::new(),
        disk: tempdir("/var/tmp").unwrap(),
        shm: shm.unwrap(),
        voters,
        stubs,
    };
    island.boot(LEADER, Some(&leader_rt)).await;
    for id in 1..voters + if stubs { 0 } else { learners } {
        island.boot(id, None).await;
    }
    island.leader().initialize((0..voters).map(|i| (i, node(i))).collect::<BTreeMap<_, _>>()).await.unwrap();
    island.leader().wait(Some(Duration::from_secs(30))).state(ServerState::Leader, "member 0 leads").await.unwrap();
    // Where member 0 first stopped leading (a voter stood: its heartbeats were late), if it did.
    let phase = Arc::new(std::sync::Mutex::new("prefill"));
    let lost: Arc<std::sync::Mutex<Option<&'static str>>> = Default::default();
    {
        let (mut metrics, phase, lost) = (island.leader().metrics(), phase.clone(), lost.clone());
        let term = metrics.borrow().current_term;
        tokio::spawn(async move {
            while metrics.changed().await.is_ok() {
                let (t, state) = {
                    let m = metrics.borrow_and_update();
                    (m.current_term, m.state)
                };
                if t != term || state != ServerState::Leader {
                    *lost.lock().unwrap() = Some(*phase.lock().unwrap());
                    return;
                }
            }
        });
    }
    let t0 = Instant::now();
    let set_phase = |p: &'static str| {
        eprintln!("{:.1}s: {p}", t0.elapsed().as_secs_f64());
        *phase.lock().unwrap() = p;
    };

    // The state: written by 8 clients, then snapshotted and the log purged.
    let next = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (raft, next) = (island.leader().clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Relaxed) as usize;
                    if i >= PREFILL {
                        return;
                    }
                    raft.client_write(put(i)).await.unwrap();
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    island.leader().wait(Some(Duration::from_secs(60))).metrics(|m| m.purged.is_some(), "a snapshot and a purged log").await.unwrap();
    let snapshot = island.leader().metrics().borrow().snapshot;

    // Every learner at once: each needs the snapshot.
    set_phase("initial sync");
    let started = Instant::now();
    if learners > 0 {
        let add: BTreeMap<NodeId, BasicNode> = (voters..voters + learners).map(|i| (i, node(i))).collect();
        island.leader().change_membership(ChangeMembers::AddNodes(add), true).await.unwrap();
    }
    island.caught_up(1..voters + learners).await;
    let initial_sync = started.elapsed().as_secs_f64();
    let snapshots_sent = island.stats.snapshot.load(Relaxed);
    let snapshot_mib_sent = island.stats.snapshot_bytes.load(Relaxed) as f64 / (1 << 20) as f64;
    let hwm_after_sync = memory("VmHWM:");

    let others_ids: Vec<NodeId> = (1..voters + learners).collect();
    leader_rt.spawn(pings(others_ids, others.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Idle.
    set_phase("idle");
    let w = window(&island, &tid);
    tokio::time::sleep(WINDOW).await;
    let idle = report(&island, &tid, w);

    // RATE writes/s, each timed from the call to the leader's answer (committed and applied).
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = {
        let (raft, latencies) = (island.leader().clone(), latencies.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            for i in 0.. {
                tick.tick().await;
                let (raft, latencies) = (raft.clone(), latencies.clone());
                tokio::spawn(async move {
                    let t = Instant::now();
                    if raft.client_write(put(i)).await.is_ok() {
                        latencies.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                });
            }
        })
    };
    set_phase("writes");
    tokio::time::sleep(Duration::from_secs(1)).await;
    latencies.lock().unwrap().clear();
    let w = window(&island, &tid);
    tokio::time::sleep(WINDOW).await;
    let mut loaded = report(&island, &tid, w);
    let mut l = std::mem::take(&mut *latencies.lock().unwrap());
    l.sort_by(|a, b| a.total_cmp(b));
    loaded["writes"] = json!(l.len());
    loaded["commit_p50_ms"] = json!(percentile(&l, 0.5));
    loaded["commit_p99_ms"] = json!(percentile(&l, 0.99));

    // One more learner, under load: from nothing to caught up (snapshot, then the log).
    let new = voters + learners;
    if !stubs {
        island.boot(new, None).await;
    }
    set_phase("one more learner");
    let w = window(&island, &tid);
    let t = Instant::now();
    let added = island.leader().add_learner(new, node(new), true).await;
    let join = match added {
        Ok(_) => {
            island.caught_up(std::iter::once(new)).await;
            t.elapsed().as_secs_f64()
        }
        Err(e) => {
            eprintln!("adding one more learner: {e}");
            f64::NAN
        }
    };
    let joining = report(&island, &tid, w);
    load.abort();
    let members = (voters + learners + 1) as f64;
    let rss = memory("VmRSS:");
    json!({
        "voters": voters,
        "learners": learners,
        "stub_learners": stubs,
        "state_kib": KEYS * (VALUE + 40) / 1024,
        "snapshot": snapshot.map(|s| s.index),
        "initial_sync_s": initial_sync,
        "snapshots_sent": snapshots_sent,
        "snapshot_mib_sent": snapshot_mib_sent,
        "join_s": join,
        "idle": idle,
        "load": loaded,
        "joining": joining,
        "lost_leadership_in": *lost.lock().unwrap(),
        "rss_mib": rss,
        "rss_per_member_mib": (rss - rss_before) / members,
        "hwm_after_sync_mib": hwm_after_sync,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => {
            const USAGE: &str = "usage: raft-scale run VOTERS LEARNERS[s] (s: stub learners)";
            let voters: u64 = args.get(1).and_then(|a| a.parse().ok()).expect(USAGE);
            let spec = args.get(2).expect(USAGE);
            let stubs = spec.ends_with('s');
            let learners: u64 = spec.trim_end_matches('s').parse().expect(USAGE);
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let out = rt.block_on(run(voters, learners, stubs, rt.handle().clone()));
            println!("{out}");
            // The members' tasks are not shut down one by one: the process ends.
            std::process::exit(0);
        }
        Some("all") => {
            let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
            all(runs);
        }
        _ => {
            eprintln!("usage: raft-scale run VOTERS LEARNERS | raft-scale all RUNS");
            std::process::exit(2);
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// How long one run may take before it counts as not finished (a stuck catch-up).
const RUN_DEADLINE: Duration = Duration::from_secs(300);

/// One `run` in a child process (its progress on our stderr); `None` if it failed or overran.
fn run_child(me: &Path, voters: &str, learners: &str) -> Option<Value> {
    let mut child = std::process::Command::new(me)
        .args(["run", voters, learners])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting raft-scale run");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).map(|_| s)
    });
    let deadline = Instant::now() + RUN_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = reader.join().unwrap().ok()?;
            if !status.success() {
                eprintln!("raft-scale run {voters} {learners}: {status}");
                return None;
            }
            return serde_json::from_str(out.trim()).ok();
        }
        if Instant::now() > deadline {
            eprintln!("raft-scale run {voters} {learners}: not finished in {}s, killed", RUN_DEADLINE.as_secs());
            let _ = child.kill();
            let _ = child.wait();
            for dir in ["/dev/shm", "/var/tmp"] {
                for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    if e.file_name().to_string_lossy().starts_with(&format!("raft-scale-{}-", child.id())) {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Each configuration RUNS times, each in its own process; the medians as Markdown.
fn all(runs: usize) {
    let me = std::env::current_exe().unwrap();
    let configs: Vec<(String, String)> = std::env::var("RAFT_SCALE_CONFIGS")
        .unwrap_or_else(|_| CONFIGS.into())
        .split(',')
        .map(|c| {
            let (v, l) = c.split_once(':').expect("RAFT_SCALE_CONFIGS: VOTERS:LEARNERS[s],…");
            (v.to_owned(), l.to_owned())
        })
        .collect();
    let (mut traffic, mut behaviour) = (Vec::new(), Vec::new());
    for (v, l) in &configs {
        let (mut results, mut failed) = (Vec::new(), 0);
        for r in 0..runs {
            eprintln!("{v} voters, {l} learners, run {}:", r + 1);
            match run_child(&me, v, l) {
                Some(out) => {
                    eprintln!("{out}");
                    results.push(out);
                }
                None => failed += 1,
            }
        }
        let l = match l.strip_suffix('s') {
            Some(n) => format!("{n} (stubs)"),
            None => l.clone(),
        };
        let m = |path: &[&str]| median(results.iter().map(|r| path.iter().fold(r, |v, k| &v[*k]).as_f64().unwrap_or(f64::NAN)).collect());
        traffic.push(format!(
            "| {v} | {l} | {:.0} / {:.0} | {:.0} / {:.0} | {:.1}% / {:.1}% | {:.0} / {:.0} | {:.0}% | {:.2} |",
            m(&["idle", "append_per_s"]),
            m(&["load", "append_per_s"]),
            m(&["idle", "append_kib_per_s"]),
            m(&["load", "append_kib_per_s"]),
            100.0 * m(&["idle", "leader_cpu"]),
            100.0 * m(&["load", "leader_cpu"]),
            m(&["idle", "leader_us_per_append"]),
            m(&["load", "leader_us_per_append"]),
            100.0 * m(&["load", "leader_runq_wait"]),
            m(&["load", "process_cpu"]),
        ));
        let lost: Vec<String> = results.iter().filter_map(|r| r["lost_leadership_in"].as_str().map(str::to_owned)).collect();
        behaviour.push(format!(
            "| {v} | {l} | {:.1} / {:.1} | {:.0} / {:.0} / {:.0} | {:.0} | {:.1} | {:.0} | {:.2} | {:.1} | {:.2} | {} |",
            m(&["load", "commit_p50_ms"]),
            m(&["load", "commit_p99_ms"]),
            m(&["idle", "max_gap_voter_ms"]),
            m(&["load", "max_gap_voter_ms"]),
            m(&["joining", "max_gap_voter_ms"]),
            m(&["load", "max_gap_learner_ms"]),
            m(&["initial_sync_s"]),
            m(&["snapshots_sent"]),
            m(&["join_s"]),
            m(&["rss_mib"]),
            m(&["rss_per_member_mib"]),
            if lost.is_empty() {
                format!("0/{}", results.len())
            } else {
                format!("{}/{} ({})", lost.len(), results.len(), lost.join(", "))
            } + &if failed > 0 { format!("; {failed}/{runs} runs did not finish in {} s", RUN_DEADLINE.as_secs()) } else { String::new() },
        ));
    }
    println!(
        "| voters | learners | AppendEntries/s, idle / {RATE} w/s | KiB/s sent, idle / {RATE} w/s | leader thread CPU (one core), idle / {RATE} w/s | leader µs per AppendEntries, idle / {RATE} w/s | leader run-queue wait, {RATE} w/s | all members' CPU, {RATE} w/s (cores) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    traffic.iter().for_each(|r| println!("{r}"));
    println!();
    println!(
        "| voters | learners | commit p50 / p99, {RATE} w/s (ms) | longest silence to a voter, idle / {RATE} w/s / adding a learner (ms) | … to a learner, {RATE} w/s (ms) | all learners' initial sync (s) | snapshots sent | one more learner caught up (s) | RSS (MiB) | RSS per member (MiB) | runs where member 0 lost leadership (when) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    behaviour.iter().for_each(|r| println!("{r}"));
}
