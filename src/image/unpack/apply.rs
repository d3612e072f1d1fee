//! The unpacker: counts, bounds and validates each entry, then dispatches it to the
//! handler of its kind (`create.rs`, `whiteout.rs`) with the fd of its parent directory
//! (`parents.rs`); finally applies deferred directory metadata.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{self, FileType, Mode};

use super::book::{Book, DirMeta};
use super::create::owner_of;
use super::error::{io_at, UnpackError};
use super::fsops;
use super::manifest::{DeviceNumbers, EntryKind, ManifestEntry};
use super::meta::{Meta, Restore};
use super::parents::ParentCache;
use super::path::{self, lossy, NameProblem, Special};
use super::stream::StreamState;
use super::{UnpackOptions, UnpackReport, WhiteoutMode};

/// File data is copied through a buffer of this size.
const BUF_SIZE: usize = 1 << 20;

/// What an entry creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    Hardlink,
    Device(FileType),
    Fifo,
    /// PAX global headers: nothing to create.
    Ignore,
}

/// State of one `unpack_layer` call.
/// Its handlers are spread over `apply.rs` (dispatch), `parents.rs`, `create.rs` and
/// `whiteout.rs`, hence the `pub(super)` fields.
pub(super) struct Unpacker<'o> {
    pub(super) opts: &'o UnpackOptions,
    pub(super) root: OwnedFd,
    pub(super) parents: ParentCache,
    pub(super) book: Book,
    pub(super) meta: Meta,
    pub(super) buf: Vec<u8>,
    pub(super) raw: Vec<u8>,
    pub(super) path: Vec<u8>,
    pub(super) report: UnpackReport,
    pub(super) euid: u32,
}

impl<'o> Unpacker<'o> {
    /// An unpacker writing beneath `root` (an fd of the target directory).
    pub(super) fn new(root: OwnedFd, opts: &'o UnpackOptions) -> Self {
        Unpacker {
            opts,
            root,
            parents: ParentCache::default(),
            book: Book::new(opts.whiteouts == WhiteoutMode::Apply, opts.record_manifest),
            meta: Meta::default(),
            buf: vec![0; BUF_SIZE],
            raw: Vec::new(),
            path: Vec::new(),
            report: UnpackReport::default(),
            euid: rustix::process::geteuid().as_raw(),
        }
    }

