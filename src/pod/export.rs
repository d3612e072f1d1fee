//! `orbit export UUID FILE`: an app's root filesystem as a new image, written as an
//! oci-archive — the app's image layers plus one layer holding what the app changed (its
//! overlayfs upper directory, with overlay whiteouts turned back into OCI `.wh.` entries).
//! With `--no-overlay` pods the layer is the whole copied root.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;

use orbit_stage1::{paths, App};

use super::status::{self, is_running};
use super::store::PodRef;
use super::PodError;
use crate::image::catalog;
use crate::image::digest::Digest;
use crate::image::media;
use crate::image::store::Store;

/// Writes app `app` (or the pod's only app) of an exited pod to `file` as image `name`.
pub fn export(
    store: &Store,
    pod: &PodRef,
    app: Option<&str>,
    name: &str,
    file: &Path,
) -> Result<(), PodError> {
    if is_running(pod) {
        return Err(PodError::WrongState {
            uuid: pod.uuid.clone(),
            state: "running".into(),
            what: "stop it before exporting (its files are still changing)".into(),
        });
    }
    let manifest = status::manifest(pod)?;
    let a = match app {
        Some(n) => manifest
            .apps
            .iter()
            .find(|a| a.name == n)
            .ok_or_else(|| PodError::BadSpec(format!("pod {} has no app '{n}'", pod.uuid)))?,
        None if manifest.apps.len() == 1 => &manifest.apps[0],
        None => {
            return Err(PodError::BadSpec(
                "the pod has several apps; pick one with --app".into(),
            ))
        }
    };
    let image = catalog::resolve(store, &a.image.digest)?;
    let (base_manifest, config) = catalog::load(store, &image)?;
    let dir = paths::app_dir(&pod.path, &a.name);
    let (changes, base_layers) = if a.rootfs.overlay {
        (dir.join("upper"), true)
    } else {
        (dir.join("rootfs"), false)
    };

    let work = tempfile::tempdir_in(store.tmp_dir())
        .map_err(|e| PodError::io("cannot create temp dir in", &store.tmp_dir(), e))?;
    let image_layers: Vec<PathBuf> = config
        .rootfs
        .diff_ids
        .iter()
        .filter_map(|d| d.parse::<Digest>().ok())
        .map(|d| store.layer_rootfs(&d))
        .collect();
    let leftovers = MountPoints::of(a, base_layers, image_layers);
    let (layer_path, layer_digest, diff_id) = layer_from_dir(&changes, work.path(), &leftovers)?;
    let mut diff_ids: Vec<String> = if base_layers {
        config.rootfs.diff_ids.clone()
    } else {
        vec![]
    };
    diff_ids.push(diff_id.to_string());
    let mut new_config = config.clone();
    new_config.rootfs.diff_ids = diff_ids;
    let config_bytes = serde_json::to_vec(&new_config).expect("config serializes");
    let mut layers: Vec<serde_json::Value> = if base_layers {
        base_manifest.layers().iter().map(|l| serde_json::json!({"mediaType": l.media_type().to_string(), "digest": l.digest().to_string(), "size": l.size()})).collect()
    } else {
        vec![]
    };
    let layer_size = fs::metadata(&layer_path)
        .map_err(|e| PodError::io("cannot stat", &layer_path, e))?
        .len();
    layers.push(serde_json::json!({"mediaType": media::OCI_LAYER_GZIP, "digest": layer_digest.as_str(), "size": layer_size}));
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": Digest::of(&config_bytes).as_str(), "size": config_bytes.len()},
        "layers": layers,
    }))
    .expect("manifest serializes");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_INDEX,
        "manifests": [{"mediaType": media::OCI_MANIFEST, "digest": Digest::of(&m).as_str(), "size": m.len(), "annotations": {media::REF_NAME_ANNOTATION: name}}],
    }))
    .expect("index serializes");

    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".orbit-export-")
        .tempfile_in(parent)
        .map_err(|e| PodError::io("cannot write into", parent, e))?;
    let werr = |e| PodError::io("cannot write", file, e);
    let mut tar = tar::Builder::new(BufWriter::new(tmp.reopen().map_err(werr)?));
    let blob = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(werr)?;
    append(&mut tar, "index.json", &index).map_err(werr)?;
    append(&mut tar, &blob(&Digest::of(&m)), &m).map_err(werr)?;
    append(&mut tar, &blob(&Digest::of(&config_bytes)), &config_bytes).map_err(werr)?;
    if base_layers {
        for l in base_manifest.layers() {
            let d: Digest = l
                .digest()
                .to_string()
                .parse()
                .map_err(|e: crate::image::digest::BadDigest| PodError::BadSpec(e.to_string()))?;
            tar.append_path_with_name(store.blob_path(&d), blob(&d))
                .map_err(werr)?;
        }
    }
    tar.append_path_with_name(&layer_path, blob(&layer_digest))
        .map_err(werr)?;
    tar.into_inner().map_err(werr)?.flush().map_err(werr)?;
    tmp.persist(file)
        .map_err(|e| PodError::io("cannot write", file, e.error))?;
    Ok(())
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, name, bytes)
}

