//! The default seccomp allow-list and its compilation to BPF (with `seccompiler`, the
//! maintained filter compiler behind Firecracker — no hand-assembled BPF).
//!
//! The list follows the common container default (moby's profile) for x86_64: everything a
//! normal program needs, and not kexec, module loading, mount/umount/pivot_root, unshare and
//! setns, keyctl/add_key/request_key, bpf, perf_event_open, userfaultfd, reboot, swapon/off,
//! acct, settimeofday/clock_settime, sethostname/setdomainname, open_by_handle_at, iopl/ioperm,
//! syslog, quotactl, kcmp, process_vm_readv/writev, NUMA policy calls, fanotify_init, io_uring
//! and the new mount API. `clone` is allowed only without namespace flags; `clone3` fails with
//! ENOSYS so libc falls back to `clone`, whose flags the filter can see.

/// A compiled filter (one BPF program), as [`compile`] returns them.
pub use seccompiler::BpfProgram;
use std::collections::HashMap;

use crate::Seccomp;

/// Syscalls allowed by default (x86_64 names).
pub const DEFAULT_ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chroot",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "membarrier",
    "memfd_create",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "modify_ldt",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "personality",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_tid_address",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socket",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
];

/// Namespace flags `clone` may not use (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET).
const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// The seccompiler JSON for a filter.
fn filter_json(s: &Seccomp) -> String {
    let mut rules: Vec<serde_json::Value> = s
        .allow
        .iter()
        .filter(|n| n.as_str() != "clone" && n.as_str() != "clone3")
        .map(|n| serde_json::json!({"syscall": n}))
        .collect();
    rules.push(serde_json::json!({
        "syscall": "clone",
        "args": [{"index": 0, "type": "qword", "op": {"masked_eq": CLONE_NAMESPACE_FLAGS}, "val": 0}],
    }));
    let filter = serde_json::json!({
        "app": {"mismatch_action": {"errno": s.errno}, "match_action": "allow", "filter": rules},
        "clone3": {"mismatch_action": "allow", "match_action": {"errno": 38}, "filter": [{"syscall": "clone3"}]},
    });
    filter.to_string()
}

/// Compiles a filter to BPF programs, in the order they must be loaded; errors name the
/// unknown syscall. The kernel keeps, among equal actions, the one of the most recently
/// loaded filter: `clone3`'s ENOSYS filter goes last so it beats the allow-list's EPERM
/// (libc falls back to `clone` only on ENOSYS).
pub fn compile(s: &Seccomp) -> Result<Vec<seccompiler::BpfProgram>, String> {
    let json = filter_json(s);
    let mut programs: HashMap<String, seccompiler::BpfProgram> =
        seccompiler::compile_from_json(json.as_bytes(), seccompiler::TargetArch::x86_64)
            .map_err(|e| format!("seccomp: {e}"))?;
    Ok(["app", "clone3"]
        .iter()
        .filter_map(|k| programs.remove(*k))
        .collect())
}

/// Compiled programs as plain numbers, one per instruction (code, jump-if-true,
/// jump-if-false, operand, high to low bits): how a filter compiled on the host travels to
/// the kvm guest agent, which does not carry the compiler.
pub fn to_words(programs: &[seccompiler::BpfProgram]) -> Vec<Vec<u64>> {
    programs
        .iter()
        .map(|p| {
            p.iter()
                .map(|i| {
                    (u64::from(i.code) << 48)
                        | (u64::from(i.jt) << 40)
                        | (u64::from(i.jf) << 32)
                        | u64::from(i.k)
                })
                .collect()
        })
        .collect()
}

/// [`to_words`]' inverse.
pub fn from_words(words: &[Vec<u64>]) -> Vec<seccompiler::BpfProgram> {
    words
        .iter()
        .map(|p| {
            p.iter()
                .map(|w| seccompiler::sock_filter {
                    code: (w >> 48) as u16,
                    jt: (w >> 40) as u8,
                    jf: (w >> 32) as u8,
                    k: *w as u32,
                })
                .collect()
        })
        .collect()
}

/// Loads a compiled filter into the calling thread. With `no_new_privs` the filter is
/// loaded the usual way (seccompiler, which sets no_new_privs itself); without it — a
/// privileged app that keeps CAP_SYS_ADMIN — it is loaded with a raw `seccomp(2)` call,
/// because seccompiler would set no_new_privs regardless and break the app's setuid binaries.
pub fn apply(programs: &[seccompiler::BpfProgram], no_new_privs: bool) -> Result<(), String> {
    for p in programs {
        if no_new_privs {
            seccompiler::apply_filter(p)
                .map_err(|e| format!("cannot load the seccomp filter: {e}"))?;
        } else {
            load_without_no_new_privs(p)?;
        }
    }
    Ok(())
}

fn load_without_no_new_privs(program: &[seccompiler::sock_filter]) -> Result<(), String> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| "seccomp filter too long".to_string())?,
        // seccompiler's sock_filter is declared #[repr(C)] with the kernel's layout, the same
        // as libc's.
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(format!(
            "cannot load the seccomp filter: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_list_compiles_and_a_bad_name_is_named() {
        let ok = Seccomp {
            allow: DEFAULT_ALLOWED.iter().map(|s| s.to_string()).collect(),
            errno: 1,
        };
        assert_eq!(compile(&ok).unwrap().len(), 2);
        let bad = Seccomp {
            allow: vec!["read".into(), "no_such_call".into()],
            errno: 1,
        };
        assert!(compile(&bad).unwrap_err().contains("no_such_call"));
        let programs = compile(&ok).unwrap();
        assert_eq!(from_words(&to_words(&programs)), programs);
        for dangerous in [
            "mount",
            "kexec_load",
            "init_module",
            "bpf",
            "keyctl",
            "unshare",
            "setns",
            "reboot",
            "perf_event_open",
            "userfaultfd",
        ] {
            assert!(
                !DEFAULT_ALLOWED.contains(&dangerous),
                "{dangerous} is allowed"
            );
        }
    }
}
