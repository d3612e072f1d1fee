//! Finding an image (and its cosign signatures) in an OCI layout.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use super::cosign::{self, EntryRole};
use super::SourceImage;
use crate::image::digest::Digest;
use crate::image::error::{ImageError, Result};
use crate::image::layout::{self, LayoutFs};
use crate::image::media;
use crate::trust::Signature;

/// The tag cosign gives the signature manifest of the image with digest `d`.
pub fn cosign_signature_tag(d: &Digest) -> String {
    format!("sha256-{}.sig", d.hex())
}

pub(super) fn open(
    fs: Box<dyn LayoutFs>,
    display: &str,
    reference: Option<&str>,
    path: &Path,
    platform: Option<&str>,
) -> Result<SourceImage> {
    let index = layout::read_index(fs.as_ref())?;
    let images: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| cosign::role(d) == EntryRole::Image)
        .collect();
    let chosen = choose(&images, reference, display)?;
    let name = layout::ref_name(chosen).map(|r| name_from_ref(r, path));
    let top_digest = layout::descriptor_digest(chosen)?;
    let mut signable = vec![top_digest.clone()];
    let (manifest, manifest_digest, top_index) =
        resolve_manifest(fs.as_ref(), chosen, display, platform)?;
    if manifest_digest != top_digest {
        signable.insert(0, manifest_digest.clone());
    }
    let mut signatures = Vec::new();
    for d in &signable {
        signatures.extend(read_cosign_signatures(fs.as_ref(), &index, d)?);
    }
    // What `cosign save` wrote: one signature manifest for the layout's image, marked by
    // kind rather than named by digest (each payload names the digest it signs, and
    // verification holds it to the image's).
    signatures.extend(read_saved_signatures(fs.as_ref(), &index)?);
    Ok(SourceImage {
        display: display.to_string(),
        name,
        manifest,
        manifest_digest,
        signable_digests: signable,
        signatures,
        index: top_index,
        fs,
        blob_paths: HashMap::new(),
    })
}

fn choose<'a>(
    images: &[&'a Descriptor],
    reference: Option<&str>,
    display: &str,
) -> Result<&'a Descriptor> {
    // How each image can be picked: its name, or its digest when it has none (what
    // `cosign save` writes).
    let refs: Vec<String> = images
        .iter()
        .map(|d| {
            layout::ref_name(d)
                .map(String::from)
                .unwrap_or_else(|| d.digest().to_string())
        })
        .collect();
    match reference {
        None if images.len() == 1 => Ok(images[0]),
        None if images.is_empty() => Err(ImageError::malformed(
            display,
            "the layout's index.json lists no image",
        )),
        None => Err(ImageError::SourceAmbiguous {
            source_name: display.to_string(),
            refs,
        }),
        Some(r) => {
            let with_latest = format!("{r}:latest");
            images
                .iter()
                .find(|d| {
                    let name = layout::ref_name(d);
                    name == Some(r) || name == Some(&with_latest) || d.digest().to_string() == r
                })
                .copied()
                .ok_or_else(|| ImageError::NoSuchRef {
                    source_name: display.to_string(),
                    reference: r.to_string(),
                    refs,
                })
        }
    }
}

/// A full name from a ref.name annotation; a bare tag gets `localhost/<dir name>`.
fn name_from_ref(r: &str, path: &Path) -> String {
    if r.contains('/') || r.contains(':') {
        return r.to_string();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "image".into());
    format!("localhost/{stem}:{r}")
}

/// Reads the manifest a descriptor points at, descending through an index to the manifest
/// for `platform` (`os/arch[/variant]`, default this machine's). Returns the manifest, its
/// digest and the index the descriptor named, if it named one.
fn resolve_manifest(
    fs: &dyn LayoutFs,
    desc: &Descriptor,
    display: &str,
    platform: Option<&str>,
) -> Result<(Vec<u8>, Digest, Option<Vec<u8>>)> {
    let platform = platform
        .map(str::to_string)
        .unwrap_or_else(|| format!("linux/{}", host_arch()));
    let mut desc = desc.clone();
    let mut top_index = None;
    for _ in 0..4 {
        let digest = layout::descriptor_digest(&desc)?;
        let bytes =
            layout::read_verified_blob(fs, &digest, &format!("manifest {digest} of {display}"))?;
        let media_type = media_type_of(&desc, &bytes);
        if media::is_manifest(&media_type) {
            return Ok((bytes, digest, top_index));
        }
        if !media::is_index(&media_type) {
            return Err(ImageError::UnsupportedManifest {
                what: format!("{display} ({digest})"),
                media_type,
            });
        }
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::malformed(display, e))?;
        desc = platform_manifest(&index, &platform)
            .ok_or_else(|| ImageError::NoPlatform {
                source_name: display.to_string(),
                platform: platform.clone(),
            })?
            .clone();
        if top_index.is_none() {
            top_index = Some(bytes);
        }
    }
    Err(ImageError::malformed(
        display,
        "image indexes nest too deeply",
    ))
}

