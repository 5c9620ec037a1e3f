#!/usr/bin/env bash
# Runs every check and test Atoll has: formatting, clippy, unit, property and end-to-end
# tests against real components. Needs root (device nodes, overlayfs, runtimes). This is what
# CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Root is needed (images, mounts, namespaces, runtimes): re-run through sudo if not root.
source scripts/as-root.sh
scripts/install-deps.sh

# The target dir lives outside the clone so a reused machine keeps its build; nothing depends on it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# One build from scratch on CI: incremental state would only cost time and disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# Coverage-guided fuzzing of every parser of outside input, short mode (scripts/fuzz.sh 3600 for long runs).
scripts/fuzz.sh "${ATOLL_FUZZ_SECONDS:-15}"
# The release build scripts/up.sh makes: the gateway's profile taken and applied (bench_serve only).
ATOLL_PGO=require scripts/pgo.sh -q -p atoll-gateway --example bench_serve >/dev/null
# One closing line with the totals of every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' "$log"
