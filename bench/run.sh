#!/usr/bin/env bash
# Start-latency benchmark: `orbit run --net=none` of the example image running /bin/true
# (image already fetched and verified), side by side in ONE hyperfine run with
#   - `crun run` and `runc run` of an OCI bundle whose rootfs is the same image
#     (`orbit image extract example.com/busybox`),
#   - `podman run --rm --network none` of the same image (pulled from `orbit image export`),
# then a per-phase breakdown of orbit's own time (`orbit --debug run` timings), an
# `strace -c -f` syscall summary of one run, and what an idle pod costs in memory (PSS of
# its orbit processes beside podman's conmon).
#
# Sets everything up itself, idempotently, as root: Debian packages, release build, the
# example image, a private orbit store + config, the bundle and the podman image.
# Ends with the same start on the modern host VM (bench/modern-host.sh; MODERN_HOST=0 skips).
# Env: BENCH_DIR (default /var/tmp/orbit-bench-run), RUNS (hyperfine min runs, 30),
#      IDLE_MS (the pause before each orbit-idle and crun-idle start, 100),
#      WARMUP (5), PHASE_RUNS (orbit --debug runs for the breakdown, 20), IDLE_PODS (pods
#      idling at once for the memory figure, 5), BASELINE_BIN_DIR (a directory with another
#      build's orbit, and its orbit-stage1 if it has one: timed as orbit-baseline in the same
#      hyperfine run, with its own phase breakdown and idle-pod memory, for a before/after).
#
# Machine notes (../shared/recipes/VM-AND-PEERS.md): on a hybrid cgroup host crun 1.8 refuses
# to run while /sys/fs/cgroup/unified is mounted, so every timed command runs in a private
# mount namespace with it unmounted (all four runtimes see the same host); podman needs
# default_ulimits within this machine's hard limits (a private containers.conf).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
W=${BENCH_DIR:-/var/tmp/orbit-bench-run}
RUNS=${RUNS:-30}
WARMUP=${WARMUP:-5}
PHASE_RUNS=${PHASE_RUNS:-20}
IDLE_PODS=${IDLE_PODS:-5}
[ "$(id -u)" = 0 ] || { echo "bench/run.sh: run as root" >&2; exit 1; }

scripts/deps.sh hyperfine crun runc podman busybox-static jq strace
cargo build --release --workspace --quiet
mkdir -p "$W/bin"
W=$(cd "$W" && pwd)
# A private copy: a concurrent `cargo build` must not swap the binary in the middle of a run.
for b in orbit orbit-stage1; do   # orbit runs its stage1 from beside itself
  cp "$root/target/release/$b" "$W/bin/$b.new" && mv "$W/bin/$b.new" "$W/bin/$b"
done
o=$W/bin/orbit
ob=
if [ -n "${BASELINE_BIN_DIR:-}" ]; then
  rm -rf "$W/baseline"; mkdir -p "$W/baseline"
  cp "$BASELINE_BIN_DIR/orbit" "$W/baseline/"
  if [ -x "$BASELINE_BIN_DIR/orbit-stage1" ]; then cp "$BASELINE_BIN_DIR/orbit-stage1" "$W/baseline/"; fi
  ob=$W/baseline/orbit
fi
B=$W/bundle
export ORBIT_DIR=$W/store ORBIT_LOCAL_CONFIG=$W/config ORBIT_SYSTEM_CONFIG=$W/config-vendor ORBIT_USER_CONFIG=$W/config-user
export CONTAINERS_CONF=$W/containers.conf
IMG=example.com/busybox:latest

cleanup() {
  local u
  for u in $(cat "$W"/idle.* 2>/dev/null); do "$o" stop --force "$u" >/dev/null 2>&1 || true; done
  "$o" gc --grace-period=0 >/dev/null 2>&1 || true
  if grep -q "$W/store" /proc/mounts; then
    echo "bench/run.sh: WARNING: mounts left under $W/store:" >&2; grep "$W/store" /proc/mounts >&2
  fi
  rm -rf "$W/store"
}
trap cleanup EXIT

