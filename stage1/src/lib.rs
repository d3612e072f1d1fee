//! The orbit stage1 interface, version 1: the types and file conventions shared by stage0
//! and every stage1 flavor. `stage1/INTERFACE.md` describes the same contract in prose; the
//! two must agree.

pub mod agent;
pub mod cgroup2;
pub mod confine;
pub mod devices;
pub mod isolators;
pub mod log;
pub mod manifest;
pub mod net;
pub mod netif;
pub mod paths;
pub mod procs;
pub mod seccomp;
pub mod status;

pub use isolators::{Isolators, Resources, Seccomp};
pub use manifest::{
    net_mode, App, AppImage, AppRootfs, AppUser, Device, LogTarget, Mount, Network, NetworkRef,
    PodManifest, PortMapping, Propagation, Stage1Manifest, UserNamespace, Volume, VolumeImage,
    VolumeKind, ENTRYPOINTS, MAX_OVERLAY_LAYERS, OPTIONAL_ENTRYPOINTS,
};
pub use net::{NetworkAttachment, NetworkStatus};
pub use status::{AppState, AppStatus, AppUsage};

/// The stage1 interface version this build of orbit speaks.
pub const INTERFACE_VERSION: u32 = 1;

/// Set by stage0 when systemd is moving the `run` process into a unit's cgroup (the value
/// names it, e.g. `orbit-<uuid>.scope`): `run` waits until /proc/self/cgroup shows it before
/// it starts the pod, so every pod process lands in the unit.
pub const WAIT_CGROUP_ENV: &str = "ORBIT_WAIT_CGROUP";

/// True when a `/proc/PID/cgroup` text puts the process in unit `unit`'s cgroup or below it,
/// in any hierarchy.
pub fn in_unit(cgroups: &str, unit: &str) -> bool {
    cgroups
        .lines()
        .any(|l| l.split('/').skip(1).any(|c| c == unit))
}

/// Waits until process `pid`'s cgroup path (any hierarchy) is unit `unit`'s cgroup or below
/// it (on cgroup v2 the stage1 moves itself into a leaf of the unit's delegated tree), at
/// most `timeout`; true when it got there.
pub fn wait_in_cgroup(pid: u32, unit: &str, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if in_unit(&cgroups, unit) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    false
}

/// Exit status of `run` when the stage1 itself failed (not an app).
pub const EXIT_STAGE1_FAILURE: i32 = 125;
/// Exit status when an app's executable cannot be run (not found / not executable).
pub const EXIT_EXEC_FAILED: i32 = 127;
