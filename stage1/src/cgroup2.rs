//! cgroup conventions shared by stage0 and the built-in stage1s: which controllers a pod's
//! v2 cgroups get, handing them down a level, and how CPU limits are written.

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

/// The CFS period CPU quotas are expressed in (the kernel's default), in microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota the kernel accepts, in microseconds.
pub const CFS_MIN_QUOTA_US: u64 = 1_000;

/// The CFS quota for `millis` millicores per [`CFS_PERIOD_US`] (at least the kernel's
/// minimum), in microseconds: v1 `cpu.cfs_quota_us`, the first field of v2 `cpu.max`.
pub fn cfs_quota_us(millis: u64) -> u64 {
    millis
        .saturating_mul(CFS_PERIOD_US / 1000)
        .max(CFS_MIN_QUOTA_US)
}

/// v1 `cpu.shares` (2..262144, default 1024) as a v2 `cpu.weight` (1..10000, default 100),
/// as runc, crun, systemd and the kubelet convert them.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, crate::isolators::MAX_SHARES);
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_and_weight_conversions() {
        assert_eq!(cfs_quota_us(250), 25_000);
        assert_eq!(cfs_quota_us(1000), 100_000);
        assert_eq!(cfs_quota_us(1), 1_000, "clamped to the kernel minimum");
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
