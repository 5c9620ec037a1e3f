//! Three voters and a learner in one process, in real time on a multi-threaded runtime, under
//! a workload of writes, compare-and-sets and linearizable reads from four clients while the
//! nemesis isolates the leader, partitions members away and kills and restarts them (each
//! restart reopens its redb file). The history is checked with `atoll-lincheck`, with the
//! other invariants of `common::check`. `SEED=n` replays the nemesis' and the clients'
//! choices; thread timing still varies here (see `sim.rs` for exact replay).

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_under_partitions_kills_and_restarts() {
    let seed = common::seed();
    let run = common::run(3, 1, false, seed, 4, 60, 6).await;
    common::check(seed, &run);
    eprintln!("{} operations, faults: {:?}", run.history.len(), run.faults);
}
