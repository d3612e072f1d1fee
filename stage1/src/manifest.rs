//! `stage1.json` (what a stage1 offers) and `pod.json` (what stage0 asks of it).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The entrypoints every stage1 of interface version 1 provides.
pub const ENTRYPOINTS: [&str; 8] = [
    "run",
    "enter",
    "stop",
    "gc",
    "app-add",
    "app-start",
    "app-stop",
    "app-rm",
];

/// Entrypoints a stage1 may provide (stage0 says clearly when one is missing).
pub const OPTIONAL_ENTRYPOINTS: [&str; 4] = [
    "app-log-reopen",
    "app-stdin-close",
    "app-resize",
    "port-forward",
];

/// `stage1.json`: a stage1's self-description.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Stage1Manifest {
    /// The interface version the stage1 implements.
    pub interface_version: u32,
    /// Its name (`ns`, `fly`, `kvm`, or an external one's).
    pub name: String,
    /// Entrypoint name → executable path, relative to the stage1 directory.
    pub entrypoints: BTreeMap<String, String>,
}

/// `pod.json`: everything a stage1 needs to run a pod. Written by stage0 before `run`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodManifest {
    /// Interface version this manifest follows.
    pub interface_version: u32,
    /// The pod's UUID.
    pub uuid: String,
    /// Hostname inside the pod.
    pub hostname: String,
    /// The apps, in start order.
    pub apps: Vec<App>,
    /// Volumes apps may mount.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Network request.
    #[serde(default)]
    pub network: Network,
    /// Where the apps' output goes besides the terminal (`--log`).
    #[serde(default)]
    pub log: LogTarget,
    /// Run the pod in a user namespace with this private id range (`--private-users`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<UserNamespace>,
    /// A mutable pod (`orbit app sandbox`): the stage1 keeps running with no apps and waits
    /// for `app-add` / `app-start`.
    #[serde(default)]
    pub mutable: bool,
    /// Pod annotations (`orbit.dev/stage1`, …).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Namespaces the pod shares with the host instead of having its own: `pid`, `ipc`
    /// (the network's is `network.mode = host`). Only the `ns` stage1 creates them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_namespaces: Vec<String>,
}

impl PodManifest {
    /// The volume mount `m` mounts.
    pub fn volume_of(&self, m: &Mount) -> Result<&Volume, String> {
        self.volumes
            .iter()
            .find(|v| v.name == m.volume)
            .ok_or_else(|| format!("mount of unknown volume '{}'", m.volume))
    }

    /// Whether the pod shares namespace `kind` (`pid`, `ipc`) with the host.
    pub fn shares_host(&self, kind: &str) -> bool {
        self.host_namespaces.iter().any(|n| n == kind)
    }
}

/// One app of a pod.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct App {
    /// Unique name within the pod.
    pub name: String,
    /// The image it runs.
    pub image: AppImage,
    /// argv; `exec[0]` is resolved in the app's root and PATH.
    pub exec: Vec<String>,
    /// Environment, `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Identity the app runs as.
    #[serde(default)]
    pub user: AppUser,
    /// Working directory inside the app root.
    #[serde(default = "default_workdir")]
    pub working_directory: String,
    /// The app's root filesystem.
    pub rootfs: AppRootfs,
    /// Mount the root filesystem read-only.
    #[serde(default)]
    pub read_only_rootfs: bool,
    /// Volume mounts.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Host device nodes made in the app and allowed by its device cgroup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// Attach a terminal (one app only).
    #[serde(default)]
    pub interactive: bool,
    /// Standard input from the FIFO `apps/NAME/stdin`, which attaching clients write (CRI
    /// `stdin`); with `interactive`, its bytes go to the app's terminal instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    /// A pid namespace of its own inside the pod's, whose PID 1 the app is (the CRI's
    /// default); otherwise the app shares the pod's (`ns` only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pid_namespace: bool,
    /// Capabilities, no_new_privs, seccomp, masked paths, resource limits.
    #[serde(default)]
    pub isolators: crate::Isolators,
    /// App annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn default_workdir() -> String {
    "/".into()
}

/// The image an app came from.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AppImage {
    /// The name it was referred to by.
    pub name: String,
    /// Its manifest digest.
    pub digest: String,
}

/// Numeric identity (names are resolved by stage0 in the image's /etc/passwd and /etc/group).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AppUser {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary gids.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// The most image layers an overlay root is assembled from (as docker and containerd run):
/// stage0 refuses a deeper image before it makes a pod; the stage1 names that many lower
/// directories in one mount, through short links when their full paths overflow the page
/// the kernel copies mount options into.
pub const MAX_OVERLAY_LAYERS: usize = 127;

/// How an app's root is assembled.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AppRootfs {
    /// Read-only layer directories, top layer first (overlayfs `lowerdir` order). Empty when
    /// the root was copied (`--no-overlay`): then `apps/<name>/rootfs` already holds it.
    #[serde(default)]
    pub lowers: Vec<PathBuf>,
    /// Use overlayfs (`lowers` + `apps/<name>/upper` + `work`).
    pub overlay: bool,
}

/// A volume mount into an app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// Volume name.
    pub volume: String,
    /// Absolute path inside the app.
    pub target: String,
    /// Whether mounts the host makes below a host volume later reach the app.
    #[serde(default, skip_serializing_if = "Propagation::is_private")]
    pub propagation: Propagation,
}

