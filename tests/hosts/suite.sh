#!/bin/bash
# The modern-host suite: runs INSIDE the VM that tests/hosts/run.sh boots (Debian bookworm,
# systemd as PID 1, cgroup v2 only, nftables without iptables), as a systemd unit with
# Delegate=yes. $ORBIT is the orbit under test, $MH_SHARE holds the images and keys the host
# made (see run.sh). Each check prints `ok NAME` or `FAIL NAME: why`; run.sh fails on any
# FAIL, on a missing check, and on a non-zero exit. Every pod the suite starts is stopped by
# the check that started it; the last check runs `orbit gc` and asserts that nothing — no
# cgroup, mount, network namespace, nft rule or machine — is left.
set -uo pipefail
[ -f "$MH_SHARE/trace" ] && set -x
export ORBIT_DIR=/var/lib/orbit
IMG=example.com/busybox
DEVIMG=test.local/devnode
fails=0
t_start=$(date +%s.%N)

ok() { echo "ok $1"; }
fail() { echo "FAIL $1: $2"; fails=$((fails + 1)); }
# bounded CMD...: CMD, killed (with a line saying so) after CHECK_TIMEOUT seconds.
# kill_tree PID [SPARE]: SIGKILLs PID and every process below it but SPARE (the caller).
kill_tree() {
  local c
  [ "$1" = "${2:-}" ] && return 0
  kill -STOP "$1" 2>/dev/null
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do kill_tree "$c" "${2:-}"; done
  kill -KILL "$1" 2>/dev/null
}
bounded() {
  local me=$BASHPID limit=${CHECK_TIMEOUT:-180}
  ( trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$limit" & sp=$!; wait "$sp"
    echo "timed out after $limit s"; kill_tree "$me" "$BASHPID" ) &
  local watchdog=$! rc=0
  # A subshell: a check's `die` ends the check, not this function (the watchdog must go).
  ( "$@" ) || rc=$?
  kill "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null
  return "$rc"
}
# check NAME CMD...: runs CMD (a function) bounded; its output is kept for the failure line.
check() {
  local name=$1; shift
  # MH_ONLY (run.sh puts it in the share): run just these checks, for debugging.
  if [ -s "$MH_SHARE/only" ] && ! grep -qw -- "$name" "$MH_SHARE/only"; then return 0; fi
  local out t0; t0=$(date +%s.%N)
  if out=$(bounded "$@" 2>&1); then ok "$name ($(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f s", b-a}'))"
  else fail "$name" "$(echo "$out" | tail -12 | tr '\n' '|')"; fi
}
# Each check runs in a subshell (check's command substitution): die ends just that check.
die() { echo "$*"; exit 1; }
# expect_eq WHAT GOT WANT
expect_eq() { [ "$2" = "$3" ] || die "$1: got '$2', want '$3'"; }

# eventually SECONDS CMD...: true once CMD succeeds, polled every 0.1 s; false after SECONDS.
eventually() {
  local n=$(($1 * 10)) i; shift
  for i in $(seq "$n"); do "$@" && return 0; sleep 0.1; done
  return 1
}

