#!/usr/bin/env bash
# Benchmark: how the island's Raft group scales with its learners (issue 14's scale estimate).
# In one process, in real time, with the product's Raft config: 3 voters and 0, 10, 100, 300,
# 1000 learners (and 5 voters with 100), idle and at 20 writes/s; the leader on its own thread,
# whose CPU time is measured. See crates/state/examples/raft-scale.rs for what is and is not in
# the numbers. Each configuration runs RUNS times in a fresh process; medians are printed as
# Markdown for BENCHMARKS.md, every run's raw JSON on stderr.
# Usage: bench/raft-scale.sh [RUNS]   (default 3). RAFT_SCALE_CONFIGS=3:0,3:100 picks others.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
cargo build --release --locked -q -p atoll-state --example raft-scale
# A redb file per member, and the leader's sockets-free network: 1000+ open files.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
"$CARGO_TARGET_DIR/release/examples/raft-scale" all "$runs"
