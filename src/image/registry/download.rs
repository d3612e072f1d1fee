//! Layers streamed from a registry straight into the import: [`RegistryFs`] is the pulled
//! layout (manifests, config, signatures, already on disk) whose layer blobs are read over
//! HTTP as the importer unpacks them. Every byte read is also written to
//! `<store>/downloads/<hex>.partial`, so an interrupted download resumes with an HTTP range
//! — within this fetch after a dropped connection, or in the next one — and a complete one
//! is handed to the importer to move into the store instead of being copied again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use oci_client::client::BlobResponse;
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, Reference};

use super::{explain, retryable};
use crate::image::digest::Digest;
use crate::image::error::Result;
use crate::image::layout::{DirFs, LayoutFs};

/// Attempts in a row without progress before a download is given up.
const ATTEMPTS: u32 = 4;

/// What every layer download of one pull shares.
pub struct Remote {
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) client: Client,
    pub(super) reference: Reference,
    pub(super) downloads: PathBuf,
}

/// The pulled layout: local files first, layer blobs from the registry.
pub struct RegistryFs {
    local: DirFs,
    remote: Arc<Remote>,
    /// Layer descriptors by blob hex.
    layers: HashMap<String, OciDescriptor>,
    /// Complete downloads not yet taken by the importer, by blob hex.
    done: Arc<Mutex<HashMap<String, PathBuf>>>,
}

impl RegistryFs {
    pub(super) fn new(layout: &Path, remote: Remote, layers: Vec<OciDescriptor>) -> RegistryFs {
        RegistryFs {
            local: DirFs::new(layout),
            remote: Arc::new(remote),
            layers: layers
                .into_iter()
                .filter_map(|d| {
                    let digest: Digest = d.digest.parse().ok()?;
                    Some((digest.hex().to_string(), d))
                })
                .collect(),
            done: Arc::default(),
        }
    }
}

impl LayoutFs for RegistryFs {
    fn open(&self, rel: &str) -> Result<Option<(Box<dyn Read + Send + '_>, u64)>> {
        let hex = rel.strip_prefix("blobs/sha256/").unwrap_or_default();
        let Some(desc) = self.layers.get(hex) else {
            return self.local.open(rel);
        };
        let size = desc.size.max(0) as u64;
        // Read completely once already (a layer staged a second time): from disk.
        if let Some(path) = self.done.lock().expect("no panics holding it").get(hex) {
            let f = File::open(path)
                .map_err(crate::image::error::ImageError::io_at("cannot open", path))?;
            return Ok(Some((Box::new(f), size)));
        }
        let download = BlobDownload::open(self.remote.clone(), desc.clone(), self.done.clone())
            .map_err(|e| crate::image::error::ImageError::Io {
                context: format!(
                    "cannot start the download of {} in {}",
                    desc.digest,
                    self.remote.downloads.display()
                ),
                error: e,
            })?;
        Ok(Some((Box::new(download), size)))
    }

    fn describe(&self) -> String {
        format!("{}{}", super::PREFIX, self.remote.reference.whole())
    }

    fn keeps_downloads(&self) -> bool {
        true
    }

    fn take_download(&self, rel: &str) -> Option<PathBuf> {
        let hex = rel.strip_prefix("blobs/sha256/")?;
        self.done.lock().expect("no panics holding it").remove(hex)
    }
}

impl Drop for RegistryFs {
    /// Complete downloads the importer did not take (the import failed elsewhere) go back
    /// to `<hex>.partial`, so the next fetch finds them whole instead of downloading again.
    fn drop(&mut self) {
        let done = std::mem::take(&mut *self.done.lock().unwrap_or_else(|p| p.into_inner()));
        for path in done.values() {
            give_back(path);
        }
    }
}

/// Returns a complete download (`<hex>.<pid>-<n>.done`) that did not make it into the store
/// to `<hex>.partial` beside it. A hard link never replaces a partial another fetch is
/// writing; if there is one, ours is dropped.
pub fn give_back(done: &Path) {
    let name = done
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let (Some(hex), Some(dir)) = (name.split('.').next(), done.parent()) {
        let _ = std::fs::hard_link(done, dir.join(format!("{hex}.partial")));
    }
    let _ = std::fs::remove_file(done);
}

/// One blob read from the registry (blocking, for the importer's threads), resumed with a
/// range request after a dropped connection, and recorded in its `.partial` file.
struct BlobDownload {
    remote: Arc<Remote>,
    desc: OciDescriptor,
    hex: String,
    size: u64,
    path: PathBuf,
    /// The partial file, locked (`flock`) while this download owns it.
    file: File,
    /// Bytes handed to the reader so far.
    pos: u64,
    /// Bytes in the partial file.
    on_disk: u64,
    stream: Option<BoxStream<'static, io::Result<bytes::Bytes>>>,
    /// Bytes of a full (not ranged) response to drop: the server ignored our range.
    skip: u64,
    /// Received, written, not yet handed to the reader.
    chunk: bytes::Bytes,
    failures: u32,
    finished: bool,
    done: Arc<Mutex<HashMap<String, PathBuf>>>,
}

