//! Whiteouts (`.wh.NAME`) and opaque markers (`.wh..wh..opq`), in both modes.
//!
//! Per the OCI image spec, a whiteout only hides what lower layers contain: an entry the
//! same layer created stays (in overlay mode nothing is then created; in flatten mode only
//! older content below it is removed).

use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{self, FileType};
use rustix::io::Errno;

use super::apply::Unpacker;
use super::error::{io_at, UnpackError};
use super::fsops::{self, Removed};
use super::manifest::{EntryKind, ManifestEntry};
use super::path::{self, lossy};
use super::WhiteoutMode;

/// The xattr overlayfs reads to make a directory opaque.
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

impl Unpacker<'_> {
    /// `PARENT/.wh.HIDDEN`.
    pub(super) fn whiteout(
        &mut self,
        parent: &[u8],
        hidden: &[u8],
        raw: &[u8],
    ) -> Result<(), UnpackError> {
        let hidden_path = path::join(parent, hidden);
        match self.opts.whiteouts {
            WhiteoutMode::Overlay => {
                let dir = self.open_parent(parent, raw)?;
                let result = self.overlay_whiteout(dir.as_fd(), hidden, &hidden_path);
                self.parents.put(parent, dir);
                result
            }
            WhiteoutMode::Apply => {
                // Nothing to hide if the parent does not exist; do not create it.
                let Some(dir) = self.find_parent(parent, raw, false)? else {
                    return Ok(());
                };
                let result = self.remove_older(dir.as_fd(), hidden, &hidden_path);
                self.parents.put(parent, dir);
                result
            }
        }
    }

    /// `PARENT/.wh..wh..opq`.
    pub(super) fn opaque(&mut self, parent: &[u8], raw: &[u8]) -> Result<(), UnpackError> {
        let dir = self.open_parent(parent, raw)?;
        let result = match self.opts.whiteouts {
            WhiteoutMode::Overlay => self.mark_opaque(dir.as_fd(), parent),
            WhiteoutMode::Apply => self.remove_older_children(dir.as_fd(), parent),
        };
        self.parents.put(parent, dir);
        result
    }

    /// Creates the 0:0 character device overlayfs reads as a whiteout.
    fn overlay_whiteout(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
    ) -> Result<(), UnpackError> {
        match fsops::lstat(dir, name) {
            Ok(st) => {
                if EntryKind::of_stat(&st) != Some(EntryKind::Whiteout) {
                    self.report.skipped.push(format!(
                        "{}: whiteout ignored, this layer itself has the path",
                        lossy(path)
                    ));
                }
                return Ok(());
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(io_at(path)(e)),
        }
        fsops::mknod(dir, name, FileType::CharacterDevice, 0, fs::makedev(0, 0))
            .map_err(io_at(path))?;
        if self.euid == 0 {
            // A setgid parent would otherwise pass its group on.
            fsops::chown_nofollow(dir, name, 0, 0).map_err(io_at(path))?;
        }
        if self.book.recording() {
            let st = fsops::lstat(dir, name).map_err(io_at(path))?;
            self.book
                .record(path, ManifestEntry::from_stat(EntryKind::Whiteout, &st));
        }
        Ok(())
    }

    /// Sets `trusted.overlay.opaque=y` on the directory `dir` (at `path`).
    fn mark_opaque(&mut self, dir: BorrowedFd<'_>, path: &[u8]) -> Result<(), UnpackError> {
        fsops::set_xattr_fd(dir, OPAQUE_XATTR, b"y").map_err(|e| UnpackError::Xattr {
            path: path::display(path),
            name: lossy(OPAQUE_XATTR),
            error: e.into(),
        })?;
        if self.book.recording() {
            if self.book.entry(path).is_none() {
                let st = fs::fstat(dir).map_err(io_at(path))?;
                self.book
                    .record(path, ManifestEntry::from_stat(EntryKind::Dir, &st));
            }
            self.book.mark_opaque(path);
        }
        Ok(())
    }

    /// Flatten mode: removes `name` (at `path`) unless this layer created it; if it did
    /// and it is a directory, removes what older layers left inside it.
    fn remove_older(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
    ) -> Result<(), UnpackError> {
        if !self.book.is_added(path) {
            let removed = fsops::remove_tree(dir, name).map_err(io_at(path))?;
            if removed != Removed::Nothing {
                self.book.forget(path, removed == Removed::Dir);
            }
            return Ok(());
        }
        let st = fsops::lstat(dir, name).map_err(io_at(path))?;
        if fsops::is_dir(&st) {
            let sub = fsops::open_child_dir(dir, name).map_err(io_at(path))?;
            self.remove_older_children(sub.as_fd(), path)?;
        }
        Ok(())
    }

    /// Flatten mode: applies `remove_older` to every child of directory `dir` (at `path`).
    fn remove_older_children(
        &mut self,
        dir: BorrowedFd<'_>,
        path: &[u8],
    ) -> Result<(), UnpackError> {
        for child in fsops::list_dir(dir).map_err(io_at(path))? {
            let child_path = path::join(path, &child);
            self.remove_older(dir, &child, &child_path)?;
        }
        Ok(())
    }
}
