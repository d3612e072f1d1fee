//! Flattening an image into a plain directory: `orbit image extract` (the root filesystem)
//! and `orbit image render` (root filesystem plus the manifest and config, as a stage1 sees
//! an app).
//!
//! Nothing is written at the user's DIR until everything checked out: each layer blob is
//! hashed against its digest before it is applied, the layers are applied into a temp
//! directory beside DIR, and that is renamed into place only at the end. On failure DIR is
//! as it was (missing, or empty), and so are its parents.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::catalog::{self, StoredImage};
use super::digest::{Digest, HashingReader};
use super::error::{plain_io, ImageError, Result};
use super::media;
use super::store::Store;
use super::unpack::{self, UnpackOptions, WhiteoutMode};

/// Applies every layer of `image`, base first, into the new or empty directory `dir`.
pub fn extract(store: &Store, image: &StoredImage, dir: &Path) -> Result<()> {
    let _lock = store.lock_shared()?;
    let staging = Staging::beside(dir)?;
    apply_layers(store, image, staging.path())?;
    staging.commit()
}

/// Writes `dir/rootfs` (flattened), `dir/manifest.json` and `dir/config.json`.
pub fn render(store: &Store, image: &StoredImage, dir: &Path) -> Result<()> {
    let _lock = store.lock_shared()?;
    let staging = Staging::beside(dir)?;
    let rootfs = staging.path().join("rootfs");
    fs::create_dir(&rootfs).map_err(|e| ImageError::io_dest("cannot create", dir, e))?;
    apply_layers(store, image, &rootfs)?;
    let (manifest_bytes, manifest) = store.manifest(&image.digest)?;
    let config_digest: Digest = manifest.config().digest().to_string().parse()?;
    let config = store.read_blob(&config_digest, "config")?;
    for (name, bytes) in [("manifest.json", &manifest_bytes), ("config.json", &config)] {
        let p = staging.path().join(name);
        fs::write(&p, bytes)
            .map_err(|e| ImageError::io_dest("cannot write", &dir.join(name), e))?;
    }
    staging.commit()
}

/// Applies the layers of `image` onto `target`, each after checking its blob.
fn apply_layers(store: &Store, image: &StoredImage, target: &Path) -> Result<()> {
    let (manifest, config) = catalog::load(store, image)?;
    for (i, (layer, diff_id)) in manifest.layers().iter().zip(config.diff_ids()?).enumerate() {
        let blob: Digest = layer.digest().to_string().parse()?;
        let what = format!("layer {} ({blob})", i + 1);
        let compression =
            media::layer_compression(layer.media_type().as_ref()).map_err(|error| {
                ImageError::MediaType {
                    what: what.clone(),
                    error,
                }
            })?;
        check_blob(store, &blob, &what)?;
        let path = store.blob_path(&blob);
        let f = File::open(&path).map_err(ImageError::io_at("cannot open blob", &path))?;
        let reader = media::decompress(compression, BufReader::with_capacity(1 << 20, f))
            .map_err(|e| corrupt(&what, e))?;
        let mut diff = HashingReader::new(reader);
        let opts = UnpackOptions {
            whiteouts: WhiteoutMode::Apply,
            record_manifest: false,
            ..UnpackOptions::default()
        };
        unpack::unpack_layer(&mut diff, target, &opts)
            .map_err(|e| apply_error(&what, target, e))?;
        diff.drain().map_err(|e| corrupt(&what, e))?;
        let actual = diff.finish().0;
        if actual != diff_id {
            return Err(ImageError::CorruptStore {
                what: format!("{what} unpacks to diff-ID {actual}, not {diff_id}"),
            });
        }
    }
    Ok(())
}

/// Hashes a stored blob against its digest.
fn check_blob(store: &Store, d: &Digest, what: &str) -> Result<()> {
    match super::verify::blob_problem(store, d, &format!("the blob of {what}")) {
        None => Ok(()),
        Some(p) => Err(ImageError::CorruptStore {
            what: format!("{}: {}", p.object, p.problem),
        }),
    }
}