# --- orbit: private config trusting the demo key, the example image fetched (verification on)
"$o" trust --prefix example.com/busybox examples/demo-key.pub >/dev/null 2>&1
if ! "$o" image inspect "$IMG" >/dev/null 2>&1; then
  layout=$(images/build-example.sh "$W/layout" 2>/dev/null)
  "$o" fetch --no-progress "oci:$layout" >/dev/null
fi
"$o" gc --grace-period=0 >/dev/null   # no pods left from an interrupted earlier run

# --- OCI bundle with the same root filesystem, for crun and runc
if [ ! -x "$B/rootfs/bin/true" ]; then
  rm -rf "$B"; mkdir -p "$B"
  "$o" image extract "$IMG" "$B/rootfs" >/dev/null
fi
if [ ! -s "$B/config.json" ]; then
  (cd "$B" && runc spec)   # default spec: pid, network, ipc, uts, mount namespaces
  jq '.process.terminal = false | .process.args = ["/bin/true"]' "$B/config.json" > "$B/config.json.new"
  mv "$B/config.json.new" "$B/config.json"
fi

# --- podman: ulimits within this machine's hard limits; the same image, from orbit's export.
# (`podman load` refuses the archive: its index also lists the cosign signature manifest,
# "more than one image in oci"; pulling the named reference from it works.)
cat > "$W/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
EOF
if ! podman image exists "$IMG" 2>/dev/null; then
  "$o" image export --overwrite "$IMG" "$W/busybox.tar" >/dev/null 2>&1
  podman pull -q "oci-archive:$W/busybox.tar:$IMG" >/dev/null
  rm -f "$W/busybox.tar"
fi

# Runs "$@" in a private mount namespace without /sys/fs/cgroup/unified (crun on hybrid hosts).
in_ns() {
  unshare -m --propagation private bash -c '
    if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi
    exec "$@"' bash "$@"
}

# Sanity: every command works before timing it.
crun delete -f orbit-bench-crun >/dev/null 2>&1 || true
runc delete -f orbit-bench-runc >/dev/null 2>&1 || true
cmd_orbit="$o run --net=none $IMG --exec /bin/true"
# The same pod with every run-time confinement lifted (capabilities, seccomp, masked paths):
# confinement must not cost start-up time (issue 5).
cmd_orbit_insecure="$o --insecure-options=all-run run --net=none $IMG --exec /bin/true"
cmd_crun="crun run --bundle $B orbit-bench-crun"
cmd_runc="runc run --bundle $B orbit-bench-runc"
cmd_podman="podman run --rm --network none $IMG /bin/true"
baseline=()
if [ -n "$ob" ]; then
  cmd_baseline="$ob run --net=none $IMG --exec /bin/true"
  baseline=(-n orbit-baseline --prepare "$o gc --grace-period=0" "$cmd_baseline")
fi
for c in "$cmd_orbit" "$cmd_orbit_insecure" "$cmd_crun" "$cmd_runc" "$cmd_podman" ${ob:+"$cmd_baseline"}; do
  # shellcheck disable=SC2086
  in_ns $c || { echo "bench/run.sh: '$c' failed" >&2; exit 1; }
done
"$o" gc --grace-period=0 >/dev/null

