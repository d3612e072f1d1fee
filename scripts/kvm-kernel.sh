#!/usr/bin/env bash
# kvm-kernel.sh [OUTDIR] — the guest kernel of orbit's `kvm` stage1, for
# `qemu-system-x86_64 -M microvm` (also installs QEMU from bookworm-backports).
# OUTDIR defaults to /usr/lib/orbit/kvm, where orbit looks (after /etc/orbit/kvm and
# ~/.config/orbit/kvm); `orbit run --kvm-kernel=OUTDIR/vmlinux` uses another.
#
#   OUTDIR/vmlinux          uncompressed ELF kernel (microvm cannot boot a bzImage)
#   OUTDIR/modules/*.ko     the virtio / 9p / virtiofs / vsock / virtio-console modules,
#                           uncompressed (.ko.xz/.ko.zst are decompressed)
#   OUTDIR/modules/order    module basenames in insmod order (dependencies first);
#                           modules built into the kernel are left out
#   OUTDIR/modules/on-demand/*.ko, modules.dep
#                           modules the guest loads only when an app asks the kernel for
#                           them (a bridge for a CAP_NET_ADMIN app: the kernel runs
#                           /sbin/modprobe, busybox's, which reads this modules.dep)
#   OUTDIR/kernel.version   e.g. 6.1.0-56-amd64
#
# Idempotent: installs only missing packages, re-extracts only when the kernel changed.
# Root needed only for apt-get. Env knobs:
#   VM_KERNEL_SUITE=                    (default: apt's candidate, 6.1 from bookworm-security,
#                                       plain .ko) or VM_KERNEL_SUITE=bookworm-backports
#                                       (6.12, ships .ko.xz — exercised the xz path)
#   VM_KERNEL_MODULES="..."             the wanted modules; their dependencies are added from
#                                       modules.dep (depmod -b), dependencies first
#   VM_KERNEL_ON_DEMAND="..."           the modules loaded on demand (with their dependencies
#                                       that are not loaded at boot)
set -euo pipefail

OUT=${1:-/usr/lib/orbit/kvm}
SUITE=${VM_KERNEL_SUITE:-}        # empty: the default candidate (bookworm + bookworm-security)
tsuite=(); [ -n "$SUITE" ] && tsuite=(-t "$SUITE")
MODS=${VM_KERNEL_MODULES:-"virtio_mmio virtio_pci 9pnet_virtio 9p virtiofs vmw_vsock_virtio_transport virtio_console virtio_net"}
ON_DEMAND=${VM_KERNEL_ON_DEMAND:-"bridge veth dummy 8021q"}

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
apt_install() {   # apt_install [-t SUITE] PKG... ; retries while another apt holds the lock
  for i in $(seq 1 20); do
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" && return 0
    echo "apt-get install $* failed (dpkg lock held?), retry $i/20" >&2; sleep 15
  done
  return 1
}
need=()
for p in busybox-static cpio python3 xz-utils zstd kmod; do installed "$p" || need+=("$p"); done
has_bpo() { case "$(apt-cache policy qemu-system-x86 2>/dev/null)" in *backports*) return 0;; esac; return 1; }
if ! installed qemu-system-x86 || ! has_bpo; then
  [ "$(id -u)" = 0 ] || { echo "need root to install packages" >&2; exit 1; }
  if ! has_bpo; then
    . /etc/os-release
    # The mirror the machine already uses (comment lines, e.g. snapshot URLs, do not count).
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
             | grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]*/debian/?' | head -1 || true)
    printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "${mirror:-http://deb.debian.org/debian}" "$VERSION_CODENAME" > /etc/apt/sources.list.d/backports.sources
    apt-get update -qq
  fi
  # backports: a preinstalled qemu-utils from backports makes bookworm's 7.2 uninstallable
  installed qemu-system-x86 || apt_install -t bookworm-backports qemu-system-x86
fi
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "need root to install: ${need[*]}" >&2; exit 1; }
  apt_install "${need[@]}"
fi

