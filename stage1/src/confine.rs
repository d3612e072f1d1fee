//! An app's confinement, shared by every Linux flavor that runs apps (the `ns` stage1 and the
//! `kvm` guest agent), applied in the same order to the app itself and to every process
//! `enter` runs in it, so an entered process never has more than the app: capability
//! bounding set, identity, effective/permitted/inheritable/ambient capabilities,
//! no_new_privs, and last the seccomp filter (right before `execve`) — or first, for an app
//! without no_new_privs, which could not load it after giving up CAP_SYS_ADMIN. Also the
//! masked and read-only paths of an app's root.

use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use nix::mount::{mount, MsFlags};
use nix::unistd::{Gid, Uid};
use seccompiler::BpfProgram;

use crate::{AppUser, Isolators};

fn cap_set(names: &[String]) -> Result<CapsHashSet, String> {
    names
        .iter()
        .map(|n| Capability::from_str(n).map_err(|_| format!("unknown capability {n}")))
        .collect()
}

/// `iso`'s seccomp filter, compiled for [`confine_compiled`] (`None`: the app has none).
pub fn compile_filter(iso: &Isolators) -> Result<Option<Vec<BpfProgram>>, String> {
    iso.seccomp
        .as_ref()
        .map(crate::seccomp::compile)
        .transpose()
}

/// Drops this process to `user` with the privileges `iso` grants; the caller execs right
/// after. Without `mknod` (no device control would stop a node it makes from being opened)
/// CAP_MKNOD is never granted, unless `iso` grants every device anyway. `filter` is `iso`'s
/// seccomp filter, compiled ([`compile_filter`]; `iso.seccomp` is not looked at): compiled
/// ahead of time by a caller that must not wait here, or by the host for a process that
/// must not carry the compiler (the kvm guest agent).
pub fn confine_compiled(
    user: &AppUser,
    iso: &Isolators,
    mknod: bool,
    filter: Option<&[BpfProgram]>,
) -> Result<(), String> {
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which the app may not
    // keep: then the filter goes in first, while this process still holds it (as runc
    // does), and covers the identity and capability changes that follow.
    let filter_first = !iso.no_new_privileges;
    if let (true, Some(programs)) = (filter_first, filter) {
        crate::seccomp::apply(programs, false)?;
    }
    // Nothing can be granted beyond what this process holds (a privileged pod started from a
    // process that lacks, say, CAP_SYS_RESOURCE gets everything else).
    let held = caps::read(None, CapSet::Permitted)
        .map_err(|e| format!("cannot read capabilities: {e}"))?;
    let mut bounding: CapsHashSet = cap_set(&iso.capabilities)?
        .intersection(&held)
        .copied()
        .collect();
    if !iso.all_devices && !mknod {
        bounding.remove(&Capability::CAP_MKNOD);
    }
    let ambient: CapsHashSet = cap_set(&iso.ambient_capabilities)?
        .intersection(&held)
        .copied()
        .collect();
    for c in caps::all() {
        if !bounding.contains(&c) {
            caps::drop(None, CapSet::Bounding, c)
                .map_err(|e| format!("cannot drop {c} from the bounding set: {e}"))?;
        }
    }
    let non_root = user.uid != 0;
    if non_root && !ambient.is_empty() {
        // Keep the permitted set across setuid so the granted capabilities can be raised.
        // SAFETY: prctl(PR_SET_KEEPCAPS, 1) has no memory effects.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    }
    set_identity(user)?;
    let kept = if non_root { ambient.clone() } else { bounding };
    caps::set(None, CapSet::Effective, &kept)
        .map_err(|e| format!("cannot set effective capabilities: {e}"))?;
    caps::set(None, CapSet::Permitted, &kept)
        .map_err(|e| format!("cannot set permitted capabilities: {e}"))?;
    // Inheritable holds only what must survive exec as ambient (empty for root apps), so a
    // file with inheritable capabilities gains nothing (moby's CVE-2022-24769).
    caps::set(
        None,
        CapSet::Inheritable,
        &if non_root {
            ambient.clone()
        } else {
            CapsHashSet::new()
        },
    )
    .map_err(|e| format!("cannot set inheritable capabilities: {e}"))?;
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| format!("cannot clear ambient capabilities: {e}"))?;
    if non_root {
        for c in &ambient {
            caps::raise(None, CapSet::Ambient, *c)
                .map_err(|e| format!("cannot raise ambient {c}: {e}"))?;
        }
    }
    if iso.no_new_privileges {
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) has no memory effects.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "cannot set no_new_privs: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if let (false, Some(programs)) = (filter_first, filter) {
        crate::seccomp::apply(programs, true)?;
    }
    Ok(())
}

