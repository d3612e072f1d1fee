#!/usr/bin/env bash
# Builds the example image example.com/busybox:latest as an OCI layout in $1 (default
# build/example) from Debian's busybox-static, in two layers (a gzip base with the busybox
# binary, a zstd layer with applet links and /etc), and signs it in place with the DEMO key
# in examples/ (see examples/README.md: that key is public and proves nothing).
#
# Needs: busybox-static installed, `cargo build --release` done (orbit, orbit-build-image).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/build/example}
bin=${ORBIT_BIN_DIR:-$here/target/release}
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "build-example: $busybox missing: apt-get install busybox-static" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base=$work/base etc=$work/etc
mkdir -p "$base/bin" "$etc"/{bin,etc,tmp,root,home,proc,sys,dev,run,var/tmp}
cp "$busybox" "$base/bin/busybox"
chmod 0755 "$base/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$etc/bin/$applet"
done
chmod 1777 "$etc/tmp" "$etc/var/tmp"
chmod 0700 "$etc/root"
printf 'root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nuser:x:1000:1000:user:/home/user:/bin/sh\n' > "$etc/etc/passwd"
printf 'root:x:0:\ndaemon:x:1:\nusers:x:100:user\nuser:x:1000:\nnogroup:x:65534:\n' > "$etc/etc/group"
printf 'ID=busybox\nNAME="orbit example (busybox)"\n' > "$etc/etc/os-release"
printf 'Hello from orbit: a busybox pod, signed, verified and unpacked.\n' > "$etc/etc/motd"

rm -rf "$out"
"$bin/orbit-build-image" --out "$out" --name example.com/busybox:latest \
  --layer "gzip:$base" --layer "zstd:$etc" \
  --env PATH=/bin --cmd /bin/cat --cmd /etc/motd \
  --label orbit.dev/port.http=80/tcp --expose 80/tcp >/dev/null
"$bin/orbit" image sign --key "$here/examples/demo-key.key" "oci:$out" >&2
echo "$out"
