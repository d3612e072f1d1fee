//! A pod's cgroups on a cgroup-v2-only host (`/sys/fs/cgroup` is cgroup2), done as the
//! kernel's rules ask:
//!
//! ```text
//! BASE                      the caller's cgroup: the pod's systemd scope or service
//! │                         (Delegate=yes), the CRI's cgroupfs parent, or the root
//! └── orbit/
//!     └── <uuid>/           the pod: its limits (the sums of its apps')
//!         ├── _stage1/      the supervisor and the pod's init (never an app's name: app
//!         │                 names are lowercase letters, digits and '-')
//!         └── <app>/        one leaf per app: its limits, memory.oom.group, a device program
//! ```
//!
//! No process is ever in a cgroup that has controllers enabled for its children (the
//! no-internal-process rule): the stage1's own processes live in the `_stage1` leaf, and
//! only `memory pids cpu io` (those the parent offers) are enabled, level by level. The
//! supervisor moves itself out of BASE (unless BASE is the root, which may hold processes)
//! so BASE can delegate; a BASE that still holds other processes (a shell's cgroup, no
//! systemd) cannot, and then a pod that asks for limits is refused with what to do.
//!
//! Written by hand rather than with cgroups-rs: on v2 it ignores the caller's cgroup (every
//! pod landed at `/sys/fs/cgroup/orbit/<uuid>`) and writes `+controller` for every
//! controller into each new cgroup, which breaks the no-internal-process rule. cgroup2 is a
//! handful of files.

use std::path::{Path, PathBuf};

use orbit_stage1::Resources;

/// Where cgroup2 is mounted on a v2-only host.
pub const MOUNT: &str = "/sys/fs/cgroup";

/// The leaf of the stage1's own processes.
pub const STAGE1_LEAF: &str = "_stage1";

/// True when `/sys/fs/cgroup` is a cgroup2 mount (a v2-only host).
pub fn unified() -> bool {
    static UNIFIED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *UNIFIED.get_or_init(|| {
        nix::sys::statfs::statfs(MOUNT)
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false)
    })
}

/// The cgroup2 path of process `pid` ("self"), as `/a/b` (the `0::` line).
pub fn path_of(pid: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("cannot read /proc/{pid}/cgroup: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
        .ok_or_else(|| format!("/proc/{pid}/cgroup has no cgroup2 (0::) line"))
}

/// A pod's cgroup tree below BASE.
#[derive(Debug, Clone)]
pub struct Pod {
    /// BASE, as a directory.
    base: PathBuf,
    /// `BASE/orbit/<uuid>`.
    dir: PathBuf,
    /// The supervisor moved itself into the `_stage1` leaf.
    supervisor_in_leaf: bool,
}

fn io_err<'a>(what: &str, path: &'a Path) -> impl FnOnce(std::io::Error) -> String + 'a {
    let what = what.to_string();
    move |e| format!("{what} {}: {e}", path.display())
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    let p = dir.join(file);
    std::fs::write(&p, value).map_err(|e| format!("cannot write '{value}' to {}: {e}", p.display()))
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

