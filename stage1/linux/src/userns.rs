//! Pods with a user namespace (`--private-users`, a CRI sandbox with `hostUsers: false`): the
//! pod's namespaces are owned by a user namespace whose root is an unprivileged host id, and
//! each image layer is seen through an idmapped mount (host uid 0 shows as the pod's uid 0)
//! so the shared layers need no chown'ed copies; so is each volume marked `idmap`.
//!
//! The supervisor stays in the host user namespace (it writes the id maps and makes the
//! idmapped mounts, which need host privileges); a child creates the user namespace, waits
//! for the maps, creates the other namespaces inside it and forks the pod's init. An app
//! added later to a mutable pod gets the same from the `app-add` entrypoint, which runs as
//! the host's root: it idmaps the app's trees in the host's mount namespace, attaches them
//! in the pod's, and makes and delegates the app's cgroup before the init mounts its root.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use orbit_stage1::{paths, App, PodManifest, UserNamespace, VolumeKind};

use crate::cgroup::PodCgroups;

/// One idmapped mount an app needs: an image layer (read-only) or a volume.
pub struct Idmap {
    source: PathBuf,
    target: PathBuf,
    volume: bool,
}

/// Where app `app`'s idmapped mounts are: `apps/<name>/idmapped/`.
fn idmapped_dir(pod: &Path, app: &str) -> PathBuf {
    paths::app_dir(pod, app).join("idmapped")
}

/// The idmapped mount of volume `volume` for app `app` (the app binds it from there).
pub fn idmapped_volume(pod: &Path, app: &str, volume: &str) -> PathBuf {
    idmapped_dir(pod, app).join(format!("volume-{volume}"))
}

/// App `app` as the init must see it: every lower replaced by its idmapped mount point
/// (`apps/<name>/idmapped/<i>`); with the idmapped mounts it needs (its layers, and its
/// `idmap` volumes, see [`idmapped_volume`]).
pub fn idmapped_app(
    pod: &Path,
    manifest: &PodManifest,
    app: &App,
) -> Result<(App, Vec<Idmap>), String> {
    let mut inner = app.clone();
    let dir = idmapped_dir(pod, &app.name);
    let mut mounts = Vec::new();
    for (i, lower) in inner.rootfs.lowers.iter_mut().enumerate() {
        let target = dir.join(i.to_string());
        mounts.push(Idmap {
            source: lower.clone(),
            target: target.clone(),
            volume: false,
        });
        *lower = target;
    }
    for m in &app.mounts {
        let v = manifest.volume_of(m)?;
        let target = idmapped_volume(pod, &app.name, &v.name);
        if !v.idmap || mounts.iter().any(|i| i.target == target) {
            continue;
        }
        let source = match v.kind {
            VolumeKind::Host => v.host_source()?,
            VolumeKind::Empty => paths::volume_dir(pod, &v.name),
            // An image volume's layers are mounted read-only as the store holds them: the
            // pod's ids see their files as the overflow id (readable as the image allows).
            VolumeKind::Image => continue,
        };
        mounts.push(Idmap {
            source,
            target,
            volume: true,
        });
    }
    Ok((inner, mounts))
}

/// The manifest as the init must see it (every app as [`idmapped_app`] makes it), with the
/// idmapped mounts to make.
pub fn idmapped_manifest(
    pod: &Path,
    manifest: &PodManifest,
) -> Result<(PodManifest, Vec<Idmap>), String> {
    let mut inner = manifest.clone();
    let mut mounts = Vec::new();
    for a in inner.apps.iter_mut() {
        let (app, m) = idmapped_app(pod, manifest, a)?;
        *a = app;
        mounts.extend(m);
    }
    Ok((inner, mounts))
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

/// Opens the user namespace of process `pid`.
fn user_namespace_of(pid: i32) -> Result<std::fs::File, String> {
    std::fs::File::open(format!("/proc/{pid}/ns/user"))
        .map_err(|e| format!("cannot open the pod's user namespace: {e}"))
}

/// A detached copy of `m.source`'s mount with ids mapped through `userns`: a layer
/// read-only (the shared layers of every pod; overlayfs only reads them), a volume with the
/// mounts below it and writable (its own `readOnly` is applied where the app binds it).
fn idmapped_tree(m: &Idmap, userns: &std::fs::File) -> Result<OwnedFd, String> {
    use crate::mountfd::{
        MOUNT_ATTR_IDMAP, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
    };
    let tree = crate::mountfd::clone_tree(&m.source, m.volume)?;
    let set = if m.volume {
        MOUNT_ATTR_IDMAP
    } else {
        MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
    };
    crate::mountfd::set_attributes(&tree, set, Some(userns), m.volume)
        .map_err(|e| format!("cannot idmap {}: {e}", m.source.display()))?;
    Ok(tree)
}

/// Attaches `tree` (made by [`idmapped_tree`] for `m`) at its place below pod directory
/// `pod`, in this process's mount namespace; never through a link the pod's root (who owns
/// the app's directory) may have put on the way.
fn attach(pod: &Path, m: &Idmap, tree: OwnedFd) -> Result<(), String> {
    let rel = m
        .target
        .strip_prefix(pod)
        .map_err(|_| format!("{} is outside the pod", m.target.display()))?;
    crate::mountfd::attach_beneath(tree, pod, rel, m.source.is_dir())
}

/// Makes the idmapped mounts `mounts` (through the user namespace of process `child`) in
/// this process's mount namespace.
pub fn idmapped_mounts(pod: &Path, mounts: &[Idmap], child: i32) -> Result<(), String> {
    let userns = user_namespace_of(child)?;
    for m in mounts {
        make_parent(m)?;
        attach(pod, m, idmapped_tree(m, &userns)?)?;
    }
    Ok(())
}

/// Creates the directory that holds `m`'s mount point.
fn make_parent(m: &Idmap) -> Result<(), String> {
    let parent = m.target.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))
}

