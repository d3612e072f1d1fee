"""Prints the pod manifest (pod.json in the cwd) as shell assignments for the sh-test stage1:
napps, overlay (true/false), name (first app) and cmd: the words
`env -i K=V… CHROOT apps/<name>/rootfs EXEC…`, quoted for `eval "set -- $cmd"`."""
import json, shlex, sys

m = json.load(open("pod.json"))
app = m["apps"][0] if m["apps"] else {"name": "", "env": [], "exec": [], "rootfs": {"overlay": True}}
words = ["env", "-i"] + app["env"] + [sys.argv[1], "apps/%s/rootfs" % app["name"]] + app["exec"]
print("napps=%d" % len(m["apps"]))
print("overlay=%s" % ("true" if app["rootfs"]["overlay"] else "false"))
print("name=%s" % shlex.quote(app["name"]))
print("cmd=%s" % shlex.quote(" ".join(shlex.quote(w) for w in words)))
