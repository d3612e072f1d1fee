#!/usr/bin/env bash
# systemd registration cost: `orbit run` of /bin/true with --systemd=yes (transient scope +
# machined registration, against a real systemd manager and machined started by
# tests/harness/systemd-user-bus.sh) and with --systemd=no, in one hyperfine run.
# Env: BENCH_DIR (default /var/tmp/orbit-bench-systemd), RUNS (100: fewer runs are too noisy on a 2-core machine where systemd, dbus and machined compete with the pod).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
W=${BENCH_DIR:-/var/tmp/orbit-bench-systemd}
RUNS=${RUNS:-100}
scripts/deps.sh hyperfine jq busybox-static systemd dbus-daemon dbus-user-session systemd-container
cargo build --release --workspace --quiet
mkdir -p "$W"
o=$root/target/release/orbit
export ORBIT_DIR=$W/store ORBIT_LOCAL_CONFIG=$W/config ORBIT_SYSTEM_CONFIG=$W/config-vendor ORBIT_USER_CONFIG=$W/config-user
layout=$(images/build-example.sh "$W/example")
"$o" trust --prefix example.com/busybox examples/demo-key.pub >/dev/null
"$o" fetch --no-progress "oci:$layout" >/dev/null
sdu=/tmp/obsd.$$
trap 'tests/harness/systemd-user-bus.sh down "$sdu" >/dev/null 2>&1 || true; rm -rf "$sdu"; "$o" gc --grace-period=0 >/dev/null 2>&1 || true' EXIT
eval "$(SDU_MACHINED=1 tests/harness/systemd-user-bus.sh up "$sdu" 2>/dev/null)"
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$W/systemd.json" \
  -n with-systemd --prepare "$o gc --grace-period=0" "$o --systemd=yes run example.com/busybox --exec /bin/true" \
  -n without --prepare "$o gc --grace-period=0" "$o --systemd=no run example.com/busybox --exec /bin/true" >&2
# Where the registration time goes: orbit --debug prints orbit's own steps (connect, made
# while the pod is prepared, and the scope request) and how long the stage1 then waited for
# systemd to move it into the scope (systemd's job latency, not orbit's code).
to_ms() { awk '{ v=$1; u=v; sub(/[a-zµ]+$/, "", v); sub(/^[0-9.]+/, "", u); f=(u=="ms")?1:(u=="µs"||u=="us")?0.001:(u=="s")?1000:0; print v*f }'; }
median() { sort -n | awk -v what="$1" '{ a[NR]=$1 } END { printf "%s, median of %d: %.2f ms\n", what, NR, (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2 }'; }
for i in $(seq 1 20); do
  "$o" --debug --systemd=yes run example.com/busybox --exec /bin/true 2>"$W/debug.$i" >/dev/null
  "$o" gc --grace-period=0 >/dev/null
done
cat "$W"/debug.* | sed -n 's/^orbit: systemd: scope requested after //p' | to_ms | median "orbit's registration on the start path (scope request + helper spawn)"
cat "$W"/debug.* | sed -n 's/^stage1 ns: waited \([^ ]*\) for systemd.*/\1/p' | to_ms | median "systemd's scope job until the pod is moved"
rm -f "$W"/debug.*
jq -r '(.results | map({(.command): .median}) | add) as $m |
  "median: with systemd \($m["with-systemd"]*1000*10|round/10) ms, without \($m.without*1000*10|round/10) ms",
  "registration adds \((($m["with-systemd"] - $m.without)*1000*10|round)/10) ms (target < 5 ms)"' "$W/systemd.json"
