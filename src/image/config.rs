//! The parts of an image config orbit reads: the diff-IDs of its layers and the run config.

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::error::{ImageError, Result};

/// An image configuration (OCI or Docker; unknown fields are ignored).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// Creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The run configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    /// The layer diff-IDs.
    pub rootfs: RootFs,
}

/// How to run the image.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// User (name or uid[:gid]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Environment, `KEY=VALUE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// Ports, `"80/tcp": {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<serde_json::Value>,
    /// Volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<serde_json::Value>,
    /// Stop signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

/// The rootfs section of a config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digests of the uncompressed layer tars, in order.
    pub diff_ids: Vec<String>,
}

impl ImageConfig {
    /// Parses a config blob.
    pub fn parse(bytes: &[u8], what: &str) -> Result<ImageConfig> {
        let c: ImageConfig =
            serde_json::from_slice(bytes).map_err(|e| ImageError::malformed(what, e))?;
        if c.rootfs.kind != "layers" {
            return Err(ImageError::malformed(
                what,
                format!("rootfs.type is '{}', expected 'layers'", c.rootfs.kind),
            ));
        }
        Ok(c)
    }

    /// The validated diff-IDs.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        self.rootfs
            .diff_ids
            .iter()
            .map(|d| Ok(d.parse::<Digest>()?))
            .collect()
    }
}
