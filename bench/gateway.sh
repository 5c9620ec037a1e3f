#!/usr/bin/env bash
# Benchmark: the HTTPS gateway (issue 17) beside nginx and Caddy (Debian packages), each a TLS
# reverse proxy in front of the same upstream, in a network namespace of their own.
# - The upstream: one nginx (1 worker) serving two static files on 127.0.0.1:8080, a small one
#   (100 B) and a large one (4 MiB), access log off, keep-alive without a request cap.
# - The proxies, each with one ECDSA P-256 certificate (the same file for all three) for
#   bench.example, TLS 1.2/1.3, ALPN h2 and http/1.1, access logs off, X-Forwarded-For/-Proto/-Host
#   sent upstream, upstream keep-alive with up to 128 idle connections:
#   Atoll's gateway (crates/gateway, the `bench_serve` example: one tokio worker thread),
#   nginx (1 worker process, `proxy_pass` to an `upstream` with `keepalive 128`, no temp files),
#   Caddy (`reverse_proxy`, GOMAXPROCS=1, HTTP/3 off).
# - CPUs: every proxy is pinned to CPU 1; the upstream and the load generators share CPU 0.
# - Load: wrk (HTTP/1.1, 1 thread; small: 50 connections, large: 8) and h2load (HTTP/2; small:
#   10 connections x 10 streams, large: 4 x 2), DURATION seconds each (default 10); rounds
#   alternate between the proxies (each round starting with another); medians of the rounds.
#   Latency: p50/p99 of wrk's --latency and of h2load's per-request log, under that (saturating)
#   load. Beside requests/s: the proxy's CPU time per request (from /proc, whichever side was
#   the bottleneck), CPU 0's load, and the CPU that processes outside the benchmark took.
# - Memory: 1000 TLS connections opened to each fresh proxy (handshake, one small request,
#   then left idle); the RSS of the proxy's processes after, minus before.
# - CPU_LIMIT=P (percent of one CPU) runs each proxy in a cgroup of its own with that CPU quota
#   (10 ms period): the proxy is then the bottleneck, not the load generator, and requests/s compare
#   the proxies' throughput for the same CPU (on 2 cores, uncapped, the client side saturates
#   first and the proxies let the same load through).
# Usage: sudo bench/gateway.sh [ROUNDS]   (default 3). Prints Markdown for BENCHMARKS.md.
# PROXIES="atoll nginx" and TESTS="h1-small h2-small" pick a subset; ATOLL_BASE=path/to/another
# bench_serve runs it beside the current one as `atoll-base` (before/after a change).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/nginx-proxy.sh
rounds="${1:-3}"
duration="${DURATION:-10}"
[ "$(id -u)" = 0 ] || { echo "bench/gateway.sh: run as root" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
if [ -z "${ATOLL_BENCH_GW_NETNS:-}" ]; then
  scripts/install-deps.sh >&2
  # Built as scripts/up.sh builds the daemon (the request path optimized with a profile);
  # ATOLL_PGO=off for a build without one.
  scripts/pgo.sh -q -p atoll-gateway --example bench_serve >/dev/null
  ATOLL_BENCH_GW_NETNS=1 exec unshare --net --mount "$0" "$@"
fi
[ "$(nproc --all)" -ge 2 ] || { echo "bench/gateway.sh: needs 2 CPUs (proxies on CPU 1, the rest on CPU 0)" >&2; exit 1; }
ip link set lo up
ulimit -n "$(ulimit -Hn)"
repo="$PWD"
work="$(mktemp -d /var/tmp/atoll-bench-gw.XXXXXX)"
pids=()
limit_cgs=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  for cg in "${limit_cgs[@]}"; do rmdir "$cg" 2>/dev/null || true; done
}
trap cleanup EXIT
cpu_root=""
if [ -n "${CPU_LIMIT:-}" ]; then
  [[ "$CPU_LIMIT" =~ ^[0-9]+$ ]] && [ "$CPU_LIMIT" -ge 10 ] && [ "$CPU_LIMIT" -le 100 ] \
    || { echo "bench/gateway.sh: CPU_LIMIT is a whole percentage of one CPU, 10 to 100" >&2; exit 1; }
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then  # cgroup v2 (the cpu controller is left enabled)
    cpu_root=/sys/fs/cgroup
    grep -qw cpu "$cpu_root/cgroup.subtree_control" || echo +cpu 2>/dev/null >"$cpu_root/cgroup.subtree_control" \
      || { echo "bench/gateway.sh: cannot enable the cpu controller in $cpu_root (a container's cgroup?)" >&2; exit 1; }
  else  # cgroup v1
    cpu_root=$(for d in /sys/fs/cgroup/cpu /sys/fs/cgroup/cpu,cpuacct; do [ -f "$d/cpu.cfs_quota_us" ] && echo "$d" && break; done || true)
    [ -n "$cpu_root" ] || { echo "bench/gateway.sh: no cgroup cpu controller for CPU_LIMIT" >&2; exit 1; }
  fi
