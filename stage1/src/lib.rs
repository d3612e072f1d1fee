//! The orbit stage1 interface, version 1: the types and file conventions shared by stage0
//! and every stage1 flavor. `stage1/INTERFACE.md` describes the same contract in prose; the
//! two must agree.

pub mod isolators;
pub mod log;
pub mod manifest;
pub mod paths;
pub mod seccomp;
pub mod status;

pub use isolators::{Isolators, Resources, Seccomp};
pub use manifest::{
    App, AppImage, AppRootfs, AppUser, LogTarget, Mount, Network, PodManifest, Stage1Manifest,
    UserNamespace, Volume, VolumeKind, ENTRYPOINTS,
};
pub use status::{AppState, AppStatus};

/// The stage1 interface version this build of orbit speaks.
pub const INTERFACE_VERSION: u32 = 1;

/// Exit status of `run` when the stage1 itself failed (not an app).
pub const EXIT_STAGE1_FAILURE: i32 = 125;
/// Exit status when an app's executable cannot be run (not found / not executable).
pub const EXIT_EXEC_FAILED: i32 = 127;
