#!/usr/bin/env bash
# The replicated state's consistency test, longer: five hosts in namespaces, clients reading,
# writing and compare-and-setting through `atoll island kv` while a nemesis isolates the
# leader, splits a minority, pauses the leader and kills daemons; the history is checked
# linearizable at the end (crates/atoll/tests/island_consistency.rs).
# Usage: sudo scripts/soak.sh [SECONDS]   (default 600; CI runs the short form, ~45 s)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
[ "$(id -u)" = 0 ] || { echo "scripts/soak.sh: run as root" >&2; exit 1; }
scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
ATOLL_SOAK_SECS="$secs" cargo test --locked -p atoll --test island_consistency -- --nocapture
