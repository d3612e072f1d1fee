//! Creating each kind of entry (directory, file, symlink, hard link, device, fifo) in its
//! parent directory fd, replacing whatever an earlier entry left at the same name.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use ring::digest;
use rustix::fs::{self, AtFlags, FileType, Mode};
use rustix::io::Errno;

use super::apply::Unpacker;
use super::book::DirMeta;
use super::error::{io_at, std_io_at, UnpackError};
use super::fsops::{self, Removed};
use super::manifest::{DeviceNumbers, EntryKind, ManifestEntry, RawName};
use super::meta::Restore;
use super::parents::Stop;
use super::path::{self, lossy, NameProblem};
use super::stream::StreamState;
use super::WhiteoutMode;

impl Unpacker<'_> {
    /// Removes whatever is at `name` (recursively) so that an entry can take its place.
    pub(super) fn remove_existing(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
    ) -> Result<(), UnpackError> {
        let removed = fsops::remove_tree(dir, name).map_err(io_at(path))?;
        if removed != Removed::Nothing {
            self.book.forget(path, removed == Removed::Dir);
        }
        Ok(())
    }

    /// Creates with `create`; if something is in the way, removes it (a directory only if
    /// `keep_dir` is false) and tries once more. Returns false if a directory was kept.
    pub(super) fn create_replacing(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        keep_dir: bool,
        create: impl Fn() -> Result<(), Errno>,
    ) -> Result<bool, UnpackError> {
        match create() {
            Ok(()) => return Ok(true),
            Err(Errno::EXIST) => {}
            Err(e) => return Err(io_at(path)(e)),
        }
        if keep_dir && fsops::lstat(dir, name).is_ok_and(|st| fsops::is_dir(&st)) {
            return Ok(false);
        }
        self.remove_existing(dir, name, path)?;
        create().map_err(io_at(path))?;
        Ok(true)
    }

    /// Metadata application for the entry at `path`.
    pub(super) fn restore<'a>(&'a mut self, path: &'a [u8]) -> Restore<'a> {
        Restore {
            preserve_owner: self.opts.preserve_owner,
            path,
            skipped: &mut self.report.skipped,
        }
    }

    /// The owner a new entry ended up with: the archive's when preserving owners,
    /// otherwise whatever the kernel gave it.
    pub(super) fn owner_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
    ) -> Result<(u32, u32), UnpackError> {
        if self.opts.preserve_owner {
            return Ok((self.meta.uid, self.meta.gid));
        }
        Ok(owner_of(fsops::lstat(dir, name).map_err(io_at(path))?))
    }

    /// A directory; one that already exists keeps its contents and takes the new metadata.
    pub(super) fn dir(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
    ) -> Result<(), UnpackError> {
        // 0700 until the final pass, so that children can be written whatever the mode.
        self.create_replacing(dir, name, path, true, || {
            fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
        })?;
        let meta = std::mem::take(&mut self.meta);
        let result = self.restore(path).dir_now(dir, name, &meta);
        self.meta = meta;
        result?;
        let mode = self.meta.mode_for(self.opts.preserve_owner);
        self.book.dirs.insert(
            path.to_vec(),
            DirMeta {
                mode,
                mtime: self.meta.mtime,
            },
        );
        if self.book.recording() {
            let (uid, gid) = self.owner_at(dir, name, path)?;
            let opaque = self
                .book
                .entry(path)
                .is_some_and(|e| e.kind == EntryKind::Dir && e.opaque);
            self.book.record(
                path,
                ManifestEntry {
                    opaque,
                    ..ManifestEntry::new(EntryKind::Dir, mode, uid, gid)
                },
            );
        }
        Ok(())
    }

    /// A regular file: created fresh (`O_EXCL | O_NOFOLLOW`, replacing whatever was there),
    /// data written and hashed in one pass.
    pub(super) fn file<R: Read>(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        entry: &mut tar::Entry<'_, R>,
        stream: &StreamState,
    ) -> Result<(), UnpackError> {
        let mode = self.meta.mode_for(self.opts.preserve_owner);
        let fd = match fsops::create_file(dir, name, mode) {
            Ok(fd) => fd,
            Err(Errno::EXIST) => {
                self.remove_existing(dir, name, path)?;
                fsops::create_file(dir, name, mode).map_err(io_at(path))?
            }
            Err(e) => return Err(io_at(path)(e)),
        };
        let mut file = File::from(fd);
        let size = entry.size();
        stream.begin_data();
        let sha256 = copy_data(
            entry,
            &mut file,
            size,
            &mut self.buf,
            self.book.recording(),
            stream,
            path,
        )?;
        let meta = std::mem::take(&mut self.meta);
        let result = self.restore(path).file(file.as_fd(), &meta);
        self.meta = meta;
        result?;
        if self.book.recording() {
            let (uid, gid) = match self.opts.preserve_owner {
                true => (self.meta.uid, self.meta.gid),
                false => owner_of(fs::fstat(&file).map_err(io_at(path))?),
            };
            let entry = ManifestEntry {
                size,
                sha256,
                ..ManifestEntry::new(EntryKind::File, mode, uid, gid)
            };
            self.book.record(path, entry);
        }
        Ok(())
    }

    /// A symlink; its target is stored verbatim and never followed.
    pub(super) fn symlink(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        target: &[u8],
        raw: &[u8],
    ) -> Result<(), UnpackError> {
        if target.is_empty() || target.contains(&0) {
            return Err(UnpackError::malformed(
                &lossy(raw),
                "symlink with an empty or NUL-containing target",
            ));
        }
        let limit = self.opts.limits.max_path_len;
        if target.len() > limit {
            return Err(UnpackError::PathTooLong {
                entry: lossy(raw),
                limit,
            });
        }
        self.create_replacing(dir, name, path, false, || fs::symlinkat(target, dir, name))?;
        let meta = std::mem::take(&mut self.meta);
        let result = self.restore(path).node(dir, name, &meta, true);
        self.meta = meta;
        result?;
        if self.book.recording() {
            let (uid, gid) = self.owner_at(dir, name, path)?;
            let entry = ManifestEntry {
                link_target: Some(RawName::from(target)),
                ..ManifestEntry::new(EntryKind::Symlink, 0o777, uid, gid)
            };
            self.book.record(path, entry);
        }
        Ok(())
    }

    /// A hard link to an existing non-directory inside the target, resolved like a parent.
    pub(super) fn hardlink(
        &mut self,
        dir: BorrowedFd<'_>,
        parent: &[u8],
        name: &[u8],
        path: &[u8],
        link: &[u8],
        raw: &[u8],
    ) -> Result<(), UnpackError> {
        let refuse = |reason: &str| UnpackError::HardlinkEscapes {
            entry: lossy(raw),
            target: lossy(link),
            reason: reason.to_string(),
        };
        let limit = self.opts.limits.max_path_len;
        let mut target = Vec::new();
        match path::normalise(link, limit, &mut target) {
            Ok(()) if target.is_empty() => return Err(refuse("it names the target directory")),
            Ok(()) => {}
            Err(NameProblem::TooLong) => {
                return Err(UnpackError::PathTooLong {
                    entry: lossy(raw),
                    limit,
                })
            }
            Err(NameProblem::Escapes) => return Err(refuse("it has a `..` component")),
            Err(NameProblem::Malformed(m)) => return Err(refuse(m)),
        }
        let tname = path::split_parent(&target).1;
        let missing = || UnpackError::HardlinkTargetMissing {
            entry: lossy(raw),
            target: lossy(link),
            searched_lowers: !self.opts.lowers.is_empty(),
        };
        // Not in this layer: copy it up from a lower one (overlay mode), then look again.
        let mut copied_up = false;
        let (opened, st) = loop {
            match self.find_link_target(dir, parent, &target, &refuse)? {
                Some(found) => break found,
                None if !copied_up && self.copy_up(&target)? => copied_up = true,
                None => return Err(missing()),
            }
        };
        let tdir = opened.as_ref().map_or(dir, |fd| fd.as_fd());
        let link_at = || fs::linkat(tdir, tname, dir, name, AtFlags::empty());
        match link_at() {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let same = fsops::lstat(dir, name)
                    .is_ok_and(|cur| (cur.st_dev, cur.st_ino) == (st.st_dev, st.st_ino));
                if !same {
                    self.remove_existing(dir, name, path)?;
                    link_at().map_err(io_at(path))?;
                }
            }
            Err(e) => return Err(io_at(path)(e)),
        }
        if self.book.recording() {
            self.book
                .record_hardlink(path, &target, || linked_entry_from_stat(tdir, tname, &st));
        }
        Ok(())
    }

    /// Finds the non-directory a hard link names: the fd of its directory (`None`: `dir`,
    /// the link's own) and its stat; `None` if it does not exist (or is whited out).
    fn find_link_target(
        &mut self,
        dir: BorrowedFd<'_>,
        parent: &[u8],
        target: &[u8],
        refuse: &dyn Fn(&str) -> UnpackError,
    ) -> Result<Option<(Option<OwnedFd>, fs::Stat)>, UnpackError> {
        let (tparent, tname) = path::split_parent(target);
        let opened = if tparent == parent {
            None
        } else {
            match self.open_link_parent(tparent, refuse)? {
                Some(fd) => Some(fd),
                None => return Ok(None),
            }
        };
        let tdir = opened.as_ref().map_or(dir, |fd| fd.as_fd());
        match fsops::lstat(tdir, tname) {
            Ok(st) if fsops::is_dir(&st) => Err(refuse("it is a directory")),
            Ok(st)
                if self.opts.whiteouts == WhiteoutMode::Overlay
                    && EntryKind::of_stat(&st) == Some(EntryKind::Whiteout) =>
            {
                Ok(None)
            }
            Ok(st) => Ok(Some((opened, st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_at(target)(e)),
        }
    }

    /// Opens the directory `tparent` of a hard link's target beneath the target, without
    /// creating anything; `None` if it does not exist.
    fn open_link_parent(
        &mut self,
        tparent: &[u8],
        refuse: &dyn Fn(&str) -> UnpackError,
    ) -> Result<Option<OwnedFd>, UnpackError> {
        match fsops::open_dir_beneath(self.root.as_fd(), tparent) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => match self.walk(tparent, false)? {
                Ok(fd) => Ok(Some(fd)),
                Err(Stop::Symlink(at)) => Err(refuse(&format!(
                    "its path goes through the symlink `{}`",
                    lossy(at)
                ))),
                Err(Stop::NotDir(at)) => {
                    Err(refuse(&format!("`{}` is not a directory", lossy(at))))
                }
                Err(Stop::Missing) => Ok(None),
            },
            Err(Errno::XDEV) => Err(refuse("it is outside the target directory")),
            Err(e) => Err(io_at(tparent)(e)),
        }
    }

    /// A device node or fifo; devices are skipped (and reported) when not root.
    pub(super) fn node(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        kind: FileType,
        dev: DeviceNumbers,
    ) -> Result<bool, UnpackError> {
        let (what, manifest_kind) = match kind {
            // What overlayfs (and `EntryKind::of_stat`) reads as a whiteout.
            FileType::CharacterDevice if (dev.major, dev.minor) == (0, 0) => {
                ("character device", EntryKind::Whiteout)
            }
            FileType::CharacterDevice => ("character device", EntryKind::Chardev),
            FileType::BlockDevice => ("block device", EntryKind::Blockdev),
            _ => ("fifo", EntryKind::Fifo),
        };
        if !self.opts.preserve_owner && kind != FileType::Fifo {
            self.report.skipped.push(format!(
                "{}: {what} {}:{} not created (not running as root)",
                lossy(path),
                dev.major,
                dev.minor
            ));
            return Ok(false);
        }
        let mode = self.meta.mode_for(self.opts.preserve_owner);
        let rdev = fs::makedev(dev.major, dev.minor);
        self.create_replacing(dir, name, path, false, || {
            fsops::mknod(dir, name, kind, mode, rdev)
        })?;
        let meta = std::mem::take(&mut self.meta);
        let result = self.restore(path).node(dir, name, &meta, false);
        self.meta = meta;
        result?;
        if self.book.recording() {
            let (uid, gid) = self.owner_at(dir, name, path)?;
            let device =
                matches!(manifest_kind, EntryKind::Chardev | EntryKind::Blockdev).then_some(dev);
            self.book.record(
                path,
                ManifestEntry {
                    device,
                    ..ManifestEntry::new(manifest_kind, mode, uid, gid)
                },
            );
        }
        Ok(true)
    }
}

