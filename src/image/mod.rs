//! The image store: an OCI image layout of verified blobs plus a store of unpacked layers.

pub mod catalog;
pub mod config;
pub mod digest;
pub mod error;
pub mod export;
pub mod extract;
pub mod fetch;
pub mod gc;
pub mod layout;
pub mod media;
pub mod reference;
pub mod registries_conf;
pub mod registry;
pub mod signatures;
pub mod source;
pub mod store;
pub mod unpack;
pub mod verify;

pub use error::{ImageError, Result};
