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
# Through the daemon (as root; crates/testkit/src/bin/bundle-bench.rs): oci and deno bundles'
# cold starts after scale to zero and warm requests, against `docker run -d -p` of the same
# image (dockerd in the same namespace) and `deno run` of the same handler, interleaved.
#
# Usage: bench/bundles.sh [ITERATIONS] [DAEMON_RUNS]   (defaults 2000 and 15).
set -euo pipefail
cd "$(dirname "$0")/.."
iterations="${1:-2000}"
daemon_runs="${2:-15}"
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

echo
echo "### through the daemon"
echo
if [ "$(id -u)" != 0 ]; then
  echo "(skipped: run as root for the daemon's part)"
  exit 0
fi
scripts/install-deps.sh >/dev/null
cargo build --release --locked -q -p atoll -p atoll-testkit
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release"
"$bin/bundle-bench" "$daemon_runs" "$bin/atoll"
