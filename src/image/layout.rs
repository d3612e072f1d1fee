//! Reading OCI image layouts, wherever their files live (a directory, or inside a tar
//! archive), through the small [`LayoutFs`] abstraction.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex};

use super::digest::Digest;
use super::error::{ImageError, Result};

/// The largest JSON document (index, manifest, config) orbit reads into memory.
pub const MAX_JSON_BYTES: u64 = 16 * 1024 * 1024;

/// Read access to the files of a layout or archive, by relative path.
pub trait LayoutFs: Send + Sync {
    /// Opens `rel` (e.g. `index.json`, `blobs/sha256/<hex>`); `Ok(None)` when it does not exist.
    fn open(&self, rel: &str) -> Result<Option<(Box<dyn Read + Send + '_>, u64)>>;
    /// A human name for error messages.
    fn describe(&self) -> String;
    /// True when every blob streamed from here lands in a file of its own (a registry
    /// download), which [`LayoutFs::take_download`] hands over once the blob is read.
    fn keeps_downloads(&self) -> bool {
        false
    }
    /// The file blob `rel` was downloaded to, handed to the caller: to move into the store,
    /// or to delete when the blob proved bad.
    fn take_download(&self, _rel: &str) -> Option<PathBuf> {
        None
    }
}

/// A layout in a directory.
pub struct DirFs {
    root: PathBuf,
}

impl DirFs {
    /// A layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DirFs {
        DirFs { root: root.into() }
    }
}

impl LayoutFs for DirFs {
    fn open(&self, rel: &str) -> Result<Option<(Box<dyn Read + Send + '_>, u64)>> {
        let path = self.root.join(rel);
        match File::open(&path) {
            Ok(f) => {
                let len = f
                    .metadata()
                    .map_err(ImageError::io_at("cannot stat", &path))?
                    .len();
                Ok(Some((Box::new(f), len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io("cannot open", &path, e)),
        }
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// Reads a whole small file of a layout, refusing absurd sizes.
pub fn read_small(fs: &dyn LayoutFs, rel: &str, what: &str) -> Result<Option<Vec<u8>>> {
    let Some((r, len)) = fs.open(rel)? else {
        return Ok(None);
    };
    if len > MAX_JSON_BYTES {
        return Err(ImageError::malformed(
            what,
            format!("{len} bytes is too large for a JSON document"),
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    r.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ImageError::Io {
            context: format!("cannot read {what}"),
            error: e,
        })?;
    Ok(Some(buf))
}

/// The relative path of a blob in a layout.
pub fn blob_rel(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Reads a small blob and checks that it hashes to its digest.
pub fn read_verified_blob(fs: &dyn LayoutFs, d: &Digest, what: &str) -> Result<Vec<u8>> {
    read_verified(fs, &blob_rel(d), d, what)
}

/// Reads the small file `rel` and checks that it hashes to `d`.
pub fn read_verified(fs: &dyn LayoutFs, rel: &str, d: &Digest, what: &str) -> Result<Vec<u8>> {
    let bytes = read_small(fs, rel, what)?.ok_or_else(|| ImageError::NotFound {
        what: format!("{what} (blob {d})"),
        path: PathBuf::from(format!("{}/{rel}", fs.describe())),
    })?;
    let actual = Digest::of(&bytes);
    if &actual != d {
        return Err(ImageError::DigestMismatch {
            what: what.to_string(),
            expected: d.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(bytes)
}

/// Reads and parses `index.json`, checking `oci-layout` first.
pub fn read_index(fs: &dyn LayoutFs) -> Result<ImageIndex> {
    let what = format!("{} (oci-layout)", fs.describe());
    let layout = read_small(fs, "oci-layout", &what)?.ok_or_else(|| {
        ImageError::malformed(
            fs.describe(),
            "not an OCI image layout: it has no 'oci-layout' file",
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_slice(&layout).map_err(|e| ImageError::malformed(&what, e))?;
    if v.get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .is_none()
    {
        return Err(ImageError::malformed(&what, "missing imageLayoutVersion"));
    }
    let what = format!("{}/index.json", fs.describe());
    let bytes = read_small(fs, "index.json", &what)?.ok_or_else(|| {
        ImageError::malformed(
            fs.describe(),
            "not an OCI image layout: it has no index.json",
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ImageError::malformed(what, e))
}

/// The digest of a descriptor, validated.
pub fn descriptor_digest(d: &Descriptor) -> Result<Digest> {
    Ok(d.digest().to_string().parse::<Digest>()?)
}

/// The `org.opencontainers.image.ref.name` of a descriptor.
pub fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()?
        .get(super::media::REF_NAME_ANNOTATION)
        .map(String::as_str)
}

/// True for a layout path that exists as a directory.
pub fn is_layout_dir(p: &Path) -> bool {
    p.join("oci-layout").is_file()
}
