//! Exporting an image as an oci-archive (a tar of an OCI layout holding the image and its
//! name), which `orbit fetch oci-archive:`, skopeo and `podman load` read back, with its
//! signatures where [`SignatureMode`] says.
//!
//! By default the signatures go into a detached signature file beside the archive
//! (`FILE.sig`, see [`crate::trust::sigfile`]), which `orbit fetch oci-archive:FILE` reads:
//! the archive then holds exactly one image, as other tools require (skopeo and podman take
//! a signature manifest in the archive's index for a second image and refuse to choose).
//! Embedded signatures are cosign's signature manifests inside the archive, tagged
//! `sha256-<hex>.sig` and marked with cosign's `kind` annotations, so that the unpacked
//! archive is also a layout `cosign verify --local-image` reads.
//!
//! An image whose kept signature signs the image index it was fetched through is exported
//! through that index (the store keeps the index blob for this), so that the signature
//! still names what the archive's index.json points at. The index may list manifests of
//! other platforms that the store does not hold; readers pick this platform's.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;

use super::catalog::{self, StoredImage};
use super::digest::Digest;
use super::error::{plain_io, ImageError, Result};
use super::layout::{self, DirFs};
use super::media;
use super::signatures::stored_signatures;
use super::source::cosign;
use super::source::cosign_signature_tag;
use super::store::{self, descriptor, Store};
use crate::trust::{sig_path_for, write_sig_file};

/// Where `orbit image export` puts the image's signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureMode {
    /// In `FILE.sig` beside the archive (orbit's detached signature file): the archive
    /// holds one image, which every tool loads.
    #[default]
    Detached,
    /// Inside the archive, as cosign's signature manifests (read by orbit and cosign; other
    /// tools see them as further images).
    Embedded,
    /// Nowhere: the archive alone, unsigned.
    None,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The detached signature file written beside the archive, if any.
    pub signature_file: Option<PathBuf>,
    /// How many signatures were exported (in the archive or in the signature file).
    pub signatures: usize,
}

/// The detached signature file that belongs to the archive `file`: `FILE.sig`.
pub fn signature_file(file: &Path) -> PathBuf {
    sig_path_for(file)
}

