//! fork(2) straight into a cgroup: cgroup v2's `CLONE_INTO_CGROUP` (clone3, Linux 5.7).
//!
//! Moving a process by writing its pid to `cgroup.procs` takes the kernel's threadgroup lock
//! for writing, which waits for an RCU grace period (several milliseconds, the largest
//! single cost of a pod's start). A child cloned into its cgroup never moves.
//!
//! By hand: neither nix nor rustix wraps clone3, and libc's `clone_args` is not defined on
//! every architecture; the structure is the kernel's ABI.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid};

/// The kernel's `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C, align(8))]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (include/uapi/linux/sched.h).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks; with `cgroup` (an open cgroup2 directory) the child starts in that cgroup.
/// Returns whether it did: `false` without `cgroup`, or on a kernel without
/// `CLONE_INTO_CGROUP` (a plain fork then; the caller moves the child).
///
/// # Safety
/// As for `fork(2)`: the caller is single-threaded, and the child only runs code that is
/// safe after a fork. Like glibc's fork, minus its atfork handlers, which a single-threaded
/// Rust program does not register.
pub unsafe fn fork_into(cgroup: Option<BorrowedFd>) -> nix::Result<(ForkResult, bool)> {
    if let Some(dir) = cgroup {
        let mut args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM copies the address space like fork; `args` is a
        // valid clone_args of the size passed.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match ret {
            0 => return Ok((ForkResult::Child, true)),
            pid if pid > 0 => {
                let child = Pid::from_raw(pid as i32);
                return Ok((ForkResult::Parent { child }, true));
            }
            _ => match Errno::last() {
                // No clone3 (< 5.3), a smaller clone_args (< 5.7), or no CLONE_INTO_CGROUP.
                Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL => {}
                e => return Err(e),
            },
        }
    }
    // SAFETY: the caller's contract.
    unsafe { nix::unistd::fork() }.map(|f| (f, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup2 mount to make a cgroup in: the host's (v2-only) or this machine's hybrid
    /// `unified` one.
    fn cgroup2_mount() -> Option<std::path::PathBuf> {
        ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| {
                nix::sys::statfs::statfs(p.as_path())
                    .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            })
    }

    #[test]
    fn the_child_starts_in_the_cgroup_and_the_parent_stays() {
        use std::os::fd::AsFd;
        let mount = cgroup2_mount().expect("a cgroup2 mount");
        let dir = mount.join(format!("orbit-fork-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let relative = format!("/{}", dir.strip_prefix(&mount).unwrap().display());
        let fd = std::fs::File::open(&dir).unwrap();
        let own_before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        // SAFETY: the child only reads a file and exits.
        let (forked, placed) = unsafe { fork_into(Some(fd.as_fd())) }.unwrap();
        match forked {
            ForkResult::Child => {
                let ours = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
                let inside = ours.lines().any(|l| l == format!("0::{relative}"));
                // SAFETY: leave the fork child without the test harness's teardown.
                unsafe { libc::_exit(if inside { 0 } else { 1 }) }
            }
            ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                let _ = std::fs::remove_dir(&dir);
                assert!(placed, "this kernel has CLONE_INTO_CGROUP");
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
                assert_eq!(
                    std::fs::read_to_string("/proc/self/cgroup").unwrap(),
                    own_before
                );
            }
        }
    }
}
