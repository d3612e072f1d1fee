#!/usr/bin/env bash
# critest.sh — the upstream CRI validation suite (cri-tools' critest) against `orbit cri`,
# offline, and optionally against containerd in the same sitting. Not part of tests/run.sh:
# critest is not packaged for Debian, and orbit never builds or ships it. Build it yourself
# (docs/conformance.md says how) and give its path:
#
#   CRITEST=/path/to/critest bash tests/critest.sh
#
# Without CRITEST this prints why and exits 0 (skipped). Settings (environment):
#   ORBIT=PATH            the orbit binary (default target/release/orbit; the built-in stage1s'
#                         orbit-stage1 must sit beside it, and the guest agent
#                         orbit-kvm-agent too for kvm)
#   CRITEST_HANDLER=kvm   run the sandboxes with that runtime handler (kvm needs
#                         CRITEST_KVM_KERNEL, default /var/cache/orbit-kvm/vmlinux)
#   CRITEST_PEER=containerd   also run the suite against Debian's containerd (with crun) and
#                         print the specs one passes and the other does not
#   CRITEST_FOCUS=RE / CRITEST_SKIP=RE   ginkgo focus / skip (default skip: 'with digest',
#                         the one spec pinned to an upstream image digest)
#   CRITEST_WORK=DIR      work directory (default /var/tmp/orbit-critest)
#
# Everything runs inside a network namespace of its own (orbit-critest): the stand-in
# registry (tests/critest/images.sh) on 127.0.0.1:5000, orbit cri with a store, config
# directories, CNI network (bridge critest0) and socket of its own, and critest. The
# stand-ins keep their upstream names through a registries.conf mirror. Afterwards it checks
# that nothing is left: no pod, mount, cgroup, network namespace or process. Exit status:
# critest's (or 1 if something was left).
set -uo pipefail
if [ -z "${CRITEST:-}" ]; then
  echo "critest: skipped — set CRITEST to a critest binary (cri-tools v1.32.0; docs/conformance.md says how to build it)"
  exit 0
fi
[ -x "$CRITEST" ] || { echo "critest: CRITEST=$CRITEST is not an executable file" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ORBIT=${ORBIT:-$ROOT/target/release/orbit}
[ -x "$ORBIT" ] || { echo "critest: no orbit at $ORBIT (cargo build --release --workspace)" >&2; exit 2; }
[ -x "$(dirname "$ORBIT")/orbit-stage1" ] || { echo "critest: no orbit-stage1 beside $ORBIT (cargo build --release --workspace; copy it with orbit)" >&2; exit 2; }
W=${CRITEST_WORK:-/var/tmp/orbit-critest}
NS=orbit-critest
HANDLER=${CRITEST_HANDLER:-}
SKIP=${CRITEST_SKIP:-with digest}
mkdir -p "$W"

need=()
for p in docker-registry umoci skopeo gcc jq containernetworking-plugins; do
  dpkg -s $p >/dev/null 2>&1 || need+=($p)
done
if [ "${CRITEST_PEER:-}" = containerd ]; then
  for p in containerd crun; do dpkg -s $p >/dev/null 2>&1 || need+=($p); done
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

in_ns() { nsenter --net=/run/netns/$NS "$@"; }  # not `ip netns exec`: it remounts /sys
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  ip netns del $NS 2>/dev/null
}
trap cleanup EXIT
ip netns del $NS 2>/dev/null
ip netns add $NS && in_ns ip link set lo up

# The stand-in registry; images are built once per version of images.sh.
stamp=$(cat "$HERE/critest/images.sh" "$HERE/critest/nginx.c" "$HERE/critest/nnp.c" | sha256sum | cut -c1-16)
printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\nhttp: {addr: 127.0.0.1:5000}\n' \
  "$W/registry" > "$W/registry.yml"
