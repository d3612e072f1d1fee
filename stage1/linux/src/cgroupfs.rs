//! What cgroup v1 and v2 have in common here: where a process's cgroups are on this host
//! (`/proc/PID/cgroup` joined with the cgroup mounts of `/proc/self/mountinfo`: v1
//! hierarchies by their controllers, cgroup2 for `0::`), and removing a cgroup tree.

use std::path::Path;

/// The cgroup directories of process `pid` ("self" for the caller): (controllers, directory)
/// for each of its hierarchies that is mounted here.
pub fn dirs_of(pid: &str) -> Result<Vec<(String, String)>, String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("cannot read /proc/{pid}/cgroup: {e}"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read mountinfo: {e}"))?;
    Ok(cgroups
        .lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            let point = mount_of(&mounts, controllers)?;
            Some((
                controllers.to_string(),
                format!("{point}{}", path.trim_end_matches('/')),
            ))
        })
        .collect())
}

/// The mount point of the cgroup hierarchy with these controllers ("" for cgroup2).
pub fn mount_of(mountinfo: &str, controllers: &str) -> Option<String> {
    let wanted: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut post = post.split(' ');
        let fstype = post.next()?;
        let opts: Vec<&str> = post.nth(1)?.split(',').collect();
        let point = pre.split(' ').nth(4)?;
        let matches = match fstype {
            "cgroup2" => wanted.is_empty(),
            "cgroup" => !wanted.is_empty() && wanted.iter().all(|w| opts.contains(w)),
            _ => false,
        };
        matches.then(|| point.to_string())
    })
}

/// Kills and removes cgroup directory `dir`'s subtree, deepest first, sparing cgroup `keep`
/// (and its ancestors: the caller's own cgroup). `kill` ends the processes of a cgroup that
/// will not go; killed processes leave their cgroup only once the kernel has finished them,
/// so each removal is retried for a bounded while instead of leaking the cgroup.
pub fn remove_tree(dir: &Path, keep: &Path, kill: fn(&Path)) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path(), keep, kill);
            }
        }
    }
    if keep.starts_with(dir) {
        return;
    }
    // An empty cgroup (the usual case: the pod's processes are gone) goes at the first try.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() == std::io::ErrorKind::NotFound || std::time::Instant::now() >= deadline {
            return;
        }
        kill(dir);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// SIGKILLs every process listed in cgroup directory `dir`'s `cgroup.procs`.
pub fn kill_listed(dir: &Path) {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hierarchy_of_a_controller_is_found_by_its_mount_options() {
        let info =
            "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n\
                    31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mount_of(info, "cpuacct"),
            Some("/sys/fs/cgroup/cpu,cpuacct".to_string())
        );
        assert_eq!(
            mount_of(info, "memory"),
            Some("/sys/fs/cgroup/memory".to_string())
        );
        assert_eq!(mount_of(info, "pids"), None);
    }
}
