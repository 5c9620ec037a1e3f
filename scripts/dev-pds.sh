#!/usr/bin/env bash
# A local ATProto PDS to try bundles with, offline: installs the official PDS and PLC directory
# (scripts/install-pds.sh) and dnsmasq, then runs crates/testkit/src/bin/dev-pds.rs, which
# starts them on 127.0.0.1 with an account per handle and prints the daemon flags and the
# commands to publish and run an example. Enter stops it.
#
# Usage: scripts/dev-pds.sh [HANDLE…]   (handles end in .test; default alice.test)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/as-root.sh
if ! command -v dnsmasq >/dev/null || ! command -v dig >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dnsmasq-base bind9-dnsutils >/dev/null
fi
scripts/install-pds.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
cargo build --release --locked -q -p atoll-testkit --bin dev-pds
exec "$CARGO_TARGET_DIR/release/dev-pds" "$@"
