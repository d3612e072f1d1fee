//! Ending a command and everything it started, by session (a command started with `setsid`
//! is the leader of one; a shell with job control gives each job a process group of its own
//! in it): every member is killed until none is left — zombies included, since `pgrep` still
//! lists one until its parent reaps it. Used by the CRI server on the host and by the kvm
//! guest agent in the VM.

use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Kills every process group of session `sid` until none is left (zombies count: they are
/// in /proc until reaped), for `within` at most; whether they are gone.
pub fn end_session(sid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let groups = groups_of_session(sid);
        if groups.is_empty() {
            return true;
        }
        for g in groups {
            let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The process groups of session `sid`, read from /proc.
pub fn groups_of_session(sid: i32) -> Vec<i32> {
    let mut groups: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| session_and_group(&stat))
        .filter(|(s, _)| *s == sid)
        .map(|(_, g)| g)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// (session, process group) from a /proc/PID/stat line: after the command's `)`, the
/// fields are state, ppid, pgrp, session.
fn session_and_group(stat: &str) -> Option<(i32, i32)> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(2);
    let group = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some((session, group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_session_and_group() {
        let stat = "4242 (a (tricky) name) S 1 4240 4200 34816 4240 4194560 0";
        assert_eq!(session_and_group(stat), Some((4200, 4240)));
        assert_eq!(session_and_group("garbage"), None);
    }
}
