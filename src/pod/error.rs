//! Errors of the pod store, preparation and stage1 invocation.

use std::path::{Path, PathBuf};

/// What went wrong with a pod.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// No pod matches.
    #[error("no pod matches '{0}' (see `orbit list`)")]
    UnknownPod(String),
    /// Several pods match an abbreviated UUID.
    #[error("'{prefix}' is ambiguous: it matches pods {}; give more of the UUID", .candidates.join(", "))]
    AmbiguousPod {
        prefix: String,
        candidates: Vec<String>,
    },
    /// An I/O failure.
    #[error("{context} {path}: {error}")]
    Io {
        context: String,
        path: PathBuf,
        error: std::io::Error,
    },
    /// A bad command-line specification (volume, mount, env, user…).
    #[error("{0}")]
    BadSpec(String),
    /// An image problem.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// Networking failed.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// The stage1 cannot be used.
    #[error("{0}")]
    Stage1(String),
    /// The built-in flavors' binary is not installed next to the orbit binary.
    #[error("the built-in stage1 binary {} is missing: install it next to orbit (`install -m755 target/release/orbit target/release/orbit-stage1 /usr/local/bin/`; `cargo build --release` builds both)", .path.display())]
    MissingStage1Binary { path: PathBuf },
    /// A stage1 speaks another interface version.
    #[error("stage1 '{name}' implements interface version {found}, but this orbit supports only version {supported}; use a stage1 built for interface {supported}")]
    UnsupportedInterface {
        name: String,
        found: u32,
        supported: u32,
    },
    /// The pod is in a state that does not allow the operation.
    #[error("pod {uuid} is {state}: {what}")]
    WrongState {
        uuid: String,
        state: String,
        what: String,
    },
    /// The pod's files are unreadable.
    #[error("pod {uuid}: {detail}")]
    Corrupt { uuid: String, detail: String },
}

impl PodError {
    /// Wraps an I/O error about `path`.
    pub fn io(context: &str, path: &Path, error: std::io::Error) -> PodError {
        PodError::Io {
            context: context.to_string(),
            path: path.to_path_buf(),
            error,
        }
    }
}
