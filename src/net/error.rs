//! Errors of pod networking.

use std::path::PathBuf;

/// What went wrong while attaching or detaching a pod's networks.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No conflist defines the network.
    #[error("network '{name}': no such network (built in: default, default-restricted; searched {searched}){broken}")]
    UnknownNetwork {
        name: String,
        searched: String,
        /// Files in net.d that could not be read, as a sentence (empty when none).
        broken: String,
    },
    /// A conflist is malformed.
    #[error("network '{name}': {path}: {detail}; fix the file or remove it")]
    BadConfig {
        name: String,
        path: PathBuf,
        detail: String,
    },
    /// A plugin binary is missing.
    #[error("network '{network}': CNI plugin '{plugin}' not found in {searched}; install containernetworking-plugins or pass --cni-plugin-dir")]
    MissingPlugin {
        network: String,
        plugin: String,
        searched: String,
    },
    /// A plugin failed.
    #[error("network '{network}': CNI plugin '{plugin}' failed {command}: {message}")]
    Plugin {
        network: String,
        plugin: String,
        command: String,
        message: String,
    },
    /// A host port is taken.
    #[error("--port {port}: {detail}; pick another host port")]
    PortTaken { port: String, detail: String },
    /// A bad `--net`, `--port`, `--dns` or `--hosts-entry` value.
    #[error("{0}")]
    BadSpec(String),
    /// A firewall tool (`nft`, `iptables`) is missing or failed.
    #[error("firewall ({tool}): {detail}")]
    Firewall { tool: String, detail: String },
    /// The network namespace could not be made or removed.
    #[error("network namespace {path}: {detail}")]
    Netns { path: PathBuf, detail: String },
    /// Other I/O.
    #[error("{context} {path}: {error}")]
    Io {
        context: String,
        path: PathBuf,
        error: std::io::Error,
    },
}

impl NetError {
    /// Wraps an I/O error about `path`.
    pub fn io(context: &str, path: &std::path::Path, error: std::io::Error) -> NetError {
        NetError::Io {
            context: context.to_string(),
            path: path.to_path_buf(),
            error,
        }
    }
}
