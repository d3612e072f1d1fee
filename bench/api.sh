#!/usr/bin/env bash
# API service benchmark, with PODS pods in a private store (all but two exited: one
# prepared, one running):
#   - gRPC ListPods and InspectPod latency, p50/p99 over CALLS calls each, from a client on
#     the service's Unix socket (bench/api-client.rs); target: ListPods < 50 ms;
#   - side by side in ONE hyperfine run, listing the same pods as JSON from a shell:
#     `orbit list --format json` (the CLI reads the same store) and, with PEERS=1 (default),
#     `podman ps -a --format json` over PODS exited podman containers in a private podman
#     store (podman's own state database);
#   - pod-exit event latency: EVENTS pods run one after another while a client listens;
#     latency = when the client got POD_EXITED − the exit time the stage1 recorded;
#     target: under 50 ms.
# Env: BENCH_DIR (default /var/tmp/orbit-bench-api), PODS (1000), CALLS (200), EVENTS (30),
#      RUNS (hyperfine runs, 10), PEERS (1).
# Everything lives under BENCH_DIR; at exit the API service is killed (by its pid), the
# orbit store and podman's containers and storage are removed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
W=${BENCH_DIR:-/var/tmp/orbit-bench-api}
PODS=${PODS:-1000}
CALLS=${CALLS:-200}
EVENTS=${EVENTS:-30}
RUNS=${RUNS:-10}
PEERS=${PEERS:-1}
[ "$(id -u)" = 0 ] || { echo "bench/api.sh: run as root" >&2; exit 1; }

scripts/deps.sh hyperfine podman busybox-static jq
cargo build --release --workspace --quiet
cargo build --release --example api-client --quiet
mkdir -p "$W/bin"
W=$(cd "$W" && pwd)
for b in orbit orbit-stage1; do   # orbit runs its stage1 from beside itself
  cp "$root/target/release/$b" "$W/bin/$b.new" && mv "$W/bin/$b.new" "$W/bin/$b"
done
cp "$root/target/release/examples/api-client" "$W/bin/api-client.new" && mv "$W/bin/api-client.new" "$W/bin/api-client"
o=$W/bin/orbit
export ORBIT_DIR=$W/store ORBIT_LOCAL_CONFIG=$W/config ORBIT_SYSTEM_CONFIG=$W/config-vendor ORBIT_USER_CONFIG=$W/config-user
export CONTAINERS_CONF=$W/containers.conf
P=(podman --root "$W/podman/root" --runroot "$W/podman/run" --storage-driver overlay)
IMG=example.com/busybox:latest
api_pid= running_pid=