# --- the side-by-side run. Each `orbit run` leaves an exited pod: orbit's --prepare collects
# it (untimed) so every run starts from the same store; gc's own cost is reported below.
load=$(cut -d' ' -f1-3 /proc/loadavg)
# orbit-idle and crun-idle: the same starts after the machine idled for IDLE_MS (a start
# from a shell or a kubelet, not a loop). Back to back, a runtime whose previous start moved
# a process between cgroups a few milliseconds earlier skips the RCU grace period such a
# move waits for (the kernel keeps its threadgroup lock in the slow mode for a grace period
# after a move): crun's whole run fits in that window, orbit's plus its gc do not. After an
# idle pause, every runtime waits for it.
idle="sleep $(awk -v ms="${IDLE_MS:-100}" 'BEGIN{printf "%.3f", ms/1000}')"
in_ns hyperfine -N --warmup "$WARMUP" --min-runs "$RUNS" --export-json "$W/start.json" \
  -n orbit  --prepare "$o gc --grace-period=0" "$cmd_orbit" \
  -n orbit-insecure --prepare "$o gc --grace-period=0" "$cmd_orbit_insecure" \
  -n crun   --prepare true "$cmd_crun" \
  -n runc   --prepare true "$cmd_runc" \
  -n podman --prepare true "$cmd_podman" \
  -n orbit-idle --prepare "bash -c '$o gc --grace-period=0 >/dev/null; $idle'" "$cmd_orbit" \
  -n crun-idle --prepare "$idle" "$cmd_crun" "${baseline[@]}" >&2
"$o" gc --grace-period=0 >/dev/null

echo "== start /bin/true, no network (hyperfine -N --warmup $WARMUP --min-runs $RUNS; $(nproc) CPUs, load average before: $load)"
jq -r '.results[] | "\(.command | .[0:14] | . + (" " * (14 - length)))  median \(.median*1000*10|round/10) ms  min \(.min*1000*10|round/10) ms  mean \(.mean*1000*10|round/10) ± \(.stddev*1000*10|round/10) ms  n=\(.times|length)"' "$W/start.json"
jq -r '
  (.results | map({(.command): .median}) | add) as $m |
  def r(x): (x * 100 | round) / 100;
  "orbit / crun   = \(r($m.orbit / $m.crun))x   (target <= 1.2)  \(if $m.orbit / $m.crun <= 1.2 then "ok" else "MISSED" end)   (back to back)",
  "orbit / crun   = \(r($m["orbit-idle"] / $m["crun-idle"]))x   (target <= 1.2)  \(if $m["orbit-idle"] / $m["crun-idle"] <= 1.2 then "ok" else "MISSED" end)   (each after an idle pause)",
  "podman / orbit = \(r($m.podman / $m.orbit))x   (target >= 5)    \(if $m.podman / $m.orbit >= 5 then "ok" else "MISSED" end)",
  "orbit / runc   = \(r($m.orbit / $m.runc))x",
  "confined / unconfined orbit = \(r($m.orbit / $m["orbit-insecure"]))x   (defaults vs --insecure-options=all-run)",
  (if $m["orbit-baseline"] then "orbit / orbit-baseline = \(r($m.orbit / $m["orbit-baseline"]))x   (this build vs BASELINE_BIN_DIR)" else empty end)
' "$W/start.json"

