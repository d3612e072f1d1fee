#!/usr/bin/env bash
# images.sh REGISTRY WORKDIR BUSYBOX_DEB — offline stand-ins for every image critest (cri-tools v1.32)
# pulls, pushed to the plain-HTTP registry REGISTRY (host:port) under the upstream repository
# paths, so a registries.conf mirror (orbit) or hosts.toml (containerd) serves them under
# their real names:
#   registry.k8s.io/<path> -> REGISTRY/<path>      gcr.io/<path> -> REGISTRY/<path>
# Built with umoci from Debian's busybox plus two tiny static C programs (nginx.c, nnp.c),
# modelled on what cri-tools' images/ recipes put in each image.
set -euo pipefail
REG=${1:?registry host:port}; W=${2:?work dir}; DEB=$(realpath "${3:?Debian busybox .deb}")
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$W"; mkdir -p "$W"; cd "$W"
gcc -static -Os -o nginx "$HERE/nginx.c"
gcc -static -Os -o nnp "$HERE/nnp.c"
# Debian's dynamically linked busybox (not busybox-static, whose shell runs applets in-process
# and so ignores a masked /bin/ls: critest's MaskedPaths spec), with its libraries.
dpkg-deb -x "$DEB" bb
BB=$W/bb/bin/busybox
L=$W/layout
umoci init --layout "$L" >/dev/null
umoci new --image "$L:base" >/dev/null
umoci unpack --image "$L:base" b >/dev/null
R=b/rootfs
mkdir -p $R/bin $R/etc $R/tmp $R/root $R/var/www $R/var/run $R/usr/bin $R/usr/sbin $R/sbin $R/usr/local/bin
chmod 1777 $R/tmp
cp "$BB" $R/bin/busybox
for lib in $(ldd "$BB" | grep -o '/[^ ]*'); do
  mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"
done
# applets as hard links, as in the real busybox images (MaskedPaths masks /bin/ls)
for a in $("$BB" --list); do [ -e $R/bin/$a ] || ln $R/bin/busybox $R/bin/$a; done
# Debian's busybox lacks pgrep (execSync-timeout spec: `pgrep sleep`) and ipcs (HostIpc specs)
cat > $R/bin/pgrep <<'PG'
#!/bin/sh
# pgrep stand-in: the pids whose process name matches the extended regex $1
rc=1
for d in /proc/[0-9]*; do
  n=$(cat "$d/comm" 2>/dev/null) || continue
  if echo "$n" | grep -qE -- "$1"; then echo "${d#/proc/}"; rc=0; fi
done
exit $rc
PG
cat > $R/bin/ipcs <<'IP'
#!/bin/sh
# ipcs -m stand-in: the shared memory segments of this IPC namespace (shmid is column 2)
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch"
tail -n +2 /proc/sysvipc/shm 2>/dev/null | while read key shmid perms size cpid lpid nattch uid rest; do
  printf '0x%08x %-10s %-10s %-10s %-10s %s\n' "$key" "$shmid" "$uid" "$perms" "$size" "$nattch"
done
IP
chmod 755 $R/bin/pgrep $R/bin/ipcs
printf 'root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n' > $R/etc/passwd
printf 'root:x:0:\ndaemon:x:1:\nwww-data:x:33:\nnogroup:x:65534:\n' > $R/etc/group
echo '<html><body>Welcome to nginx (busybox httpd stand-in)</body></html>' > $R/var/www/index.html
umoci repack --image "$L:base" b >/dev/null
umoci config --image "$L:base" --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --config.cmd sh >/dev/null
rm -rf b

derive() { local t=$1; shift; umoci config --image "$L:base" --tag "$t" "$@" >/dev/null; }
variant() { rm -rf "$W/v"; umoci unpack --image "$L:base" "$W/v" >/dev/null; }
repack() { umoci repack --image "$L:$1" "$W/v" >/dev/null; rm -rf "$W/v"; }
addfile() { # addfile TAG NAME: a layer with /NAME (unpack + repack: Debian's umoci 0.4.7
  # `insert` writes a truncated tar)
  umoci unpack --image "$L:$1" "$W/add" >/dev/null; echo "$2" > "$W/add/rootfs/$2"
  umoci repack --image "$L:$1" "$W/add" >/dev/null; rm -rf "$W/add"
}
derive busybox
variant; cp nginx "$W/v/rootfs/usr/sbin/nginx"; repack nginx
umoci config --image "$L:nginx" --config.cmd /usr/sbin/nginx --config.cmd -g --config.cmd 'daemon off;' >/dev/null
umoci config --image "$L:nginx" --tag hostnet --config.env NGINX_PORT=12003 >/dev/null
derive httpd --config.cmd sh --config.cmd -c --config.cmd 'echo "httpd: busybox httpd stand-in listening on :80" >&2; exec httpd -f -p 80 -h /var/www'
variant; cp nnp "$W/v/rootfs/usr/local/bin/nnp"; chmod 4755 "$W/v/rootfs/usr/local/bin/nnp"; repack nonewprivs
umoci config --image "$L:nonewprivs" --config.cmd /usr/local/bin/nnp >/dev/null
derive user-uid            --config.user 1002
derive user-username       --config.user www-data
derive user-uid-group      --config.user 1003:1004
derive user-username-group --config.user www-data:1004
variant   # user 1000 in a group 50000 that only the image's /etc/group defines
echo 'default-user:x:1000:1000::/home/default-user:/bin/sh' >> "$W/v/rootfs/etc/passwd"
printf 'default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n' >> "$W/v/rootfs/etc/group"
mkdir -p "$W/v/rootfs/home/default-user"
repack predefined-group
umoci config --image "$L:predefined-group" --config.user 1000 >/dev/null
for t in test-image-1 test-image-2 test-image-3 test-image-latest test-image-digest; do
  derive $t; addfile $t $t
done
derive same-image; addfile same-image same-image
derive tag-test; addfile tag-test test
derive tag-all; addfile tag-all all
# containerd's sandboxes need a pause image (orbit's do not)
derive pause --config.cmd sh --config.cmd -c --config.cmd 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait; done'

push() { skopeo copy --quiet --dest-tls-verify=false "oci:$L:$1" "docker://$REG/$2"; }
E=e2e-test-images S=k8s-staging-cri-tools
push busybox    $E/busybox:1.29-2
push nginx      $E/nginx:1.14-2
push httpd      $E/httpd:2.4.39-4
push nonewprivs $E/nonewprivs:1.3
push hostnet    $S/hostnet-nginx-amd64:latest
push pause      pause:3.10
for t in user-uid user-username user-uid-group user-username-group predefined-group; do
  push $t $S/test-image-$t:latest
done
for t in test-image-1 test-image-2 test-image-3 test-image-latest test-image-digest; do push $t $S/$t:latest; done
for n in 1 2 3; do push same-image $S/test-image-tags:$n; done
push tag-test $S/test-image-tag:test
push tag-all  $S/test-image-tag:all
# gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2… is pinned to upstream's
# manifest digest and cannot be made offline: that one spec needs the real registry.
