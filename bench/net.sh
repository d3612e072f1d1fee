#!/usr/bin/env bash
# Networking cost: what attaching a pod to a NAT bridge adds to starting /bin/true, for orbit
# and for podman, in ONE hyperfine run:
#   orbit-none     `orbit --systemd=no run --net=none example.com/busybox --exec /bin/true`
#   orbit-default  `orbit --systemd=no run --net=default …` (CNI bridge orbit0 + host-local
#                  IPAM + orbit's per-network NAT rules; the detach runs inside the timed
#                  command, from the stage1's exit hook)
#   podman-bridge  `podman run --rm --network bridge example.com/busybox /bin/true` (netavark:
#                  bridge podman0 + its own IPAM + iptables chains, torn down by --rm)
#   podman-none    `podman run --rm --network none …`
# then the cost of networking (default − none, bridge − none; medians), podman-bridge /
# orbit-default, and a per-phase breakdown of orbit --net=default from `orbit --debug`.
#
# Sets everything up itself, idempotently, as root (like bench/run.sh): Debian packages,
# release build, a private copy of the orbit binary, a private store + config, the example
# image (demo key trusted, signature verified at fetch), podman's copy of it from
# `orbit image export`.
# Env: BENCH_DIR (default /var/tmp/orbit-bench-net), RUNS (hyperfine min runs, 30),
#      WARMUP (5), PHASE_RUNS (orbit --debug runs for the breakdown, 10).
#
# Isolation: all network work stays in a network namespace this script creates
# (orbit-bench-<pid>, lo up): bridges, veths, iptables rules and ip_forward (a per-namespace
# sysctl) are made there, never on the host's network. hyperfine itself is started in it
# (`nsenter --net`, which with only --net execs without forking), so every timed command and
# every --prepare is a plain child of hyperfine inside it: no nsenter in the timed command.
# On exit: `orbit gc --grace-period=0` inside the namespace, the namespace deleted, the store
# removed, and leftovers (netns, veths, mounts) reported.
#
# Machine notes, found on this machine (podman 4.3.1, netavark 1.4.0, crun 1.8, hybrid cgroups):
# - As in bench/run.sh, crun refuses to run while /sys/fs/cgroup/unified is mounted ("cgroups in
#   hybrid mode not supported"), so hyperfine runs in a private mount namespace with it
#   unmounted, entered before the network namespace; orbit's commands run there too (same
#   host for all). Mounts made in it (podman's overlays, orbit's netns pins) die with it.
# - podman's bridge works inside the namespace with no network configuration of its own: its
#   built-in network `podman` (bridge podman0, 10.88.0.0/16) is created there on each run and
#   removed again by netavark when the last container leaves. The private containers.conf
#   (CONTAINERS_CONF) only lowers default_ulimits (this machine's hard limits, as in run.sh) and
#   pins network_backend = "netavark" so podman never falls back to CNI. No private
#   --root/--runroot is needed (the image store is podman's default one, shared with run.sh).
# - `podman --log-level=debug run` takes 20 s here with any network ("Exceeded conmon timeout
#   waiting for container … to exit"): debug podman is useless for timing; the plain runs are not
#   affected.
# - orbit keeps its bridge orbit0 and its three NAT/forward rules after the pod exits (per
#   network, like docker); a pod start only checks them (`iptables -C`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
W=${BENCH_DIR:-/var/tmp/orbit-bench-net}
RUNS=${RUNS:-30}
WARMUP=${WARMUP:-5}
PHASE_RUNS=${PHASE_RUNS:-10}
[ "$(id -u)" = 0 ] || { echo "bench/net.sh: run as root" >&2; exit 1; }

scripts/deps.sh hyperfine crun podman netavark busybox-static jq containernetworking-plugins iptables iproute2
cargo build --release --workspace --quiet
mkdir -p "$W/bin"
W=$(cd "$W" && pwd)
# A private copy: a concurrent `cargo build` must not swap the binary in the middle of a run.
for b in orbit orbit-stage1; do   # orbit runs its stage1 from beside itself
  cp "$root/target/release/$b" "$W/bin/$b.new" && mv "$W/bin/$b.new" "$W/bin/$b"
done
o=$W/bin/orbit
export ORBIT_DIR=$W/store ORBIT_LOCAL_CONFIG=$W/config ORBIT_SYSTEM_CONFIG=$W/config-vendor ORBIT_USER_CONFIG=$W/config-user
export CONTAINERS_CONF=$W/containers.conf
IMG=example.com/busybox:latest
NS=orbit-bench-$$

