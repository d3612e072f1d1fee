//! The `run` entrypoint's supervisor and the `stop` entrypoint.
//!
//! `run` is the process the user started (stage0 exec'd into it). It takes the pod's
//! exclusive lock, enters the pod's namespaces, forks the pod init, and waits: signals it
//! gets (Ctrl-C, SIGTERM) are forwarded to the init as SIGTERM. When the init exits, it
//! records the pod's exit status and exits with it. The init shares the lock's open file
//! description and dies with the supervisor (PR_SET_PDEATHSIG), so the lock is held exactly
//! as long as any part of the pod runs, and a killed supervisor takes the pod down with it.

use std::path::Path;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use orbit_stage1::paths;

use crate::cgroup::PodCgroups;
use crate::util::{exit_of, now, read_manifest, write_file};
use crate::{init, Args, Flavor};

/// The signals the supervisor forwards to the pod.
const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// `run`: runs the pod to completion; returns its exit status.
pub fn run(flavor: Flavor, args: &Args) -> Result<i32, String> {
    let pod = std::env::current_dir().map_err(|e| format!("cannot find the pod directory: {e}"))?;
    let manifest = read_manifest(&pod)?;
    let _lock = lock_pod(&pod, args)?;
    write_file(&pod, paths::STARTED, &now());
    let cgroups = PodCgroups::create(&pod, &args.uuid)?;
    let limits: Vec<&orbit_stage1::Resources> = manifest
        .apps
        .iter()
        .map(|a| &a.isolators.resources)
        .collect();
    cgroups.set_pod_limits(&limits)?;

    let mut flags = CloneFlags::CLONE_NEWNS;
    if flavor == Flavor::Ns {
        flags |= CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
        if manifest.network.mode != "host" {
            flags |= CloneFlags::CLONE_NEWNET;
        }
    }
    unshare(flags).map_err(|e| format!("cannot create the pod's namespaces: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make the pod's mounts private: {e}"))?;

    let mut mask = SigSet::empty();
    for s in FORWARDED.iter().chain([&Signal::SIGCHLD]) {
        mask.add(*s);
    }
    mask.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    let supervisor = nix::unistd::getpid();
    // SAFETY: stage1 is single-threaded here; the child only calls async-signal-safe
    // functions until it runs the pod init, which is ordinary Rust in a fresh process.
    match unsafe { fork() }.map_err(|e| format!("cannot fork the pod init: {e}"))? {
        ForkResult::Child => {
            // Die with the supervisor: a killed `orbit run` takes the whole pod down.
            // SAFETY: prctl with PR_SET_PDEATHSIG and a valid signal number has no memory effects.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
            // In a new pid namespace the parent is outside it and getppid() is 0; otherwise
            // a changed parent means the supervisor died before PDEATHSIG was armed.
            let ppid = nix::unistd::getppid();
            if ppid.as_raw() != 0 && ppid != supervisor {
                std::process::exit(orbit_stage1::EXIT_STAGE1_FAILURE);
            }
            std::process::exit(init::main(
                flavor, &pod, &manifest, &cgroups, args.debug, mask,
            ));
        }
        ForkResult::Parent { child } => {
            let joined = cgroups.join_pod(child.as_raw());
            let result = match joined {
                Ok(()) => supervise(&pod, child, mask),
                Err(e) => {
                    let _ = kill(child, Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    Err(e)
                }
            };
            let apps: Vec<String> = manifest.apps.iter().map(|a| a.name.clone()).collect();
            cgroups.remove(&apps);
            result
        }
    }
}

/// The pod's lock: the descriptor stage0 handed over (`--lock-fd`), or a fresh one.
/// Either way it is close-on-exec, so apps never hold it.
fn lock_pod(pod: &Path, args: &Args) -> Result<OwnedFd, String> {
    let fd = match args.lock_fd {
        Some(n) => {
            // SAFETY: stage0 passed this descriptor for us to own; nothing else in this
            // process uses it.
            let fd = unsafe { OwnedFd::from_raw_fd(n) };
            nix::fcntl::fcntl(
                &fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(|e| format!("--lock-fd={n} is not an open descriptor: {e}"))?;
            fd
        }
        None => nix::fcntl::open(
            pod,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot open the pod directory: {e}"))?,
    };
    // Re-locking through the same open file description succeeds; another holder fails.
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "pod {} is already running (its lock is held): {e}",
            args.uuid
        ));
    }
    Ok(fd)
}

fn supervise(pod: &Path, init: Pid, mask: SigSet) -> Result<i32, String> {
    write_file(pod, paths::PID, &init.to_string());
    let sfd =
        SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(|e| format!("signalfd: {e}"))?;
    let code = loop {
        if let Some(code) = reap(init)? {
            break code;
        }
        let Some(info) = sfd.read_signal().map_err(|e| format!("signalfd: {e}"))? else {
            continue;
        };
        let sig = Signal::try_from(info.ssi_signo as i32).ok();
        if sig.is_some_and(|s| FORWARDED.contains(&s)) {
            let _ = kill(init, Signal::SIGTERM);
        }
    };
    write_file(pod, paths::EXIT, &code.to_string());
    write_file(pod, paths::FINISHED, &now());
    Ok(code)
}

fn reap(init: Pid) -> Result<Option<i32>, String> {
    match waitpid(init, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => Ok(None),
        Ok(status) => Ok(exit_of(status).map(|(code, _)| code)),
        Err(nix::errno::Errno::ECHILD) => Ok(Some(orbit_stage1::EXIT_STAGE1_FAILURE)),
        Err(e) => Err(format!("waitpid: {e}")),
    }
}

/// `gc`: removes the cgroups a killed supervisor left behind.
pub fn gc(args: &Args) -> Result<i32, String> {
    let pod = std::env::current_dir().map_err(|e| format!("cannot find the pod directory: {e}"))?;
    if let (Some(cgroups), Ok(manifest)) = (PodCgroups::load(&pod, &args.uuid), read_manifest(&pod))
    {
        let apps: Vec<String> = manifest.apps.iter().map(|a| a.name.clone()).collect();
        cgroups.remove(&apps);
    }
    Ok(0)
}

/// `stop`: SIGTERM to the pod's init (it forwards to the apps), or SIGKILL with `--force`
/// (the whole pid namespace dies at once).
pub fn stop(args: &Args) -> Result<i32, String> {
    let pod = std::env::current_dir().map_err(|e| format!("cannot find the pod directory: {e}"))?;
    let pid = std::fs::read_to_string(pod.join(paths::PID))
        .map_err(|e| format!("the pod has no pid file: {e}"))?;
    let pid: i32 = pid
        .trim()
        .parse()
        .map_err(|_| "malformed pid file".to_string())?;
    let sig = if args.force {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(0),
        Err(e) => Err(format!("cannot signal the pod (pid {pid}): {e}")),
    }
}
