//! cgroup v2 conventions shared by stage0 and the built-in stage1s: which controllers a
//! pod's cgroups get, and handing them down a level.

use std::path::Path;

/// The controllers a pod's cgroups get, where the parent offers them. cpuset is left out:
/// orbit pins no CPUs, and an enabled cpuset controller costs every cgroup a copy of its
/// parent's masks.
pub const POD_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "io"];

/// The controllers of [`POD_CONTROLLERS`] that cgroup `dir` has (its `cgroup.controllers`).
pub fn available(dir: &Path) -> Vec<&'static str> {
    let offered = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    POD_CONTROLLERS
        .into_iter()
        .filter(|c| offered.split_whitespace().any(|o| o == *c))
        .collect()
}

/// Enables `controllers` for the children of cgroup `dir` (those not enabled yet: one write,
/// or none). Fails with EBUSY while `dir` holds processes (the no-internal-process rule).
pub fn enable(dir: &Path, controllers: &[&str]) -> std::io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let on = std::fs::read_to_string(&file)?;
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !on.split_whitespace().any(|o| o == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::write(&file, missing.join(" "))
}
