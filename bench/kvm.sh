#!/usr/bin/env bash
# kvm stage1 start latency against its boot floor, in ONE hyperfine run:
#   floor  QEMU with orbit's exact options, kernel and cached initramfs, plus `orbit.probe` on
#          the kernel command line: the agent (PID 1) only prints orbit-kvm-probe-ok and powers
#          off, i.e. boot + power-off of the very same VM with no pod in it;
#   pod    `orbit --systemd=no run --net=none --stage1-name=kvm --kvm-accel=tcg
#          example.com/busybox --exec /bin/true` (gc of the exited pod as untimed --prepare).
# Then where the rest goes: medians of PHASE_RUNS × `orbit --debug run` (stage0 prepare, QEMU
# spawn → agent ready, agent ready → VM gone, orbit outside the VM), and, once each and outside
# hyperfine, timestamped boots: the floor (serial marker), the floor with orbit's devices
# (9p share, virtio-serial port), and orbit's initramfs with a replay of the agent's start-up
# steps as /bench-init (module by module, the port, the 9p mount, lo, the app over 9p, sync).
#
# TCG on this machine: /dev/kvm cannot boot the stock kernel (orbit probes that once per boot);
# --kvm-accel=tcg is passed explicitly so that probe is never part of what is timed.
# Sets everything up itself, idempotently, as root: packages, the guest kernel
# (scripts/kvm-kernel.sh), release build (the guest agent too), the example image, a private
# orbit store + config, a private copy of the binaries.
# Env: BENCH_DIR (default /var/tmp/orbit-bench-kvm), RUNS (hyperfine runs, 10: ~2 s each under
#      TCG), WARMUP (2), PHASE_RUNS (orbit --debug runs for the breakdown, 5),
#      KVM_KERNEL_DIR (/var/cache/orbit-kvm).
set -euo pipefail
export LC_ALL=C   # EPOCHREALTIME and awk with a '.' decimal point
cd "$(dirname "$0")/.."
root=$PWD
W=${BENCH_DIR:-/var/tmp/orbit-bench-kvm}
RUNS=${RUNS:-10}
WARMUP=${WARMUP:-2}
PHASE_RUNS=${PHASE_RUNS:-5}
KDIR=${KVM_KERNEL_DIR:-/var/cache/orbit-kvm}
[ "$(id -u)" = 0 ] || { echo "bench/kvm.sh: run as root" >&2; exit 1; }

scripts/deps.sh hyperfine jq busybox-static cpio
scripts/kvm-kernel.sh "$KDIR" >/dev/null   # idempotent; also installs QEMU (backports)
cargo build --release --workspace --quiet
mkdir -p "$W/bin"
W=$(cd "$W" && pwd)
# A private copy: a concurrent `cargo build` must not swap a binary in the middle of a run.
# Copied only when changed: orbit keys its cached initramfs by the agent's path, size, mtime
# and inode, so an unchanged copy keeps hitting the same /run/orbit/kvm/initrd-*.cpio.
for b in orbit orbit-stage1 orbit-kvm-agent; do
  if ! cmp -s "$root/target/release/$b" "$W/bin/$b"; then
    cp "$root/target/release/$b" "$W/bin/$b.new" && mv "$W/bin/$b.new" "$W/bin/$b"
  fi
done
o=$W/bin/orbit
K=$KDIR/vmlinux
export ORBIT_DIR=$W/store ORBIT_LOCAL_CONFIG=$W/config ORBIT_SYSTEM_CONFIG=$W/config-vendor ORBIT_USER_CONFIG=$W/config-user
IMG=example.com/busybox:latest

cleanup() {
  local j
  for j in $(jobs -p); do kill -9 "$j" 2>/dev/null || true; done   # only our own background jobs
  "$o" gc --grace-period=0 >/dev/null 2>&1 || true
  if grep -q "$W/store" /proc/mounts; then
    echo "bench/kvm.sh: WARNING: mounts left under $W/store:" >&2; grep "$W/store" /proc/mounts >&2
  fi
  rm -rf "$W/store" "$W/bench-initrd.cpio" "$W/extra" "$W/extra.cpio"
}
trap cleanup EXIT

