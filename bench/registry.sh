#!/usr/bin/env bash
# Registry pull benchmark: a cold pull of a ~200 MB image (5 gzip layers of incompressible
# data) from a local docker-registry (TLS from a CA the script makes, htpasswd auth, a free
# port of 127.0.0.1), side by side in ONE hyperfine run:
#   orbit        `orbit --ca-cert CA --insecure-options=image fetch docker://…` into an
#                empty store (download, verify digests, store blobs, unpack every layer)
#   skopeo+umoci `skopeo copy docker://… oci:DIR:big` + `umoci unpack --image DIR:big BUNDLE`
#   podman       `podman pull docker://…` into a private --root/--runroot (overlay)
# and two reference rows that split orbit's time: `skopeo-copy` (skopeo copy alone: the
# download floor) and `orbit-oci` (orbit fetch of the same image from a local OCI layout: no
# network). Each row's --prepare empties its destination, so every run is a cold pull, and
# runs `sync` so that no run pays for the previous run's writeback (each writes 400-600 MB).
# Prints medians, skopeo+umoci/orbit and podman/orbit (target >= 1.5 each), then one
# `orbit --debug fetch` split into phases (set-up, download+unpack, commit) by watching the
# store, and the requests the registry served to it.
#
# Env: BENCH_DIR (default /var/tmp/orbit-bench-registry), RUNS (5), WARMUP (1),
#      LAYER_MB (MB of random data per layer, 40).
# Everything lives under BENCH_DIR; at exit the registry is killed (by its pid), podman's
# images are removed and its storage deleted, leftover mounts under BENCH_DIR are reported
# (and unmounted), and the stores, bundle and registry data are removed. The built image
# (BENCH_DIR/image) and the orbit binary copy (BENCH_DIR/bin) are kept for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
W=${BENCH_DIR:-/var/tmp/orbit-bench-registry}
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
LAYER_MB=${LAYER_MB:-40}
USER_NAME=bench PASS=bench-s3cret
[ "$(id -u)" = 0 ] || { echo "bench/registry.sh: run as root" >&2; exit 1; }

scripts/deps.sh hyperfine skopeo umoci podman jq docker-registry apache2-utils openssl
cargo build --release --workspace --quiet
mkdir -p "$W/bin"
W=$(cd "$W" && pwd)
# Private copies: a concurrent `cargo build` must not swap a binary in the middle of a run.
for b in orbit orbit-build-image; do
  cp "$root/target/release/$b" "$W/bin/$b.new" && mv "$W/bin/$b.new" "$W/bin/$b"
done
o=$W/bin/orbit
export ORBIT_LOCAL_CONFIG=$W/config ORBIT_SYSTEM_CONFIG=$W/config-vendor ORBIT_USER_CONFIG=$W/config-user
export CONTAINERS_CONF=$W/containers.conf
P=(podman --root "$W/podman/root" --runroot "$W/podman/runroot" --storage-driver overlay)
R=$W/registry
reg_pid=

