//! Local image sources: `oci:DIR[:REF]`, `oci-archive:FILE[:REF]` and `docker-archive:FILE[:REF]`.
//! Opening a source yields its manifest (hashed, not yet trusted), its signatures and a
//! way to stream its blobs; nothing is parsed beyond what is needed to find the manifest
//! until the signature has been checked.

pub mod archive;
pub mod cosign;
mod docker;
mod oci;

pub use cosign::is_cosign_tag;
pub use oci::cosign_signature_tag;
pub(crate) use oci::{read_cosign_signatures, read_saved_signatures};

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::digest::Digest;
use super::error::{ImageError, Result};
use super::layout::{self, LayoutFs};
use crate::trust::Signature;

/// A parsed source reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// An OCI layout directory.
    Oci {
        dir: PathBuf,
        reference: Option<String>,
    },
    /// A tar archive of an OCI layout.
    OciArchive {
        file: PathBuf,
        reference: Option<String>,
    },
    /// What `docker save` / `podman save` writes.
    DockerArchive {
        file: PathBuf,
        reference: Option<String>,
    },
    /// A registry: `docker://[REGISTRY/]REPO[:TAG|@DIGEST]` (what follows the prefix).
    Registry { reference: String },
}

impl SourceRef {
    /// Parses `TRANSPORT:PATH[:REF]`; `None` when `s` has no known transport prefix.
    pub fn parse(s: &str) -> Option<Result<SourceRef>> {
        if let Some(r) = s.strip_prefix(super::registry::PREFIX) {
            if r.is_empty() {
                return Some(Err(ImageError::BadSource(s.to_string())));
            }
            return Some(Ok(SourceRef::Registry {
                reference: r.to_string(),
            }));
        }
        let (transport, rest) = s.split_once(':')?;
        let (path, reference) = match rest.split_once(':') {
            Some((p, r)) => (
                PathBuf::from(p),
                Some(r.to_string()).filter(|r| !r.is_empty()),
            ),
            None => (PathBuf::from(rest), None),
        };
        if path.as_os_str().is_empty() {
            return Some(Err(ImageError::BadSource(s.to_string())));
        }
        Some(Ok(match transport {
            "oci" => SourceRef::Oci {
                dir: path,
                reference,
            },
            "oci-archive" => SourceRef::OciArchive {
                file: path,
                reference,
            },
            "docker-archive" => SourceRef::DockerArchive {
                file: path,
                reference,
            },
            _ => return None,
        }))
    }

    /// The path of the layout or archive.
    pub fn path(&self) -> &Path {
        match self {
            SourceRef::Oci { dir, .. } => dir,
            SourceRef::OciArchive { file, .. } | SourceRef::DockerArchive { file, .. } => file,
            SourceRef::Registry { reference } => Path::new(reference),
        }
    }

    /// Where a detached signature for this source lives: `<path>.sig`.
    pub fn detached_signature_path(&self) -> PathBuf {
        let p = self.path();
        let trimmed = p.to_string_lossy().trim_end_matches('/').to_string();
        PathBuf::from(format!("{trimmed}.sig"))
    }

    /// Opens the source and finds its image manifest.
    pub fn open(&self) -> Result<SourceImage> {
        if let SourceRef::OciArchive { file, .. } | SourceRef::DockerArchive { file, .. } = self {
            if file.is_dir() {
                return Err(ImageError::WrongTransport {
                    path: file.clone(),
                    is: "a directory, not an archive",
                    suggestion: format!("oci:{}", file.display()),
                });
            }
        }
        let mut image = match self {
            SourceRef::Oci { dir, reference } => {
                if !dir.exists() {
                    return Err(ImageError::NotFound {
                        what: "OCI layout directory".into(),
                        path: dir.clone(),
                    });
                }
                if !dir.is_dir() {
                    return Err(ImageError::WrongTransport {
                        path: dir.clone(),
                        is: "a file, not an OCI layout directory",
                        suggestion: format!("oci-archive:{}", self.path().display()),
                    });
                }
                oci::open(
                    Box::new(layout::DirFs::new(dir)),
                    &self.to_string(),
                    reference.as_deref(),
                    dir,
                    None,
                )?
            }
            SourceRef::OciArchive { file, reference } => {
                let fs = archive::TarFs::open(file)?;
                oci::open(
                    Box::new(fs),
                    &self.to_string(),
                    reference.as_deref(),
                    file,
                    None,
                )?
            }
            SourceRef::DockerArchive { file, reference } => {
                docker::open(file, &self.to_string(), reference.as_deref())?
            }
            // Registries are pulled into a local layout first (`fetch`).
            SourceRef::Registry { .. } => return Err(ImageError::BadSource(self.to_string())),
        };
        let sig_path = self.detached_signature_path();
        if sig_path.exists() {
            let detached = crate::trust::read_sig_file(&sig_path)?;
            image.signatures.extend(detached);
        }
        Ok(image)
    }
}

