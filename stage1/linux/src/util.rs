//! Small helpers: timestamps, reading the pod manifest, writing files, listening sockets.

use std::path::Path;

use orbit_stage1::{paths, PodManifest};

/// Now, RFC 3339 with nanoseconds (the CRI log timestamp format).
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Reads `pod.json` from the pod directory.
pub fn read_manifest(pod: &Path) -> Result<PodManifest, String> {
    let p = pod.join(paths::POD_MANIFEST);
    let bytes = std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{} is malformed: {e}", p.display()))
}

/// Writes a small file atomically; errors are reported but not fatal to the pod.
pub fn write_file(pod: &Path, name: &str, content: &str) {
    if let Err(e) = orbit_stage1::status::write_atomic(&pod.join(name), content.as_bytes()) {
        eprintln!("stage1: cannot write {name}: {e}");
    }
}

/// Decodes a wait status into (exit code, signal): a signal n gives 128+n.
pub fn exit_of(status: nix::sys::wait::WaitStatus) -> Option<(i32, Option<i32>)> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => Some((code, None)),
        WaitStatus::Signaled(_, sig, _) => Some((128 + sig as i32, Some(sig as i32))),
        _ => None,
    }
}

/// A listening unix socket at `path` that appears there only once it listens: it is bound
/// under another name and renamed, since stage0 takes a control socket's existence for the
/// pod's readiness and a connection made between bind(2) and listen(2) is refused.
pub fn listen_at(path: &Path) -> Result<std::os::unix::net::UnixListener, String> {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    let bound = std::path::PathBuf::from(name);
    let _ = std::fs::remove_file(&bound);
    let listener = std::os::unix::net::UnixListener::bind(&bound)
        .map_err(|e| format!("cannot listen on {}: {e}", bound.display()))?;
    std::fs::rename(&bound, path).map_err(|e| {
        format!(
            "cannot rename {} to {}: {e}",
            bound.display(),
            path.display()
        )
    })?;
    Ok(listener)
}