# A pod in the background: bg_pod VAR VERB... ARGS... (`run` or `app sandbox`); sets VAR to
# its uuid once it runs.
bg_pod() {
  local var=$1 verb=$2; shift 2
  [ "$verb" = app ] && { verb="app $1"; shift; }
  local f; f=$(mktemp)
  # shellcheck disable=SC2086
  "$ORBIT" $verb --uuid-file-save="$f" "$@" >/tmp/bg.$$.out 2>&1 &
  local pid=$!
  local i
  for i in $(seq 600); do
    # running: the stage1 has its pid, and every app (if any) runs
    if [ -s "$f" ] && "$ORBIT" status --format json "$(cat "$f")" 2>/dev/null \
        | jq -e '.state == "running" and .pid != null and (.apps | all(.state == "running" and .pid != null))' >/dev/null; then
      printf -v "$var" '%s' "$(cat "$f")"; rm -f "$f"; BG_PID=$pid; return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat /tmp/bg.$$.out; rm -f "$f"; return 1
}
# stop_pod UUID: orbit stop, then wait for the orbit run process.
stop_pod() { "$ORBIT" stop --timeout 10s "$1" >/dev/null; wait "$BG_PID" 2>/dev/null; true; }
# The pod's cgroup directory (below its scope or service).
pod_cgroup() { find /sys/fs/cgroup -type d -path "*/orbit/$1" -print -quit; }
# App APP's host pid once the pod's init has recorded it.
app_pid() {
  local i p
  for i in $(seq 100); do
    p=$("$ORBIT" status --format json "$1" | jq -r --arg a "$2" '.apps[] | select(.name == $a) | .pid // empty')
    [ -n "$p" ] && { echo "$p"; return 0; }
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------------------------------
t_host() {
  expect_eq "/sys/fs/cgroup" "$(stat -fc %T /sys/fs/cgroup)" cgroup2fs || return 1
  expect_eq "/proc/self/cgroup lines" "$(wc -l < /proc/self/cgroup)" 1 || return 1
  expect_eq "PID 1" "$(cat /proc/1/comm)" systemd || return 1
  ! command -v iptables || die "iptables is installed: $(command -v iptables)"
  command -v nft >/dev/null || die "no nft"
  uname -r
}

t_fetch() {
  "$ORBIT" trust --prefix "$IMG" "$MH_SHARE/demo-key.pub" >/dev/null || return 1
  "$ORBIT" fetch "oci:$MH_SHARE/example" >/dev/null || return 1
  "$ORBIT" fetch --insecure-options=image "oci:$MH_SHARE/devnode" >/dev/null 2>&1 || return 1
  "$ORBIT" image list | grep -q "$IMG" || die "image not listed"
}

# A kernel without overlayfs (the module not loaded): a clear error that says what to load,
# and nothing left mounted.
t_overlay_missing() {
  modprobe -r overlay || die "cannot unload overlay: $(lsmod | grep overlay)"
  # The kernel would load it again by itself on the mount: no module helper for a moment.
  local helper; helper=$(cat /proc/sys/kernel/modprobe)
  echo /bin/false > /proc/sys/kernel/modprobe
  local out rc=0
  # (bounded here, not by the watchdog: the helper must be put back for the later checks)
  out=$(timeout 60 "$ORBIT" run --net=none "$IMG" --exec /bin/true 2>&1) || rc=$?
  echo "$helper" > /proc/sys/kernel/modprobe
  modprobe overlay
  [ "$rc" = 125 ] || die "exit $rc: $out"
  echo "$out" | grep -q "no overlay file system.*modprobe overlay" || die "unclear error: $out"
  ! grep -q "$ORBIT_DIR" /proc/self/mountinfo || die "mounts left: $(grep "$ORBIT_DIR" /proc/self/mountinfo)"
}

t_ns_pod() {
  local out; out=$("$ORBIT" run --net=none "$IMG" --exec /bin/echo -- hello-v2) || return 1
  expect_eq output "$out" hello-v2
}

t_fly_pod() {
  local out; out=$("$ORBIT" run --net=host --stage1-name=fly "$IMG" --exec /bin/cat -- /etc/motd) || return 1
  echo "$out" | grep -q 'Hello from orbit' || die "output: $out"
}

# The pod's tree: scope > orbit/<uuid> > {_stage1, <app>}; no process in a cgroup that
# delegates; the app's leaf is a domain with its limits; stats files exist.
t_cgroup_layout() {
  local u; bg_pod u run --net=none "$IMG" --name web --memory=64M --pids-limit=50 --cpu=250 --cpu-shares=2048 --exec /bin/sleep -- 600 || return 1
  local pod; pod=$(pod_cgroup "$u")
  [ -n "$pod" ] || die "no cgroup orbit/$u"
  case "$pod" in */machine.slice/orbit-"$u".scope/orbit/"$u") ;; *) die "pod cgroup at $pod, not in its scope";; esac
  local scope=${pod%/orbit/*}
  expect_eq "scope procs" "$(cat "$scope/cgroup.procs")" "" || return 1
  expect_eq "pod procs" "$(cat "$pod/cgroup.procs")" "" || return 1
  [ -n "$(cat "$pod/_stage1/cgroup.procs")" ] || die "no stage1 process in _stage1"
  expect_eq "app cgroup.type" "$(cat "$pod/web/cgroup.type")" domain || return 1
  local pid; pid=$(app_pid "$u" web) || die "app web has no pid"
  grep -qx "0::${pod#/sys/fs/cgroup}/web" "/proc/$pid/cgroup" || die "app pid $pid in $(cat /proc/"$pid"/cgroup)"
  expect_eq memory.max "$(cat "$pod/web/memory.max")" $((64 << 20)) || return 1
  expect_eq "pod memory.max" "$(cat "$pod/memory.max")" $((64 << 20)) || return 1
  expect_eq memory.oom.group "$(cat "$pod/web/memory.oom.group")" 1 || return 1
  expect_eq pids.max "$(cat "$pod/web/pids.max")" 50 || return 1
  expect_eq cpu.max "$(cat "$pod/web/cpu.max")" "25000 100000" || return 1
  expect_eq cpu.weight "$(cat "$pod/web/cpu.weight")" 79 || return 1
  for f in memory.stat cpu.stat io.stat pids.current; do [ -f "$pod/web/$f" ] || die "no $f"; done
  grep -q cpuset "$pod/cgroup.subtree_control" && die "cpuset enabled without being asked"
  "$ORBIT" enter "$u" /bin/true || die "enter failed"
  stop_pod "$u"
  [ ! -d "$pod/web" ] || die "app cgroup left after stop"
}

t_oom() {
  local rc=0
  "$ORBIT" run --net=none "$IMG" --name hog --memory=32M --exec /bin/sh -- -c \
    'mkfifo /tmp/f && { dd if=/dev/zero bs=1M count=128 2>/dev/null > /tmp/f & } && exec tail /tmp/f' >/dev/null 2>&1 || rc=$?
  expect_eq "exit" "$rc" 137 || return 1
  local u; u=$("$ORBIT" list --format json | jq -r 'map(select(.apps[]?.name == "hog")) | .[-1].uuid')
  "$ORBIT" status --format json "$u" | jq -e '.apps[] | select(.name == "hog") | .reason == "OOMKilled"' >/dev/null \
    || die "not OOMKilled: $("$ORBIT" status --format json "$u")"
}

t_pids_limit() {
  local out
  out=$("$ORBIT" run --net=none "$IMG" --pids-limit=5 --exec /bin/sh -- -c \
    'for i in 1 2 3 4 5 6 7 8; do sleep 5 & done 2>&1; echo spawned; kill $(jobs -p) 2>/dev/null; wait' 2>&1)
  echo "$out" | grep -qi "fork\|resource temporarily unavailable" || die "no fork failure under pids.max=5: $out"
}

# Devices: a block node in an image layer, one the app makes, and --device grants.
t_devices() {
  local maj min out rc
  read -r maj min < <(stat -c '%t %T' /dev/vda | while read -r a b; do echo $((16#$a)) $((16#$b)); done)
  # Made by the app in its /dev (it keeps CAP_MKNOD; /dev is not nodev): creating works,
  # opening is refused by the BPF device program (EPERM).
  rc=0; out=$("$ORBIT" run --net=none "$IMG" --exec /bin/sh -- -c "mknod /dev/d b $maj $min && head -c 512 /dev/d | wc -c" 2>&1) || rc=$?
  echo "$out" | grep -q "head: /dev/d: Operation not permitted" || die "an app-made node of /dev/vda in /dev opened (rc $rc): $out"
  # Made in the app's root, or shipped in an image layer: the root is nodev (EACCES).
  rc=0; out=$("$ORBIT" run --net=none "$IMG" --exec /bin/sh -- -c "mknod /tmp/d b $maj $min && head -c 512 /tmp/d | wc -c" 2>&1) || rc=$?
  echo "$out" | grep -q "head: /tmp/d: Permission denied" || die "an app-made node of /dev/vda in its root opened (rc $rc): $out"
  rc=0; out=$("$ORBIT" run --net=none "$DEVIMG" --exec /bin/sh -- -c "head -c 512 /disk | wc -c" 2>&1) || rc=$?
  echo "$out" | grep -q "head: /disk: Permission denied" || die "an image's node of /dev/vda opened (rc $rc): $out"
  # Granted read-only: reads work, writes are refused.
  out=$("$ORBIT" run --net=none "$IMG" --device "/dev/vda:/dev/xvda:r" --exec /bin/sh -- -c \
    'head -c 512 /dev/xvda | wc -c; echo x | dd of=/dev/xvda bs=1 count=1 conv=notrunc 2>&1; true' 2>&1)
  echo "$out" | head -1 | grep -qx 512 || die "granted read failed: $out"
  echo "$out" | grep -qi "not permitted" || die "write through an r grant: $out"
  # The harmless nodes still work.
  "$ORBIT" run --net=none "$IMG" --exec /bin/sh -- -c 'echo > /dev/null && head -c1 /dev/zero >/dev/null && head -c1 /dev/urandom >/dev/null' \
    || die "harmless devices refused"
}

t_private_users() {
  local out; out=$("$ORBIT" run --net=none --private-users "$IMG" --memory=64M --exec /bin/sh -- -c 'id -u; cat /proc/self/uid_map') || return 1
  echo "$out" | head -1 | grep -qx 0 || die "$out"
  echo "$out" | tail -1 | awk '$1 == 0 && $2 != 0 {ok=1} END {exit !ok}' || die "not mapped: $out"
}

t_mutable() {
  local u; bg_pod u app sandbox --net=none || return 1
  "$ORBIT" app add "$u" "$IMG" --name a1 --memory=32M --exec /bin/sleep -- 600 || return 1
  "$ORBIT" app start "$u" --app a1 || return 1
  local pod; pod=$(pod_cgroup "$u")
  [ -d "$pod/a1" ] || die "no app cgroup $pod/a1"
  expect_eq "a1 memory.max" "$(cat "$pod/a1/memory.max")" $((32 << 20)) || return 1
  "$ORBIT" app stop "$u" --app a1 || return 1
  "$ORBIT" app rm "$u" --app a1 || return 1
  [ ! -d "$pod/a1" ] || die "app cgroup left after app rm"
  stop_pod "$u"
}

# systemd: the scope, machined, stopping through systemd, daemon-reload.
t_systemd_scope() {
  local u; bg_pod u run --net=none "$IMG" --exec /bin/sleep -- 600 || return 1
  machinectl list --no-legend | grep -q "orbit-$u" || die "machinectl list: $(machinectl list)"
  machinectl status "orbit-$u" >/dev/null || die "machinectl status failed"
  systemctl is-active -q "orbit-$u.scope" || die "scope not active"
  systemctl daemon-reload
  "$ORBIT" status "$u" | grep -q '^state=running' || die "pod did not survive daemon-reload"
  systemctl stop "orbit-$u.scope" || return 1
  wait "$BG_PID" 2>/dev/null
  ! machinectl status "orbit-$u" >/dev/null 2>&1 || die "machine still registered"
  "$ORBIT" status "$u" | grep -q '^state=exited' || die "pod state: $("$ORBIT" status "$u")"
  [ -z "$(pod_cgroup "$u")" ] || die "cgroup left: $(pod_cgroup "$u")"
}

t_systemd_service() {
  local u; u=$("$ORBIT" run --unit --net=none "$IMG" --exec /bin/sh -- -c 'echo from-the-journal; exec sleep 600') || return 1
  eventually 10 systemctl is-active -q "orbit-$u.service" \
    || die "service: $(systemctl status "orbit-$u.service" 2>&1 | tail -5)"
  journal_says() { journalctl -q ORBIT_POD="$u" | grep -q from-the-journal; }
  eventually 10 journal_says || die "journalctl ORBIT_POD=$u: $(journalctl -q ORBIT_POD="$u" | tail -3)"
  machinectl list --no-legend | grep -q "orbit-$u" || die "not a machine"
  [ -n "$(pod_cgroup "$u")" ] || die "no pod cgroup in the service"
  "$ORBIT" stop "$u" >/dev/null || return 1
  service_gone() { ! systemctl is-active -q "orbit-$u.service"; }
  eventually 10 service_gone || die "service still active"
}

# A unit file's `ExecStart=orbit run …` (Delegate=yes): the pod lives in that service — no
# scope of its own — with its tree inside it; stopping the service stops the pod.
t_unit_file() {
  cat > /run/systemd/system/orbit-suite-pod.service <<UNIT
[Service]
Environment=ORBIT_DIR=$ORBIT_DIR
ExecStart=$ORBIT run --net=none $IMG --name u1 --memory=48M --exec /bin/sleep -- 600
Delegate=yes
UNIT
  systemctl daemon-reload
  systemctl start orbit-suite-pod.service || die "cannot start: $(systemctl status orbit-suite-pod.service 2>&1 | tail -5)"
  local svc=/sys/fs/cgroup/system.slice/orbit-suite-pod.service leaf="" i
  for i in $(seq 100); do
    leaf=$(find "$svc" -type d -path "$svc/orbit/*/u1" 2>/dev/null)
    [ -n "$leaf" ] && [ -n "$(cat "$leaf/cgroup.procs" 2>/dev/null)" ] && break
    sleep 0.1
  done
  local r=0 why=""
  [ -n "$leaf" ] || { r=1; why="no app cgroup below $svc: $(find "$svc" -type d)"; }
  [ "$r" = 0 ] && [ "$(cat "$leaf/memory.max")" != $((48 << 20)) ] && { r=1; why="memory.max $(cat "$leaf/memory.max")"; }
  [ "$r" = 0 ] && [ -n "$(cat "$svc/cgroup.procs")" ] && { r=1; why="processes in the service's own cgroup: $(cat "$svc/cgroup.procs")"; }
  [ "$r" = 0 ] && systemctl list-units --no-legend 'orbit-*.scope' | grep -q . && { r=1; why="a nested scope: $(systemctl list-units --no-legend 'orbit-*.scope')"; }
  systemctl stop orbit-suite-pod.service
  rm -f /run/systemd/system/orbit-suite-pod.service; systemctl daemon-reload
  [ "$r" = 0 ] || die "$why"
  [ ! -d "$svc" ] || die "the service's cgroup is left: $(find "$svc" -type d)"
}

