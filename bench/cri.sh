#!/usr/bin/env bash
# CRI benchmark: `orbit cri` against containerd's CRI plugin on the same machine, in the same
# run, driven by the same gRPC client (bench/cri-client.rs) over their Unix sockets, the way
# the kubelet drives them:
#   - start = RunPodSandbox + CreateContainer + StartContainer of the example image
#     (example.com/busybox, `/bin/sh -c 'exec sleep 3600'`), host-network sandbox (no CNI on
#     either side), its log directory in a temporary directory;
#   - stop  = StopPodSandbox + RemoveContainer + RemovePodSandbox;
#   - p50/p99 (and the pods' wall time) over N pods, serially (PARALLEL=1) and with 10 pods
#     in flight (10 client workers, each running its pods one after another);
#   - the ratios containerd / orbit (> 1: orbit is faster).
# The client also checks, after StartContainer, that ContainerStatus says RUNNING ("to running":
# from RunPodSandbox to that answer; both runtimes return from StartContainer with the
# process running, so it is start + one status call).
# Runtimes are measured alternately per PARALLEL value (orbit, then containerd) after
# WARMUP untimed pods each.
# Then exec (same daemons; for each runtime one more such pod, kept running for the phase,
# then stopped and removed by the client): EXEC_WARMUP untimed and EXEC_N timed rounds,
# serially, each of
#   - ExecSync ["true"]: the gRPC call until its answer (exit code 0 checked);
#   - Exec ["true"] (stdout + stderr, no tty) + tests/streaming-client's SPDY/3.1 client
#     (moby/spdystream, client-go's remote-command v4) run on the URL it returns until it exits
#     (status 0 checked): the pair's wall time, as the kubelet's Exec then kubectl's upgrade.
#     It includes starting the Go client (the same binary for both); "Exec RPC" is the gRPC
#     call alone. orbit's URL is its own streaming server's, containerd's its CRI plugin's
#     (both on 127.0.0.1, any free port).
#   p50/p99 of each and the ratios containerd / orbit.
#
# containerd: Debian's containerd (1.6, CRI plugin built in) with runc, run as a private
# daemon (config, root, state, socket, runc root, empty CNI dirs all under BENCH_DIR);
# sandbox_image is a local "pause" image (busybox sleeping; no registry here) and the busybox
# image comes from `orbit image export`, both imported with `ctr images import` into k8s.io.
# Notes:
#   - containerd sets oom_score_adj -998 on sandboxes; this machine's root lacks
#     CAP_SYS_RESOURCE (runc: "failed to update /proc/self/oom_score_adj: Permission denied"),
#     so the config sets restrict_oom_score_adj = true (what rootless setups do);
#   - `ctr images import` fails on orbit's export ("mismatched image rootfs and manifest
#     layers": the archive's index also lists the cosign signature manifest): jq drops that entry;
#   - host-network sandboxes need no CNI: containerd logs "no network config found" at start
#     and reports NetworkReady=false, and runs them anyway;
#   - sandboxes leave no hostname: runc refuses one in the host's UTS namespace ("unable to set
#     hostname without a private UTS namespace"), so the kubelet sends none for host-network
#     pods either;
#   - stop semantics differ: containerd's StopPodSandbox SIGKILLs, orbit's sends SIGTERM
#     (10 s grace, then SIGKILL); `exec sleep` ends on SIGTERM at once either way.
# If containerd cannot be set up or fails, the script prints why and still reports orbit.
#
# Env: BENCH_DIR (default /var/tmp/orbit-bench-cri), N (50), PARALLEL ("1 10"), WARMUP (3),
#      EXEC_N (50; 0: no exec phase), EXEC_WARMUP (5), PEERS (1: also containerd).
# The SPDY client is built like tests/run.sh builds it (target/orbit-spdy-client; installs
# golang-go and golang-github-docker-spdystream-dev if missing) and copied to BENCH_DIR.
# Everything lives under BENCH_DIR. At exit (also on failure): sandboxes still present (the
# exec phase's pods included) are stopped and removed through each runtime's CRI, `orbit cri` and containerd are killed by
# their pids, leftover mounts under BENCH_DIR are unmounted, the cgroups containerd made
# (`k8s.io` in each hierarchy) and /run/containerd are removed if they did not exist before,
# and BENCH_DIR is deleted.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
W=${BENCH_DIR:-/var/tmp/orbit-bench-cri}
N=${N:-50}
PARALLEL=${PARALLEL:-1 10}
WARMUP=${WARMUP:-3}
PEERS=${PEERS:-1}
EXEC_N=${EXEC_N:-50}
EXEC_WARMUP=${EXEC_WARMUP:-5}
[ "$(id -u)" = 0 ] || { echo "bench/cri.sh: run as root" >&2; exit 1; }
t0=$SECONDS

