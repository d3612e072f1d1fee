//! Devices: the allow-list of an app's cgroup and the device nodes made in its /dev.
//!
//! Apps may create device nodes (CAP_MKNOD) but open only the harmless ones — null, zero,
//! full, random, urandom, tty, console, ptmx and the pod's own pseudo-terminals — and the
//! host devices the app asked for (`devices`, each with its `rwm` permissions), never
//! another host disk; a privileged app (`allDevices`) may open every one and sees the host's
//! nodes. One allow-list ([`ALLOWED`] and the app's devices, as `devices.allow` lines)
//! serves both cgroup versions: the v1 `devices` controller takes the lines as they are; on
//! a pure cgroup2 host, which has no such controller, the lines become a BPF device program
//! attached to the app's cgroup ([`restrict_cgroup2`], see `devbpf`).
//!
//! Device nodes the app makes are also refused where it should not need them: the app's
//! root and volumes are mounted `nodev` (see `mounts`), so only the pod's /dev (a tmpfs the
//! stage1 fills) holds nodes that open — unless the app was given every device or a device
//! outside /dev. Where neither cgroup version can restrict devices (a host with neither the
//! v1 controller nor a pure cgroup2 mount), apps lose CAP_MKNOD instead (see
//! `security::confine`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use orbit_stage1::{App, Device};

use crate::devbpf::Rule;

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

/// Whether a device cgroup restricts what apps may open: the v1 devices controller is
/// mounted on the host, or the host is pure cgroup2, where every app's cgroup gets a BPF
/// device program ([`restrict_cgroup2`]). Decided once, in the host's view (see
/// `crate::main`): an app's own view after its pivot has no cgroup file system.
pub fn enforced() -> bool {
    static ENFORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENFORCED.get_or_init(|| devices_dir("self").is_some() || crate::cgroup2::unified())
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

/// The allow-list of `apps`: [`ALLOWED`] and each app's devices, as `devices.allow` lines;
/// `None` when one of them may use every device (nothing is restricted).
fn allow_list<'a>(
    apps: impl IntoIterator<Item = &'a App> + Clone,
) -> Result<Option<Vec<String>>, String> {
    if apps.clone().into_iter().any(|a| a.isolators.all_devices) {
        return Ok(None);
    }
    let mut rules: Vec<String> = ALLOWED.iter().map(|r| r.to_string()).collect();
    for d in apps.into_iter().flat_map(|a| &a.devices) {
        rules.push(rule(d)?);
    }
    Ok(Some(rules))
}

/// Restricts the v1 devices cgroup directory `dir` to [`ALLOWED`] and the devices of
/// `apps`; left open when one of them may use every device.
pub fn restrict_dir<'a>(
    dir: &Path,
    apps: impl IntoIterator<Item = &'a App> + Clone,
) -> Result<(), String> {
    let Some(rules) = allow_list(apps)? else {
        return Ok(());
    };
    let write = |file: &str, rule: &str| {
        let p = dir.join(file);
        std::fs::write(&p, rule)
            .map_err(|e| format!("cannot write '{rule}' to {}: {e}", p.display()))
    };
    write("devices.deny", "a")?;
    for rule in &rules {
        write("devices.allow", rule)?;
    }
    Ok(())
}

/// The allow-list of `apps` as the rules of a BPF device program (`None`: unrestricted).
fn bpf_rules<'a>(
    apps: impl IntoIterator<Item = &'a App> + Clone,
) -> Result<Option<Vec<Rule>>, String> {
    let Some(lines) = allow_list(apps)? else {
        return Ok(None);
    };
    lines
        .iter()
        .map(|r| r.parse::<Rule>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()
        .map(Some)
}

/// Restricts cgroup2 directory `dir` (and the cgroups below it) to [`ALLOWED`] and the
/// devices of `apps` with a BPF device program; left open when one of them may use every
/// device. Called for each app's new cgroup, before the app joins it.
pub fn restrict_cgroup2<'a>(
    dir: &Path,
    apps: impl IntoIterator<Item = &'a App> + Clone,
) -> Result<(), String> {
    match bpf_rules(apps)? {
        Some(rules) => crate::devbpf::attach(dir, &rules).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// Whether `app`'s root keeps device nodes working (is not mounted `nodev`, see `mounts`):
/// for an app given every device (privileged: nodes anywhere are its own), and for an app
/// given a device at a path outside /dev, where the stage1 makes that node in its root.
pub fn root_has_nodes(app: &App) -> bool {
    app.isolators.all_devices
        || app
            .devices
            .iter()
            .any(|d| !Path::new(&d.path).starts_with("/dev"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devbpf::{Kind, MKNOD, READ, WRITE};

    fn device(path: &str, kind: char, major: u64, minor: u64, permissions: &str) -> Device {
        Device {
            path: path.into(),
            host_path: "/dev/null".into(),
            kind,
            major,
            minor,
            file_mode: 0o666,
            permissions: permissions.into(),
        }
    }

    #[test]
    fn one_allow_list_for_v1_and_v2() {
        let mut a = App::default();
        a.devices.push(device("/dev/fu", 'c', 10, 229, "r"));
        let mut b = App::default();
        b.devices.push(device("/dev/sda", 'b', 8, 0, "rw"));
        let lines = allow_list([&a, &b]).unwrap().unwrap();
        assert_eq!(lines.len(), ALLOWED.len() + 2);
        assert_eq!(lines[..ALLOWED.len()], ALLOWED.map(String::from));
        assert_eq!(lines[ALLOWED.len()..], ["c 10:229 r", "b 8:0 rw"]);
        let rules = bpf_rules([&a, &b]).unwrap().unwrap();
        assert_eq!(rules.len(), lines.len());
        // docker's list: any node may be made, ptys by any minor.
        assert_eq!(
            (
                rules[0].kind,
                rules[0].major,
                rules[0].minor,
                rules[0].access
            ),
            (Kind::Char, None, None, MKNOD)
        );
        assert_eq!(rules[1].kind, Kind::Block);
        assert_eq!(
            (rules[10].major, rules[10].minor, rules[10].access),
            (Some(136), None, READ | WRITE | MKNOD)
        );
        let fu = rules[ALLOWED.len()];
        assert_eq!(
            (fu.kind, fu.major, fu.minor, fu.access),
            (Kind::Char, Some(10), Some(229), READ)
        );
        let sda = rules[ALLOWED.len() + 1];
        assert_eq!((sda.kind, sda.access), (Kind::Block, READ | WRITE));
    }

    #[test]
    fn a_device_the_program_cannot_hold_is_refused() {
        let mut a = App::default();
        a.devices.push(device("/dev/x", 'c', 1, 1, "rx"));
        assert!(bpf_rules([&a]).unwrap_err().contains("rwm"));
        let mut a = App::default();
        a.devices.push(device("/dev/x", 'c', 1 << 32, 1, "r"));
        let e = bpf_rules([&a]).unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn roots_keep_device_nodes_only_where_the_stage1_makes_them() {
        let mut a = App::default();
        assert!(!root_has_nodes(&a));
        a.devices.push(device("/dev/fu", 'c', 10, 229, "r"));
        a.devices.push(device("/dev/sub/lc", 'c', 10, 237, "rw"));
        assert!(!root_has_nodes(&a));
        a.devices.push(device("/devices/x", 'c', 1, 3, "rw"));
        assert!(root_has_nodes(&a));
        let mut p = App::default();
        p.isolators.all_devices = true;
        assert!(root_has_nodes(&p));
    }
}
