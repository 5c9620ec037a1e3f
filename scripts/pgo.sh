#!/usr/bin/env bash
# Release build with profile-guided optimization (PGO) of the HTTPS gateway's request path:
#   scripts/pgo.sh CARGO_BUILD_ARGS...   e.g. scripts/pgo.sh -p atoll
# runs `cargo build --release --locked CARGO_BUILD_ARGS` and prints the directory that holds the
# binaries ($CARGO_TARGET_DIR/pgo/use/release) on stdout; everything else goes to stderr.
#
# A proxied request runs ~150 KiB of code (hyper, h2, rustls, tokio, the gateway), more than a
# core's 32 KiB instruction cache: laid out by a profile, the hot paths are packed together and
# the cold ones moved out of the way. Measured (BENCHMARKS.md, HTTPS gateway): −18% instructions
# and −35–45% L1i misses per small request. How:
# 1. An instrumented `bench_serve` (the gateway alone, crates/gateway/examples) is built and put
#    under a training load in a network namespace of its own: nginx as the upstream, h2load as
#    the clients (HTTP/1.1 and HTTP/2, small and large responses, uploads, errors).
# 2. Its raw profiles are merged with the toolchain's llvm-profdata (rustup component
#    `llvm-tools`, added here if rustup is there).
# 3. The request path's crates (the gateway and the libraries it uses) are built with the
#    profile (through scripts/rustc-pgo); everything else as usual.
# The profile is kept in $CARGO_TARGET_DIR/pgo, keyed by the toolchain, Cargo.lock, the
# workspace's Cargo.toml, crates/gateway and the training (this script, bench/nginx-proxy.sh):
# taken again only when one of them changes.
# Without llvm-profdata the same build is made without a profile (and says so). Needs root (the
# training's namespace). ATOLL_PGO=off builds without a profile; ATOLL_PGO=require fails where
# it would have to (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
. bench/nginx-proxy.sh
say() { echo "pgo.sh: $*" >&2; }
# Absolute: the training runs in a directory of its own.
export CARGO_TARGET_DIR="$(realpath -m "${CARGO_TARGET_DIR:-/var/cache/atoll-target}")"
pgo="$CARGO_TARGET_DIR/pgo"
mkdir -p "$pgo" || { say "cannot create $pgo (run as root, or set CARGO_TARGET_DIR)"; exit 1; }

# The training: called as `pgo.sh --train BIN` inside `unshare --net --mount` (BIN writes its
# profile where its build said).
if [ "${1:-}" = --train ]; then
  bin="$2"
  ip link set lo up
  work="$(mktemp -d /tmp/atoll-pgo.XXXXXX)"
  up="" gw=""
  cleanup() {
    if [ -n "$gw" ]; then kill "$gw" 2>/dev/null || true; fi
    if [ -n "$up" ]; then kill "$up" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$work"
  }
  # until_up WHAT PID URL [CURL_ARGS]: waits (≤ 30 s) for URL to answer while PID lives.
  until_up() {
    local what="$1" pid="$2" url="$3" _
    shift 3
    for _ in $(seq 300); do
      curl -s "$@" "$url" >/dev/null 2>&1 && return 0
      kill -0 "$pid" 2>/dev/null || { say "$what exited before it answered"; return 1; }
      sleep 0.1
    done
    say "$what did not answer $url within 30 s"
    return 1
  }
  trap cleanup EXIT
  cd "$work"
  stage_files train.example
  head -c 1048576 /dev/zero >www/large
  head -c 65536 /dev/zero >upload
  nginx_upstream_conf "$work" >upstream.conf
  nginx -c "$work/upstream.conf" &
  up=$!
  until_up "the upstream (nginx)" "$up" http://127.0.0.1:8080/small || { cat upstream.err >&2; exit 1; }
  "$bin" 127.0.0.1:8443 127.0.0.1:8080 train.example cert.pem key.pem 1 >serve.log 2>&1 &
  gw=$!
  until_up "the instrumented gateway" "$gw" https://train.example:8443/small -k || { cat serve.log >&2; exit 1; }
  url=https://train.example:8443
  load() {
    local out
    out=$(h2load "$@")
    echo "$out" | grep -q " 0 errored" || { echo "$out" >&2; exit 1; }
  }
  load --h1 -n 60000 -c 50 "$url/small"
  load -n 60000 -c 10 -m 10 "$url/small"
  load --h1 -n 200 -c 4 "$url/large"
  load -n 200 -c 4 -m 2 "$url/large"
  load --h1 -n 2000 -c 10 -d upload "$url/small" # 405 from the upstream, after the body
  load -n 2000 -c 10 -m 10 -d upload "$url/small"
  load -n 2000 -c 10 -m 10 "$url/missing"         # 404
  # bench_serve exits on SIGTERM through main's return, which writes the profile.
  kill -TERM "$gw"
  for _ in $(seq 300); do kill -0 "$gw" 2>/dev/null || break; sleep 0.1; done
  wait "$gw" || { say "the instrumented gateway did not exit cleanly"; exit 1; }
  gw=""
  exit 0
fi

