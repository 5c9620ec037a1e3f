#!/usr/bin/env bash
# Benchmark: how long a fresh host takes to join the island's mesh, on the multi-host test
# stage (testkit's `island`: network namespaces, two public hosts, NAT'd hosts behind
# masquerading routers; nothing leaves the namespaces): `atoll join` on a fresh NAT'd host
# running its own daemon, against `nebula` alone run by hand with hand-written configs and
# certificates signed beforehand, both until the first answered ping; then the island's
# memory (daemon and Nebula RSS). See crates/testkit/src/bin/island-bench.rs.
# Usage: sudo bench/island.sh [RUNS]   (default 7). Prints Markdown for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-7}"
[ "$(id -u)" = 0 ] || { echo "bench/island.sh: run as root" >&2; exit 1; }
scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
cargo build --release --locked -q -p atoll --bin atoll -p atoll-testkit --bin island-bench
# The stage tears itself down on exit (and a killed run's namespaces go at the next start).
"$CARGO_TARGET_DIR/release/island-bench" "$runs" "$CARGO_TARGET_DIR/release/atoll"
