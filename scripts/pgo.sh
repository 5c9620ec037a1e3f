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
# workspace's Cargo.toml and crates/gateway: taken again only when one of them changes (or when
# that directory is removed, e.g. after a change to the training below).
# Without llvm-profdata the same build is made without a profile (and says so). Needs root (the
# training's namespace). ATOLL_PGO=off builds without a profile; ATOLL_PGO=require fails where
# it would have to (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
. bench/nginx-proxy.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
pgo="$CARGO_TARGET_DIR/pgo"
mkdir -p "$pgo"
say() { echo "pgo.sh: $*" >&2; }

# The training: called as `pgo.sh --train BIN RAWDIR` inside `unshare --net --mount`.
if [ "${1:-}" = --train ]; then
  bin="$2"
  ip link set lo up
  work="$(mktemp -d /tmp/atoll-pgo.XXXXXX)"
  up="" gw=""
  cleanup() {
    [ -n "$gw" ] && kill "$gw" 2>/dev/null
    [ -n "$up" ] && kill "$up" 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$work"
  }
  trap cleanup EXIT
  cd "$work"
  echo "127.0.0.1 localhost train.example" >hosts
  mount --bind "$work/hosts" /etc/hosts # this mount namespace only
  mkdir -p www tmp
  head -c 100 /dev/zero | tr '\0' x >www/small
  head -c 1048576 /dev/zero >www/large
  head -c 65536 /dev/zero >upload
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=train.example -addext subjectAltName=DNS:train.example \
    -keyout key.pem -out cert.pem 2>/dev/null
  nginx_upstream_conf "$work" >upstream.conf
  nginx -c "$work/upstream.conf" &
  up=$!
  until curl -s http://127.0.0.1:8080/small >/dev/null; do sleep 0.05; done
  "$bin" 127.0.0.1:8443 127.0.0.1:8080 train.example cert.pem key.pem 1 >serve.log 2>&1 &
  gw=$!
  until curl -sk https://train.example:8443/small >/dev/null 2>&1; do
    kill -0 "$gw" 2>/dev/null || { cat serve.log >&2; exit 1; }
    sleep 0.1
  done
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
  wait "$gw"
  gw=""
  exit 0
fi

# take_profile FILE: the instrumented build, its training, and the merged profile in FILE.
take_profile() {
  local raw="$pgo/raw"
  rm -rf "$raw"
  # Everything instrumented: the runtime that writes the profile is linked only into a binary
  # built so itself.
  CARGO_TARGET_DIR="$pgo/generate" RUSTFLAGS="-Cprofile-generate=$raw" \
    cargo build --release --locked -q -p atoll-gateway --example bench_serve || return 1
  rm -rf "$raw" # what the build scripts wrote
  unshare --net --mount "$root/scripts/pgo.sh" --train "$pgo/generate/release/examples/bench_serve" || return 1
  ls "$raw"/*.profraw >/dev/null 2>&1 || { say "the training wrote no profile"; return 1; }
  rm -f "$pgo"/gateway-*.profdata
  "$profdata" merge -o "$1.tmp" "$raw" || return 1
  mv "$1.tmp" "$1"
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
    rustup component add llvm-tools >&2 || true
  fi
  if [ ! -x "$profdata" ]; then
    keep_going_without "no llvm-profdata in the toolchain (rustup component add llvm-tools)"
  elif [ "$(id -u)" != 0 ]; then
    keep_going_without "the training needs root (a network namespace)"
  else
    key="$( {
      rustc -vV
      cat Cargo.lock Cargo.toml
      find crates/gateway -type f \( -name '*.rs' -o -name Cargo.toml \) | sort | xargs cat
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
names=() clean=()
while IFS='|' read -r pkg lib; do
  ver="${pkg#* v}"
  clean+=(-p "${pkg%% *}@${ver%% *}")
  names+=("$lib")
done < <(cargo tree --locked -p atoll-gateway -e normal,no-proc-macro --prefix none --format '{p}|{lib}' |
  sed 's/ (\*)$//' | sort -u)
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