/// Makes app `a`'s cgroup with its limits and device rules, as the host's root, and hands it
/// to the pod's root, who moves the app into it from inside the user namespace.
pub fn app_cgroup(cgroups: &PodCgroups, a: &App, ns: &UserNamespace) -> Result<(), String> {
    cgroups.set_app_limits(a, true)?;
    cgroups.delegate_app(&a.name, ns.uid_base, ns.gid_base)
}

/// The host's part of `app-add` for app `name` of a running pod with a user namespace (a
/// no-op for a pod without one): its idmapped mounts, made here and attached in the pod's
/// mount namespace (that of the pod's init, `pid`), and its cgroup (see [`app_cgroup`]).
/// Leaves this process in the pod's mount namespace.
pub fn add_app(pod: &Path, uuid: &str, name: &str) -> Result<(), String> {
    let manifest = crate::util::read_manifest(pod)?;
    let Some(ns) = manifest.user_namespace else {
        return Ok(());
    };
    let app = manifest
        .apps
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| format!("pod.json has no app {name}"))?;
    let init = std::fs::read_to_string(pod.join(paths::PID))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .ok_or("the pod is not running (no pid file)")?;
    let userns = user_namespace_of(init)?;
    let mntns = std::fs::File::open(format!("/proc/{init}/ns/mnt"))
        .map_err(|e| format!("cannot open the pod's mount namespace: {e}"))?;
    let (_, idmaps) = idmapped_app(pod, &manifest, app)?;
    let mut trees = Vec::new();
    for m in &idmaps {
        make_parent(m)?;
        trees.push(idmapped_tree(m, &userns)?);
    }
    let cgroups = PodCgroups::load(pod, uuid).ok_or("the pod has no recorded cgroups")?;
    app_cgroup(&cgroups, app, &ns)?;
    nix::sched::setns(mntns, nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("cannot enter the pod's mount namespace: {e}"))?;
    for (m, tree) in idmaps.iter().zip(trees) {
        if let Err(e) = attach(pod, m, tree) {
            unmount_app(pod, name);
            cgroups.remove_app(name);
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts app `name`'s idmapped mounts in this mount namespace (it was removed).
pub fn unmount_app(pod: &Path, name: &str) {
    let dir = idmapped_dir(pod, name);
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Whether the file system at `path` takes idmapped mounts here: the kernel has
/// `mount_setattr(2)` with `MOUNT_ATTR_IDMAP`, the file system supports it, and this process
/// may make a user namespace. A detached copy of the mount at `path` is idmapped through a
/// throw-away user namespace (a forked child's, gone on return). Safe to call from a
/// multi-threaded process: the child only makes system calls.
pub fn idmap_supported(path: &Path) -> Result<(), String> {
    use nix::fcntl::OFlag;
    use nix::unistd::{fork, pipe2, read, write, ForkResult};
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (go_r, go_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the child only calls async-signal-safe functions (close, unshare, write, read,
    // _exit) and never returns into the caller's code.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop((ready_r, go_w));
            let made = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
            if made {
                let _ = write(&ready_w, b"r");
                // Until the caller is done with the namespace (it closes its end).
                let _ = read(&go_r, &mut [0u8; 1]);
            }
            // SAFETY: leaves the fork child at once, without the caller's teardown.
            unsafe { libc::_exit(i32::from(!made)) }
        }
        ForkResult::Parent { child } => {
            drop((ready_w, go_r));
            let probe = (|| {
                let mut b = [0u8; 1];
                if read(&ready_r, &mut b).map_err(|e| e.to_string())? != 1 {
                    return Err("cannot make a user namespace".to_string());
                }
                let ns = UserNamespace {
                    uid_base: 1 << 20,
                    gid_base: 1 << 20,
                    size: 65536,
                };
                write_maps(child.as_raw(), &ns)?;
                let tree = crate::mountfd::clone_tree(path, false)?;
                let userns = user_namespace_of(child.as_raw())?;
                crate::mountfd::set_attributes(
                    &tree,
                    crate::mountfd::MOUNT_ATTR_IDMAP,
                    Some(&userns),
                    false,
                )
            })();
            drop(go_w);
            let _ = nix::sys::wait::waitpid(child, None);
            probe.map_err(|e| format!("{}: no idmapped mounts: {e}", path.display()))
        }
    }
}
