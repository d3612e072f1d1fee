#!/usr/bin/env bash
# Start latency on the modern host: boots the VM of tests/hosts/ (Debian bookworm, systemd as
# PID 1, cgroup v2 only; QEMU under TCG here, so absolute times are several times a real
# host's — compare the ratio) and runs bench/modern-host-guest.sh inside: orbit vs crun in
# one hyperfine run. Prints the guest's lines. Env: RUNS (20), WARMUP (3).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
[ "$(id -u)" = 0 ] || { echo "bench/modern-host.sh: run as root" >&2; exit 1; }
cargo build --release --workspace --quiet
bash tests/hosts/modern-host.sh build
share=$(mktemp -d); out=$(mktemp -d)
trap 'rm -rf "$share" "$out"' EXIT
ORBIT_BIN_DIR=$root/target/release images/build-example.sh "$share/example" >/dev/null 2>&1
cp examples/demo-key.pub "$share/"
printf 'RUNS=%s\nWARMUP=%s\n' "${RUNS:-20}" "${WARMUP:-3}" > "$share/env"
MH_TEST_TIMEOUT=900 MH_RUN_TIMEOUT=1100 bash tests/hosts/modern-host.sh run target/release/orbit bench/modern-host-guest.sh "$out" "$share" >&2
[ "$(cat "$out/rc" 2>/dev/null)" = 0 ] || { echo "bench/modern-host.sh: the guest's bench failed:" >&2; tail -20 "$out/test.err" >&2; exit 1; }
cat "$out/test.out"