    /// Unpacks one entry (its data is read from `entry`).
    pub(super) fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        stream: &StreamState,
    ) -> Result<(), UnpackError> {
        let mut raw = std::mem::take(&mut self.raw);
        let mut path = std::mem::take(&mut self.path);
        raw.clear();
        raw.extend_from_slice(&entry.path_bytes());
        let result = self.named_entry(entry, stream, &raw, &mut path);
        self.raw = raw;
        self.path = path;
        result
    }

    /// Applies deferred directory metadata and returns the report.
    pub(super) fn finish(mut self) -> Result<UnpackReport, UnpackError> {
        self.parents.clear();
        for (path, m) in self.book.dirs.iter().rev() {
            let fd = fsops::open_dir_beneath(self.root.as_fd(), path).map_err(io_at(path))?;
            fs::fchmod(&fd, Mode::from_raw_mode(m.mode)).map_err(io_at(path))?;
            let times = fs::Timestamps {
                last_access: m.mtime,
                last_modification: m.mtime,
            };
            fs::futimens(&fd, &times).map_err(io_at(path))?;
        }
        self.report.manifest = self.book.into_manifest();
        Ok(self.report)
    }

    fn named_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        stream: &StreamState,
        raw: &[u8],
        path: &mut Vec<u8>,
    ) -> Result<(), UnpackError> {
        self.count_entry()?;
        let kind = entry_kind(entry.header().entry_type(), raw)?;
        self.account(entry.size(), raw)?;
        if kind == Kind::Ignore {
            return self.skip_data(entry, stream);
        }
        let limit = self.opts.limits.max_path_len;
        path::normalise(raw, limit, path).map_err(|p| name_error(p, raw, limit))?;
        if path.is_empty() {
            return self.root_entry(entry, stream, kind, raw);
        }
        let (parent, name) = path::split_parent(path);
        let special = if in_aufs_meta_dir(parent) {
            Special::AufsMeta
        } else {
            path::classify(name).map_err(|p| name_error(p, raw, limit))?
        };
        match special {
            Special::Plain => self.plain(entry, stream, kind, raw, path),
            Special::AufsMeta => {
                self.skip_data(entry, stream)?;
                self.report
                    .skipped
                    .push(format!("{}: AUFS metadata, not extracted", lossy(path)));
                Ok(())
            }
            Special::Opaque => {
                self.skip_data(entry, stream)?;
                self.opaque(parent, raw)
            }
            Special::Whiteout(hidden) => {
                self.skip_data(entry, stream)?;
                self.whiteout(parent, hidden, raw)
            }
        }
    }

    fn count_entry(&mut self) -> Result<(), UnpackError> {
        self.report.entries += 1;
        if self.report.entries > self.opts.limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: self.opts.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Adds the entry's declared size to the total, refusing it before any data is written.
    fn account(&mut self, size: u64, raw: &[u8]) -> Result<(), UnpackError> {
        let limit = self.opts.limits.max_total_bytes;
        match self.report.bytes.checked_add(size) {
            Some(total) if total <= limit => {
                self.report.bytes = total;
                Ok(())
            }
            _ => Err(UnpackError::TooLarge {
                entry: lossy(raw),
                limit,
            }),
        }
    }

    /// Reads and discards the entry's data (e.g. of a whiteout or a directory).
    fn skip_data<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        stream: &StreamState,
    ) -> Result<(), UnpackError> {
        let mut left = entry.size();
        stream.begin_data();
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = entry
                .read(&mut self.buf[..want])
                .map_err(|e| stream.classify(e))?;
            if n == 0 {
                return Err(UnpackError::Truncated);
            }
            left -= n as u64;
        }
        Ok(())
    }

    /// An ordinary entry below the target.
    fn plain<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        stream: &StreamState,
        kind: Kind,
        raw: &[u8],
        path: &[u8],
    ) -> Result<(), UnpackError> {
        self.meta.read(entry, raw, &self.opts.limits)?;
        let link = match kind {
            Kind::Symlink | Kind::Hardlink => entry
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let device = match kind {
            Kind::Device(_) => device_numbers(entry.header(), raw)?,
            _ => DeviceNumbers { major: 0, minor: 0 },
        };
        if kind != Kind::File {
            self.skip_data(entry, stream)?;
        }
        let (parent, name) = path::split_parent(path);
        let dir = self.open_parent(parent, raw)?;
        let d = dir.as_fd();
        let created = match kind {
            Kind::Dir => self.dir(d, name, path).map(|()| true),
            Kind::File => self.file(d, name, path, entry, stream).map(|()| true),
            Kind::Symlink => self.symlink(d, name, path, &link, raw).map(|()| true),
            Kind::Hardlink => self
                .hardlink(d, parent, name, path, &link, raw)
                .map(|()| true),
            Kind::Device(ft) => self.node(d, name, path, ft, device),
            Kind::Fifo => self.node(d, name, path, FileType::Fifo, device),
            Kind::Ignore => Ok(false),
        };
        self.parents.put(parent, dir);
        if created? {
            self.book.mark_added(path);
        }
        Ok(())
    }

    /// An entry naming the target directory itself (`./`): only its metadata applies.
    fn root_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        stream: &StreamState,
        kind: Kind,
        raw: &[u8],
    ) -> Result<(), UnpackError> {
        if kind != Kind::Dir {
            return Err(UnpackError::malformed(
                &lossy(raw),
                "names the target directory but is not a directory",
            ));
        }
        self.meta.read(entry, raw, &self.opts.limits)?;
        self.skip_data(entry, stream)?;
        let preserve = self.opts.preserve_owner;
        Restore {
            preserve_owner: preserve,
            path: b"",
            skipped: &mut self.report.skipped,
        }
        .root_now(self.root.as_fd(), &self.meta)?;
        let mode = self.meta.mode_for(preserve);
        self.book.dirs.insert(
            Vec::new(),
            DirMeta {
                mode,
                mtime: self.meta.mtime,
            },
        );
        if self.book.recording() {
            let (uid, gid) = match preserve {
                true => (self.meta.uid, self.meta.gid),
                false => owner_of(fs::fstat(&self.root).map_err(io_at(b""))?),
            };
            let old = self.book.entry(b"").is_some_and(|e| e.opaque);
            let entry = ManifestEntry {
                opaque: old,
                ..ManifestEntry::new(EntryKind::Dir, mode, uid, gid)
            };
            self.book.record(b"", entry);
        }
        Ok(())
    }
}

/// Maps the tar entry type (and the old-tar "trailing slash means directory" rule).
fn entry_kind(ty: tar::EntryType, raw: &[u8]) -> Result<Kind, UnpackError> {
    use tar::EntryType as T;
    Ok(match ty {
        T::Regular if raw.ends_with(b"/") => Kind::Dir,
        T::Regular | T::Continuous | T::GNUSparse => Kind::File,
        T::Directory => Kind::Dir,
        T::Symlink => Kind::Symlink,
        T::Link => Kind::Hardlink,
        T::Char => Kind::Device(FileType::CharacterDevice),
        T::Block => Kind::Device(FileType::BlockDevice),
        T::Fifo => Kind::Fifo,
        T::XGlobalHeader => Kind::Ignore,
        other => {
            let detail = format!("unsupported entry type {:?}", other.as_byte() as char);
            return Err(UnpackError::malformed(&lossy(raw), detail));
        }
    })
}

fn device_numbers(header: &tar::Header, raw: &[u8]) -> Result<DeviceNumbers, UnpackError> {
    let bad = |e| UnpackError::malformed(&lossy(raw), format!("bad device number: {e}"));
    let major = header.device_major().map_err(bad)?.unwrap_or(0);
    let minor = header.device_minor().map_err(bad)?.unwrap_or(0);
    Ok(DeviceNumbers { major, minor })
}

/// Whether a parent path lies in AUFS metadata (`.wh..wh.plnk/...`).
fn in_aufs_meta_dir(parent: &[u8]) -> bool {
    parent
        .split(|&b| b == b'/')
        .any(|c| c.starts_with(b".wh..wh."))
}

/// Turns a refused name into the matching error.
pub(super) fn name_error(problem: NameProblem, raw: &[u8], limit: usize) -> UnpackError {
    match problem {
        NameProblem::Escapes => UnpackError::PathEscapes { entry: lossy(raw) },
        NameProblem::TooLong => UnpackError::PathTooLong {
            entry: lossy(&raw[..raw.len().min(256)]),
            limit,
        },
        NameProblem::Malformed(m) => UnpackError::malformed(&lossy(raw), m),
    }
}
