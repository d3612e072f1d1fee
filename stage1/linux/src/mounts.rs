//! Mounts: the app's root (overlayfs over the shared layers), and the app's view of /proc,
//! /sys, /dev, /etc and its volumes, then `pivot_root` (ns) or `chroot` (fly).
//!
//! The app's root and its volumes are `nodev`: a device node there (from the image, a
//! volume, or made by the app with CAP_MKNOD) does not open, whatever the device cgroup
//! says. Device nodes live in the pod's /dev, a tmpfs of its own (not `nodev`) holding only
//! the nodes the stage1 made; the device cgroup (v1 controller or BPF program, see
//! `devices`) decides which of them, and of those the app makes there, open. An app given
//! every device keeps device nodes on its root and volumes, and so does an app given a
//! device outside /dev on its root, where the stage1 makes that node; a fly app, which
//! sees the host's /dev, keeps them on its volumes.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

pub use orbit_stage1::confine::in_root;
use orbit_stage1::confine::{bind_read_only, mask_paths};
use orbit_stage1::{paths, App, PodManifest, Propagation, Volume, VolumeKind};

use crate::Flavor;

type R = Result<(), String>;

fn mnt(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> R {
    mount(src, target, fstype, flags, data).map_err(|e| {
        format!(
            "mount {} on {}: {e}",
            fstype.or(src).unwrap_or("?"),
            target.display()
        )
    })
}

/// Mounts app `a`'s root at `apps/<name>/rootfs`: overlayfs of its layers (top first) with
/// the app's own upper/work directories, or a bind of the copied tree (`--no-overlay`);
/// `nodev` unless the stage1 makes device nodes in it (see [`crate::devices::root_has_nodes`]).
pub fn mount_app_root(pod: &Path, a: &App) -> R {
    let dir = paths::app_dir(pod, &a.name);
    let root = dir.join("rootfs");
    let nodev = !crate::devices::root_has_nodes(a);
    if !a.rootfs.overlay {
        mnt(
            Some(&root.to_string_lossy()),
            &root,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        return if nodev { add_nodev(&root) } else { Ok(()) };
    }
    let empty = [dir.join("empty")];
    let lowers: &[PathBuf] = if a.rootfs.lowers.is_empty() {
        &empty
    } else {
        &a.rootfs.lowers
    };
    let flags = if nodev {
        MsFlags::MS_NODEV
    } else {
        MsFlags::empty()
    };
    mount_layers(&dir, "lowers", lowers, true, &root, flags)
}

/// Mounts overlayfs at `target` over `lowers` (top first) with `flags`: with the upper and
/// work directories `upper` and `work` of `dir` when `writable`, else read-only. When the
/// options overflow the page the kernel copies them into, the layers are named through
/// short links in `dir/<links>`, relative to `dir` (docker's overlay2 does the same).
fn mount_layers(
    dir: &Path,
    links: &str,
    lowers: &[PathBuf],
    writable: bool,
    target: &Path,
    flags: MsFlags,
) -> R {
    let upper = |base: &str| {
        if writable {
            format!(",upperdir={base}upper,workdir={base}work")
        } else {
            String::new()
        }
    };
    let full: Vec<String> = lowers
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let data = format!(
        "lowerdir={}{}",
        full.join(":"),
        upper(&format!("{}/", dir.display()))
    );
    if data.len() < mount_options_limit() {
        return mount_overlay(target, flags, &data);
    }
    let link_dir = dir.join(links);
    let _ = std::fs::remove_dir_all(&link_dir);
    std::fs::create_dir(&link_dir)
        .map_err(|e| format!("cannot create {}: {e}", link_dir.display()))?;
    let mut short = Vec::with_capacity(lowers.len());
    for (i, lower) in lowers.iter().enumerate() {
        let link = link_dir.join(i.to_string());
        symlink(lower, &link).map_err(|e| format!("cannot link {}: {e}", link.display()))?;
        short.push(format!("{links}/{i}"));
    }
    let data = format!("lowerdir={}{}", short.join(":"), upper(""));
    let _cwd = WorkingDir::enter(dir)?;
    mount_overlay(target, flags, &data)
}

/// Mounts image volume `v` at `target` in app `a`: its layers over the app's empty
/// directory (an overlay without an upper directory needs two lowers), read-only and
/// `nosuid` (an image's set-user-ID files give nothing), `nodev` if `nodev`.
fn mount_image_volume(pod: &Path, a: &App, v: &Volume, target: &Path, nodev: bool) -> R {
    let dir = paths::app_dir(pod, &a.name);
    let mut lowers = v.image_lowers()?.to_vec();
    lowers.push(dir.join("empty"));
    let mut flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID;
    if nodev {
        flags |= MsFlags::MS_NODEV;
    }
    mount_layers(
        &dir,
        &format!("lowers-{}", v.name),
        &lowers,
        false,
        target,
        flags,
    )
}

/// The most bytes of mount options the kernel takes: one page, with its NUL.
fn mount_options_limit() -> usize {
    use nix::unistd::{sysconf, SysconfVar};
    sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096)
}

/// The process's working directory changed to a directory until dropped, then restored.
struct WorkingDir(std::fs::File);

impl WorkingDir {
    fn enter(dir: &Path) -> Result<WorkingDir, String> {
        let here = std::fs::File::open(".")
            .map_err(|e| format!("cannot open the working directory: {e}"))?;
        nix::unistd::chdir(dir).map_err(|e| format!("cannot enter {}: {e}", dir.display()))?;
        Ok(WorkingDir(here))
    }
}

impl Drop for WorkingDir {
    fn drop(&mut self) {
        let _ = nix::unistd::fchdir(&self.0);
    }
}

/// Mounts overlayfs with options `data` and `flags` at `root`.
fn mount_overlay(root: &Path, flags: MsFlags, data: &str) -> R {
    match mount(Some("overlay"), root, Some("overlay"), flags, Some(data)) {
        // ENODEV: the kernel knows no file system of that name (not built in, not loaded).
        Err(nix::errno::Errno::ENODEV) => Err(format!(
            "mount overlay on {}: this kernel has no overlay file system (ENODEV); load its \
             module (`modprobe overlay`; add `overlay` to /etc/modules-load.d/ to keep it), \
             or run the pod with --no-overlay",
            root.display()
        )),
        r => r.map_err(|e| format!("mount overlay on {}: {e}", root.display())),
    }
}

/// Remounts the mount at `target` with flags `add` on top of those it has: a bind remount
/// sets every per-mount flag, so one not given would be cleared — and clearing a locked
/// one (ro, nosuid, nodev, noexec of a mount that came from the host into a user
/// namespace) fails. The access-time flags are kept by the kernel when none is given.
fn remount_adding(target: &Path, add: MsFlags) -> R {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let has = statvfs(target)
        .map_err(|e| format!("statvfs {}: {e}", target.display()))?
        .flags();
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | add;
    for (st, ms) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if has.contains(st) {
            flags |= ms;
        }
    }
    mnt(None, target, None, flags, None)
}

