//! The `app-add`, `app-start`, `app-stop` and `app-rm` entrypoints: each sends one request
//! to the running pod init over the pod's `control.sock` (only the init can mount an app's
//! root in the pod's mount namespace and be the app's parent) and reports its answer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use orbit_stage1::paths;

use crate::Args;

/// Sends `verb --app` to the pod init.
pub fn request(verb: &str, args: &Args) -> Result<i32, String> {
    let app = args
        .app
        .as_deref()
        .ok_or_else(|| format!("{verb} needs --app=NAME"))?;
    let pod = std::env::current_dir().map_err(|e| format!("cannot find the pod directory: {e}"))?;
    if verb == "add" {
        // What only the host's root can do for a pod with a user namespace.
        crate::userns::add_app(&pod, &args.uuid, app)?;
    }
    let sock = pod.join(paths::CONTROL_SOCKET);
    let mut conn = UnixStream::connect(&sock).map_err(|e| {
        format!(
            "cannot reach the pod (is it a running `orbit app sandbox` pod?): {}: {e}",
            sock.display()
        )
    })?;
    // `app-stop --force`: SIGKILL instead of SIGTERM.
    let verb = if verb == "stop" && args.force {
        "kill"
    } else {
        verb
    };
    // `app-resize --app=NAME -- COLS ROWS`.
    let extra: String = args.command.iter().map(|a| format!(" {a}")).collect();
    conn.write_all(format!("{verb} {app}{extra}\n").as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut reply = String::new();
    BufReader::new(&conn)
        .read_line(&mut reply)
        .map_err(|e| format!("no answer from the pod: {e}"))?;
    match reply.trim_end().strip_prefix("error ") {
        None if reply.trim_end() == "ok" => {
            if verb == "rm" {
                remove_delegated_cgroup(&pod, &args.uuid, app);
            }
            Ok(0)
        }
        None => Err(format!("unexpected answer from the pod: {reply:?}")),
        Some(e) => Err(e.to_string()),
    }
}

/// Removes a removed app's cgroup in a pod with a user namespace: it was the host's root's
/// (see `userns::app_cgroup`), which the pod's init cannot remove.
fn remove_delegated_cgroup(pod: &std::path::Path, uuid: &str, app: &str) {
    let userns = crate::util::read_manifest(pod).is_ok_and(|m| m.user_namespace.is_some());
    if let (true, Some(cgroups)) = (userns, crate::cgroup::PodCgroups::load(pod, uuid)) {
        cgroups.remove_app(app);
    }
}
