#!/bin/bash
# Runs INSIDE the modern-host VM (bench/modern-host.sh boots it): `orbit run --net=none` of the
# example image running /bin/true next to `crun run` of a bundle with the same root file
# system, in ONE hyperfine run, on cgroup v2 with systemd as PID 1 (each orbit pod gets its
# transient scope and machine; crun runs in the caller's cgroup, as it does by default).
set -euo pipefail
export ORBIT_DIR=/var/lib/orbit
[ -f "$MH_SHARE/env" ] && . "$MH_SHARE/env"
IMG=example.com/busybox:latest
RUNS=${RUNS:-20} WARMUP=${WARMUP:-3}
"$ORBIT" trust --prefix example.com/busybox "$MH_SHARE/demo-key.pub" >/dev/null
"$ORBIT" fetch --no-progress "oci:$MH_SHARE/example" >/dev/null
B=/var/tmp/bundle
rm -rf "$B"; mkdir -p "$B"
"$ORBIT" image extract "$IMG" "$B/rootfs" >/dev/null
(cd "$B" && crun spec)
jq '.process.terminal = false | .process.args = ["/bin/true"]' "$B/config.json" > "$B/c.json" && mv "$B/c.json" "$B/config.json"
cmd_orbit="$ORBIT run --net=none $IMG --exec /bin/true"
cmd_orbit_nosd="$ORBIT --systemd=no run --net=none $IMG --exec /bin/true"
cmd_crun="crun run --bundle $B orbit-bench-crun"
$cmd_orbit && $cmd_crun
"$ORBIT" gc --grace-period=0 >/dev/null
hyperfine -N --warmup "$WARMUP" --min-runs "$RUNS" --export-json /tmp/v2.json \
  -n orbit --prepare "$ORBIT gc --grace-period=0" "$cmd_orbit" \
  -n orbit-no-systemd --prepare "$ORBIT gc --grace-period=0" "$cmd_orbit_nosd" \
  -n crun --prepare true "$cmd_crun" >&2
jq -r '.results[] | "\(.command)  median \(.median*1000*10|round/10) ms  min \(.min*1000*10|round/10) ms  n=\(.times|length)"' /tmp/v2.json
jq -r '(.results | map({(.command): .median}) | add) as $m |
  "orbit / crun on cgroup v2 (VM, TCG) = \(($m.orbit / $m.crun * 100 | round) / 100)x (orbit with its scope + machined)",
  "orbit --systemd=no / crun             = \(($m["orbit-no-systemd"] / $m.crun * 100 | round) / 100)x"' /tmp/v2.json
"$ORBIT" gc --grace-period=0 >/dev/null