/// Mount propagation of a volume mount (`mount_namespaces(7)`). Only a `shared` volume
/// propagates mounts from a pod back to the host.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    /// Nothing propagates either way (the default).
    #[default]
    Private,
    /// A slave of the host's mount: mounts and unmounts the host makes below the source
    /// later show in the app (CRI `HostToContainer`). The source must be on a shared or
    /// slave mount of the host.
    Slave,
    /// A peer of the host's mount: mounts either side makes below it show on the other
    /// (CRI `Bidirectional`, for privileged node agents such as CSI drivers). The source
    /// must be on a shared mount of the host.
    Shared,
}

impl Propagation {
    fn is_private(&self) -> bool {
        *self == Propagation::Private
    }
}

/// A device node made in the app, as the host's node at `host_path` (CRI `Device`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Absolute path of the node inside the app.
    pub path: String,
    /// The host's node it copies (bound instead of made in a user namespace).
    pub host_path: PathBuf,
    /// `c` (character) or `b` (block).
    pub kind: char,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits of the node (e.g. 0o666).
    pub file_mode: u32,
    /// What the app may do with it, a subset of `rwm` (read, write, mknod): the app's
    /// device cgroup rule.
    pub permissions: String,
}

/// A pod volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: VolumeKind,
    /// Host path (kind `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    /// Mount read-only: the mount of the source only (mounts the host made below it stay
    /// as they are), unless [`Volume::recursive_read_only`].
    #[serde(default)]
    pub read_only: bool,
    /// With `read_only`: every mount below the source read-only too (`mount_setattr(2)`
    /// with `AT_RECURSIVE`, Linux 5.12 or later).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recursive_read_only: bool,
    /// In a pod with a user namespace: seen through an idmapped mount with the pod's own id
    /// mapping (host id 0 shows as the pod's 0, and what the pod's root writes is owned by
    /// host id 0), as the kubelet asks with a CRI mount's `uidMappings`/`gidMappings`.
    /// Otherwise the pod's ids meet the files' host ids as they are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idmap: bool,
    /// The image whose layers a volume of kind `image` shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<VolumeImage>,
}

/// The image an `image` volume shows (CRI image volumes, KEP-4639): its unpacked layers,
/// mounted read-only (an overlay without an upper directory), as an app's root is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VolumeImage {
    /// The name it was referred to by.
    pub name: String,
    /// Its manifest digest.
    pub digest: String,
    /// Its layer directories, top layer first (overlayfs `lowerdir` order); never written.
    pub lowers: Vec<PathBuf>,
}

impl Volume {
    /// The host path of a `host` volume.
    pub fn host_source(&self) -> Result<PathBuf, String> {
        self.source
            .clone()
            .ok_or_else(|| format!("host volume '{}' has no source", self.name))
    }

    /// The layers of an `image` volume, top first.
    pub fn image_lowers(&self) -> Result<&[PathBuf], String> {
        match &self.image {
            Some(i) if !i.lowers.is_empty() => Ok(&i.lowers),
            _ => Err(format!("image volume '{}' has no layers", self.name)),
        }
    }
}

/// Volume kinds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// A host directory or file, bind-mounted.
    Host,
    /// An empty directory in the pod directory (`volumes/<name>`), shared by the pod's apps.
    Empty,
    /// An image's layers, read-only ([`Volume::image`]). Given only to the built-in `ns`
    /// and `fly` stage1s: a stage1 written before it could not read such a manifest.
    Image,
}

/// The network a pod asks for.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// `none` (own empty namespace with loopback), `host`, or `cni`: stage0 has made the
    /// pod's network namespace, pinned at [`crate::paths::NETNS`] in the pod directory,
    /// and attached [`Network::networks`] to it; the stage1 joins it.
    pub mode: String,
    /// The CNI networks, in interface order (`eth0`, `eth1`, …), for mode `cni`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkRef>,
    /// Ports forwarded from the host to the pod (mode `cni`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
}

/// The pod network modes.
pub mod net_mode {
    /// Own network namespace with loopback only.
    pub const NONE: &str = "none";
    /// The host's network namespace.
    pub const HOST: &str = "host";
    /// A namespace made by stage0 with CNI networks attached.
    pub const CNI: &str = "cni";
}

/// A CNI network a pod is attached to: `--net=NAME[:ARGS]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRef {
    /// The network's name (`default`, `default-restricted`, or a conflist in `net.d/`).
    pub name: String,
    /// Extra `CNI_ARGS` (`K=V;K=V`) for this network's plugins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
}

/// A port forwarded from the host into the pod (CNI `portMappings`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port's name in the image, when it was given by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The port inside the pod.
    pub container_port: u16,
    /// The port on the host.
    pub host_port: u16,
    /// The host address to listen on (all addresses when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// A pod's private uid/gid range: pod ids 0..size map to host ids base..base+size.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserNamespace {
    /// First host uid (pod uid 0).
    pub uid_base: u32,
    /// First host gid (pod gid 0).
    pub gid_base: u32,
    /// Number of ids.
    pub size: u32,
}

/// Where app output is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LogTarget {
    /// The per-app CRI log file (`apps/<name>/log`).
    pub file: bool,
    /// journald's native socket, when lines also go to the journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<PathBuf>,
}

impl Default for LogTarget {
    fn default() -> Self {
        LogTarget {
            file: true,
            journal: None,
        }
    }
}
