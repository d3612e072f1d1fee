//! The pod's cgroups: `orbit/<uuid>` for the pod and `orbit/<uuid>/<app>` per app, below
//! the cgroup `orbit run` was started in (so a caller's limits and accounting still apply).
//! On a v1 or hybrid host, in every v1 hierarchy through cgroups-rs (the hybrid cgroup2
//! mount only carries hugetlb); on a v2-only host, by `crate::cgroup2`, which also keeps
//! the stage1's own processes in a leaf of their own.
//! Where they are is recorded in the pod directory (`cgroups.json`), so `gc` can remove
//! them after a supervisor that was killed never could.

use std::collections::HashMap;
use std::path::Path;

use std::path::PathBuf;

use cgroups_rs::fs::cgroup::get_cgroups_relative_paths;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{hierarchies, Cgroup, Controller, Hierarchy, MaxValue, Subsystem};
use cgroups_rs::CgroupPid;
use orbit_stage1::Resources;

/// The controllers a pod's cgroups are made in: the ones orbit sets limits or rules in, plus
/// cpuacct for accounting. On cgroup v1 every hierarchy costs a mkdir, a `cgroup.procs`
/// write (slow: it synchronizes RCU) and an rmdir per pod and per app, so the rest stay out:
/// cpuset (a new v1 cpuset cgroup also needs cpus/mems copied in), blkio and freezer (no
/// I/O limits or pause yet), name=systemd (systemd tracks pods through their scope), and
/// net_cls/net_prio/perf_event/hugetlb/rdma.
const CONTROLLERS: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "devices"];

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
    backend: Backend,
}

enum Backend {
    /// Every v1 hierarchy (cgroups-rs), below the caller's cgroup in each.
    V1 {
        base: HashMap<String, String>,
        uuid: String,
    },
    /// cgroup2 only.
    V2(crate::cgroup2::Pod),
}

const RECORD: &str = "cgroups.json";

/// The key of the cgroup2 path in [`RECORD`] (as in `/proc/self/cgroup`'s `0::` line).
const UNIFIED_KEY: &str = "";

impl PodCgroups {
    /// Creates the pod's cgroups below the current process's and records where (before the
    /// supervisor may move itself below them). On cgroup v2 the supervisor may move into the
    /// pod's `_stage1` leaf (see `crate::cgroup2`).
    pub fn create(
        pod: &Path,
        uuid: &str,
        manifest: &orbit_stage1::PodManifest,
    ) -> Result<PodCgroups, String> {
        let unified = crate::cgroup2::unified();
        let base = if unified {
            HashMap::from([(UNIFIED_KEY.to_string(), crate::cgroup2::path_of("self")?)])
        } else {
            get_cgroups_relative_paths()
                .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?
        };
        let record = serde_json::to_vec(&base).expect("a map serializes");
        orbit_stage1::status::write_atomic(&pod.join(RECORD), &record)
            .map_err(|e| format!("cannot write {RECORD}: {e}"))?;
        if !unified {
            return Ok(PodCgroups {
                backend: Backend::V1 {
                    base,
                    uuid: uuid.to_string(),
                },
            });
        }
        let mut v2 = crate::cgroup2::Pod::at(&base[UNIFIED_KEY], uuid);
        let needs_limits = manifest.apps.iter().any(|a| {
            let r = &a.isolators.resources;
            r.memory.is_some()
                || r.cpu_millis.is_some()
                || r.cpu_shares.is_some()
                || r.pids.is_some()
        });
        if let Err(e) = v2.create(needs_limits) {
            v2.remove();
            return Err(e);
        }
        Ok(PodCgroups {
            backend: Backend::V2(v2),
        })
    }

    /// The recorded cgroups of a pod (for gc).
    pub fn load(pod: &Path, uuid: &str) -> Option<PodCgroups> {
        let bytes = std::fs::read(pod.join(RECORD)).ok()?;
        let base: HashMap<String, String> = serde_json::from_slice(&bytes).ok()?;
        let backend = match base.get(UNIFIED_KEY) {
            Some(b) if crate::cgroup2::unified() => Backend::V2(crate::cgroup2::Pod::at(b, uuid)),
            _ => Backend::V1 {
                base,
                uuid: uuid.to_string(),
            },
        };
        Some(PodCgroups { backend })
    }

