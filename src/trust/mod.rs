//! Signatures and trust: cosign-compatible simple signing, keys and the trusted-key store.
