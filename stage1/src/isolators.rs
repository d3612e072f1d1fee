//! Per-app isolation settings in `pod.json`: capabilities, no_new_privs, seccomp, masked and
//! read-only paths, resource limits. stage0 decides them (defaults plus the user's flags);
//! the stage1 applies exactly what is written here.

use serde::{Deserialize, Serialize};

/// The classic container default capability set.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// Paths hidden from apps (an empty read-only file or directory is mounted over them).
pub const DEFAULT_MASKED_PATHS: [&str; 9] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/acpi",
    "/proc/latency_stats",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths apps may read but not write.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];

/// An app's isolation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Isolators {
    /// The capability bounding set (and, for uid 0, the effective/permitted/inheritable set),
    /// `CAP_*` names. All capabilities when the user asked for a privileged app.
    pub capabilities: Vec<String>,
    /// Capabilities a non-root app keeps as ambient (only what it was explicitly granted).
    #[serde(default)]
    pub ambient_capabilities: Vec<String>,
    /// Set `no_new_privs` (setuid binaries and file capabilities cannot raise privileges).
    pub no_new_privileges: bool,
    /// The seccomp filter; `None` runs unfiltered (`--insecure-options=seccomp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<Seccomp>,
    /// Paths masked in the app.
    #[serde(default)]
    pub masked_paths: Vec<String>,
    /// Paths made read-only in the app.
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    /// Resource limits.
    #[serde(default)]
    pub resources: Resources,
    /// Every device of the host may be opened and made (a privileged app); otherwise only
    /// the harmless ones and the app's `devices`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_devices: bool,
}

/// A seccomp allow-list: every syscall not named fails with `errno`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Seccomp {
    /// Allowed syscall names (x86_64 names; see `stage1/src/seccomp.rs`).
    pub allow: Vec<String>,
    /// The errno other syscalls fail with (EPERM = 1 by default).
    pub errno: u32,
}

/// Per-app resource limits (the pod's limits are the sums).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// CPU limit in millicores (1000 = one CPU), as a CFS quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    /// CPU shares (relative weight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// Maximum number of processes/threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// The app's OOM score adjustment (-1000..1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
}

/// The largest v1 `cpu.shares`.
pub const MAX_SHARES: u64 = 262_144;

impl Resources {
    /// A pod's limits from its apps': for each kind, the sum over the apps when every app
    /// sets it (a pod with an unlimited app, or with no app yet, is unlimited in that
    /// respect); shares at most [`MAX_SHARES`]. `oom_score_adj` is per process, not summed.
    pub fn pod_total(apps: &[&Resources]) -> Resources {
        fn sum(apps: &[&Resources], f: impl Fn(&Resources) -> Option<u64>) -> Option<u64> {
            if apps.is_empty() {
                return None;
            }
            apps.iter()
                .map(|r| f(r))
                .try_fold(0u64, |acc, v| v.map(|v| acc.saturating_add(v)))
        }
        Resources {
            memory: sum(apps, |r| r.memory),
            cpu_millis: sum(apps, |r| r.cpu_millis),
            cpu_shares: sum(apps, |r| r.cpu_shares).map(|s| s.min(MAX_SHARES)),
            pids: sum(apps, |r| r.pids),
            oom_score_adj: None,
        }
    }
}

impl Default for Isolators {
    /// The secure defaults: container capabilities, no_new_privs, the default seccomp
    /// allow-list, masked and read-only paths, no resource limits.
    fn default() -> Self {
        Isolators {
            capabilities: DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            ambient_capabilities: Vec::new(),
            no_new_privileges: true,
            seccomp: Some(Seccomp {
                allow: crate::seccomp::DEFAULT_ALLOWED
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                errno: 1,
            }),
            masked_paths: DEFAULT_MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
            readonly_paths: DEFAULT_READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect(),
            resources: Resources::default(),
            all_devices: false,
        }
    }
}
