//! The pod's cgroups: `orbit/<uuid>` for the pod and `orbit/<uuid>/<app>` per app, below
//! the cgroup `orbit run` was started in (so a caller's limits and accounting still apply).
//! On a v1 or hybrid host, in the v1 hierarchies of `crate::cgroup1::CONTROLLERS` (the
//! hybrid cgroup2 mount carries no controller); on a v2-only host, by `crate::cgroup2`,
//! which also keeps the stage1's own processes in a leaf of their own.
//! Where they are is recorded in the pod directory (`cgroups.json`), so `gc` can remove
//! them after a supervisor that was killed never could.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;

use std::path::PathBuf;

use orbit_stage1::Resources;

use crate::cgroup1;

/// Where the pod's cgroups live.
pub struct PodCgroups {
    backend: Backend,
    /// The apps whose cgroups the supervisor prepared for their first start
    /// ([`PodCgroups::prepare_apps`]); each is taken out when it starts.
    prepared: std::cell::RefCell<Vec<String>>,
}

enum Backend {
    /// Every v1 hierarchy (`crate::cgroup1`), below the caller's cgroup in each.
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
            cgroup1::own_paths()?
        };
        let record = serde_json::to_vec(&base).expect("a map serializes");
        orbit_stage1::status::write_atomic(&pod.join(RECORD), &record)
            .map_err(|e| format!("cannot write {RECORD}: {e}"))?;
        if !unified {
            cgroup1::pod(&base, uuid).create()?;
            return Ok(PodCgroups::with(Backend::V1 {
                base,
                uuid: uuid.to_string(),
            }));
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
        Ok(PodCgroups::with(Backend::V2(v2)))
    }

    fn with(backend: Backend) -> PodCgroups {
        PodCgroups {
            backend,
            prepared: Default::default(),
        }
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
        Some(PodCgroups::with(backend))
    }

    /// On cgroup v2, the cgroup the pod's init is to start in ([`crate::fork::fork_into`]),
    /// opened; `None` where it must be moved ([`PodCgroups::join_pod`]) or need not be.
    pub fn init_cgroup(&self) -> Result<Option<OwnedFd>, String> {
        match &self.backend {
            Backend::V1 { .. } => Ok(None),
            Backend::V2(v2) => v2.stage1_leaf_for_init().map(|d| open_dir(&d)).transpose(),
        }
    }

    /// On cgroup v2, app `app`'s cgroup (made: see [`PodCgroups::ready_for_start`]), opened
    /// for the app to start in; `None` on v1, where the app joins it.
    pub fn app_cgroup(&self, app: &str) -> Result<Option<OwnedFd>, String> {
        match &self.backend {
            Backend::V1 { .. } => Ok(None),
            Backend::V2(v2) => open_dir(&v2.app_dir(app)).map(Some),
        }
    }

    /// Moves process `pid` (the pod's init, or the child that makes its user namespace)
    /// into the pod's cgroup.
    pub fn join_pod(&self, pid: i32) -> Result<(), String> {
        match &self.backend {
            Backend::V1 { base, uuid } => cgroup1::pod(base, uuid)
                .join(pid)
                .map_err(|e| format!("cannot move pid {pid} into the pod cgroup: {e}")),
            Backend::V2(v2) => v2.join_stage1(pid),
        }
    }

    /// Opens app `app`'s `cgroup.procs` files (its cgroup exists: see
    /// [`PodCgroups::ready_for_start`]), so the app can join its cgroup once its root is in
    /// place and the host's cgroup file system is out of its sight ([`Membership::join`]).
    pub fn app_membership(&self, app: &str) -> Result<Membership, String> {
        let paths: Vec<PathBuf> = match &self.backend {
            Backend::V1 { base, uuid } => cgroup1::app(base, uuid, app).procs_files().collect(),
            Backend::V2(v2) => vec![v2.app_dir(app).join("cgroup.procs")],
        };
        let mut files = Vec::new();
        for path in paths {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            files.push((path, file));
        }
        Ok(Membership {
            app: app.to_string(),
            files,
        })
    }

    /// Sets the pod cgroup's limits to the sums of its apps' limits (a limit is set only when
    /// every app has one).
    pub fn set_pod_limits(&self, apps: &[&orbit_stage1::Resources]) -> Result<(), String> {
        let total = Resources::pod_total(apps);
        match &self.backend {
            Backend::V1 { base, uuid } => cgroup1::pod(base, uuid)
                .apply(&total)
                .map_err(|e| format!("pod cgroup: {e}")),
            Backend::V2(v2) => v2.set_pod_limits(&total),
        }
    }

    /// Makes app `app`'s cgroup for a start and sets its limits (memory, CPU quota and
    /// shares, pids) and, with `restrict_devices`, its device rules (the v1 controller's, or
    /// a BPF program on v2). Called before the app joins its cgroup.
    pub fn set_app_limits(
        &self,
        app: &orbit_stage1::App,
        restrict_devices: bool,
    ) -> Result<(), String> {
        let limits = &app.isolators.resources;
        match &self.backend {
            Backend::V1 { base, uuid } => {
                let cg = cgroup1::app(base, uuid, &app.name);
                cg.create()?;
                cg.apply(limits)
                    .map_err(|e| format!("app {}'s cgroup: {e}", app.name))?;
                match cg.dir("devices") {
                    Some(dir) if restrict_devices => crate::devices::restrict_dir(dir, [app]),
                    _ => Ok(()),
                }
            }
            Backend::V2(v2) => {
                // A new leaf each start: its device program first, then its limits; a leaf
                // whose setup failed is removed, so no start runs in one without a program.
                let dir = v2.new_app_leaf(&app.name)?;
                let devices = match restrict_devices {
                    true => crate::devices::restrict_cgroup2(&dir, [app]),
                    false => Ok(()),
                };
                let setup = devices.and_then(|()| v2.set_app_limits(&app.name, limits));
                if setup.is_err() {
                    v2.remove_app(&app.name);
                }
                setup
            }
        }
    }

    /// Makes the cgroups of the pod's `apps` ready for their first start
    /// ([`PodCgroups::set_app_limits`]) before the pod's init exists. Moving the init into
    /// the pod's cgroup waits for an RCU grace period (several milliseconds) holding the
    /// kernel's cgroup lock, and making a cgroup meanwhile would wait behind it: made
    /// beforehand, only each app's own join waits, once its root is in place. An app whose
    /// cgroup fails here is left to the init, which reports the failure as the app's.
    pub fn prepare_apps(&self, apps: &[orbit_stage1::App], restrict_devices: bool) {
        for app in apps {
            if self.set_app_limits(app, restrict_devices).is_ok() {
                self.prepared.borrow_mut().push(app.name.clone());
            }
        }
    }

    /// Makes app `app`'s cgroup ready for a start: done already for its first start when
    /// the supervisor prepared it ([`PodCgroups::prepare_apps`]), else done now.
    pub fn ready_for_start(
        &self,
        app: &orbit_stage1::App,
        restrict_devices: bool,
    ) -> Result<(), String> {
        let mut prepared = self.prepared.borrow_mut();
        if let Some(i) = prepared.iter().position(|n| *n == app.name) {
            prepared.swap_remove(i);
            return Ok(());
        }
        drop(prepared);
        self.set_app_limits(app, restrict_devices)
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
        match &self.backend {
            Backend::V1 { base, uuid } => cgroup1::app(base, uuid, app).oom_killed(),
            Backend::V2(v2) => v2.oom_killed(app),
        }
    }

    /// Hands app `app`'s cgroup (already created) to a `--private-users` pod's root
    /// (host `uid`/`gid`) so the app can join it from inside its user namespace: its
    /// `cgroup.procs` (and v1 `tasks`) files change owner; limits and device rules stay the
    /// host's.
    pub fn delegate_app(&self, app: &str, uid: u32, gid: u32) -> Result<(), String> {
        match &self.backend {
            Backend::V1 { base, uuid } => cgroup1::app(base, uuid, app).delegate(uid, gid),
            Backend::V2(v2) => v2.delegate_app(app, uid, gid),
        }
    }

    /// Removes app `app`'s cgroups (a removed app of a mutable pod), killing what is left.
    pub fn remove_app(&self, app: &str) {
        match &self.backend {
            Backend::V1 { base, uuid } => cgroup1::app(base, uuid, app).remove(),
            Backend::V2(v2) => v2.remove_app(app),
        }
    }

    /// Kills whatever is left in the pod's cgroups and removes them, deepest first (on v2,
    /// all of the pod's tree but the leaf the caller itself is in).
    pub fn remove(&self) {
        match &self.backend {
            Backend::V1 { base, uuid } => cgroup1::pod(base, uuid).remove(),
            Backend::V2(v2) => v2.remove(),
        }
    }
}

/// Opens cgroup directory `dir` (for `CLONE_INTO_CGROUP`).
fn open_dir(dir: &Path) -> Result<OwnedFd, String> {
    nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("cannot open cgroup {}: {e}", dir.display()))
}

/// An app's open `cgroup.procs` files ([`PodCgroups::app_membership`]).
pub struct Membership {
    app: String,
    files: Vec<(PathBuf, std::fs::File)>,
}

impl Membership {
    /// Nothing to join: the app started in its cgroup ([`PodCgroups::app_cgroup`]).
    pub fn none() -> Membership {
        Membership {
            app: String::new(),
            files: Vec::new(),
        }
    }

    /// Moves the calling process into the app's cgroup (`0` is the writer).
    pub fn join(&self) -> Result<(), String> {
        use std::io::Write;
        for (path, file) in &self.files {
            (&*file).write_all(b"0").map_err(|e| {
                format!(
                    "cannot move into app {}'s cgroup ({}): {e}",
                    self.app,
                    path.display()
                )
            })?;
        }
        Ok(())
    }
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
}
