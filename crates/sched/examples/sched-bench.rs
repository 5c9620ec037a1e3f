//! Scheduling throughput: `cargo run --release -p atoll-sched --example sched-bench`.
//! 1000 services (0–6 replicas, ten of them global, up to two constraints each, reservations
//! up to 1 CPU and 1 GiB) placed from nothing onto 100 and 1000 simulated members (32 CPUs and
//! 64 GiB each, labels and roles mixed), then the replan after the busiest member dies (what
//! the leader runs on a failover), and the replan of the converged state (nothing to do: the
//! reconciler's steady state). Median of 5 each.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use atoll_sched::{Action, Mode, NodeState, Resources, apply, plan};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// The member holding the most allocations.
fn busiest(allocs: &[atoll_sched::Allocation]) -> String {
    let mut count = std::collections::BTreeMap::<&str, usize>::new();
    allocs.iter().for_each(|a| *count.entry(&a.node).or_default() += 1);
    count.into_iter().max_by_key(|(_, c)| *c).map(|(n, _)| n.to_owned()).unwrap_or_default()
}

fn main() {
    println!(
        "| members | services | replicas placed | pending | place all (ms) | replan after a member dies (ms, replicas moved) | replan, nothing to do (ms) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for nodes in [100, 1000] {
        let (mut ns, mut ss) = common::world(42, nodes, 1000, 6);
        ns.iter_mut().for_each(|n| n.capacity = Resources { nano_cpus: 32 * common::CPU, memory_bytes: 64 * common::GIB });
        for (i, s) in ss.iter_mut().enumerate() {
            s.mode = if i % 100 == 0 { Mode::Global } else { Mode::Replicated };
        }
        let (mut fresh, mut moved, mut idle) = (Vec::new(), Vec::new(), Vec::new());
        let (mut placed, mut pending, mut n_moved) = (0, 0, 0);
        for _ in 0..5 {
            ns.iter_mut().for_each(|n| n.state = NodeState::Up);
            let t = Instant::now();
            let p = plan(&ss, &[], &ns);
            fresh.push(t.elapsed());
            placed = p.actions.len();
            pending = p.pending.iter().map(|p| p.missing).sum::<u32>();
            let mut allocs = Vec::new();
            apply(&mut allocs, &p);

            let t = Instant::now();
            let again = plan(&ss, &allocs, &ns);
            idle.push(t.elapsed());
            assert!(again.actions.is_empty());

            let busiest = ns.iter().position(|n| n.id == busiest(&allocs)).expect("a member");
            ns[busiest].state = NodeState::Down;
            let t = Instant::now();
            let p = plan(&ss, &allocs, &ns);
            moved.push(t.elapsed());
            n_moved = p.actions.iter().filter(|a| matches!(a, Action::Start { .. })).count();
        }
        println!(
            "| {nodes} | 1000 | {placed} | {pending} | {} | {} ({n_moved}) | {} |",
            ms(median(fresh)),
            ms(median(moved)),
            ms(median(idle))
        );
    }
}