# kill -9 of a running pod's supervisor (the `orbit run` process): the pod dies with it, its
# scope, machine and cgroups go, and `orbit gc` finishes the rest (mounts, network).
t_kill9() {
  local u; bg_pod u run --net=default "$IMG" --name k --memory=32M --exec /bin/sleep -- 600 || return 1
  kill -KILL "$BG_PID"; wait "$BG_PID" 2>/dev/null
  local i left
  for i in $(seq 100); do
    left=$(find /sys/fs/cgroup -type d -path "*/orbit/$u*"; machinectl list --no-legend | grep "orbit-$u")
    [ -z "$left" ] && break
    sleep 0.1
  done
  [ -z "$left" ] || die "left after kill -9: $left"
  "$ORBIT" gc --grace-period=0 >/dev/null 2>&1 || die "gc failed"
  left=$(grep "$u" /proc/self/mountinfo; nft list table inet orbit 2>/dev/null | grep "$u"; ip netns list | grep "$u")
  [ -z "$left" ] || die "left after gc: $left"
}

t_failed_start_leaves_nothing() {
  ! "$ORBIT" run --net=none "$IMG" --exec /does/not/exist >/dev/null 2>&1 || die "a missing executable ran"
  # systemd trims the ended scope (and machined forgets the machine) asynchronously.
  local i left
  for i in $(seq 50); do
    left=$(find /sys/fs/cgroup -type d -path '*/orbit/*'; machinectl list --no-legend | grep orbit-)
    [ -z "$left" ] && break
    sleep 0.1
  done
  [ -z "$left" ] || die "left after a failed start: $left"
}

