//! Pods: the pod store (`pods/<state>/<uuid>/`), preparation, the stage1 launcher, status,
//! logs and garbage collection — stage0's half of the stage1 interface.

pub mod cgroup_parent;
pub mod devices;
mod error;
pub mod export;
pub mod gc;
mod identity;
pub mod isolation;
pub mod lifecycle;
pub mod logs;
pub mod mounts;
pub mod prepare;
pub mod spec;
pub mod stage1;
pub mod status;
pub mod store;
pub mod userns;

pub use error::PodError;
