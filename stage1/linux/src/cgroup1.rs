//! A pod's cgroups on a cgroup v1 (or hybrid) host: `<mount>/<caller's path>/orbit/<uuid>`
//! and `…/<uuid>/<app>` in the hierarchy of each of [`CONTROLLERS`].
//!
//! Written by hand, as `crate::cgroup2` is: cgroups-rs parsed `/proc/self/mountinfo` anew for
//! every cgroup it opened (half a dozen times per pod start), retried removals with sleeps of
//! its own, could not kill a v1 cgroup's processes, and was a sixth of the stage1 binary —
//! for a handful of file writes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use orbit_stage1::Resources;

/// The controllers a pod's cgroups are made in: the ones orbit sets limits or rules in, plus
/// cpuacct for accounting. Every hierarchy costs a mkdir, a `cgroup.procs` write (slow: it
/// synchronizes RCU) and an rmdir per pod and per app, so the rest stay out: cpuset (a new
/// v1 cpuset cgroup also needs cpus/mems copied in), blkio and freezer (no I/O limits or
/// pause yet), name=systemd (systemd tracks pods through their scope), and
/// net_cls/net_prio/perf_event/hugetlb/rdma.
pub const CONTROLLERS: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "devices"];

/// The caller's cgroup path in each hierarchy, by controller (`/proc/self/cgroup`; the
/// format of the pod's `cgroups.json`).
pub fn own_paths() -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    Ok(parse_paths(&text))
}

/// `ID:controllers:path` lines as controller → path (a path may itself hold ':').
fn parse_paths(text: &str) -> HashMap<String, String> {
    let mut paths = HashMap::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once(':') else {
            continue;
        };
        let Some((controllers, path)) = rest.split_once(':') else {
            continue;
        };
        for c in controllers.split(',') {
            paths.insert(c.to_string(), path.to_string());
        }
    }
    paths
}

/// Where the hierarchy of each of [`CONTROLLERS`] is mounted (read once).
fn mounts() -> &'static [(&'static str, PathBuf)] {
    static MOUNTS: OnceLock<Vec<(&'static str, PathBuf)>> = OnceLock::new();
    MOUNTS.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        CONTROLLERS
            .iter()
            .filter_map(|c| crate::cgroupfs::mount_of(&info, c).map(|m| (*c, PathBuf::from(m))))
            .collect()
    })
}

/// Pod `uuid`'s cgroup below the paths `base` (see [`own_paths`]).
pub fn pod(base: &HashMap<String, String>, uuid: &str) -> Cgroup {
    Cgroup::at(base, &format!("orbit/{uuid}"))
}

/// App `app`'s cgroup in pod `uuid`'s.
pub fn app(base: &HashMap<String, String>, uuid: &str, app: &str) -> Cgroup {
    Cgroup::at(base, &format!("orbit/{uuid}/{app}"))
}

/// One cgroup in every hierarchy: the directory of each controller (co-mounted controllers,
/// such as `cpu,cpuacct`, share one).
pub struct Cgroup {
    dirs: Vec<(&'static str, PathBuf)>,
}

impl Cgroup {
    /// Cgroup `rel` below the paths `base` (see [`own_paths`]).
    fn at(base: &HashMap<String, String>, rel: &str) -> Cgroup {
        let dirs = mounts()
            .iter()
            .filter_map(|(c, mount)| {
                let own = base.get(*c)?.trim_start_matches('/');
                Some((*c, mount.join(own).join(rel)))
            })
            .collect();
        Cgroup { dirs }
    }

    /// Each directory once.
    fn distinct(&self) -> impl Iterator<Item = &Path> {
        self.dirs
            .iter()
            .enumerate()
            .filter(|(i, (_, d))| !self.dirs[..*i].iter().any(|(_, e)| e == d))
            .map(|(_, (_, d))| d.as_path())
    }

    /// The directory of `controller`, if its hierarchy is mounted.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }

