//! The on-disk store: `images/` (an OCI image layout of verified blobs), `layers/` (each
//! layer unpacked once, by diff-ID), `tmp/` (work in progress, renamed into place only when
//! complete) and `locks/`. The filesystem is the database: no daemon, no cache to go stale.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use super::digest::Digest;
use super::error::{ImageError, Result};
use super::layout::{self, DirFs};
use super::media;

/// Annotation: where an image was fetched from.
pub const SOURCE_ANNOTATION: &str = "dev.orbit.source";
/// Annotation: when an image was fetched (RFC 3339).
pub const FETCHED_ANNOTATION: &str = "dev.orbit.fetched";
/// Annotation: how the image was verified (`key sha256:…` or `insecure`).
pub const VERIFIED_ANNOTATION: &str = "dev.orbit.verified";
/// Annotation: the digest of the image index the image was fetched through, when a kept
/// signature signs that index rather than the manifest (the index blob is kept too).
pub const INDEX_ANNOTATION: &str = "dev.orbit.index";
/// Annotation: the digest of the manifest (or index) a registry served for the name when it
/// was fetched, which `--pull-policy=update` compares with what the registry serves now.
pub const REGISTRY_DIGEST_ANNOTATION: &str = "dev.orbit.registry-digest";
/// Annotation: the platform (`os/arch[/variant]`) a registry fetch resolved an index to.
pub const PLATFORM_ANNOTATION: &str = "dev.orbit.platform";

/// The orbit store rooted at a directory (`--dir`, default `/var/lib/orbit`).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A held `flock` on a lock file; released on drop.
pub struct LockGuard {
    _file: File,
}

/// One name (or cosign tag) in the store's index.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    /// The descriptor as stored in `index.json`.
    pub descriptor: Descriptor,
    /// Its digest.
    pub digest: Digest,
    /// Its `org.opencontainers.image.ref.name`.
    pub name: Option<String>,
}

impl IndexEntry {
    /// An annotation of the entry.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.descriptor
            .annotations()
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// True for cosign signature/attestation entries rather than images.
    pub fn is_cosign_artifact(&self) -> bool {
        self.name
            .as_deref()
            .is_some_and(super::source::is_cosign_tag)
    }
}