# --- private config trusting the demo key, the example image fetched (verification on)
"$o" trust --prefix example.com/busybox examples/demo-key.pub >/dev/null 2>&1
if ! "$o" image inspect "$IMG" >/dev/null 2>&1; then
  layout=$(images/build-example.sh "$W/layout" 2>/dev/null)
  "$o" fetch --no-progress "oci:$layout" >/dev/null
fi
"$o" gc --grace-period=0 >/dev/null   # no pods left from an interrupted earlier run

run_args=(--systemd=no run --net=none --stage1-name=kvm "--kvm-kernel=$K" --kvm-accel=tcg "$IMG" --exec /bin/true)

# --- first pod: sanity, builds (or finds) orbit's initramfs, and its QEMU's argv is read from
# /proc while the VM runs, so that the floor boots exactly what orbit boots.
"$o" --debug "${run_args[@]}" 2> "$W/first.err" &
opid=$!
: > "$W/qemu.argv"
while kill -0 "$opid" 2>/dev/null; do
  if [ ! -s "$W/qemu.argv" ]; then
    for f in "$W"/store/pods/*/*/kvm/qemu.pid; do
      [ -s "$f" ] || continue
      qpid=$(cat "$f")
      # comm is cut to 15 characters
      if [ "$(cat "/proc/$qpid/comm" 2>/dev/null)" = qemu-system-x86 ]; then
        tr '\0' '\n' < "/proc/$qpid/cmdline" > "$W/qemu.argv" 2>/dev/null || : > "$W/qemu.argv"
      fi
    done
  fi
  sleep 0.01
done
wait "$opid" || { echo "bench/kvm.sh: the first kvm pod failed:" >&2; cat "$W/first.err" >&2; exit 1; }
[ -s "$W/qemu.argv" ] || { echo "bench/kvm.sh: could not read the pod's QEMU command line" >&2; exit 1; }
mapfile -t qargv < "$W/qemu.argv"
# orbit's shape: QEMU [machine options] -kernel K -initrd I -append A -accel X [devices]
k=-1
for i in "${!qargv[@]}"; do [ "${qargv[$i]}" = -kernel ] && { k=$i; break; }; done
if [ "$k" -lt 0 ] || [ "${qargv[$((k+2))]:-}" != -initrd ] || [ "${qargv[$((k+4))]:-}" != -append ] \
   || [ "${qargv[$((k+6))]:-}" != -accel ]; then
  echo "bench/kvm.sh: orbit's QEMU command line changed shape:" >&2; cat "$W/qemu.argv" >&2; exit 1
fi
pre=("${qargv[@]:0:$k}")
kern=${qargv[$((k+1))]} initrd=${qargv[$((k+3))]} append=${qargv[$((k+5))]} accel=${qargv[$((k+7))]}
append=${append%"${append##*[! ]}"}   # orbit appends " " + its (empty) extra words
[ "$accel" = tcg ] || { echo "bench/kvm.sh: the pod ran with -accel $accel, not tcg" >&2; exit 1; }
floor=("${pre[@]}" -kernel "$kern" -initrd "$initrd" -append "$append orbit.probe" -accel "$accel")
q() { local a s=; for a in "$@"; do s+=" '$a'"; done; printf '%s' "${s# }"; }   # for hyperfine -N
cmd_floor=$(q "${floor[@]}")
cmd_pod=$(q "$o" "${run_args[@]}")
out=$(timeout 120 "${floor[@]}" </dev/null 2>&1) || true
case "$out" in *orbit-kvm-probe-ok*) ;; *) echo "bench/kvm.sh: the floor VM did not print its marker: $out" >&2; exit 1;; esac

