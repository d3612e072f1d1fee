//! The `kvm` flavor's host ↔ guest-agent protocol: the agent's configuration (a file on the
//! pod share) and the messages on the virtio-serial port, one JSON object per line.

use serde::{Deserialize, Serialize};

/// The virtio-serial port name the agent talks on.
pub const PORT_NAME: &str = "orbit.agent";
/// The 9p mount tag of the guest's view of the pod (never the pod directory itself: only
/// the apps' roots, the empty volumes, the /etc files and the agent's configuration).
pub const POD_TAG: &str = "pod";
/// Where the agent mounts that view in the guest.
pub const POD_MOUNT: &str = "/pod";
/// The agent's configuration, relative to the view.
pub const CONFIG_FILE: &str = "agent.json";
/// The 9p mount tag of the pod's host volumes: every app's, those of apps added while the
/// VM runs too, attached by the host below one share made at boot (`<app>/<volume>`);
/// uncached, as the host may change them and mount below them.
pub const HOST_VOLUMES_TAG: &str = "volumes";
/// Where the agent mounts [`HOST_VOLUMES_TAG`] in the guest.
pub const HOST_VOLUMES_MOUNT: &str = "/volumes";

/// The pod annotation carrying a kvm pod's sysctls for the guest ([`AgentConfig::sysctls`]),
/// a JSON object; stage0 (the CRI) checks them before it sets it.
pub const SYSCTLS_ANNOTATION: &str = "orbit.dev/kvm-sysctls";

/// Why a kvm pod cannot have the host's network: its VM has a kernel, and so a network
/// stack, of its own (a port it listens on would be on the VM's loopback, not the host's).
pub const HOST_NETWORK_REFUSED: &str = "a kvm pod cannot use the host's network: its VM has \
     a network stack of its own; use a CNI network (or none), or the ns stage1 for host \
     networking";

/// Why a kvm pod's volume cannot be bidirectional (`Propagation::Shared`, the CRI's
/// PROPAGATION_BIDIRECTIONAL): the host's later mounts would reach it, but a mount made in the
/// VM is the guest kernel's and can never reach the host.
pub const BIDIRECTIONAL_REFUSED: &str = "a kvm pod's volumes cannot be bidirectional: a \
     mount made in the VM belongs to the guest's kernel and cannot reach the host; use \
     HostToContainer (the host's mounts do reach the VM) or the ns stage1";

/// What the agent runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    /// The pod's hostname.
    pub hostname: String,
    /// The apps, in order.
    pub apps: Vec<GuestApp>,
    /// Extra 9p shares, uncached (the host volumes' [`HOST_VOLUMES_TAG`]): tag and guest
    /// mount point.
    #[serde(default)]
    pub shares: Vec<GuestShare>,
    /// The guest's network interfaces, in order (`eth0`, …).
    #[serde(default)]
    pub interfaces: Vec<GuestInterface>,
    /// Chatty agent.
    #[serde(default)]
    pub debug: bool,
    /// A mutable pod: apps come and go ([`ToGuest::StartApp`], [`ToGuest::RemoveApp`]), and
    /// the VM powers off only when stopped, not when its apps have exited.
    #[serde(default)]
    pub mutable: bool,
    /// Sysctls the agent sets in the guest before any app starts: paths below /proc/sys
    /// (`net/ipv4/ip_forward`) and values. The guest is the pod's own kernel, so these are
    /// the pod's alone.
    #[serde(default)]
    pub sysctls: std::collections::BTreeMap<String, String>,
}

