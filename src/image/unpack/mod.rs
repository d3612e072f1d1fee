//! Safe unpacking of (possibly hostile) layer tar archives.
//!
//! Why this is hand-written rather than `tar::Entry::unpack_in` / `tar::Archive::unpack`:
//! the tar crate (0.4) works on paths, not on directory fds. For each entry it
//! `canonicalize()`s the parent directory — following symlinks, including ones the archive
//! itself created earlier — checks only that the *resolved* location is inside the
//! destination, and then creates the entry by path. So `a -> sub` followed by `a/f` writes
//! `sub/f` through the symlink (and `create_dir_all`, chmod of directories and hard-link
//! sources are path-based too), and the check-then-use leaves a window in which a swapped
//! component redirects the write. It does skip `..` entries and refuses parents that
//! resolve outside the destination, but it cannot be confined to an already-open
//! directory fd with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, it knows nothing of
//! OCI/AUFS whiteouts (`.wh.*` would be extracted as ordinary files), and with our
//! `default-features = false` it would not restore xattrs at all. So entries are read with
//! `tar::Archive::entries` and every file is created here through fds of the target
//! (`fsops.rs`): parents are opened beneath the target with no symlink resolution at all,
//! and the last component is only used with no-follow `*at` calls. Nothing is ever
//! created, modified or chowned outside the target, whatever the archive contains.
//!
//! Submodules: `path` (name rules), `stream` (reader/EOF tracking), `fsops` (confined
//! filesystem primitives), `meta` (owner/mode/xattrs/times), `apply` (per-entry checks and
//! dispatch), `parents` (opening/creating parent directories), `create` (one handler per
//! entry kind), `whiteout`, `copyup` (hard links to files of lower layers), `book` (deferred directory metadata and manifest state),
//! `manifest` (the public manifest types), `verify` (`verify_tree`), `error`.

mod apply;
mod book;
mod copyup;
mod create;
mod error;
mod fsops;
mod manifest;
mod meta;
mod parents;
mod path;
mod stream;
mod verify;
mod whiteout;

#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use error::UnpackError;
pub use manifest::{DeviceNumbers, EntryKind, LayerManifest, ManifestEntry, RawName};
pub use verify::{verify_tree, Discrepancy};

use apply::Unpacker;
use stream::{StreamState, TrackedReader};

/// How whiteout entries (`.wh.NAME`, `.wh..wh..opq`) are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Layer-store mode: target is a fresh empty dir that will be one overlayfs lower layer.
    /// `.wh.NAME` becomes a 0:0 character device NAME; `.wh..wh..opq` in dir D sets xattr
    /// `trusted.overlay.opaque=y` on D (and the marker itself is not created).
    /// Needs root (`CAP_MKNOD`, and `CAP_SYS_ADMIN` for `trusted.*` xattrs) when the layer
    /// has whiteouts.
    Overlay,
    /// Flatten mode (used by `orbit image extract/render`, applying layers in order onto one dir):
    /// `.wh.NAME` removes NAME (recursively) from the target; `.wh..wh..opq` in D empties D of
    /// everything that existed before this layer (entries added by this same layer stay).
    Apply,
}

/// Bounds on what one archive may make us do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Maximum sum of the entries' declared sizes (checked before any data is written).
    pub max_total_bytes: u64,
    /// Maximum number of entries.
    pub max_entries: u64,
    /// Maximum length of an entry name or link target, in bytes.
    pub max_path_len: usize,
    /// Maximum total size (names + values) of one entry's PAX extended attributes.
    pub max_xattr_bytes: usize,
}

impl Default for UnpackLimits {
    /// 64 GiB, 4 000 000 entries, 4096-byte names, 64 KiB of xattrs per entry.
    fn default() -> Self {
        UnpackLimits {
            max_total_bytes: 64 << 30,
            max_entries: 4_000_000,
            max_path_len: 4096,
            max_xattr_bytes: 64 << 10,
        }
    }
}

/// Options of `unpack_layer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackOptions {
    /// How whiteouts are handled.
    pub whiteouts: WhiteoutMode,
    /// Resource limits.
    pub limits: UnpackLimits,
    /// Restore owners and setuid/setgid/sticky bits and create device nodes (needs root).
    /// When false, devices are skipped (listed in `UnpackReport::skipped`) and failures to
    /// set `security.*` xattrs are ignored (also listed).
    pub preserve_owner: bool,
    /// Build a `LayerManifest` (with content digests computed while writing).
    pub record_manifest: bool,
    /// Overlay mode only: the unpacked root filesystems of the layers below this one,
    /// nearest first. A hard link whose target is not in this layer but is a regular file
    /// in one of them (and not whited out or hidden by an opaque directory on the way) is
    /// satisfied by copying that file up into this layer first, as overlayfs would on
    /// write. Empty: such a link is refused (`UnpackError::HardlinkTargetMissing`).
    /// In apply mode the target already holds the lower layers, so this is not needed.
    pub lowers: Vec<PathBuf>,
}

impl Default for UnpackOptions {
    /// Overlay whiteouts, default limits, `preserve_owner` when running as root, no manifest.
    fn default() -> Self {
        UnpackOptions {
            whiteouts: WhiteoutMode::Overlay,
            limits: UnpackLimits::default(),
            preserve_owner: rustix::process::geteuid().is_root(),
            record_manifest: false,
            lowers: Vec::new(),
        }
    }
}

/// What `unpack_layer` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Entries read (every tar member, whiteouts included; PAX/GNU extension headers are
    /// part of the entry they describe).
    pub entries: u64,
    /// Sum of the entries' declared data sizes (what `max_total_bytes` bounds).
    pub bytes: u64,
    /// Human-readable notes on what was not applied, e.g. device nodes skipped when not
    /// root, ignored `trusted.overlay.*` xattrs or whiteouts of same-layer paths.
    pub skipped: Vec<String>,
    /// The layer manifest, when `UnpackOptions::record_manifest` is set.
    pub manifest: Option<LayerManifest>,
}

/// Unpacks one (already decompressed) layer tar stream into the directory `target`.
///
/// Reading stops at the end-of-archive marker; whatever follows is left in the stream for
/// the caller to drain. A stream that ends before the marker (mid-entry, or at an entry
/// boundary without the marker) is `UnpackError::Truncated`. On error, the target holds
/// whatever was unpacked so far (but never anything outside it): unpack into a temporary
/// directory and discard it on failure.
pub fn unpack_layer<R: Read>(
    tar_stream: R,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    let root = fsops::open_target(target).map_err(|e| UnpackError::Io {
        path: target.display().to_string(),
        error: e.into(),
    })?;
    let stream = StreamState::new(header_budget(&opts.limits));
    let mut archive = tar::Archive::new(TrackedReader::new(tar_stream, &stream));
    archive.set_ignore_zeros(false);
    let mut unpacker = Unpacker::new(root, opts);
    for entry in archive.entries().map_err(|e| stream.classify(e))? {
        let mut entry = entry.map_err(|e| stream.classify(e))?;
        unpacker.entry(&mut entry, &stream)?;
        stream.end_data();
    }
    if stream.saw_eof() {
        return Err(UnpackError::Truncated);
    }
    unpacker.finish()
}

/// How many bytes of headers (PAX records, GNU long names, sparse maps: all buffered in
/// memory by the tar crate) one entry may have.
fn header_budget(limits: &UnpackLimits) -> u64 {
    let path = limits.max_path_len as u64;
    (4 * path)
        .saturating_add(limits.max_xattr_bytes as u64)
        .saturating_add(1 << 20)
}