/// Writes `image` to `file` as an oci-archive, with its signatures where `mode` says. A
/// signature file left beside `file` by an earlier export is removed unless this export
/// writes a new one, so that an archive never comes with signatures of another image.
pub fn export(
    store: &Store,
    image: &StoredImage,
    file: &Path,
    mode: SignatureMode,
) -> Result<Exported> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(ImageError::NotFound {
            what: "destination directory".into(),
            path: dir.to_path_buf(),
        });
    }
    let _lock = store.lock_shared()?;
    let (manifest, _) = catalog::load(store, image)?;
    let manifest_bytes = store.read_blob(&image.digest, "manifest")?;
    let mut blobs: Vec<Digest> = vec![
        image.digest.clone(),
        manifest.config().digest().to_string().parse()?,
    ];
    for l in manifest.layers() {
        blobs.push(l.digest().to_string().parse()?);
    }
    let name = image
        .by_name
        .clone()
        .or_else(|| image.names.first().cloned());
    let mut ann = HashMap::new();
    if let Some(n) = &name {
        ann.insert(media::REF_NAME_ANNOTATION.to_string(), n.clone());
    }
    let index = layout::read_index(&DirFs::new(store.images_dir()))?;
    let signature_entry = |d: &Digest| {
        let tag = cosign_signature_tag(d);
        index
            .manifests()
            .iter()
            .find(|e| layout::ref_name(e) == Some(tag.as_str()))
            .cloned()
    };
    // The index the image was fetched through, when a kept signature signs it.
    let entry = image
        .entries
        .iter()
        .find(|e| e.name == name)
        .or(image.entries.first());
    let signed_index = entry
        .and_then(|e| e.annotation(store::INDEX_ANNOTATION))
        .and_then(|d| d.parse::<Digest>().ok())
        .filter(|d| store.blob_path(d).is_file() && signature_entry(d).is_some());
    let embedded = mode == SignatureMode::Embedded;
    if embedded {
        let kind = if signed_index.is_some() {
            cosign::KIND_IMAGE_INDEX
        } else {
            cosign::KIND_IMAGE
        };
        ann.insert(cosign::KIND_ANNOTATION.to_string(), kind.to_string());
    }
    let mut manifests = vec![match &signed_index {
        Some(d) => {
            let bytes = store.read_blob(d, "image index")?;
            blobs.push(d.clone());
            let media_type = media::index_media_type(&bytes);
            descriptor(media_type, d, bytes.len() as u64, Some(ann))
        }
        None => descriptor(
            media::manifest_media_type(&manifest_bytes),
            &image.digest,
            manifest_bytes.len() as u64,
            Some(ann),
        ),
    }];
    let mut found = Vec::new();
    for d in std::iter::once(&image.digest).chain(signed_index.as_ref()) {
        if mode == SignatureMode::None {
            break;
        }
        found.extend(stored_signatures(store, d)?);
        if let Some(mut sig) = signature_entry(d).filter(|_| embedded) {
            add_signature(store, &sig, &mut blobs)?;
            let mut a = sig.annotations().clone().unwrap_or_default();
            a.insert(
                cosign::KIND_ANNOTATION.to_string(),
                cosign::KIND_SIGS.to_string(),
            );
            sig.set_annotations(Some(a));
            manifests.push(sig);
        }
    }
    blobs.sort();
    blobs.dedup();
    let mut out_index = index.clone();
    out_index.set_manifests(manifests);
    let index_bytes =
        serde_json::to_vec(&out_index).map_err(|e| ImageError::malformed("index.json", e))?;
    let sig_file =
        (mode == SignatureMode::Detached && !found.is_empty()).then(|| signature_file(file));
    write_archive(store, &index_bytes, &blobs, dir, file, || match &sig_file {
        Some(p) => Ok(write_sig_file(p, &found)?),
        None => remove_stale(&signature_file(file)),
    })?;
    Ok(Exported {
        signature_file: sig_file,
        signatures: found.len(),
    })
}

/// Removes a signature file an earlier export left beside the archive.
fn remove_stale(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io_dest("cannot remove the old", path, e)),
    }
}

/// Adds the blobs of the signature manifest `sig` to `blobs`.
fn add_signature(store: &Store, sig: &Descriptor, blobs: &mut Vec<Digest>) -> Result<()> {
    let d = layout::descriptor_digest(sig)?;
    let (_, m) = store.manifest(&d)?;
    blobs.push(d);
    blobs.push(m.config().digest().to_string().parse()?);
    for l in m.layers() {
        blobs.push(l.digest().to_string().parse()?);
    }
    Ok(())
}

/// Writes the archive into a temp file beside `file`, runs `beside` (the signature file),
/// then renames the archive into place: a failure leaves no new archive behind.
fn write_archive(
    store: &Store,
    index_bytes: &[u8],
    blobs: &[Digest],
    dir: &Path,
    file: &Path,
    beside: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let werr = |e| ImageError::io_dest("cannot write archive", file, e);
    let tmp = tempfile::Builder::new()
        .prefix(".orbit-export-")
        .tempfile_in(dir)
        .map_err(|e| ImageError::io_dest("cannot create a file in", dir, plain_io(e)))?;
    let mut tar = tar::Builder::new(BufWriter::new(tmp.as_file().try_clone().map_err(werr)?));
    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(werr)?;
    append_bytes(&mut tar, "index.json", index_bytes).map_err(werr)?;
    for d in blobs {
        let path = store.blob_path(d);
        let mut f = File::open(&path).map_err(ImageError::io_at("cannot open blob", &path))?;
        tar.append_file(layout::blob_rel(d), &mut f).map_err(werr)?;
    }
    let mut w = tar.into_inner().map_err(werr)?;
    w.flush().map_err(werr)?;
    drop(w);
    tmp.as_file().sync_all().map_err(werr)?;
    beside()?;
    tmp.persist(file)
        .map_err(|e| ImageError::io_dest("cannot rename into place", file, e.error))?;
    Ok(())
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, name, bytes)
}