# Which kernel package does linux-image-amd64 point to in $SUITE?
pkg=$(apt-cache depends "${tsuite[@]}" linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$pkg" ] || { echo "cannot resolve linux-image-amd64 in $SUITE (apt-get update?)" >&2; exit 1; }
stamp="$pkg $(apt-cache policy "$pkg" | awk '/Candidate/{print $2}') $MODS / $ON_DEMAND / layout 2"  # layout: bump when OUTDIR's contents change

if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$stamp" ] && [ -s "$OUT/vmlinux" ]; then
  :
else
  cache="$OUT/.cache"; rm -rf "$cache"; mkdir -p "$cache"
  (cd "$cache" && apt-get download -qq "${tsuite[@]}" "$pkg" 2>&1 | grep -v 'unsandboxed' || true)
  deb=$(ls "$cache"/*.deb)
  dpkg-deb -x "$deb" "$cache/x"
  kver=$(ls "$cache/x/lib/modules" | head -1)
  bz=$(ls "$cache"/x/boot/vmlinuz-* | head -1)
  # bzImage -> vmlinux: find the compressed payload by magic and decompress it.
  python3 - "$bz" "$OUT/vmlinux.tmp" <<'PY'
import sys, lzma, zlib
data = open(sys.argv[1], 'rb').read()
out = None
i = data.find(b'\xfd7zXZ\x00')
if i >= 0:
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ); out = d.decompress(data[i:])
if out is None or out[:4] != b'\x7fELF':
    i = data.find(b'\x28\xb5\x2f\xfd')           # zstd
    if i >= 0:
        import subprocess
        out = subprocess.run(['zstd', '-dc'], input=data[i:], capture_output=True).stdout
if out is None or out[:4] != b'\x7fELF':
    i = data.find(b'\x1f\x8b\x08\x00')           # gzip
    if i >= 0:
        out = zlib.decompressobj(31).decompress(data[i:])
if out is None or out[:4] != b'\x7fELF':
    sys.exit('no ELF kernel found inside ' + sys.argv[1])
open(sys.argv[2], 'wb').write(out)
PY
  mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"
  rm -rf "$OUT/modules"; mkdir -p "$OUT/modules"
  mroot="$cache/x/lib/modules/$kver"
  depmod -b "$cache/x" "$kver"     # the .deb ships no modules.dep (postinst makes it)
  # wanted modules + their dependencies, dependencies first; built-ins are skipped.
  # Lines: "boot NAME PATH" (insmod at boot, in order), then "demand NAME PATH DEPS..."
  # (on-demand modules and the dependencies boot does not load).
  python3 - "$mroot" "$MODS" "$ON_DEMAND" > "$cache/list" <<'PY'
import sys, os, re
root, boot, demand = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
norm = lambda n: n.replace('-', '_')
name = lambda p: norm(re.sub(r'\.ko(\.xz|\.zst|\.gz)?$', '', os.path.basename(p)))
deps, path = {}, {}
for line in open(os.path.join(root, 'modules.dep')):
    mod, _, rest = line.partition(':')
    deps[name(mod)] = [name(d) for d in rest.split()]
    path[name(mod)] = mod
builtin = {name(l.strip()) for l in open(os.path.join(root, 'modules.builtin'))}
seen = set()
def resolve(want):
    order = []
    def visit(m):
        if m in seen: return
        seen.add(m)
        if m in builtin: return
        if m not in deps: sys.exit('module %s: neither built in nor in modules.dep' % m)
        for d in reversed(deps[m]): visit(d)
        order.append(m)
    for m in want: visit(norm(m))
    return order
at_boot = resolve(boot)
for m in at_boot: print('boot', m, os.path.join(root, path[m]))
for m in resolve(demand):
    print('demand', m, os.path.join(root, path[m]), *[d for d in deps[m] if d not in at_boot and d not in builtin])
PY
  mkdir -p "$OUT/modules/on-demand"
  : > "$OUT/modules/order"
  : > "$OUT/modules/on-demand/modules.dep"
  while read -r when m f rest; do
    dir="$OUT/modules"; [ "$when" = demand ] && dir="$OUT/modules/on-demand"
    case "$f" in
      *.ko.xz)  xz -dc "$f"    > "$dir/$m.ko" ;;
      *.ko.zst) zstd -qdc "$f" > "$dir/$m.ko" ;;
      *.ko.gz)  gzip -dc "$f"  > "$dir/$m.ko" ;;
      *)        cp "$f" "$dir/$m.ko" ;;
    esac
    if [ "$when" = boot ]; then
      echo "$m" >> "$OUT/modules/order"
    else   # busybox modprobe's modules.dep: paths relative to the modules directory
      line="$m.ko:"; for d in $rest; do line="$line $d.ko"; done
      echo "$line" >> "$OUT/modules/on-demand/modules.dep"
    fi
  done < "$cache/list"
  # their aliases (`ip link add … type bridge` asks for rtnl-link-bridge), as modprobe.d lines
  while IFS=: read -r m _; do
    grep -E " ${m%.ko}\$" "$mroot/modules.alias" || true
  done < "$OUT/modules/on-demand/modules.dep" > "$OUT/modules/on-demand/modules.alias"
  cp "$cache"/x/boot/config-* "$OUT/config"
  echo "$kver" > "$OUT/kernel.version"
  rm -rf "$cache"
  echo "$stamp" > "$OUT/.stamp"
fi

echo "kernel  $(cat "$OUT/kernel.version")"
echo "vmlinux $OUT/vmlinux"
while read -r m; do echo "module  $OUT/modules/$m.ko"; done < "$OUT/modules/order"
while IFS=: read -r m _; do echo "module  $OUT/modules/on-demand/$m (on demand)"; done < "$OUT/modules/on-demand/modules.dep"