/// Copies `size` bytes of entry data into `file` through `buf`, hashing them if asked;
/// returns the hex SHA-256.
fn copy_data(
    src: &mut impl Read,
    file: &mut File,
    size: u64,
    buf: &mut [u8],
    hash: bool,
    stream: &StreamState,
    path: &[u8],
) -> Result<Option<String>, UnpackError> {
    let mut ctx = hash.then(|| digest::Context::new(&digest::SHA256));
    let mut left = size;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let mut filled = 0;
        while filled < want {
            let n = src
                .read(&mut buf[filled..want])
                .map_err(|e| stream.classify(e))?;
            if n == 0 {
                return Err(UnpackError::Truncated);
            }
            filled += n;
        }
        file.write_all(&buf[..want]).map_err(std_io_at(path))?;
        if let Some(ctx) = &mut ctx {
            ctx.update(&buf[..want]);
        }
        left -= want as u64;
    }
    Ok(ctx.map(|c| hex::encode(c.finish())))
}

/// The manifest entry of a hard link whose target was not recorded (older layer).
fn linked_entry_from_stat(dir: BorrowedFd<'_>, name: &[u8], st: &fs::Stat) -> ManifestEntry {
    let kind = EntryKind::of_stat(st).unwrap_or(EntryKind::File);
    let mut entry = ManifestEntry::from_stat(kind, st);
    if kind == EntryKind::Symlink {
        entry.link_target = fs::readlinkat(dir, name, Vec::new())
            .ok()
            .map(|t| RawName(t.into_bytes()));
    }
    entry
}

/// The owner and group of `st`.
pub(super) fn owner_of(st: fs::Stat) -> (u32, u32) {
    (st.st_uid, st.st_gid)
}
