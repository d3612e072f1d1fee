#!/usr/bin/env bash
# The README's second command (and CI's): installs what the tests need, checks formatting and
# lints, builds, and runs the whole test suite as root against the real kernel and tools.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh busybox-static skopeo umoci openssl zstd ca-certificates iproute2 iptables nftables containernetworking-plugins docker-registry apache2-utils \
  systemd dbus-daemon dbus-user-session systemd-container
[ "$(id -u)" = 0 ] || { echo "tests/run.sh: run as root (the tests use mounts, namespaces and chown)" >&2; exit 1; }
# QEMU (bookworm-backports) and the kvm stage1's guest kernel, made once and kept.
scripts/kvm-kernel.sh /var/cache/orbit-kvm >/dev/null
export ORBIT_TEST_KVM_KERNEL=/var/cache/orbit-kvm/vmlinux
# The SPDY client the CRI streaming tests drive orbit with (Go, on Debian's spdystream: the
# library under kubectl and crictl, which are not packaged here).
bash tests/streaming-client/build.sh target/orbit-spdy-client
export ORBIT_TEST_SPDY_CLIENT=$PWD/target/orbit-spdy-client
# Sigstore's cosign for the signature tests (Debian trixie's package, unpacked into a cache,
# not installed), and podman, which the export tests load archives into.
scripts/deps.sh curl xz-utils podman
ORBIT_TEST_COSIGN=$(scripts/cosign.sh /var/cache/orbit-test-tools/cosign)
export ORBIT_TEST_COSIGN
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --release --workspace --quiet
export ORBIT_TEST_BIN_DIR=$PWD/target/release
# The modern host: a VM (QEMU, TCG) with systemd as PID 1, cgroup v2 only and nftables
# without iptables, built once and cached; the suite inside is tests/hosts/suite.sh.
cargo build --release --example cri-client --quiet
bash tests/hosts/run.sh "$ORBIT_TEST_BIN_DIR"
cargo test --release --workspace 2>&1
