#!/usr/bin/env bash
# modern-host.sh — a MODERN Linux host as a QEMU (TCG) VM, for tests (the project's copy of the
# verified recipe, adapted: the guest also has the CNI plugins, crun, hyperfine and jq, and
# no iptables at all — see customize()): Debian
# bookworm, systemd as PID 1, cgroup v2 only (kernel parameters
# systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all). Independent of the kvm stage1.
#
#   modern-host.sh build
#       Idempotent; cached under $MH_CACHE (default /var/cache/modern-host):
#         debootstrap/   debootstrap --variant=minbase bookworm (systemd, dbus, machined, …)
#         kernel/        Debian's linux-image-amd64 kernel: vmlinuz, the ELF vmlinux inside it
#                        (booted through its PVH entry: no decompression under TCG), modules
#         root.ext4      the root file system: debootstrap + ONLY the needed modules + the runner
#         initrd.gz      busybox initramfs: insmods virtio_pci/virtio_blk/ext4, switch_root
#   modern-host.sh run ORBIT_BINARY TESTSCRIPT OUTDIR [SHAREDIR]
#       Boots the VM (qemu -accel tcg -M pc, 2 vCPUs, 2 GiB; root.ext4 on virtio-blk with
#       snapshot=on: every run starts from the same image and writes nothing back), shares
#       over 9p (virtio):
#         /mh/bin    ORBIT_BINARY (as orbit), the orbit-stage1 beside it, and TESTSCRIPT (as
#                    test.sh), read-only
#         /mh/share  SHAREDIR, read-only (optional)
#         /mh/out    OUTDIR, read-write
#       The unit modern-host-test.service (Type=exec, Delegate=yes, After=multi-user.target)
#       installs them as /usr/local/bin/orbit{,-stage1}, runs `bash test.sh` in the unit's
#       cgroup with ORBIT, MH_SHARE and MH_OUT set, then powers the VM off. OUTDIR gets:
#         test.out test.err rc   the script's stdout, stderr, exit status
#         started boot.txt       guest uptime when the unit started; systemd's startup time
#         journal.txt console.log  the guest's journal and serial console
#       Bounded: the script by MH_TEST_TIMEOUT (default 300 s) inside the guest; the whole run
#       by MH_RUN_TIMEOUT (default 480 s): then QEMU is killed by its PID. Prints the boot time.
#       Exit status: 0 when the script ran and its rc came back (whatever it was), 1 if not.
#
# Knobs: MH_CACHE, MH_MEM (MiB, 2048), MH_SMP (2), MH_TEST_TIMEOUT, MH_RUN_TIMEOUT, MH_STRIP
# (1: share orbit without debug sections), MH_ANALYZE (1: systemd-analyze blame in boot.txt),
# MH_KERNEL_PKG (default: what linux-image-amd64 depends on), MH_MIRROR.
# Needs root (debootstrap, apt-get). Always TCG: /dev/kvm hangs guests on the machine this
# was written on.
set -euo pipefail

