//! What the CRI server knows about a sandbox or container beyond what orbit records itself,
//! kept in the pod's directory (the filesystem is the database: a restarted `orbit cri`
//! reads it back, and `orbit rm`/gc removes it with the pod):
//!
//! - `cri/sandbox.pb`: the `PodSandboxConfig` the kubelet sent (protobuf), and
//!   `cri/sandbox.json`: the runtime handler and creation time;
//! - `cri/containers/<id>.pb`: each container's `ContainerConfig`, and
//!   `cri/containers/<id>.json`: its app name, image, log path, creation time.

use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};

use super::proto;
use crate::pod::store::{PodRef, PodStore};

/// The sandbox's own facts.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SandboxMeta {
    /// The RuntimeClass handler it was run with.
    pub runtime_handler: String,
    /// Unix nanoseconds.
    pub created_at: i64,
}

/// A container's own facts.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ContainerMeta {
    /// The app in the pod that is this container.
    pub app: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// The image's manifest digest.
    pub image_id: String,
    /// The image as the kubelet named it.
    pub image_ref: String,
    /// Where the kubelet reads the log (sandbox log directory + container log path).
    pub log_path: String,
}

/// A sandbox read back from its pod.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The pod.
    pub pod: PodRef,
    /// What the kubelet asked for.
    pub config: proto::PodSandboxConfig,
    /// The rest.
    pub meta: SandboxMeta,
}

/// A container read back from its pod.
#[derive(Debug, Clone)]
pub struct Container {
    /// Its ID.
    pub id: String,
    /// Its sandbox.
    pub sandbox: Sandbox,
    /// What the kubelet asked for.
    pub config: proto::ContainerConfig,
    /// The rest.
    pub meta: ContainerMeta,
}

fn dir(pod: &Path) -> PathBuf {
    pod.join("cri")
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    orbit_stage1::status::write_atomic(path, bytes)
}

/// Records a sandbox in its (prepared) pod.
pub fn save_sandbox(
    pod: &Path,
    config: &proto::PodSandboxConfig,
    meta: &SandboxMeta,
) -> std::io::Result<()> {
    write_atomic(
        &dir(pod).join("sandbox.json"),
        &serde_json::to_vec(meta).expect("serializes"),
    )?;
    write_atomic(&dir(pod).join("sandbox.pb"), &config.encode_to_vec())
}

/// Reads a pod's sandbox record; `None` for a pod the CRI did not make (or one vanishing).
pub fn load_sandbox(pod: &PodRef) -> Option<Sandbox> {
    let d = dir(&pod.path);
    let config =
        proto::PodSandboxConfig::decode(std::fs::read(d.join("sandbox.pb")).ok()?.as_slice())
            .ok()?;
    let meta = serde_json::from_slice(&std::fs::read(d.join("sandbox.json")).ok()?).ok()?;
    Some(Sandbox {
        pod: pod.clone(),
        config,
        meta,
    })
}

/// Every CRI sandbox in the store.
pub fn sandboxes(pods: &PodStore) -> Vec<Sandbox> {
    pods.list()
        .unwrap_or_default()
        .iter()
        .filter_map(load_sandbox)
        .collect()
}

/// Records a container in its sandbox's pod.
pub fn save_container(
    pod: &Path,
    id: &str,
    config: &proto::ContainerConfig,
    meta: &ContainerMeta,
) -> std::io::Result<()> {
    let d = dir(pod).join("containers");
    write_atomic(&d.join(format!("{id}.pb")), &config.encode_to_vec())?;
    write_atomic(
        &d.join(format!("{id}.json")),
        &serde_json::to_vec(meta).expect("serializes"),
    )
}

/// Forgets a container.
pub fn remove_container(pod: &Path, id: &str) {
    let d = dir(pod).join("containers");
    let _ = std::fs::remove_file(d.join(format!("{id}.json")));
    let _ = std::fs::remove_file(d.join(format!("{id}.pb")));
}

fn load_container(sandbox: &Sandbox, id: &str) -> Option<Container> {
    let d = dir(&sandbox.pod.path).join("containers");
    let config =
        proto::ContainerConfig::decode(std::fs::read(d.join(format!("{id}.pb"))).ok()?.as_slice())
            .ok()?;
    let meta = serde_json::from_slice(&std::fs::read(d.join(format!("{id}.json"))).ok()?).ok()?;
    Some(Container {
        id: id.to_string(),
        sandbox: sandbox.clone(),
        config,
        meta,
    })
}

/// The containers of a sandbox.
pub fn containers_of(sandbox: &Sandbox) -> Vec<Container> {
    let d = dir(&sandbox.pod.path).join("containers");
    let mut out: Vec<Container> = std::fs::read_dir(d)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".json")?;
            load_container(sandbox, id)
        })
        .collect();
    out.sort_by_key(|c| c.meta.created_at);
    out
}

/// Finds a container by ID (or unique ID prefix) in any sandbox.
pub fn find_container(pods: &PodStore, id: &str) -> Option<Container> {
    if id.is_empty() || id.contains('/') {
        return None;
    }
    let mut found: Vec<Container> = sandboxes(pods)
        .iter()
        .flat_map(containers_of)
        .filter(|c| c.id.starts_with(id))
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

/// Finds a sandbox by ID (or unique ID prefix).
pub fn find_sandbox(pods: &PodStore, id: &str) -> Option<Sandbox> {
    if id.is_empty() {
        return None;
    }
    let pod = pods.find(id).ok()?;
    load_sandbox(&pod)
}