    /// Moves process `pid` (the pod's init, or the child that makes its user namespace)
    /// into the pod's cgroup.
    pub fn join_pod(&self, pid: i32) -> Result<(), String> {
        match &self.backend {
            Backend::V1 { base, uuid } => {
                let cg = v1_cgroup(base, &format!("orbit/{uuid}"))?;
                cg.add_task_by_tgid(CgroupPid::from(pid as u64))
                    .map_err(|e| format!("cannot move pid {pid} into the pod cgroup: {e}"))
            }
            Backend::V2(v2) => v2.join_stage1(pid),
        }
    }

    /// Moves process `pid` into app `app`'s cgroup.
    pub fn join_app(&self, app: &str, pid: i32) -> Result<(), String> {
        match &self.backend {
            Backend::V1 { base, uuid } => {
                let cg = v1_cgroup(base, &format!("orbit/{uuid}/{app}"))?;
                cg.add_task_by_tgid(CgroupPid::from(pid as u64))
                    .map_err(|e| format!("cannot move pid {pid} into app {app}'s cgroup: {e}"))
            }
            Backend::V2(v2) => v2.join_app(app, pid),
        }
    }

    /// Sets the pod cgroup's limits to the sums of its apps' limits (a limit is set only when
    /// every app has one).
    pub fn set_pod_limits(&self, apps: &[&orbit_stage1::Resources]) -> Result<(), String> {
        let total = Resources::pod_total(apps);
        match &self.backend {
            Backend::V1 { base, uuid } => {
                let cg = v1_cgroup(base, &format!("orbit/{uuid}"))?;
                apply(&cg, &total).map_err(|e| format!("pod cgroup: {e}"))
            }
            Backend::V2(v2) => v2.set_pod_limits(&total),
        }
    }

    /// Sets app `app`'s cgroup limits (memory, CPU quota and shares, pids), and on cgroup
    /// v2 its device program. Called before the app joins its cgroup.
    pub fn set_app_limits(&self, app: &orbit_stage1::App) -> Result<(), String> {
        let limits = &app.isolators.resources;
        match &self.backend {
            Backend::V1 { base, uuid } => {
                let cg = v1_cgroup(base, &format!("orbit/{uuid}/{}", app.name))?;
                apply(&cg, limits).map_err(|e| format!("app {}'s cgroup: {e}", app.name))
            }
            Backend::V2(v2) => {
                // A new leaf each start: its device program first, then its limits; a leaf
                // whose setup failed is removed, so no start runs in one without a program.
                let dir = v2.new_app_leaf(&app.name)?;
                let setup = crate::devices::restrict_cgroup2(&dir, [app])
                    .and_then(|()| v2.set_app_limits(&app.name, limits));
                if setup.is_err() {
                    v2.remove_app(&app.name);
                }
                setup
            }
        }
    }

    /// Restricts the devices of the pod's cgroup (and so of everything below it) to what
    /// `apps` may use, for a pod whose apps join their cgroups themselves (`--private-users`):
    /// `pid` is a process in the pod's cgroup (v1).
    pub fn restrict_pod_devices(&self, pid: i32, apps: &[orbit_stage1::App]) -> Result<(), String> {
        match &self.backend {
            Backend::V1 { .. } => crate::devices::restrict(&pid.to_string(), apps),
            Backend::V2(v2) => crate::devices::restrict_cgroup2(v2.pod_dir(), apps),
        }
    }

    /// True when the kernel's OOM killer killed a process of app `app`'s cgroup.
    pub fn oom_killed(&self, app: &str) -> bool {
        let (base, uuid) = match &self.backend {
            Backend::V1 { base, uuid } => (base, uuid),
            Backend::V2(v2) => return v2.oom_killed(app),
        };
        let rel = format!("orbit/{uuid}/{app}");
        let cg = Cgroup::load_with_relative_paths(hierarchy(), &rel, base.clone());
        let Some(mem) = cg.controller_of::<MemController>() else {
            return false;
        };
        if cg.v2() {
            // A hybrid host whose cgroup2 carries memory: cgroups-rs reads no
            // `memory.events`.
            let events = std::fs::read_to_string(mem.path().join("memory.events"));
            return events
                .ok()
                .and_then(|e| crate::cgroup2::keyed(&e, "oom_kill"))
                .unwrap_or(0)
                > 0;
        }
        // v1: `memory.oom_control`'s `oom_kill` counter (kernel 4.13 and later).
        mem.memory_stat().oom_control.oom_kill > 0
    }