# A pod directory for the guest replay below: the image's root, the pod's /etc files and the
# agent's configuration, copied from that first pod.
G=$W/guest
if [ ! -x "$G/apps/busybox/rootfs/bin/true" ]; then
  rm -rf "$G"; mkdir -p "$G/apps/busybox"
  "$o" image extract "$IMG" "$G/apps/busybox/rootfs" >/dev/null
fi
# (the agent reads its configuration from the guest's view of the pod, kvm/share/)
config=$(ls "$W"/store/pods/*/*/kvm/share/agent.json | head -1)
first=$(dirname "$(dirname "$(dirname "$config")")")
rm -rf "$G/kvm" "$G/etc"; mkdir -p "$G/kvm"
cp "$config" "$G/kvm/agent.json"
cp -r "$first/etc" "$G/etc"
"$o" gc --grace-period=0 >/dev/null

# --- the side-by-side run
load=$(cut -d' ' -f1-3 /proc/loadavg)
others=$(ps -eo comm= | grep -c '^qemu-system' || true)
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$W/kvm.json" \
  -n floor --prepare true "$cmd_floor" \
  -n pod --prepare "$o gc --grace-period=0" "$cmd_pod" >&2
"$o" gc --grace-period=0 >/dev/null

# --- where the pod's time goes: PHASE_RUNS × `orbit --debug run`
# total   = wall clock of `orbit run` from bash
# prepare = stage0's "prepared pod … in X"
# ready   = stage1's "agent ready after X": QEMU spawn → the agent's Ready on the port
#           (boot, insmod, port, 9p mount of the pod dir, config, lo up)
# gone    = stage1's "VM gone after X": QEMU spawn → QEMU exited
# outside = total − prepare − gone: orbit's two start-ups (stage0, exec into stage1), its mount
#           namespace and the app root mount, the initramfs cache lookup, agent config, QEMU
#           spawn; after the VM: status files, namespace teardown, exit
ms() {  # Rust Duration debug format (1.2ms, 896.6µs, 1.1s, 300ns) -> milliseconds
  awk '{ v=$0; u=v; sub(/[a-zµ]+$/, "", v); sub(/^[0-9.]+/, "", u);
         f = (u=="s") ? 1000 : (u=="ms") ? 1 : (u=="µs"||u=="us") ? 0.001 : (u=="ns") ? 0.000001 : -1;
         if (f < 0) { print "bad duration " $0 > "/dev/stderr"; exit 1 }
         printf "%.3f\n", v*f }'
}
median() { sort -n | awk '{a[NR]=$1} END { if (NR%2) printf "%.1f", a[(NR+1)/2]; else printf "%.1f", (a[NR/2]+a[NR/2+1])/2 }'; }
: > "$W/phases.tsv"
for i in $(seq 1 "$PHASE_RUNS"); do
  t0=$EPOCHREALTIME
  "$o" --debug "${run_args[@]}" 2> "$W/phase.err"
  t1=$EPOCHREALTIME
  prep=$(sed -n 's/^orbit: prepared pod .* in \(.*\)$/\1/p' "$W/phase.err" | ms)
  ready=$(sed -n 's/^stage1 kvm: agent ready after \(.*\)$/\1/p' "$W/phase.err" | ms)
  gone=$(sed -n 's/^stage1 kvm: VM gone after \(.*\)$/\1/p' "$W/phase.err" | ms)
  [ -n "$prep" ] && [ -n "$ready" ] && [ -n "$gone" ] || { echo "bench/kvm.sh: no --debug timings in:" >&2; cat "$W/phase.err" >&2; exit 1; }
  printf '%s\t%s\t%s\t%s\n' "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)*1000}')" "$prep" "$ready" "$gone" >> "$W/phases.tsv"
  "$o" gc --grace-period=0 >/dev/null
done