# One at a time: runs share the profile, its raw files and the stamp.
exec 9>"$pgo/lock"
flock 9

# take_profile FILE: the instrumented build, its training, and the merged profile in FILE.
take_profile() {
  local raw="$pgo/raw"
  rm -rf "$raw"
  # Everything instrumented: the runtime that writes the profile is linked only into a binary
  # built so itself.
  CARGO_TARGET_DIR="$pgo/generate" RUSTFLAGS="-Cprofile-generate=$raw" \
    cargo build --release --locked -q -p atoll-gateway --example bench_serve || return 1
  rm -rf "$raw" # what the build scripts wrote
  # Its output to stderr: stdout is our caller's (a command substitution in scripts/up.sh).
  unshare --net --mount "$root/scripts/pgo.sh" --train "$pgo/generate/release/examples/bench_serve" >&2 || return 1
  ls "$raw"/*.profraw >/dev/null 2>&1 || { say "the training wrote no profile"; return 1; }
  rm -f "$pgo"/gateway-*.profdata
  "$profdata" merge -o "$1.tmp" "$raw" || return 1
  # It must hold the gateway's own functions (grep -c reads it all: no SIGPIPE under pipefail).
  [ "$("$profdata" show --all-functions "$1.tmp" | grep -c atoll_gateway)" -gt 0 ] ||
    { say "the profile holds none of the gateway's functions"; return 1; }
  mv "$1.tmp" "$1" || return 1
  rm -rf "$raw"
}
keep_going_without() {
  [ "${ATOLL_PGO:-on}" = require ] && { say "$1"; exit 1; }
  say "$1: building without a profile"
}
profile=""
if [ "${ATOLL_PGO:-on}" != off ]; then
  sysroot="$(rustc --print sysroot)"
  host="$(rustc -vV | awk '/^host:/ {print $2}')"
  profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
  if [ ! -x "$profdata" ] && command -v rustup >/dev/null; then
    # As the toolchain's owner when run through sudo: root-owned files in their ~/.rustup
    # would break their later `rustup update`.
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
      sudo -u "$SUDO_USER" env PATH="$PATH" ${RUSTUP_HOME:+RUSTUP_HOME="$RUSTUP_HOME"} rustup component add llvm-tools >&2 || true
    else
      rustup component add llvm-tools >&2 || true
    fi
  fi
  if [ ! -x "$profdata" ]; then
    keep_going_without "no llvm-profdata in the toolchain (rustup component add llvm-tools)"
  elif [ "$(id -u)" != 0 ]; then
    keep_going_without "the training needs root (a network namespace)"
  else
    key="$( {
      rustc -vV
      cat Cargo.lock Cargo.toml scripts/pgo.sh bench/nginx-proxy.sh
      find crates/gateway -type f \( -name '*.rs' -o -name Cargo.toml \) | LC_ALL=C sort | xargs cat
    } | sha256sum | cut -c1-16)"
    profile="$pgo/gateway-$key.profdata"
    if [ ! -s "$profile" ]; then
      say "taking a profile of the gateway (an instrumented build, then ~20 s of load)"
      take_profile "$profile" || { profile=""; keep_going_without "taking the profile failed (above)"; }
    else
      say "the gateway's profile for this source and toolchain, taken before: $profile"
    fi
    [ -n "$profile" ] && say "building the request path with it"
  fi
fi

# The request path: the gateway and the libraries it runs (not proc-macros); the profile is
# applied to these alone, and to binaries (scripts/rustc-pgo). ATOLL_PGO_CRATES has their names
# as rustc's --crate-name; `clean` their package specs.
tree="$(cargo tree --locked -p atoll-gateway -e normal,no-proc-macro --prefix none --format '{p}|{lib}')"
names=() clean=()
while IFS='|' read -r pkg lib; do
  ver="${pkg#* v}"
  clean+=(-p "${pkg%% *}@${ver%% *}")
  names+=("$lib")
done < <(sed 's/ (\*)$//' <<<"$tree" | LC_ALL=C sort -u)
[ "${#names[@]}" -gt 0 ] || { say "cargo tree listed no crates for atoll-gateway"; exit 1; }
export ATOLL_PGO_CRATES="${names[*]}"
# Cargo does not know what the wrapper adds: when the profile, the wrapper or the crates change,
# those crates are cleaned here so that they (and all that depends on them: the binaries) are
# built again with it.
use="$pgo/use"
stamp="$(cat ${profile:+"$profile"} scripts/rustc-pgo | sha256sum | cut -c1-16) ${names[*]}"
if [ "$(cat "$use/profile-key" 2>/dev/null || true)" != "$stamp" ]; then
  if [ -d "$use/release" ]; then
    CARGO_TARGET_DIR="$use" cargo clean -q --release "${clean[@]}" >&2 || rm -rf "$use"
  fi
  mkdir -p "$use"
  echo "$stamp" >"$use/profile-key"
fi
CARGO_TARGET_DIR="$use" RUSTC_WRAPPER="$root/scripts/rustc-pgo" ATOLL_PGO_USE="$profile" \
  cargo build --release --locked "$@" >&2
echo "$use/release"
