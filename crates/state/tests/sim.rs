//! Deterministic simulation: the same members, clients and nemesis as `cluster.rs`, on one
//! thread in tokio's simulated time (which jumps ahead whenever every task waits), with a
//! fixed election timeout per member so that nothing depends on openraft's unseeded
//! randomness. A run is a function of its seed: the test replays seeds and requires the same
//! history, which is what makes a failing seed (printed) reproduce exactly. Seeds run in CI:
//! `SIM_SEEDS` (default 8) from `SEED` (default random).

mod common;

async fn one(seed: u64) -> common::Run {
    let run = common::run(3, 1, true, seed, 3, 40, 5).await;
    common::check(seed, &run);
    run
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn seeds_keep_the_invariants_and_replay_exactly() {
    common::replay_seeds(8, one).await;
}