/// Sets `MOUNT_ATTR_*` attributes `attr` on the mount at `target` and every mount below it
/// (`mount_setattr(2)`, which changes only those flags).
fn set_tree_attributes(target: &Path, attr: u64) -> R {
    use std::os::unix::fs::OpenOptionsExt;
    let tree: std::os::fd::OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(target)
        .map_err(|e| format!("cannot open {}: {e}", target.display()))?
        .into();
    crate::mountfd::set_attributes(&tree, attr, None, true)
}

/// Makes the mount at `target` and every mount below it `nodev`; where the kernel lacks
/// `mount_setattr(2)` (before 5.12), the mount at `target` only.
fn add_nodev(target: &Path) -> R {
    set_tree_attributes(target, crate::mountfd::MOUNT_ATTR_NODEV).or_else(|e| {
        remount_adding(target, MsFlags::MS_NODEV)
            .map_err(|r| format!("{}: {e}; {r}", target.display()))
    })
}

/// Makes the mount at `target` read-only: that mount only, as runc does (mounts below it
/// stay writable), or with `recursive` every mount of the tree (there is no fallback: a
/// kernel without `mount_setattr(2)` cannot, and the app is refused).
fn make_read_only(target: &Path, recursive: bool) -> R {
    if !recursive {
        return remount_adding(target, MsFlags::MS_RDONLY);
    }
    set_tree_attributes(target, crate::mountfd::MOUNT_ATTR_RDONLY).map_err(|e| {
        format!(
            "{}: a recursively read-only volume needs mount_setattr(2), Linux 5.12 or later: {e}",
            target.display()
        )
    })
}

/// Brings the loopback interface of a fresh network namespace up.
pub fn loopback_up() -> Result<(), String> {
    orbit_stage1::netif::loopback_up()
}

fn ensure_dir(p: &Path) -> R {
    std::fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display()))
}

fn ensure_file(p: &Path) -> R {
    if p.exists() {
        return Ok(());
    }
    if let Some(parent) = p.parent() {
        ensure_dir(parent)?;
    }
    std::fs::File::create(p)
        .map(|_| ())
        .map_err(|e| format!("cannot create {}: {e}", p.display()))
}

