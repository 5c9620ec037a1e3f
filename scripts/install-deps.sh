#!/usr/bin/env bash
# Installs what Atoll, its tests and its benchmarks need on Debian 12. Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  ca-certificates curl openssl
  binutils        # strip: test images carry a stripped netcheck (crates/testkit)
  busybox-static  # a real static userland for test and demo images
  docker-registry # a real registry v2 for tests and the demo
  skopeo          # pushes test images into that registry; benchmark peer
  umoci           # benchmark peer (unpack)
  runc crun       # OCI runtimes
  tini            # the static init behind --init
  nftables iproute2
  iputils-ping    # multi-host tests wait on pings
  nebula          # the island's mesh (nebula, nebula-cert); run by hand as a test and benchmark peer
  dnsmasq-base    # an upstream resolver in DNS tests; benchmark peer
  bind9-dnsutils knot-dnsutils  # dig, nsupdate, kdig: the island's authoritative DNS tests (crates/dns)
  wrk dnsperf     # network benchmarks
  prometheus      # promtool checks /metrics
  chromium chromium-driver  # dashboard tests in a real browser
  apache2-utils   # htpasswd, for registry auth tests
  hyperfine       # benchmarks
  socat           # bridges the HTTP fuzzer's TCP to the API socket
  docker.io       # a real docker next to Atoll in network tests; benchmark peer
  e2fsprogs       # small filesystems for the full-disk tests
  mmdebstrap debian-archive-keyring  # real application images from Debian packages (tests/apps.rs)
  nebula          # the island's mesh (nebula, nebula-cert)
  openssh-client  # ssh-keygen and ssh: Nebula's sshd reports per-peer tunnels (crates/mesh)
  iperf3          # mesh throughput benchmark (bench/mesh.sh)
  pebble          # a test ACME CA (pebble, pebble-challtestsrv) for certificate tests (crates/acme)
  lego            # ACME client, benchmark peer (bench/acme.sh)
  certbot python3-certbot-dns-rfc2136  # a real ACME client using a delegated TSIG key (tests/names.rs)
  dnsperf knot    # authoritative DNS benchmark, and its peer (bench/dns.sh)
  nghttp2-client  # h2load: HTTP/2 abuse (rapid reset) against the gateway (crates/gateway); HTTP/2 benchmark
  nginx caddy     # the gateway's benchmark peers, and the benchmark's upstream (bench/gateway.sh)
  libnss3-tools   # certutil: the browser in the gateway tests trusts pebble's root (tests/gateway.rs)
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

# Rust is not a Debian package here (Debian 12's is older than the workspace needs).
need=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
if ! command -v cargo >/dev/null; then
  echo "install-deps.sh: cargo not found; install a Rust toolchain >= $need (https://rustup.rs) first" >&2
  exit 1
fi
have=$(cargo --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
  echo "install-deps.sh: cargo $have is older than the workspace's rust-version $need: rustup update" >&2
  exit 1
fi

# The property-based HTTP fuzzer that checks the API against its OpenAPI document.
schemathesis_version=4.32.5
if ! schemathesis --version 2>/dev/null | grep -q "$schemathesis_version"; then
  echo "install-deps.sh: installing schemathesis $schemathesis_version (PyPI)"
  python3 -m pip install -q --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

# A real ATProto PDS and PLC directory (npm, Node 22) for the bundle tests, cached outside the clone.
scripts/install-pds.sh
# The Deno binary the deno bundle runtime runs (npm's @deno/linux-x64-glibc), cached outside the clone.
scripts/install-deno.sh
