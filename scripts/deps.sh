#!/usr/bin/env bash
# Installs the Debian packages orbit's scripts need, idempotently: only what is missing, and
# with retries while another apt holds the dpkg lock. Usage: deps.sh PACKAGE...
set -euo pipefail
need=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing: ${need[*]}" >&2
for i in $(seq 1 20); do
  if { [ -n "$(find /var/lib/apt/lists -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ] || apt-get update -qq; } &&
     DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2; then
    exit 0
  fi
  echo "apt-get failed (dpkg lock held?), retry $i/20" >&2
  sleep 10
done
echo "could not install: ${need[*]}" >&2
exit 1