# Runs "$@" in a private mount namespace without /sys/fs/cgroup/unified (crun on hybrid
# hosts), inside the benchmark's network namespace. unshare (no --fork), bash and nsenter
# each exec the next: "$@" is the same process that was started.
in_ns() {
  unshare -m --propagation private bash -c '
    if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi
    exec nsenter --net="/run/netns/$0" "$@"' "$NS" "$@"
}
# Only the network namespace (for looking at it and cleaning up).
in_net() { nsenter --net="/run/netns/$NS" "$@"; }

cleanup() {
  local left=0
  if [ -e "/run/netns/$NS" ]; then
    in_net "$o" gc --grace-period=0 >/dev/null 2>&1 || true
    ip netns delete "$NS" 2>/dev/null || true
  fi
  if ip netns list | grep -qw "$NS"; then echo "bench/net.sh: WARNING: netns $NS left" >&2; left=1; fi
  if grep -qE "$W/store|/run/netns/$NS " /proc/mounts; then
    echo "bench/net.sh: WARNING: mounts left:" >&2; grep -E "$W/store|/run/netns/$NS " /proc/mounts >&2; left=1
  fi
  rm -rf "$W/store"
  [ "$left" = 0 ] || echo "bench/net.sh: cleanup incomplete (see above)" >&2
}
trap cleanup EXIT

ip netns add "$NS"
ip -n "$NS" link set lo up

# --- orbit: private config trusting the demo key, the example image fetched (verification on)
"$o" trust --prefix example.com/busybox examples/demo-key.pub >/dev/null 2>&1
if ! "$o" image inspect "$IMG" >/dev/null 2>&1; then
  layout=$(images/build-example.sh "$W/layout" 2>/dev/null)
  "$o" fetch --no-progress "oci:$layout" >/dev/null
fi
in_net "$o" gc --grace-period=0 >/dev/null

# --- podman: ulimits within this machine's hard limits, netavark; the same image, from orbit's
# export (`podman load` refuses it, see bench/run.sh; pulling the named reference works).
cat > "$W/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[network]
network_backend = "netavark"
EOF
if ! podman image exists "$IMG" 2>/dev/null; then
  "$o" image export --overwrite "$IMG" "$W/busybox.tar" >/dev/null 2>&1
  podman pull -q "oci-archive:$W/busybox.tar:$IMG" >/dev/null
  rm -f "$W/busybox.tar"
fi

cmd_orbit_none="$o --systemd=no run --net=none $IMG --exec /bin/true"
cmd_orbit_default="$o --systemd=no run --net=default $IMG --exec /bin/true"
cmd_podman_bridge="podman run --rm --network bridge $IMG /bin/true"
cmd_podman_none="podman run --rm --network none $IMG /bin/true"

# Sanity: every command works before timing it; a podman that cannot run is reported and left
# out, the orbit pair is timed regardless.
for c in "$cmd_orbit_none" "$cmd_orbit_default"; do
  # shellcheck disable=SC2086
  in_ns $c || { echo "bench/net.sh: '$c' failed" >&2; exit 1; }
done
# orbit --net=default must have detached itself: no veth left in the namespace.
if in_net ip -o link show type veth | grep -q .; then
  echo "bench/net.sh: orbit --net=default left a veth behind:" >&2; in_net ip -o link show type veth >&2; exit 1
fi
bench=(-n orbit-none --prepare "$o gc --grace-period=0" "$cmd_orbit_none"
       -n orbit-default --prepare "$o gc --grace-period=0" "$cmd_orbit_default")
# podman's pair: each timed only if it runs here (podman-none alone still shows podman's base).
add_podman() {  # NAME COMMAND
  # shellcheck disable=SC2086
  if in_ns $2 > "$W/podman.err" 2>&1; then
    bench+=(-n "$1" --prepare true "$2")
  else
    echo "bench/net.sh: $1 is not timed: '$2' failed inside netns $NS:" >&2
    sed 's/^/  /' "$W/podman.err" >&2
  fi
}
add_podman podman-bridge "$cmd_podman_bridge"
add_podman podman-none "$cmd_podman_none"
in_net "$o" gc --grace-period=0 >/dev/null

# --- the side-by-side run. Each `orbit run` leaves an exited pod: orbit's --prepare collects
# it (untimed) so every run starts from the same store, as in bench/run.sh.
load=$(cut -d' ' -f1-3 /proc/loadavg)
in_ns hyperfine -N --warmup "$WARMUP" --min-runs "$RUNS" --export-json "$W/net.json" "${bench[@]}" >&2
in_net "$o" gc --grace-period=0 >/dev/null

