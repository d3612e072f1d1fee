//! Where a process's cgroups are on this host: `/proc/PID/cgroup` joined with the cgroup
//! mounts of `/proc/self/mountinfo` (v1 hierarchies by their controllers, cgroup2 for `0::`).

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
fn mount_of(mountinfo: &str, controllers: &str) -> Option<String> {
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
