//! Finding images in the store by what users type (name, short name, digest, digest prefix,
//! or the source they came from) and describing them.

use serde::Serialize;

use super::config::ImageConfig;
use super::digest::Digest;
use super::error::{ImageError, Result};
use super::reference;
use super::signatures;
use super::source::SourceRef;
use super::store::{self, IndexEntry, Store};

/// An image in the store: one manifest digest and every name pointing at it.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// Manifest digest.
    pub digest: Digest,
    /// Names pointing at it (may be empty only transiently).
    pub names: Vec<String>,
    /// The index entries for those names.
    pub entries: Vec<IndexEntry>,
    /// True when the user named it by a name (not a digest): `rm` then removes only that name.
    pub by_name: Option<String>,
}

/// How a reference matched.
fn group(entries: &[IndexEntry], digest: &Digest, by_name: Option<String>) -> StoredImage {
    let entries: Vec<IndexEntry> = entries
        .iter()
        .filter(|e| &e.digest == digest)
        .cloned()
        .collect();
    StoredImage {
        digest: digest.clone(),
        names: entries.iter().filter_map(|e| e.name.clone()).collect(),
        entries,
        by_name,
    }
}

/// A digest prefix: at least 4 hex digits bare (shorter could be a name), any with `sha256:`.
fn looks_like_hex(s: &str, min_len: usize) -> bool {
    s.len() >= min_len
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Resolves a user's image reference against the store.
pub fn resolve(store: &Store, reference_str: &str) -> Result<StoredImage> {
    let entries = store.images()?;
    if let Some(src) = SourceRef::parse(reference_str) {
        let src = src?;
        if let SourceRef::Registry { reference } = &src {
            let name = super::registry::store_name(&super::registry::parse(reference)?);
            return resolve(store, &name);
        }
        let digest = src.open()?.manifest_digest;
        if entries.iter().any(|e| e.digest == digest) {
            return Ok(group(&entries, &digest, None));
        }
        return Err(ImageError::UnknownImage(reference_str.to_string()));
    }
    // Exact name, then name with :latest.
    for candidate in [
        reference_str.to_string(),
        format!("{reference_str}:{}", reference::DEFAULT_TAG),
    ] {
        if let Some(e) = entries
            .iter()
            .find(|e| e.name.as_deref() == Some(candidate.as_str()))
        {
            return Ok(group(&entries, &e.digest, Some(candidate)));
        }
    }
    // Digest or digest prefix.
    let (hex, min_len) = match reference_str.strip_prefix("sha256:") {
        Some(h) => (h, 1),
        None => (reference_str, 4),
    };
    if looks_like_hex(hex, min_len) {
        let mut digests: Vec<&Digest> = entries
            .iter()
            .map(|e| &e.digest)
            .filter(|d| d.hex().starts_with(hex))
            .collect();
        digests.sort();
        digests.dedup();
        match digests.as_slice() {
            [one] => return Ok(group(&entries, one, None)),
            [] => {}
            many => {
                return Err(ImageError::Ambiguous {
                    reference: reference_str.to_string(),
                    candidates: many.iter().map(|d| d.short().to_string()).collect(),
                })
            }
        }
    }
    // Short name: `busybox` or `busybox:1` matches `example.com/busybox:latest` / `…:1`.
    let wanted = if reference::split_tag(reference_str).1.is_empty() {
        format!("{reference_str}:{}", reference::DEFAULT_TAG)
    } else {
        reference_str.to_string()
    };
    let suffix = format!("/{wanted}");
    let mut matches: Vec<&IndexEntry> = entries
        .iter()
        .filter(|e| e.name.as_deref().is_some_and(|n| n.ends_with(&suffix)))
        .collect();
    matches.dedup_by(|a, b| a.name == b.name);
    match matches.as_slice() {
        [one] => Ok(group(&entries, &one.digest, one.name.clone())),
        [] => Err(ImageError::UnknownImage(reference_str.to_string())),
        many => Err(ImageError::Ambiguous {
            reference: reference_str.to_string(),
            candidates: many.iter().filter_map(|e| e.name.clone()).collect(),
        }),
    }
}

/// One row of `orbit image list`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    /// Name.
    pub name: String,
    /// Manifest digest.
    pub digest: String,
    /// Sum of the compressed layer and config sizes.
    pub size: u64,
    /// When it was fetched.
    pub fetched: String,
    /// How it was verified.
    pub verified: String,
    /// Where it came from.
    pub source: String,
}

