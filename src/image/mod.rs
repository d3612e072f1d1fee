//! The image store: an OCI image layout of verified blobs plus a store of unpacked layers.

pub mod unpack;