/// The media type of a manifest: the descriptor's, else the document's own field.
fn media_type_of(desc: &Descriptor, bytes: &[u8]) -> String {
    let from_desc = desc.media_type().to_string();
    if !from_desc.is_empty() && from_desc != "application/octet-stream" {
        return from_desc;
    }
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(String::from)
        })
        .unwrap_or(from_desc)
}

/// This machine's architecture, as OCI names it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    }
}

/// The index entry for `platform` (`os/arch[/variant]`); an entry without a platform fits any.
fn platform_manifest<'a>(index: &'a ImageIndex, platform: &str) -> Option<&'a Descriptor> {
    let mut want = platform.split('/');
    let (os, arch, variant) = (want.next(), want.next(), want.next());
    index.manifests().iter().find(|d| {
        d.platform().as_ref().is_none_or(|p| {
            Some(p.os().to_string().as_str()) == os
                && Some(p.architecture().to_string().as_str()) == arch
                && (variant.is_none() || p.variant().as_deref() == variant)
        })
    })
}

/// Signatures stored the cosign way: a manifest tagged `sha256-<hex>.sig` whose layers are
/// simple-signing payloads, each with its signature in an annotation.
pub(crate) fn read_cosign_signatures(
    fs: &dyn LayoutFs,
    index: &ImageIndex,
    d: &Digest,
) -> Result<Vec<Signature>> {
    let tag = cosign_signature_tag(d);
    let Some(desc) = index
        .manifests()
        .iter()
        .find(|m| layout::ref_name(m) == Some(tag.as_str()))
    else {
        return Ok(Vec::new());
    };
    read_signature_manifest(fs, desc, &format!("signature manifest {tag}"))
}

/// Signatures in the manifests `cosign save` marked `kind: dev.cosignproject.cosign/sigs`.
pub(crate) fn read_saved_signatures(
    fs: &dyn LayoutFs,
    index: &ImageIndex,
) -> Result<Vec<Signature>> {
    let mut out = Vec::new();
    for desc in index
        .manifests()
        .iter()
        .filter(|m| cosign::role(m) == EntryRole::SavedSignatures)
    {
        let what = format!(
            "signature manifest {} (kind {})",
            desc.digest(),
            cosign::KIND_SIGS
        );
        out.extend(read_signature_manifest(fs, desc, &what)?);
    }
    Ok(out)
}

/// The simple-signing payloads of the signature manifest `desc`, each with the signature
/// from its annotation; layers of other types are skipped.
fn read_signature_manifest(
    fs: &dyn LayoutFs,
    desc: &Descriptor,
    what: &str,
) -> Result<Vec<Signature>> {
    let what = what.to_string();
    let digest = layout::descriptor_digest(desc)?;
    let bytes = layout::read_verified_blob(fs, &digest, &what)?;
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| ImageError::malformed(&what, e))?;
    let mut out = Vec::new();
    for layer in manifest.layers() {
        if layer.media_type().to_string() != media::COSIGN_SIMPLESIGNING {
            continue;
        }
        let Some(sig_b64) = layer
            .annotations()
            .as_ref()
            .and_then(|a| a.get(media::COSIGN_SIGNATURE_ANNOTATION))
        else {
            continue;
        };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(sig_b64.trim())
            .map_err(|e| ImageError::malformed(&what, format!("signature is not base64: {e}")))?;
        let payload = layout::read_verified_blob(fs, &layout::descriptor_digest(layer)?, &what)?;
        out.push(Signature {
            payload,
            signature,
            key_id: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::store::descriptor;

    fn entry(hex: char, name: Option<&str>) -> Descriptor {
        let d: Digest = format!("sha256:{}", hex.to_string().repeat(64))
            .parse()
            .unwrap();
        let ann =
            name.map(|n| HashMap::from([(media::REF_NAME_ANNOTATION.to_string(), n.to_string())]));
        descriptor(media::OCI_MANIFEST, &d, 1, ann)
    }

    #[test]
    fn unnamed_images_are_offered_and_picked_by_digest() {
        let (a, b) = (entry('a', None), entry('b', None));
        let images = [&a, &b];
        match choose(&images, None, "oci:x") {
            Err(ImageError::SourceAmbiguous { refs, .. }) => {
                assert_eq!(refs, vec![a.digest().to_string(), b.digest().to_string()])
            }
            other => panic!(
                "expected SourceAmbiguous, got {:?}",
                other.map(|d| d.digest())
            ),
        }
        let picked = choose(&images, Some(b.digest().as_ref()), "oci:x").unwrap();
        assert_eq!(picked.digest(), b.digest());
    }

    #[test]
    fn named_images_are_offered_by_name() {
        let (a, b) = (entry('a', Some("app:1")), entry('b', None));
        let images = [&a, &b];
        match choose(&images, Some("nope"), "oci:x") {
            Err(ImageError::NoSuchRef { refs, .. }) => {
                assert_eq!(refs, vec!["app:1".to_string(), b.digest().to_string()])
            }
            other => panic!("expected NoSuchRef, got {:?}", other.map(|d| d.digest())),
        }
        assert_eq!(
            choose(&images, Some("app:1"), "oci:x").unwrap().digest(),
            a.digest()
        );
        assert_eq!(choose(&[&a], None, "oci:x").unwrap().digest(), a.digest());
    }
}