/// Builds the app's world in a new mount namespace and moves into its root.
pub fn enter_app_root(
    flavor: Flavor,
    pod: &Path,
    manifest: &PodManifest,
    app: &App,
    root: &Path,
) -> R {
    // Host volumes: clones of the host's mounts, taken before this namespace exists.
    let mut host_trees = host_trees(manifest, app)?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare mount namespace: {e}"))?;
    // A slave of the pod's (itself a slave of the host's): nothing the app mounts reaches
    // the host, and what the host mounts reaches volumes that ask for it.
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None,
    )?;
    match flavor {
        Flavor::Ns | Flavor::Kvm => {
            let userns = manifest.user_namespace.is_some();
            system_mounts(root, userns, manifest.shares_host("ipc"))?;
            crate::devices::make_app_devices(root, app, userns)?;
            mask_paths(root, &app.isolators)?;
            etc_files(pod, root)?;
        }
        Flavor::Fly if !app.devices.is_empty() => {
            return Err(format!(
                "app {}: a fly app sees the host's /dev and gets no device nodes of its own",
                app.name
            ));
        }
        Flavor::Fly => {
            for d in ["proc", "sys", "dev"] {
                let target = in_root(root, d)?;
                ensure_dir(&target)?;
                mnt(
                    Some(&format!("/{d}")),
                    &target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
            }
        }
    }
    // A fly app sees the host's /dev anyway, and node agents use device nodes in the host
    // trees they get as volumes (a kubelet's raw block volumes are device files).
    let nodev_volumes = flavor != Flavor::Fly && !app.isolators.all_devices;
    volumes(pod, manifest, app, root, &mut host_trees, nodev_volumes)?;
    if crate::notify::enabled() {
        let target = in_root(root, crate::notify::IN_APP)?;
        ensure_file(&target)?;
        let source = pod.join(crate::notify::POD_FILE);
        mnt(
            Some(&source.to_string_lossy()),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    match flavor {
        Flavor::Ns | Flavor::Kvm => pivot(root)?,
        Flavor::Fly => {
            nix::unistd::chdir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
            nix::unistd::chroot(".").map_err(|e| format!("chroot {}: {e}", root.display()))?;
        }
    }
    if app.read_only_rootfs {
        remount_adding(Path::new("/"), MsFlags::MS_RDONLY)?;
    }
    Ok(())
}

/// Binds file `source` on `target`, creating an empty file there first.
pub fn bind_file(source: &Path, target: &Path) -> R {
    std::fs::File::create(target)
        .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    mnt(
        Some(&source.to_string_lossy()),
        target,
        None,
        MsFlags::MS_BIND,
        None,
    )
}

fn system_mounts(root: &Path, userns: bool, host_ipc: bool) -> R {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = in_root(root, "/proc")?;
    ensure_dir(&proc_dir)?;
    mnt(Some("proc"), &proc_dir, Some("proc"), nosuid, None)?;
    let sys = in_root(root, "/sys")?;
    ensure_dir(&sys)?;
    match mount(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        nosuid | MsFlags::MS_RDONLY,
        None::<&str>,
    ) {
        Ok(()) => {}
        // sysfs belongs to a network namespace: a user namespace may mount one only for a
        // network namespace it owns, and a CNI pod's was made by the host. Show the host's
        // read-only instead, as rootless runtimes do (its files are root's, not the pod's).
        Err(nix::errno::Errno::EPERM) if userns => {
            bind_read_only(Path::new("/sys"), &sys, nosuid)?;
        }
        Err(e) => return Err(format!("mount sysfs on {}: {e}", sys.display())),
    }
    let dev = in_root(root, "/dev")?;
    ensure_dir(&dev)?;
    mnt(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some(orbit_stage1::confine::DEV_TMPFS_OPTIONS),
    )?;
    for (name, major, minor) in orbit_stage1::confine::DEV_NODES {
        let p = dev.join(name);
        if userns {
            // A user namespace cannot create device nodes: bind the host's instead.
            bind_file(Path::new(&format!("/dev/{name}")), &p)?;
            continue;
        }
        crate::devices::make_node(&p, major, minor)?;
    }
    let pts = dev.join("pts");
    ensure_dir(&pts)?;
    mnt(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(orbit_stage1::confine::DEVPTS_OPTIONS),
    )?;
    let shm = dev.join("shm");
    ensure_dir(&shm)?;
    if host_ipc && Path::new("/dev/shm").is_dir() {
        // The host's IPC namespace: its POSIX shared memory too (still the host's /dev/shm
        // here, before the pivot).
        mnt(
            Some("/dev/shm"),
            &shm,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
    } else {
        mnt(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            nosuid,
            Some(orbit_stage1::confine::DEV_SHM_OPTIONS),
        )?;
    }
    let mq = dev.join("mqueue");
    ensure_dir(&mq)?;
    mnt(Some("mqueue"), &mq, Some("mqueue"), nosuid, None)?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link)).map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }
    Ok(())
}

