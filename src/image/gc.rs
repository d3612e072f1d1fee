//! Removing images and collecting what no image references any more.
//!
//! Collection keeps every blob and layer reachable from a name in the store's index, and
//! every layer a pod uses (`pods/*/*/pod.json`, `apps[].rootfs.lowers` and
//! `volumes[].image.lowers`). It never guesses:
//! if a name's manifest or config cannot be read it refuses to collect at all, and if a
//! pod's record cannot be read it keeps every layer (and says so).

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use serde::Serialize;

use super::catalog::StoredImage;
use super::config::ImageConfig;
use super::digest::Digest;
use super::error::{ImageError, Result};
use super::layout;
use super::source::cosign_signature_tag;
use super::store::{self, Store};

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
    /// What the user should know (e.g. layers kept because a pod record was unreadable).
    pub warnings: Vec<String>,
}

/// Removes an image's names (just the one the user typed, or all of them for a digest),
/// its signatures once no name is left, then collects garbage.
pub fn remove(store: &Store, image: &StoredImage) -> Result<(Vec<String>, GcReport)> {
    let _lock = store.lock_exclusive()?;
    let removed: Vec<String> = match &image.by_name {
        Some(n) => vec![n.clone()],
        None => image.names.clone(),
    };
    // Names as they are now, under the lock (not as resolved before it was taken).
    let entries = store.images()?;
    let is_removed = |e: &store::IndexEntry| {
        e.digest == image.digest && e.name.as_ref().is_some_and(|n| removed.contains(n))
    };
    if !entries.iter().any(&is_removed) {
        return Err(ImageError::UnknownImage(removed.join(", ")));
    }
    let remaining = entries
        .iter()
        .filter(|e| e.digest == image.digest && !is_removed(e))
        .count();
    // Signatures of the image (and of the indexes it was fetched through) go with its last name.
    let mut orphaned: Vec<String> = Vec::new();
    if remaining == 0 {
        orphaned.push(cosign_signature_tag(&image.digest));
        for e in entries.iter().filter(|e| is_removed(e)) {
            if let Some(d) = e.annotation(store::INDEX_ANNOTATION) {
                if let Ok(d) = d.parse::<Digest>() {
                    let still_used = entries.iter().any(|o| {
                        !is_removed(o) && o.annotation(store::INDEX_ANNOTATION) == Some(d.as_str())
                    });
                    if !still_used {
                        orphaned.push(cosign_signature_tag(&d));
                    }
                }
            }
        }
    }
    store.update_index(|m| {
        m.retain(|d| {
            let name = layout::ref_name(d);
            let same = d.digest().to_string() == image.digest.as_str();
            let removed_name = same && name.is_some_and(|n| removed.iter().any(|r| r == n));
            let orphaned_signature = name.is_some_and(|n| orphaned.iter().any(|o| o == n));
            !removed_name && !orphaned_signature
        })
    })?;
    let report = collect(store)?;
    Ok((removed, report))
}

/// Takes the exclusive store lock and collects garbage.
pub fn gc(store: &Store) -> Result<GcReport> {
    if !store.exists() {
        return Ok(GcReport::default());
    }
    let _lock = store.lock_exclusive()?;
    collect(store)
}

/// Removes blobs and layers nothing references, and stale temp work. The caller holds the
/// exclusive store lock, so no fetch is in progress and all of `tmp/` is stale.
fn collect(store: &Store) -> Result<GcReport> {
    let (blobs, mut layers) = referenced(store)?;
    let mut report = GcReport::default();
    let keep_all_layers = match pod_layers(store) {
        Ok(used) => {
            layers.extend(used);
            false
        }
        Err(why) => {
            report.warnings.push(format!(
                "kept every unpacked layer: {why}; the layers its pods use cannot be known"
            ));
            true
        }
    };
    for entry in read_dir(&store.blobs_dir())? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !blobs.contains(&name) {
            report.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            remove_path(&entry.path())?;
            report.blobs += 1;
        }
    }
    if !keep_all_layers {
        for entry in read_dir(&store.layers_dir())? {
            if !layers.contains(&entry.file_name().to_string_lossy().into_owned()) {
                remove_path(&entry.path())?;
                report.layers += 1;
            }
        }
    }
    for entry in read_dir(&store.tmp_dir())? {
        remove_path(&entry.path())?;
        report.temp += 1;
    }
    // Registry pulls hold the shared lock: their partial downloads and temporary layouts
    // are stale too.
    for entry in read_dir(&store.root().join("downloads"))? {
        remove_path(&entry.path())?;
        report.temp += 1;
    }
    for entry in read_dir(store.root())? {
        if entry.file_name().to_string_lossy().starts_with(".pull-") {
            remove_path(&entry.path())?;
            report.temp += 1;
        }
    }
    Ok(report)
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(it) => it
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(ImageError::io_at("cannot list", dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ImageError::io("cannot list", dir, e)),
    }
}