# --- timestamped boots, once each. stamped OUT CMD...: OUT gets "ms since spawn<TAB>serial
# line" for every console line, then "exit".
stamped() {
  local out=$1 t0 line; shift
  t0=$EPOCHREALTIME
  { timeout 120 "$@" </dev/null 2>&1 || echo "QEMU exit status $?"; } |
    while IFS= read -r line; do printf '%s\t%s\n' "$EPOCHREALTIME" "${line%$'\r'}"; done > "$out.raw"
  printf '%s\texit\n' "$EPOCHREALTIME" >> "$out.raw"
  awk -F'\t' -v t0="$t0" '{ printf "%.1f\t%s\n", ($1 - t0) * 1000, $2 }' "$out.raw" > "$out"
  rm -f "$out.raw"
}
at() { awk -F'\t' -v k="$2" '$2 == k { print $1; exit }' "$1"; }
# orbit's devices as stage1 adds them (the pod share, the agent's port), with a null chardev
# instead of orbit's socket.
devs=(-fsdev "local,id=fs0,path=$G,security_model=none,multidevs=remap" -device "virtio-9p-device,fsdev=fs0,mount_tag=pod"
      -device virtio-serial-device -chardev null,id=agent -device virtserialport,chardev=agent,name=orbit.agent)
# The agent's start-up (stage1/kvm-agent/src/setup.rs, main.rs, apps.rs) replayed with
# busybox, a mark after each step: on the console (host clock) and in the kernel log (guest
# clock, printed at the end). The insmods also pay a busybox fork+exec each, which the agent
# does not (it calls init_module itself): "5 busybox execs" measures that.
mkdir -p "$W/extra"
cat > "$W/extra/bench-init" <<'INIT'
#!/bin/busybox sh
bb=/bin/busybox
m() { echo "orbit-bench: $*" > /dev/kmsg; echo "orbit-bench: $*"; }
$bb mount -t proc -o nosuid,nodev,noexec proc /proc
$bb mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
$bb mount -t devtmpfs -o nosuid,mode=0755 dev /dev
m init
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts -o nosuid,noexec,newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
$bb mount -t tmpfs -o nosuid,nodev,noexec,mode=1777 shm /dev/shm
$bb mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
$bb mount -t tmpfs -o nosuid,nodev tmpfs /tmp
echo "+memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
m fs
$bb true; $bb true; $bb true; $bb true; $bb true
m 5 busybox execs
while read -r mod; do
  [ -n "$mod" ] || continue
  if $bb insmod "/lib/modules/$mod.ko"; then m "insmod $mod"; else m "insmod $mod FAILED"; fi
done < /lib/modules/order
n=0 found=
while [ -z "$found" ] && [ $n -lt 2000 ]; do
  for d in /sys/class/virtio-ports/*; do
    name=; read -r name < "$d/name" 2>/dev/null
    [ "$name" = orbit.agent ] && [ -e "/dev/${d##*/}" ] && found=1
  done
  [ -n "$found" ] || $bb usleep 5000
  n=$((n + 1))
done
m port
$bb mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none pod /pod
m 9p mount
$bb cat /pod/kvm/agent.json > /dev/null
m config
$bb ip link set lo up
m ready
r=/pod/apps/busybox/rootfs
for f in hosts hostname resolv.conf; do   # the pod's /etc files, bound like the agent does
  [ -e "/pod/etc/$f" ] || continue
  [ -e "$r/etc/$f" ] || : > "$r/etc/$f"
  $bb mount --bind "/pod/etc/$f" "$r/etc/$f"
