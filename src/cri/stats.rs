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

/// A container's statistics.
pub fn container(c: &Container) -> proto::ContainerStats {
    let pod = &c.sandbox.pod.path;
    let (cpu, memory, _) = usage(pod, &format!("orbit/{}/{}", c.sandbox.pod.uuid, c.meta.app));
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
    let (cpu, memory, pids) = usage(&s.pod.path, &format!("orbit/{}", s.pod.uuid));
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
