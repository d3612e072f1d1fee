//! The cgroups the stage1 made for a pod (`orbit/<uuid>`) and its apps
//! (`orbit/<uuid>/<app>`) below the base recorded in the pod's `cgroups.json`: where they
//! are, and changing an app's limits (UpdateContainerResources).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tonic::Status;

use super::proto;

/// The cgroup directory of `rel` (below the pod's recorded base) for a v1 controller, or
/// the unified hierarchy when `controller` is `""`.
pub fn cgroup_dir(pod: &Path, controller: &str, rel: &str) -> Option<PathBuf> {
    let base: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(pod.join("cgroups.json")).ok()?).ok()?;
    let b = base
        .iter()
        .find(|(k, _)| k.split(',').any(|c| c == controller))
        .map(|(_, v)| v.trim_start_matches('/').to_string())?;
    let roots: Vec<PathBuf> = if controller.is_empty() {
        vec!["/sys/fs/cgroup/unified".into(), "/sys/fs/cgroup".into()]
    } else {
        vec![
            format!("/sys/fs/cgroup/{controller}").into(),
            "/sys/fs/cgroup/cpu,cpuacct".into(),
        ]
    };
    roots
        .into_iter()
        .map(|r| r.join(&b).join(rel))
        .find(|d| d.is_dir())
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), Status> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| Status::internal(format!("cannot set {}: {e}", dir.join(file).display())))
}

/// Applies `r`'s memory limit, CPU quota/period and shares to an app's cgroup (fields left
/// at 0 are not changed).
pub fn update(
    pod: &Path,
    uuid: &str,
    app: &str,
    r: &proto::LinuxContainerResources,
) -> Result<(), Status> {
    let rel = format!("orbit/{uuid}/{app}");
    let missing = || {
        Status::failed_precondition(format!(
            "app {app} of pod {uuid} has no cgroup (not running?)"
        ))
    };
    if let Some(d) = cgroup_dir(pod, "", &rel) {
        if r.memory_limit_in_bytes > 0 {
            write(&d, "memory.max", &r.memory_limit_in_bytes.to_string())?;
        }
        if r.cpu_quota != 0 || r.cpu_period > 0 {
            let quota = if r.cpu_quota > 0 {
                r.cpu_quota.to_string()
            } else {
                "max".into()
            };
            let period = if r.cpu_period > 0 {
                r.cpu_period
            } else {
                100_000
            };
            write(&d, "cpu.max", &format!("{quota} {period}"))?;
        }
        if r.cpu_shares > 0 {
            let weight = orbit_stage1::cgroup2::shares_to_weight(r.cpu_shares as u64);
            write(&d, "cpu.weight", &weight.to_string())?;
        }
        return Ok(());
    }
    if r.memory_limit_in_bytes > 0 {
        let d = cgroup_dir(pod, "memory", &rel).ok_or_else(missing)?;
        write(
            &d,
            "memory.limit_in_bytes",
            &r.memory_limit_in_bytes.to_string(),
        )?;
    }
    if r.cpu_period > 0 || r.cpu_quota != 0 || r.cpu_shares > 0 {
        let d = cgroup_dir(pod, "cpu", &rel).ok_or_else(missing)?;
        if r.cpu_period > 0 {
            write(&d, "cpu.cfs_period_us", &r.cpu_period.to_string())?;
        }
        if r.cpu_quota != 0 {
            write(&d, "cpu.cfs_quota_us", &r.cpu_quota.max(-1).to_string())?;
        }
        if r.cpu_shares > 0 {
            write(&d, "cpu.shares", &r.cpu_shares.to_string())?;
        }
    }
    Ok(())
}
