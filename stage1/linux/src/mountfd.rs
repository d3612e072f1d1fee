//! Mounts by descriptor (the new mount API: `open_tree(2)`, `mount_setattr(2)`,
//! `move_mount(2)`, with `openat2(2)` to reach mount points), for two jobs path-based
//! `mount(2)` cannot do safely. Hand-written: nix has none of these calls.
//!
//! - Host volumes: the app's mount must show the host's mounts as they are when the app
//!   starts (the pod's namespace misses those the host made since under a private mount),
//!   and a bidirectional one (`Propagation::Shared`) must be a peer of the host's, which no
//!   mount made inside the pod's namespace (a slave of the host's) can be. The stage1 keeps
//!   the host's mount namespace open from before it made the pod's; an app clones each host
//!   volume's source tree there (`OPEN_TREE_CLONE`: the clone joins the source's peer
//!   group, as a bind mount does) and moves it into its own namespace. The kvm stage1 does
//!   the same for the tree its 9p server shows the guest, from a thread of a
//!   multi-threaded supervisor ([`clone_host_tree_threaded`]).
//! - Mount points in directories a guest can write (the kvm stage1's 9p shares): a guest
//!   that planted a symbolic link where the host mounts next must not redirect the mount
//!   onto a host path, so the mount point is opened beneath its trusted base without
//!   following any link and the tree attached to that descriptor.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

use nix::sched::{setns, CloneFlags};

/// The host's mount namespace, opened before the pod's was made.
static HOST_MOUNT_NS: OnceLock<OwnedFd> = OnceLock::new();

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
/// Propagation types of `mount_setattr(2)` (`mount(2)`'s flags).
const MS_PRIVATE: u64 = 1 << 18;
/// See [`MS_PRIVATE`].
const MS_SLAVE: u64 = 1 << 19;
/// `mount_setattr(2)` attributes.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// See [`MOUNT_ATTR_RDONLY`].
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// See [`MOUNT_ATTR_RDONLY`].
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
/// See [`MOUNT_ATTR_RDONLY`]: ids mapped through a user namespace.
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a NUL in the path", p.display()))
}

/// A detached copy of the mount at `source` in this mount namespace (with the mounts below
/// it if `recursive`).
pub fn clone_tree(source: &Path, recursive: bool) -> Result<OwnedFd, String> {
    let path = cpath(source)?;
    let depth = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: open_tree(2) reads the NUL-terminated path and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | depth | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(format!(
            "cannot clone the mount at {}: {}",
            source.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the descriptor was just returned by open_tree and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sets attributes `set` (`MOUNT_ATTR_*`) on detached tree `tree` (every mount of it if
/// `recursive`); `userns` is the user namespace of [`MOUNT_ATTR_IDMAP`].
pub fn set_attributes(
    tree: &OwnedFd,
    set: u64,
    userns: Option<&std::fs::File>,
    recursive: bool,
) -> Result<(), String> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |f| f.as_raw_fd() as u64),
    };
    mount_setattr(tree, &attr, recursive)
}

/// Makes every mount of detached tree `tree` a slave of its peers (`slave`: it receives
/// what is mounted below them from now on) or private.
pub fn set_propagation(tree: &OwnedFd, slave: bool) -> Result<(), String> {
    let attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: if slave { MS_SLAVE } else { MS_PRIVATE },
        userns_fd: 0,
    };
    mount_setattr(tree, &attr, true)
}