fi
# A cgroup of its own for proxy $1 (an idle proxy's timers are not charged to another's quota),
# with the CPU_LIMIT quota per 10 ms; prints its path.
limit_cgroup() {
  local cg="$cpu_root/atoll-bench-gw.$$.$1"
  mkdir "$cg"
  if [ -f "$cg/cpu.max" ]; then
    echo "$((CPU_LIMIT * 100)) 10000" >"$cg/cpu.max"
  else
    echo 10000 >"$cg/cpu.cfs_period_us"
    echo "$((CPU_LIMIT * 100))" >"$cg/cpu.cfs_quota_us"
  fi
  echo "$cg"
}
# `on_cpu1 CGROUP COMMAND…` runs a proxy pinned to CPU 1, in CGROUP unless it is empty (joined
# before the exec, so that every process it starts is in it). Called as `on_cpu1 … &`: it
# replaces the subshell `&` made, so that `$!` is the proxy's PID.
on_cpu1() {
  local cg=$1
  shift
  if [ -n "$cg" ]; then
    exec sh -c 'echo $$ >"$0/cgroup.procs" && exec taskset -c 1 "$@"' "$cg" "$@"
  else
    exec taskset -c 1 "$@"
  fi
}
cd "$work"
stage_files bench.example # bench.example for SNI and Host
mkdir -p caddy
head -c $((4 << 20)) /dev/urandom >www/large

nginx_upstream_conf "$work" >upstream.conf
{
  cat <<EOF
user root; worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err warn;
worker_rlimit_nofile 16384;
events { worker_connections 16384; }
EOF
  nginx_proxy_http "$work" 8444
} >nginx.conf
cat >Caddyfile <<EOF
{
  admin off
  auto_https off
  storage file_system $work/caddy
  servers {
    protocols h1 h2
  }
}
https://bench.example:8445 {
  bind 127.0.0.1
  tls $work/cert.pem $work/key.pem
  reverse_proxy 127.0.0.1:8080 {
    transport http {
      keepalive 2m
      keepalive_idle_conns 128
      keepalive_idle_conns_per_host 128
    }
  }
}
EOF