cleanup() {
  [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null || true
  # The running pod's `orbit run` exec'd into its stage1: SIGTERM stops the pod.
  if [ -n "$running_pid" ]; then kill "$running_pid" 2>/dev/null || true; wait "$running_pid" 2>/dev/null || true; fi
  "$o" gc --grace-period=0 >/dev/null 2>&1 || true
  "$o" gc --grace-period=0 >/dev/null 2>&1 || true
  if [ "$PEERS" = 1 ]; then
    "${P[@]}" rm -a -f >/dev/null 2>&1 || true
    "${P[@]}" system reset -f >/dev/null 2>&1 || true
  fi
  if grep -q "$W/" /proc/mounts; then
    echo "bench/api.sh: WARNING: mounts left under $W:" >&2; grep "$W/" /proc/mounts >&2
    grep -o "$W/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l || true
  fi
  rm -rf "$W/store" "$W/podman"
}
trap cleanup EXIT
cleanup

# --- orbit: the example image, PODS pods (PODS-2 exited, one prepared, one running)
"$o" trust --prefix example.com/busybox examples/demo-key.pub >/dev/null 2>&1
layout=$(images/build-example.sh "$W/layout" 2>/dev/null)
"$o" fetch --no-progress "oci:$layout" >/dev/null
echo "creating $PODS orbit pods…"
for _ in $(seq 1 $((PODS - 2))); do
  "$o" run --net=none "$IMG" --exec /bin/true >/dev/null
done
"$o" prepare --net=none "$IMG" >/dev/null
rm -f "$W/running.uuid"
"$o" run --net=none --uuid-file-save "$W/running.uuid" "$IMG" --exec /bin/sleep -- 3600 >/dev/null 2>&1 &
running_pid=$!
for _ in $(seq 1 200); do [ -s "$W/running.uuid" ] && break; sleep 0.05; done
"$o" status --wait-ready "$(cat "$W/running.uuid")" >/dev/null
"$o" list --no-legend | wc -l | grep -qx "$PODS" || { echo "bench/api.sh: expected $PODS pods" >&2; "$o" list | tail -3 >&2; exit 1; }

# --- podman: PODS exited containers of the same image in a private store
if [ "$PEERS" = 1 ]; then
  cat > "$W/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
EOF
  "$o" image export --overwrite "$IMG" "$W/busybox.tar" >/dev/null 2>&1
  "${P[@]}" pull -q "oci-archive:$W/busybox.tar:$IMG" >/dev/null
  rm -f "$W/busybox.tar"
  echo "creating $PODS podman containers…"
  for _ in $(seq 1 "$PODS"); do "${P[@]}" create --network none "$IMG" /bin/true >/dev/null; done
fi

# --- the API service
"$o" api-service --socket "$W/api.sock" 2>"$W/api.log" &
api_pid=$!
for _ in $(seq 1 200); do [ -S "$W/api.sock" ] && break; sleep 0.05; done
[ -S "$W/api.sock" ] || { echo "bench/api.sh: the API service did not start:" >&2; cat "$W/api.log" >&2; exit 1; }

echo "== gRPC over $W/api.sock ($PODS pods, $CALLS calls each; 2 CPUs, load average: $(cut -d' ' -f1-3 /proc/loadavg))"
read -r _ n l50 l99 < <("$W/bin/api-client" "$W/api.sock" calls "$CALLS" | grep '^list_pods')
read -r _ i50 i99 < <("$W/bin/api-client" "$W/api.sock" calls "$CALLS" | grep '^inspect_pod')
echo "ListPods    ($n pods)  p50 $l50 ms  p99 $l99 ms   (target < 50 ms: $(awk -v a="$l50" 'BEGIN{print (a < 50) ? "ok" : "MISSED"}'))"
echo "InspectPod             p50 $i50 ms  p99 $i99 ms"

# --- listing from a shell, side by side
cmds=(-n "orbit list --format json" "$o list --format json")
[ "$PEERS" = 1 ] && cmds+=(-n "podman ps -a --format json" "${P[*]} ps -a --format json")
hyperfine -N --runs "$RUNS" --warmup 2 --export-json "$W/list.json" "${cmds[@]}" >/dev/null
jq -r '.results[] | "\(.command | .[0:28])  median \(.median * 1000 | round) ms  mean \(.mean * 1000 | round) ± \(.stddev * 1000 | round) ms"' "$W/list.json"
if [ "$PEERS" = 1 ]; then
  jq -r '.results as $r | "podman ps / orbit list = \(($r[1].median / $r[0].median * 100 | round) / 100)x;  podman ps / API ListPods p50 = \(($r[1].median * 1000 / '"$l50"' * 100 | round) / 100)x"' "$W/list.json"
fi

# --- pod-exit event latency
mkfifo "$W/events.out"
"$W/bin/api-client" "$W/api.sock" events "$EVENTS" > "$W/events.out" &
client=$!
exec 3< "$W/events.out"
read -r ready <&3
[ "$ready" = ready ] || { echo "bench/api.sh: the event client did not start" >&2; exit 1; }
for _ in $(seq 1 "$EVENTS"); do "$o" run --net=none "$IMG" --exec /bin/true >/dev/null; done
read -r _ e50 e99 emax <&3
wait "$client"
exec 3<&-
rm -f "$W/events.out"
echo "pod-exit event ($EVENTS pods)  p50 $e50 ms  p99 $e99 ms  max $emax ms   (target < 50 ms: $(awk -v a="$e99" 'BEGIN{print (a < 50) ? "ok" : "MISSED"}'))"
