//! Deterministic simulation of membership changes: one voter and four learners, the leader
//! carrying out `voters::plan` (as the island's reconciler does) while a nemesis kills members
//! for longer than the voter timeout, partitions them away and isolates the leader, and
//! clients read, write and compare-and-set. On one thread in tokio's simulated time with a
//! fixed election timeout per member, so a seed replays exactly. Invariants: linearizable,
//! one leader per term, every member converged, never an even or oversized voter set, and
//! once healed, five voters. Seeds: `SIM_SEEDS` (default 4) from `SEED` (default random).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_state::NodeId;
use atoll_state::voters::{Candidate, Policy, Step, plan};
use openraft::{ChangeMembers, ServerState};
use tokio::time::Instant;

const MEMBERS: u64 = 5;
const DOWN_AFTER: Duration = Duration::from_millis(800);

/// The leader's reconciler, every 100 ms until `stop`: every voter set it ever saw.
async fn reconciler(c: Arc<common::Cluster>, stop: Arc<Mutex<bool>>, seen: Arc<Mutex<Vec<BTreeSet<NodeId>>>>) {
    let mut last_alive: BTreeMap<NodeId, Instant> = BTreeMap::new();
    let joined = Instant::now();
    while !*stop.lock().unwrap() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        for id in 0..MEMBERS {
            if c.raft(id).is_some() {
                last_alive.insert(id, now);
            }
        }
        let Some(leader) = c.leader() else { continue };
        let Some(raft) = c.raft(leader) else { continue };
        let m = raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            continue;
        }
        // Each config of a joint one (a change in progress) on its own: their union may be even.
        let configs = m.membership_config.membership().get_joint_config().clone();
        seen.lock().unwrap().extend(configs.iter().cloned());
        let Some(voters) = configs.last().cloned() else { continue };
        let last = m.last_log_index.unwrap_or(0);
        let replication = m.replication.clone().unwrap_or_default();
        let candidates: Vec<Candidate> = (0..MEMBERS)
            .map(|id| Candidate {
                id,
                public: id < 3,
                age: now - joined + Duration::from_secs(100 - id),
                silent: now - last_alive.get(&id).copied().unwrap_or(joined),
                caught_up: id == leader || replication.get(&id).copied().flatten().is_some_and(|l| l.index + 16 >= last),
                leading: id == leader,
            })
            .collect();
        if let Step::Change { voters: next, .. } = plan(&voters, &candidates, Policy { max_voters: 5, down_after: DOWN_AFTER }) {
            let _ = tokio::time::timeout(Duration::from_secs(1), raft.change_membership(ChangeMembers::ReplaceAllVoters(next), true)).await;
        }
    }
}

/// Faults that make the reconciler work: members killed for longer than the voter timeout,
/// members partitioned away, the leader isolated. Member 0 (where the clients start) is
/// partitioned but never killed.
async fn nemesis(c: Arc<common::Cluster>, seed: u64, rounds: usize, log: Arc<Mutex<Vec<String>>>) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xfeed);
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(rng.u64(300..800))).await;
        match rng.u8(0..3) {
            0 => {
                let victim = rng.u64(1..MEMBERS);
                log.lock().unwrap().push(format!("kill {victim} for long"));
                c.kill(victim).await;
                tokio::time::sleep(Duration::from_millis(rng.u64(1000..2000))).await;
                c.boot(victim).await;
            }
            1 => {
                let victim = rng.u64(0..MEMBERS);
                log.lock().unwrap().push(format!("partition {victim} away"));
                c.router.partition(&[victim]);
                tokio::time::sleep(Duration::from_millis(rng.u64(300..1200))).await;
                c.router.heal();
            }
            _ => {
                let leader = c.leader().unwrap_or(0);
                log.lock().unwrap().push(format!("isolate leader {leader}"));
                c.router.partition(&[leader]);
                tokio::time::sleep(Duration::from_millis(rng.u64(300..900))).await;
                c.router.heal();
            }
        }
    }
}

async fn one(seed: u64) -> common::Run {
    let c = common::Cluster::start(1, MEMBERS - 1, true).await;
    let rec = common::Recorder::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(Mutex::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec_task = tokio::spawn(reconciler(c.clone(), stop.clone(), seen.clone()));
    // Let the voters grow first: the faults then hit a replicated group.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let chaos = tokio::spawn(nemesis(c.clone(), seed, 6, log.clone()));
    let clients: Vec<_> = (0..3).map(|i| tokio::spawn(common::client(c.clone(), rec.clone(), i, seed.wrapping_add(i), 30))).collect();
    for t in clients {
        t.await.unwrap();
    }
    chaos.await.unwrap();
    c.router.heal();
    // Healed and all up: the voters grow back to five.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let five = c
            .leader()
            .and_then(|l| c.raft(l))
            .is_some_and(|r| r.metrics().borrow().membership_config.membership().voter_ids().count() == 5);
        if five {
            break;
        }
        assert!(Instant::now() < deadline, "SEED={seed}: the voters grow back to five once healed; faults: {:?}", log.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    *stop.lock().unwrap() = true;
    rec_task.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    for voters in &seen {
        assert!(voters.len() % 2 == 1 && voters.len() <= 5, "SEED={seed}: a voter set of {}: {voters:?}", voters.len());
    }
    // The plan did its work: the voters grew from one to five (through three when the
    // learners caught up one by one, straight to five when they caught up together — both
    // what the plan asks for).
    let sizes: BTreeSet<usize> = seen.iter().map(BTreeSet::len).collect();
    assert!(sizes.contains(&1) && sizes.contains(&5), "SEED={seed}: voter set sizes {sizes:?}");
    let distinct: BTreeSet<&BTreeSet<NodeId>> = seen.iter().collect();
    eprintln!("SEED={seed}: {} voter sets; faults: {:?}", distinct.len(), log.lock().unwrap());
    let run = common::finish(&c, &rec, &log, seed).await;
    common::check(seed, &run);
    run
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn voters_grow_and_are_replaced_under_faults_keeping_the_invariants_and_replaying_exactly() {
    common::replay_seeds(4, one).await;
}