fn mount_setattr(tree: &OwnedFd, attr: &MountAttr, recursive: bool) -> Result<(), String> {
    let depth = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr(2) reads `attr` (of the size given) and the empty path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | depth,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(format!(
            "cannot set a mount's attributes: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Whether this kernel has `mount_setattr(2)` (Linux 5.12): asked of no mount, it fails
/// with EBADF where it exists and ENOSYS where it does not.
pub fn can_set_attributes() -> bool {
    let attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr(2) on descriptor -1 reads `attr` (of the size given) and the
    // empty path, and changes nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

/// Opens `rel` beneath directory `base` without following any symbolic link or leaving
/// `base` (`openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`).
fn open_beneath(base: &OwnedFd, rel: &Path, flags: i32, mode: u32) -> std::io::Result<OwnedFd> {
    let path = CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain data; all-zero is its empty value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    // No O_NOFOLLOW: with O_PATH it would open a final link itself instead of failing;
    // RESOLVE_NO_SYMLINKS refuses a link anywhere in the path, the last part included.
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = u64::from(mode);
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: openat2(2) reads the path and `how` (of the size given).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            base.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned by openat2 and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn open_dir(base: &Path) -> Result<OwnedFd, String> {
    let f =
        std::fs::File::open(base).map_err(|e| format!("cannot open {}: {e}", base.display()))?;
    Ok(OwnedFd::from(f))
}

/// The mount point `rel` beneath trusted directory `base` (whose parent directories below
/// `base` exist), made if missing — a directory if `dir`, else an empty file — never
/// through a symbolic link.
fn mount_point_beneath(base: &Path, rel: &Path, dir: bool) -> Result<OwnedFd, String> {
    let what = |e: std::io::Error| format!("mount point {}: {e}", base.join(rel).display());
    let root = open_dir(base)?;
    let (parent, name) = match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) if !p.as_os_str().is_empty() => (
            open_beneath(&root, p, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(what)?,
            n,
        ),
        (_, Some(n)) => (root, n),
        _ => return Err(format!("mount point {}: no name", rel.display())),
    };
    let name = Path::new(name);
    match open_beneath(&parent, name, libc::O_PATH, 0) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(what(e)),
        Err(_) => {}
    }
    if dir {
        nix::sys::stat::mkdirat(
            &parent,
            name,
            nix::sys::stat::Mode::from_bits_truncate(0o755),
        )
        .map_err(|e| what(e.into()))?;
    } else {
        drop(
            open_beneath(
                &parent,
                name,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o644,
            )
            .map_err(what)?,
        );
    }
    open_beneath(&parent, name, libc::O_PATH, 0).map_err(what)
}

/// Binds `source` (recursively; read-only if asked) at `rel` beneath trusted directory
/// `base`, whose contents someone else may write (see the module's doc).
pub fn bind_beneath(source: &Path, base: &Path, rel: &Path, read_only: bool) -> Result<(), String> {
    let tree = clone_tree(source, true)?;
    if read_only {
        set_attributes(&tree, MOUNT_ATTR_RDONLY, None, true)?;
    }
    let target = mount_point_beneath(base, rel, source.is_dir())?;
    attach_to(tree, &target, &base.join(rel))
}

/// Makes directory `rel` beneath trusted directory `base` (whose parent directories below
/// `base` exist) if it is missing, never through a symbolic link.
pub fn dir_beneath(base: &Path, rel: &Path) -> Result<(), String> {
    mount_point_beneath(base, rel, true).map(drop)
}

/// Attaches detached tree `tree` at `rel` beneath trusted directory `base` (made if missing:
/// a directory if `dir`, else an empty file), never through a symbolic link: `base`'s
/// contents may be writable by someone else (a user namespace pod's root).
pub fn attach_beneath(tree: OwnedFd, base: &Path, rel: &Path, dir: bool) -> Result<(), String> {
    let target = mount_point_beneath(base, rel, dir)?;
    attach_to(tree, &target, &base.join(rel))
}

/// Unmounts (lazily, with what is below it) whatever is mounted at `rel` beneath `base`,
/// never through a symbolic link.
pub fn unmount_beneath(base: &Path, rel: &Path) -> Result<(), String> {
    let root = open_dir(base)?;
    let fd = match open_beneath(&root, rel, libc::O_PATH, 0) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", base.join(rel).display())),
    };
    let through = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match nix::mount::umount2(through.as_str(), nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => Ok(()), // EINVAL: nothing mounted there
        Err(e) => Err(format!("cannot unmount {}: {e}", base.join(rel).display())),
    }
}

/// Attaches detached tree `tree` on the mount point `target` (a descriptor; `shown` names
/// it in errors).
fn attach_to(tree: OwnedFd, target: &OwnedFd, shown: &Path) -> Result<(), String> {
    // SAFETY: move_mount(2) with two descriptors and empty paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(format!(
            "cannot mount at {}: {}",
            shown.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Remembers this process's mount namespace as the host's (call before making the pod's).
pub fn remember_host_namespace() -> Result<(), String> {
    let f = std::fs::File::open("/proc/self/ns/mnt")
        .map_err(|e| format!("cannot open the host's mount namespace: {e}"))?;
    let _ = HOST_MOUNT_NS.set(OwnedFd::from(f));
    Ok(())
}

/// Whether [`remember_host_namespace`] kept the host's mount namespace.
pub fn host_namespace_kept() -> bool {
    HOST_MOUNT_NS.get().is_some()
}

/// A detached copy of the host's mount tree at `source` (recursive), in the source's peer
/// group. Enters the host's mount namespace for the call and comes back to this one; the
/// caller must be single-threaded.
pub fn clone_host_tree(source: &Path) -> Result<OwnedFd, String> {
    let host = HOST_MOUNT_NS.get().ok_or(
        "the host's mount namespace was not kept (bidirectional volumes need the ns or fly stage1)",
    )?;
    let here = std::fs::File::open("/proc/self/ns/mnt")
        .map_err(|e| format!("cannot open this mount namespace: {e}"))?;
    setns(host.as_fd(), CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("cannot enter the host's mount namespace: {e}"))?;
    let tree = clone_tree(source, true);
    setns(here.as_fd(), CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("cannot come back from the host's mount namespace: {e}"))?;
    tree
}

/// [`clone_host_tree`] from any thread of any process: a helper thread with a root and
/// working directory of its own (`unshare(CLONE_FS)`, which `setns` into a mount namespace
/// needs) enters the host's mount namespace, clones there and ends; the descriptor it made
/// is the process's (threads share their descriptors).
pub fn clone_host_tree_threaded(source: &Path) -> Result<OwnedFd, String> {
    let host = HOST_MOUNT_NS
        .get()
        .ok_or("the host's mount namespace was not kept")?
        .try_clone()
        .map_err(|e| format!("cannot keep the host's mount namespace: {e}"))?;
    let source = source.to_path_buf();
    std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_FS)
            .map_err(|e| format!("cannot unshare the helper thread's root: {e}"))?;
        setns(host.as_fd(), CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("cannot enter the host's mount namespace: {e}"))?;
        clone_tree(&source, true)
    })
    .join()
    .map_err(|_| "the thread cloning a host mount panicked".to_string())?
}

/// Attaches detached tree `tree` at `target` (an existing path in this namespace).
pub fn attach(tree: OwnedFd, target: &Path) -> Result<(), String> {
    let to = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a NUL in the path", target.display()))?;
    // SAFETY: move_mount(2) reads the two NUL-terminated paths; `tree` is a valid descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(format!(
            "cannot attach the host's mount at {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
