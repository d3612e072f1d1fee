//! `enter`: run a command inside a running app: its mount namespace and root, and the pod's
//! other namespaces, as the app's user, with the app's environment.

use std::ffi::CString;
use std::os::fd::AsFd;

use nix::fcntl::OFlag;
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::SigSet;
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

use orbit_stage1::{paths, AppStatus};

use crate::util::{exit_of, read_manifest};
use crate::Args;

/// Enters the app named by `--app` (or the only app) and runs `-- CMD` (default `/bin/sh`).
pub fn enter(args: &Args) -> Result<i32, String> {
    let pod = std::env::current_dir().map_err(|e| format!("cannot find the pod directory: {e}"))?;
    let manifest = read_manifest(&pod)?;
    let app = match &args.app {
        Some(name) => manifest
            .apps
            .iter()
            .find(|a| &a.name == name)
            .ok_or_else(|| format!("the pod has no app '{name}'"))?,
        None if manifest.apps.len() == 1 => &manifest.apps[0],
        None => {
            return Err(format!(
                "the pod has several apps ({}); pick one with --app",
                manifest
                    .apps
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    };
    let status = AppStatus::read(&paths::app_status(&pod, &app.name))
        .map_err(|e| format!("app {} has no status: {e}", app.name))?;
    let pid = status
        .pid
        .filter(|_| status.state == orbit_stage1::AppState::Running)
        .ok_or_else(|| format!("app {} is not running", app.name))?;
    let ns = |kind: &str| {
        nix::fcntl::open(
            format!("/proc/{pid}/ns/{kind}").as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot open the app's {kind} namespace: {e}"))
    };
    let root = nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open the app's root: {e}"))?;
    crate::security::not_dumpable();
    join_cgroups_of(pid)?;
    // The user namespace first: the others belong to it in a --private-users pod.
    let namespaces = [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let own = |kind: &str| std::fs::read_link(format!("/proc/self/ns/{kind}")).ok();
    for (kind, flag) in namespaces {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok();
        if theirs.is_some() && theirs != own(kind) {
            setns(ns(kind)?.as_fd(), flag)
                .map_err(|e| format!("cannot join the app's {kind} namespace: {e}"))?;
        }
    }
    nix::unistd::fchdir(&root).map_err(|e| format!("fchdir: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    let workdir = if app.working_directory.is_empty() {
        "/"
    } else {
        app.working_directory.as_str()
    };
    let _ = nix::unistd::chdir(workdir);
    let command = if args.command.is_empty() {
        vec!["/bin/sh".to_string()]
    } else {
        args.command.clone()
    };
    // SAFETY: single-threaded; the child only execs or exits.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            // As this child sees it: 0 when `enter` is outside the pod's pid namespace.
            let parent = nix::unistd::getppid();
            let err = become_app_user_and_exec(app, &command, parent);
            eprintln!("orbit enter: {err}");
            // SAFETY: leave the fork child without running the parent's teardown.
            unsafe { libc::_exit(orbit_stage1::EXIT_EXEC_FAILED) }
        }
        ForkResult::Parent { child } => {
            let status = waitpid(child, None).map_err(|e| format!("waitpid: {e}"))?;
            Ok(exit_of(status).map_or(orbit_stage1::EXIT_STAGE1_FAILURE, |(c, _)| c))
        }
    }
}

fn become_app_user_and_exec(
    app: &orbit_stage1::App,
    command: &[String],
    parent: nix::unistd::Pid,
) -> String {
    if let Err(e) = crate::app::reset_signals(&SigSet::empty()) {
        return format!("cannot reset signals: {e}");
    }
    take_terminal();
    // Exactly the app's confinement: identity, capabilities, no_new_privs, seccomp.
    let filter = match crate::security::seccomp_filter(app) {
        Ok(filter) => filter,
        Err(e) => return e,
    };
    if let Err(e) = crate::security::confine(app, filter.as_deref()) {
        return e;
    }
    // Dies with `enter` (credential changes above cleared any earlier setting): a CRI exec
    // whose client went away is ended by killing `enter`'s process group, which a command
    // on a terminal of its own (a session apart) is not in.
    // SAFETY: prctl(PR_SET_PDEATHSIG) has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if nix::unistd::getppid() != parent {
        return "orbit enter went away".into();
    }
    let Some(path) = crate::app::resolve(&command[0], &app.env) else {
        return format!("{}: not found in the app", command[0]);
    };
    let argv: Vec<CString> = command
        .iter()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    let mut env: Vec<CString> = app
        .env
        .iter()
        .filter_map(|e| CString::new(e.as_bytes()).ok())
        .collect();
    if let Ok(term) = std::env::var("TERM") {
        env.extend(CString::new(format!("TERM={term}")).ok());
    }
    let Ok(cpath) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return format!("{}: bad path", path.display());
    };
    let e = nix::unistd::execve(&cpath, &argv, &env).unwrap_err();
    format!("cannot execute {}: {e}", path.display())
}

/// A terminal on stdin that is nobody's controlling terminal (one the CRI streaming server
/// allocated for `Exec` with a tty) becomes the command's: a session of its own, so job
/// control and ^C reach the command and not `enter`. A terminal that already controls a
/// session — the user's own, for `orbit enter` from a shell — is left as it is.
fn take_terminal() {
    // SAFETY: isatty and tcgetsid only inspect descriptor 0.
    let free_terminal = unsafe { libc::isatty(0) == 1 && libc::tcgetsid(0) < 0 };
    if free_terminal && nix::unistd::setsid().is_ok() {
        // SAFETY: TIOCSCTTY on descriptor 0, a terminal, in this new session.
        unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    }
}

/// Moves this process into the cgroups of `pid` (every hierarchy), before joining its
/// mount namespace: an entered process is accounted and limited like the app.
fn join_cgroups_of(pid: i32) -> Result<(), String> {
    let me = std::process::id().to_string();
    for (_, dir) in crate::cgroupfs::dirs_of(&pid.to_string())? {
        let procs = format!("{dir}/cgroup.procs");
        std::fs::write(&procs, &me)
            .map_err(|e| format!("cannot join the app's cgroup {procs}: {e}"))?;
    }
    Ok(())
}
