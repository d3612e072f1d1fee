//! Reading `docker save` / `podman save` archives: `manifest.json` lists, per image, its
//! config file, repo tags and layer tars. orbit converts the entry to an OCI manifest
//! deterministically, so the same archive always yields the same manifest digest (which is
//! what a signature over a docker archive names).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use super::archive::TarFs;
use super::SourceImage;
use crate::image::digest::{Digest, HashingReader};
use crate::image::error::{ImageError, Result};
use crate::image::layout::{self, LayoutFs};
use crate::image::media::{self, Compression};
use crate::image::reference::docker_normalize;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub(super) fn open(file: &Path, display: &str, reference: Option<&str>) -> Result<SourceImage> {
    let fs = TarFs::open(file)?;
    let what = format!("{display} manifest.json");
    let bytes = layout::read_small(&fs, "manifest.json", &what)?.ok_or_else(|| {
        ImageError::malformed(
            display,
            "not a docker archive: it has no manifest.json (is it an oci-archive?)",
        )
    })?;
    let entries: Vec<Entry> =
        serde_json::from_slice(&bytes).map_err(|e| ImageError::malformed(&what, e))?;
    let entry = choose(&entries, reference, display)?;
    let name = match reference {
        Some(r) if r.contains(':') || r.contains('/') => Some(docker_normalize(r)),
        _ => entry
            .repo_tags
            .as_ref()
            .and_then(|t| t.first())
            .map(|t| docker_normalize(t)),
    };

    let mut blob_paths = HashMap::new();
    let config_rel = entry.config.trim_start_matches("./").to_string();
    let config = layout::read_small(&fs, &config_rel, "image config")?.ok_or_else(|| {
        ImageError::malformed(&what, format!("config file {config_rel} is missing"))
    })?;
    let config_digest = Digest::of(&config);
    blob_paths.insert(config_digest.clone(), config_rel);

    let mut layers = Vec::new();
    for rel in &entry.layers {
        let rel = rel.trim_start_matches("./").to_string();
        let (digest, size, compression) = layer_blob(&fs, &rel, display)?;
        blob_paths.insert(digest.clone(), rel);
        layers.push(serde_json::json!({
            "mediaType": media::oci_layer_media_type(compression),
            "digest": digest.as_str(),
            "size": size,
        }));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest.as_str(), "size": config.len()},
        "layers": layers,
    }))
    .expect("a JSON value serializes");
    let manifest_digest = Digest::of(&manifest);
    Ok(SourceImage {
        display: display.to_string(),
        name,
        manifest,
        signable_digests: vec![manifest_digest.clone()],
        manifest_digest,
        signatures: Vec::new(),
        index: None,
        fs: Box::new(fs),
        blob_paths,
    })
}

fn choose<'a>(entries: &'a [Entry], reference: Option<&str>, display: &str) -> Result<&'a Entry> {
    let tags: Vec<String> = entries
        .iter()
        .flat_map(|e| e.repo_tags.clone().unwrap_or_default())
        .collect();
    match reference {
        None if entries.len() == 1 => Ok(&entries[0]),
        None if entries.is_empty() => Err(ImageError::malformed(
            display,
            "manifest.json lists no image",
        )),
        None => Err(ImageError::SourceAmbiguous {
            source_name: display.to_string(),
            refs: tags,
        }),
        Some(r) => entries
            .iter()
            .find(|e| {
                e.repo_tags
                    .iter()
                    .flatten()
                    .any(|t| t == r || docker_normalize(t) == docker_normalize(r))
            })
            .ok_or_else(|| ImageError::NoSuchRef {
                source_name: display.to_string(),
                reference: r.into(),
                refs: tags,
            }),
    }
}

/// A layer tar's digest, size and compression. Docker archives name layers by path, not
/// digest, so the digest is computed here by streaming the entry once.
fn layer_blob(fs: &TarFs, rel: &str, display: &str) -> Result<(Digest, u64, Compression)> {
    let (mut r, size) = fs.open(rel)?.ok_or_else(|| {
        ImageError::malformed(
            display,
            format!("layer {rel} listed in manifest.json is missing"),
        )
    })?;
    let mut magic = [0u8; 4];
    let n = r.read(&mut magic).map_err(|e| ImageError::Io {
        context: format!("cannot read {rel} of {display}"),
        error: e,
    })?;
    let compression = match &magic[..n] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    };
    if let Some(hex) = rel.strip_prefix("blobs/sha256/") {
        if let Ok(d) = format!("sha256:{hex}").parse::<Digest>() {
            return Ok((d, size, compression));
        }
    }
    let mut hashing = HashingReader::new((&magic[..n]).chain(r));
    hashing.drain().map_err(|e| ImageError::Io {
        context: format!("cannot read {rel} of {display}"),
        error: e,
    })?;
    Ok((hashing.finish().0, size, compression))
}
