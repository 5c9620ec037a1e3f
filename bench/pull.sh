#!/usr/bin/env bash
# Benchmark: pull + unpack of a 5-layer, 200 MiB (unpacked) image from a local registry.
# Side by side in one run: `atoll pull` vs `skopeo copy` to an OCI layout + `umoci unpack`.
# Usage: sudo bench/pull.sh [RUNS]   (default 7). Prints a Markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-7}"
[ "$(id -u)" = 0 ] || { echo "bench/pull.sh: run as root" >&2; exit 1; }
scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
cargo build --release --locked -q -p atoll -p atoll-testkit
bin="$CARGO_TARGET_DIR/release"

work="$(mktemp -d /var/tmp/atoll-bench.XXXXXX)"
cleanup() { kill "${reg_pid:-}" "${daemon_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 & reg_pid=$!
until curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; do sleep 0.05; done

"$bin/mkimage" bulk "$work/layout" v1 5 40 >/dev/null
skopeo copy --quiet --dest-tls-verify=false "oci:$work/layout:v1" "docker://127.0.0.1:$port/bench:v1"
ref="127.0.0.1:$port/bench:v1"
compressed=$(du -sb "$work/layout/blobs" | cut -f1)

export ATOLL_SOCKET="$work/atoll.sock"
"$bin/atoll" daemon --data-dir "$work/atoll" >"$work/daemon.log" 2>&1 & daemon_pid=$!
until "$bin/atoll" info >/dev/null 2>&1; do sleep 0.05; done

hyperfine --runs "$runs" --warmup 1 --export-json "$work/result.json" --style basic \
  --prepare "$bin/atoll image prune -a >/dev/null; rm -rf $work/oci $work/bundle; sync" \
  -n "atoll pull" "$bin/atoll pull -q $ref" \
  -n "skopeo copy + umoci unpack" "skopeo copy --quiet --src-tls-verify=false docker://$ref oci:$work/oci:v1 && umoci unpack --image $work/oci:v1 $work/bundle >/dev/null" \
  -n "skopeo copy alone" "skopeo copy --quiet --src-tls-verify=false docker://$ref oci:$work/oci:v1" >&2

python3 - "$work/result.json" "$compressed" "$runs" <<'PY'
import json, statistics, sys
res = json.load(open(sys.argv[1]))["results"]
med = {r["command"]: statistics.median(r["times"]) for r in res}
base = med["atoll pull"]
print(f"Image: 5 layers, 200 MiB unpacked, {int(sys.argv[2]) / 2**20:.0f} MiB gzip; {sys.argv[3]} runs each after 1 warm-up, caches warm, store emptied before each run.\n")
print("| command | median (s) | min (s) | max (s) | ratio to atoll |")
print("|---|---|---|---|---|")
for r in res:
    c = r["command"]
    print(f"| {c} | {med[c]:.3f} | {min(r['times']):.3f} | {max(r['times']):.3f} | {med[c] / base:.2f}x |")
PY
