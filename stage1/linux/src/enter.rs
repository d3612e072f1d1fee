//! `enter`: run a command inside a running app: its mount namespace and root, and the pod's
//! other namespaces, as the app's user, with the app's environment.

use std::ffi::CString;
use std::os::fd::AsFd;

use nix::fcntl::OFlag;
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Gid, Uid};

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
    let namespaces = [
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
            let err = become_app_user_and_exec(app, &command);
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

fn become_app_user_and_exec(app: &orbit_stage1::App, command: &[String]) -> String {
    let gids: Vec<Gid> = std::iter::once(app.user.gid)
        .chain(app.user.additional_gids.iter().copied())
        .map(Gid::from_raw)
        .collect();
    if let Err(e) = nix::unistd::setgroups(&gids)
        .and_then(|_| {
            nix::unistd::setresgid(
                Gid::from_raw(app.user.gid),
                Gid::from_raw(app.user.gid),
                Gid::from_raw(app.user.gid),
            )
        })
        .and_then(|_| {
            nix::unistd::setresuid(
                Uid::from_raw(app.user.uid),
                Uid::from_raw(app.user.uid),
                Uid::from_raw(app.user.uid),
            )
        })
    {
        return format!("cannot take the app's identity: {e}");
    }
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
        env.push(CString::new(format!("TERM={term}")).unwrap_or_default());
    }
    let path = app
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
    let candidates: Vec<String> = if command[0].contains('/') {
        vec![command[0].clone()]
    } else {
        path.split(':')
            .map(|d| format!("{d}/{}", command[0]))
            .collect()
    };
    for c in candidates {
        if std::path::Path::new(&c).is_file() {
            let Ok(cpath) = CString::new(c.clone()) else {
                continue;
            };
            let e = nix::unistd::execve(&cpath, &argv, &env).unwrap_err();
            return format!("cannot execute {c}: {e}");
        }
    }
    format!("{}: not found in the app", command[0])
}
