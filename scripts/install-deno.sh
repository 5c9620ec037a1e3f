#!/usr/bin/env bash
# Installs the Deno binary the deno bundle runtime runs (crates/runner/src/deno/) from npm's
# `@deno/linux-x64-glibc` at a pinned version, checked against the pinned npm integrity, into a
# cache outside the clone: $dir/bin/deno. The runner finds it there (or through ATOLL_DENO, or
# PATH: `atoll_runner::deno::locate`). Idempotent: a second run with the same pin returns at
# once. Run as root.
#
#   ATOLL_DENO_DIR   where to install (default /var/cache/atoll-deno)
set -euo pipefail

version=2.9.6
integrity=sha512-3md4TKLCuzsLDmfOoC5KN7NAZaxSVkMgm64vg6foD00JBADCpYS2/5QqXfzgnP5ZQz3iLP9vBQJtEgc116OAoQ==
dir=${ATOLL_DENO_DIR:-/var/cache/atoll-deno}
stamp="@deno/linux-x64-glibc@$version $integrity"

ready() {
  [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ] && "$dir/bin/deno" --version 2>/dev/null | grep -q "^deno $version "
}
if ready; then
  exit 0
fi

if ! command -v npm >/dev/null; then
  echo "install-deno.sh: installing npm (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi

echo "install-deno.sh: installing deno $version into $dir"
new="$dir.new"
rm -rf "$new"
mkdir -p "$new/bin"
# npm pack fetches the package's tarball (through npm's cache) and checks it against the
# registry's integrity; the pinned integrity is checked here too, so a changed tarball fails.
tgz=$(cd "$new" && npm pack "@deno/linux-x64-glibc@$version" --silent --no-audit --no-fund --loglevel=error)
got="sha512-$(openssl dgst -sha512 -binary "$new/$tgz" | base64 -w0)"
if [ "$got" != "$integrity" ]; then
  echo "install-deno.sh: $tgz has integrity $got, not the pinned $integrity" >&2
  exit 1
fi
tar -xzf "$new/$tgz" -C "$new" package/deno
mv "$new/package/deno" "$new/bin/deno"
rm -rf "$new/package" "$new/$tgz"
chmod 0755 "$new/bin/deno"
echo "$stamp" >"$new/.stamp"
rm -rf "$dir"
mv "$new" "$dir"
ready || { echo "install-deno.sh: $dir/bin/deno does not run: $("$dir/bin/deno" --version 2>&1 | head -3)" >&2; exit 1; }
echo "install-deno.sh: $("$dir/bin/deno" --version | head -1)"
