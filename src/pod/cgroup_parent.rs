//! A pod placed below a cgroup parent that is not a systemd slice (the CRI's `cgroupfs`
//! driver: the kubelet's `/kubepods/burstable/pod<uid>`). Before it becomes the stage1,
//! stage0 moves itself into `<parent>/orbit-<uuid>` in every cgroup hierarchy — the shape a
//! systemd service in a slice has — so the stage1's pod and app cgroups nest below it; the
//! pod's removal deletes those directories and any parent directory it had to create.
//!
//! Written by hand over /proc/self/mountinfo and cgroupfs: cgroups-rs knows only the
//! controllers it models (not named hierarchies such as `name=systemd`), and this is a few
//! directory operations.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::PodError;

/// The record in the pod directory.
const RECORD: &str = "cgroup-parent.json";

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The parent, `/a/b`, relative to each hierarchy's root.
    parent: String,
    /// Directories made for the parent because a hierarchy lacked them (deepest last).
    #[serde(default)]
    created: Vec<PathBuf>,
}

/// `parent` as an absolute cgroup path (`kubepods/pod1` → `/kubepods/pod1`), refusing `..`,
/// empty components and systemd slice names.
pub fn validate(parent: &str) -> Result<String, PodError> {
    let bad = |why: &str| PodError::BadSpec(format!("cgroup parent '{parent}': {why}"));
    let trimmed = parent.trim_matches('/');
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    if trimmed
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad("must be a path without '.', '..' or empty components"));
    }
    if trimmed.ends_with(".slice") {
        return Err(bad(
            "a systemd slice, but no systemd manager runs this pod (the cgroupfs driver \
             takes a path such as /kubepods/pod1)",
        ));
    }
    Ok(format!("/{trimmed}"))
}

/// Records that the pod in `pod_dir` runs below cgroup `parent` (see [`validate`]).
pub fn record(pod_dir: &Path, parent: &str) -> Result<(), PodError> {
    let rec = Record {
        parent: validate(parent)?,
        created: Vec::new(),
    };
    write(pod_dir, &rec)
}

fn write(pod_dir: &Path, rec: &Record) -> Result<(), PodError> {
    let path = pod_dir.join(RECORD);
    let bytes = serde_json::to_vec(rec).expect("a record serializes");
    orbit_stage1::status::write_atomic(&path, &bytes)
        .map_err(|e| PodError::io("cannot write", &path, e))
}

fn read(pod_dir: &Path) -> Option<Record> {
    serde_json::from_slice(&std::fs::read(pod_dir.join(RECORD)).ok()?).ok()
}

/// The mount points of the cgroup hierarchies (v1 controllers, named v1 hierarchies, v2).
fn hierarchies() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let point = left.split(' ').nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// The directory of the pod's own cgroup below the parent, relative to a hierarchy root.
fn own(parent: &str, uuid: &str) -> String {
    format!("{}/orbit-{uuid}", parent.trim_start_matches('/'))
}

/// If the pod in `pod_dir` has a cgroup parent, moves this process into its own cgroup below
/// it in every hierarchy (creating what is missing; a new v1 cpuset gets its parent's CPUs
/// and memory nodes).
pub fn join_recorded(pod_dir: &Path, uuid: &str) -> Result<(), PodError> {
    let Some(mut rec) = read(pod_dir) else {
        return Ok(());
    };
    let io = |what: &str, p: &Path, e: std::io::Error| PodError::io(what, p, e);
    for root in hierarchies() {
        let mut dir = root.clone();
        let own_name = format!("orbit-{uuid}");
        for part in own(&rec.parent, uuid).split('/') {
            let parent_dir = dir.clone();
            dir.push(part);
            if dir.is_dir() {
                continue;
            }
            // cgroup v2: a new cgroup gets controllers only from its parent's subtree_control
            // (the kubelet enables them in the parents it makes; these are parents it did not).
            enable_v2_controllers(&parent_dir);
            std::fs::create_dir(&dir).map_err(|e| io("cannot create cgroup", &dir, e))?;
            if part != own_name {
                rec.created.push(dir.clone());
                write(pod_dir, &rec)?;
            }
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = std::fs::read_to_string(parent_dir.join(f)) {
                    if std::fs::read_to_string(dir.join(f)).is_ok_and(|s| s.trim().is_empty()) {
                        std::fs::write(dir.join(f), v.trim())
                            .map_err(|e| io("cannot set", &dir.join(f), e))?;
                    }
                }
            }
        }
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string())
            .map_err(|e| io("cannot join cgroup", &procs, e))?;
    }
    Ok(())
}

/// On cgroup v2, enables the controllers pods use for `dir`'s children. Best effort: a
/// cgroup holding processes cannot, and then the pod's stage1 says which limit lacks its
/// controller.
fn enable_v2_controllers(dir: &Path) {
    let controllers = orbit_stage1::cgroup2::available(dir);
    if !controllers.is_empty() {
        let _ = orbit_stage1::cgroup2::enable(dir, &controllers);
    }
}

/// Deletes the pod's own cgroups below its parent (with whatever the stage1 left in them),
/// then the parent directories it created, if nothing else uses them. An error names a
/// cgroup still in use.
pub fn remove_recorded(pod_dir: &Path, uuid: &str) -> Result<(), PodError> {
    let Some(rec) = read(pod_dir) else {
        return Ok(());
    };
    for root in hierarchies() {
        let mut dirs = dirs_below(&root.join(own(&rec.parent, uuid)));
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            remove_cgroup(&d)?;
        }
    }
    for d in rec.created.iter().rev() {
        // Another pod below the same parent still uses it: it goes with that pod's record.
        if dirs_below(d).len() == 1 {
            remove_cgroup(d)?;
        }
    }
    Ok(())
}

/// `dir` and every directory below it (none if it is gone).
fn dirs_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = vec![dir.to_path_buf()];
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(dirs_below(&e.path()));
        }
    }
    out
}

/// Removes an empty cgroup. Processes that just exited leave it only once the kernel has
/// finished them: a busy cgroup is retried for a bounded while before it is an error.
fn remove_cgroup(dir: &Path) -> Result<(), PodError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(PodError::io("cannot remove cgroup", dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_absolute_paths_without_dots_or_slices() {
        assert_eq!(validate("kubepods/pod1").unwrap(), "/kubepods/pod1");
        assert_eq!(
            validate("/kubepods/besteffort/").unwrap(),
            "/kubepods/besteffort"
        );
        for bad in ["", "/", "/a/../b", "a//b", "kubepods-pod1.slice", "/./a"] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}
