//! Hard links to files of lower layers (overlay mode).
//!
//! A layer is unpacked into a directory of its own, so a hard link whose target lives in an
//! earlier layer has nothing to link to. Real images have such links (a package upgrade
//! that rewrites one name of a hard-linked pair). As overlayfs itself does on write, the
//! target is copied up: the lower file (content, owner, mode, xattrs, times) is copied into
//! this layer at the same path, where it shadows the lower copy with identical contents,
//! and the link is made to the copy.
//!
//! The target is looked up the way overlayfs would: this layer first, then each lower,
//! nearest first. A whiteout, a non-directory in the way or an opaque directory above the
//! path hides everything below it. Every lookup is confined to the layer's directory:
//! components are opened one at a time with `O_NOFOLLOW`, and the file itself is opened
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` relative to the lower's root.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use ring::digest;
use rustix::fs::{self, FileType, Mode, Timestamps};
use rustix::io::Errno;

use super::apply::Unpacker;
use super::error::{io_at, std_io_at, UnpackError};
use super::fsops;
use super::manifest::{EntryKind, ManifestEntry};
use super::meta::OVERLAY_XATTR_PREFIX;
use super::path;
use super::WhiteoutMode;

/// The xattr overlayfs reads to make a directory opaque.
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

/// What one layer says about a path.
enum Lookup {
    /// The layer has a regular file there.
    File,
    /// The layer hides the path from the layers below (whiteout, non-directory parent,
    /// or something other than a regular file at the path).
    Hidden,
    /// The layer does not have the path; `opaque` if a directory above it in this layer is
    /// opaque (which hides the layers below too).
    Missing { opaque: bool },
}

/// Looks `target` (normalised, non-empty) up in the layer rooted at `root`.
fn lookup(root: BorrowedFd<'_>, target: &[u8]) -> Result<Lookup, UnpackError> {
    let (parent, name) = path::split_parent(target);
    let mut cur: Option<OwnedFd> = None;
    let mut opaque = is_opaque(root);
    let mut end = 0;
    for component in parent.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        end += component.len();
        let prefix = &parent[..end];
        end += 1;
        let dir = cur.as_ref().map_or(root, |fd| fd.as_fd());
        match fsops::lstat(dir, component) {
            Ok(st) if fsops::is_dir(&st) => {}
            Ok(_) => return Ok(Lookup::Hidden),
            Err(Errno::NOENT) => return Ok(Lookup::Missing { opaque }),
            Err(e) => return Err(io_at(prefix)(e)),
        }
        let next = fsops::open_child_dir(dir, component).map_err(io_at(prefix))?;
        opaque |= is_opaque(next.as_fd());
        cur = Some(next);
    }
    let dir = cur.as_ref().map_or(root, |fd| fd.as_fd());
    match fsops::lstat(dir, name) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => Ok(Lookup::File),
        Ok(_) => Ok(Lookup::Hidden),
        Err(Errno::NOENT) => Ok(Lookup::Missing { opaque }),
        Err(e) => Err(io_at(target)(e)),
    }
}

fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    let mut value = [0u8; 1];
    matches!(fs::fgetxattr(dir, OPAQUE_XATTR, &mut value[..]), Ok(1) if value[0] == b'y')
}

impl Unpacker<'_> {
    /// Copies the regular file `target` up from the nearest lower layer that has it, if
    /// this layer does not hide it. Returns false when there is nothing to copy up (not
    /// overlay mode, no lowers, or no lower layer has a visible regular file there).
    pub(super) fn copy_up(&mut self, target: &[u8]) -> Result<bool, UnpackError> {
        if self.opts.whiteouts != WhiteoutMode::Overlay || self.opts.lowers.is_empty() {
            return Ok(false);
        }
        match lookup(self.root.as_fd(), target)? {
            Lookup::Missing { opaque: false } => {}
            _ => return Ok(false),
        }
        let opts = self.opts;
        for lower in &opts.lowers {
            let root = fsops::open_target(lower).map_err(|e| UnpackError::Io {
                path: lower.display().to_string(),
                error: e.into(),
            })?;
            match lookup(root.as_fd(), target)? {
                Lookup::File => {
                    let src = fsops::open_file_beneath(root.as_fd(), target).map_err(|e| {
                        UnpackError::Io {
                            path: format!("{}/{}", lower.display(), path::display(target)),
                            error: e.into(),
                        }
                    })?;
                    self.copy_file_in(src, target)?;
                    return Ok(true);
                }
                Lookup::Hidden | Lookup::Missing { opaque: true } => return Ok(false),
                Lookup::Missing { opaque: false } => {}
            }
        }
        Ok(false)
    }

    /// Creates `target` in this layer as a copy of the lower file `src`.
    fn copy_file_in(&mut self, src: OwnedFd, target: &[u8]) -> Result<(), UnpackError> {
        let st = fs::fstat(&src).map_err(io_at(target))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            // Swapped since the lookup: refuse rather than copy something else.
            return Err(io_at(target)(Errno::INVAL));
        }
        let (parent, name) = path::split_parent(target);
        let dir = self.open_parent(parent, target)?;
        let preserve = self.opts.preserve_owner;
        let mode = if preserve {
            st.st_mode & 0o7777
        } else {
            st.st_mode & 0o777
        };
        let fd = fsops::create_file(dir.as_fd(), name, 0o600).map_err(io_at(target))?;
        let mut out = File::from(fd);
        let mut input = File::from(src);
        let mut ctx = self
            .book
            .recording()
            .then(|| digest::Context::new(&digest::SHA256));
        loop {
            let n = input.read(&mut self.buf).map_err(std_io_at(target))?;
            if n == 0 {
                break;
            }
            out.write_all(&self.buf[..n]).map_err(std_io_at(target))?;
            if let Some(ctx) = &mut ctx {
                ctx.update(&self.buf[..n]);
            }
        }
        if preserve {
            let (uid, gid) = (fs::Uid::from_raw(st.st_uid), fs::Gid::from_raw(st.st_gid));
            fs::fchown(&out, Some(uid), Some(gid)).map_err(io_at(target))?;
        }
        fs::fchmod(&out, Mode::from_raw_mode(mode)).map_err(io_at(target))?;
        copy_xattrs(input.as_fd(), out.as_fd(), target, preserve)?;
        let times = Timestamps {
            last_access: fs::Timespec {
                tv_sec: st.st_atime,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: fs::Timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec as _,
            },
        };
        fs::futimens(&out, &times).map_err(io_at(target))?;
        if let Some(ctx) = ctx {
            let now = fs::fstat(&out).map_err(io_at(target))?;
            let entry = ManifestEntry {
                sha256: Some(hex::encode(ctx.finish())),
                ..ManifestEntry::from_stat(EntryKind::File, &now)
            };
            self.book.record(target, entry);
        }
        self.parents.put(parent, dir);
        Ok(())
    }
}

/// Copies the extended attributes of `from` to `to`, except overlayfs' own.
fn copy_xattrs(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    target: &[u8],
    preserve_owner: bool,
) -> Result<(), UnpackError> {
    let xattr_err = |name: &[u8], e: Errno| UnpackError::Xattr {
        path: path::display(target),
        name: path::lossy(name),
        error: e.into(),
    };
    let len = match fs::flistxattr_query(from) {
        Ok(0) | Err(Errno::NOTSUP) => return Ok(()),
        Ok(n) => n,
        Err(e) => return Err(xattr_err(b"", e)),
    };
    let mut names = vec![0u8; len];
    let len = fs::flistxattr(from, &mut names[..]).map_err(|e| xattr_err(b"", e))?;
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        let size = fs::fgetxattr_query(from, name).map_err(|e| xattr_err(name, e))?;
        let mut value = vec![0u8; size];
        let size = fs::fgetxattr(from, name, &mut value[..]).map_err(|e| xattr_err(name, e))?;
        match fsops::set_xattr_fd(to, name, &value[..size]) {
            Ok(()) => {}
            Err(_) if !preserve_owner && name.starts_with(b"security.") => {}
            Err(e) => return Err(xattr_err(name, e)),
        }
    }
    Ok(())
}