impl Store {
    /// The store at `root`; nothing is touched until it is used.
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI layout directory.
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Where blob `d` lives.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.images_dir().join(layout::blob_rel(d))
    }

    /// The directory of blobs.
    pub fn blobs_dir(&self) -> PathBuf {
        self.images_dir().join("blobs/sha256")
    }

    /// The directory of unpacked layers.
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers/sha256")
    }

    /// Where the layer with diff-ID `d` is unpacked (`rootfs/` and `mtree.json` inside).
    pub fn layer_dir(&self, d: &Digest) -> PathBuf {
        self.layers_dir().join(d.hex())
    }

    /// The root filesystem of an unpacked layer (an overlayfs lower directory).
    pub fn layer_rootfs(&self, d: &Digest) -> PathBuf {
        self.layer_dir(d).join("rootfs")
    }

    /// Scratch space on the store's filesystem, for atomic renames into place.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// True when the store has been initialised.
    pub fn exists(&self) -> bool {
        self.images_dir().join("oci-layout").is_file()
    }

    /// Creates the store's directories and an empty OCI layout when missing.
    pub fn init(&self) -> Result<()> {
        create_store_root(&self.root)
            .map_err(ImageError::io_at("cannot create the store", &self.root))?;
        for dir in [
            self.blobs_dir(),
            self.layers_dir(),
            self.tmp_dir(),
            self.root.join("locks"),
        ] {
            fs::create_dir_all(&dir)
                .map_err(ImageError::io_at("cannot create store directory", &dir))?;
        }
        let oci_layout = self.images_dir().join("oci-layout");
        if !oci_layout.exists() {
            self.write_atomic(&oci_layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = self.images_dir().join("index.json");
        if !index.exists() {
            // Under the index lock: another fetch creating the store at the same moment may
            // already have written its image there, which an empty index must not replace.
            let _guard = self.lock("index.lock", true)?;
            if !index.exists() {
                self.write_atomic(&index, br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#)?;
            }
        }
        Ok(())
    }

    fn lock(&self, name: &str, exclusive: bool) -> Result<LockGuard> {
        let path = self.root.join("locks").join(name);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(ImageError::io_at("cannot open lock", &path))?;
        let op = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&file, op).map_err(|e| ImageError::io("cannot lock", &path, e.into()))?;
        Ok(LockGuard { _file: file })
    }

    /// Shared lock held while adding content (fetch); many at once.
    pub fn lock_shared(&self) -> Result<LockGuard> {
        self.lock("store.lock", false)
    }

    /// Exclusive lock held while removing content (gc, rm).
    pub fn lock_exclusive(&self) -> Result<LockGuard> {
        self.lock("store.lock", true)
    }

    /// Writes `bytes` to `path` (in the store) through a temp file in `tmp/` and a rename.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp_dir = self.tmp_dir();
        fs::create_dir_all(&tmp_dir)
            .map_err(ImageError::io_at("cannot create store directory", &tmp_dir))?;
        write_atomic(path, bytes, Some(&tmp_dir))
    }

    /// Stores a small blob, named by its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        let path = self.blob_path(&d);
        if !path.exists() {
            self.write_atomic(&path, bytes)?;
        }
        Ok(d)
    }

    /// Reads a small blob and checks its digest.
    pub fn read_blob(&self, d: &Digest, what: &str) -> Result<Vec<u8>> {
        layout::read_verified_blob(&DirFs::new(self.images_dir()), d, what)
    }

    /// The store's `index.json` entries (empty for a store not yet created).
    pub fn index(&self) -> Result<Vec<IndexEntry>> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let index = layout::read_index(&DirFs::new(self.images_dir()))?;
        index
            .manifests()
            .iter()
            .map(|d| {
                Ok(IndexEntry {
                    digest: layout::descriptor_digest(d)?,
                    name: layout::ref_name(d).map(String::from),
                    descriptor: d.clone(),
                })
            })
            .collect()
    }

    /// Image entries only (no cosign artifacts).
    pub fn images(&self) -> Result<Vec<IndexEntry>> {
        Ok(self
            .index()?
            .into_iter()
            .filter(|e| !e.is_cosign_artifact())
            .collect())
    }

    /// Changes `index.json` under the index lock, atomically.
    pub fn update_index(&self, change: impl FnOnce(&mut Vec<Descriptor>)) -> Result<()> {
        let _guard = self.lock("index.lock", true)?;
        let fs = DirFs::new(self.images_dir());
        let mut index: ImageIndex = layout::read_index(&fs)?;
        let mut manifests = index.manifests().clone();
        change(&mut manifests);
        index.set_manifests(manifests);
        let bytes = serde_json::to_vec_pretty(&index)
            .map_err(|e| ImageError::malformed("index.json", e))?;
        self.write_atomic(&self.images_dir().join("index.json"), &bytes)
    }

    /// Adds (or moves) the name `name` to the manifest `digest` of type `media_type`.
    pub fn set_ref(
        &self,
        name: &str,
        media_type: &str,
        digest: &Digest,
        size: u64,
        annotations: BTreeMap<String, String>,
    ) -> Result<()> {
        let mut ann: std::collections::HashMap<String, String> = annotations.into_iter().collect();
        ann.insert(media::REF_NAME_ANNOTATION.to_string(), name.to_string());
        let desc = descriptor(media_type, digest, size, Some(ann));
        self.update_index(|m| {
            m.retain(|d| layout::ref_name(d) != Some(name));
            m.push(desc);
        })
    }

    /// Reads and parses a stored manifest.
    pub fn manifest(&self, d: &Digest) -> Result<(Vec<u8>, ImageManifest)> {
        let bytes = self.read_blob(d, &format!("manifest {d}"))?;
        let m = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::malformed(format!("manifest {d}"), e))?;
        Ok((bytes, m))
    }
}

/// Creates the store's root directory, if missing, with mode 0751: root and the directory's
/// group list it; everyone else may only pass through to paths they already know — which
/// `--private-users` pods need (their id range mounts its layers and overlay from here).
/// Giving a group read access (the API service's user, monitoring) is `chgrp GROUP DIR`.
/// An existing root keeps its owner, group and mode.
pub fn create_store_root(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if root.is_dir() {
        return Ok(());
    }
    if let Some(parent) = root.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o751).create(root) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Writes `bytes` to `path` atomically (temp file in `tmp_dir`, or beside `path`), mode 0644.
pub fn write_atomic(path: &Path, bytes: &[u8], tmp_dir: Option<&Path>) -> Result<()> {
    crate::trust::fsutil::atomic_write(path, bytes, 0o644, tmp_dir)
        .map_err(ImageError::io_at("cannot write", path))
}

/// Builds a descriptor.
pub fn descriptor(
    media_type: &str,
    d: &Digest,
    size: u64,
    annotations: Option<std::collections::HashMap<String, String>>,
) -> Descriptor {
    let mut desc = Descriptor::new(
        media_type.into(),
        size,
        d.as_str()
            .parse::<oci_spec::image::Digest>()
            .expect("validated digest"),
    );
    desc.set_annotations(annotations);
    desc
}
