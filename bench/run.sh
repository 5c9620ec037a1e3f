#!/usr/bin/env bash
# Benchmark: wall time of `atoll run --rm IMAGE true`, side by side in one run with the bare
# OCI runtime on a prepared bundle (whose default spec has a network namespace with loopback
# only: `--network none` is the like-for-like row; the default bridge network is shown too),
# with `docker run --rm` (Debian's docker.io, dockerd in a network namespace of its own, on
# its default bridge) and with `podman run --rm` where podman can run; daemon idle RSS; shim
# memory with 50 running containers.
# Usage: sudo bench/run.sh [RUNS]   (default 20). Prints Markdown for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
[ "$(id -u)" = 0 ] || { echo "bench/run.sh: run as root" >&2; exit 1; }
scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/atoll-target}"
cargo build --release --locked -q -p atoll -p atoll-testkit
bin="$CARGO_TARGET_DIR/release"

# Under /var/lib, where the daemon keeps its data by default (`/var/lib/atoll`): every engine's
# data and the bare runtime's bundle on the filesystem users have. (On some machines /var/tmp is
# watched: creating a file there was 0.6 ms on ours, 30 times /var/lib, which a container's
# directory, record and `/etc` files paid ten times over.)
work="$(mktemp -d /var/lib/atoll-bench-run.XXXXXX)"
cleanup() {
  ATOLL_SOCKET="$work/atoll.sock" "$bin/atoll" ps -aq 2>/dev/null | xargs -r "$bin/atoll" --socket "$work/atoll.sock" rm -f >/dev/null 2>&1 || true
  kill "${daemon_pid:-}" 2>/dev/null || true
  if [ -n "${dockerd_pid:-}" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
    grep -o " $work/docker[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    ip netns pids "$dns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$dns" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  # Rootfs mounts, and the spare network namespace the daemon pins under its data dir.
  grep -o " $work/data/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The daemon runs in a network namespace of its own: the host's network is not touched.
ns="atoll-bench-run-$$"
ip netns add "$ns"
ip -n "$ns" link set lo up
export ATOLL_SOCKET="$work/atoll.sock"
nsenter --net="/run/netns/$ns" -- "$bin/atoll" daemon --data-dir "$work/data" >"$work/daemon.log" 2>&1 & daemon_pid=$!
until "$bin/atoll" info >/dev/null 2>&1; do sleep 0.05; done
runtime=$("$bin/atoll" info --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["runtime"]["path"])')
"$bin/mkimage" busybox "$work/layout" latest >/dev/null
"$bin/atoll" image import "$work/layout" --name localhost/busybox >/dev/null

# A prepared bundle for the bare runtime: the same busybox rootfs, the runtime's own default spec.
mkdir -p "$work/bundle/rootfs"
umoci unpack --image "$work/layout:latest" "$work/umoci" >/dev/null
cp -a "$work/umoci/rootfs/." "$work/bundle/rootfs/"
(cd "$work/bundle" && "$runtime" spec)
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
json.dump(c, open(p, "w"))
PY

cmds=(-n "atoll run --rm --network none" "$bin/atoll run --rm --network none localhost/busybox /bin/true"
      -n "atoll run --rm (default bridge network)" "$bin/atoll run --rm localhost/busybox /bin/true"
      -n "$(basename "$runtime") run (bare, prepared bundle)" "$runtime --root $work/bare run --bundle $work/bundle b\$\$")
# Docker as a peer: its own network namespace, data root, exec root and socket.
dns="atoll-bench-docker-$$"
docker_note=""
if [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ]; then
  ip netns add "$dns"
  ip -n "$dns" link set lo up
  mkdir -p "$work/docker"
  nsenter --net="/run/netns/$dns" -- /usr/sbin/dockerd --data-root "$work/docker/data" --exec-root "$work/docker/exec" \
    --pidfile "$work/docker/dockerd.pid" -H "unix://$work/docker/docker.sock" >"$work/docker/dockerd.log" 2>&1 & dockerd_pid=$!
  docker=(/usr/bin/docker -H "unix://$work/docker/docker.sock")
  for _ in $(seq 1 600); do "${docker[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
  skopeo copy --quiet "oci:$work/layout:latest" "docker-archive:$work/docker/busybox.tar:localhost/busybox:latest"
  "${docker[@]}" load -q -i "$work/docker/busybox.tar" >/dev/null
  if out=$("${docker[@]}" run --rm localhost/busybox /bin/true 2>&1); then
    cmds+=(-n "docker run --rm (default bridge network)" "${docker[*]} run --rm localhost/busybox /bin/true")
  else
    docker_note="docker run fails here: $(echo "$out" | tail -1)"
  fi
else
  docker_note="docker is not installed (scripts/install-deps.sh installs docker.io)"
fi

podman_note=""
if command -v podman >/dev/null; then
  podman load -q -i <(skopeo copy --quiet "oci:$work/layout:latest" docker-archive:/dev/stdout:localhost/busybox:latest) >/dev/null 2>&1 || true
  if out=$(podman run --rm localhost/busybox /bin/true 2>&1); then
    cmds+=(-n "podman run --rm" "podman run --rm localhost/busybox /bin/true")
  else
    podman_note="podman run fails here: $(echo "$out" | tail -1)"
  fi
else
  podman_note="podman is not installed"
fi

hyperfine --runs "$runs" --warmup 2 --export-json "$work/run.json" --style basic "${cmds[@]}" >&2

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
idle_rss=$(rss_kib "$daemon_pid")

for i in $(seq 1 50); do "$bin/atoll" run -d --name "s$i" localhost/busybox sleep 3600 >/dev/null; done
# This run's containers' shims only (others may run on the machine, and the standby shim has
# no container yet): a shim works in its container's directory, under $work.
shims=$(for p in $(pgrep -f "atoll shim" || true); do
  case "$(readlink "/proc/$p/cwd" 2>/dev/null)" in "$work"/data/containers/*) echo "$p" ;; esac
done)
n=$(echo "$shims" | wc -w)
rss_sum=0; pss_sum=0
for p in $shims; do rss_sum=$((rss_sum + $(rss_kib "$p"))); pss_sum=$((pss_sum + $(pss_kib "$p"))); done
busy_rss=$(rss_kib "$daemon_pid")

python3 - "$work/run.json" "$runs" "$idle_rss" "$busy_rss" "$n" "$rss_sum" "$pss_sum" "$podman_note" "$docker_note" <<'PY'
import json, statistics, sys
res = json.load(open(sys.argv[1]))["results"]
runs, idle, busy, n, rss, pss, note, docker_note = sys.argv[2:10]
med = {r["command"]: statistics.median(r["times"]) for r in res}
base = [c for c in med if "bare" in c][0]
print(f"`{runs}` runs each after 2 warm-ups.\n")
print("| command | median (ms) | min (ms) | max (ms) | ratio to bare runtime |")
print("|---|---|---|---|---|")
for r in res:
    c = r["command"]
    print(f"| {c} | {med[c]*1000:.1f} | {min(r['times'])*1000:.1f} | {max(r['times'])*1000:.1f} | {med[c]/med[base]:.2f}x |")
for n_ in (note, docker_note):
    if n_:
        print(f"\n{n_}.")
n = int(n)
print(f"\n| memory | value |\n|---|---|")
print(f"| daemon RSS, idle (no containers) | {int(idle)/1024:.1f} MiB |")
print(f"| daemon RSS with {n} running containers | {int(busy)/1024:.1f} MiB |")
print(f"| shim RSS, mean of {n} | {int(rss)/n/1024:.2f} MiB |")
print(f"| shim PSS (proportional: shared pages split), mean of {n} | {int(pss)/n/1024:.2f} MiB |")
PY