/// One app, as the guest sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GuestApp {
    /// The app's name.
    pub name: String,
    /// Its root in the guest (on the pod share).
    pub root: String,
    /// argv.
    pub exec: Vec<String>,
    /// Environment.
    pub env: Vec<String>,
    /// uid, gid, supplementary gids.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// See `uid`.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// Working directory inside the root.
    pub working_directory: String,
    /// Bind mounts: guest source → target inside the root.
    #[serde(default)]
    pub mounts: Vec<GuestMount>,
    /// The pod's /etc files to bind (guest paths), by target name.
    #[serde(default)]
    pub etc_files: Vec<GuestMount>,
    /// Memory limit in bytes (a cgroup in the guest; exceeding it is an OOM kill).
    #[serde(default)]
    pub memory: Option<u64>,
    /// Read-only root.
    #[serde(default)]
    pub read_only_rootfs: bool,
    /// Runs on the VM's serial console (the user's terminal) instead of with piped output.
    #[serde(default)]
    pub interactive: bool,
    /// Reads the input the host relays ([`ToGuest::AppInput`], ended by
    /// [`ToGuest::AppCloseInput`]) instead of an empty one (an attachable app).
    #[serde(default)]
    pub stdin: bool,
    /// Gets a terminal of the guest's (not the console), whose output is its stdout and whose
    /// size [`ToGuest::AppResize`] sets (an app with a terminal in a running VM).
    #[serde(default)]
    pub terminal: bool,
    /// Its confinement in the guest, as an `ns` app's on the host: capabilities,
    /// no_new_privs, masked and read-only paths, every device (a privileged app), and a
    /// seccomp filter by name, which the agent refuses: the host sends it compiled
    /// ([`GuestApp::seccomp`]). A configuration without it gets the secure defaults.
    #[serde(default)]
    pub isolators: crate::Isolators,
    /// The app's seccomp filter compiled by the host ([`crate::seccomp::to_words`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<Vec<Vec<u64>>>,
    /// A pid namespace of its own, whose PID 1 the app is (the CRI's default); otherwise it
    /// shares the VM's.
    #[serde(default)]
    pub pid_namespace: bool,
}

/// The guest console an interactive app gets as its terminal.
pub const CONSOLE: &str = "/dev/ttyS0";

/// A bind mount in the guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GuestMount {
    /// Guest path.
    pub source: String,
    /// Path inside the app root.
    pub target: String,
    /// Read-only in the guest, with every mount below it (one 9p mount is one mount in
    /// the guest). A host volume read-only on its own mount only is not: the host's side of
    /// the share is (the 9p server answers EROFS), and the host's mounts below it are not.
    #[serde(default)]
    pub read_only: bool,
}

/// An extra 9p share.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GuestShare {
    /// 9p mount tag.
    pub tag: String,
    /// Guest mount point.
    pub path: String,
}

/// A guest NIC's configuration (the pod's CNI address, moved into the VM).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GuestInterface {
    /// Addresses, CIDR.
    pub ips: Vec<String>,
    /// Default gateway, if any.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// Output streams.
pub const STDOUT: u8 = 1;
/// See [`STDOUT`].
pub const STDERR: u8 = 2;

/// Guest → host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum ToHost {
    /// The agent is up and read its configuration.
    Ready,
    /// An app started (guest pid).
    Started { app: String, pid: i32 },
    /// An app could not start.
    Failed {
        app: String,
        code: i32,
        error: String,
    },
    /// Output of an app.
    Output {
        app: String,
        stream: u8,
        data: String,
    },
    /// An app exited: code (128+n for a signal), the signal, whether its memory limit killed it.
    Exited {
        app: String,
        code: i32,
        signal: Option<i32>,
        oom: bool,
    },
    /// Output of an `exec` ([`encode`]d: it may be any bytes).
    ExecOutput { id: u64, stream: u8, data: String },
    /// An `exec` ended.
    ExecExited { id: u64, code: i32 },
    /// An app's mounts in the guest are gone ([`ToGuest::RemoveApp`]); `error` if it could
    /// not be removed.
    Removed { app: String, error: Option<String> },
    /// What each app uses (answer to [`ToGuest::Usage`]).
    Usage { apps: Vec<GuestUsage> },
    /// A forwarded connection is open, or (`error`) could not be made.
    Connected { id: u64, error: Option<String> },
    /// Bytes from a forwarded connection's port ([`encode`]d).
    ConnData { id: u64, data: String },
    /// The port's side of a forwarded connection is done sending.
    ConnClosed { id: u64 },
    /// Every app has exited; the guest powers off next.
    Done,
}

/// One app's use of the VM, from its cgroup in the guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GuestUsage {
    /// The app.
    pub app: String,
    /// What it uses.
    pub usage: crate::AppUsage,
}