t_net_default_port() {
  local u; bg_pod u run --net=default --port=http:8080 "$IMG" --exec /bin/httpd -- -f -p 80 -h /etc || return 1
  # (busybox's wget -T crashes: timeout bounds it instead)
  local got i
  for i in $(seq 50); do  # httpd binds its port a moment after it starts
    got=$(busybox timeout 10 busybox wget -qO- "http://172.16.28.1:8080/motd" 2>&1) && break
    sleep 0.2
  done
  echo "$got" | grep -q 'Hello from orbit' || { stop_pod "$u"; die "port forward: $got; $(nft list ruleset)"; }
  nft list table inet orbit >/dev/null 2>&1 || nft list tables | grep -q orbit || { stop_pod "$u"; die "no orbit nft table"; }
  stop_pod "$u"
  nft list ruleset | grep -q "$u" && die "per-pod nft rules left: $(nft list ruleset | grep "$u")"
  true
}

# The CRI server: cri_pod SERVER_FLAGS PARENT LEAF_GLOB — a sandbox below the kubelet's cgroup
# PARENT and a container in it, whose cgroup (the deepest below /sys/fs/cgroup/kubepods*)
# must match LEAF_GLOB and hold its process; container and sandbox stats from cgroup v2 are
# non-zero; everything stops and is removed.
cri_pod() {
  local flags=$1 parent=$2 glob=$3
  local sock=/run/orbit-test/cri.sock
  mkdir -p /run/orbit-test; rm -f "$sock"
  # shellcheck disable=SC2086
  "$ORBIT" cri --socket "$sock" $flags >/tmp/cri.log 2>&1 &
  local cri=$!
  eventually 30 test -S "$sock" || { kill "$cri"; die "no CRI socket: $(cat /tmp/cri.log)"; }
  local ids; ids=$("$MH_SHARE/cri-client" "$sock" smoke-start "$IMG:latest" "$parent" /tmp) \
    || { kill "$cri"; die "smoke-start failed: $(tail -5 /tmp/cri.log)"; }
  local sb=${ids% *} ct=${ids#* }
  local r=0 why=""
  local leaf; leaf=$(find /sys/fs/cgroup/kubepods* -type d -path '*orbit/*' ! -name _stage1 2>/dev/null | awk -F/ 'NF > m {m = NF; d = $0} END {print d}')
  # shellcheck disable=SC2254
  case "$leaf" in
    $glob) ;;
    *) r=1; why="container cgroup '$leaf' is not $glob";;
  esac
  [ "$r" = 0 ] && [ -z "$(cat "$leaf/cgroup.procs")" ] && { r=1; why="no process in $leaf"; }
  local stats; stats=$("$MH_SHARE/cri-client" "$sock" stats "$sb" "$ct") || { r=1; why="stats failed"; }
  for k in container-memory container-cpu sandbox-memory sandbox-cpu; do
    [ "$r" = 0 ] && ! echo "$stats" | awk -v k="$k" '$1 == k && $2 > 0 {f=1} END {exit !f}' && { r=1; why="$k is not > 0: $stats"; }
  done
  "$MH_SHARE/cri-client" "$sock" stop "$sb" "$ct" || { r=1; why="$why; stop failed"; }
  kill "$cri"; wait "$cri" 2>/dev/null
  [ "$r" = 0 ] || die "$why"
  left=$(find /sys/fs/cgroup/kubepods* -type d -path '*orbit*' 2>/dev/null)
  [ -z "$left" ] || die "cgroups left after the sandbox's removal: $left"
  echo "$stats" | tr '\n' ' '
}