/// Every named image in the store.
pub fn list(store: &Store) -> Result<Vec<ImageSummary>> {
    let mut out = Vec::new();
    for e in store.images()? {
        let size = match store.manifest(&e.digest) {
            Ok((_, m)) => m.layers().iter().map(|l| l.size()).sum::<u64>() + m.config().size(),
            Err(_) => 0,
        };
        out.push(ImageSummary {
            name: e.name.clone().unwrap_or_default(),
            digest: e.digest.to_string(),
            size,
            fetched: e
                .annotation(store::FETCHED_ANNOTATION)
                .unwrap_or("")
                .to_string(),
            verified: e
                .annotation(store::VERIFIED_ANNOTATION)
                .unwrap_or("")
                .to_string(),
            source: e
                .annotation(store::SOURCE_ANNOTATION)
                .unwrap_or("")
                .to_string(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A layer as `orbit image inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    /// Compressed blob digest.
    pub digest: String,
    /// Uncompressed diff-ID.
    pub diff_id: String,
    /// Media type.
    pub media_type: String,
    /// Compressed size.
    pub size: u64,
    /// Whether it is unpacked in the layer store.
    pub unpacked: bool,
}

/// Everything `orbit image inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ImageDetails {
    /// Names.
    pub names: Vec<String>,
    /// Manifest digest.
    pub digest: String,
    /// Manifest media type.
    pub media_type: String,
    /// Total compressed size.
    pub size: u64,
    /// Layers, base first.
    pub layers: Vec<LayerInfo>,
    /// The image config.
    pub config: ImageConfig,
    /// Where it came from.
    pub source: String,
    /// When it was fetched.
    pub fetched: String,
    /// How it was verified at fetch (`key sha256:…` or `insecure`).
    pub verified: String,
    /// Number of signatures kept in the store.
    pub signatures: usize,
}

/// Reads the manifest and config of an image.
pub fn load(
    store: &Store,
    image: &StoredImage,
) -> Result<(oci_spec::image::ImageManifest, ImageConfig)> {
    let (_, manifest) = store.manifest(&image.digest)?;
    let config_digest: Digest = manifest.config().digest().to_string().parse()?;
    let what = format!("config of {}", image.digest);
    let config = ImageConfig::parse(&store.read_blob(&config_digest, &what)?, &what)?;
    Ok((manifest, config))
}

/// How many signatures the store keeps for an image: over its manifest, and over the
/// indexes it was fetched through. Only signatures that verified at fetch (or that
/// `orbit image sign` made) are ever kept.
fn stored_signature_count(store: &Store, image: &StoredImage) -> Result<usize> {
    let mut digests = vec![image.digest.clone()];
    for e in &image.entries {
        if let Some(d) = e.annotation(store::INDEX_ANNOTATION) {
            let d: Digest = d.parse()?;
            if !digests.contains(&d) {
                digests.push(d);
            }
        }
    }
    let mut n = 0;
    for d in &digests {
        n += signatures::stored_signatures(store, d)?.len();
    }
    Ok(n)
}

/// Describes an image.
pub fn inspect(store: &Store, image: &StoredImage) -> Result<ImageDetails> {
    let (manifest, config) = load(store, image)?;
    let diff_ids = config.diff_ids()?;
    let layers: Vec<LayerInfo> = manifest
        .layers()
        .iter()
        .zip(&diff_ids)
        .map(|(l, d)| LayerInfo {
            digest: l.digest().to_string(),
            diff_id: d.to_string(),
            media_type: l.media_type().to_string(),
            size: l.size(),
            unpacked: store.layer_dir(d).is_dir(),
        })
        .collect();
    let first = image.entries.first();
    let ann = |k| {
        first
            .and_then(|e| e.annotation(k))
            .unwrap_or("")
            .to_string()
    };
    Ok(ImageDetails {
        names: image.names.clone(),
        digest: image.digest.to_string(),
        media_type: manifest
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        size: layers.iter().map(|l| l.size).sum::<u64>() + manifest.config().size(),
        layers,
        config,
        source: ann(store::SOURCE_ANNOTATION),
        fetched: ann(store::FETCHED_ANNOTATION),
        verified: ann(store::VERIFIED_ANNOTATION),
        signatures: stored_signature_count(store, image)?,
    })
}
