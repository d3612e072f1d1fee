#!/usr/bin/env bash
# Build orbit-spdy-client (the SPDY streaming test client in this directory).
#
#   bash tests/streaming-client/build.sh OUT_PATH
#
# Installs golang-go, golang-github-docker-spdystream-dev and
# golang-github-gorilla-websocket-dev from Debian when
# missing, then builds offline in GOPATH mode against the Debian Go sources
# (/usr/share/gocode). Does nothing when OUT_PATH is newer than the sources.
# Safe to run concurrently: the binary is renamed into place atomically.
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUT_PATH" >&2
    exit 2
fi

SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$1"
case "$OUT" in
    /*) ;;
    *) OUT="$PWD/$OUT" ;;
esac

# Up to date? (OUT exists and no Go source / this script is newer than it.)
if [ -x "$OUT" ]; then
    newer="$(find "$SRC_DIR" -maxdepth 1 -type f \( -name '*.go' -o -name 'build.sh' \) -newer "$OUT" -print -quit)"
    if [ -z "$newer" ]; then
        exit 0
    fi
fi

# The Debian packages, when missing (the project's idempotent installer).
"$SRC_DIR/../../scripts/deps.sh" golang-go golang-github-docker-spdystream-dev golang-github-gorilla-websocket-dev

GO=go
if ! command -v "$GO" >/dev/null 2>&1; then
    GO=/usr/lib/go/bin/go
fi

GOCODE=/usr/share/gocode
if [ ! -f "$GOCODE/src/github.com/moby/spdystream/connection.go" ]; then
    echo "build.sh: spdystream sources not found under $GOCODE/src/github.com/moby/spdystream" >&2
    exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/orbit-spdy-client-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/gopath" "$(dirname "$OUT")"

# GOPATH mode, no network, no cgo (Debian's golang-go does not pull in gcc
# without recommends, and a static binary is all the tests need). The build
# cache is kept between runs to make rebuilds quick.
export GO111MODULE=off
export GOPATH="$work/gopath:$GOCODE"
export GOCACHE="${ORBIT_SPDY_GOCACHE:-${TMPDIR:-/tmp}/orbit-spdy-client-gocache}"
export GOPROXY=off
export GOFLAGS=
export GOENV=off
export CGO_ENABLED=0

cd "$SRC_DIR"
"$GO" build -trimpath -o "$work/orbit-spdy-client" .
mv -f "$work/orbit-spdy-client" "$OUT.tmp.$$"
mv -f "$OUT.tmp.$$" "$OUT"
