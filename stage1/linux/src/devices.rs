//! Devices: the allow-list of an app's cgroup (cgroup v1 `devices` controller) and the
//! device nodes made in its /dev.
//!
//! Apps may create device nodes (CAP_MKNOD) but open only the harmless ones — null, zero,
//! full, random, urandom, tty, console, ptmx and the pod's own pseudo-terminals — and the
//! host devices the app asked for (`devices`, each with its `rwm` permissions), never
//! another host disk; a privileged app (`allDevices`) may open every one and sees the host's
//! nodes. On a pure cgroup2 host this needs a BPF device program, which orbit does not load
//! yet: there apps lose CAP_MKNOD instead (see `security::confine`), so they can open only
//! the nodes the stage1 made (the process-level defences apply too: no CAP_SYS_RAWIO,
//! read-only /sys); an explicit device's `rw` permissions are then not enforced.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use orbit_stage1::{App, Device};

/// The rules written after `a` is denied (docker's default list).
const ALLOWED: [&str; 11] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// The v1 devices cgroup directory of process `pid`, if the devices controller is mounted.
fn devices_dir(pid: &str) -> Option<String> {
    let dirs = crate::cgroupfs::dirs_of(pid).ok()?;
    dirs.into_iter()
        .find(|(ctrl, _)| ctrl.split(',').any(|c| c == "devices"))
        .map(|(_, dir)| dir)
}

/// Whether a device cgroup restricts what apps may open (the v1 devices controller is
/// mounted on the host). Decided once, in the host's view (see `crate::main`): an app's
/// own view after its pivot has no cgroup file system.
pub fn enforced() -> bool {
    static ENFORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENFORCED.get_or_init(|| devices_dir("self").is_some())
}

/// Restricts the devices cgroup of process `pid` ("self" for the caller) to what `apps`
/// may use. A host without the v1 devices controller is left as it is.
pub fn restrict<'a>(
    pid: &str,
    apps: impl IntoIterator<Item = &'a App> + Clone,
) -> Result<(), String> {
    match devices_dir(pid) {
        Some(dir) => restrict_dir(Path::new(&dir), apps),
        None => Ok(()),
    }
}

/// The rule allowing `d` as it asks: `c 10:229 rw`.
fn rule(d: &Device) -> Result<String, String> {
    let ok_kind = matches!(d.kind, 'c' | 'b');
    let ok_perms =
        !d.permissions.is_empty() && d.permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
    if !ok_kind || !ok_perms {
        return Err(format!(
            "device {}: kind must be c or b and permissions a non-empty subset of rwm (got {} '{}')",
            d.path, d.kind, d.permissions
        ));
    }
    Ok(format!(
        "{} {}:{} {}",
        d.kind, d.major, d.minor, d.permissions
    ))
}

/// Restricts the v1 devices cgroup directory `dir` to [`ALLOWED`] and the devices of
/// `apps`; left open when one of them may use every device.
pub fn restrict_dir<'a>(
    dir: &Path,
    apps: impl IntoIterator<Item = &'a App> + Clone,
) -> Result<(), String> {
    if apps.clone().into_iter().any(|a| a.isolators.all_devices) {
        return Ok(());
    }
    let write = |file: &str, rule: &str| {
        let p = dir.join(file);
        std::fs::write(&p, rule)
            .map_err(|e| format!("cannot write '{rule}' to {}: {e}", p.display()))
    };
    write("devices.deny", "a")?;
    for rule in ALLOWED {
        write("devices.allow", rule)?;
    }
    for d in apps.into_iter().flat_map(|a| &a.devices) {
        write("devices.allow", &rule(d)?)?;
    }
    Ok(())
}

/// Makes character device `major:minor` at `p`, readable and writable by everyone (the
/// pod's harmless /dev nodes).
pub fn make_node(p: &Path, major: u64, minor: u64) -> Result<(), String> {
    make(p, SFlag::S_IFCHR, major, minor, 0o666)
}

fn make(p: &Path, kind: SFlag, major: u64, minor: u64, mode: u32) -> Result<(), String> {
    mknod(
        p,
        kind,
        Mode::from_bits_truncate(mode),
        makedev(major, minor),
    )
    .map_err(|e| format!("mknod {}: {e}", p.display()))?;
    // mknod's mode went through the umask.
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}

/// Makes the app's `devices` below `root` (its /dev already set up), replacing what is at
/// each path; in a user namespace, which cannot make nodes, binds the host's node instead.
/// A privileged app (`allDevices`) also gets every device node of the host's /dev that its
/// /dev lacks.
pub fn make_app_devices(root: &Path, app: &App, userns: bool) -> Result<(), String> {
    let mut wanted = app.devices.clone();
    if app.isolators.all_devices {
        wanted.extend(
            orbit_stage1::devices::devices_below(Path::new("/dev"), "/dev", "rwm")
                .map_err(|e| format!("cannot list the host's /dev: {e}"))?,
        );
    }
    for d in &wanted {
        let explicit = app.devices.contains(d);
        let target = match crate::mounts::in_root(root, &d.path) {
            Ok(t) => t,
            // A host node where the pod has its own link (/dev/ptmx, /dev/fd…).
            Err(_) if !explicit => continue,
            Err(e) => return Err(e),
        };
        if target.symlink_metadata().is_ok() {
            if !explicit {
                continue;
            }
            std::fs::remove_file(&target)
                .map_err(|e| format!("cannot replace {}: {e}", target.display()))?;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        if userns {
            crate::mounts::bind_file(&d.host_path, &target)?;
            continue;
        }
        let kind = if d.kind == 'b' {
            SFlag::S_IFBLK
        } else {
            SFlag::S_IFCHR
        };
        make(&target, kind, d.major, d.minor, d.file_mode)?;
    }
    Ok(())
}
