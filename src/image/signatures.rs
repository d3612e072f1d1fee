//! Signatures kept the way cosign keeps them in an OCI layout: a manifest tagged
//! `sha256-<hex>.sig` whose layers are simple-signing payloads, each carrying its
//! base64 signature in the `dev.cosignproject.cosign/signature` annotation. Used for the
//! store itself and for signing a user's OCI layout in place.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use base64::Engine;
use oci_spec::image::{Descriptor, ImageIndex};

use super::digest::Digest;
use super::error::{ImageError, Result};
use super::layout::{self, DirFs};
use super::media;
use super::source::cosign::{self, EntryRole};
use super::source::{cosign_signature_tag, read_cosign_signatures, read_saved_signatures};
use super::store::{descriptor, write_atomic, Store};
use crate::trust::Signature;

/// The blobs of a signature manifest (payloads and the empty config) and the manifest itself.
struct SignatureManifest {
    blobs: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

const EMPTY_CONFIG: &[u8] = b"{}";

fn build(sigs: &[Signature]) -> SignatureManifest {
    let b64 = base64::engine::general_purpose::STANDARD;
    let layers: Vec<serde_json::Value> = sigs
        .iter()
        .map(|s| {
            serde_json::json!({
                "mediaType": media::COSIGN_SIMPLESIGNING,
                "digest": Digest::of(&s.payload).as_str(),
                "size": s.payload.len(),
                "annotations": {media::COSIGN_SIGNATURE_ANNOTATION: b64.encode(&s.signature)},
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": Digest::of(EMPTY_CONFIG).as_str(), "size": EMPTY_CONFIG.len()},
        "layers": layers,
    });
    let mut blobs: Vec<Vec<u8>> = sigs.iter().map(|s| s.payload.clone()).collect();
    blobs.push(EMPTY_CONFIG.to_vec());
    SignatureManifest {
        blobs,
        manifest: serde_json::to_vec(&manifest).expect("JSON serializes"),
    }
}

/// Adds signatures to those already stored for `digest`, dropping exact duplicates.
fn merged(existing: Vec<Signature>, new: &[Signature]) -> Vec<Signature> {
    let mut all = existing;
    for s in new {
        if !all
            .iter()
            .any(|e| e.payload == s.payload && e.signature == s.signature)
        {
            all.push(s.clone());
        }
    }
    all
}

/// The signatures stored in the store for the image `digest`.
pub fn stored_signatures(store: &Store, digest: &Digest) -> Result<Vec<Signature>> {
    if !store.exists() {
        return Ok(Vec::new());
    }
    let fs = DirFs::new(store.images_dir());
    let index = layout::read_index(&fs)?;
    read_cosign_signatures(&fs, &index, digest)
}

/// Stores signatures for the image `digest` in the store.
pub fn store_signatures(store: &Store, digest: &Digest, sigs: &[Signature]) -> Result<()> {
    let all = merged(stored_signatures(store, digest)?, sigs);
    let built = build(&all);
    for blob in &built.blobs {
        store.put_blob(blob)?;
    }
    let d = store.put_blob(&built.manifest)?;
    store.set_ref(
        &cosign_signature_tag(digest),
        media::OCI_MANIFEST,
        &d,
        built.manifest.len() as u64,
        Default::default(),
    )
}

/// Adds signatures for `digest` to a user's OCI layout directory, as cosign would: in a
/// layout `cosign save` wrote (entries marked with a cosign `kind`), into its one signature
/// manifest marked `kind: dev.cosignproject.cosign/sigs`, which `cosign verify --local-image`
/// reads; elsewhere, into the manifest tagged `sha256-<hex>.sig`.
pub fn add_to_layout(dir: &Path, digest: &Digest, sigs: &[Signature]) -> Result<()> {
    let fs = DirFs::new(dir);
    let index = layout::read_index(&fs)?;
    let saved_by_cosign = index.manifests().iter().any(|d| {
        cosign::kind(d).is_some_and(|k| {
            [
                cosign::KIND_IMAGE,
                cosign::KIND_IMAGE_INDEX,
                cosign::KIND_SIGS,
            ]
            .contains(&k)
        })
    });
    let tag = cosign_signature_tag(digest);
    let (existing, annotation) = if saved_by_cosign {
        (
            read_saved_signatures(&fs, &index)?,
            (cosign::KIND_ANNOTATION, cosign::KIND_SIGS.to_string()),
        )
    } else {
        (
            read_cosign_signatures(&fs, &index, digest)?,
            (media::REF_NAME_ANNOTATION, tag.clone()),
        )
    };
    let is_ours = |d: &Descriptor| {
        if saved_by_cosign {
            cosign::role(d) == EntryRole::SavedSignatures
        } else {
            layout::ref_name(d) == Some(tag.as_str())
        }
    };
    let all = merged(existing, sigs);
    let built = build(&all);
    for blob in built.blobs.iter().chain([&built.manifest]) {
        let d = Digest::of(blob);
        let path = dir.join(layout::blob_rel(&d));
        if !path.exists() {
            fs::create_dir_all(dir.join("blobs/sha256"))
                .map_err(ImageError::io_at("cannot create", dir))?;
            write_atomic(&path, blob, None)?;
        }
    }
    let mut ann = HashMap::new();
    ann.insert(annotation.0.to_string(), annotation.1);
    let desc = descriptor(
        media::OCI_MANIFEST,
        &Digest::of(&built.manifest),
        built.manifest.len() as u64,
        Some(ann),
    );
    let mut manifests: Vec<Descriptor> = index.manifests().clone();
    manifests.retain(|d| !is_ours(d));
    manifests.push(desc);
    let mut index: ImageIndex = index;
    index.set_manifests(manifests);
    let bytes =
        serde_json::to_vec_pretty(&index).map_err(|e| ImageError::malformed("index.json", e))?;
    write_atomic(&dir.join("index.json"), &bytes, None)
}
