#!/usr/bin/env bash
# Benchmark: the HTTPS gateway's user-space instructions per proxied request (issue 17), under
# callgrind, for builds of the `bench_serve` example and for nginx as the same reverse proxy,
# side by side. Timings on these shared
# 2-core VMs drift ±10% from run to run and the VM has no hardware counters (`perf stat -e
# instructions`: not supported); callgrind's instruction counts repeat to within 1%, so a change
# of a few percent in the gateway's own work shows here when bench/gateway.sh cannot see it.
# It counts user space only: the kernel's half of the cost (TCP on loopback) is not in it.
# - One upstream nginx serving 100 B; bench_serve (one worker), then nginx (one process:
#   `master_process off`, configured as bench/gateway.sh configures it), under
#   valgrind --tool=callgrind. nginx's TLS is OpenSSL's, Atoll's rustls with ring: both
#   assembly for AES-GCM, counted alike.
# - Per build and protocol: 500 warm-up requests, counters zeroed, then N requests with h2load
#   (10 connections × 10 streams; `--h1` for HTTP/1.1), counters dumped: Ir / N.
# Usage: sudo bench/gateway-instr.sh [N]   (default 3000). ATOLL_BASE=path/to/another bench_serve
# adds it as `atoll-base` (before/after a change); PROXIES="atoll" leaves nginx out; KEEP=dir keeps
# the profiles there (callgrind.NAME.h1|h2, for callgrind_annotate --inclusive=yes); CACHE=1 also
# simulates the caches (callgrind --cache-sim=yes: first-level instruction and data misses and
# L2 misses per request — how much code and memory each request touches; ~2x slower). Prints Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/nginx-proxy.sh
n="${1:-3000}"
[ "$(id -u)" = 0 ] || { echo "bench/gateway-instr.sh: run as root" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
if [ -z "${ATOLL_BENCH_GWI_NETNS:-}" ]; then
  scripts/install-deps.sh >&2
  command -v valgrind >/dev/null || apt-get install -y -qq valgrind >&2
  # Built as scripts/up.sh builds the daemon (the request path optimized with a profile);
  # ATOLL_PGO=off for a build without one.
  scripts/pgo.sh -q -p atoll-gateway --example bench_serve >/dev/null
  ATOLL_BENCH_GWI_NETNS=1 exec unshare --net --mount "$0" "$@"
fi
ip link set lo up
work="$(mktemp -d /var/lib/atoll-bench-gwi.XXXXXX)"
pids=()
# nginx's master is stopped with TERM: killed, it would leave its worker (and our stdout) behind.
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
stage_files bench.example
nginx_upstream_conf "$work" >upstream.conf
nginx -c "$work/upstream.conf" & pids+=($!)
until curl -s http://127.0.0.1:8080/small >/dev/null; do sleep 0.05; done

{
  cat <<EOF
user root; worker_processes 1; daemon off; master_process off; pid $work/nginx.pid; error_log $work/nginx.err warn;
events { worker_connections 8192; }
EOF
  nginx_proxy_http "$work" 8443
} >nginx.conf

builds=("atoll=$CARGO_TARGET_DIR/pgo/use/release/examples/bench_serve")
[ -n "${ATOLL_BASE:-}" ] && builds+=("atoll-base=$ATOLL_BASE")
[[ " ${PROXIES:-atoll nginx} " == *" nginx "* ]] && builds+=("nginx=$(command -v nginx)")
vg=(--tool=callgrind)
if [ -n "${CACHE:-}" ]; then
  # This machine's caches per core, fixed so that runs elsewhere compare: 32 KiB 8-way L1i and
  # L1d, 2 MiB 16-way L2 as the last level (the L3 is shared with the other core and the VM's
  # neighbours).
  vg+=(--cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=2097152,16,64)
  echo "| proxy | HTTP/1.1 per request: instructions / L1i misses / L1d misses / L2 misses | HTTP/2 per request: the same |"
else
  echo "| proxy | HTTP/1.1 instructions/request | HTTP/2 instructions/request |"
fi
echo "|---|---|---|"
for b in "${builds[@]}"; do
  name="${b%%=*}"; bin="${b#*=}"; row="| $name |"
  args=(127.0.0.1:8443 127.0.0.1:8080 bench.example cert.pem key.pem 1)
  [ "$name" = nginx ] && args=(-c "$work/nginx.conf")
  for proto in h1 h2; do
    flag=(); [ "$proto" = h1 ] && flag=(--h1)
    valgrind "${vg[@]}" --callgrind-out-file="$work/cg.$name.$proto.%p" \
      "$bin" "${args[@]}" >"$work/serve.log" 2>&1 &
    p=$!; pids+=("$p")
    until curl -sk --resolve bench.example:8443:127.0.0.1 https://bench.example:8443/small >/dev/null 2>&1; do
      kill -0 "$p" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
      sleep 0.1
    done
    h2load "${flag[@]}" -n 500 -c 10 -m 10 https://bench.example:8443/small >/dev/null
    callgrind_control -z "$p" >/dev/null 2>&1
    out=$(h2load "${flag[@]}" -n "$n" -c 10 -m 10 https://bench.example:8443/small)
    ok=$(echo "$out" | awk '/^requests:/ {print $8}')
    [ "$ok" = "$n" ] || { echo "bench/gateway-instr.sh: $name $proto: $ok of $n requests succeeded" >&2; exit 1; }
    # The dump is written by the tool's own thread after the command returns.
    callgrind_control -d "$p" >/dev/null 2>&1
    f=""
    for _ in $(seq 100); do
      f=$(ls "$work/cg.$name.$proto.$p"* 2>/dev/null | grep -v "\.$p$" | head -1 || true)
      [ -n "$f" ] && grep -q "^totals:" "$f" && break
      sleep 0.1
    done
    # The counts per request, by event name (callgrind orders them its own way).
    declare -A ev=()
    while read -r k v; do ev[$k]=$v; done < <(awk -v n="$n" '/^events:/ {for (i = 2; i <= NF; i++) name[i] = $i}
      /^totals:/ {for (i = 2; i <= NF; i++) printf "%s %d\n", name[i], $i / n; exit}' "$f")
    [ -n "${KEEP:-}" ] && cp "$f" "$KEEP/callgrind.$name.$proto"
    if [ -n "${CACHE:-}" ]; then
      row="$row ${ev[Ir]} / ${ev[I1mr]} / $((ev[D1mr] + ev[D1mw])) / $((ev[ILmr] + ev[DLmr] + ev[DLmw])) |"
    else
      row="$row ${ev[Ir]} |"
    fi
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  echo "$row"
done