# --- where orbit's time goes: PHASE_RUNS × `orbit --debug run`, same namespace setup.
# total   = wall clock of the whole `orbit run` (fork+exec from bash included)
# prepare = stage0's "prepared pod … in X" (resolve image, pod dir, manifest, render roots)
# apps    = stage1's "apps started in Y" (pod init: hostname, lo, overlay mount, app spawned)
# rest    = total − prepare − apps: binary start-up ×2 (stage0, then exec into stage1),
#           namespace creation, /bin/true itself, reaping, state files, namespace teardown
# gc      = `orbit gc --grace-period=0` of that one exited pod (not in total)
# startup = `orbit version` (the binary's start-up floor)
ms() {  # Rust Duration debug format (1.2ms, 896.6µs, 1.1s, 300ns) -> milliseconds
  awk '{ v=$0; u=v; sub(/[a-zµ]+$/, "", v); sub(/^[0-9.]+/, "", u);
         f = (u=="s") ? 1000 : (u=="ms") ? 1 : (u=="µs"||u=="us") ? 0.001 : (u=="ns") ? 0.000001 : -1;
         if (f < 0) { print "bad duration " $0 > "/dev/stderr"; exit 1 }
         printf "%.3f\n", v*f }'
}
median() { sort -n | awk '{a[NR]=$1} END { if (NR%2) printf "%.2f", a[(NR+1)/2]; else printf "%.2f", (a[NR/2]+a[NR/2+1])/2 }'; }
phases() {  # $1: the orbit binary, $2: the output table
  local o=$1 out=$2 i t0 t1 err=$W/phase.err
  : > "$out"
  for i in $(seq 1 "$PHASE_RUNS"); do
    t0=$EPOCHREALTIME
    "$o" --debug run --net=none "$IMG" --exec /bin/true 2> "$err"
    t1=$EPOCHREALTIME
    local prep apps
    prep=$(sed -n 's/^orbit: prepared pod .* in \(.*\)$/\1/p' "$err" | ms)
    apps=$(sed -n 's/^stage1 [a-z0-9]*: apps started in \(.*\)$/\1/p' "$err" | ms)
    [ -n "$prep" ] && [ -n "$apps" ] || { echo "bench/run.sh: no --debug timings in:" >&2; cat "$err" >&2; exit 1; }
    local g0 g1 v0 v1
    g0=$EPOCHREALTIME; "$o" gc --grace-period=0 >/dev/null; g1=$EPOCHREALTIME
    v0=$EPOCHREALTIME; "$o" version >/dev/null; v1=$EPOCHREALTIME
    printf '%s\t%s\t%s\t%s\t%s\n' "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)*1000}')" "$prep" "$apps" \
      "$(awk -v a="$g0" -v b="$g1" 'BEGIN{printf "%.3f", (b-a)*1000}')" \
      "$(awk -v a="$v0" -v b="$v1" 'BEGIN{printf "%.3f", (b-a)*1000}')" >> "$out"
  done
}
export -f phases ms median
export W IMG PHASE_RUNS
report_phases() {  # $1: the table, $2: what it is
  local t=$1
  col() { cut -f"$1" "$t" | median; }
  local tot prep apps gcm ver rest
  tot=$(col 1) prep=$(col 2) apps=$(col 3) gcm=$(col 4) ver=$(col 5)
  rest=$(awk -F'\t' '{printf "%.3f\n", $1-$2-$3}' "$t" | median)
  echo "== $2 run phases (medians of $PHASE_RUNS × orbit --debug run)"
  printf '  total (wall, from bash)          %7s ms\n' "$tot"
  printf '  prepare (stage0)                 %7s ms\n' "$prep"
  printf '  apps started (stage1 pod init)   %7s ms\n' "$apps"
  printf '  rest (stage0 + stage1 exec start-up, ns setup+teardown, app, reap) %s ms\n' "$rest"
  printf '  [orbit version: binary start-up  %7s ms]\n' "$ver"
  printf '  [orbit gc of the exited pod      %7s ms, not in total]\n' "$gcm"
}
in_ns bash -c 'phases "$@"' bash "$o" "$W/phases.tsv"
report_phases "$W/phases.tsv" orbit
if [ -n "$ob" ]; then
  in_ns bash -c 'phases "$@"' bash "$ob" "$W/phases-baseline.tsv"
  report_phases "$W/phases-baseline.tsv" orbit-baseline
fi

# --- syscall profile of one run (strace inflates times; counts are the useful part)
echo "== strace -c -f of one orbit run (top 12 by time)"
in_ns strace -c -f -o "$W/strace.txt" "$o" run --net=none "$IMG" --exec /bin/true
awk '/^-/ {next} /^% time/ {print; next} / total$/ {t=$0; next} n < 12 {print; n++} END {print t}' "$W/strace.txt" | sed 's/^/  /'

