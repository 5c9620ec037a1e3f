#!/usr/bin/env bash
# Benchmark: stacks on the island (issue 15): failover (a host's cable pulled → its replica
# running elsewhere, median and worst of RUNS) and a 20-service deploy to four hosts against
# `compose up -d` of the same file on one, and a download across hosts over a stack network
# against one on a bridge and one host to host, on the multi-host test stage (network namespaces,
# real Nebula and runc; nothing leaves the namespaces). See crates/testkit/src/bin/stack-bench.rs.
# Usage: sudo bench/stacks.sh [RUNS]   (default 10). Prints Markdown for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
[ "$(id -u)" = 0 ] || { echo "bench/stacks.sh: run as root" >&2; exit 1; }
scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
cargo build --release --locked -q -p atoll --bin atoll -p atoll-testkit --bin stack-bench
"$CARGO_TARGET_DIR/release/stack-bench" "$runs" "$CARGO_TARGET_DIR/release/atoll"