fn remove_path(p: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(p).map_err(ImageError::io_at("cannot stat", p))?;
    let r = if meta.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
    r.map_err(ImageError::io_at("cannot remove", p))
}

/// Refuses to collect because `name` cannot be read: deleting what it references would
/// destroy an image that may only need repair.
fn unreadable(name: Option<&str>, digest: &Digest, e: ImageError) -> ImageError {
    let what = name.map_or_else(|| digest.to_string(), String::from);
    ImageError::CorruptStore {
        what: format!("cannot read what {what} references ({e}), so nothing was collected"),
    }
}

/// Hex digests of every blob and layer reachable from the index.
fn referenced(store: &Store) -> Result<(HashSet<String>, HashSet<String>)> {
    let mut blobs = HashSet::new();
    let mut layers = HashSet::new();
    for entry in store.index()? {
        let fail = |e| unreadable(entry.name.as_deref(), &entry.digest, e);
        blobs.insert(entry.digest.hex().to_string());
        if let Some(d) = entry.annotation(store::INDEX_ANNOTATION) {
            let d: Digest = d
                .parse()
                .map_err(|e: super::digest::BadDigest| fail(e.into()))?;
            blobs.insert(d.hex().to_string());
        }
        let (_, manifest) = store.manifest(&entry.digest).map_err(fail)?;
        let config: Digest = manifest.config().digest().to_string().parse()?;
        blobs.insert(config.hex().to_string());
        for l in manifest.layers() {
            let d: Digest = l.digest().to_string().parse()?;
            blobs.insert(d.hex().to_string());
        }
        if entry.is_cosign_artifact() {
            continue;
        }
        let bytes = store.read_blob(&config, "config").map_err(fail)?;
        let c = ImageConfig::parse(&bytes, "config").map_err(fail)?;
        layers.extend(
            c.diff_ids()
                .map_err(fail)?
                .iter()
                .map(|d| d.hex().to_string()),
        );
    }
    Ok((blobs, layers))
}

/// The layers (hex diff-IDs) the store's pods use, from `pods/*/*/pod.json`; an error
/// (naming the unreadable record) when one of them cannot be read.
fn pod_layers(store: &Store) -> std::result::Result<HashSet<String>, String> {
    #[derive(serde::Deserialize)]
    struct Pod {
        #[serde(default)]
        apps: Vec<App>,
        #[serde(default)]
        volumes: Vec<Volume>,
    }
    /// An image volume's layers are in use as an app's root is.
    #[derive(serde::Deserialize)]
    struct Volume {
        #[serde(default)]
        image: Option<Rootfs>,
    }
    #[derive(serde::Deserialize)]
    struct App {
        rootfs: Rootfs,
    }
    #[derive(serde::Deserialize)]
    struct Rootfs {
        #[serde(default)]
        lowers: Vec<std::path::PathBuf>,
    }
    let mut used = HashSet::new();
    let pods = store.root().join("pods");
    let list = |dir: &Path| -> std::result::Result<Vec<std::path::PathBuf>, String> {
        match fs::read_dir(dir) {
            Ok(it) => it
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()
                .map_err(|e| format!("cannot list {}: {e}", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("cannot list {}: {e}", dir.display())),
        }
    };
    for state in list(&pods)?.iter().filter(|p| p.is_dir()) {
        for pod in list(state)?.iter().filter(|p| p.is_dir()) {
            let record = pod.join("pod.json");
            let bytes = match fs::read(&record) {
                Ok(b) => b,
                // A pod still being prepared has chosen its layers but not written them down.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(format!("pod {} has no pod.json (yet)", pod.display()))
                }
                Err(e) => return Err(format!("cannot read {}: {e}", record.display())),
            };
            let parsed: Pod = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is malformed: {e}", record.display()))?;
            let volume_layers = parsed.volumes.iter().filter_map(|v| v.image.as_ref());
            let rootfs = parsed.apps.iter().map(|a| &a.rootfs);
            for lower in rootfs.chain(volume_layers).flat_map(|r| &r.lowers) {
                // `<store>/layers/sha256/<hex>/rootfs`. Only the `<hex>` is compared: the
                // store may have been named differently (relative, through a symlink) when
                // the pod was made, and keeping a name too many is harmless.
                if let Some(hex) = lower.parent().and_then(Path::file_name) {
                    used.insert(hex.to_string_lossy().into_owned());
                }
            }
        }
    }
    Ok(used)
}
