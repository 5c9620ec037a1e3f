#!/usr/bin/env bash
# Benchmark: the island's replicated state against etcd 3.4, on the multi-host test stage
# (network namespaces, public hosts and NAT'd hosts behind masquerading routers; nothing leaves
# the namespaces): write latency at the leader and at a follower (p50/p99) and throughput with
# 3 and 5 voters, both replicating over the same Nebula mesh; leader failover time (killed →
# next write acknowledged), median of RUNS. See crates/testkit/src/bin/state-bench.rs.
# Usage: sudo bench/state.sh [RUNS]   (default 10). Prints Markdown for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
[ "$(id -u)" = 0 ] || { echo "bench/state.sh: run as root" >&2; exit 1; }
scripts/install-deps.sh
# The peer. Debian's package may start a system-wide etcd: only its binary is used here.
if ! command -v etcd >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null
    systemctl disable --now etcd >/dev/null 2>&1 || true
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
cargo build --release --locked -q -p atoll --bin atoll -p atoll-testkit --bin state-bench
"$CARGO_TARGET_DIR/release/state-bench" "$runs" "$CARGO_TARGET_DIR/release/atoll"
