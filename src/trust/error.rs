//! Typed errors of the trust module, one enum per concern, plus [`TrustError`] which wraps
//! them all and adds the verification failures a user sees when running an image.

use std::path::PathBuf;

use thiserror::Error;

use super::keys::KeyAlgorithm;

/// Errors while parsing, generating or serializing keys.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The input is not PEM at all, or its framing is broken.
    #[error("not a valid PEM file: {0}")]
    Pem(pem::PemError),

    /// The PEM file holds no block of the expected kind.
    #[error("expected a PEM `{expected}` block, but found {found}{hint}")]
    UnexpectedPem {
        /// The tag that was expected, e.g. `PUBLIC KEY`.
        expected: &'static str,
        /// Human description of what was found (tags or "no PEM block").
        found: String,
        /// Extra advice appended to the message (may be empty).
        hint: &'static str,
    },

    /// The PEM file holds more than one candidate block.
    #[error("the PEM file contains {count} `{tag}` blocks; put exactly one key in the file")]
    MultiplePem {
        /// The tag that occurs more than once.
        tag: String,
        /// How many times it occurs.
        count: usize,
    },

    /// The DER inside the PEM block is malformed.
    #[error("malformed {what}: {detail}")]
    Der {
        /// What was being decoded, e.g. "SubjectPublicKeyInfo".
        what: &'static str,
        /// The DER decoder's complaint (the `der` crate's error is not `std::error::Error`
        /// without its `std` feature, so it is kept as text).
        detail: String,
    },

    /// The key uses an algorithm (or curve) orbit does not support.
    #[error(
        "unsupported key type {description}; orbit supports ECDSA P-256 (prime256v1) and \
         Ed25519 keys, as produced by `cosign generate-key-pair` or \
         `openssl genpkey -algorithm ed25519`"
    )]
    UnsupportedAlgorithm {
        /// The algorithm (and curve) that was found, with OIDs.
        description: String,
    },

    /// The private key is encrypted.
    #[error(
        "the private key is encrypted (`{tag}`); encrypted keys, including cosign's \
         password-protected keys, are not supported yet. Use an unencrypted PKCS#8 key instead: \
         decrypt a PKCS#8 or OpenSSL key with `openssl pkey -in ENCRYPTED.key -out key.pem`, or \
         create the key with openssl (`openssl genpkey -algorithm EC -pkeyopt \
         ec_paramgen_curve:P-256 -out key.pem`) and give the same file to cosign with \
         `cosign import-key-pair --key key.pem`"
    )]
    Encrypted {
        /// The PEM tag (or header) that marked the key as encrypted.
        tag: String,
    },

    /// The key material is inconsistent or invalid for its algorithm.
    #[error("invalid {algorithm} key: {reason}")]
    Rejected {
        /// The algorithm the key claims to be.
        algorithm: KeyAlgorithm,
        /// Why it was rejected.
        reason: String,
    },

    /// The system random number generator failed while generating a key.
    #[error("could not generate a {0} key: the system random number generator failed")]
    Generate(KeyAlgorithm),
}

/// Errors while parsing a simple-signing payload.
#[derive(Debug, Error)]
pub enum PayloadError {
    /// The payload is not JSON of the simple-signing shape.
    #[error("the signature payload is not a valid simple-signing JSON document: {0}")]
    Json(serde_json::Error),

    /// The payload is JSON but of a signature type orbit does not know.
    #[error(
        "unsupported signature payload type {found:?}; expected \"cosign container image \
         signature\" or \"atomic container signature\""
    )]
    UnsupportedType {
        /// The `critical.type` that was found.
        found: String,
    },
}

/// Errors while reading or writing a detached signature file (`<source>.sig`).
#[derive(Debug, Error)]
pub enum SigFileError {
    /// The signature file does not exist.
    #[error("signature file {} does not exist", path.display())]
    NotFound {
        /// The path that was looked for.
        path: PathBuf,
    },

    /// Reading or writing the file failed.
    #[error("cannot access signature file {}: {error}", path.display())]
    Io {
        /// The signature file.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },

    /// The file is not valid signature JSON.
    #[error(
        "signature file {} is not valid: {error}; expected a JSON array of \
         {{\"payload\": BASE64, \"signature\": BASE64}} objects",
        path.display()
    )]
    Json {
        /// The signature file.
        path: PathBuf,
        /// The JSON error.
        error: serde_json::Error,
    },

    /// A field of an entry is not valid base64.
    #[error(
        "signature file {}: entry {} has an invalid base64 `{field}`: {error}",
        path.display(),
        index + 1
    )]
    Base64 {
        /// The signature file.
        path: PathBuf,
        /// Zero-based index of the entry.
        index: usize,
        /// `payload` or `signature`.
        field: &'static str,
        /// The base64 decoder's complaint.
        error: base64::DecodeError,
    },
}

