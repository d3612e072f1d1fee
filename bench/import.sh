#!/usr/bin/env bash
# Import benchmark: orbit fetch (verify signature + store blobs + unpack every layer) of a
# ~200 MB, 4-layer gzip image, side by side in one hyperfine run with
#   - skopeo copy (into an OCI layout) + umoci unpack (the classic unprivileged pipeline),
#   - plain `tar -xzf` of each layer blob in turn (the floor for unpacking),
#   - orbit re-import of the same image with its layers already present.
# Prints the medians and ratios. Env: BENCH_DIR (default /var/tmp/orbit-bench), RUNS (5),
# LAYER_MB (uncompressed MB per layer, 50).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
W=${BENCH_DIR:-/var/tmp/orbit-bench}
RUNS=${RUNS:-5}
LAYER_MB=${LAYER_MB:-50}
scripts/deps.sh hyperfine skopeo umoci jq
cargo build --release --workspace --quiet
bin=$root/target/release
mkdir -p "$W"

# --- the image: 4 layers of real files from /usr (binaries, libraries, text), ~LAYER_MB each
if [ ! -f "$W/image/index.json" ]; then
  rm -rf "$W/src" "$W/image"
  mapfile -t files < <(find /usr/lib /usr/share /usr/bin -xdev -type f -size -4M -readable 2>/dev/null | sort)
  layer=0 bytes=0 limit=$((LAYER_MB * 1024 * 1024))
  mkdir -p "$W/src/0"
  for f in "${files[@]}"; do
    s=$(stat -c %s "$f")
    cp --parents "$f" "$W/src/$layer/" 2>/dev/null || continue
    bytes=$((bytes + s))
    if [ $bytes -ge $limit ]; then
      layer=$((layer + 1)); bytes=0
      [ $layer -ge 4 ] && break
      mkdir -p "$W/src/$layer"
    fi
  done
  "$bin/orbit-build-image" --out "$W/image" --name bench.example/big:1 \
    --layer "gzip:$W/src/0" --layer "gzip:$W/src/1" --layer "gzip:$W/src/2" --layer "gzip:$W/src/3" >/dev/null
  rm -rf "$W/src"
  [ -f "$W/bench.key" ] || "$bin/orbit" image keygen "$W/bench" >/dev/null
  "$bin/orbit" image sign --key "$W/bench.key" "oci:$W/image" >/dev/null
fi
export ORBIT_LOCAL_CONFIG=$W/config ORBIT_SYSTEM_CONFIG=$W/config-vendor ORBIT_USER_CONFIG=$W/config-user
"$bin/orbit" trust --prefix bench.example "$W/bench.pub" >/dev/null
layers=$(jq -r '.layers[].digest' "$W/image/blobs/sha256/$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="bench.example/big:1") | .digest' "$W/image/index.json" | cut -d: -f2)" | cut -d: -f2)
echo "image: $(du -sh "$W/image" | cut -f1) compressed, 4 layers"

tar_cmd="mkdir -p $W/tar-out"
for l in $layers; do tar_cmd="$tar_cmd && tar -xzf $W/image/blobs/sha256/$l -C $W/tar-out"; done
"$bin/orbit" --dir "$W/reimport-store" fetch --no-progress "oci:$W/image" >/dev/null

hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$W/import.json" \
  -n orbit --prepare "rm -rf $W/store" "$bin/orbit --dir $W/store fetch --no-progress oci:$W/image" \
  -n skopeo+umoci --prepare "rm -rf $W/umoci $W/bundle" \
     "sh -c 'skopeo copy --quiet oci:$W/image:bench.example/big:1 oci:$W/umoci:big && umoci unpack --image $W/umoci:big $W/bundle'" \
  -n tar-xzf --prepare "rm -rf $W/tar-out" "sh -c '$tar_cmd'" \
  -n orbit-reimport --prepare true "$bin/orbit --dir $W/reimport-store fetch --no-progress oci:$W/image"

jq -r '
  (.results | map({(.command): .median}) | add) as $m |
  "median seconds: " + (.results | map("\(.command)=\(.median*1000|floor) ms") | join(", ")),
  "skopeo+umoci / orbit = \(($m["skopeo+umoci"] / $m["orbit"]) * 100 | floor / 100)x  (target >= 1.5x)",
  "tar-xzf / orbit      = \(($m["tar-xzf"] / $m["orbit"]) * 100 | floor / 100)x  (target >= 1.0x)",
  "orbit / re-import    = \(($m["orbit"] / $m["orbit-reimport"]) * 100 | floor / 100)x faster when layers are present"
' "$W/import.json"
rm -rf "$W/store" "$W/umoci" "$W/bundle" "$W/tar-out"