done
$bb mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
$bb mount -t sysfs -o nosuid,nodev,noexec,ro sysfs "$r/sys"
$bb mount --bind /dev "$r/dev"
$bb mkdir /sys/fs/cgroup/busybox
m app root
$bb chroot "$r" /bin/true
m app
$bb sync
m sync
$bb dmesg | $bb grep -E 'orbit-bench|Trying to unpack rootfs|Freeing initrd memory|Freeing unused kernel image \(initmem\)|Checked W\+X|Run /bench-init'
$bb poweroff -f
INIT
chmod 0755 "$W/extra/bench-init"
(cd "$W/extra" && echo bench-init | cpio -o -H newc --quiet) > "$W/extra.cpio"
cat "$initrd" "$W/extra.cpio" > "$W/bench-initrd.cpio"   # concatenated newc archives
replay=("${pre[@]}" -kernel "$kern" -initrd "$W/bench-initrd.cpio" -append "$append rdinit=/bench-init" -accel "$accel" "${devs[@]}")
rm -f "$G"/apps/busybox/rootfs/etc/{hosts,hostname,resolv.conf}   # as fresh as a pod's root
stamped "$W/t.floor" "${floor[@]}"
stamped "$W/t.floordev" "${floor[@]}" "${devs[@]}"
stamped "$W/t.replay" "${replay[@]}"
grep -q 'orbit-bench: sync' "$W/t.replay" || { echo "bench/kvm.sh: the replay VM did not finish:" >&2; cat "$W/t.replay" >&2; exit 1; }

# ============================================================================ report
echo "== kvm pod vs its boot floor, /bin/true, no network (hyperfine -N --warmup $WARMUP --runs $RUNS; -accel $accel; $(nproc) CPUs, load average before: $load; other QEMU processes on the machine: $others)"
echo "floor: $cmd_floor"
jq -r '.results[] | "\(.command | . + (" " * (6 - length)))  median \(.median*1000|round) ms  min \(.min*1000|round) ms  mean \(.mean*1000|round) ± \(.stddev*1000|round) ms  n=\(.times|length)"' "$W/kvm.json"
jq -r '(.results | map({(.command): .median}) | add) as $m |
  "pod / floor = \(($m.pod / $m.floor * 100 | round) / 100)x   (target <= 1.2)  \(if $m.pod / $m.floor <= 1.2 then "ok" else "MISSED" end);  pod − floor = \(($m.pod - $m.floor) * 1000 | round) ms"' "$W/kvm.json"
# hyperfine runs all floors, then all pods: a neighbour's load shifts one side only. The
# minimums are the less disturbed pair.
jq -r '(.results | map({(.command): .min}) | add) as $m |
  "pod / floor by min = \(($m.pod / $m.floor * 100 | round) / 100)x  (less sensitive to other load on the machine)"' "$W/kvm.json"

col() { cut -f"$1" "$W/phases.tsv" | median; }
tot=$(col 1) prep=$(col 2) ready=$(col 3) gone=$(col 4)
outside=$(awk -F'\t' '{printf "%.3f\n", $1-$2-$4}' "$W/phases.tsv" | median)
tail=$(awk -F'\t' '{printf "%.3f\n", $4-$3}' "$W/phases.tsv" | median)
f_mark=$(at "$W/t.floor" orbit-kvm-probe-ok) f_exit=$(at "$W/t.floor" exit)
d_mark=$(at "$W/t.floordev" orbit-kvm-probe-ok) d_exit=$(at "$W/t.floordev" exit)
echo "== where the pod's time goes (medians of $PHASE_RUNS × orbit --debug run)"
printf '  total (wall, from bash)                                      %7s ms\n' "$tot"
printf '  stage0 prepare                                               %7s ms\n' "$prep"
printf '  orbit outside the VM (start-ups, root mount, spawn, teardown) %6s ms\n' "$outside"
printf '  QEMU spawn → agent ready                                     %7s ms\n' "$ready"
printf '  agent ready → VM gone (app over 9p, Done, sync, power-off)   %7s ms\n' "$tail"
echo "== the floor, timestamped once (ms from QEMU spawn; serial line seen by the host)"
printf '  floor:                  probe marker %7s ms, QEMU exit %7s ms (marker → exit %s ms)\n' "$f_mark" "$f_exit" "$(awk -v a="$f_mark" -v b="$f_exit" 'BEGIN{printf "%.1f", b-a}')"
printf '  floor + orbit devices:  probe marker %7s ms, QEMU exit %7s ms (9p share + virtio-serial port, nothing loads their drivers)\n' "$d_mark" "$d_exit"
echo "== guest start-up replayed once: orbit's initramfs + /bench-init doing the agent's steps with busybox, orbit's devices"
echo "   host ms = from QEMU spawn (serial); guest s = kernel clock; step = guest ms since the previous mark"
sed -n 's/^[0-9.]*\t\[ *\([0-9.]*\)\] \(.*\)$/\1\t\2/p' "$W/t.replay" > "$W/guest.tsv"   # dmesg lines
awk -F'\t' 'NR == FNR { if ($2 ~ /^orbit-bench: /) { sub(/^orbit-bench: /, "", $2); host[$2] = $1 }; next }
  { name = $2; sub(/^orbit-bench: /, "", name)
    if ($2 !~ /^orbit-bench: /) { printf "  %9s  [%9.3f]  %-6s  kernel: %s\n", "", $1, "", $2; next }
    step = (prev == "") ? "" : sprintf("%6.1f", ($1 - prev) * 1000); prev = $1
    printf "  %9s  [%9.3f]  %6s  %s\n", host[name] " ms", $1, step, name }' "$W/t.replay" "$W/guest.tsv"
