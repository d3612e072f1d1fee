//! The pod's network status (`network.json` in the pod directory), written by stage0 once
//! the pod's CNI networks are attached; read by `orbit status`/`list` and by stage1s that
//! need the addresses (the `kvm` flavor).

use serde::{Deserialize, Serialize};

/// The networks a pod is attached to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    /// The pinned network namespace (absolute path when written).
    pub netns: String,
    /// One entry per network, in interface order.
    pub networks: Vec<NetworkAttachment>,
}

/// One network's interface in the pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAttachment {
    /// The network's name.
    pub name: String,
    /// The interface inside the pod (`eth0`, …).
    pub interface: String,
    /// The pod's addresses on it, CIDR notation.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The gateways of those addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// The interface's MAC address, when the plugin reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}
