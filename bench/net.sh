#!/usr/bin/env bash
# Benchmark: networking, side by side in one run.
#  - HTTP through a published port (127.0.0.1:8080, DNAT + masquerade) against the same busybox
#    httpd reached directly on its container address: connection rate (a small page; busybox
#    httpd closes every connection) and throughput (a 16 MiB file), with wrk.
#  - DNS queries per second of Atoll's resolver against dnsmasq serving the same names from a
#    hosts file, with dnsperf.
# Everything runs in a network namespace of its own: the host's network is not touched.
# Usage: sudo bench/net.sh [ROUNDS] [SECONDS]   (default 5 rounds of 5 s). Prints Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
secs="${2:-5}"
[ "$(id -u)" = 0 ] || { echo "bench/net.sh: run as root" >&2; exit 1; }
scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
cargo build --release --locked -q -p atoll -p atoll-testkit
bin="$CARGO_TARGET_DIR/release"

ns="atoll-bench-$$"
work="$(mktemp -d /var/tmp/atoll-bench-net.XXXXXX)"
in_ns() { nsenter --net="/run/netns/$ns" -- "$@"; }
cleanup() {
  "$bin/atoll" ps -aq 2>/dev/null | xargs -r "$bin/atoll" rm -f >/dev/null 2>&1 || true
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  wait 2>/dev/null || true
  umount -R "$work"/data/containers/*/rootfs 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
# Tens of thousands of short connections per run: give the client every port, and reuse
# TIME_WAIT ones, so no run is starved by the one before.
in_ns sysctl -qw net.ipv4.ip_local_port_range="10000 65535" net.ipv4.tcp_tw_reuse=1
export ATOLL_SOCKET="$work/atoll.sock"
in_ns "$bin/atoll" daemon --data-dir "$work/data" >"$work/daemon.log" 2>&1 &
until "$bin/atoll" info >/dev/null 2>&1; do sleep 0.05; done
"$bin/mkimage" busybox "$work/layout" latest >/dev/null
"$bin/atoll" image import "$work/layout" --name localhost/busybox >/dev/null

# A fresh server for every measurement: busybox httpd closes each connection itself, so the
# TIME_WAIT sockets of one run (in the container's namespace) would slow the next.
fresh_web() {
  "$bin/atoll" rm -f web >/dev/null 2>&1 || true
  "$bin/atoll" run -d --name web -p 8080:80 localhost/busybox sh -c \
    'mkdir /www && echo hello > /www/index.html && head -c 16777216 /dev/zero > /www/big && exec httpd -f -p 80 -h /www' >/dev/null
  ip=$("$bin/atoll" inspect web | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["endpoints"][0]["ipv4"])')
  until in_ns curl -sf -o /dev/null "http://$ip/"; do sleep 0.05; done
}

# wrk: prints requests/s and transfer MiB/s.
bench_wrk() {
  in_ns wrk -t2 -c"$2" -d"${secs}s" --latency "$1" 2>/dev/null | awk '
    /Requests\/sec/ { r = $2 }
    /Transfer\/sec/ { v = $2; if (v ~ /GB/) m = v * 1024; else if (v ~ /MB/) m = v + 0; else if (v ~ /KB/) m = v / 1024; else m = v / 1048576 }
    END { printf "%.0f %.1f\n", r, m }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -A conn thr
for ((i = 0; i < rounds; i++)); do
  order="published direct"; [ $((i % 2)) = 1 ] && order="direct published"
  for target in $order; do
    fresh_web
    base="http://127.0.0.1:8080"; [ "$target" = direct ] && base="http://$ip"
    conn[$target]+="$(bench_wrk "$base/" 16 | cut -d' ' -f1)"$'\n'
    thr[$target]+="$(bench_wrk "$base/big" 4 | cut -d' ' -f2)"$'\n'
  done
done

"$bin/atoll" rm -f web >/dev/null

# DNS: 20 containers with names; the same names in dnsmasq's hosts file.
hosts="$work/hosts"; queries="$work/queries"; : >"$hosts"; : >"$queries"
for n in $(seq 1 20); do
  "$bin/atoll" create --name "svc$n" localhost/busybox true >/dev/null
done
for n in $(seq 1 20); do
  "$bin/atoll" start "svc$n" >/dev/null 2>&1 || true
done
"$bin/atoll" run -d --name resolver-anchor localhost/busybox sleep 3600 >/dev/null
gw=$("$bin/atoll" network inspect bridge | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["gateway4"])')
for n in $(seq 1 20); do
  a=$("$bin/atoll" inspect "svc$n" | python3 -c 'import json,sys; e=json.load(sys.stdin)[0]["endpoints"][0]; print(e["ipv4"], e["ipv6"])')
  set -- $a
  printf '%s svc%s\n%s svc%s\n' "$1" "$n" "$2" "$n" >>"$hosts"
  printf 'svc%s A\nsvc%s AAAA\n' "$n" "$n" >>"$queries"
done
in_ns dnsmasq --no-daemon --no-resolv --no-hosts --addn-hosts="$hosts" --port=5353 --listen-address=127.0.0.1 \
  --bind-interfaces --pid-file= --cache-size=1000 2>/dev/null &
until in_ns dnsperf -s 127.0.0.1 -p 5353 -d "$queries" -l 1 >/dev/null 2>&1; do sleep 0.05; done

qps() { in_ns dnsperf -s "$1" -p "$2" -d "$queries" -l "$secs" -c 4 -q 200 2>/dev/null | awk '/Queries per second/ { printf "%.0f\n", $4 }'; }
lost() { in_ns dnsperf -s "$1" -p "$2" -d "$queries" -l 1 2>/dev/null | awk '/Queries lost/ { print $3 }'; }
declare -A dns
for ((i = 0; i < rounds; i++)); do
  dns[atoll]+="$(qps "$gw" 53)"$'\n'
  dns[dnsmasq]+="$(qps 127.0.0.1 5353)"$'\n'
done

m() { printf '%s' "$1" | grep -v '^$' | median; }
cp=$(m "${conn[published]}"); cd_=$(m "${conn[direct]}")
tp=$(m "${thr[published]}"); td=$(m "${thr[direct]}")
da=$(m "${dns[atoll]}"); dd=$(m "${dns[dnsmasq]}")
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
cat <<EOF
Command: \`sudo bench/net.sh $rounds $secs\` (medians of $rounds rounds of ${secs} s, alternating)

| measure | through Atoll | peer | ratio (Atoll / peer) |
|---|---|---|---|
| HTTP connections/s, small page (published 127.0.0.1:8080 vs container address) | $cp | $cd_ | $(ratio "$cp" "$cd_") |
| HTTP throughput MiB/s, 16 MiB file (published vs container address) | $tp | $td | $(ratio "$tp" "$td") |
| DNS queries/s, 40 names (Atoll's resolver vs dnsmasq) | $da | $dd | $(ratio "$da" "$dd") |

Queries lost in a 1 s check: Atoll $(lost "$gw" 53), dnsmasq $(lost 127.0.0.1 5353).
EOF
