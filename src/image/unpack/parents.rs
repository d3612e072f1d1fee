//! Opening the parent directory of an entry: cached, beneath the target, never through a
//! symlink; missing parents are created (mode 0755) and recorded.
//!
//! The fd of the last parent is cached (one slot). Removals only ever happen below the
//! current entry's parent, so a cached parent cannot have been removed or replaced when it
//! is reused.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self, FileType, Mode};
use rustix::io::Errno;

use super::apply::Unpacker;
use super::book::Book;
use super::error::{io_at, UnpackError};
use super::fsops;
use super::manifest::{EntryKind, ManifestEntry};
use super::path::{self, lossy};

/// Where walking a path beneath the target stopped.
pub(super) enum Stop<'p> {
    /// A component does not exist.
    Missing,
    /// This prefix is a symlink.
    Symlink(&'p [u8]),
    /// This prefix is neither a directory nor a symlink.
    NotDir(&'p [u8]),
}

/// The fd of the most recently used parent directory, by normalised path.
#[derive(Default)]
pub(super) struct ParentCache {
    path: Vec<u8>,
    fd: Option<OwnedFd>,
}

impl ParentCache {
    /// Takes the cached fd if it is the one of `parent` (give it back with `put`).
    pub(super) fn take(&mut self, parent: &[u8]) -> Option<OwnedFd> {
        if self.path == parent {
            self.fd.take()
        } else {
            None
        }
    }

    /// Closes the cached fd.
    pub(super) fn clear(&mut self) {
        self.fd = None;
    }

    /// Caches `fd` as the fd of `parent`.
    pub(super) fn put(&mut self, parent: &[u8], fd: OwnedFd) {
        self.path.clear();
        self.path.extend_from_slice(parent);
        self.fd = Some(fd);
    }
}

impl Unpacker<'_> {
    /// The fd of directory `parent`, creating missing directories (mode 0755).
    pub(super) fn open_parent(
        &mut self,
        parent: &[u8],
        raw: &[u8],
    ) -> Result<OwnedFd, UnpackError> {
        match self.find_parent(parent, raw, true)? {
            Some(fd) => Ok(fd),
            None => Err(UnpackError::Io {
                path: path::display(parent),
                error: Errno::NOENT.into(),
            }),
        }
    }

    /// The fd of directory `parent`; with `create`, missing directories are created,
    /// otherwise `None` is returned for a missing one.
    pub(super) fn find_parent(
        &mut self,
        parent: &[u8],
        raw: &[u8],
        create: bool,
    ) -> Result<Option<OwnedFd>, UnpackError> {
        if let Some(fd) = self.parents.take(parent) {
            return Ok(Some(fd));
        }
        match fsops::open_dir_beneath(self.root.as_fd(), parent) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => {
                self.walk_parents(parent, raw, create)
            }
            Err(Errno::XDEV) => Err(UnpackError::PathEscapes { entry: lossy(raw) }),
            Err(e) => Err(io_at(parent)(e)),
        }
    }

    /// Opens `parent` one component at a time, to create what is missing (with `create`)
    /// and to name the symlink or non-directory in the way.
    fn walk_parents(
        &mut self,
        parent: &[u8],
        raw: &[u8],
        create: bool,
    ) -> Result<Option<OwnedFd>, UnpackError> {
        match self.walk(parent, create)? {
            Ok(fd) => Ok(Some(fd)),
            Err(Stop::Symlink(at)) => Err(UnpackError::ThroughSymlink {
                entry: lossy(raw),
                symlink: lossy(at),
            }),
            Err(Stop::NotDir(at)) if create => Err(UnpackError::NotADirectory {
                entry: lossy(raw),
                component: lossy(at),
            }),
            Err(_) => Ok(None),
        }
    }

    /// Opens directory `path` beneath the target component by component, creating missing
    /// ones if `create`; otherwise says where it stopped.
    pub(super) fn walk<'p>(
        &mut self,
        path: &'p [u8],
        create: bool,
    ) -> Result<Result<OwnedFd, Stop<'p>>, UnpackError> {
        let mut cur: Option<OwnedFd> = None;
        let mut end = 0;
        // (The empty path, i.e. the target itself, has no components.)
        for component in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            end += component.len();
            let prefix = &path[..end];
            end += 1;
            let dir = cur.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
            let next = match fsops::open_child_dir(dir, component) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    make_implicit_dir(dir, component, prefix, &mut self.book)?
                }
                // With O_NOFOLLOW | O_DIRECTORY a symlink gives ENOTDIR (or ELOOP): look.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {
                    return Ok(Err(match fsops::lstat(dir, component) {
                        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                            Stop::Symlink(prefix)
                        }
                        Ok(_) => Stop::NotDir(prefix),
                        Err(Errno::NOENT) => Stop::Missing,
                        Err(e) => return Err(io_at(prefix)(e)),
                    }));
                }
                Err(e) => return Err(io_at(prefix)(e)),
            };
            cur = Some(next);
        }
        match cur {
            Some(fd) => Ok(Ok(fd)),
            None => fsops::open_dir_beneath(self.root.as_fd(), b"")
                .map(Ok)
                .map_err(io_at(b"")),
        }
    }
}

/// Creates a directory the archive did not list (a parent of an entry), mode 0755.
fn make_implicit_dir(
    dir: BorrowedFd<'_>,
    name: &[u8],
    path: &[u8],
    book: &mut Book,
) -> Result<OwnedFd, UnpackError> {
    match fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io_at(path)(e)),
    }
    let fd = fsops::open_child_dir(dir, name).map_err(io_at(path))?;
    fs::fchmod(&fd, Mode::from_raw_mode(0o755)).map_err(io_at(path))?;
    book.mark_added(path);
    if book.recording() {
        let st = fs::fstat(&fd).map_err(io_at(path))?;
        book.record(path, ManifestEntry::from_stat(EntryKind::Dir, &st));
    }
    Ok(fd)
}
