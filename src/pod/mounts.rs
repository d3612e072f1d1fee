//! Defensive unmounting before a pod directory is deleted. The built-in stage1s mount
//! only inside the pod's own mount namespace, so normally nothing is found here; an
//! external stage1 might leave mounts on the host.

use std::path::Path;

/// Unmounts (lazily) every mount at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut targets: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        let _ = nix::mount::umount2(t.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// How the host mount that holds a path propagates (`mount_namespaces(7)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOf {
    /// Where that mount is.
    pub mount_point: String,
    /// In a peer group (`shared:N`).
    pub shared: bool,
    /// Receives from a master (`master:N`).
    pub slave: bool,
}

/// The mount of this process's namespace that holds `path` (resolved, so it exists): the
/// last-mounted one at the longest mount point above it.
pub fn mount_of(path: &Path) -> std::io::Result<MountOf> {
    let path = std::fs::canonicalize(path)?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(
        mount_of_in(&info, &path.to_string_lossy()).unwrap_or(MountOf {
            mount_point: "/".into(),
            shared: false,
            slave: false,
        }),
    )
}

fn mount_of_in(info: &str, path: &str) -> Option<MountOf> {
    let mut best: Option<MountOf> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4).map(|p| unescape(p)) else {
            continue;
        };
        let above = point == "/"
            || path == point
            || path.starts_with(&format!("{}/", point.trim_end_matches('/')));
        // Later lines are mounted later: at the same point, the later one is on top.
        if !above
            || best
                .as_ref()
                .is_some_and(|b| b.mount_point.len() > point.len())
        {
            continue;
        }
        let optional = fields.iter().skip(6).take_while(|f| **f != "-");
        let (mut shared, mut slave) = (false, false);
        for f in optional {
            shared |= f.starts_with("shared:");
            slave |= f.starts_with("master:");
        }
        best = Some(MountOf {
            mount_point: point,
            shared,
            slave,
        });
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /mnt/a rw shared:5 - tmpfs tmpfs rw
31 30 0:41 / /mnt/a/b rw master:5 - tmpfs tmpfs rw
32 22 0:42 / /mnt/ab rw - tmpfs tmpfs rw
33 22 0:43 / /mnt/with\\040space rw shared:7 master:2 - tmpfs tmpfs rw
";

    #[test]
    fn the_deepest_mount_above_a_path_holds_it() {
        let m = |p| mount_of_in(INFO, p).unwrap();
        assert_eq!(m("/mnt/a/x").mount_point, "/mnt/a");
        assert!(m("/mnt/a/x").shared && !m("/mnt/a/x").slave);
        assert!(m("/mnt/a/b/c").slave && !m("/mnt/a/b/c").shared);
        assert_eq!(m("/mnt/ab/x").mount_point, "/mnt/ab");
        assert!(!m("/mnt/ab").shared && !m("/mnt/ab").slave);
        assert_eq!(m("/etc").mount_point, "/");
        let s = m("/mnt/with space/f");
        assert!(s.shared && s.slave, "{s:?}");
    }
}