cleanup() {
  set +e
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null; fi
  [ -d "$W/podman" ] && "${P[@]}" rmi -a -f >/dev/null 2>&1
  local m
  m=$(awk -v w="$W/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r)
  if [ -n "$m" ]; then
    echo "bench/registry.sh: WARNING: mounts left under $W (unmounting):" >&2
    echo "$m" >&2
    echo "$m" | while read -r p; do umount "$p"; done
  fi
  rm -rf "$W/store" "$W/oci-store" "$W/umoci" "$W/bundle" "$W/skopeo-only" "$W/podman" "$R"
}
trap cleanup EXIT

# --- the image: 5 layers of LAYER_MB random bytes each (5 MB files), gzip; built once
if [ "$(cat "$W/image.stamp" 2>/dev/null)" != "$LAYER_MB" ] || [ ! -f "$W/image/index.json" ]; then
  rm -rf "$W/src" "$W/image" "$W/image.stamp"
  args=()
  for l in 0 1 2 3 4; do
    mkdir -p "$W/src/$l/data$l"
    for f in $(seq 1 $(((LAYER_MB + 4) / 5))); do
      head -c 5M /dev/urandom > "$W/src/$l/data$l/f$f"
    done
    args+=(--layer "gzip:$W/src/$l")
  done
  "$W/bin/orbit-build-image" --out "$W/image" --name bench.example/big:1 "${args[@]}" >/dev/null
  rm -rf "$W/src"
  echo "$LAYER_MB" > "$W/image.stamp"
fi

# --- the registry: CA, server certificate for 127.0.0.1, htpasswd, a free port
rm -rf "$R"; mkdir -p "$R/certs"
(
  cd "$R"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj '/CN=orbit bench CA'
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=127.0.0.1'
  printf 'subjectAltName=IP:127.0.0.1\n' > ext.cnf
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf
  cp ca.crt certs/ca.crt
  htpasswd -Bbn "$USER_NAME" "$PASS" > htpasswd
) >/dev/null 2>&1
port=
for _ in $(seq 1 50); do
  p=$((20000 + RANDOM % 40000))
  if [ -z "$(ss -Htln "sport = :$p")" ]; then port=$p; break; fi
done
[ -n "$port" ] || { echo "bench/registry.sh: no free port found" >&2; exit 1; }
cat > "$R/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $R/data
http:
  addr: 127.0.0.1:$port
  tls:
    certificate: $R/server.crt
    key: $R/server.key
auth:
  htpasswd:
    realm: orbit-bench
    path: $R/htpasswd
EOF
docker-registry serve "$R/config.yml" > "$R/access.log" 2> "$R/registry.log" &
reg_pid=$!
for _ in $(seq 1 100); do
  [ -n "$(ss -Htln "sport = :$port")" ] && break
  kill -0 "$reg_pid" 2>/dev/null || { echo "bench/registry.sh: docker-registry died:" >&2; cat "$R/registry.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$(ss -Htln "sport = :$port")" ] || { echo "bench/registry.sh: the registry does not listen" >&2; exit 1; }
HOST=127.0.0.1:$port
SRC=docker://$HOST/bench/big:1
CA=$R/ca.crt
skopeo copy --quiet --preserve-digests --dest-cert-dir "$R/certs" --dest-creds "$USER_NAME:$PASS" \
  oci:"$W/image":bench.example/big:1 "$SRC"

# --- orbit: private config with the registry's credentials (survives every --prepare)
rm -rf "$W/config-user"
printf '%s\n' "$PASS" | "$o" --ca-cert "$CA" login "$HOST" -u "$USER_NAME" --password-stdin >/dev/null

# --- podman: private containers.conf (default_ulimits within this machine's hard limits,
# like run.sh; a pull does not use them) and private storage under BENCH_DIR.
cat > "$W/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
EOF
mkdir -p "$W/podman"

echo "image: $(du -sh --apparent-size "$W/image" | cut -f1) compressed, 5 layers × $LAYER_MB MB random; registry $HOST (TLS, htpasswd)"
cmd_orbit="$o --dir $W/store --ca-cert $CA --insecure-options=image fetch --no-progress $SRC"
cmd_skopeo_umoci="sh -c 'skopeo copy --quiet --src-cert-dir $R/certs --src-creds $USER_NAME:$PASS $SRC oci:$W/umoci:big && umoci unpack --image $W/umoci:big $W/bundle >/dev/null'"
cmd_podman="${P[*]} pull -q --cert-dir $R/certs --creds $USER_NAME:$PASS $SRC"
cmd_skopeo="skopeo copy --quiet --src-cert-dir $R/certs --src-creds $USER_NAME:$PASS $SRC oci:$W/skopeo-only:big"
cmd_orbit_oci="$o --dir $W/oci-store --insecure-options=image fetch --no-progress oci:$W/image:bench.example/big:1"

load=$(cut -d' ' -f1-3 /proc/loadavg)
hyperfine -N --runs "$RUNS" --warmup "$WARMUP" --export-json "$W/registry.json" \
  -n orbit        --prepare "sh -c 'rm -rf $W/store && sync'" "$cmd_orbit" \
  -n skopeo+umoci --prepare "sh -c 'rm -rf $W/umoci $W/bundle && sync'" "$cmd_skopeo_umoci" \
  -n podman       --prepare "sh -c '${P[*]} rmi -a -f >/dev/null && sync'" "$cmd_podman" \
  -n skopeo-copy  --prepare "sh -c 'rm -rf $W/skopeo-only && sync'" "$cmd_skopeo" \
  -n orbit-oci    --prepare "sh -c 'rm -rf $W/oci-store && sync'" "$cmd_orbit_oci" >&2

echo "== cold pull of $SRC (hyperfine -N --runs $RUNS --warmup $WARMUP; $(nproc) CPUs, load average before: $load)"
jq -r '.results[] | "\(.command | . + (" " * (13 - length)))  median \(.median*1000|round) ms  min \(.min*1000|round) ms  mean \(.mean*1000|round) ± \(.stddev*1000|round) ms"' "$W/registry.json"
jq -r '
  (.results | map({(.command): .median}) | add) as $m |
  def r(x): (x * 100 | round) / 100;
  def t(x): if x >= 1.5 then "ok" else "MISSED" end;
  "skopeo+umoci / orbit = \(r($m["skopeo+umoci"] / $m.orbit))x   (target >= 1.5)  \(t($m["skopeo+umoci"] / $m.orbit))",
  "podman / orbit       = \(r($m.podman / $m.orbit))x   (target >= 1.5)  \(t($m.podman / $m.orbit))",
  "orbit − orbit-oci    = \(($m.orbit - $m["orbit-oci"]) * 1000 | round) ms   (what the network adds to a local import; skopeo-copy alone: \($m["skopeo-copy"] * 1000 | round) ms)"
' "$W/registry.json"

# --- one orbit fetch with --debug (it prints only the total), split into phases by watching
# the store: the first layer download in downloads/ (start-up, TLS set-up, manifests, config,
# signature), layers moved into layers/ (layers are unpacked as they download: one phase),
# exit (store commit, the temporary layout removed). Polled every 10 ms.
rm -rf "$W/store"; sync
n0=$(wc -l < "$R/access.log")
shopt -s nullglob
t0=$EPOCHREALTIME
"$o" --debug --dir "$W/store" --ca-cert "$CA" --insecure-options=image fetch --no-progress "$SRC" 2> "$W/debug.err" >/dev/null &
fpid=$!
a= c=
while kill -0 "$fpid" 2>/dev/null; do
  if [ -z "$a" ]; then x=("$W"/store/downloads/*.partial); [ ${#x[@]} -gt 0 ] && a=$EPOCHREALTIME; fi
  if [ -n "$a" ] && [ -z "$c" ]; then x=("$W"/store/layers/sha256/*); [ ${#x[@]} -gt 0 ] && c=$EPOCHREALTIME; fi
  sleep 0.01
done
wait "$fpid" || { echo "bench/registry.sh: orbit --debug fetch failed:" >&2; cat "$W/debug.err" >&2; exit 1; }
t1=$EPOCHREALTIME
shopt -u nullglob
echo "== one orbit --debug fetch ($(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", (b-a)*1000}') ms wall)"
grep -v WARNING "$W/debug.err" | sed 's/^/  /'
if [ -n "$a" ] && [ -n "$c" ]; then
  awk -v t0="$t0" -v a="$a" -v c="$c" -v t1="$t1" 'BEGIN {
    printf "  phases: set-up %.0f ms, download + unpack (overlapped) %.0f ms, commit + cleanup %.0f ms\n",
      (a-t0)*1000, (c-a)*1000, (t1-c)*1000 }'
fi
reqs=$(tail -n +"$((n0 + 1))" "$R/access.log" | grep -o '"[A-Z]* /v2/[^ ]*' | sed 's/^"//; s#/v2/bench/big/##; s/sha256:\([0-9a-f]\{12\}\)[0-9a-f]*/\1…/' | tr '\n' ' ' || true)
echo "  registry requests: $reqs"