printf '  %9s  QEMU exit (after printing this log)\n' "$(at "$W/t.replay" exit) ms"
# Modules a --net=none microvm pod uses: virtio-mmio transport, 9p (+netfs, fscache), the
# agent's virtio-console port. The rest serve devices orbit does not give such a pod.
awk -F'\t' -v bbx="$(awk -F'\t' '$2=="orbit-bench: fs"{a=$1} $2=="orbit-bench: 5 busybox execs"{b=$1} END{printf "%.6f", (b-a)/5}' "$W/guest.tsv")" '
  BEGIN { split("virtio_ring virtio virtio_mmio 9pnet 9pnet_virtio netfs fscache 9p virtio_console", u, " "); for (i in u) used[u[i]] = 1 }
  { if ($2 ~ /^orbit-bench: insmod /) { m = $2; sub(/^orbit-bench: insmod /, "", m); d = ($1 - prev) * 1000
      if (m in used) { su += d; nu++ } else { sn += d; nn++; names = names " " m } }
    if ($2 ~ /^orbit-bench: /) prev = $1 }
  END { printf "  modules: %.0f ms for %d insmods (%.1f ms of it busybox fork+exec, %.1f ms each, not in the agent)\n", su + sn, nu + nn, (nu + nn) * bbx * 1000, bbx * 1000
        printf "           %.0f ms for the %d this pod needs; %.0f ms (%.0f%%) for %d it does not use:%s\n", su, nu, sn, 100 * sn / (su + sn), nn, names }' "$W/guest.tsv"
echo "== the gap, pod − floor, roughly (debug medians above against the floor's hyperfine median; the floor's marker → exit from its timestamped boot)"
fmed=$(jq -r '.results[] | select(.command == "floor") | .median * 1000' "$W/kvm.json")
awk -v prep="$prep" -v out="$outside" -v ready="$ready" -v tail="$tail" -v fmed="$fmed" -v ftail="$(awk -v a="$f_mark" -v b="$f_exit" 'BEGIN{print b-a}')" 'BEGIN {
  printf "  orbit on the host (prepare + outside the VM)                 %7.1f ms\n", prep + out
  printf "  agent ready later than the floor prints its marker           %7.1f ms\n", ready - (fmed - ftail)
  printf "  ready → VM gone, beyond the floor marker → exit              %7.1f ms\n", tail - ftail
  printf "  sum (= debug-run total − floor median)                       %7.1f ms\n", prep + out + ready + tail - fmed }'
