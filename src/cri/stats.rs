//! Container and sandbox statistics from their cgroups (the stage1 makes
//! `orbit/<uuid>` per pod and `orbit/<uuid>/<app>` per app below the base it recorded in
//! `cgroups.json`): CPU time, memory usage and working set, process count, and the
//! writable layer's size. cgroup v1 and v2 are both read.

use std::path::{Path, PathBuf};

use super::cgroups::cgroup_dir;
use super::proto;
use super::records::{Container, Sandbox};

fn read_u64(path: PathBuf) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn stat_field(path: PathBuf, key: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

fn value(v: Option<u64>) -> Option<proto::UInt64Value> {
    v.map(|value| proto::UInt64Value { value })
}

/// CPU and memory of cgroup `rel` of the pod at `pod`.
fn usage(pod: &Path, rel: &str) -> (proto::CpuUsage, proto::MemoryUsage, Option<u64>) {
    let now = super::now();
    let v2 = cgroup_dir(pod, "", rel);
    let cpu_ns = match &v2 {
        Some(d) => stat_field(d.join("cpu.stat"), "usage_usec").map(|u| u * 1000),
        None => cgroup_dir(pod, "cpuacct", rel).and_then(|d| read_u64(d.join("cpuacct.usage"))),
    };
    let (usage, inactive) = match &v2 {
        Some(d) => (
            read_u64(d.join("memory.current")),
            stat_field(d.join("memory.stat"), "inactive_file"),
        ),
        None => {
            let d = cgroup_dir(pod, "memory", rel);
            (
                d.as_ref()
                    .and_then(|d| read_u64(d.join("memory.usage_in_bytes"))),
                d.and_then(|d| stat_field(d.join("memory.stat"), "total_inactive_file")),
            )
        }
    };
    let pids = match &v2 {
        Some(d) => read_u64(d.join("pids.current")),
        None => cgroup_dir(pod, "pids", rel).and_then(|d| read_u64(d.join("pids.current"))),
    };
    (
        proto::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: value(cpu_ns),
            usage_nano_cores: None,
        },
        proto::MemoryUsage {
            timestamp: now,
            working_set_bytes: value(usage.map(|u| u.saturating_sub(inactive.unwrap_or(0)))),
            usage_bytes: value(usage),
            ..Default::default()
        },
        pids,
    )
}

/// CPU and memory from what the stage1 reported in `usage` (its apps' cgroups are not the
/// host's: kvm).
fn reported(usage: &orbit_stage1::AppUsage) -> (proto::CpuUsage, proto::MemoryUsage) {
    let now = super::now();
    (
        proto::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: value(usage.cpu_nanos),
            usage_nano_cores: None,
        },
        proto::MemoryUsage {
            timestamp: now,
            working_set_bytes: value(usage.working_set_bytes),
            usage_bytes: value(usage.memory_bytes),
            ..Default::default()
        },
    )
}

/// A container's statistics.
pub fn container(c: &Container) -> proto::ContainerStats {
    let pod = &c.sandbox.pod.path;
    let (mut cpu, mut memory, _) =
        usage(pod, &format!("orbit/{}/{}", c.sandbox.pod.uuid, c.meta.app));
    if cpu.usage_core_nano_seconds.is_none() && memory.usage_bytes.is_none() {
        let file = orbit_stage1::paths::app_usage(pod, &c.meta.app);
        if let Some(u) = orbit_stage1::AppUsage::read(&file) {
            (cpu, memory) = reported(&u);
        }
    }
    let upper = orbit_stage1::paths::app_dir(pod, &c.meta.app).join("upper");
    let (bytes, inodes) = super::du(&upper);
    proto::ContainerStats {
        attributes: Some(proto::ContainerAttributes {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
        }),
        cpu: Some(cpu),
        memory: Some(memory),
        writable_layer: Some(proto::FilesystemUsage {
            timestamp: super::now(),
            fs_id: Some(proto::FilesystemIdentifier {
                mountpoint: upper.display().to_string(),
            }),
            used_bytes: value(Some(bytes)),
            inodes_used: value(Some(inodes)),
        }),
        swap: None,
    }
}

/// A sandbox's statistics, with its containers'.
pub fn sandbox(s: &Sandbox, containers: &[Container]) -> proto::PodSandboxStats {
    let (mut cpu, mut memory, mut pids) = usage(&s.pod.path, &format!("orbit/{}", s.pod.uuid));
    if cpu.usage_core_nano_seconds.is_none() && memory.usage_bytes.is_none() {
        // No cgroup of the sandbox's on the host (kvm): the sum of what its apps reported.
        let reported: Vec<orbit_stage1::AppUsage> = containers
            .iter()
            .filter_map(|c| {
                orbit_stage1::AppUsage::read(&orbit_stage1::paths::app_usage(
                    &s.pod.path,
                    &c.meta.app,
                ))
            })
            .collect();
        if !reported.is_empty() {
            // Saturating: the numbers come from the guest.
            let sum = |f: fn(&orbit_stage1::AppUsage) -> Option<u64>| {
                reported
                    .iter()
                    .map(f)
                    .try_fold(0u64, |acc, v| Some(acc.saturating_add(v?)))
            };
            (cpu, memory) = self::reported(&orbit_stage1::AppUsage {
                cpu_nanos: sum(|u| u.cpu_nanos),
                memory_bytes: sum(|u| u.memory_bytes),
                working_set_bytes: sum(|u| u.working_set_bytes),
                pids: sum(|u| u.pids),
            });
            pids = sum(|u| u.pids);
        }
    }
    proto::PodSandboxStats {
        attributes: Some(proto::PodSandboxAttributes {
            id: s.pod.uuid.clone(),
            metadata: s.config.metadata.clone(),
            labels: s.config.labels.clone(),
            annotations: s.config.annotations.clone(),
        }),
        linux: Some(proto::LinuxPodSandboxStats {
            cpu: Some(cpu),
            memory: Some(memory),
            network: None,
            process: Some(proto::ProcessUsage {
                timestamp: super::now(),
                process_count: value(pids),
            }),
            containers: containers.iter().map(container).collect(),
        }),
        windows: None,
    }
}
