//! `--private-users` pods: the pod's namespaces are owned by a user namespace whose root is
//! an unprivileged host id, and each image layer is seen through an idmapped mount (host
//! uid 0 shows as the pod's uid 0) so the shared layers need no chown'ed copies.
//!
//! The supervisor stays in the host user namespace (it writes the id maps and makes the
//! idmapped mounts, which need host privileges); a child creates the user namespace, waits
//! for the maps, creates the other namespaces inside it and forks the pod's init.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use orbit_stage1::{paths, PodManifest, UserNamespace};

/// The manifest as the init must see it: every lower replaced by its idmapped mount point
/// (`apps/<name>/idmapped/<i>`), with the (source, target) pairs to mount.
pub fn idmapped_manifest(
    pod: &Path,
    manifest: &PodManifest,
) -> (PodManifest, Vec<(PathBuf, PathBuf)>) {
    let mut inner = manifest.clone();
    let mut mounts = Vec::new();
    for a in inner.apps.iter_mut() {
        let dir = paths::app_dir(pod, &a.name).join("idmapped");
        for (i, lower) in a.rootfs.lowers.iter_mut().enumerate() {
            let target = dir.join(i.to_string());
            mounts.push((lower.clone(), target.clone()));
            *lower = target;
        }
    }
    (inner, mounts)
}

/// Writes the child's uid and gid maps (pod 0..size → host base..base+size).
pub fn write_maps(child: i32, ns: &UserNamespace) -> Result<(), String> {
    std::fs::write(
        format!("/proc/{child}/uid_map"),
        format!("0 {} {}\n", ns.uid_base, ns.size),
    )
    .map_err(|e| format!("cannot write the uid map: {e}"))?;
    std::fs::write(
        format!("/proc/{child}/gid_map"),
        format!("0 {} {}\n", ns.gid_base, ns.size),
    )
    .map_err(|e| format!("cannot write the gid map: {e}"))
}

/// The kernel's `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

fn cpath(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: path has a NUL byte", p.display()))
}

/// Mounts `source` at `target` (created) with ids mapped through the user namespace of
/// process `child` (open_tree + mount_setattr(MOUNT_ATTR_IDMAP) + move_mount; no crate
/// wraps mount_setattr yet, hence the raw syscalls).
pub fn idmapped_mount(source: &Path, target: &Path, child: i32) -> Result<(), String> {
    std::fs::create_dir_all(target)
        .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let userns = std::fs::File::open(format!("/proc/{child}/ns/user"))
        .map_err(|e| format!("cannot open the pod's user namespace: {e}"))?;
    let src = cpath(source)?;
    // SAFETY: open_tree with a valid NUL-terminated path; returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(format!(
            "open_tree {}: {}",
            source.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the kernel just returned this descriptor; we own it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        // Read-only: these are the shared layers of every pod; overlayfs only reads them.
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: mount_setattr on our detached tree with a correctly sized mount_attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(format!(
            "cannot idmap {}: {}",
            source.display(),
            std::io::Error::last_os_error()
        ));
    }
    let dst = cpath(target)?;
    // SAFETY: move_mount of our detached tree onto a valid NUL-terminated target path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(format!(
            "cannot mount {} at {}: {}",
            source.display(),
            target.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
