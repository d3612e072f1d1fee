//! Exporting an image as an oci-archive (a tar of an OCI layout holding the image, its
//! name and its signatures), which `orbit fetch oci-archive:` and skopeo read back.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::catalog::{self, StoredImage};
use super::digest::Digest;
use super::error::{ImageError, Result};
use super::layout::{self, DirFs};
use super::media;
use super::source::cosign_signature_tag;
use super::store::{descriptor, Store};

/// Writes `image` to `file` as an oci-archive.
pub fn export(store: &Store, image: &StoredImage, file: &Path) -> Result<()> {
    let (manifest, _) = catalog::load(store, image)?;
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
    let mut manifests = vec![descriptor(
        media::OCI_MANIFEST,
        &image.digest,
        store.read_blob(&image.digest, "manifest")?.len() as u64,
        Some(ann),
    )];
    let index = layout::read_index(&DirFs::new(store.images_dir()))?;
    let tag = cosign_signature_tag(&image.digest);
    if let Some(sig) = index
        .manifests()
        .iter()
        .find(|d| layout::ref_name(d) == Some(tag.as_str()))
    {
        let d = layout::descriptor_digest(sig)?;
        let (_, m) = store.manifest(&d)?;
        blobs.push(d);
        blobs.push(m.config().digest().to_string().parse()?);
        for l in m.layers() {
            blobs.push(l.digest().to_string().parse()?);
        }
        manifests.push(sig.clone());
    }
    blobs.sort();
    blobs.dedup();
    let mut out_index = index.clone();
    out_index.set_manifests(manifests);

    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".orbit-export-")
        .tempfile_in(dir)
        .map_err(ImageError::io_at("cannot create", dir))?;
    let mut tar = tar::Builder::new(BufWriter::new(
        tmp.reopen()
            .map_err(ImageError::io_at("cannot open", tmp.path()))?,
    ));
    let werr = |e| ImageError::io("cannot write archive", file, e);
    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(werr)?;
    let index_bytes =
        serde_json::to_vec(&out_index).map_err(|e| ImageError::malformed("index.json", e))?;
    append_bytes(&mut tar, "index.json", &index_bytes).map_err(werr)?;
    for d in &blobs {
        let path = store.blob_path(d);
        let mut f = File::open(&path).map_err(ImageError::io_at("cannot open blob", &path))?;
        tar.append_file(layout::blob_rel(d), &mut f).map_err(werr)?;
    }
    let mut w = tar.into_inner().map_err(werr)?;
    w.flush().map_err(werr)?;
    drop(w);
    tmp.persist(file)
        .map_err(|e| ImageError::io("cannot rename into place", file, e.error))?;
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
