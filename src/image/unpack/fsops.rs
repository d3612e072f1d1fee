//! Filesystem primitives confined to the target directory.
//!
//! Every operation takes a directory fd plus either a normalised relative path (resolved
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`) or a
//! single component (used with `*at` calls that never follow a symlink in that component).
//! Nothing here can reach outside the directory the fds were opened under.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self, AtFlags, FileType, Mode, OFlags, ResolveFlags, XattrFlags};
use rustix::io::Errno;

/// How entry parents and link targets are resolved: beneath the target, no symlinks at all.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Flags for opening a directory to work in.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the target directory itself (the caller's path, resolved normally).
pub(super) fn open_target(target: &Path) -> Result<OwnedFd, Errno> {
    fs::open(
        target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens the directory at normalised `path` (empty = `root` itself) beneath `root`,
/// refusing any symlink on the way.
pub(super) fn open_dir_beneath(root: BorrowedFd<'_>, path: &[u8]) -> Result<OwnedFd, Errno> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    open_beneath(root, path, DIR_FLAGS)
}

/// `openat2(root, path, flags)` confined by [`RESOLVE`].
fn open_beneath(root: BorrowedFd<'_>, path: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
    let mut attempts = 0;
    loop {
        match fs::openat2(root, path, flags, Mode::empty(), RESOLVE) {
            // openat2 may ask for a retry when a concurrent rename races the lookup.
            Err(Errno::AGAIN) if attempts < 16 => attempts += 1,
            other => return other,
        }
    }
}

/// Opens the regular file at normalised `path` beneath `root` for reading, refusing any
/// symlink on the way (the last component included) and without blocking on a fifo.
pub(super) fn open_file_beneath(root: BorrowedFd<'_>, path: &[u8]) -> Result<OwnedFd, Errno> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    open_beneath(root, path, flags)
}

/// Opens the directory `name` (one component) in `dir`; `ELOOP` if it is a symlink,
/// `ENOTDIR` if it is something else.
pub(super) fn open_child_dir(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    fs::openat(dir, name, DIR_FLAGS, Mode::empty())
}

/// Creates the regular file `name` in `dir`, failing with `EEXIST` if anything (even a
/// dangling symlink) is there.
pub(super) fn create_file(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> Result<OwnedFd, Errno> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    fs::openat(dir, name, flags, Mode::from_raw_mode(mode & 0o777))
}

/// Opens the regular file `name` in `dir` for reading, without following a symlink and
/// without blocking on a fifo.
pub(super) fn open_file_read(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    fs::openat(dir, name, flags, Mode::empty())
}

/// `lstat` of `name` in `dir`.
pub(super) fn lstat(dir: BorrowedFd<'_>, name: &[u8]) -> Result<fs::Stat, Errno> {
    fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// Whether `st` describes a directory.
pub(super) fn is_dir(st: &fs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// Removes `name` from `dir`, recursively if it is a directory. Returns whether something
/// was removed and whether it was a directory; a missing `name` is not an error.
pub(super) fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Removed, Errno> {
    match fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => Ok(Removed::NonDir),
        Err(Errno::NOENT) => Ok(Removed::Nothing),
        Err(Errno::ISDIR) => {
            let sub = open_child_dir(dir, name)?;
            empty_dir(sub.as_fd())?;
            fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
            Ok(Removed::Dir)
        }
        Err(e) => Err(e),
    }
}

/// What `remove_tree` removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Removed {
    /// `name` did not exist.
    Nothing,
    /// A non-directory.
    NonDir,
    /// A directory and everything in it.
    Dir,
}

/// Removes everything inside the directory `dir`.
pub(super) fn empty_dir(dir: BorrowedFd<'_>) -> Result<(), Errno> {
    for name in list_dir(dir)? {
        remove_tree(dir, &name)?;
    }
    Ok(())
}

/// The names in directory `dir`, without `.` and `..`.
pub(super) fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let mut names = Vec::new();
    for item in fs::Dir::read_from(dir)? {
        let item = item?;
        let name = item.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Sets an extended attribute on an open file or directory.
pub(super) fn set_xattr_fd(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> Result<(), Errno> {
    fs::fsetxattr(fd, name, value, XattrFlags::empty())
}

/// Sets an extended attribute on `name` in `dir` without following it if it is a symlink
/// (symlinks, device nodes and fifos cannot be opened for `fsetxattr`).
///
/// `/proc/self/fd/N` resolves to exactly the directory `dir`; the last component is not
/// followed by `lsetxattr`, and `name` is a single component.
pub(super) fn set_xattr_node(
    dir: BorrowedFd<'_>,
    name: &[u8],
    attr: &[u8],
    value: &[u8],
) -> Result<(), Errno> {
    let path = proc_fd_path(dir, Some(name));
    fs::lsetxattr(path.as_slice(), attr, value, XattrFlags::empty())
}

/// Sets the mode of the device node or fifo `name` in `dir` without opening it for I/O
/// and without following symlinks: `chmod` through the `/proc/self/fd` link of an
/// `O_PATH | O_NOFOLLOW` fd reaches exactly that inode.
pub(super) fn chmod_node(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> Result<(), Errno> {
    let fd = fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let kind = FileType::from_raw_mode(fs::fstat(&fd)?.st_mode);
    if matches!(
        kind,
        FileType::Symlink | FileType::Directory | FileType::RegularFile
    ) {
        return Err(Errno::INVAL);
    }
    fs::chmod(
        proc_fd_path(fd.as_fd(), None).as_slice(),
        Mode::from_raw_mode(mode),
    )
}

/// `/proc/self/fd/N[/name]`.
fn proc_fd_path(fd: BorrowedFd<'_>, name: Option<&[u8]>) -> Vec<u8> {
    let mut path = Vec::with_capacity(32 + name.map_or(0, <[u8]>::len));
    // Writing to a Vec cannot fail.
    let _ = write!(path, "/proc/self/fd/{}", fd.as_raw_fd());
    if let Some(name) = name {
        path.push(b'/');
        path.extend_from_slice(name);
    }
    path
}

/// Changes owner of `name` in `dir` without following a symlink.
pub(super) fn chown_nofollow(
    dir: BorrowedFd<'_>,
    name: &[u8],
    uid: u32,
    gid: u32,
) -> Result<(), Errno> {
    // Callers refuse the id `u32::MAX` (it means "unchanged" to the kernel).
    let (uid, gid) = (fs::Uid::from_raw(uid), fs::Gid::from_raw(gid));
    fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
}

/// Sets access and modification times of `name` in `dir` without following a symlink.
pub(super) fn set_times_nofollow(
    dir: BorrowedFd<'_>,
    name: &[u8],
    times: &fs::Timestamps,
) -> Result<(), Errno> {
    fs::utimensat(dir, name, times, AtFlags::SYMLINK_NOFOLLOW)
}

/// Creates a device node or fifo.
pub(super) fn mknod(
    dir: BorrowedFd<'_>,
    name: &[u8],
    kind: FileType,
    mode: u32,
    dev: fs::Dev,
) -> Result<(), Errno> {
    fs::mknodat(dir, name, kind, Mode::from_raw_mode(mode & 0o777), dev)
}
