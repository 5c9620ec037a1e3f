//! A rolling upgrade, in deterministic simulation: three voters and a learner run a build that
//! reads schema 1; one by one, in an order the seed picks, each is stopped and started again
//! with a build that reads schema 2 (whose migration renames a field), while clients read,
//! write and compare-and-set. The leader's reconciler follows `schema::plan` as the island's
//! does. Invariants: while any member runs the old build the island stays at schema 1; once
//! every member runs the new one it migrates, every member the same way; a member that comes
//! back with the old build stops applying (fail-stop, its copy at the last entry it could
//! read) while the island goes on, and catches up once upgraded; the history is linearizable
//! throughout and a seed replays exactly.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_state::schema::{Code, Migration, Upgrade, plan};
use atoll_state::{Expect, NodeId, Request};
use openraft::{BasicNode, ServerState};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Schema 2 of this test: `things/` documents' `addr` is called `address`.
fn rename_addr(docs: &mut BTreeMap<String, Value>) {
    for (_, v) in docs.iter_mut().filter(|(k, _)| k.starts_with("things/")) {
        if let Some(a) = v.as_object_mut().and_then(|o| o.remove("addr")) {
            v["address"] = a;
        }
    }
}
static TO_2: &[Migration] = &[Migration { to: 2, what: "things: addr is address", run: rename_addr }];
const OLD: Code = Code { reads: 1, migrations: &[] };
const NEW: Code = Code { reads: 2, migrations: TO_2 };

fn schema(c: &common::Cluster, id: NodeId) -> Option<u32> {
    c.reader(id).map(|r| r.with(|k| k.schema))
}

/// A migration the reconciler proposed, and the schemas the members read when it did.
type Proposed = (u32, BTreeMap<NodeId, Option<u32>>);

/// The leader's reconciler, every 100 ms until `stop`: each migration it proposed, with the
/// schemas the members read when it did.
async fn reconciler(c: Arc<common::Cluster>, stop: Arc<Mutex<bool>>, proposed: Arc<Mutex<Vec<Proposed>>>) {
    while !*stop.lock().unwrap() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(leader) = c.leader() else { continue };
        let Some(raft) = c.raft(leader) else { continue };
        let m = raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            continue;
        }
        // A member that is down has not said what it reads.
        let reads: BTreeMap<NodeId, Option<u32>> =
            m.membership_config.membership().nodes().map(|(id, _)| (*id, c.raft(*id).is_some().then(|| c.code(*id).reads))).collect();
        let Some(active) = schema(&c, leader) else { continue };
        if let Upgrade::Migrate { to } = plan(active, c.code(leader).reads, &reads) {
            proposed.lock().unwrap().push((to, reads));
            let _ = tokio::time::timeout(Duration::from_secs(1), raft.client_write(Request::Migrate { to })).await;
        }
    }
}

async fn wait_for(what: &str, seed: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "SEED={seed}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn one(seed: u64) -> common::Run {
    let c = common::Cluster::start_with(3, 1, true, OLD).await;
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xab);
    let before = c.write(0, Request::Put { key: "things/x".into(), value: json!({"addr": "10.0.0.1"}), expect: Expect::Absent }).await;
    assert!(before.is_some(), "SEED={seed}: the old island writes");
    let (rec, log) = (common::Recorder::new(), Arc::new(Mutex::new(Vec::new())));
    let (stop, proposed) = (Arc::new(Mutex::new(false)), Arc::new(Mutex::new(Vec::new())));
    let rec_task = tokio::spawn(reconciler(c.clone(), stop.clone(), proposed.clone()));
    let clients: Vec<_> = (0..3).map(|i| tokio::spawn(common::client(c.clone(), rec.clone(), i, seed.wrapping_add(i), 30))).collect();

    // The rolling upgrade.
    let mut order: Vec<NodeId> = (0..4).collect();
    rng.shuffle(&mut order);
    for (i, &id) in order.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(rng.u64(200..600))).await;
        log.lock().unwrap().push(format!("upgrade {id}"));
        c.kill(id).await;
        tokio::time::sleep(Duration::from_millis(rng.u64(100..500))).await;
        c.boot_with(id, NEW).await.unwrap();
        if i + 1 < order.len() {
            for m in 0..4 {
                assert_eq!(schema(&c, m), Some(1), "SEED={seed}: member {m} migrated while {:?} still ran the old build", &order[i + 1..]);
            }
        }
    }
    wait_for("every member migrates once all run the new build", seed, || (0..4).all(|m| schema(&c, m) == Some(2))).await;
    for t in clients {
        t.await.unwrap();
    }
    for (to, reads) in proposed.lock().unwrap().iter() {
        assert!(reads.values().all(|r| r.is_some_and(|r| r >= *to)), "SEED={seed}: migrated to {to} with members reading {reads:?}");
    }
    for m in 0..4 {
        let x = c.reader(m).unwrap().get("things/x").unwrap();
        assert_eq!(x.value, json!({"address": "10.0.0.1"}), "SEED={seed}: member {m} migrated the document");
    }

    // A new member running the old build: it applies what it can read, stops at the migration,
    // and the island goes on without it.
    c.boot_with(4, OLD).await.unwrap();
    let leader = c.raft(c.leader().unwrap()).unwrap();
    leader.add_learner(4, BasicNode::new("node4"), false).await.unwrap();
    let old = c.raft(4).unwrap();
    wait_for("the old build stops at the migration", seed, || old.metrics().borrow().running_state.is_err()).await;
    let why = old.metrics().borrow().running_state.clone().unwrap_err().to_string();
    assert!(why.contains("upgrade Atoll"), "SEED={seed}: it says what to do: {why}");
    assert_eq!(schema(&c, 4), Some(1), "SEED={seed}: its copy stays at the last schema it reads");
    let x = c.reader(4).unwrap().get("things/x").unwrap();
    assert_eq!(x.value, json!({"addr": "10.0.0.1"}), "SEED={seed}: and at the shape it reads: never a guess");
    let after = c.write(0, Request::Put { key: "things/y".into(), value: json!({"address": "b"}), expect: Expect::Absent }).await;
    assert!(after.is_some(), "SEED={seed}: the island goes on without it");
    // Started again with the old build, it refuses to start (it would apply the migration
    // first); upgraded, it catches up.
    c.kill(4).await;
    let why = c.boot_with(4, OLD).await.unwrap_err();
    assert!(why.contains("upgrade Atoll"), "SEED={seed}: it says what to do: {why}");
    c.boot_with(4, NEW).await.unwrap();

    *stop.lock().unwrap() = true;
    rec_task.await.unwrap();
    let run = common::finish(&c, &rec, &log, seed).await;
    let schemas: BTreeSet<u32> = run.keyspaces.values().map(|k| k.schema).collect();
    assert_eq!(schemas, BTreeSet::from([2]), "SEED={seed}: every member, the late one too, at schema 2");
    common::check(seed, &run);
    run
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_rolling_upgrade_migrates_only_once_every_member_reads_the_new_schema() {
    common::replay_seeds(3, one).await;
}