/// Errors of the trusted-key store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A trust prefix is not acceptable.
    #[error("invalid trust prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The rejected prefix.
        prefix: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// Reading or writing the store failed.
    #[error("cannot access trusted key store at {}: {error}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },

    /// A file in the store does not hold a usable public key.
    #[error(
        "trusted key file {} is not a valid public key: {error}; fix or delete the file",
        path.display()
    )]
    BadKeyFile {
        /// The offending key file.
        path: PathBuf,
        /// Why the key could not be parsed.
        error: KeyError,
    },

    /// A prefix directory name in the store cannot be decoded.
    #[error(
        "trusted key directory {} has an invalid name ({reason}); rename or delete it",
        path.display()
    )]
    BadEntry {
        /// The offending directory.
        path: PathBuf,
        /// Why its name is invalid.
        reason: &'static str,
    },

    /// A fingerprint selector is not a (prefix of a) hex fingerprint.
    #[error(
        "invalid key fingerprint {selector:?}: expected hex digits of a SHA-256 fingerprint, \
         optionally prefixed with `sha256:` (see `orbit trust list`)"
    )]
    InvalidSelector {
        /// The rejected selector.
        selector: String,
    },

    /// No trusted key matched a selector.
    #[error(
        "no trusted key matches {selector:?}{}; see `orbit trust list`",
        scope_note(scope)
    )]
    NoMatch {
        /// The selector that matched nothing.
        selector: String,
        /// The scope restriction, if any, rendered for humans.
        scope: Option<String>,
    },

    /// Several different keys matched a fingerprint prefix.
    #[error(
        "key fingerprint {selector:?} is ambiguous: it matches {}; give more digits",
        candidates.join(", ")
    )]
    Ambiguous {
        /// The ambiguous selector.
        selector: String,
        /// The full fingerprints it matches.
        candidates: Vec<String>,
    },
}

fn scope_note(scope: &Option<String>) -> String {
    scope
        .as_ref()
        .map(|s| format!(" in {s}"))
        .unwrap_or_default()
}

/// Why an image could not be verified, plus wrappers for the other trust errors so callers can
/// use `?` uniformly.
#[derive(Debug, Error)]
pub enum TrustError {
    /// The image came without any signature.
    #[error(
        "no signature found for {image}; sign it with `orbit image sign --key KEY ...` or pass \
         --insecure-options=image to skip verification"
    )]
    NoSignature {
        /// The image name as given by the user.
        image: String,
    },

    /// The image has signatures but no key is trusted for its repository.
    #[error(
        "no key is trusted for {repository} (needed to verify {image}); trust the publisher's \
         key with `orbit trust --prefix {repository} KEY.pub`"
    )]
    NoTrustedKey {
        /// The image name as given by the user.
        image: String,
        /// The repository (image name without tag or digest) keys were looked up for.
        repository: String,
    },

    /// Signatures exist and keys are trusted, but no signature is valid.
    #[error(
        "{image} is not signed by a trusted key: none of its {} signature(s) verified with the \
         key(s) trusted for {repository} ({}). {}. Make sure the image was signed with one of \
         these keys for this exact image and manifest, or trust the publisher's key with \
         `orbit trust --prefix {repository} KEY.pub`",
        details.len(),
        expected.join(", "),
        capitalize(&details.join("; "))
    )]
    Untrusted {
        /// The image name as given by the user.
        image: String,
        /// The repository (image name without tag or digest) keys were looked up for.
        repository: String,
        /// Fingerprints (`sha256:…`) of the trusted keys that were tried.
        expected: Vec<String>,
        /// One explanation per signature of why it was not accepted.
        details: Vec<String>,
    },

    /// The trusted-key store could not be read or changed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A key could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),

    /// A payload could not be parsed.
    #[error(transparent)]
    Payload(#[from] PayloadError),

    /// A signature file could not be read or written.
    #[error(transparent)]
    SigFile(#[from] SigFileError),
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