/// The mount points the stage1 made in an app's root: `/etc/hosts`, `/etc/hostname`,
/// `/etc/resolv.conf`, `/proc`, `/sys`, `/dev` and the app's volume targets, as paths
/// relative to the root. An empty file or directory left at one of them is the stage1's,
/// not the app's, and is not exported — nor is a directory that holds nothing else.
struct MountPoints {
    paths: BTreeSet<PathBuf>,
    /// The changes are an overlay upper directory: anything there at a mount point was made
    /// by the stage1 (the app's writes went to what was mounted over it). Else (a copied
    /// root) only what no layer of the image has.
    overlay_upper: bool,
    image_layers: Vec<PathBuf>,
}

impl MountPoints {
    fn of(a: &App, overlay_upper: bool, image_layers: Vec<PathBuf>) -> MountPoints {
        let etc = paths::ETC_FILES.iter().map(|f| format!("/etc/{f}"));
        let system = paths::SYSTEM_MOUNT_POINTS.iter().map(|p| p.to_string());
        let volumes = a.mounts.iter().map(|m| m.target.clone());
        let paths = etc
            .chain(system)
            .chain(volumes)
            .map(|p| PathBuf::from(p.trim_start_matches('/')))
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        MountPoints {
            paths,
            overlay_upper,
            image_layers,
        }
    }

    /// Whether `rel` (at `path`) is a stage1 leftover, not part of the app's changes.
    fn is_leftover(&self, rel: &Path, path: &Path, meta: &fs::Metadata) -> bool {
        // Asked only of mount points and their directories (it stats every image layer).
        let made_here = || {
            self.overlay_upper
                || !self
                    .image_layers
                    .iter()
                    .any(|l| l.join(rel).symlink_metadata().is_ok())
        };
        if self.paths.contains(rel) {
            let empty = if meta.is_dir() {
                fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
            } else {
                meta.is_file() && meta.len() == 0
            };
            return empty && made_here();
        }
        // A directory made only to hold mount points.
        meta.is_dir()
            && self.paths.iter().any(|p| p.starts_with(rel))
            && made_here()
            && fs::read_dir(path).is_ok_and(|entries| {
                entries.flatten().all(|e| {
                    let (p, r) = (e.path(), rel.join(e.file_name()));
                    fs::symlink_metadata(&p).is_ok_and(|m| self.is_leftover(&r, &p, &m))
                })
            })
    }
}

/// Tars `dir` (gzip) into `work/layer.tar.gz`, converting overlay whiteouts (0:0 character
/// devices, `trusted.overlay.opaque` dirs) to OCI ones and leaving out the stage1's mount
/// points; returns the path, blob digest and diff-ID.
fn layer_from_dir(
    dir: &Path,
    work: &Path,
    leftovers: &MountPoints,
) -> Result<(PathBuf, Digest, Digest), PodError> {
    let path = work.join("layer.tar.gz");
    let f = File::create(&path).map_err(|e| PodError::io("cannot create", &path, e))?;
    let hashing = HashingWriter {
        inner: GzEncoder::new(
            HashingWriter {
                inner: BufWriter::new(f),
                hasher: Default::default(),
            },
            flate2::Compression::fast(),
        ),
        hasher: Default::default(),
    };
    let mut tar = tar::Builder::new(hashing);
    tar.follow_symlinks(false);
    let err = |e| PodError::io("cannot read", dir, e);
    walk(dir, dir, &mut tar, leftovers).map_err(err)?;
    let hashing = tar.into_inner().map_err(err)?;
    let diff_id = hashing.hasher.finish();
    let mut gz = hashing.inner.finish().map_err(err)?;
    gz.inner.flush().map_err(err)?;
    Ok((path, gz.hasher.finish(), diff_id))
}

fn walk<W: Write>(
    root: &Path,
    dir: &Path,
    tar: &mut tar::Builder<W>,
    leftovers: &MountPoints,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let rel = p.strip_prefix(root).expect("below root");
        let meta = fs::symlink_metadata(&p)?;
        if leftovers.is_leftover(rel, &p, &meta) {
            continue;
        }
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            let name = rel.with_file_name(format!(
                ".wh.{}",
                rel.file_name().expect("named").to_string_lossy()
            ));
            append(tar, &name.to_string_lossy(), b"")?;
            continue;
        }
        tar.append_path_with_name(&p, rel)?;
        if meta.is_dir() {
            if xattr_opaque(&p) {
                append(tar, &rel.join(".wh..wh..opq").to_string_lossy(), b"")?;
            }
            walk(root, &p, tar, leftovers)?;
        }
    }
    Ok(())
}

fn xattr_opaque(p: &Path) -> bool {
    let mut buf = [0u8; 4];
    rustix::fs::lgetxattr(p, "trusted.overlay.opaque", &mut buf).is_ok_and(|n| &buf[..n] == b"y")
}

/// A writer that hashes what goes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: crate::image::digest::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
