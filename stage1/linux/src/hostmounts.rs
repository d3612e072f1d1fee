//! Bidirectional volumes (`Propagation::Shared`): the app's mount must be a peer of the
//! host's, which no mount made inside the pod's namespace (a slave of the host's) can be.
//! The stage1 keeps the host's mount namespace open from before it made the pod's; an app
//! with such a volume clones the source's mount tree there (`open_tree(2)` with
//! `OPEN_TREE_CLONE`: the clone joins the source's peer group, as a bind mount does) and
//! moves it into its own namespace (`move_mount(2)`). Hand-written: nix has neither call.

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

/// Remembers this process's mount namespace as the host's (call before making the pod's).
pub fn remember_host_namespace() -> Result<(), String> {
    let f = std::fs::File::open("/proc/self/ns/mnt")
        .map_err(|e| format!("cannot open the host's mount namespace: {e}"))?;
    let _ = HOST_MOUNT_NS.set(OwnedFd::from(f));
    Ok(())
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
    let path = CString::new(source.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a NUL in the path", source.display()))?;
    // SAFETY: open_tree(2) reads the NUL-terminated path and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    let cloned = std::io::Error::last_os_error();
    setns(here.as_fd(), CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("cannot come back from the host's mount namespace: {e}"))?;
    if fd < 0 {
        return Err(format!(
            "cannot clone the host's mount at {}: {cloned}",
            source.display()
        ));
    }
    // SAFETY: the descriptor was just returned by open_tree and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
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
