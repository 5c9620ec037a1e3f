#!/usr/bin/env bash
# Load: 100 containers created and started concurrently through the API (bridged, each with
# a published port), 50 clients following logs at once, then all removed concurrently;
# throughput and the daemon's peak RSS. The same test CI runs (with its leak checks), built
# in release mode. Usage: sudo bench/load.sh [RUNS]   (default 3; prints each run and the median).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
[ "$(id -u)" = 0 ] || { echo "bench/load.sh: run as root" >&2; exit 1; }
scripts/install-deps.sh >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
for _ in $(seq "$runs"); do
  cargo test --release --locked -q -p atoll --test load -- --nocapture 2>/dev/null | grep '^LOAD:' | tee -a "$out"
done
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "median create+start/s: $(grep -o '([0-9.]*/s); removed' "$out" | tr -d '(/s); removed' | median)"
echo "median remove/s:       $(grep -o 'removed in [0-9.]* s ([0-9.]*/s)' "$out" | sed 's/.*(\([0-9.]*\)\/s)/\1/' | median)"
echo "median peak RSS MiB:   $(grep -o 'peak [0-9.]* MiB (' "$out" | grep -o '[0-9.]*' | median)"