nsenter --net=/run/netns/$NS docker-registry serve "$W/registry.yml" > "$W/registry.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do in_ns bash -c 'exec 3<>/dev/tcp/127.0.0.1/5000' 2>/dev/null && break; sleep 0.1; done
if [ "$(cat "$W/registry/stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "critest: building the stand-in images"
  # (the network namespace has no way out: the busybox package is fetched before)
  mkdir -p "$W/deb" && chmod 755 "$W/deb"
  ls "$W"/deb/busybox_*.deb >/dev/null 2>&1 || (cd "$W/deb" && { apt-get download -qq busybox 2>/dev/null ||
    { apt-get update -qq && apt-get download busybox; }; }) || { echo "critest: cannot download Debian's busybox" >&2; exit 2; }
  in_ns bash "$HERE/critest/images.sh" 127.0.0.1:5000 "$W/images" "$(ls "$W"/deb/busybox_*.deb | head -1)" ||
    { echo "critest: images.sh failed" >&2; exit 2; }
  echo "$stamp" > "$W/registry/stamp"
fi

cat > "$W/registries.conf" <<C
[[registry]]
prefix = "registry.k8s.io"
location = "registry.k8s.io"
[[registry.mirror]]
location = "127.0.0.1:5000"
insecure = true

[[registry]]
prefix = "gcr.io"
location = "gcr.io"
[[registry.mirror]]
location = "127.0.0.1:5000"
insecure = true
C
mkdir -p "$W/net.d"
cat > "$W/net.d/10-critest.conflist" <<C
{"cniVersion": "0.4.0", "name": "critest", "plugins": [
  {"type": "bridge", "bridge": "critest0", "isGateway": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$W/cni-ipam",
            "ranges": [[{"subnet": "10.177.0.0/24", "gateway": "10.177.0.1"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
C

# What exists before, to tell what the run left.
snapshot() {
  { find /sys/fs/cgroup -mindepth 2 -maxdepth 8 -type d -path '*orbit*' 2>/dev/null
    ip netns list | awk '{print "netns " $1}'
    grep -F " $1" /proc/self/mountinfo | awk '{print "mount " $5}'
  } | sort
}

# run_critest NAME SOCKET — critest against SOCKET; report in $W/NAME.json
run_critest() {
  local args=(-runtime-endpoint "unix://$2" -image-endpoint "unix://$2" -ginkgo.no-color
              -ginkgo.json-report "$W/$1.json" -ginkgo.skip "$SKIP")
  [ -n "${CRITEST_FOCUS:-}" ] && args+=(-ginkgo.focus "$CRITEST_FOCUS")
  [ -n "$HANDLER" ] && args+=(-runtime-handler "$HANDLER")
  echo "critest: $1 — log in $W/$1.log"
  in_ns "$CRITEST" "${args[@]}" > "$W/$1.log" 2>&1
  local rc=$?
  tail -n 4 "$W/$1.log" | grep -E 'Passed|Ran ' || true
  return $rc
}
# results FILE — "passed|failed|skipped<TAB>spec" lines from a ginkgo JSON report
results() {
  jq -r '.[].SpecReports[] | select(.LeafNodeType == "It") |
    (if .State == "passed" then "passed" elif .State == "skipped" or .State == "pending" then "skipped" else "failed" end)
    + "\t" + (.ContainerHierarchyTexts | join(" ")) + " :: " + .LeafNodeText' "$1" | sort -t$'\t' -k2
}

# orbit
STORE=$W/orbit-store
rm -rf "$STORE" "$W/cni-ipam" "$W/orbit-cri.sock"; mkdir -p "$STORE" "$W/cfg"
before=$(snapshot "$STORE")
extra=()
[ "$HANDLER" = kvm ] && extra+=(--kvm-kernel="${CRITEST_KVM_KERNEL:-/var/cache/orbit-kvm/vmlinux}")
CONTAINERS_REGISTRIES_CONF=$W/registries.conf nsenter --net=/run/netns/$NS "$ORBIT" --dir "$STORE" \
  --system-config "$W/cfg" --local-config "$W/cfg" --user-config "$W/cfg" --systemd=no \
  cri --socket "$W/orbit-cri.sock" --cni-conf-dir "$W/net.d" --insecure-options=image "${extra[@]}" \
  > "$W/orbit-cri.log" 2>&1 & cri=$!; pids+=($cri)
for _ in $(seq 100); do [ -S "$W/orbit-cri.sock" ] && break; sleep 0.1; done
run_critest orbit "$W/orbit-cri.sock"; rc=$?
kill $cri; while kill -0 $cri 2>/dev/null; do sleep 0.1; done
results "$W/orbit.json" > "$W/orbit.results"
failed=$(grep -P '^failed\t' "$W/orbit.results" | cut -f2 | sed 's/^/  /')
if [ -n "$failed" ]; then echo "critest: orbit failed:"; echo "$failed"; else echo "critest: orbit failed no spec"; fi

left=0
pods=$("$ORBIT" --dir "$STORE" list --format json 2>/dev/null | jq length)
[ "${pods:-0}" = 0 ] || { echo "critest: LEFT: $pods pods in $STORE"; left=1; }
after=$(snapshot "$STORE")
if [ "$before" != "$after" ]; then
  echo "critest: LEFT (cgroups, network namespaces, mounts):"; comm -13 <(echo "$before") <(echo "$after") | sed 's/^/  /'; left=1
fi
# (the pattern from a file: grep's own command line must not hold it)
echo "$STORE" > "$W/store.pattern"
procs=$(grep -lFf "$W/store.pattern" /proc/[0-9]*/cmdline 2>/dev/null | grep -v "/proc/$$/" || true)
[ -z "$procs" ] || { echo "critest: LEFT processes: $procs"; left=1; }
[ $left = 0 ] && echo "critest: nothing left behind by orbit"

if [ "${CRITEST_PEER:-}" = containerd ]; then
  C=$W/containerd; rm -rf "$C"; mkdir -p "$C/net.d"
  for r in registry.k8s.io gcr.io; do
    mkdir -p "$C/certs.d/$r"
    printf 'server = "http://127.0.0.1:5000"\n[host."http://127.0.0.1:5000"]\n  capabilities = ["pull", "resolve"]\n' > "$C/certs.d/$r/hosts.toml"
  done
  sed "s/critest0/ctrdtest0/; s|$W/cni-ipam|$C/cni-ipam|" "$W/net.d/10-critest.conflist" > "$C/net.d/10-critest.conflist"
  cat > "$C/config.toml" <<T
version = 2
root = "$C/root"
state = "$C/state"
[grpc]
  address = "$C/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      BinaryName = "/usr/bin/crun"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$C/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$C/certs.d"
T
  # On a hybrid cgroup host containerd 1.6 wants the v1 layout alone: a private mount
  # namespace without the unified mount. crun, as runc fails here ("can't get final child's PID").
  nsenter --net=/run/netns/$NS unshare -m --propagation private sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; exec containerd --config $C/config.toml" \
    > "$C/containerd.log" 2>&1 & ctrd=$!; pids+=($ctrd)
  for _ in $(seq 100); do [ -S "$C/containerd.sock" ] && break; sleep 0.1; done
  run_critest containerd "$C/containerd.sock"
  kill $ctrd; while kill -0 $ctrd 2>/dev/null; do sleep 0.1; done
  grep -F " $C" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do umount -l "$m"; done
  results "$W/containerd.json" > "$W/containerd.results"
  echo "critest: containerd passes, orbit does not:"
  join -t$'\t' -1 2 -2 2 <(sort -t$'\t' -k2 "$W/containerd.results") <(sort -t$'\t' -k2 "$W/orbit.results") |
    awk -F'\t' '$2 == "passed" && $3 != "passed" {print "  " $1 " (orbit: " $3 ")"}'
  echo "critest: orbit passes, containerd does not:"
  join -t$'\t' -1 2 -2 2 <(sort -t$'\t' -k2 "$W/containerd.results") <(sort -t$'\t' -k2 "$W/orbit.results") |
    awk -F'\t' '$3 == "passed" && $2 != "passed" {print "  " $1 " (containerd: " $2 ")"}'
fi
[ $left = 0 ] || exit 1
exit $rc
