//! Signatures and trust: cosign-compatible simple signing, keys and the trusted-key store.
//!
//! - [`keys`]: ECDSA P-256 and Ed25519 keys in PEM (SubjectPublicKeyInfo, PKCS#8, SEC1).
//! - [`payload`]: the simple-signing JSON payload cosign signs.
//! - [`sigfile`]: detached `<source>.sig` files.
//! - [`store`]: trusted keys under `<configdir>/trustedkeys/{root.d,prefix.d}` (rkt layout).
//! - [`verify`]: deciding whether an image is signed by a trusted key.
//! - [`error`]: the typed errors of all of the above.

pub mod error;
pub(crate) mod fsutil;
pub mod keys;
pub mod payload;
pub mod sigfile;
pub mod store;
pub mod verify;

#[cfg(test)]
mod tests;

pub use error::{KeyError, PayloadError, SigFileError, StoreError, TrustError};
pub use keys::{KeyAlgorithm, PrivateKey, PublicKey};
pub use payload::{repository_of, SimpleSigningPayload};
pub use sigfile::{merge, read_sig_file, sig_path_for, write_sig_file, Signature};
pub use store::{BrokenKey, TrustScope, TrustStore, TrustedKey};
pub use verify::{verify_image, Verified};
