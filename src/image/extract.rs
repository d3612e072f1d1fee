//! Flattening an image into a plain directory: `orbit image extract` (the root filesystem)
//! and `orbit image render` (root filesystem plus the manifest and config, as a stage1 sees
//! an app).

use std::fs::{self, File};
use std::io::BufReader;
use std::path::Path;

use super::catalog::{self, StoredImage};
use super::digest::{Digest, HashingReader};
use super::error::{ImageError, Result};
use super::media;
use super::store::Store;
use super::unpack::{self, UnpackOptions, WhiteoutMode};

/// Applies every layer of `image`, base first, onto `dir` (created; must be empty).
pub fn extract(store: &Store, image: &StoredImage, dir: &Path) -> Result<()> {
    let (manifest, config) = catalog::load(store, image)?;
    prepare_empty_dir(dir)?;
    for (layer, diff_id) in manifest.layers().iter().zip(config.diff_ids()?) {
        let blob: Digest = layer.digest().to_string().parse()?;
        let what = format!("layer {blob}");
        let compression =
            media::layer_compression(layer.media_type().as_ref()).map_err(|error| {
                ImageError::MediaType {
                    what: what.clone(),
                    error,
                }
            })?;
        let path = store.blob_path(&blob);
        let f = File::open(&path).map_err(ImageError::io_at("cannot open blob", &path))?;
        let reader =
            media::decompress(compression, BufReader::with_capacity(1 << 20, f)).map_err(|e| {
                ImageError::Io {
                    context: format!("cannot read {what}"),
                    error: e,
                }
            })?;
        let mut diff = HashingReader::new(reader);
        let opts = UnpackOptions {
            whiteouts: WhiteoutMode::Apply,
            record_manifest: false,
            ..UnpackOptions::default()
        };
        unpack::unpack_layer(&mut diff, dir, &opts).map_err(|error| ImageError::Unpack {
            layer: what.clone(),
            error,
        })?;
        diff.drain().map_err(|e| ImageError::Io {
            context: format!("cannot read {what}"),
            error: e,
        })?;
        let actual = diff.finish().0;
        if actual != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("{what} (diff-ID)"),
                expected: diff_id.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    Ok(())
}

/// Writes `dir/rootfs` (flattened), `dir/manifest.json` and `dir/config.json`.
pub fn render(store: &Store, image: &StoredImage, dir: &Path) -> Result<()> {
    prepare_empty_dir(dir)?;
    extract(store, image, &dir.join("rootfs"))?;
    let (manifest_bytes, _) = store.manifest(&image.digest)?;
    let (manifest, _) = catalog::load(store, image)?;
    let config_digest: Digest = manifest.config().digest().to_string().parse()?;
    let config = store.read_blob(&config_digest, "config")?;
    for (name, bytes) in [("manifest.json", &manifest_bytes), ("config.json", &config)] {
        let p = dir.join(name);
        fs::write(&p, bytes).map_err(ImageError::io_at("cannot write", &p))?;
    }
    Ok(())
}

fn prepare_empty_dir(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(ImageError::Io {
                    context: format!("{} is not empty", dir.display()),
                    error: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "choose an empty or new directory",
                    ),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(ImageError::io_at("cannot create", dir))
        }
        Err(e) => Err(ImageError::io("cannot read", dir, e)),
    }
}
