//! A kvm pod's host volumes. Each app's are cloned from the host's mount namespace, as the
//! `ns` stage1 clones them (see `mountfd`), and attached at `kvm/volumes/<app>/<volume>`,
//! the one directory QEMU's 9p server shares for them ([`agent::HOST_VOLUMES_TAG`],
//! uncached in the guest). The server resolves every path the guest asks for in the
//! supervisor's mount namespace, then and there, so the guest sees these trees as the host
//! side has them:
//!
//! - a HostToContainer volume (`Propagation::Slave`) is a slave of the host's source and
//!   shows what the host mounts below it later; a private one does not;
//! - read-only is the host side's: the volume's own mount only (`readOnly`: the 9p server
//!   answers EROFS there, and the mounts the host made below it stay writable) or every
//!   mount of the tree (`recursiveReadOnly`, which the guest's bind repeats);
//! - a bidirectional volume cannot be: a mount made in the guest is the guest kernel's and
//!   never reaches the host (refused, see `unsupported`).
//!
//! The guest writes in that directory, so mount points are made and reached without
//! following links. The clones live in the supervisor's mount namespace (QEMU's too) and
//! vanish with it; never shared, they send nothing back to the host.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use orbit_stage1::{agent, App, PodManifest, Propagation, Volume, VolumeKind};

use crate::mountfd;

/// Where the host volumes are attached on the host (the [`agent::HOST_VOLUMES_TAG`] share).
pub fn dir(pod: &Path) -> PathBuf {
    super::kvm_dir(pod).join("volumes")
}

/// Where the guest finds app `app`'s host volume `volume`.
pub fn guest_path(app: &str, volume: &str) -> String {
    format!("{}/{app}/{volume}", agent::HOST_VOLUMES_MOUNT)
}

/// Whether a pod needs the host volumes' share: it has host volumes, or may get some later
/// (a mutable pod).
pub fn shared(manifest: &PodManifest) -> bool {
    manifest.mutable || manifest.volumes.iter().any(|v| v.kind == VolumeKind::Host)
}

/// `app`'s host volumes, each once, with the propagation of its first mount.
fn host_volumes<'a>(
    manifest: &'a PodManifest,
    app: &App,
) -> Result<Vec<(&'a Volume, Propagation)>, String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in &app.mounts {
        let v = manifest.volume_of(m)?;
        if v.kind == VolumeKind::Host && seen.insert(v.name.as_str()) {
            out.push((v, m.propagation));
        }
    }
    Ok(out)
}

fn rel(app: &str, volume: &str) -> PathBuf {
    Path::new(app).join(volume)
}

/// Clones `app`'s host volumes from the host's mount namespace and attaches them where the
/// guest finds them ([`guest_path`]). Works from any thread. On failure, what it attached
/// is detached again.
pub fn attach(pod: &Path, manifest: &PodManifest, app: &App) -> Result<(), String> {
    let volumes = host_volumes(manifest, app)?;
    if volumes.is_empty() {
        return Ok(());
    }
    let base = dir(pod);
    let attached = (|| {
        mountfd::dir_beneath(&base, Path::new(&app.name))?;
        for (v, propagation) in &volumes {
            let tree = host_tree(v, *propagation)?;
            let is_dir = nix::sys::stat::fstat(&tree)
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .map_err(|e| format!("volume {}: {e}", v.name))?;
            mountfd::attach_beneath(tree, &base, &rel(&app.name, &v.name), is_dir)?;
        }
        Ok(())
    })();
    if attached.is_err() {
        let _ = detach(pod, manifest, app);
    }
    attached
}

/// Unmounts `app`'s host volumes (the directories stay, empty, until the pod is removed).
pub fn detach(pod: &Path, manifest: &PodManifest, app: &App) -> Result<(), String> {
    let base = dir(pod);
    for (v, _) in host_volumes(manifest, app)? {
        mountfd::unmount_beneath(&base, &rel(&app.name, &v.name))?;
    }
    Ok(())
}

/// The host's tree at `v`'s source, detached: a slave of the host's mounts there or
/// private, nodev and nosuid (QEMU opens no device and runs nothing there), read-only as
/// the volume asks.
fn host_tree(v: &Volume, propagation: Propagation) -> Result<OwnedFd, String> {
    let what = |e: String| format!("volume {}: {e}", v.name);
    let slave = match propagation {
        Propagation::Slave => true,
        Propagation::Private => false,
        Propagation::Shared => return Err(what(agent::BIDIRECTIONAL_REFUSED.into())),
    };
    let tree = mountfd::clone_host_tree_threaded(&v.host_source()?).map_err(what)?;
    mountfd::set_propagation(&tree, slave).map_err(what)?;
    let confined = mountfd::MOUNT_ATTR_NODEV | mountfd::MOUNT_ATTR_NOSUID;
    mountfd::set_attributes(&tree, confined, None, true).map_err(what)?;
    if v.read_only {
        mountfd::set_attributes(
            &tree,
            mountfd::MOUNT_ATTR_RDONLY,
            None,
            v.recursive_read_only,
        )
        .map_err(what)?;
    }
    Ok(tree)
}
