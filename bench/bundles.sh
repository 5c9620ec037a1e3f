#!/usr/bin/env bash
# Benchmark: the bundle runtimes (crates/runner), in process. Prints Markdown.
#
# wasm, on examples/bundles/hello-wasm: compile time, cold start (a bundle loaded from its
# compiled module → its first response; goal ≤ 5 ms), warm request latency (every request is
# a new instance), requests/s with 16 concurrent clients, memory per loaded bundle, and the
# floor: the same module run by bare wasmtime (new store + instance + `_start`, no limits,
# routing or CGI). The wasmtime CLI is not packaged by Debian (and building wasmtime-cli from
# source takes too long here), so bare wasmtime in-process stands in for it.
#
# deno, on examples/bundles/hello-deno, plain processes (ProcessLauncher): cold start (load →
# first response; goal ≤ 100 ms) with an empty and a warm DENO_DIR, warm request latency,
# requests/s with 16 concurrent clients, the idle instance's RSS; side by side with the same
# handler run by `deno run` directly (Deno.serve on a unix socket: start → first response and
# warm requests; and a script calling it once: process start → exit).
#
# Usage: bench/bundles.sh [ITERATIONS]   (default 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
iterations="${1:-2000}"
scripts/install-deno.sh
cargo build --release --locked -q -p atoll-runner --example bundle_bench --example deno_bench
examples="$(realpath "${CARGO_TARGET_DIR:-target}")/release/examples"
echo "### wasm"
echo
"$examples/bundle_bench" "$iterations"
echo
echo "### deno"
echo
"$examples/deno_bench" "$iterations"