# The kubelet's systemd cgroup driver: the sandbox's service in the pod's slice.
t_cri_systemd() {
  cri_pod "" kubepods-burstable-pod0123abcd.slice \
    '*/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0123abcd.slice/orbit-*.service/orbit/*/*'
}

# The cgroupfs driver: the sandbox in orbit-<uuid> below the kubelet's path.
t_cri_cgroupfs() {
  cri_pod --systemd=no /kubepods/burstable/pod4567 '/sys/fs/cgroup/kubepods/burstable/pod4567/orbit-*/orbit/*/*'
}

t_gc_leaves_nothing() {
  "$ORBIT" gc --grace-period=0 >/dev/null 2>&1 || return 1
  local left
  left=$(find /sys/fs/cgroup -type d -path '*/orbit/*' 2>/dev/null)
  [ -z "$left" ] || die "cgroups left: $left"
  left=$(grep "$ORBIT_DIR" /proc/self/mountinfo)
  [ -z "$left" ] || die "mounts left: $left"
  left=$(find "$ORBIT_DIR/pods" -mindepth 2 -maxdepth 2 2>/dev/null)
  [ -z "$left" ] || die "pods left: $left"
  left=$(machinectl list --no-legend | grep orbit-)
  [ -z "$left" ] || die "machines left: $left"
  left=$(ip netns list 2>/dev/null; ls /run/netns 2>/dev/null)
  [ -z "$left" ] || die "netns left: $left"
  left=$(nft list table inet orbit 2>/dev/null | grep "orbit pod")
  [ -z "$left" ] || die "per-pod nft rules left: $left"
}

echo "orbit $("$ORBIT" version 2>/dev/null | head -1)"
check host t_host
check fetch t_fetch
check overlay-missing t_overlay_missing
check ns-pod t_ns_pod
check fly-pod t_fly_pod
check cgroup-layout t_cgroup_layout
check oom t_oom
check pids-limit t_pids_limit
check devices t_devices
check private-users t_private_users
check mutable-pod t_mutable
check systemd-scope t_systemd_scope
check systemd-service t_systemd_service
check unit-file t_unit_file
check failed-start t_failed_start_leaves_nothing
check kill-9 t_kill9
check net-default-port t_net_default_port
check cri-systemd t_cri_systemd
check cri-cgroupfs t_cri_cgroupfs
check gc t_gc_leaves_nothing
echo "suite: $fails failed in $(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", b-a}') s"
[ "$fails" = 0 ]