C=${MH_CACHE:-/var/cache/modern-host}
SELF=$(readlink -f "$0")
log() { echo "modern-host: $*" >&2; }
die() { log "$*"; exit 1; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
need_pkgs() {
  local miss=() p
  for p in "$@"; do installed "$p" || miss+=("$p"); done
  [ ${#miss[@]} -eq 0 ] && return 0
  log "installing ${miss[*]}"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${miss[@]}" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# build
# Packages of the guest. minbase + what a systemd host that runs containers has.
INCLUDE=systemd,systemd-sysv,udev,dbus,systemd-container,libpam-systemd,iproute2,nftables,kmod,busybox-static,procps,util-linux,containernetworking-plugins,crun,hyperfine,jq
# Modules the initramfs loads to reach the root file system (dependencies added, in order).
INITRD_MODS="virtio_pci virtio_blk crc32c_generic ext4"
# Modules installed into the root file system (plus their dependencies); udev and
# /etc/modules-load.d load them. Everything else of the kernel stays out.
ROOT_MODS="$INITRD_MODS 9pnet_virtio 9p overlay virtio_net virtio_console virtio_rng
  bridge br_netfilter veth tun loop fuse autofs4 nf_tables nft_chain_nat nft_nat nft_masq
  nft_ct nft_fib_inet nft_fib_ipv4 nft_fib_ipv6 nft_reject_inet nf_conntrack nf_nat"
LOAD_MODS="9pnet_virtio 9p overlay bridge br_netfilter veth nf_tables"

mirror() {
  [ -n "${MH_MIRROR:-}" ] && { echo "$MH_MIRROR"; return; }
  local m
  m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
      | grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]*/debian/?' | head -1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

build_debootstrap() {
  local want="bookworm minbase $INCLUDE"
  if [ -f "$C/debootstrap.stamp" ] && [ "$(cat "$C/debootstrap.stamp")" = "$want" ]; then return 0; fi
  need_pkgs debootstrap debian-archive-keyring
  log "debootstrap bookworm (minbase + $INCLUDE) from $(mirror) ..."
  local d="$C/debootstrap.new"
  rm -rf --one-file-system "$d" "$C/debootstrap.stamp"   # a killed debootstrap may leave proc/sys mounted
  debootstrap --variant=minbase --include="$INCLUDE" bookworm "$d" "$(mirror)" \
      >"$C/debootstrap.log" 2>&1 || { tail -20 "$C/debootstrap.log" >&2; die "debootstrap failed (log: $C/debootstrap.log)"; }
  rm -rf "$d/var/cache/apt/archives/"*.deb "$d/var/lib/apt/lists/"* 2>/dev/null || true
  rm -rf "$C/debootstrap"; mv "$d" "$C/debootstrap"
  echo "$want" > "$C/debootstrap.stamp"
}

kernel_pkg() {
  if [ -n "${MH_KERNEL_PKG:-}" ]; then echo "$MH_KERNEL_PKG"; return; fi
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'
}

build_kernel() {
  local pkg ver want
  pkg=$(kernel_pkg); [ -n "$pkg" ] || { apt-get update -qq >/dev/null 2>&1 || true; pkg=$(kernel_pkg); }
  [ -n "$pkg" ] || die "cannot resolve linux-image-amd64 (apt-get update?)"
  ver=$(apt-cache policy "$pkg" | awk '/Candidate/{print $2}')
  want="$pkg $ver"
  if [ -f "$C/kernel.stamp" ] && [ "$(cat "$C/kernel.stamp")" = "$want" ] && [ -s "$C/kernel/vmlinux" ]; then return 0; fi
  log "kernel: $want ..."
  local k="$C/kernel.new"; rm -rf "$k" "$C/kernel.stamp"; mkdir -p "$k/deb"
  (cd "$k/deb" && apt-get download -qq "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
  dpkg-deb -x "$k"/deb/*.deb "$k/x"
  local kver; kver=$(ls "$k/x/lib/modules" | head -1)
  depmod -b "$k/x" "$kver"          # the .deb ships no modules.dep (postinst makes it)
  cp "$k/x/boot/vmlinuz-$kver" "$k/vmlinuz"
  # the uncompressed ELF inside the bzImage: QEMU boots it through its PVH entry, sparing
  # the guest an xz decompression under TCG
  python3 - "$k/vmlinuz" "$k/vmlinux" <<'PY'
import sys, lzma
data = open(sys.argv[1], 'rb').read()
i = data.find(b'\xfd7zXZ\x00')
out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[i:]) if i >= 0 else b''
if out[:4] != b'\x7fELF':
    sys.exit('no xz-compressed ELF kernel inside ' + sys.argv[1])
open(sys.argv[2], 'wb').write(out)
PY
  cp "$k/x/boot/config-$kver" "$k/config"
  echo "$kver" > "$k/kernel.version"
  rm -rf "$k/deb"
  rm -rf "$C/kernel"; mv "$k" "$C/kernel"
  echo "$want" > "$C/kernel.stamp"
}

# mod_closure MOD... : module files (relative to lib/modules/KVER), dependencies first, once each
mod_closure() {
  local kver; kver=$(cat "$C/kernel/kernel.version")
  local m
  for m in "$@"; do
    modprobe -d "$C/kernel/x" -S "$kver" --show-depends "$m" 2>/dev/null \
      || die "module $m: not in $kver"
  done | awk -v r="$C/kernel/x/lib/modules/$kver/" '$1=="insmod"{p=$2; sub(r,"",p); if(!seen[p]++) print p}'
}

build_initrd() { # $1 = output
  local i="$C/initrd.d" kver; kver=$(cat "$C/kernel/kernel.version")
  rm -rf "$i"; mkdir -p "$i"/{bin,dev,proc,sys,newroot,lib/modules}
  cp /bin/busybox "$i/bin/busybox"
  local f
  for f in $(mod_closure $INITRD_MODS); do
    cp "$C/kernel/x/lib/modules/$kver/$f" "$i/lib/modules/"
    basename "$f" >> "$i/lib/modules/order"
  done
  cat > "$i/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m || echo "initrd: insmod $m failed"; done
root=/dev/vda; init=/sbin/init
for a in $(cat /proc/cmdline); do case $a in root=*) root=${a#root=};; init=*) init=${a#init=};; esac; done
i=0; while [ ! -b "$root" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
if ! mount -t ext4 -o rw "$root" /newroot; then
  echo "initrd: cannot mount $root"; ls /dev; sleep 1; poweroff -f
fi
mount --move /dev /newroot/dev; umount /sys /proc
exec switch_root /newroot "$init"
EOF
  chmod 755 "$i/init"
  (cd "$i" && find . | cpio -o -H newc --quiet | gzip -6) > "$1"
  rm -rf "$i"
}

# The guest's test runner, run by modern-host-test.service.
runner_script() { cat <<'EOF'
#!/bin/bash
# modern-host test runner (modern-host-test.service): mounts the 9p shares, installs orbit,
# runs /mh/bin/test.sh bounded by MH_TEST_TIMEOUT, leaves everything in /mh/out. The unit
# powers the machine off when this exits.
up() { cut -d' ' -f1 /proc/uptime; }
modprobe -a 9pnet_virtio 9p
tags=$(cat /sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag 2>/dev/null | tr '\0' ' ')
m9() { mkdir -p "$2"; mount -t 9p -o "trans=virtio,version=9p2000.L,msize=512000,$3" "$1" "$2"; }
m9 mhout /mh/out rw || { echo "mh-runner: cannot mount the out share (tags: $tags)"; exit 1; }
echo "$(up)" > /mh/out/started
m9 mhbin /mh/bin ro || { echo "mh-runner: cannot mount mhbin" > /mh/out/runner.err; exit 1; }
case " $tags " in *" mhshare "*) m9 mhshare /mh/share ro ;; esac
[ -f /mh/bin/env ] && . /mh/bin/env
t0=$(up)
for b in /mh/bin/orbit*; do install -m 0755 "$b" /usr/local/bin/; done
echo "orbit copied in $(echo "$(up) $t0" | awk '{printf "%.1f", $1-$2}') s" > /mh/out/runner.log
export ORBIT=/usr/local/bin/orbit MH_SHARE=/mh/share MH_OUT=/mh/out PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
echo "test start: uptime $(up) s" >> /mh/out/runner.log
timeout -k 10 "${MH_TEST_TIMEOUT:-300}" /bin/bash /mh/bin/test.sh >/mh/out/test.out 2>/mh/out/test.err </dev/null
rc=$?
echo "test end: uptime $(up) s, rc $rc" >> /mh/out/runner.log
journalctl -b --no-pager -o short-monotonic > /mh/out/journal.txt 2>&1
# (systemd-analyze takes ~10 s a call under TCG: the journal's line instead; MH_ANALYZE=1 for more)
{ echo "guest uptime at unit start: $(cat /mh/out/started) s"; grep -m1 -o 'Startup finished.*' /mh/out/journal.txt
  if [ "${MH_ANALYZE:-0}" = 1 ]; then systemd-analyze critical-chain modern-host-test.service; systemd-analyze blame | head -25; fi
} > /mh/out/boot.txt 2>&1
echo "$rc" > /mh/out/rc
sync
exit 0
EOF
}

customize() { # $1 = root dir (a copy of debootstrap/)
  local r=$1 kver; kver=$(cat "$C/kernel/kernel.version")
  echo modern-host > "$r/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 modern-host\n::1 localhost ip6-localhost ip6-loopback\n' > "$r/etc/hosts"
  printf '/dev/vda / ext4 rw,errors=remount-ro 0 0\n' > "$r/etc/fstab"
  # A fixed machine id: not a first boot (systemd-firstboot would prompt on the console).
  echo 6d6f6465726e2d686f73742d30303031 > "$r/etc/machine-id"
  ln -sf /lib/systemd/system/multi-user.target "$r/etc/systemd/system/default.target"
  local u
  for u in serial-getty@ttyS0.service getty@tty1.service systemd-firstboot.service \
           apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
           systemd-timesyncd.service; do
    ln -sf /dev/null "$r/etc/systemd/system/$u"
  done
  # Only the needed modules of Debian's kernel.
  rm -rf "$r/lib/modules"; mkdir -p "$r/lib/modules/$kver"
  local f
  for f in $(mod_closure $ROOT_MODS); do
    mkdir -p "$r/lib/modules/$kver/$(dirname "$f")"
    cp "$C/kernel/x/lib/modules/$kver/$f" "$r/lib/modules/$kver/$f"
  done
  cp "$C/kernel/x/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$r/lib/modules/$kver/"
  depmod -b "$r" "$kver"
  printf '%s\n' $LOAD_MODS > "$r/etc/modules-load.d/modern-host.conf"
  # nftables only: Debian's CNI plugins depend on iptables (iptables-nft), but a host may
  # have none; orbit's own firewall rules must work without it.
  chroot "$r" dpkg --purge --force-depends iptables >/dev/null 2>&1 || die "cannot purge iptables in the guest"
  [ ! -e "$r/usr/sbin/iptables" ] || die "iptables still in the guest"
  # The test runner and its unit.
  runner_script > "$r/usr/local/sbin/mh-runner"; chmod 755 "$r/usr/local/sbin/mh-runner"
  cat > "$r/etc/systemd/system/modern-host-test.service" <<'EOF'
[Unit]
Description=modern-host: run the shared test script, then power off
# after boot: multi-user.target wants this unit, and it starts once the target is reached
After=multi-user.target dbus.socket systemd-modules-load.service
Wants=dbus.socket
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=exec
ExecStart=/usr/local/sbin/mh-runner
Delegate=yes
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
  ln -sf /etc/systemd/system/modern-host-test.service "$r/etc/systemd/system/multi-user.target.wants/modern-host-test.service"
}

build() {
  [ "$(id -u)" = 0 ] || die "build needs root"
  mkdir -p "$C"
  need_pkgs qemu-system-x86 busybox-static cpio e2fsprogs kmod
  build_debootstrap
  build_kernel
  local want; want="$(cat "$C/debootstrap.stamp") | $(cat "$C/kernel.stamp") | $(sha256sum "$SELF" | cut -c1-16)"
  if [ -f "$C/image.stamp" ] && [ "$(cat "$C/image.stamp")" = "$want" ] && [ -s "$C/root.ext4" ] && [ -s "$C/initrd.gz" ]; then
    log "build: up to date ($(cat "$C/kernel/kernel.version"))"; return 0
  fi
  log "image: root.ext4 + initrd.gz ..."
  rm -f "$C/image.stamp"
  local s="$C/stage"; rm -rf "$s"; cp -a "$C/debootstrap" "$s"
  customize "$s"
  local mb; mb=$(du -sm "$s" | cut -f1)
  rm -f "$C/root.ext4.new"
  # room for orbit (~200 MB), its store and pods; the file is sparse
  mke2fs -q -t ext4 -L mh-root -d "$s" "$C/root.ext4.new" "$((mb + 2048))M" >/dev/null
  build_initrd "$C/initrd.gz.new"
  mv "$C/root.ext4.new" "$C/root.ext4"; mv "$C/initrd.gz.new" "$C/initrd.gz"
  rm -rf "$s"
  echo "$want" > "$C/image.stamp"
  log "build: done ($(cat "$C/kernel/kernel.version"), root $(du -sh --apparent-size "$C/root.ext4" | cut -f1) sparse / $(du -sh "$C/root.ext4" | cut -f1) used)"
}

# ---------------------------------------------------------------------------------------------
# run
run() {
  [ $# -ge 3 ] || die "usage: $0 run ORBIT_BINARY TESTSCRIPT OUTDIR [SHAREDIR]"
  local bin=$1 script=$2 out=$3 share=${4:-}
  [ -x "$bin" ] || die "no executable $bin"; [ -f "$script" ] || die "no test script $script"
  [ -s "$C/root.ext4" ] && [ -f "$C/image.stamp" ] || die "not built: run '$0 build' first"
  local qemu; qemu=$(command -v qemu-system-x86_64) || die "no qemu-system-x86_64"
  mkdir -p "$out"; out=$(cd "$out" && pwd)
  rm -f "$out"/{test.out,test.err,rc,started,boot.txt,journal.txt,console.log,runner.log,runner.err}
  local rdir; rdir=$(mktemp -d "$C/run.XXXXXX")
  mkdir -p "$rdir/bin"
  # orbit runs its built-in stage1s from the orbit-stage1 beside it: both go in.
  local stage1; stage1=$(dirname "$bin")/orbit-stage1
  [ -x "$stage1" ] || die "no executable $stage1 beside $bin (cargo build --release --workspace)"
  # Copies without debug sections (same code; 175 MB -> ~25 MB for a release build): the guest
  # installs them over 9p at ~10 MB/s under TCG. MH_STRIP=0 shares the binaries as they are.
  local b
  for b in "$bin:orbit" "$stage1:orbit-stage1"; do
    if [ "${MH_STRIP:-1}" = 1 ] && command -v objcopy >/dev/null; then
      objcopy --strip-debug "${b%:*}" "$rdir/bin/${b#*:}" || cp "${b%:*}" "$rdir/bin/${b#*:}"
    else
      cp "${b%:*}" "$rdir/bin/${b#*:}"
    fi
  done
  cp "$script" "$rdir/bin/test.sh"
  printf 'MH_TEST_TIMEOUT=%s\nMH_ANALYZE=%s\n' "${MH_TEST_TIMEOUT:-300}" "${MH_ANALYZE:-0}" > "$rdir/bin/env"
  local share_args=()
  if [ -n "$share" ]; then
    [ -d "$share" ] || die "no directory $share"
    share_args=(-fsdev "local,id=mhshare,path=$(cd "$share" && pwd),security_model=none,readonly=on"
                -device virtio-9p-pci,fsdev=mhshare,mount_tag=mhshare)
  fi
  local cmdline="console=ttyS0,115200 root=/dev/vda rw systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all"
  cmdline+=" panic=-1 mitigations=off"
  local t0; t0=$(date +%s.%N)
  # TCG always: -accel tcg (KVM hangs guests here). snapshot=on: the image is never written.
  TMPDIR="$rdir" "$qemu" -accel tcg,thread=multi -M pc -cpu max -smp "${MH_SMP:-2}" -m "${MH_MEM:-2048}" \
    -nodefaults -no-user-config -display none -nic none -no-reboot \
    -kernel "$C/kernel/vmlinux" -initrd "$C/initrd.gz" -append "$cmdline" \
    -drive "file=$C/root.ext4,if=virtio,format=raw,snapshot=on" \
    -device virtio-rng-pci \
    -fsdev "local,id=mhbin,path=$rdir/bin,security_model=none,readonly=on" -device virtio-9p-pci,fsdev=mhbin,mount_tag=mhbin \
    -fsdev "local,id=mhout,path=$out,security_model=none" -device virtio-9p-pci,fsdev=mhout,mount_tag=mhout \
    "${share_args[@]}" \
    -serial "file:$out/console.log" -pidfile "$rdir/qemu.pid" \
    </dev/null >"$rdir/qemu.log" 2>&1 &
  local qpid=$! deadline booted=""
  # never leave the VM (or its run directory) behind, whatever ends this script
  trap 'kill -9 '"$qpid"' 2>/dev/null; rm -rf '"$rdir" EXIT
  deadline=$(( $(date +%s) + ${MH_RUN_TIMEOUT:-480} ))
  while kill -0 "$qpid" 2>/dev/null; do
    if [ -z "$booted" ] && [ -s "$out/started" ]; then
      booted=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
      log "booted: test unit started ${booted} s after QEMU start (guest uptime $(cat "$out/started") s; TCG)"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "run timeout (${MH_RUN_TIMEOUT:-480} s): killing QEMU pid $qpid"
      kill "$qpid" 2>/dev/null || true; sleep 2; kill -9 "$qpid" 2>/dev/null || true
      break
    fi
    sleep 0.5
  done
  wait "$qpid" 2>/dev/null || true
  trap - EXIT
  local total; total=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  [ -s "$rdir/qemu.log" ] && cp "$rdir/qemu.log" "$out/qemu.log"
  rm -rf "$rdir"
  if [ -z "$booted" ]; then
    log "the VM never started the test unit (${total} s); QEMU and console tails:"
    tail -5 "$out/qemu.log" 2>/dev/null | sed 's/^/  q| /' >&2; tail -15 "$out/console.log" 2>/dev/null | sed 's/^/  | /' >&2
    return 1
  fi
  [ -f "$out/boot.txt" ] && log "$(grep -m1 'Startup finished' "$out/boot.txt" || true)"
  if [ ! -s "$out/rc" ]; then
    log "no result came back (${total} s in all); console tail:"; tail -15 "$out/console.log" 2>/dev/null | sed 's/^/  | /' >&2
    return 1
  fi
  log "test script rc $(cat "$out/rc"); whole run ${total} s"
}

case "${1:-}" in
  build) build ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 build | run ORBIT_BINARY TESTSCRIPT OUTDIR [SHAREDIR]" >&2; exit 2 ;;
esac