    /// Hands app `app`'s cgroup (already created) to a `--private-users` pod's root
    /// (host `uid`/`gid`) so the app can join it from inside its user namespace: its
    /// `cgroup.procs` and `tasks` files change owner; limits and device rules stay the host's.
    /// Returns the app's v1 devices-controller directory, if any.
    pub fn delegate_app(
        &self,
        app: &str,
        uid: u32,
        gid: u32,
    ) -> Result<Option<std::path::PathBuf>, String> {
        let (base, uuid) = match &self.backend {
            Backend::V1 { base, uuid } => (base, uuid),
            Backend::V2(v2) => return v2.delegate_app(app, uid, gid).map(|()| None),
        };
        let rel = format!("orbit/{uuid}/{app}");
        let cg = Cgroup::load_with_relative_paths(hierarchy(), &rel, base.clone());
        let mut devices = None;
        for sub in cg.subsystems() {
            let dir = sub.to_controller().path().to_path_buf();
            for f in ["cgroup.procs", "tasks"] {
                let p = dir.join(f);
                if p.exists() {
                    std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                        .map_err(|e| format!("cannot delegate {}: {e}", p.display()))?;
                }
            }
            if sub.controller_name() == "devices" {
                devices = Some(dir);
            }
        }
        Ok(devices)
    }

    /// Removes app `app`'s cgroups (a removed app of a mutable pod), killing what is left.
    pub fn remove_app(&self, app: &str) {
        match &self.backend {
            Backend::V1 { base, uuid } => {
                v1_remove(base, &format!("orbit/{uuid}/{app}"));
            }
            Backend::V2(v2) => v2.remove_app(app),
        }
    }

    /// Kills whatever is left in the pod's cgroups and removes them, apps first (on v2, all
    /// of the pod's tree but the leaf the caller itself is in).
    pub fn remove(&self, manifest: &orbit_stage1::PodManifest) {
        let (base, uuid) = match &self.backend {
            Backend::V1 { base, uuid } => (base, uuid),
            Backend::V2(v2) => return v2.remove(),
        };
        let pod_rel = format!("orbit/{uuid}");
        for rel in manifest
            .apps
            .iter()
            .map(|a| format!("{pod_rel}/{}", a.name))
            .chain([pod_rel.clone()])
        {
            v1_remove(base, &rel);
        }
    }
}