fn corrupt(what: &str, e: io::Error) -> ImageError {
    ImageError::CorruptStore {
        what: format!("{what} cannot be decompressed ({e})"),
    }
}

/// A failed apply: a full or read-only destination is reported as such (with advice about
/// the destination, not the store); anything else names the layer.
fn apply_error(what: &str, target: &Path, e: unpack::UnpackError) -> ImageError {
    if let Some(code) = e.io_error().and_then(io::Error::raw_os_error) {
        if code == rustix::io::Errno::NOSPC.raw_os_error()
            || code == rustix::io::Errno::ROFS.raw_os_error()
        {
            return ImageError::io_dest(what, target, io::Error::from_raw_os_error(code));
        }
    }
    ImageError::Unpack {
        layer: what.to_string(),
        error: e,
    }
}

/// A temp directory beside the user's DIR, renamed onto it on success and removed (with any
/// parents it had to create) on failure.
struct Staging {
    dir: PathBuf,
    tmp: Option<TempDir>,
    /// The first ancestor of `dir` that was created for it (removed on failure).
    created: Option<PathBuf>,
    /// Whether `dir` existed (empty) before.
    existed: bool,
}

impl Staging {
    fn beside(dir: &Path) -> Result<Staging> {
        let existed = match fs::read_dir(dir) {
            Ok(mut it) => {
                if it.next().is_some() {
                    return Err(ImageError::Io {
                        context: format!("{} is not empty", dir.display()),
                        error: io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "choose an empty or new directory",
                        ),
                    });
                }
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(ImageError::io_dest("cannot read", dir, e)),
        };
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let created = parent
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .last()
            .map(Path::to_path_buf);
        let mut staging = Staging {
            dir: dir.to_path_buf(),
            tmp: None,
            created,
            existed,
        };
        fs::create_dir_all(&parent)
            .map_err(|e| ImageError::io_dest("cannot create", &parent, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(".orbit-extract-")
            .tempdir_in(&parent)
            .map_err(|e| {
                ImageError::io_dest("cannot create a directory in", &parent, plain_io(e))
            })?;
        // What DIR would have been; a layer's own `./` entry overrides it.
        let mode = match existed {
            true => fs::metadata(dir).map_or(0o755, |m| m.permissions().mode() & 0o7777),
            false => 0o755,
        };
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
            .map_err(|e| ImageError::io_dest("cannot prepare", dir, e))?;
        staging.tmp = Some(tmp);
        Ok(staging)
    }

    fn path(&self) -> &Path {
        self.tmp.as_ref().expect("staging directory exists").path()
    }

    /// Moves the staged tree onto DIR.
    fn commit(mut self) -> Result<()> {
        let tmp = self.tmp.take().expect("staging directory exists");
        match fs::rename(tmp.path(), &self.dir) {
            Ok(()) => {
                let _ = tmp.keep();
                self.created = None;
                Ok(())
            }
            // DIR is a mount point (or otherwise cannot be replaced): move its contents in.
            Err(_) if self.existed => {
                let moved = move_children(tmp.path(), &self.dir);
                if moved.is_err() {
                    // DIR was empty: whatever is in it now is ours.
                    empty(&self.dir);
                }
                moved.map_err(|e| {
                    ImageError::io_dest("cannot move the result into", &self.dir, e)
                })?;
                self.created = None;
                Ok(())
            }
            Err(e) => {
                self.tmp = Some(tmp);
                Err(ImageError::io_dest(
                    "cannot move the result to",
                    &self.dir,
                    e,
                ))
            }
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        drop(self.tmp.take());
        if let Some(created) = &self.created {
            let _ = fs::remove_dir_all(created);
        }
    }
}

fn move_children(from: &Path, to: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        fs::rename(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

fn empty(dir: &Path) {
    if let Ok(it) = fs::read_dir(dir) {
        for entry in it.flatten() {
            let p = entry.path();
            let _ = if p.is_dir() && !p.is_symlink() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }
}