/// Host → guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum ToGuest {
    /// SIGTERM to every app (`orbit stop`).
    Stop,
    /// SIGKILL to every app.
    Kill,
    /// Run `argv` in `app`'s root with its identity and environment (`orbit enter`); with
    /// `stdin` its input comes in `ExecInput`s, with `tty` it gets a terminal of the guest's.
    Exec {
        id: u64,
        app: String,
        argv: Vec<String>,
        #[serde(default)]
        stdin: bool,
        #[serde(default)]
        tty: bool,
        /// The terminal's size from the start (columns, rows).
        #[serde(default)]
        size: Option<(u16, u16)>,
    },
    /// Input for an `exec` ([`encode`]d).
    ExecInput { id: u64, data: String },
    /// The end of an `exec`'s input (on a terminal: the EOF character).
    ExecCloseInput { id: u64 },
    /// The size of an `exec`'s terminal.
    ExecResize { id: u64, cols: u16, rows: u16 },
    /// Kill an `exec` and what it started (its client is gone, or asked): every process of
    /// its session, answered by its `ExecExited` once none is left (zombies count).
    ExecKill { id: u64 },
    /// Input for an app with [`GuestApp::stdin`] ([`encode`]d).
    AppInput { app: String, data: String },
    /// The end of an app's input (on a terminal: the EOF character).
    AppCloseInput { app: String },
    /// The size of an app's terminal ([`GuestApp::terminal`]).
    AppResize { app: String, cols: u16, rows: u16 },
    /// Start an app added to a mutable pod (answered by `Started` or `Failed`).
    StartApp { app: Box<GuestApp> },
    /// Send signal number `signal` to an app.
    StopApp { app: String, signal: i32 },
    /// Forget an exited app and unmount what the guest mounted for it (answered by
    /// `Removed`).
    RemoveApp { app: String },
    /// Report what the running apps use (answered by `Usage`).
    Usage,
    /// Connect to `port` on the VM's loopback (answered by `Connected`).
    Connect { id: u64, port: u16 },
    /// Bytes for a forwarded connection ([`encode`]d).
    ConnData { id: u64, data: String },
    /// The client's side of a forwarded connection is done sending.
    ConnClose { id: u64 },
    /// The client of a forwarded connection is gone: close both directions.
    ConnAbort { id: u64 },
}

/// Binary data as message text (base64).
pub fn encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// [`encode`]'s inverse; `None` for text that is not base64.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// A request on a `kvm` pod's control socket for a connection to `port` on the VM's
/// loopback (the `port-forward` entrypoint): answered `ok` or `error MESSAGE` on a line,
/// then the connection's bytes both ways.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForwardRequest {
    /// The port.
    pub port: u16,
}

/// Encodes a message as one line.
pub fn line<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec(msg).expect("message serializes");
    v.push(b'\n');
    v
}

/// Kernel command-line word that makes the agent only print [`PROBE_MARKER`] and power off
/// (the host's check that an accelerator boots the guest).
pub const PROBE_ARG: &str = "orbit.probe";
/// See [`PROBE_ARG`].
pub const PROBE_MARKER: &str = "orbit-kvm-probe-ok";

/// A request on a `kvm` pod's control socket (from `orbit enter`): run `argv` in `app`; the
/// answers are [`ToHost::ExecOutput`] lines and a final [`ToHost::ExecExited`]. With `stdin`
/// the client then sends [`ExecControl`] lines.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecRequest {
    /// The app.
    pub app: String,
    /// The command.
    pub argv: Vec<String>,
    /// The command reads input the client sends.
    #[serde(default)]
    pub stdin: bool,
    /// The command gets a terminal (in the guest).
    #[serde(default)]
    pub tty: bool,
    /// That terminal's size from the start (columns, rows).
    #[serde(default)]
    pub size: Option<(u16, u16)>,
}

/// What an `enter` client sends after an [`ExecRequest`] with `stdin`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum ExecControl {
    /// Input bytes ([`encode`]d).
    Input { data: String },
    /// The end of the input.
    Close,
    /// The terminal's size.
    Resize { cols: u16, rows: u16 },
    /// End the command and everything it started; the answer, its `ExecExited`, comes once
    /// nothing of it is left in the guest.
    Kill,
}

/// Kernel command-line word telling the agent the VM has a NIC (load its modules).
pub const NET_ARG: &str = "orbit.net";