/// Kills what is left in v1 cgroup `rel` below `base` and removes it.
fn v1_remove(base: &HashMap<String, String>, rel: &str) {
    let cg = Cgroup::load_with_relative_paths(hierarchy(), rel, base.clone());
    if !cg.exists() {
        return;
    }
    let _ = cg.kill();
    // Killed processes leave their cgroup only once the kernel has finished them: retry the
    // removal for a bounded while instead of leaking an empty cgroup.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while cg.delete().is_err() && std::time::Instant::now() < deadline {
        let _ = cg.kill();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The v1 cgroup `rel` below `base`, created in every selected hierarchy.
fn v1_cgroup(base: &HashMap<String, String>, rel: &str) -> Result<Cgroup, String> {
    Cgroup::new_with_relative_paths(hierarchy(), rel, base.clone())
        .map_err(|e| format!("cannot create cgroup {rel}: {e}"))
}

/// The CFS quota for `millis` millicores, as cgroups-rs takes it.
fn cfs_quota(millis: u64) -> i64 {
    i64::try_from(orbit_stage1::cgroup2::cfs_quota_us(millis)).unwrap_or(i64::MAX)
}

/// Writes the limits `r` sets into cgroup `cg` (v1 or v2); leaves the others as they are.
fn apply(cg: &Cgroup, r: &Resources) -> Result<(), String> {
    let v2 = cg.v2();
    if let Some(bytes) = r.memory {
        let mem: &MemController = cg
            .controller_of()
            .ok_or("no memory controller for --memory")?;
        let limit = i64::try_from(bytes).map_err(|_| format!("memory limit {bytes} too large"))?;
        if v2 {
            mem.set_limit(limit)
                .map_err(|e| format!("cannot set memory.max: {e}"))?;
            // No swap: the limit is the memory the app gets (memory.swap.max only exists
            // with swap accounting).
            if mem.path().join("memory.swap.max").exists() {
                mem.set_memswap_limit(0)
                    .map_err(|e| format!("cannot set memory.swap.max: {e}"))?;
            }
        } else {
            // memory+swap must stay >= memory: lift it first, then lower both to the limit,
            // so the app cannot swap past its limit (memsw exists only with swap accounting).
            let memsw = mem.path().join("memory.memsw.limit_in_bytes").exists();
            if memsw {
                mem.set_memswap_limit(-1)
                    .map_err(|e| format!("cannot set memory.memsw.limit_in_bytes: {e}"))?;
            }
            mem.set_limit(limit)
                .map_err(|e| format!("cannot set memory.limit_in_bytes: {e}"))?;
            if memsw {
                mem.set_memswap_limit(limit)
                    .map_err(|e| format!("cannot set memory.memsw.limit_in_bytes: {e}"))?;
            } else {
                // Without swap accounting the best there is: keep the cgroup's anonymous
                // memory out of swap. Best effort — the memory limit itself is in place.
                let _ = mem.set_swappiness(0);
            }
        }
    }
    if r.cpu_millis.is_some() || r.cpu_shares.is_some() {
        let cpu: &CpuController = cg
            .controller_of()
            .ok_or("no cpu controller for --cpu/--cpu-shares")?;
        if let Some(millis) = r.cpu_millis {
            // Period first: a v1 quota is checked against the period (and the parent's ratio).
            cpu.set_cfs_quota_and_period(None, Some(orbit_stage1::cgroup2::CFS_PERIOD_US))
                .and_then(|()| cpu.set_cfs_quota_and_period(Some(cfs_quota(millis)), None))
                .map_err(|e| format!("cannot set the CPU quota: {e}"))?;
        }
        if let Some(shares) = r.cpu_shares {
            // cgroups-rs writes the value as is: cpu.weight wants the converted one.
            let value = if v2 {
                orbit_stage1::cgroup2::shares_to_weight(shares)
            } else {
                shares.clamp(2, orbit_stage1::isolators::MAX_SHARES)
            };
            cpu.set_shares(value)
                .map_err(|e| format!("cannot set the CPU shares: {e}"))?;
        }
    }
    if let Some(n) = r.pids {
        let pids: &PidController = cg
            .controller_of()
            .ok_or("no pids controller for --pids-limit")?;
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        pids.set_pid_max(MaxValue::Value(n))
            .map_err(|e| format!("cannot set pids.max: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(
        memory: Option<u64>,
        cpu: Option<u64>,
        shares: Option<u64>,
        pids: Option<u64>,
    ) -> Resources {
        Resources {
            memory,
            cpu_millis: cpu,
            cpu_shares: shares,
            pids,
            oom_score_adj: Some(5),
        }
    }

    #[test]
    fn pod_limits_are_sums_only_when_every_app_sets_them() {
        let a = res(Some(10), Some(100), Some(512), None);
        let b = res(Some(20), None, Some(1024), Some(7));
        let t = Resources::pod_total(&[&a, &b]);
        let expected = Resources {
            oom_score_adj: None,
            ..res(Some(30), None, Some(1536), None)
        };
        assert_eq!(t, expected);
        assert_eq!(Resources::pod_total(&[]), Resources::default());
        let big = res(None, None, Some(200_000), None);
        assert_eq!(
            Resources::pod_total(&[&big, &big]).cpu_shares,
            Some(orbit_stage1::isolators::MAX_SHARES)
        );
    }

    #[test]
    fn quota_conversions() {
        assert_eq!(cfs_quota(250), 25_000);
        assert_eq!(cfs_quota(1000), 100_000);
        assert_eq!(cfs_quota(1), 1_000, "clamped to the kernel minimum");
    }
}
