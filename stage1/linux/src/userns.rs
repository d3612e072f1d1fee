//! `--private-users` pods: the pod's namespaces are owned by a user namespace whose root is
//! an unprivileged host id, and each image layer is seen through an idmapped mount (host
//! uid 0 shows as the pod's uid 0) so the shared layers need no chown'ed copies.
//!
//! The supervisor stays in the host user namespace (it writes the id maps and makes the
//! idmapped mounts, which need host privileges); a child creates the user namespace, waits
//! for the maps, creates the other namespaces inside it and forks the pod's init.

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

/// Mounts `source` at `target` (created) with ids mapped through the user namespace of
/// process `child` (a detached clone with `MOUNT_ATTR_IDMAP`, see `mountfd`).
pub fn idmapped_mount(source: &Path, target: &Path, child: i32) -> Result<(), String> {
    use crate::mountfd::{
        MOUNT_ATTR_IDMAP, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
    };
    std::fs::create_dir_all(target)
        .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let userns = std::fs::File::open(format!("/proc/{child}/ns/user"))
        .map_err(|e| format!("cannot open the pod's user namespace: {e}"))?;
    let tree = crate::mountfd::clone_tree(source, false)?;
    // Read-only: these are the shared layers of every pod; overlayfs only reads them.
    let set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    crate::mountfd::set_attributes(&tree, set, Some(&userns), false)
        .map_err(|e| format!("cannot idmap {}: {e}", source.display()))?;
    crate::mountfd::attach(tree, target)
}