fn etc_files(pod: &Path, root: &Path) -> R {
    for f in paths::ETC_FILES {
        let src = pod.join(paths::ETC_DIR).join(f);
        if !src.exists() {
            continue;
        }
        let target = in_root(root, &format!("/etc/{f}"))?;
        ensure_file(&target)?;
        mnt(
            Some(&src.to_string_lossy()),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    Ok(())
}

/// The host's mount trees of the app's host volumes, by mount (see `mountfd`): every one
/// when the stage1 kept the host's mount namespace (the pod's may predate mounts the host
/// made since), else only the `shared` ones, which need it.
fn host_trees(
    manifest: &PodManifest,
    app: &App,
) -> Result<Vec<Option<std::os::fd::OwnedFd>>, String> {
    let mut trees = Vec::with_capacity(app.mounts.len());
    for m in &app.mounts {
        let shared = m.propagation == Propagation::Shared;
        if shared && manifest.user_namespace.is_some() {
            return Err(format!(
                "volume {}: a bidirectional volume needs a pod without a user namespace",
                m.volume
            ));
        }
        let source = manifest
            .volumes
            .iter()
            .find(|v| v.name == m.volume && v.kind == VolumeKind::Host)
            .and_then(|v| v.source.clone());
        let tree = match source {
            Some(s) if shared || crate::mountfd::host_namespace_kept() => {
                Some(crate::mountfd::clone_host_tree(&s)?)
            }
            None if shared => {
                return Err(format!(
                    "volume {}: only a host volume can be bidirectional",
                    m.volume
                ))
            }
            _ => None,
        };
        trees.push(tree);
    }
    Ok(trees)
}

fn volumes(
    pod: &Path,
    manifest: &PodManifest,
    app: &App,
    root: &Path,
    host_trees: &mut [Option<std::os::fd::OwnedFd>],
    nodev: bool,
) -> R {
    for (m, tree) in app.mounts.iter().zip(host_trees.iter_mut()) {
        let v = manifest.volume_of(m)?;
        let target = in_root(root, &m.target)?;
        let source = match v.kind {
            // Its idmapped mount, which the host's root made (see `userns`).
            _ if v.idmap && manifest.user_namespace.is_some() => {
                crate::userns::idmapped_volume(pod, &app.name, &v.name)
            }
            VolumeKind::Host => v.host_source()?,
            VolumeKind::Empty => paths::volume_dir(pod, &v.name),
            VolumeKind::Image if m.propagation != Propagation::Private => {
                return Err(format!(
                    "volume {}: an image volume neither receives nor sends mounts",
                    v.name
                ))
            }
            VolumeKind::Image => {
                ensure_dir(&target)?;
                mount_image_volume(pod, app, v, &target, nodev)?;
                continue;
            }
        };
        // The host's tree, not this namespace's path, says what the source is: it may lie
        // in a mount the host made after the pod started.
        let is_dir = match tree {
            Some(t) => nix::sys::stat::fstat(&*t)
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .map_err(|e| format!("volume {}: {e}", v.name))?,
            None => source.is_dir(),
        };
        if is_dir {
            ensure_dir(&target)?;
        } else {
            ensure_file(&target)?;
        }
        match tree.take() {
            Some(tree) => crate::mountfd::attach(tree, &target)?,
            None => mnt(
                Some(&source.to_string_lossy()),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?,
        }
        // A clone (or bind) of a shared mount is in its peer group: a peer it stays
        // (`shared`), or it becomes a slave (receiving the host's later mounts) or private.
        let flags = match m.propagation {
            Propagation::Shared => None,
            Propagation::Slave => Some(MsFlags::MS_SLAVE),
            Propagation::Private => Some(MsFlags::MS_PRIVATE),
        };
        if let Some(flags) = flags {
            mnt(None, &target, None, MsFlags::MS_REC | flags, None)?;
        }
        if v.read_only {
            make_read_only(&target, v.recursive_read_only)?;
        }
        if nodev {
            add_nodev(&target)?;
        }
    }
    Ok(())
}

/// `pivot_root(".", ".")` then detach the old root: no extra directory in the image needed.
fn pivot(root: &Path) -> R {
    nix::unistd::chdir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root {}: {e}", root.display()))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
}