impl std::fmt::Display for SourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (t, p, r) = match self {
            SourceRef::Registry { reference } => {
                return write!(f, "{}{reference}", super::registry::PREFIX)
            }
            SourceRef::Oci { dir, reference } => ("oci", dir, reference),
            SourceRef::OciArchive { file, reference } => ("oci-archive", file, reference),
            SourceRef::DockerArchive { file, reference } => ("docker-archive", file, reference),
        };
        write!(f, "{t}:{}", p.display())?;
        if let Some(r) = r {
            write!(f, ":{r}")?;
        }
        Ok(())
    }
}

/// Opens the image `reference` of an OCI layout reached through `fs` (a registry pull),
/// named `display` in messages; an index resolves to `platform` (`os/arch[/variant]`,
/// default this machine's).
pub fn open_layout(
    fs: Box<dyn LayoutFs>,
    display: &str,
    reference: Option<&str>,
    path: &Path,
    platform: Option<&str>,
) -> Result<SourceImage> {
    oci::open(fs, display, reference, path, platform)
}

/// An image found in a source: its manifest bytes and digest, the name it gives itself,
/// its signatures, and access to its blobs. Nothing in it is trusted yet.
pub struct SourceImage {
    /// The source as the user wrote it.
    pub display: String,
    /// The name the source gives the image, if any.
    pub name: Option<String>,
    /// The manifest, byte for byte.
    pub manifest: Vec<u8>,
    /// The manifest's digest (computed here, not taken from the source).
    pub manifest_digest: Digest,
    /// Digests a signature may name for this image: the manifest's and, when the source
    /// pointed at an index, the index's.
    pub signable_digests: Vec<Digest>,
    /// Signatures found in and beside the source.
    pub signatures: Vec<Signature>,
    /// The image index the source's reference points at, byte for byte (its digest is the
    /// last of `signable_digests`), when it points at one rather than at the manifest.
    pub index: Option<Vec<u8>>,
    fs: Box<dyn LayoutFs>,
    /// Blob paths that are not `blobs/sha256/<hex>` (docker archives).
    blob_paths: HashMap<Digest, String>,
}

impl SourceImage {
    /// Opens a blob of the image for streaming.
    pub fn open_blob(&self, d: &Digest) -> Result<(Box<dyn Read + Send + '_>, u64)> {
        let rel = self
            .blob_paths
            .get(d)
            .cloned()
            .unwrap_or_else(|| layout::blob_rel(d));
        self.fs.open(&rel)?.ok_or_else(|| ImageError::NotFound {
            what: format!("blob {d} of {}", self.display),
            path: PathBuf::from(format!("{}/{rel}", self.fs.describe())),
        })
    }

    /// True when the blobs this source streams are downloads it keeps in files of their own
    /// (see [`SourceImage::take_download`]): copying them as they are read would be waste.
    pub fn keeps_downloads(&self) -> bool {
        self.fs.keeps_downloads()
    }

    /// The file blob `d` was downloaded to, once read: the caller's to move or delete.
    pub fn take_download(&self, d: &Digest) -> Option<PathBuf> {
        self.fs.take_download(&layout::blob_rel(d))
    }

    /// Reads a small blob (config) and verifies its digest.
    pub fn read_blob(&self, d: &Digest, what: &str) -> Result<Vec<u8>> {
        let rel = self
            .blob_paths
            .get(d)
            .cloned()
            .unwrap_or_else(|| layout::blob_rel(d));
        layout::read_verified(
            self.fs.as_ref(),
            &rel,
            d,
            &format!("{what} of {}", self.display),
        )
    }
}
