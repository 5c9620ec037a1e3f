#!/usr/bin/env bash
# Benchmark: the island's mesh (Nebula 1.6.1), side by side in one run.
# Three hosts in network namespaces on a "wan" bridge (203.0.113.0/24): a lighthouse + relay
# and two members, A and B, with certificates from nebula-cert and configs like the ones
# crates/mesh renders. Between A and B it measures ping RTT (median of 100 pings) and TCP
# throughput (iperf3, median of ROUNDS runs of SECONDS s):
#   - over the raw underlay (203.0.113.x),
#   - over Nebula directly (10.42.0.x, a direct tunnel),
#   - over Nebula through the relay (UDP between A and B dropped on the bridge, tunnels
#     rebuilt, which then go through the lighthouse).
# and the RSS of each nebula process. Nothing outside the namespaces it makes is touched.
# Usage: sudo bench/mesh.sh [ROUNDS] [SECONDS]   (default 5 rounds of 5 s). Prints Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
secs="${2:-5}"
[ "$(id -u)" = 0 ] || { echo "bench/mesh.sh: run as root" >&2; exit 1; }
scripts/install-deps.sh >&2

p="amb$$"
work="$(mktemp -d /var/tmp/atoll-bench-mesh.XXXXXX)"
hosts=(lh a b)
in_ns() { local n=$1; shift; nsenter --net="/run/netns/$p-$n" -- "$@"; }
cleanup() {
  for n in wan "${hosts[@]}"; do
    ip netns pids "$p-$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  wait 2>/dev/null || true
  for n in wan "${hosts[@]}"; do ip netns del "$p-$n" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$p-wan"
ip -n "$p-wan" link set lo up
ip -n "$p-wan" link add br0 type bridge
ip -n "$p-wan" link set br0 up
cd "$work"
nebula-cert ca -name bench -duration 2h -out-crt ca.crt -out-key ca.key
i=1
for h in "${hosts[@]}"; do
  ip netns add "$p-$h"
  ip -n "$p-$h" link set lo up
  ip -n "$p-wan" link add "v$h" type veth peer name eth0 netns "$p-$h"
  ip -n "$p-wan" link set "v$h" master br0 up
  ip -n "$p-$h" addr add "203.0.113.$i/24" dev eth0
  ip -n "$p-$h" link set eth0 up
  nebula-cert keygen -out-key "$h.key" -out-pub "$h.pub"
  nebula-cert sign -name "$h" -ip "10.42.0.$i/16" -in-pub "$h.pub" -out-crt "$h.crt" -duration 1h
  if [ "$h" = lh ]; then role=true; hosts_list='[]'; relays='[]'; else role=false; hosts_list='["10.42.0.1"]'; relays='["10.42.0.1"]'; fi
  cat >"$h.yml" <<EOF
pki: {ca: "$work/ca.crt", cert: "$work/$h.crt", key: "$work/$h.key", disconnect_invalid: true}
static_host_map: {"10.42.0.1": ["203.0.113.1:4242"]}
lighthouse: {am_lighthouse: $role, interval: 60, hosts: $hosts_list}
listen: {host: "0.0.0.0", port: 4242}
punchy: {punch: true, respond: true}
relay: {am_relay: $role, use_relays: true, relays: $relays}
tun: {dev: "atoll0", mtu: 1300}
logging: {level: info, format: json}
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound: [{port: any, proto: icmp, host: any}, {port: 5201, proto: tcp, host: any}]
EOF
  i=$((i + 1))
done

start_nebula() { in_ns "$1" nebula -config "$work/$1.yml" >>"$work/$1.log" 2>&1 & }
for h in "${hosts[@]}"; do start_nebula "$h"; done
# Ready when B answers over the mesh.
wait_mesh() { for _ in $(seq 1 30); do in_ns a ping -c1 -W1 -q 10.42.0.3 >/dev/null 2>&1 && return 0; done; echo "no mesh" >&2; exit 1; }
wait_mesh
in_ns b iperf3 -s -D -I "$work/iperf.pid" >/dev/null

median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.stdin.read().split()]; print(f"{statistics.median(v):.{int(sys.argv[1])}f}")' "$1"; }
rtt() { in_ns a ping -c 100 -i 0.02 -q -n "$1" >/dev/null; in_ns a ping -c 100 -i 0.02 -n "$1" | sed -n 's/.*time=\([0-9.]*\) ms/\1/p' | median 3; }
tput() {
  for _ in $(seq 1 "$rounds"); do
    in_ns a iperf3 -c "$1" -t "$secs" -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6)'
  done | median 0
}
nebula_pid() { for x in $(ip netns pids "$p-$1"); do if [ "$(cat "/proc/$x/comm")" = nebula ]; then echo "$x"; fi; done; }
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$(nebula_pid "$1")/status"; }

underlay_rtt=$(rtt 203.0.113.3); underlay_tput=$(tput 203.0.113.3)
direct_rtt=$(rtt 10.42.0.3); direct_tput=$(tput 10.42.0.3)
rss_a_direct=$(rss a); rss_lh_direct=$(rss lh)

# Cut A <-> B on the bridge and rebuild their tunnels: they now go through the relay.
in_ns wan nft -f - <<'EOF'
table bridge cut {
  chain filt {
    type filter hook forward priority 0;
    ip saddr 203.0.113.2 ip daddr 203.0.113.3 drop
    ip saddr 203.0.113.3 ip daddr 203.0.113.2 drop
  }
}
EOF
for h in a b; do
  pid=$(nebula_pid "$h")
  kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  start_nebula "$h"
done
wait_mesh
# The underlay between them is cut, so a mesh that answers goes through the relay.
if in_ns a ping -c1 -W1 -q 203.0.113.3 >/dev/null 2>&1; then echo "bench/mesh.sh: the A-B underlay is not cut" >&2; exit 1; fi
relay_rtt=$(rtt 10.42.0.3); relay_tput=$(tput 10.42.0.3)
rss_lh_relay=$(rss lh); rss_a_relay=$(rss a)

ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
echo "| path A → B | ping RTT median (ms) | TCP throughput median (Mbit/s) | vs underlay |"
echo "|---|---|---|---|"
echo "| raw underlay (veth + bridge) | $underlay_rtt | $underlay_tput | 1.00x |"
echo "| Nebula, direct tunnel | $direct_rtt | $direct_tput | $(ratio "$direct_tput" "$underlay_tput") |"
echo "| Nebula, through the relay | $relay_rtt | $relay_tput | $(ratio "$relay_tput" "$underlay_tput") |"
echo
echo "| nebula RSS (MiB) | after direct runs | after relayed runs |"
echo "|---|---|---|"
echo "| member A | $rss_a_direct | $rss_a_relay |"
echo "| lighthouse + relay | $rss_lh_direct | $rss_lh_relay |"