declare -A port=([atoll]=8443 [nginx]=8444 [caddy]=8445 [atoll-base]=8446) pid=()
# ATOLL_BASE=path/to/another/bench_serve adds it as `atoll-base` (before/after a change, same run).
read -ra proxies <<<"${PROXIES:-atoll nginx caddy${ATOLL_BASE:+ atoll-base}}"  # PROXIES and TESTS pick a subset, for a quick look
read -ra tests <<<"${TESTS:-h1-small h1-large h2-small h2-large}"
taskset -c 0 nginx -p "$work" -c upstream.conf -e "$work/upstream.err" & pids+=($!) upstream=$!
start_proxy() {
  local cg=""
  if [ -n "$cpu_root" ]; then
    cg=$(limit_cgroup "$1")
    limit_cgs+=("$cg")
  fi
  case "$1" in
    atoll) on_cpu1 "$cg" "$CARGO_TARGET_DIR/pgo/use/release/examples/bench_serve" 127.0.0.1:8443 127.0.0.1:8080 bench.example cert.pem key.pem 1 >atoll.log 2>&1 & ;;
    atoll-base) on_cpu1 "$cg" "$ATOLL_BASE" 127.0.0.1:8446 127.0.0.1:8080 bench.example cert.pem key.pem 1 >atoll-base.log 2>&1 & ;;
    nginx) on_cpu1 "$cg" nginx -p "$work" -c nginx.conf -e "$work/nginx.err" & ;;
    caddy) HOME="$work/caddy" XDG_DATA_HOME="$work/caddy" XDG_CONFIG_HOME="$work/caddy" GOMAXPROCS=1 \
             on_cpu1 "$cg" caddy run --config Caddyfile --adapter caddyfile >caddy.log 2>&1 & ;;
  esac
  pid[$1]=$!; pids+=($!)
  for _ in $(seq 1 100); do curl -sfk -o /dev/null "https://bench.example:${port[$1]}/small" && break; sleep 0.1; done
  [ "$(curl -sfk "https://bench.example:${port[$1]}/small" | wc -c)" = 100 ] || { echo "$1 does not serve /small" >&2; cat ./*.log ./*.err >&2; exit 1; }
  [ "$(curl -sfk --http2 "https://bench.example:${port[$1]}/large" | cmp - www/large && echo same)" = same ] \
    || { echo "$1 does not serve /large whole over HTTP/2" >&2; exit 1; }
}
for _ in $(seq 1 50); do curl -sf -o /dev/null http://127.0.0.1:8080/small && break; sleep 0.1; done

# The RSS of a process and its descendants, in KiB.
rss_kb() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
# CPU ticks (user + system) of a process and its descendants.
cpu_ticks() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
cat >idle.py <<'PY'
# Opens N TLS connections (one small HTTP/1.1 request on each), says "ready", holds them until stdin closes.
import asyncio, ssl, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
async def one():
    r, w = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
    w.write(f"GET /small HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()); await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    await r.readexactly(100)
    return w
async def main():
    conns = []
    for i in range(0, n, 50):
        conns += await asyncio.gather(*(one() for _ in range(min(50, n - i))))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
PY

results="$work/results"
: >"$results"
# Memory first, on fresh processes.
for p in "${proxies[@]}"; do
  start_proxy "$p"
  before=$(rss_kb "${pid[$p]}")
  mkfifo hold
  taskset -c 0 python3 idle.py bench.example "${port[$p]}" 1000 <hold >idle.out & idler=$!
  exec 9>hold
  for _ in $(seq 1 600); do grep -q ready idle.out && break; sleep 0.1; done
  grep -q ready idle.out || { echo "$p: 1000 idle connections could not be opened" >&2; exit 1; }
  sleep 1
  after=$(rss_kb "${pid[$p]}")
  exec 9>&-
  wait "$idler" || true
  rm -f hold idle.out
  echo "$p mem 0 $((after - before)) 0 0 0 0 0" >>"$results"
done

# The latency percentiles (ms) of an h2load --log-file (start, status, duration in µs).
h2_lat() { sort -n -k3 "$1" | awk '{a[NR]=$3} END {printf "%.3f %.3f\n", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}'; }
# wrk's latency ("123.45us", "1.23ms", "1.2s") in ms.
ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) print v/1000; else if (v ~ /ms$/) print v+0; else if (v ~ /s$/) print v*1000; else print v }'; }
# Ticks of CPU 0 and of CPU 1: in processes (user, nice, system), in interrupts, in all.
cpus() { awk '$1 ~ /^cpu[01]$/ {printf "%d %d %d ", $2 + $3 + $4, $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8} END {print ""}' /proc/stat; }
run() {  # run PROXY TEST ROUND
  local p=$1 t=$2 url="https://bench.example:${port[$1]}" out rps p50 p99 t0 t1 u0 u1 w0 w1 b0 q0 a0 c0 r0 d0 b1 q1 a1 c1 r1 d1
  t0=$(cpu_ticks "${pid[$p]}") u0=$(cpu_ticks "$upstream") w0=$(date +%s%N)
  read -r b0 q0 a0 c0 r0 d0 < <(cpus)
  case "$t" in
    h1-small | h1-large)
      local c=50 path=small
      [ "$t" = h1-large ] && c=8 path=large
      out=$( { time taskset -c 0 wrk -t1 -c"$c" -d"${duration}s" --latency "$url/$path"; } 2>loadgen.time)
      if grep -qE "Non-2xx|Socket errors" <<<"$out"; then echo "$p $t: errors: $(grep -E 'Non-2xx|Socket errors' <<<"$out")" >&2; fi
      rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
      p50=$(ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
      p99=$(ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
      ;;
    h2-small | h2-large)
      local c=10 m=10 path=small
      [ "$t" = h2-large ] && c=4 m=2 path=large
      rm -f h2.log
      out=$( { time taskset -c 0 h2load -c"$c" -m"$m" -D "$duration" --warm-up-time=1 --log-file=h2.log "$url/$path"; } 2>loadgen.time)
      grep -q "h2" <<<"$(grep -i 'Application protocol' <<<"$out")" || echo "$p $t: not HTTP/2: $(grep -i 'protocol' <<<"$out")" >&2
      awk '/^requests:/ && ($10 != 0 || $12 != 0) {print "'"$p $t"': " $0; f=1} /^status codes:/ && ($5+$7+$9 != 0) {print "'"$p $t"': " $0}' <<<"$out" >&2
      rps=$(awk '/^finished in/ {gsub(",", ""); print $4}' <<<"$out")
      read -r p50 p99 < <(awk '$2 == 200' h2.log | h2_lat /dev/stdin)
      ;;
  esac
  t1=$(cpu_ticks "${pid[$p]}") u1=$(cpu_ticks "$upstream") w1=$(date +%s%N)
  read -r b1 q1 a1 c1 r1 d1 < <(cpus)
  # Proxy CPU %, CPU 0 busy %, and the CPU others took (process time on both CPUs that was
  # neither the proxy, the upstream nor the load generator), in % of one CPU: a noisy neighbour.
  awk -v hz="$(getconf CLK_TCK)" -v wall="$(( w1 - w0 ))" -v proxy="$(( t1 - t0 ))" -v up="$(( u1 - u0 ))" \
      -v busy0="$(( b1 - b0 + q1 - q0 ))" -v all0="$(( a1 - a0 ))" -v busy="$(( b1 - b0 + c1 - c0 ))" -v lg="$(tail -1 loadgen.time)" \
      -v head="$p $t $3 $rps $p50 $p99" 'BEGIN {
        split(lg, l, " "); secs = wall / 1e9
        printf "%s %.1f %.1f %.1f\n", head, proxy / hz / secs * 100, busy0 * 100 / all0, (busy / hz - proxy / hz - up / hz - l[1] - l[2]) / secs * 100
      }' >>"$results"
}
ciphers=""
for p in "${proxies[@]}"; do
  ciphers+="$p: $(openssl s_client -connect "bench.example:${port[$p]}" -servername bench.example -alpn h2 </dev/null 2>/dev/null \
    | awk '/^New,/ {print $2, $NF}' | head -1); "
