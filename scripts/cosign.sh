#!/usr/bin/env bash
# cosign.sh [DIR] — Sigstore's `cosign` for the image-signature tests, from Debian trixie's
# `cosign` package (statically linked Go, runs on bookworm). The .deb is downloaded from the
# trixie pool and unpacked into DIR (default /var/cache/orbit-test-tools/cosign); nothing is
# installed on the host and no apt source is added. Idempotent: a second run with the same
# package version only prints the path. Prints the cosign binary's path on stdout.
# Env knobs: ORBIT_DEBIAN_MIRROR (default http://deb.debian.org/debian), COSIGN_SUITE (trixie).
set -euo pipefail
DIR=${1:-/var/cache/orbit-test-tools/cosign}
MIRROR=${ORBIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${COSIGN_SUITE:-trixie}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
bin=$DIR/usr/bin/cosign
# Once extracted, the cached binary is used as is (offline runs keep working).
if [ -x "$bin" ] && [ -f "$DIR/.deb" ]; then echo "$bin"; exit 0; fi
for t in curl xz gpgv; do command -v "$t" >/dev/null || { echo "cosign.sh: needs $t (apt-get install curl xz-utils)" >&2; exit 1; }; done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# The chain apt trusts: InRelease signed by a Debian archive key, it names Packages.xz's
# SHA256, which names the package's.
curl -fsSL --retry 3 -o "$tmp/InRelease" "$MIRROR/dists/$SUITE/InRelease"
gpgv --keyring /usr/share/keyrings/debian-archive-keyring.gpg --output "$tmp/Release" "$tmp/InRelease" 2>/dev/null \
  || { echo "cosign.sh: $MIRROR/dists/$SUITE/InRelease has no valid Debian archive signature" >&2; exit 1; }
want=$(awk '$3 == "main/binary-amd64/Packages.xz" { s = $1 } END { print s }' "$tmp/Release")
curl -fsSL --retry 3 -o "$tmp/Packages.xz" "$MIRROR/dists/$SUITE/main/binary-amd64/Packages.xz"
echo "$want  $tmp/Packages.xz" | sha256sum -c --quiet - || { echo "cosign.sh: Packages.xz does not match the signed InRelease" >&2; exit 1; }
xz -d < "$tmp/Packages.xz" > "$tmp/Packages"
# The stanza of package "cosign": its Filename and SHA256.
read -r file sha < <(awk '
  /^Package: /  { p = ($2 == "cosign") }
  p && /^Filename: / { f = $2 }
  p && /^SHA256: /   { s = $2 }
  /^$/ { if (f != "") { print f, s; exit } p = 0 }
  END { if (f != "") print f, s }' "$tmp/Packages" | head -1)
[ -n "${file:-}" ] || { echo "cosign.sh: no cosign package in $SUITE" >&2; exit 1; }
curl -fsSL --retry 3 -o "$tmp/cosign.deb" "$MIRROR/$file"
echo "$sha  $tmp/cosign.deb" | sha256sum -c --quiet - || { echo "cosign.sh: checksum mismatch for $file" >&2; exit 1; }
dpkg-deb -x "$tmp/cosign.deb" "$tmp/root"
[ -x "$tmp/root/usr/bin/cosign" ] || { echo "cosign.sh: $file has no usr/bin/cosign" >&2; exit 1; }
rm -rf "${DIR:?}/usr"
cp -a "$tmp/root/." "$DIR/"
basename "$file" > "$DIR/.deb"
echo "$bin"
