#!/usr/bin/env bash
# Benchmark: the island's authoritative DNS (issue 16).
# 1. Queries/s and latency of Atoll's server (crates/dns, the `serve` example: the server every
#    public host runs, fed a snapshot) side by side with Knot DNS 3.2 (Debian `knot`) serving the
#    same zone (1000 A records), in one network namespace of their own, with dnsperf: the most
#    each answers (100 queries in flight, 10 s), then the latency at a fixed 5000 queries/s
#    (p50 and p99 from dnsperf's per-query report). The queries: 90% names that exist, 10% not.
#    Rounds alternate between the two servers.
# 2. crates/testkit/src/bin/names-bench.rs on the island's test stage: a record change to every
#    public host answering it, and a certificate from pebble, `atoll cert request` vs lego.
# Usage: sudo bench/dns.sh [ROUNDS]   (default 3). Prints Markdown for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
[ "$(id -u)" = 0 ] || { echo "bench/dns.sh: run as root" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
if [ -z "${ATOLL_BENCH_DNS_NETNS:-}" ]; then
  scripts/install-deps.sh >&2
  cargo build --release --locked -q -p atoll-dns --example serve
  cargo build --release --locked -q -p atoll --bin atoll -p atoll-testkit --bin names-bench
  ATOLL_BENCH_DNS_NETNS=1 unshare --net "$0" "$@"
  echo
  "$CARGO_TARGET_DIR/release/names-bench" "${NAMES_RUNS:-20}" "$CARGO_TARGET_DIR/release/atoll"
  exit 0
fi
ip link set lo up
serve="$CARGO_TARGET_DIR/release/examples/serve"
work="$(mktemp -d /var/tmp/atoll-bench-dns.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

# The zone, for both: SOA, two nameservers with glue, 1000 A records.
python3 - <<'PY'
import json
recs = [{"name": f"host{i}.friends.example.", "ttl": 300, "rtype": "A", "value": f"192.0.2.{i % 250 + 1}"} for i in range(1000)]
snap = {"zones": [{"origin": "friends.example.", "serial": 1, "hostmaster": "hostmaster.friends.example.",
                   "nameservers": [{"name": "ns1.friends.example.", "addrs": ["203.0.113.10"]}, {"name": "ns2.friends.example.", "addrs": ["203.0.113.11"]}],
                   "records": recs, "secondaries": [], "transfer_key": None}], "keys": []}
json.dump(snap, open("snapshot.json", "w"))
with open("friends.example.zone", "w") as z:
    z.write("$ORIGIN friends.example.\n@ 3600 IN SOA ns1.friends.example. hostmaster.friends.example. 1 3600 600 604800 3600\n")
    z.write("@ 3600 IN NS ns1\n@ 3600 IN NS ns2\nns1 3600 IN A 203.0.113.10\nns2 3600 IN A 203.0.113.11\n")
    for r in recs:
        z.write(f"{r['name']} 300 IN A {r['value']}\n")
with open("queries.txt", "w") as q:
    for i in range(10000):
        q.write(f"host{i % 1000}.friends.example A\n" if i % 10 else f"nope{i}.friends.example A\n")
PY
mkdir -p knot
cat > knot.conf <<EOF
server:
    listen: 127.0.0.1@5302
    rundir: $work/knot
log:
  - target: stderr
    any: error
database:
    storage: $work/knot
template:
  - id: default
    storage: $work
    zonefile-load: whole
    journal-content: none
zone:
  - domain: friends.example
    file: friends.example.zone
EOF
"$serve" snapshot.json 127.0.0.1:5301 >serve.log 2>&1 & pids+=($!)
knotd -c knot.conf >knot.log 2>&1 & pids+=($!)
for port in 5301 5302; do
  for _ in $(seq 1 100); do dig +short +time=1 +tries=1 -p "$port" @127.0.0.1 host1.friends.example A | grep -q . && break; sleep 0.1; done
  dig +short -p "$port" @127.0.0.1 host1.friends.example A | grep -q 192.0.2.2 || { echo "the server on $port does not answer" >&2; cat serve.log knot.log >&2; exit 1; }
done

qps() { dnsperf -s 127.0.0.1 -p "$1" -d queries.txt -l 10 -q 100 -c 4 2>/dev/null | awk '/Queries per second/ {printf "%.0f\n", $4}'; }
lat() {  # p50 and p99 in ms at 5000 queries/s
  dnsperf -s 127.0.0.1 -p "$1" -d queries.txt -l 5 -Q 5000 -v 2>/dev/null \
    | awk '$1 == ">" {print $NF}' | sort -n | awk '{a[NR]=$1} END {printf "%.3f %.3f\n", a[int(NR*0.5)]*1000, a[int(NR*0.99)]*1000}'
}
declare -A q l50 l99
for r in $(seq 1 "$rounds"); do
  for s in atoll:5301 knot:5302; do
    name=${s%%:*} port=${s##*:}
    q[$name]+="$(qps "$port") "
    read -r a b < <(lat "$port")
    l50[$name]+="$a " l99[$name]+="$b "
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
aq=$(echo "${q[atoll]}" | median) kq=$(echo "${q[knot]}" | median)
echo "Authoritative queries, $rounds rounds each, alternating; medians (one zone of 1000 A records; 10% NXDOMAIN):"
echo
echo "| server | queries/s (100 in flight) | p50 at 5000 q/s (ms) | p99 at 5000 q/s (ms) | queries/s vs knot |"
echo "|---|---|---|---|---|"
for name in atoll knot; do
  echo "| $name | $(echo "${q[$name]}" | median) | $(echo "${l50[$name]}" | median) | $(echo "${l99[$name]}" | median) | $(python3 -c "print(f'{float(\"$(echo "${q[$name]}" | median)\") / float(\"$kq\"):.2f}x')") |"
done
