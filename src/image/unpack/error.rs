//! The error type of layer unpacking.

use std::io;

/// Why a layer could not be unpacked (or a tree could not be verified).
///
/// Every variant about an entry names it as it appears in the archive (lossily decoded).
#[derive(thiserror::Error, Debug)]
pub enum UnpackError {
    /// An entry name (or whiteout) has a `..` component.
    #[error("entry `{entry}` escapes the target directory (`..` component)")]
    PathEscapes {
        /// The entry name.
        entry: String,
    },
    /// An entry's parent path goes through a symlink, which is never followed.
    #[error("entry `{entry}` would be written through the symlink `{symlink}`")]
    ThroughSymlink {
        /// The entry name.
        entry: String,
        /// The symlink on the way (normalised path inside the target).
        symlink: String,
    },
    /// A hard link does not name an existing non-directory entry inside the target.
    #[error("hard link `{entry}` -> `{target}` is refused: {reason}")]
    HardlinkEscapes {
        /// The entry name.
        entry: String,
        /// The link target as written in the archive.
        target: String,
        /// What is wrong with the target.
        reason: String,
    },
    /// A hard link names a path that exists neither in this layer nor (as a regular file)
    /// in the lower layers given in `UnpackOptions::lowers`.
    #[error("hard link `{entry}` -> `{target}` is refused: its target does not exist in this layer{}", if *.searched_lowers { " or the layers below it" } else { "" })]
    HardlinkTargetMissing {
        /// The entry name.
        entry: String,
        /// The link target as written in the archive.
        target: String,
        /// Whether lower layers were searched too.
        searched_lowers: bool,
    },
    /// An entry's parent path goes through something that is not a directory.
    #[error("entry `{entry}` cannot be created: `{component}` is not a directory")]
    NotADirectory {
        /// The entry name.
        entry: String,
        /// The offending parent (normalised path inside the target).
        component: String,
    },
    /// An entry name or link target is longer than `UnpackLimits::max_path_len`.
    #[error("entry `{entry}`: name or link target is longer than the limit of {limit} bytes")]
    PathTooLong {
        /// The entry name (possibly cut).
        entry: String,
        /// The limit.
        limit: usize,
    },
    /// The entries' sizes add up to more than `UnpackLimits::max_total_bytes`.
    #[error("entry `{entry}` takes the layer over the size limit of {limit} bytes")]
    TooLarge {
        /// The entry that crossed the limit.
        entry: String,
        /// The limit.
        limit: u64,
    },
    /// The archive has more than `UnpackLimits::max_entries` entries.
    #[error("archive has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// An entry's PAX extended attributes exceed `UnpackLimits::max_xattr_bytes`.
    #[error("extended attributes of entry `{entry}` exceed the limit of {limit} bytes")]
    XattrsTooLarge {
        /// The entry name.
        entry: String,
        /// The limit.
        limit: usize,
    },
    /// The extension headers (PAX, GNU long names, sparse maps) of one entry are too big.
    #[error("archive extension headers of one entry exceed {limit} bytes")]
    HeadersTooLarge {
        /// The limit (derived from the path and xattr limits).
        limit: u64,
    },
    /// The stream ends in the middle of an entry or without an end-of-archive marker.
    #[error("archive is truncated")]
    Truncated,
    /// The archive is not a well-formed tar stream, or an entry makes no sense.
    #[error("malformed archive: {detail}")]
    Malformed {
        /// What is wrong, naming the entry where there is one.
        detail: String,
    },
    /// Reading the layer stream itself failed (e.g. a decompression error).
    #[error("cannot read the layer stream: {error}")]
    Read {
        /// The error of the underlying reader.
        error: io::Error,
    },
    /// A filesystem operation failed.
    #[error("`{path}`: {error}")]
    Io {
        /// What was being worked on (normalised path inside the target, or the target).
        path: String,
        /// The error.
        error: io::Error,
    },
    /// Setting an extended attribute failed.
    #[error("cannot set extended attribute `{name}` on `{path}`: {error}")]
    Xattr {
        /// The normalised path inside the target.
        path: String,
        /// The attribute name.
        name: String,
        /// The error.
        error: io::Error,
    },
}

impl UnpackError {
    /// The underlying I/O error, if any: lets the caller turn ENOSPC / EROFS into friendly
    /// messages (`io::Error::raw_os_error` / `kind` are preserved).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            UnpackError::Read { error }
            | UnpackError::Io { error, .. }
            | UnpackError::Xattr { error, .. } => Some(error),
            _ => None,
        }
    }

    /// A `Malformed` error about `entry`.
    pub(super) fn malformed(entry: &str, detail: impl std::fmt::Display) -> UnpackError {
        UnpackError::Malformed {
            detail: format!("entry `{entry}`: {detail}"),
        }
    }
}

/// Wraps a rustix error about `path` (a normalised path; empty = the target).
pub(super) fn io_at(path: &[u8]) -> impl FnOnce(rustix::io::Errno) -> UnpackError + '_ {
    move |e| UnpackError::Io {
        path: super::path::display(path),
        error: e.into(),
    }
}

/// Wraps a std I/O error about `path`.
pub(super) fn std_io_at(path: &[u8]) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |e| UnpackError::Io {
        path: super::path::display(path),
        error: e,
    }
}