fn set_identity(user: &AppUser) -> Result<(), String> {
    let gid = Gid::from_raw(user.gid);
    let gids: Vec<Gid> = std::iter::once(user.gid)
        .chain(user.additional_gids.iter().copied())
        .map(Gid::from_raw)
        .collect();
    nix::unistd::setgroups(&gids).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setgid {}: {e}", user.gid))?;
    let uid = Uid::from_raw(user.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setuid {}: {e}", user.uid))
}

/// The character devices every app's /dev has (name, major, minor), whatever the flavor.
pub const DEV_NODES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];
/// The mount options of an app's /dev (a tmpfs).
pub const DEV_TMPFS_OPTIONS: &str = "mode=755,size=65536k";
/// The mount options of an app's own pseudo-terminals (/dev/pts).
pub const DEVPTS_OPTIONS: &str = "newinstance,ptmxmode=0666,mode=0620,gid=5";
/// The mount options of an app's own /dev/shm.
pub const DEV_SHM_OPTIONS: &str = "mode=1777,size=65536k";

/// Makes the app's working directory `dir` (empty: `/`) if it is missing, and enters it.
pub fn enter_working_directory(dir: &str) -> Result<(), String> {
    let dir = if dir.is_empty() { "/" } else { dir };
    if std::fs::metadata(dir).is_err() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create working directory {dir}: {e}"))?;
    }
    nix::unistd::chdir(dir).map_err(|e| format!("cannot enter working directory {dir}: {e}"))
}

/// A path inside the app root for an absolute in-app path, refusing `..` and refusing to
/// pass through symlinks (an image must not redirect a mount outside its root).
pub fn in_root(root: &Path, inside: &str) -> Result<PathBuf, String> {
    let mut p = root.to_path_buf();
    for c in Path::new(inside).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => {
                p.push(n);
                if p.symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink())
                {
                    return Err(format!(
                        "{inside}: {} is a symlink in the image; mount targets must be real paths",
                        p.display()
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "{inside}: mount targets must be absolute paths without '..'"
                ))
            }
        }
    }
    Ok(p)
}

fn mnt(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(source, target, fstype, flags, data)
        .map_err(|e| format!("mount on {}: {e}", target.display()))
}

/// Binds `source` (recursively) on `target` and makes the bind read-only with `flags`.
pub fn bind_read_only(source: &Path, target: &Path, flags: MsFlags) -> Result<(), String> {
    mnt(
        Some(source),
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    mnt(
        None,
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
        None,
    )
}

/// Hides the masked paths of `iso` in the app root `root` (an empty read-only tmpfs over
/// directories, the root's /dev/null over files) and makes the read-only ones read-only.
/// Paths missing on this kernel or in this image are skipped.
pub fn mask_paths(root: &Path, iso: &Isolators) -> Result<(), String> {
    let null = root.join("dev/null");
    for p in &iso.masked_paths {
        let target = in_root(root, p)?;
        let Ok(meta) = target.symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            mnt(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )?;
        } else {
            mnt(Some(&null), &target, None, MsFlags::MS_BIND, None)?;
        }
    }
    for p in &iso.readonly_paths {
        let target = in_root(root, p)?;
        if target.symlink_metadata().is_err() {
            continue;
        }
        bind_read_only(
            &target,
            &target,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
    }
    Ok(())
}
