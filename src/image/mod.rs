//! The image store: an OCI image layout of verified blobs plus a store of unpacked layers.

#[cfg(orbit_wip)]
pub mod catalog;
#[cfg(orbit_wip)]
pub mod config;
pub mod digest;
#[cfg(orbit_wip)]
pub mod error;
#[cfg(orbit_wip)]
pub mod export;
#[cfg(orbit_wip)]
pub mod extract;
#[cfg(orbit_wip)]
pub mod fetch;
#[cfg(orbit_wip)]
pub mod gc;
#[cfg(orbit_wip)]
pub mod layout;
pub mod media;
#[cfg(orbit_wip)]
pub mod reference;
#[cfg(orbit_wip)]
pub mod signatures;
#[cfg(orbit_wip)]
pub mod source;
#[cfg(orbit_wip)]
pub mod store;
pub mod unpack;
#[cfg(orbit_wip)]
pub mod verify;

#[cfg(orbit_wip)]
pub use error::{ImageError, Result};
