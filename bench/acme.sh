#!/usr/bin/env bash
# Benchmark: time to obtain a certificate by ACME DNS-01 from a real pebble (Debian pebble,
# DNS-01 answered by pebble-challtestsrv), with Atoll's client (crates/acme, the `obtain`
# example: one process per certificate) and with Debian's lego (`--dns exec`, a script that
# sets the TXT record through challtestsrv's API), interleaved in the same run. Each attempt
# registers a new account (lego gets a fresh --path; obtain is given no stored account) and
# asks for names not asked before (pebble runs with PEBBLE_AUTHZREUSE=0 anyway). lego checks
# that the record is served by asking challtestsrv's DNS (--dns.resolvers; Atoll's island does
# the same check inside its Dns01) and is set to wait as little as it allows: --dns.disable-cp,
# EXEC_POLLING_INTERVAL=0, EXEC_SEQUENCE_INTERVAL=0. Everything runs on 127.0.0.1 inside a network namespace of its own.
# Usage: sudo bench/acme.sh [ROUNDS]   (default 10). Prints Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-10}"
[ "$(id -u)" = 0 ] || { echo "bench/acme.sh: run as root" >&2; exit 1; }
if [ -z "${ATOLL_BENCH_ACME_NETNS:-}" ]; then
  scripts/install-deps.sh >&2
  cargo build --release --locked -q -p atoll-acme --example obtain
  exec unshare --net env ATOLL_BENCH_ACME_NETNS=1 "$0" "$@"
fi
ip link set lo up
obtain="$(realpath "${CARGO_TARGET_DIR:-target}")/release/examples/obtain"

work="$(mktemp -d /var/tmp/atoll-bench-acme.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.pem -days 1 \
  -subj /CN=pebble -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE 2>/dev/null
cat >pebble.json <<JSON
{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
  "certificate": "$work/tls.pem", "privateKey": "$work/tls.key", "httpPort": 5002, "tlsPort": 5001,
  "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
pebble-challtestsrv -dns01 127.0.0.1:8053 -management 127.0.0.1:8055 -http01 "" -https01 "" -tlsalpn01 "" >cts.log 2>&1 &
pids+=($!)
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 pebble -config pebble.json -dnsserver 127.0.0.1:8053 >pebble.log 2>&1 &
pids+=($!)
for port in 8055 14000; do
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "nothing listens on $port" >&2; cat cts.log pebble.log >&2; exit 1; }
done
dir=https://127.0.0.1:14000/dir
cat >exec.sh <<'SH'
#!/bin/sh
# lego's exec DNS provider: present|cleanup FQDN VALUE
case "$1" in
  present) curl -sf -X POST -d "{\"host\":\"$2\",\"value\":\"$3\"}" http://127.0.0.1:8055/set-txt ;;
  cleanup) curl -sf -X POST -d "{\"host\":\"$2\"}" http://127.0.0.1:8055/clear-txt ;;
esac
SH
chmod +x exec.sh

ms() { echo $(( $(date +%s%N) / 1000000 )); }
# run_ours NAME... / run_lego N NAME...: print the milliseconds taken; abort on failure.
run_ours() {
  local t0; t0=$(ms)
  "$obtain" "$dir" tls.pem http://127.0.0.1:8055 "$@" >ours.out 2>&1 || { cat ours.out >&2; exit 1; }
  echo $(( $(ms) - t0 ))
}
run_lego() {
  local n=$1; shift
  local args=() t0
  for d in "$@"; do args+=(--domains "$d"); done
  t0=$(ms)
  EXEC_PATH="$work/exec.sh" EXEC_POLLING_INTERVAL=0 EXEC_PROPAGATION_TIMEOUT=10 EXEC_SEQUENCE_INTERVAL=0 LEGO_CA_CERTIFICATES="$work/tls.pem" \
    lego --server "$dir" --path "$work/lego-$n" --email bench@friends.test --accept-tos \
      --dns exec --dns.resolvers 127.0.0.1:8053 --dns.disable-cp "${args[@]}" run >lego.out 2>&1 || { cat lego.out >&2; exit 1; }
  echo $(( $(ms) - t0 ))
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }

: >one.ours; : >one.lego; : >wild.ours; : >wild.lego
for i in $(seq "$rounds"); do
  # Alternate who goes first.
  if (( i % 2 )); then
    run_ours "o$i.friends.test" >>one.ours; run_lego "one-$i" "l$i.friends.test" >>one.lego
    run_ours "*.o$i.friends.test" "o$i.friends.test" >>wild.ours; run_lego "wild-$i" "*.l$i.friends.test" "l$i.friends.test" >>wild.lego
  else
    run_lego "one-$i" "l$i.friends.test" >>one.lego; run_ours "o$i.friends.test" >>one.ours
    run_lego "wild-$i" "*.l$i.friends.test" "l$i.friends.test" >>wild.lego; run_ours "*.o$i.friends.test" "o$i.friends.test" >>wild.ours
  fi
done

echo "| certificate | atoll-acme (median ms) | lego $(dpkg-query -W -f='${Version}' lego) (median ms) | lego / atoll-acme |"
echo "|---|---:|---:|---:|"
for c in one wild; do
  o=$(median <"$c.ours"); l=$(median <"$c.lego")
  name=$([ "$c" = one ] && echo "one name" || echo "wildcard + base name")
  echo "| $name | $o | $l | $(awk -v l="$l" -v o="$o" 'BEGIN {printf "%.1f", l / o}') |"
done
echo
echo "$rounds rounds; all runs (ms): atoll-acme one $(tr '\n' ' ' <one.ours)| lego one $(tr '\n' ' ' <one.lego)| atoll-acme wildcard $(tr '\n' ' ' <wild.ours)| lego wildcard $(tr '\n' ' ' <wild.lego)"