impl BlobDownload {
    /// Opens (or resumes) `<hex>.partial`, waiting for another fetch downloading the same
    /// blob to finish with it first.
    fn open(
        remote: Arc<Remote>,
        desc: OciDescriptor,
        done: Arc<Mutex<HashMap<String, PathBuf>>>,
    ) -> io::Result<BlobDownload> {
        let digest: Digest = desc
            .digest
            .parse()
            .map_err(|_| io::Error::other(format!("malformed digest {:?}", desc.digest)))?;
        let hex = digest.hex().to_string();
        let path = remote.downloads.join(format!("{hex}.partial"));
        let file = loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
            // The fetch we waited for may have moved its finished download away: then the
            // name is another file's (or none's), and ours starts over under it.
            let ours = file.metadata()?;
            let named = std::fs::metadata(&path).ok();
            if named.is_some_and(|n| n.ino() == ours.ino() && n.dev() == ours.dev()) {
                break file;
            }
        };
        let size = desc.size.max(0) as u64;
        let mut on_disk = file.metadata()?.len();
        if on_disk > size {
            file.set_len(0)?;
            on_disk = 0;
        }
        Ok(BlobDownload {
            remote,
            desc,
            hex,
            size,
            path,
            file,
            pos: 0,
            on_disk,
            stream: None,
            skip: 0,
            chunk: bytes::Bytes::new(),
            failures: 0,
            finished: false,
            done,
        })
    }

    /// A stream of the bytes after `on_disk` (a range request when resuming).
    fn connect(&mut self) -> std::result::Result<(), String> {
        let (remote, desc, offset) = (&self.remote, &self.desc, self.on_disk);
        let r = &remote.reference;
        let opened = remote.rt.block_on(async {
            if offset == 0 {
                remote
                    .client
                    .pull_blob_stream(r, desc)
                    .await
                    .map(|s| (s.stream, 0))
            } else {
                remote
                    .client
                    .pull_blob_stream_partial(r, desc, offset, None)
                    .await
                    .map(|resp| match resp {
                        BlobResponse::Full(s) => (s.stream, offset),
                        BlobResponse::Partial(s) => (s.stream, 0),
                    })
            }
        });
        match opened {
            Ok((stream, skip)) => {
                self.stream = Some(stream);
                self.skip = skip;
                Ok(())
            }
            // 401, 404…: trying again does not help.
            Err(e) if !retryable(&e) => {
                self.failures = ATTEMPTS;
                Err(explain(r, e).to_string())
            }
            Err(e) => Err(explain(r, e).to_string()),
        }
    }

    /// Receives the next chunk into the partial file and `chunk`; `Ok(false)` at the end.
    fn receive(&mut self) -> std::result::Result<bool, String> {
        if self.stream.is_none() {
            self.connect()?;
        }
        let stream = self.stream.as_mut().expect("connected");
        let next = self.remote.rt.block_on(stream.next());
        let mut bytes = match next {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                self.stream = None;
                return Err(e.to_string());
            }
            None => {
                self.stream = None;
                return if self.on_disk >= self.size {
                    Ok(false)
                } else {
                    Err(format!(
                        "the registry ended the download after {} of {} bytes",
                        self.on_disk, self.size
                    ))
                };
            }
        };
        let skipped = (self.skip as usize).min(bytes.len());
        let _ = bytes.split_to(skipped);
        self.skip -= skipped as u64;
        // More than the manifest declared is never written: the digest check decides.
        bytes.truncate((self.size - self.on_disk) as usize);
        self.file
            .write_all_at(&bytes, self.on_disk)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        self.on_disk += bytes.len() as u64;
        if !bytes.is_empty() {
            self.failures = 0;
        }
        self.chunk = bytes;
        Ok(true)
    }

    /// The whole blob is on disk: it moves to a name of its own (under the lock, so a fetch
    /// waiting for this partial starts over rather than sharing a file that is taken).
    fn finish(&mut self) -> io::Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        self.file.sync_data()?;
        let done = self.remote.downloads.join(format!(
            "{}.{}-{}.done",
            self.hex,
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::rename(&self.path, &done)?;
        self.done
            .lock()
            .expect("no panics holding it")
            .insert(self.hex.clone(), done);
        Ok(())
    }
}

impl Read for BlobDownload {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.chunk.is_empty() {
                let n = buf.len().min(self.chunk.len());
                buf[..n].copy_from_slice(&self.chunk.split_to(n));
                self.pos += n as u64;
                return Ok(n);
            }
            // What an earlier attempt downloaded is replayed from disk first.
            if self.pos < self.on_disk {
                let want = buf.len().min((self.on_disk - self.pos) as usize);
                let n = self.file.read_at(&mut buf[..want], self.pos)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} shrank while being read", self.path.display()),
                    ));
                }
                self.pos += n as u64;
                return Ok(n);
            }
            if self.pos >= self.size {
                if !self.finished {
                    self.finished = true;
                    self.stream = None;
                    self.finish()?;
                }
                return Ok(0);
            }
            match self.receive() {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    self.failures += 1;
                    if self.failures >= ATTEMPTS {
                        return Err(io::Error::other(format!(
                            "download of {} from {} failed: {e} ({} of {} bytes arrived and are kept in {}: the next fetch resumes there)",
                            self.desc.digest,
                            self.remote.reference.registry(),
                            self.on_disk,
                            self.size,
                            self.path.display()
                        )));
                    }
                    // Back-off before reconnecting (this is a retry, not synchronisation).
                    std::thread::sleep(Duration::from_millis(250 << self.failures));
                }
            }
        }
    }
}