deps=(busybox-static jq)
[ "$PEERS" = 1 ] && deps+=(containerd runc)
scripts/deps.sh "${deps[@]}"
cargo build --release --workspace --quiet
cargo build --release --example cri-client --quiet
spdy_err=
if [ "$EXEC_N" -gt 0 ] && ! bash tests/streaming-client/build.sh target/orbit-spdy-client; then
  spdy_err="cannot build the SPDY client (tests/streaming-client/build.sh failed)"
fi

IMG=example.com/busybox:latest
PAUSE=example.com/pause:bench
cri_pid= ctd_pid=
# What containerd may create outside BENCH_DIR: removed at exit only if absent before the
# run (a run killed before its trap left its snapshot in $W/preexisting for the next one).
had_run_containerd=0; [ -e /run/containerd ] && had_run_containerd=1
had_cgroups=()
for d in /sys/fs/cgroup/*/k8s.io; do [ -d "$d" ] && had_cgroups+=("$d"); done
had_shim_sockets=()
for f in /run/containerd/s/*; do [ -S "$f" ] && had_shim_sockets+=("$f"); done

umount_under() {  # unmounts whatever is mounted under $1, deepest first
  if grep -q " $1/" /proc/mounts; then
    grep -o " $1/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  fi
}

# The pid recorded in $W/NAME.pid if that process is still ours (its command line names $W/),
# for a run that was killed before its trap ran.
recorded_pid() {
  local pid
  pid=$(cat "$W/$1.pid" 2>/dev/null) || return 0
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$W/" && echo "$pid"
  return 0
}

stop_pid() {  # SIGTERM, wait (a child) or poll (not ours to wait for) up to 10 s, then SIGKILL
  kill "$1" 2>/dev/null || return 0
  if ! wait "$1" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null
  fi
  return 0
}

cleanup() {
  set +e
  [ -n "$cri_pid" ] || cri_pid=$(recorded_pid orbit-cri)
  [ -n "$ctd_pid" ] || ctd_pid=$(recorded_pid containerd)
  if [ -n "$cri_pid" ]; then
    "$W/bin/cri-client" "$W/orbit.sock" cleanup >/dev/null 2>&1
    stop_pid "$cri_pid"
    cri_pid=
  fi
  if [ -d "$W/store" ] && [ -x "$W/bin/orbit" ]; then
    # Pods the CRI could not remove (the server died, a run was killed): stop and collect them.
    local ob=("$W/bin/orbit" --dir "$W/store" --systemd=no) uuids
    uuids=$("${ob[@]}" list --format json 2>/dev/null | jq -r '.[].uuid' 2>/dev/null)
    # shellcheck disable=SC2086
    [ -n "$uuids" ] && "${ob[@]}" stop --force $uuids >/dev/null 2>&1
    "${ob[@]}" gc --grace-period=0 >/dev/null 2>&1
    "${ob[@]}" gc --grace-period=0 >/dev/null 2>&1
  fi
  if [ -n "$ctd_pid" ]; then
    "$W/bin/cri-client" "$W/containerd.sock" cleanup >/dev/null 2>&1
    # Anything else still running (shims outlive containerd): kill and delete the tasks.
    for t in $("${ctr[@]}" -n k8s.io tasks ls -q 2>/dev/null); do
      "${ctr[@]}" -n k8s.io tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1
      "${ctr[@]}" -n k8s.io tasks rm -f "$t" >/dev/null 2>&1
    done
    stop_pid "$ctd_pid"
    ctd_pid=
  fi
  # Shims of this containerd that survived (their pids are in its state directory).
  local f pid
  for f in "$W"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-address $W/containerd.sock" || continue
    echo "bench/cri.sh: WARNING: containerd shim $pid left running: killing it" >&2
    kill -9 "$pid" 2>/dev/null
  done
  if grep -q " $W/" /proc/mounts; then
    echo "bench/cri.sh: WARNING: mounts left under $W:" >&2; grep " $W/" /proc/mounts >&2
    umount_under "$W"
  fi
  for d in /sys/fs/cgroup/*/k8s.io; do
    [ -d "$d" ] || continue
    [[ " ${had_cgroups[*]} " == *" $d "* ]] && continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  # Shim sockets this run left (not there before, no longer bound: absent from /proc/net/unix).
  for f in /run/containerd/s/*; do
    [ -S "$f" ] || continue
    [[ " ${had_shim_sockets[*]} " == *" $f "* ]] && continue
    grep -qF " $f" /proc/net/unix || rm -f "$f"
  done
  [ "$had_run_containerd" = 0 ] && [ -d /run/containerd ] &&
    find /run/containerd -depth -type d -empty -delete 2>/dev/null
  rm -rf "$W"
}
mkdir -p "$W"; W=$(cd "$W" && pwd)
ctr=(ctr --address "$W/containerd.sock" --connect-timeout 2s)
# shellcheck disable=SC1091
[ -f "$W/preexisting" ] && . "$W/preexisting"
trap cleanup EXIT
cleanup   # what a run killed hard left behind, then a fresh BENCH_DIR
set -e
mkdir -p "$W"
declare -p had_run_containerd had_cgroups had_shim_sockets > "$W/preexisting"

mkdir -p "$W/bin" "$W/logs"
cp "$root/target/release/orbit" "$root/target/release/orbit-stage1" "$root/target/release/orbit-build-image" "$W/bin/"
cp "$root/target/release/examples/cri-client" "$W/bin/"
[ "$EXEC_N" -gt 0 ] && [ -z "$spdy_err" ] && cp "$root/target/orbit-spdy-client" "$W/bin/"
o=$W/bin/orbit
export ORBIT_DIR=$W/store ORBIT_LOCAL_CONFIG=$W/config ORBIT_SYSTEM_CONFIG=$W/config-vendor ORBIT_USER_CONFIG=$W/config-user
export ORBIT_BIN_DIR=$W/bin RUST_BACKTRACE=0

# --- orbit: the example image, `orbit cri`
"$o" trust --prefix example.com/busybox examples/demo-key.pub >/dev/null 2>&1
layout=$(images/build-example.sh "$W/layout" 2>/dev/null)
"$o" fetch --no-progress "oci:$layout" >/dev/null
"$o" --systemd=no cri --net none --socket "$W/orbit.sock" 2>"$W/orbit-cri.log" &
cri_pid=$!
echo "$cri_pid" > "$W/orbit-cri.pid"
for _ in $(seq 1 200); do [ -S "$W/orbit.sock" ] && break; sleep 0.05; done
[ -S "$W/orbit.sock" ] || { echo "bench/cri.sh: orbit cri did not start:" >&2; cat "$W/orbit-cri.log" >&2; exit 1; }

# --- containerd: private daemon, pause + busybox images
peer_err=
start_containerd() {
  local C=$W/containerd c
  command -v containerd >/dev/null || { peer_err="containerd is not installed"; return 1; }
  mkdir -p "$C/root" "$C/state" "$C/opt" "$C/runc" "$W/cni/net.d" "$W/cni/bin"
  cat > "$W/containerd.toml" <<EOF
version = 2
root = "$C/root"
state = "$C/state"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$W/containerd.sock"
[ttrpc]
  address = "$W/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$W/cni/bin"
    conf_dir = "$W/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$C/runc"
EOF
  containerd --config "$W/containerd.toml" >"$W/containerd.log" 2>&1 &
  ctd_pid=$!
  echo "$ctd_pid" > "$W/containerd.pid"
  c=("${ctr[@]}")
  for _ in $(seq 1 200); do
    kill -0 "$ctd_pid" 2>/dev/null || break
    [ -S "$W/containerd.sock" ] && "${c[@]}" version >/dev/null 2>&1 && break
    sleep 0.05
  done
  if ! kill -0 "$ctd_pid" 2>/dev/null; then
    wait "$ctd_pid" 2>/dev/null || true; ctd_pid=
    peer_err="containerd exited at start: $(tail -3 "$W/containerd.log")"; return 1
  fi
  if ! "${c[@]}" version >/dev/null 2>&1; then
    peer_err="containerd did not answer on $W/containerd.sock within 10 s: $(tail -3 "$W/containerd.log")"; return 1
  fi
  if ! "${c[@]}" plugins ls | grep -q 'io.containerd.grpc.v1 *cri .* ok'; then
    peer_err="containerd's CRI plugin did not load: $("${c[@]}" plugins ls | grep cri; grep 'level=error' "$W/containerd.log" | tail -3)"
    return 1
  fi
  # The pause image: busybox sleeping (containerd SIGKILLs it at StopPodSandbox).
  mkdir -p "$W/pause-root/bin"
  cp /bin/busybox "$W/pause-root/bin/busybox"
  "$W/bin/orbit-build-image" --out "$W/pause-layout" --name "$PAUSE" --layer "gzip:$W/pause-root" \
    --entrypoint /bin/busybox --entrypoint sleep --entrypoint 2147483647 >/dev/null
  tar -C "$W/pause-layout" -cf "$W/pause.tar" .
  # The busybox image as orbit exports it, without the signature manifest.
  "$o" image export --overwrite "$IMG" "$W/busybox.tar" >/dev/null 2>&1
  mkdir -p "$W/busybox-oci"
  tar -C "$W/busybox-oci" -xf "$W/busybox.tar"
  jq --arg n "$IMG" '.manifests |= map(select(.annotations["org.opencontainers.image.ref.name"] == $n))' \
    "$W/busybox-oci/index.json" > "$W/busybox-index.json"
  mv "$W/busybox-index.json" "$W/busybox-oci/index.json"
  tar -C "$W/busybox-oci" -cf "$W/busybox-img.tar" .
  local f out
  for f in pause busybox-img; do
    if ! out=$("${c[@]}" -n k8s.io images import "$W/$f.tar" 2>&1); then
      peer_err="ctr images import $f.tar: $out"; return 1
    fi
  done
  rm -rf "$W/pause-root" "$W/pause-layout" "$W/busybox-oci" "$W"/*.tar
}
if [ "$PEERS" = 1 ]; then
  start_containerd || true
else
  peer_err="not measured (PEERS=$PEERS)"
fi

# --- the runs: "runtime parallel" -> "start50 start99 run50 stop50 stop99 wall" or an error
declare -A res
errlogs=
measure() {  # measure NAME SOCKET PARALLEL SERVER_LOG
  local out rc=0
  if [ "$WARMUP" -gt 0 ]; then
    out=$("$W/bin/cri-client" "$2" "$IMG" "$WARMUP" 1 "$W/logs" 2>&1) || rc=$?
    if [ "$rc" != 0 ]; then
      res[$1 $3]="ERROR (warm-up, exit status $rc): $(echo "$out" | tail -3)"
      errlogs+="--- $1 server log, last lines (warm-up for parallel $3):"$'\n'"$(tail -5 "$4")"$'\n'
      return 1
    fi
  fi
  out=$("$W/bin/cri-client" "$2" "$IMG" "$N" "$3" "$W/logs" 2>&1) || rc=$?
  if [ "$rc" != 0 ]; then
    res[$1 $3]="ERROR (exit status $rc): $(echo "$out" | tail -3)"
    errlogs+="--- $1 server log, last lines (parallel $3):"$'\n'"$(tail -5 "$4")"$'\n'
    return 1
  fi
  res[$1 $3]=$(echo "$out" | awk '$1=="start"{s50=$2;s99=$3} $1=="running"{r50=$2} $1=="stop"{t50=$2;t99=$3} $1=="wall"{w=$2} END{print s50, s99, r50, t50, t99, w}')
}
t1=$SECONDS
echo "== CRI: $N pods each (warm-up $WARMUP), host network, busybox 'exec sleep 3600'; $(nproc) CPUs, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "$peer_err" ] && echo "   containerd $(containerd --version | awk '{print $3}') (CRI plugin), runc $(runc --version | awk 'NR==1{print $3}'), overlayfs snapshotter, cgroupfs"
for p in $PARALLEL; do
  measure orbit "$W/orbit.sock" "$p" "$W/orbit-cri.log" || true
  if [ -z "$peer_err" ]; then
    measure containerd "$W/containerd.sock" "$p" "$W/containerd.log" || true
  fi
done

# --- exec: "runtime" -> "execsync50 execsync99 exec50 exec99 execurl50 wall" or an error
declare -A xres
measure_exec() {  # measure_exec NAME SOCKET SERVER_LOG
  local out rc=0
  out=$("$W/bin/cri-client" "$2" exec-bench "$IMG" "$EXEC_N" "$EXEC_WARMUP" \
    "$W/bin/orbit-spdy-client" "$W/logs" 2>&1) || rc=$?
  if [ "$rc" != 0 ]; then
    xres[$1]="ERROR (exit status $rc): $(echo "$out" | tail -3)"
    errlogs+="--- $1 server log, last lines (exec):"$'\n'"$(tail -5 "$3")"$'\n'
    return 1
  fi
  xres[$1]=$(echo "$out" | awk '$1=="execsync"{a=$2;b=$3} $1=="exec"{c=$2;d=$3} $1=="exec-url"{e=$2} $1=="wall"{w=$2} END{print a, b, c, d, e, w}')
}
if [ "$EXEC_N" -gt 0 ] && [ -z "$spdy_err" ]; then
  measure_exec orbit "$W/orbit.sock" "$W/orbit-cri.log" || true
  if [ -z "$peer_err" ]; then
    measure_exec containerd "$W/containerd.sock" "$W/containerd.log" || true
  fi
fi

printf '%-11s %-8s %25s %12s %23s %14s\n' "" "parallel" "start p50 / p99 ms" "to running" "stop p50 / p99 ms" "wall (pods/s)"
for p in $PARALLEL; do
  for r in orbit containerd; do
    v=${res[$r $p]:-}
    if [ -z "$v" ]; then
      [ "$r" = containerd ] && printf '%-11s %-8s %s\n' "$r" "$p" "not measured (below)"
      continue
    fi
    case $v in ERROR*) printf '%-11s %-8s %s\n' "$r" "$p" "$v"; continue;; esac
    read -r s50 s99 r50 t50 t99 w <<<"$v"
    printf '%-11s %-8s %12s / %-10s %12s %10s / %-10s %6ss (%s)\n' "$r" "$p" "$s50" "$s99" "$r50" "$t50" "$t99" "$w" \
      "$(awk -v n="$N" -v w="$w" 'BEGIN{printf "%.1f", n / w}')"
  done
done
for p in $PARALLEL; do
  a=${res[orbit $p]:-} b=${res[containerd $p]:-}
  [[ -n $a && -n $b && $a != ERROR* && $b != ERROR* ]] || continue
  awk -v p="$p" -v a="$a" -v b="$b" 'BEGIN{
    split(a, x, " "); split(b, y, " ");
    printf "containerd / orbit, parallel %-3s start p50 %.2fx  p99 %.2fx   stop p50 %.2fx  p99 %.2fx   wall %.2fx\n",
      p, y[1]/x[1], y[2]/x[2], y[4]/x[4], y[5]/x[5], y[6]/x[6] }'
done
if [ "$EXEC_N" -gt 0 ]; then
  echo "== exec: $EXEC_N rounds each (warm-up $EXEC_WARMUP), one running busybox container, cmd [\"true\"]; streaming = Exec + SPDY client (--stdout --stderr, no tty) to exit 0"
  if [ -n "$spdy_err" ]; then
    echo "exec: not measured: $spdy_err"
  else
    printf '%-11s %25s %25s %14s %9s\n' "" "ExecSync p50 / p99 ms" "streaming p50 / p99 ms" "Exec RPC p50" "wall"
    for r in orbit containerd; do
      v=${xres[$r]:-}
      if [ -z "$v" ]; then
        [ "$r" = containerd ] && printf '%-11s %s\n' "$r" "not measured (below)"
        continue
      fi
      case $v in ERROR*) printf '%-11s %s\n' "$r" "$v"; continue;; esac
      read -r a b c d e w <<<"$v"
      printf '%-11s %12s / %-10s %12s / %-10s %12s %8ss\n' "$r" "$a" "$b" "$c" "$d" "$e" "$w"
    done
    a=${xres[orbit]:-} b=${xres[containerd]:-}
    if [[ -n $a && -n $b && $a != ERROR* && $b != ERROR* ]]; then
      awk -v a="$a" -v b="$b" 'function r(i) { return x[i] > 0 ? sprintf("%.2fx", y[i] / x[i]) : "-" }
        BEGIN{ split(a, x, " "); split(b, y, " ");
          printf "containerd / orbit, exec     ExecSync p50 %s  p99 %s   streaming p50 %s  p99 %s   Exec RPC p50 %s\n",
            r(1), r(2), r(3), r(4), r(5) }'
    fi
  fi
fi
[ -n "$peer_err" ] && echo "containerd: $peer_err"
[ -n "$errlogs" ] && printf '%s' "$errlogs"
echo "(bench/cri.sh: $((t1 - t0)) s build and setup, $((SECONDS - t1)) s measuring)"
