#!/usr/bin/env bash
# Sets up Atoll on this machine and runs it: installs dependencies, builds and installs the
# binary, starts `atoll daemon` (data in /var/lib/atoll, API on /run/atoll/atoll.sock), and
# shows it working offline: a busybox image is built locally, pushed to a local registry on
# 127.0.0.1:5000, and pulled by Atoll with live progress.
set -euo pipefail
cd "$(dirname "$0")/.."

# Root is needed (images, mounts, namespaces, runtimes): re-run through sudo if not root.
source scripts/as-root.sh
scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
# A release build, the gateway's request path optimized with a profile taken on this machine.
bin="$(scripts/pgo.sh -p atoll -p atoll-testkit)"
install -s -m 0755 "$bin/atoll" /usr/local/bin/atoll  # stripped: the build keeps debug info for profiling

state=/var/lib/atoll
mkdir -p /var/log/atoll
export ATOLL_SOCKET=/run/atoll/atoll.sock
if ! atoll info >/dev/null 2>&1; then
  nohup atoll daemon --data-dir "$state" --web 127.0.0.1:8420 >>/var/log/atoll/daemon.log 2>&1 &
  echo "started atoll daemon (pid $!, log /var/log/atoll/daemon.log)"
  for _ in $(seq 1 300); do atoll info >/dev/null 2>&1 && break; sleep 0.1; done
fi
atoll info

# A local registry with a demo image, so the first run shows a real pull without internet.
demo=/var/lib/atoll-demo
mkdir -p "$demo"
if ! curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1; then
  cat >"$demo/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $demo/registry
http:
  addr: 127.0.0.1:5000
YAML
  nohup docker-registry serve "$demo/registry.yml" >>/var/log/atoll/demo-registry.log 2>&1 &
  for _ in $(seq 1 300); do curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1 && break; sleep 0.1; done
fi
rm -rf "$demo/layout"
"$bin/mkimage" busybox "$demo/layout" latest >/dev/null
skopeo copy --quiet --dest-tls-verify=false "oci:$demo/layout:latest" docker://127.0.0.1:5000/demo/busybox:latest

echo
echo "+ atoll pull 127.0.0.1:5000/demo/busybox"
atoll pull 127.0.0.1:5000/demo/busybox
echo
echo "+ atoll images"
atoll images
echo
echo "+ atoll run --rm 127.0.0.1:5000/demo/busybox"
atoll run --rm 127.0.0.1:5000/demo/busybox
echo
echo "+ atoll run -d --name ticker --restart always 127.0.0.1:5000/demo/busybox sh -c '…'"
atoll rm -f ticker >/dev/null 2>&1 || true
atoll run -d --name ticker --restart always 127.0.0.1:5000/demo/busybox \
  sh -c 'while true; do date; sleep 5; done' >/dev/null
echo
echo "+ atoll run -d --name hello -p 8080:80 … httpd; curl http://127.0.0.1:8080/"
atoll rm -f hello >/dev/null 2>&1 || true
atoll run -d --name hello -p 8080:80 127.0.0.1:5000/demo/busybox \
  sh -c 'mkdir -p /www && echo "hello from a container, published on :8080" > /www/index.html && exec httpd -f -p 80 -h /www' >/dev/null
for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:8080/ 2>/dev/null && break; sleep 0.1; done
echo
echo "+ atoll run --rm 127.0.0.1:5000/demo/busybox nslookup hello   (service discovery)"
atoll run --rm 127.0.0.1:5000/demo/busybox nslookup hello | grep -A1 '^Name'
echo
atoll ps
echo
echo "Dashboard: $(atoll web token)   (the link carries the login token)"
echo "Atoll is running. Try: atoll logs -f ticker; atoll exec ticker ps; atoll network ls; atoll port hello"
