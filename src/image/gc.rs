//! Removing images and collecting what no image references any more.

use std::collections::HashSet;
use std::fs;

use serde::Serialize;

use super::catalog::StoredImage;
use super::config::ImageConfig;
use super::digest::Digest;
use super::error::{ImageError, Result};
use super::layout;
use super::source::cosign_signature_tag;
use super::store::Store;

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    /// Blobs removed.
    pub blobs: usize,
    /// Unpacked layers removed.
    pub layers: usize,
    /// Leftover temp files/directories of interrupted work removed.
    pub temp: usize,
    /// Bytes freed (blobs only; layers are counted as directories).
    pub bytes: u64,
}

/// Removes an image's names (just the one the user typed, or all of them for a digest),
/// its signatures once no name is left, then collects garbage.
pub fn remove(store: &Store, image: &StoredImage) -> Result<Vec<String>> {
    let _lock = store.lock_exclusive()?;
    let removed: Vec<String> = match &image.by_name {
        Some(n) => vec![n.clone()],
        None => image.names.clone(),
    };
    let sig_tag = cosign_signature_tag(&image.digest);
    let remaining = image.names.iter().filter(|n| !removed.contains(n)).count();
    store.update_index(|m| {
        m.retain(|d| {
            let name = layout::ref_name(d);
            let same = d.digest().to_string() == image.digest.as_str();
            let removed_name = same && name.is_some_and(|n| removed.iter().any(|r| r == n));
            let orphaned_signature = remaining == 0 && name == Some(sig_tag.as_str());
            !removed_name && !orphaned_signature
        })
    })?;
    collect(store)?;
    Ok(removed)
}

/// Takes the exclusive store lock and collects garbage.
pub fn gc(store: &Store) -> Result<GcReport> {
    if !store.exists() {
        return Ok(GcReport::default());
    }
    let _lock = store.lock_exclusive()?;
    collect(store)
}

/// Removes blobs and layers no index entry references, and stale temp work. The caller
/// holds the exclusive store lock, so no fetch is in progress and all of `tmp/` is stale.
fn collect(store: &Store) -> Result<GcReport> {
    let (blobs, layers) = referenced(store)?;
    let mut report = GcReport::default();
    for entry in read_dir(&store.blobs_dir())? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !blobs.contains(&name) {
            report.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            remove_path(&entry.path())?;
            report.blobs += 1;
        }
    }
    for entry in read_dir(&store.layers_dir())? {
        if !layers.contains(&entry.file_name().to_string_lossy().into_owned()) {
            remove_path(&entry.path())?;
            report.layers += 1;
        }
    }
    for entry in read_dir(&store.tmp_dir())? {
        remove_path(&entry.path())?;
        report.temp += 1;
    }
    Ok(report)
}

fn read_dir(dir: &std::path::Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(it) => it
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(ImageError::io_at("cannot list", dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ImageError::io("cannot list", dir, e)),
    }
}

fn remove_path(p: &std::path::Path) -> Result<()> {
    let meta = fs::symlink_metadata(p).map_err(ImageError::io_at("cannot stat", p))?;
    let r = if meta.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
    r.map_err(ImageError::io_at("cannot remove", p))
}

/// Hex digests of every blob and layer reachable from the index.
fn referenced(store: &Store) -> Result<(HashSet<String>, HashSet<String>)> {
    let mut blobs = HashSet::new();
    let mut layers = HashSet::new();
    for entry in store.index()? {
        blobs.insert(entry.digest.hex().to_string());
        let Ok((_, manifest)) = store.manifest(&entry.digest) else {
            continue;
        };
        let config: Digest = manifest.config().digest().to_string().parse()?;
        blobs.insert(config.hex().to_string());
        for l in manifest.layers() {
            blobs.insert(
                l.digest()
                    .to_string()
                    .trim_start_matches("sha256:")
                    .to_string(),
            );
        }
        if entry.is_cosign_artifact() {
            continue;
        }
        if let Ok(bytes) = store.read_blob(&config, "config") {
            if let Ok(c) = ImageConfig::parse(&bytes, "config") {
                layers.extend(
                    c.rootfs
                        .diff_ids
                        .iter()
                        .map(|d| d.trim_start_matches("sha256:").to_string()),
                );
            }
        }
    }
    Ok((blobs, layers))
}
