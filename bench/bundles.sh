#!/usr/bin/env bash
# Benchmark: the wasm bundle runtime (crates/runner) on examples/bundles/hello-wasm, in
# process: compile time, cold start (a bundle loaded from its compiled module → its first
# response; goal ≤ 5 ms), warm request latency (every request is a new instance), requests/s
# with 16 concurrent clients, memory per loaded bundle, and the floor: the same module run by
# bare wasmtime (new store + instance + `_start`, no limits, routing or CGI). The wasmtime CLI
# is not packaged by Debian (and building wasmtime-cli from source takes too long here), so
# bare wasmtime in-process stands in for it.
# Usage: bench/bundles.sh [ITERATIONS]   (default 2000). Prints Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
iterations="${1:-2000}"
cargo build --release --locked -q -p atoll-runner --example bundle_bench
"$(realpath "${CARGO_TARGET_DIR:-target}")/release/examples/bundle_bench" "$iterations"