    /// Makes the cgroup (and its parents) in every hierarchy.
    pub fn create(&self) -> Result<(), String> {
        for dir in self.distinct() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create cgroup {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files, each once.
    pub fn procs_files(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.distinct().map(|d| d.join("cgroup.procs"))
    }

    /// Moves process `pid` into the cgroup.
    pub fn join(&self, pid: i32) -> Result<(), String> {
        for procs in self.procs_files() {
            write(&procs, &pid.to_string())?;
        }
        Ok(())
    }

    /// Writes the limits `r` sets; leaves the others as they are.
    pub fn apply(&self, r: &Resources) -> Result<(), String> {
        if let Some(bytes) = r.memory {
            let mem = self
                .dir("memory")
                .ok_or("no memory controller for --memory")?;
            let limit = bytes.to_string();
            // memory+swap must stay >= memory: lift it first, then lower both to the limit,
            // so the app cannot swap past its limit (memsw exists only with swap accounting).
            let memsw = mem.join("memory.memsw.limit_in_bytes");
            let swap_accounted = memsw.exists();
            if swap_accounted {
                write(&memsw, "-1")?;
            }
            write(&mem.join("memory.limit_in_bytes"), &limit)?;
            if swap_accounted {
                write(&memsw, &limit)?;
            } else {
                // Without swap accounting the best there is: keep the cgroup's anonymous
                // memory out of swap. Best effort — the memory limit itself is in place.
                let _ = write(&mem.join("memory.swappiness"), "0");
            }
        }
        if r.cpu_millis.is_some() || r.cpu_shares.is_some() {
            let cpu = self
                .dir("cpu")
                .ok_or("no cpu controller for --cpu/--cpu-shares")?;
            if let Some(millis) = r.cpu_millis {
                // Period first: a v1 quota is checked against the period (and the parent's).
                let period = orbit_stage1::cgroup2::CFS_PERIOD_US.to_string();
                let quota = orbit_stage1::cgroup2::cfs_quota_us(millis).to_string();
                write(&cpu.join("cpu.cfs_period_us"), &period)?;
                write(&cpu.join("cpu.cfs_quota_us"), &quota)?;
            }
            if let Some(shares) = r.cpu_shares {
                let shares = shares.clamp(2, orbit_stage1::isolators::MAX_SHARES);
                write(&cpu.join("cpu.shares"), &shares.to_string())?;
            }
        }
        if let Some(n) = r.pids {
            let pids = self
                .dir("pids")
                .ok_or("no pids controller for --pids-limit")?;
            write(&pids.join("pids.max"), &n.to_string())?;
        }
        Ok(())
    }

    /// True when the OOM killer killed one of the cgroup's processes (`memory.oom_control`'s
    /// `oom_kill` counter, kernel 4.13 and later).
    pub fn oom_killed(&self) -> bool {
        let Some(mem) = self.dir("memory") else {
            return false;
        };
        let control = std::fs::read_to_string(mem.join("memory.oom_control")).unwrap_or_default();
        crate::cgroup2::keyed(&control, "oom_kill").unwrap_or(0) > 0
    }

    /// Hands the cgroup's `cgroup.procs` and `tasks` files to host `uid`/`gid`.
    pub fn delegate(&self, uid: u32, gid: u32) -> Result<(), String> {
        for dir in self.distinct() {
            for f in ["cgroup.procs", "tasks"] {
                let p = dir.join(f);
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .map_err(|e| format!("cannot delegate {}: {e}", p.display()))?;
            }
        }
        Ok(())
    }

    /// Kills what is left in the cgroup and removes it, with the cgroups below it (an app
    /// added to a running pod is not in the manifest the supervisor started with).
    pub fn remove(&self) {
        for dir in self.distinct() {
            crate::cgroupfs::remove_tree(dir, Path::new(""), crate::cgroupfs::kill_listed);
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value)
        .map_err(|e| format!("cannot write '{value}' to {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_by_controller_keep_colons_and_split_comounted_controllers() {
        let text = "12:cpu,cpuacct:/a/b\n4:memory:/x:y\n1:name=systemd:/s\n0::/u\n";
        let p = parse_paths(text);
        assert_eq!(p["cpu"], "/a/b");
        assert_eq!(p["cpuacct"], "/a/b");
        assert_eq!(p["memory"], "/x:y");
        assert_eq!(p["name=systemd"], "/s");
        assert_eq!(p[""], "/u");
    }

    #[test]
    fn comounted_controllers_share_one_directory() {
        let cg = Cgroup {
            dirs: vec![
                ("memory", PathBuf::from("/m/x")),
                ("cpu", PathBuf::from("/c/x")),
                ("cpuacct", PathBuf::from("/c/x")),
            ],
        };
        let distinct: Vec<&Path> = cg.distinct().collect();
        assert_eq!(distinct, [Path::new("/m/x"), Path::new("/c/x")]);
        assert_eq!(cg.dir("cpuacct"), Some(Path::new("/c/x")));
    }
}
