#!/usr/bin/env bash
# Installs what Atoll, its tests and its benchmarks need on Debian 12. Idempotent; run as root.
set -euo pipefail

packages=(
  ca-certificates curl openssl
  busybox-static  # a real static userland for test and demo images
  docker-registry # a real registry v2 for tests and the demo
  skopeo          # pushes test images into that registry; benchmark peer
  umoci           # benchmark peer (unpack)
  runc crun       # OCI runtimes
  tini            # the static init behind --init
  nftables iproute2
  dnsmasq-base    # an upstream resolver in DNS tests; benchmark peer
  wrk dnsperf     # network benchmarks
  prometheus      # promtool checks /metrics
  chromium chromium-driver  # dashboard tests in a real browser
  apache2-utils   # htpasswd, for registry auth tests
  hyperfine       # benchmarks
  socat           # bridges the HTTP fuzzer's TCP to the API socket
  docker.io       # a real docker next to Atoll in network tests; benchmark peer
  e2fsprogs       # small filesystems for the full-disk tests
)

if [ "$(id -u)" != 0 ]; then
  echo "install-deps.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "install-deps.sh: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi

# The property-based HTTP fuzzer that checks the API against its OpenAPI document.
schemathesis_version=4.32.5
if ! schemathesis --version 2>/dev/null | grep -q "$schemathesis_version"; then
  echo "install-deps.sh: installing schemathesis $schemathesis_version (PyPI)"
  python3 -m pip install -q --disable-pip-version-check "schemathesis==$schemathesis_version"
fi