# --- what an idle pod costs: PSS (/proc/PID/smaps_rollup: a page shared by N processes counts
# 1/N to each) of each pod's orbit processes — the stage1 supervisor (`orbit run` after its
# exec) and the pod's init —, mean over IDLE_PODS pods idling at once (`/bin/sleep`), beside
# podman's conmon (its per-container monitor; crun itself does not stay) for as many idle
# containers. The issue's target: supervisor + init <= 1024 kB.
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
idle_orbit() {  # $1: the orbit binary; prints "SUPERVISOR_KB INIT_KB" (means)
  local bin=$1 i u pids=() uuids=() sup=0 init=0 deadline
  rm -f "$W"/idle.*
  for i in $(seq 1 "$IDLE_PODS"); do
    "$bin" run --net=none --uuid-file-save="$W/idle.$i" "$IMG" --exec /bin/sleep -- 1000 >/dev/null 2>&1 &
    pids+=($!)
  done
  deadline=$((SECONDS + 30))
  for i in $(seq 1 "$IDLE_PODS"); do
    until [ -s "$W/idle.$i" ] && [ "$(wc -c < "$W/idle.$i")" = 37 ]; do
      [ $SECONDS -lt $deadline ] || { echo "bench/run.sh: idle pod $i did not start" >&2; return 1; }
      sleep 0.02
    done
    u=$(cat "$W/idle.$i"); uuids+=("$u")
    "$bin" status --wait-ready "$u" >/dev/null
  done
  for i in $(seq 0 $((IDLE_PODS - 1))); do
    sup=$((sup + $(pss "${pids[$i]}")))
    init=$((init + $(pss "$("$bin" status --format json "${uuids[$i]}" | jq .pid)")))
  done
  "$bin" stop --force "${uuids[@]}" >/dev/null
  wait "${pids[@]}" 2>/dev/null || true
  "$bin" gc --grace-period=0 >/dev/null
  echo "$((sup / IDLE_PODS)) $((init / IDLE_PODS))"
}
idle_conmon() {  # prints conmon's mean PSS in kB, or nothing if podman cannot run here
  local ids=() i id total=0 pid
  for i in $(seq 1 "$IDLE_PODS"); do
    id=$(in_ns podman run -d --network none "$IMG" /bin/sleep 1000 2>/dev/null) || break
    ids+=("$id")
  done
  for i in "${ids[@]}"; do
    pid=$(podman inspect --format '{{.State.ConmonPid}}' "$i" 2>/dev/null) || continue
    total=$((total + $(pss "$pid")))
  done
  in_ns podman rm -f -t 0 "${ids[@]}" >/dev/null 2>&1 || true
  [ ${#ids[@]} = "$IDLE_PODS" ] && echo $((total / IDLE_PODS))
}
mem_line() {  # $1: name, $2: orbit binary
  local m; m=$(idle_orbit "$2")
  set -- "$1" $m
  printf '  %-15s supervisor %5s kB + init %5s kB = %5s kB a pod   (target <= 1024)  %s\n' \
    "$1" "$2" "$3" "$(($2 + $3))" "$([ $(($2 + $3)) -le 1024 ] && echo ok || echo MISSED)"
}
echo "== idle pod memory (PSS, mean over $IDLE_PODS idle pods at once)"
mem_line orbit "$o"
[ -z "$ob" ] || mem_line orbit-baseline "$ob"
conmon=$(idle_conmon)
if [ -n "$conmon" ]; then
  printf '  %-15s conmon %5s kB a container\n' podman "$conmon"
else
  echo "  podman: no idle containers here (podman run -d failed): no conmon figure"
fi

# --- the same start on the modern host (cgroup v2 only, systemd as PID 1): orbit vs crun in
# the VM of tests/hosts/, one hyperfine run there (TCG here: compare the ratio). MODERN_HOST=0
# skips it.
if [ "${MODERN_HOST:-1}" = 1 ]; then
  echo "== start /bin/true on the modern host (VM: cgroup v2, systemd PID 1; bench/modern-host.sh)"
  bash bench/modern-host.sh | sed 's/^/  /'
fi