done
TIMEFORMAT='%U %S'  # `time`: the load generator's user and system CPU seconds
for r in $(seq 1 "$rounds"); do
  for t in "${tests[@]}"; do
    # Each round starts with another proxy, so that none always runs first (or last).
    for i in "${!proxies[@]}"; do run "${proxies[$(( (i + r - 1) % ${#proxies[@]} ))]}" "$t" "$r"; done
  done
done

python3 - "$results" "$rounds" "$duration" "$ciphers" "${CPU_LIMIT:-}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
rounds, duration, ciphers, limit = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
data = {}
for p, t, r, *vals in rows:
    data.setdefault((p, t), []).append([float(v) for v in vals])
med = {k: [statistics.median(x[i] for x in v) for i in range(6)] for k, v in data.items()}
proxies = [p for p in ["atoll", "atoll-base", "nginx", "caddy"] if (p, "mem") in data]
names = {"h1-small": "HTTP/1.1, 100 B (wrk, 50 conns)", "h1-large": "HTTP/1.1, 4 MiB (wrk, 8 conns)",
         "h2-small": "HTTP/2, 100 B (h2load, 10 conns × 10 streams)", "h2-large": "HTTP/2, 4 MiB (h2load, 4 conns × 2 streams)"}
def ratio(a, b):
    return f"{a / b:.2f}×" if b else "-"
print(f"Atoll's gateway, nginx and Caddy as TLS reverse proxies to one upstream; medians of {rounds} rounds of {duration} s, interleaved.")
print(f"Each proxy alone on CPU 1 (one worker); load generator and upstream on CPU 0. Negotiated: {ciphers.strip().rstrip(';')}.")
if limit:
    print(f"Each proxy limited to {limit}% of one CPU (a cgroup quota per 10 ms): requests/s is the proxy's throughput for that CPU.")
print("CPU µs/req: the proxy's CPU time (user + system) per request, whichever side was the bottleneck. Others: CPU time (% of one CPU) of")
print("processes outside the benchmark during the runs (other builds on the machine); high values mean a noisy run.")
print()
print("| load | proxy | requests/s | p50 ms | p99 ms | CPU % proxy / CPU 0 / others | CPU µs/req | req/s vs nginx | req/s vs Caddy | p99 vs Caddy | CPU/req vs nginx |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for t in names:
    for p in proxies:
        if (p, t) not in med:
            continue
        rps, p50, p99, cpu, cpu0, others = med[(p, t)]
        us = statistics.median(x[3] * 1e4 / x[0] for x in data[(p, t)])
        n, c = med.get(("nginx", t)), med.get(("caddy", t))
        nus = statistics.median(x[3] * 1e4 / x[0] for x in data[("nginx", t)]) if n else 0
        print(f"| {names[t]} | {p} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {cpu:.0f} / {cpu0:.0f} / {others:.0f} | {us:,.0f} "
              f"| {ratio(rps, n[0]) if n else '-'} | {ratio(rps, c[0]) if c else '-'} | {ratio(p99, c[2]) if c else '-'} | {ratio(us, nus)} |")
print()
print("| proxy | RSS per 1000 idle TLS connections (MiB) |")
print("|---|---|")
for p in proxies:
    print(f"| {p} | {data[(p, 'mem')][0][0] / 1024:.1f} |")
PY
