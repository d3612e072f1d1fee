//! The device allow-list of an app's cgroup (cgroup v1 `devices` controller): apps may
//! create device nodes (CAP_MKNOD) but open only the harmless ones — null, zero, full,
//! random, urandom, tty, console, ptmx and the pod's own pseudo-terminals — never a host
//! disk. On a pure cgroup2 host this needs a BPF device program, which orbit does not load
//! yet (the process-level defences still apply: no CAP_SYS_RAWIO, read-only /sys).

use std::path::Path;

/// The rules written after `a` is denied (docker's default list).
const ALLOWED: [&str; 11] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// The v1 devices cgroup directory of process `pid`, if the devices controller is mounted.
fn devices_dir(pid: &str) -> Option<String> {
    let dirs = crate::cgroupfs::dirs_of(pid).ok()?;
    dirs.into_iter()
        .find(|(ctrl, _)| ctrl.split(',').any(|c| c == "devices"))
        .map(|(_, dir)| dir)
}

/// Restricts the devices cgroup of process `pid` ("self" for the caller) to [`ALLOWED`].
/// A host without the v1 devices controller is left as it is.
pub fn restrict(pid: &str) -> Result<(), String> {
    match devices_dir(pid) {
        Some(dir) => restrict_dir(Path::new(&dir)),
        None => Ok(()),
    }
}

/// Restricts the v1 devices cgroup directory `dir` to [`ALLOWED`].
pub fn restrict_dir(dir: &Path) -> Result<(), String> {
    let write = |file: &str, rule: &str| {
        let p = dir.join(file);
        std::fs::write(&p, rule)
            .map_err(|e| format!("cannot write '{rule}' to {}: {e}", p.display()))
    };
    write("devices.deny", "a")?;
    for rule in ALLOWED {
        write("devices.allow", rule)?;
    }
    Ok(())
}
