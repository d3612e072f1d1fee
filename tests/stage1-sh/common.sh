# Shared by the sh-test stage1's entrypoints (sourced, not run). The interface: cwd is the pod
# directory; arguments are --uuid=UUID [--debug] [--lock-fd=N] [--app=NAME] [--force] [-- CMD…].
uuid= debug= app= force=
while [ $# -gt 0 ]; do
  case "$1" in
    --uuid=*) uuid=${1#--uuid=} ;;
    --debug) debug=1 ;;
    --lock-fd=*) ;; # the inherited descriptor already holds the pod's lock; keeping it open is enough
    --app=*) app=${1#--app=} ;;
    --force) force=1 ;;
    --) shift; break ;;
    *) echo "stage1 sh-test: unknown argument '$1'" >&2; exit 125 ;;
  esac
  shift
done
[ -n "$uuid" ] || { echo "stage1 sh-test: --uuid is required" >&2; exit 125; }
[ -f pod.json ] || { echo "stage1 sh-test: no pod.json in $(pwd)" >&2; exit 125; }
now() { date -u +%Y-%m-%dT%H:%M:%S.%NZ; }
# Writes a file atomically (temp + rename), as the interface asks.
put() { printf '%s' "$2" > "$1.tmp" && mv -f "$1.tmp" "$1"; }
py=/usr/bin/python3; [ -x $py ] || py=python3