/// Makes cgroup directory `dir` unless it exists.
fn make_dir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(format!("cannot create cgroup {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// The value of `key` in a flat keyed file (`memory.events`, `cpu.stat`…).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

impl Pod {
    /// The tree of pod `uuid` below BASE `base` (`/a/b`, as `/proc/self/cgroup` shows it).
    pub fn at(base: &str, uuid: &str) -> Pod {
        let base = Path::new(MOUNT).join(base.trim_start_matches('/'));
        let dir = base.join("orbit").join(uuid);
        Pod {
            base,
            dir,
            supervisor_in_leaf: false,
        }
    }

    /// The pod's cgroup.
    pub fn pod_dir(&self) -> &Path {
        &self.dir
    }

    /// App `app`'s leaf.
    pub fn app_dir(&self, app: &str) -> PathBuf {
        self.dir.join(app)
    }

    /// BASE is the host's root cgroup, which may hold processes and hand controllers down at
    /// once. (The root of a cgroup namespace is an ordinary cgroup: it has a `cgroup.type`.)
    fn is_root(&self) -> bool {
        self.base == Path::new(MOUNT) && !self.base.join("cgroup.type").exists()
    }

    /// Creates the tree and enables the controllers down to the pod. When the calling
    /// process (the supervisor) and its children are all BASE holds, they move into the
    /// `_stage1` leaf so BASE can delegate; otherwise they stay and the pod's init is moved
    /// into the leaf ([`Pod::join_stage1`]). `needs_limits`: some app asks for a limit, so a
    /// BASE that cannot delegate is an error, not a pod without controllers.
    pub fn create(&mut self, needs_limits: bool) -> Result<(), String> {
        let orbit = self.base.join("orbit");
        make_dir(&orbit)?;
        make_dir(&self.dir)?;
        let leaf = self.dir.join(STAGE1_LEAF);
        make_dir(&leaf)?;
        if !self.is_root() {
            if let Some(ours) = only_ours(&self.base) {
                for pid in ours {
                    match write(&leaf, "cgroup.procs", &pid.to_string()) {
                        // A child (the machined helper) may have exited meanwhile.
                        Err(_) if pid != std::process::id() => {}
                        other => other?,
                    }
                }
                self.supervisor_in_leaf = true;
            }
        }
        let wanted = orbit_stage1::cgroup2::available(&self.base);
        for level in [&self.base, &orbit, &self.dir] {
            if let Err(e) = enable(level, &wanted) {
                if needs_limits {
                    return Err(format!(
                        "{e}: cgroup v2 gives a cgroup's children controllers only while it \
                         holds no process itself, and {} holds other processes than orbit's; \
                         run orbit in a cgroup of its own (a systemd manager on the system bus \
                         gives each pod a scope; or `systemd-run --scope -p Delegate=yes orbit \
                         run …`), or drop the pod's limits",
                        self.base.display()
                    ));
                }
                // No limits asked: the pod still gets cgroups of its own (kill, cpu stats).
                break;
            }
        }
        Ok(())
    }

    /// Moves process `pid` (the pod's init) into the `_stage1` leaf, unless it is there
    /// already: a child of a supervisor that moved there itself.
    pub fn join_stage1(&self, pid: i32) -> Result<(), String> {
        if self.supervisor_in_leaf {
            return Ok(());
        }
        write(
            &self.dir.join(STAGE1_LEAF),
            "cgroup.procs",
            &pid.to_string(),
        )
    }

    /// The leaf the pod's init is to start in (`CLONE_INTO_CGROUP`), unless it inherits it
    /// from a supervisor that moved there itself.
    pub fn stage1_leaf_for_init(&self) -> Option<PathBuf> {
        (!self.supervisor_in_leaf).then(|| self.dir.join(STAGE1_LEAF))
    }

    /// Sets the pod's limits.
    pub fn set_pod_limits(&self, r: &Resources) -> Result<(), String> {
        apply(&self.dir, r).map_err(|e| format!("pod cgroup: {e}"))
    }

    /// Makes app `app`'s leaf anew (a leaf left by an earlier start or app of that name is
    /// removed first: the device program and limits must be this start's). Refused while the
    /// old leaf still has processes.
    pub fn new_app_leaf(&self, app: &str) -> Result<PathBuf, String> {
        let dir = self.app_dir(app);
        if dir.exists() {
            if keyed(&read(&dir, "cgroup.events"), "populated") == Some(1) {
                return Err(format!(
                    "app {app}'s cgroup {} still has processes",
                    dir.display()
                ));
            }
            remove_tree(&dir, Path::new(""));
        }
        make_dir(&dir)?;
        Ok(dir)
    }

    /// Sets app `app`'s limits in its leaf (see [`Pod::new_app_leaf`]).
    pub fn set_app_limits(&self, app: &str, r: &Resources) -> Result<(), String> {
        let dir = self.app_dir(app);
        apply(&dir, r).map_err(|e| format!("app {app}'s cgroup: {e}"))?;
        // An OOM kill takes the whole app, not one of its processes (as the kubelet asks).
        if dir.join("memory.oom.group").exists() {
            write(&dir, "memory.oom.group", "1")?;
        }
        Ok(())
    }

    /// True when the OOM killer killed a process of app `app`.
    pub fn oom_killed(&self, app: &str) -> bool {
        keyed(&read(&self.app_dir(app), "memory.events"), "oom_kill").unwrap_or(0) > 0
    }

    /// Hands app `app`'s leaf to a `--private-users` pod's root (host `uid`/`gid`): the
    /// leaf's `cgroup.procs` and, since a move needs write access to the common ancestor's
    /// `cgroup.procs` too, the pod's. Limits and the device program stay the host's.
    pub fn delegate_app(&self, app: &str, uid: u32, gid: u32) -> Result<(), String> {
        for p in [
            self.app_dir(app).join("cgroup.procs"),
            self.dir.join("cgroup.procs"),
        ] {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                .map_err(io_err("cannot delegate", &p))?;
        }
        Ok(())
    }

    /// Kills what is left of app `app` and removes its leaf.
    pub fn remove_app(&self, app: &str) {
        remove_tree(&self.app_dir(app), Path::new(""));
    }

    /// Kills every process of the pod but the caller and removes its cgroups, deepest first;
    /// the leaf the caller is in stays (the pod's unit, or `orbit gc`, removes it).
    pub fn remove(&self) {
        let own = path_of("self")
            .map(|p| Path::new(MOUNT).join(p.trim_start_matches('/')))
            .unwrap_or_default();
        remove_tree(&self.dir, &own);
        // BASE/orbit goes once its last pod has (another pod's start may race: harmless).
        let _ = std::fs::remove_dir(self.base.join("orbit"));
    }
}

/// The processes of cgroup `dir` when they are the caller and its children only.
fn only_ours(dir: &Path) -> Option<Vec<u32>> {
    let me = std::process::id();
    let pids: Vec<u32> = read(dir, "cgroup.procs")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let ours = |pid: &u32| {
        *pid == me
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // The field after the command (which may hold spaces) is the state, then the ppid.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(me)
    };
    pids.iter().all(ours).then_some(pids)
}

/// Enables `controllers` for the children of `dir`, saying where on failure.
fn enable(dir: &Path, controllers: &[&str]) -> Result<(), String> {
    orbit_stage1::cgroup2::enable(dir, controllers).map_err(|e| {
        format!(
            "cannot write '{}' to {}: {e}",
            controllers
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" "),
            dir.join("cgroup.subtree_control").display()
        )
    })
}

/// Kills and removes `dir`'s subtree, deepest first, sparing cgroup `own` (and its
/// ancestors) and the calling process.
fn remove_tree(dir: &Path, own: &Path) {
    crate::cgroupfs::remove_tree(dir, own, kill_all);
}

/// SIGKILLs every process of cgroup `dir` (`cgroup.kill`, Linux 5.14, or one by one).
fn kill_all(dir: &Path) {
    if keyed(&read(dir, "cgroup.events"), "populated") == Some(0) {
        return;
    }
    if write(dir, "cgroup.kill", "1").is_err() {
        crate::cgroupfs::kill_listed(dir);
    }
}

/// The `cpu.max` line for `millis` millicores.
fn cpu_max(millis: u64) -> String {
    use orbit_stage1::cgroup2::{cfs_quota_us, CFS_PERIOD_US};
    format!("{} {CFS_PERIOD_US}", cfs_quota_us(millis))
}

/// Writes the limits `r` sets into cgroup `dir`; an asked-for limit whose controller is
/// not enabled here is an error that says so.
fn apply(dir: &Path, r: &Resources) -> Result<(), String> {
    let need = |file: &str, what: &str| {
        if dir.join(file).exists() {
            Ok(())
        } else {
            Err(format!(
                "{what} needs the {} controller, which {} does not have (not enabled by its parent)",
                file.split('.').next().unwrap_or(file),
                dir.display()
            ))
        }
    };
    if let Some(bytes) = r.memory {
        need("memory.max", "--memory")?;
        write(dir, "memory.max", &bytes.to_string())?;
        // No swap: the limit is the memory the app gets (the file exists with swap
        // accounting only).
        if dir.join("memory.swap.max").exists() {
            write(dir, "memory.swap.max", "0")?;
        }
    }
    if let Some(millis) = r.cpu_millis {
        need("cpu.max", "--cpu")?;
        write(dir, "cpu.max", &cpu_max(millis))?;
    }
    if let Some(shares) = r.cpu_shares {
        need("cpu.weight", "--cpu-shares")?;
        let weight = orbit_stage1::cgroup2::shares_to_weight(shares);
        write(dir, "cpu.weight", &weight.to_string())?;
    }
    if let Some(n) = r.pids {
        need("pids.max", "--pids-limit")?;
        write(dir, "pids.max", &n.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_are_read_by_key() {
        let events = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(keyed(events, "oom_kill"), Some(2));
        assert_eq!(keyed(events, "oom"), Some(1));
        assert_eq!(keyed(events, "missing"), None);
    }

    #[test]
    fn cpu_conversions() {
        assert_eq!(cpu_max(250), "25000 100000");
        assert_eq!(cpu_max(1), "1000 100000", "clamped to the kernel minimum");
    }

    #[test]
    fn layout_below_the_base() {
        let p = Pod::at("/machine.slice/orbit-x.scope", "u1");
        assert_eq!(
            p.pod_dir(),
            Path::new("/sys/fs/cgroup/machine.slice/orbit-x.scope/orbit/u1")
        );
        assert_eq!(
            p.app_dir("web"),
            Path::new("/sys/fs/cgroup/machine.slice/orbit-x.scope/orbit/u1/web")
        );
        assert!(!Pod::at("/machine.slice", "u1").is_root());
    }
}
