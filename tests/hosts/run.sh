#!/usr/bin/env bash
# The modern host, from the test suite: builds (once; cached in $MH_CACHE, default
# /var/cache/modern-host) a Debian bookworm VM with systemd as PID 1, cgroup v2 only and
# nftables without iptables (modern-host.sh), makes the images the suite uses, boots the VM
# under QEMU (TCG) with orbit shared in, runs suite.sh inside, and fails unless every check
# of the suite passed. Prints the VM's boot time and each check's line.
#
#   tests/hosts/run.sh [ORBIT_BIN_DIR]     (default target/release; needs orbit, orbit-stage1,
#                                           orbit-build-image and examples/cri-client built)
# Output (console, journal, the suite's stdout/stderr) stays in $MH_OUT (default
# target/modern-host) for a look after a failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=$(cd "${1:-$repo/target/release}" && pwd)
out=${MH_OUT:-$repo/target/modern-host}
[ "$(id -u)" = 0 ] || { echo "tests/hosts/run.sh: needs root (debootstrap, QEMU's 9p)" >&2; exit 1; }

bash "$here/modern-host.sh" build

share=$(mktemp -d)
trap 'rm -rf "$share"' EXIT
# The signed example image, its (demo) public key, and an unsigned image whose layer ships
# a block device node for the VM's disk (254:0, virtio-blk's first disk).
ORBIT_BIN_DIR=$bin "$repo/images/build-example.sh" "$share/example" >/dev/null
cp "$repo/examples/demo-key.pub" "$share/"
dev=$(mktemp -d); mkdir -p "$dev/bin"
cp /bin/busybox "$dev/bin/busybox"; ln -s busybox "$dev/bin/sh"; ln -s busybox "$dev/bin/head"; ln -s busybox "$dev/bin/wc"
mknod "$dev/disk" b 254 0
"$bin/orbit-build-image" --out "$share/devnode" --name test.local/devnode:latest \
  --layer "gzip:$dev" --env PATH=/bin --cmd /bin/sh >/dev/null
rm -rf "$dev"
# The CRI client the suite drives `orbit cri` with (bench/cri-client.rs), without debug info.
objcopy --strip-debug "$bin/examples/cri-client" "$share/cri-client"

# MH_ONLY="check …": run just those checks (and MH_TRACE=1: trace them into test.err).
[ -n "${MH_ONLY:-}" ] && echo "$MH_ONLY" > "$share/only"
[ "${MH_TRACE:-0}" = 1 ] && touch "$share/trace"
mkdir -p "$out"
MH_TEST_TIMEOUT=${MH_TEST_TIMEOUT:-900} MH_RUN_TIMEOUT=${MH_RUN_TIMEOUT:-1100} \
  bash "$here/modern-host.sh" run "$bin/orbit" "$here/suite.sh" "$out" "$share"

echo "modern host: $(cat "$out/boot.txt" 2>/dev/null | head -2 | tr '\n' ' ')"
cat "$out/test.out"
rc=$(cat "$out/rc")
expected=${MH_ONLY:-$(grep -oE '^check [a-z0-9-]+' "$here/suite.sh" | cut -d' ' -f2)}
missing=""
for c in $expected; do grep -qE "^ok $c( |$)" "$out/test.out" || missing+=" $c"; done
if [ "$rc" != 0 ] || [ -n "$missing" ]; then
  echo "modern host: FAILED (suite rc $rc; not ok:$missing); stderr tail:" >&2
  tail -30 "$out/test.err" >&2
  exit 1
fi
echo "modern host: all $(echo "$expected" | wc -w) checks passed"
