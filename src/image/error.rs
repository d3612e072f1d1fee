//! The image store's error type: every variant names what failed and hints at what to do.

use std::io;
use std::path::{Path, PathBuf};

use super::digest::BadDigest;
use super::media::MediaTypeError;

/// Errors of the image store, sources and fetch.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A source file or directory does not exist.
    #[error("{what} not found: {path}")]
    NotFound { what: String, path: PathBuf },
    /// The store's filesystem is mounted read-only.
    #[error("cannot write {path}: the filesystem is read-only; use a writable store with --dir or ORBIT_DIR")]
    ReadOnlyStore { path: PathBuf },
    /// The disk is full.
    #[error("cannot write {path}: no space left on the device; free some space (`orbit image gc`) or use another store with --dir")]
    DiskFull { path: PathBuf },
    /// A destination outside the store (export, extract, render) is on a full disk.
    #[error("cannot write {path}: no space left on the device; free some space there or choose a destination on another filesystem")]
    DestinationFull { path: PathBuf },
    /// A destination outside the store is on a read-only filesystem.
    #[error("cannot write {path}: the filesystem is read-only; choose a writable destination")]
    DestinationReadOnly { path: PathBuf },
    /// A blob or layer of the store does not match its digest.
    #[error("the store is corrupt: {what}; run `orbit image verify` to see what is damaged, then remove and fetch the image again")]
    CorruptStore { what: String },
    /// Any other I/O failure.
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
    /// A source path is of the wrong kind for its transport.
    #[error("{path} is {is}; did you mean {suggestion}?")]
    WrongTransport {
        path: PathBuf,
        is: &'static str,
        suggestion: String,
    },
    /// An archive ended early.
    #[error(
        "{what} is truncated (it ends in the middle of an entry); re-create or re-download it"
    )]
    Truncated { what: String },
    /// An archive is not a tar file.
    #[error("{what} is not a readable tar archive: {detail}")]
    UnreadableArchive { what: String, detail: String },
    /// A JSON document does not parse or lacks required fields.
    #[error("{what} is malformed: {detail}")]
    Malformed { what: String, detail: String },
    /// A descriptor has a media type orbit does not handle.
    #[error("{what}: {error}")]
    MediaType { what: String, error: MediaTypeError },
    /// A manifest/index media type orbit does not read.
    #[error("{what} has unsupported media type '{media_type}'")]
    UnsupportedManifest { what: String, media_type: String },
    /// Content does not hash to the digest it is named by.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}; the source is corrupt or was tampered with")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A blob is larger or smaller than its descriptor says.
    #[error("size mismatch for {what}: descriptor says {expected} bytes, read {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    /// A malformed digest string.
    #[error(transparent)]
    BadDigest(#[from] BadDigest),
    /// No image matches a reference.
    #[error(
        "image '{0}' is not in the store (see `orbit image list`, or fetch it with `orbit fetch`)"
    )]
    UnknownImage(String),
    /// A reference matches several images.
    #[error("'{reference}' is ambiguous: it matches {}; use more digits or the full name", .candidates.join(", "))]
    Ambiguous {
        reference: String,
        candidates: Vec<String>,
    },
    /// A source reference that orbit cannot parse.
    #[error("unsupported image source '{0}': use oci:DIR[:REF], oci-archive:FILE[:REF] or docker-archive:FILE[:REF]")]
    BadSource(String),
    /// A source holds several images and no reference picked one.
    #[error("{source_name} holds several images ({}); pick one with {source_name}:REF, REF being one of those names or digests", .refs.join(", "))]
    SourceAmbiguous {
        source_name: String,
        refs: Vec<String>,
    },
    /// A source reference names no image in the source.
    #[error("{source_name} has no image named '{reference}' (it has: {})", .refs.join(", "))]
    NoSuchRef {
        source_name: String,
        reference: String,
        refs: Vec<String>,
    },
    /// An image with no usable name (what `cosign save` writes); `signed_as` lists the
    /// identities its signatures name, as a hint (they are not trusted for that).
    #[error("{source_name} does not name its image; give it a name with --name NAME[:TAG]{}",
        if .signed_as.is_empty() { String::new() } else {
            format!(" (its signatures name {}: that name, with a tag of your choice)", .signed_as.join(", "))
        })]
    Unnamed {
        source_name: String,
        signed_as: Vec<String>,
    },
    /// An invalid image name.
    #[error("'{0}' is not a valid image name (expected e.g. example.com/app:1.0)")]
    BadName(String),
    /// A layer failed to unpack.
    #[error("{layer}: {error}")]
    Unpack {
        layer: String,
        error: crate::image::unpack::UnpackError,
    },
    /// Signature verification failed.
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    /// A detached signature file is unreadable.
    #[error(transparent)]
    SigFile(#[from] crate::trust::SigFileError),
    /// A registry could not be used.
    #[error("registry {registry}: {detail}")]
    Registry { registry: String, detail: String },
    /// A registries.conf file is unreadable or wrong.
    #[error(transparent)]
    RegistriesConf(#[from] crate::image::registries_conf::ConfError),
    /// A short name that registries.conf does not let orbit resolve.
    #[error(transparent)]
    ShortName(#[from] crate::image::registries_conf::shortnames::ShortNameError),
    /// registries.conf blocks the name.
    #[error("{name} is blocked: it falls under [[registry]] prefix = \"{prefix}\" with blocked = true in {}; pull it from another registry, or change that file", .file.display())]
    Blocked {
        name: String,
        prefix: String,
        file: PathBuf,
    },
    /// Every place an image could come from (mirrors, the registry, search registries)
    /// failed.
    #[error("cannot pull {name} from any of the {} place(s) tried:\n  {}", .attempts.len(), .attempts.join("\n  "))]
    AllLocationsFailed {
        name: String,
        /// `"mirror X: why"` / `"X: why"`, in the order tried.
        attempts: Vec<String>,
    },
    /// Platform selection found nothing.
    #[error("{source_name} has no manifest for this platform ({platform}); fetch an image built for {platform}")]
    NoPlatform {
        source_name: String,
        platform: String,
    },
}

impl ImageError {
    /// Wraps an I/O error about `path`, turning a full disk or read-only store into the
    /// dedicated, actionable variants.
    pub fn io(context: impl Into<String>, path: &Path, err: io::Error) -> ImageError {
        match err.raw_os_error() {
            Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error() => ImageError::DiskFull {
                path: path.to_path_buf(),
            },
            Some(code) if code == rustix::io::Errno::ROFS.raw_os_error() => {
                ImageError::ReadOnlyStore {
                    path: path.to_path_buf(),
                }
            }
            _ => ImageError::Io {
                context: format!("{} ({})", context.into(), path.display()),
                error: err,
            },
        }
    }

    /// Like [`ImageError::io`], for a destination the user chose outside the store: a full
    /// disk or read-only filesystem gets advice about that destination, not the store.
    pub fn io_dest(context: impl Into<String>, path: &Path, err: io::Error) -> ImageError {
        match ImageError::io(context, path, plain_io(err)) {
            ImageError::DiskFull { path } => ImageError::DestinationFull { path },
            ImageError::ReadOnlyStore { path } => ImageError::DestinationReadOnly { path },
            other => other,
        }
    }

    /// A closure for `map_err` that wraps an I/O error about `path`.
    pub fn io_at<'a>(
        context: &'a str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> ImageError + 'a {
        move |e| ImageError::io(context, path, e)
    }

    /// A malformed-JSON error.
    pub fn malformed(what: impl Into<String>, detail: impl ToString) -> ImageError {
        ImageError::Malformed {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// The OS error alone, without what a library (tempfile) added to its message (such as the
/// path of a temp file the user never asked for).
pub fn plain_io(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => e,
    }
}

/// Result alias for the image store.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;
