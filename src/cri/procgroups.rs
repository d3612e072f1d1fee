//! Ending an exec as a whole: every process group it runs in is killed, and the answer
//! waits until no member of them is left — a zombie the container's init has yet to reap
//! included, since `pgrep` in the container still lists one. The kubelet's exec probes rely
//! on a timed-out probe leaving nothing behind.
//!
//! Process groups rather than a cgroup per exec: `orbit enter` starts the command in the
//! group the CRI server made for it, and everything the command starts stays in it unless
//! it asks for a group or session of its own (a shell without job control — a probe's
//! `sh -c` — does not). A group works the same on cgroup v1, v2 and the hybrid layout and in
//! every flavor, needs nothing created inside the container's cgroup (on v2 a cgroup below
//! the app's would break the no-internal-processes rule once controllers are delegated), and
//! kill(-pgid, 0) sees zombies, where a cgroup's `populated` flag drops as soon as the
//! processes exit — before they are reaped and gone from the container's /proc.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How long a killed exec's processes may take to be reaped by their new parent (the
/// container's init, which reaps at once) before the exec is answered anyway.
pub const GONE_WITHIN: Duration = Duration::from_secs(10);

/// Sends SIGKILL to every process of each group.
pub fn kill(groups: &[Pid]) {
    for g in groups {
        let _ = killpg(*g, Signal::SIGKILL);
    }
}

/// Waits until no group of `groups` has a member, alive or zombie (kill(-pgid, 0) answers
/// ESRCH), for `within` at most; whether they are gone. Call it once the caller's own child
/// in a group is reaped: an unreaped child is a member too.
pub fn wait_gone(groups: &[Pid], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if groups.iter().all(|g| killpg(*g, None) == Err(Errno::ESRCH)) {
            return true;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "orbit cri: processes of a killed exec (groups {groups:?}) are still there after {within:?}"
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kills every process group of session `sid` — a terminal exec's: the command made a
/// session of its own, and a shell with job control gives each job a group of its own —
/// until none is left (zombies count: they are in /proc until reaped), for `within` at
/// most; whether they are gone.
pub fn end_session(sid: Pid, within: Duration) -> bool {
    let gone = orbit_stage1::procs::end_session(sid.as_raw(), within);
    if !gone {
        eprintln!(
            "orbit cri: processes of a killed exec (session {sid}) are still there after {within:?}"
        );
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group whose members are killed is gone once they are reaped — not before.
    /// (`end_session` is proven by the CRI streaming tests: its orphans need a reaper, the
    /// container's init.)
    #[test]
    fn a_killed_group_is_waited_for_until_reaped() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .process_group(0)
            .spawn()
            .unwrap();
        let group = Pid::from_raw(child.id() as i32);
        let mine = nix::unistd::getsid(None).unwrap().as_raw();
        let groups_of_session = orbit_stage1::procs::groups_of_session;
        assert!(groups_of_session(mine).contains(&group.as_raw()));
        kill(&[group]);
        // Dead but unreaped: still a member.
        assert!(!wait_gone(&[group], Duration::from_millis(50)));
        child.wait().unwrap();
        assert!(wait_gone(&[group], Duration::from_secs(10)));
        assert!(!groups_of_session(mine).contains(&group.as_raw()));
    }
}
