#!/usr/bin/env bash
# The README's first command: installs what it needs, builds orbit, builds and signs the
# example image, trusts the DEMO key for example.com/busybox, fetches the image (signature
# verified, layers unpacked) into the store (ORBIT_DIR, default /var/lib/orbit), and runs a
# pod from it with the default `ns` stage1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh busybox-static ca-certificates iptables containernetworking-plugins
cargo build --release --workspace --quiet
export PATH=$PWD/target/release:$PATH
layout=$(images/build-example.sh build/example)
orbit trust --prefix example.com/busybox examples/demo-key.pub
orbit fetch "oci:$layout"
orbit image list
orbit run example.com/busybox
orbit gc --grace-period=0 >/dev/null
