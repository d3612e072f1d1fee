//! A pod's network namespace, pinned by an nsfs bind mount in the pod directory (as
//! `ip netns add` pins them under /run/netns), so it outlives every process in it and
//! CNI plugins can enter it by path.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::NetError;

/// Creates a new network namespace pinned at `path` (an empty file is created there).
pub fn create(path: &Path) -> Result<(), NetError> {
    let err = |detail: String| NetError::Netns {
        path: path.to_path_buf(),
        detail,
    };
    std::fs::File::create(path).map_err(|e| err(format!("cannot create the pin file: {e}")))?;
    let target = path.to_path_buf();
    // unshare(CLONE_NEWNET) changes only the calling thread's namespace: do it on a thread
    // of its own that pins the namespace and ends, so this process stays where it was.
    let pinned = std::thread::spawn(move || -> Result<(), String> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare: {e}"))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind mount: {e}"))
    })
    .join()
    .unwrap_or_else(|_| Err("the pinning thread panicked".into()));
    if let Err(e) = pinned {
        let _ = std::fs::remove_file(path);
        return Err(err(e));
    }
    Ok(())
}

/// Unpins and removes the namespace at `path` (gone already is fine).
pub fn remove(path: &Path) -> Result<(), NetError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetError::Netns {
                path: path.to_path_buf(),
                detail: format!("cannot unmount: {e}"),
            })
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::io("cannot remove", path, e)),
    }
}

/// True when `path` is a pinned network namespace.
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}