echo "== start /bin/true with and without a NAT bridge (hyperfine -N --warmup $WARMUP --min-runs $RUNS; $(nproc) CPUs, load average before: $load)"
jq -r '.results[] | "\(.command | .[0:14] | . + (" " * (14 - length)))  median \(.median*1000*10|round/10) ms  min \(.min*1000*10|round/10) ms  mean \(.mean*1000*10|round/10) ± \(.stddev*1000*10|round/10) ms  n=\(.times|length)"' "$W/net.json"
jq -r '
  (.results | map({(.command): .median}) | add) as $m |
  def ms(x): (x * 1000 * 10 | round) / 10;
  def r(x): (x * 100 | round) / 100;
  "networking costs orbit  (default - none, medians): \(ms($m["orbit-default"] - $m["orbit-none"])) ms",
  if $m["podman-bridge"] and $m["podman-none"] then
    "networking costs podman (bridge - none, medians):  \(ms($m["podman-bridge"] - $m["podman-none"])) ms",
    "podman networking cost / orbit networking cost = \(r(($m["podman-bridge"] - $m["podman-none"]) / ($m["orbit-default"] - $m["orbit-none"])))x"
  else "networking costs podman: not measured (a podman command failed, see above)" end,
  if $m["podman-bridge"] then "podman-bridge / orbit-default = \(r($m["podman-bridge"] / $m["orbit-default"]))x"
  else "podman-bridge / orbit-default: podman-bridge not timed (see above)" end
' "$W/net.json"

# --- where orbit --net=default's time goes: PHASE_RUNS × `orbit --debug run`, same namespaces.
# attach    = stage0's "networks attached after X": exit hook written, netns created and
#             pinned, NAT rules checked, CNI ADD (bridge + host-local), /etc/hosts entry
# exit hook = stage1's "exit hook done in Y": `orbit __net-teardown` (a second orbit
#             start-up, CNI DEL, netns unpinned), run after the pod exited
# total     = wall clock of the whole `orbit run`, from bash
ms() {  # Rust Duration debug format (1.2ms, 896.6µs, 1.1s, 300ns) -> milliseconds
  awk '{ v=$0; u=v; sub(/[a-zµ]+$/, "", v); sub(/^[0-9.]+/, "", u);
         f = (u=="s") ? 1000 : (u=="ms") ? 1 : (u=="µs"||u=="us") ? 0.001 : (u=="ns") ? 0.000001 : -1;
         if (f < 0) { print "bad duration " $0 > "/dev/stderr"; exit 1 }
         printf "%.3f\n", v*f }'
}
median() { sort -n | awk -v what="$1" '{ a[NR]=$1 } END { printf "  %-44s %7.2f ms  (median of %d)\n", what, (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2, NR }'; }
phases() {
  local i t0 t1 err
  : > "$W/phases.tsv"
  for i in $(seq 1 "$PHASE_RUNS"); do
    err=$W/phase.err
    t0=$EPOCHREALTIME
    "$o" --systemd=no --debug run --net=default "$IMG" --exec /bin/true 2> "$err"
    t1=$EPOCHREALTIME
    local att hook
    att=$(sed -n 's/^orbit: networks attached after \(.*\)$/\1/p' "$err" | ms)
    hook=$(sed -n 's/^stage1[^:]*: exit hook done in \(.*\)$/\1/p' "$err" | ms)
    [ -n "$att" ] && [ -n "$hook" ] || { echo "bench/net.sh: no --debug network timings in:" >&2; cat "$err" >&2; exit 1; }
    printf '%s\t%s\t%s\n' "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)*1000}')" "$att" "$hook" >> "$W/phases.tsv"
    "$o" gc --grace-period=0 >/dev/null
  done
}
export -f phases ms
export o W IMG PHASE_RUNS
in_ns bash -c phases
echo "== orbit run --net=default phases (orbit --debug)"
cut -f1 "$W/phases.tsv" | median "total (wall, from bash)"
cut -f2 "$W/phases.tsv" | median "networks attached (stage0, before stage1)"
cut -f3 "$W/phases.tsv" | median "exit hook: network teardown (after the pod)"
rm -f "$W/phase.err"
# Anything orbit left in the namespace after all those runs (expected: orbit0 only).
if in_net ip -o link show type veth | grep -q .; then
  echo "bench/net.sh: WARNING: veths left in $NS after the runs:" >&2; in_net ip -o link show type veth >&2
fi
leases=$(find "$W/store/net/ipam" -type f ! -name 'last_reserved_ip*' ! -name lock 2>/dev/null | wc -l)
[ "$leases" = 0 ] || echo "bench/net.sh: WARNING: $leases host-local lease(s) left in $W/store/net/ipam" >&2
