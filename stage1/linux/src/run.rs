//! The `run` entrypoint's supervisor and the `stop` entrypoint.
//!
//! `run` is the process the user started (stage0 exec'd into it). It takes the pod's
//! exclusive lock, enters the pod's namespaces, forks the pod init, and waits: signals it
//! gets (Ctrl-C, SIGTERM) are forwarded to the init as SIGTERM. When the init exits, it
//! records the pod's exit status and exits with it. The init shares the lock's open file
//! description and dies with the supervisor (PR_SET_PDEATHSIG), so the lock is held exactly
//! as long as any part of the pod runs, and a killed supervisor takes the pod down with it.

use std::path::Path;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

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
    // Only a pod that has (or may get) a host volume keeps the host's namespace: its apps
    // clone their host volumes' trees there (see `mounts::host_trees`).
    let host_volumes = manifest.mutable
        || manifest
            .volumes
            .iter()
            .any(|v| v.kind == orbit_stage1::VolumeKind::Host);
    if host_volumes && manifest.user_namespace.is_none() {
        crate::mountfd::remember_host_namespace()?;
    }
    let result = run_locked(flavor, args, &pod, &manifest);
    run_exit_hook(&pod, args.debug);
    result
}

/// Runs stage0's exit hook ([`paths::ON_EXIT`]) while the pod's lock is still held: the
/// pod has exited and its status is written. Its failure is reported, not fatal: what it
/// leaves undone, `orbit gc` finishes.
pub(crate) fn run_exit_hook(pod: &Path, debug: bool) {
    let Ok(text) = std::fs::read(pod.join(paths::ON_EXIT)) else {
        return;
    };
    let argv: Vec<String> = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("stage1: ignoring a malformed {}: {e}", paths::ON_EXIT);
            return;
        }
    };
    let Some((program, rest)) = argv.split_first() else {
        return;
    };
    let started = std::time::Instant::now();
    // The supervisor's children would go into the pod's pid namespace, which died with the
    // pod's init (fork fails with ENOMEM there): the hook runs in the supervisor's own.
    if let Ok(own) = std::fs::File::open("/proc/self/ns/pid") {
        let _ = nix::sched::setns(own, CloneFlags::CLONE_NEWPID);
    }
    match std::process::Command::new(program)
        .args(rest)
        .current_dir(pod)
        .stdin(std::process::Stdio::null())
        .status()
    {
        Ok(_) if debug => eprintln!("stage1: exit hook done in {:?}", started.elapsed()),
        Ok(_) => {}
        Err(e) => eprintln!("stage1: cannot run the exit hook {program}: {e}"),
    }
}

/// In the pod's first process: joins the network namespace stage0 made for the pod
/// (network mode `cni`) and brings its loopback up, before a user namespace is made (its
/// root could not). The supervisor stays in the host's namespace, so its exit hook (the
/// CNI teardown) runs there.
fn join_pod_network(pod: &Path, manifest: &orbit_stage1::PodManifest) -> Result<(), String> {
    if manifest.network.mode != orbit_stage1::net_mode::CNI {
        return Ok(());
    }
    let path = pod.join(paths::NETNS);
    let ns = std::fs::File::open(&path).map_err(|e| {
        format!(
            "cannot open the pod's network namespace {}: {e}",
            path.display()
        )
    })?;
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot join the pod's network namespace: {e}"))?;
    crate::mounts::loopback_up().map_err(|e| format!("cannot bring up lo: {e}"))
}

fn run_locked(
    flavor: Flavor,
    args: &Args,
    pod: &Path,
    manifest: &orbit_stage1::PodManifest,
) -> Result<i32, String> {
    wait_for_systemd(flavor, args)?;
    crate::activation::accept_from_systemd();
    run_locked_rest(flavor, args, pod.to_path_buf(), manifest)
}

/// stage0 asked systemd to move this process into the pod's unit: no pod process may start
/// before the move is done.
pub(crate) fn wait_for_systemd(flavor: Flavor, args: &Args) -> Result<(), String> {
    if let Some(unit) = std::env::var_os(orbit_stage1::WAIT_CGROUP_ENV) {
        let unit = unit.to_string_lossy().into_owned();
        std::env::remove_var(orbit_stage1::WAIT_CGROUP_ENV);
        let waiting = std::time::Instant::now();
        let moved = orbit_stage1::wait_in_cgroup(
            std::process::id(),
            &unit,
            std::time::Duration::from_secs(10),
        );
        if args.debug {
            eprintln!(
                "stage1 {}: waited {:?} for systemd to move the pod into {unit}",
                flavor.name(),
                waiting.elapsed()
            );
        }
        if !moved {
            return Err(format!(
                "systemd did not move the pod into {unit} within 10 s"
            ));
        }
    }
    Ok(())
}

fn run_locked_rest(
    flavor: Flavor,
    args: &Args,
    pod: std::path::PathBuf,
    manifest: &orbit_stage1::PodManifest,
) -> Result<i32, String> {
    let relay = crate::notify::setup(&pod)?;
    write_file(&pod, paths::STARTED, &now());
    let cgroups = PodCgroups::create(&pod, &args.uuid, manifest)?;
    let limits: Vec<&orbit_stage1::Resources> = manifest
        .apps
        .iter()
        .map(|a| &a.isolators.resources)
        .collect();
    if let Err(e) = cgroups.set_pod_limits(&limits) {
        cgroups.remove();
        return Err(e);
    }

    if let (Flavor::Ns, Some(ns)) = (flavor, manifest.user_namespace) {
        let result = run_in_user_namespace(&pod, manifest, &ns, &cgroups, args, relay.as_ref());
        cgroups.remove();
        return result;
    }
    cgroups.prepare_apps(&manifest.apps, flavor == Flavor::Ns);
    let mut flags = CloneFlags::CLONE_NEWNS;
    if flavor == Flavor::Ns {
        flags |= CloneFlags::CLONE_NEWUTS;
        if !manifest.shares_host("pid") {
            flags |= CloneFlags::CLONE_NEWPID;
        }
        if !manifest.shares_host("ipc") {
            flags |= CloneFlags::CLONE_NEWIPC;
        }
        if manifest.network.mode == orbit_stage1::net_mode::NONE {
            flags |= CloneFlags::CLONE_NEWNET;
        }
    }
    let supervisor = nix::unistd::getpid();
    // Until the init runs, an error leaves nothing of the pod's cgroups behind.
    let forked = new_namespaces(flags)
        .and_then(|()| cgroups.init_cgroup())
        .and_then(|cgroup| Ok((cgroup, supervisor_mask()?)))
        .and_then(|(cgroup, mask)| {
            // SAFETY: stage1 is single-threaded here; the child only calls async-signal-safe
            // functions until it runs the pod init, which is ordinary Rust in a fresh process.
            let fork = unsafe { crate::fork::fork_into(cgroup.as_ref().map(|c| c.as_fd())) }
                .map_err(|e| format!("cannot fork the pod init: {e}"))?;
            Ok((mask, fork))
        });
    let (mask, (forked, in_cgroup)) = match forked {
        Ok(f) => f,
        Err(e) => {
            cgroups.remove();
            return Err(e);
        }
    };
    match forked {
        ForkResult::Child => {
            die_with_parent();
            // In a new pid namespace the parent is outside it and getppid() is 0; otherwise
            // a changed parent means the supervisor died before PDEATHSIG was armed.
            let ppid = nix::unistd::getppid();
            if ppid.as_raw() != 0 && ppid != supervisor {
                std::process::exit(orbit_stage1::EXIT_STAGE1_FAILURE);
            }
            if flavor == Flavor::Ns {
                if let Err(e) = join_pod_network(&pod, manifest) {
                    eprintln!("stage1 ns: {e}");
                    std::process::exit(orbit_stage1::EXIT_STAGE1_FAILURE);
                }
            }
            std::process::exit(init::main(
                flavor, &pod, manifest, &cgroups, args.debug, mask, None,
            ));
        }
        ForkResult::Parent { child } => {
            let joined = match in_cgroup {
                true => Ok(()),
                false => cgroups.join_pod(child.as_raw()),
            };
            let result = match joined {
                Ok(()) => supervise(&pod, child, child, mask, relay.as_ref()),
                Err(e) => {
                    let _ = kill(child, Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    Err(e)
                }
            };
            cgroups.remove();
            result
        }
    }
}

/// Creates namespaces `flags` for this process and keeps its mounts from propagating back:
/// every mount becomes a slave of the host's (as runc does by default), so what the host
/// mounts below a shared mount still reaches volumes that ask for it (`Propagation::Slave`).
pub(crate) fn new_namespaces(flags: CloneFlags) -> Result<(), String> {
    unshare(flags).map_err(|e| format!("cannot create the pod's namespaces: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make the pod's mounts slaves of the host's: {e}"))
}

/// The signals the supervisor handles, blocked so they are read from a signalfd.
fn supervisor_mask() -> Result<SigSet, String> {
    let mut mask = SigSet::empty();
    for s in FORWARDED.iter().chain([&Signal::SIGCHLD]) {
        mask.add(*s);
    }
    mask.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    Ok(mask)
}

/// Makes the calling process die with its parent (a killed `orbit run` takes the pod down).
fn die_with_parent() {
    // SAFETY: prctl with PR_SET_PDEATHSIG and a valid signal number has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
}

/// A `--private-users` pod (see `userns.rs`): the supervisor keeps the host user namespace;
/// a child creates the user namespace, the supervisor writes its id maps and mounts the
/// idmapped layers, then the child creates the pod's other namespaces and forks the init.
fn run_in_user_namespace(
    pod: &Path,
    manifest: &orbit_stage1::PodManifest,
    ns: &orbit_stage1::UserNamespace,
    cgroups: &PodCgroups,
    args: &Args,
    relay: Option<&crate::notify::Relay>,
) -> Result<i32, String> {
    new_namespaces(CloneFlags::CLONE_NEWNS)?;
    let (inner, idmaps) = crate::userns::idmapped_manifest(pod, manifest)?;
    // Bound here, by the host's root: the pod's root may not write the pod directory.
    let control = crate::init::control_listener(pod, manifest)?;
    let mask = supervisor_mask()?;
    let supervisor = nix::unistd::getpid();
    let (ready_r, ready_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: single-threaded; the child creates namespaces and forks the init.
    match unsafe { fork() }.map_err(|e| format!("cannot fork: {e}"))? {
        ForkResult::Child => {
            drop((ready_r, go_w));
            die_with_parent();
            let code = match user_namespace_child(
                supervisor, &inner, &ready_w, &go_r, cgroups, args.debug, mask, control,
            ) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("stage1 ns: {e}");
                    orbit_stage1::EXIT_STAGE1_FAILURE
                }
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            drop((ready_w, go_r));
            let setup = (|| {
                let mut b = [0u8; 1];
                if nix::unistd::read(&ready_r, &mut b).map_err(|e| e.to_string())? != 1 {
                    return Err("the pod's user namespace could not be created".to_string());
                }
                crate::userns::write_maps(child.as_raw(), ns)?;
                crate::userns::idmapped_mounts(pod, &idmaps, child.as_raw())?;
                cgroups.join_pod(child.as_raw())?;
                cgroups.restrict_pod_devices(child.as_raw(), &manifest.apps)?;
                // Each app gets its own cgroup with its limits and device rules, set here by
                // the host's root and delegated so the app can join it from inside.
                for a in &manifest.apps {
                    crate::userns::app_cgroup(cgroups, a, ns)?;
                }
                nix::unistd::write(&go_w, b"g").map_err(|e| e.to_string())?;
                let mut pid = [0u8; 16];
                let n = nix::unistd::read(&ready_r, &mut pid).map_err(|e| e.to_string())?;
                String::from_utf8_lossy(&pid[..n])
                    .trim()
                    .parse::<i32>()
                    .map_err(|_| "the pod init did not start".to_string())
            })();
            match setup {
                Ok(init) => supervise(pod, child, Pid::from_raw(init), mask, relay),
                Err(e) => {
                    let _ = kill(child, Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    Err(e)
                }
            }
        }
    }
}

/// In the child: user namespace, wait for the maps, become its root, the pod's other
/// namespaces, then fork the init and wait for it.
#[allow(clippy::too_many_arguments)]
fn user_namespace_child(
    supervisor: Pid,
    manifest: &orbit_stage1::PodManifest,
    ready: &OwnedFd,
    go: &OwnedFd,
    cgroups: &PodCgroups,
    debug: bool,
    mask: SigSet,
    control: Option<std::os::unix::net::UnixListener>,
) -> Result<i32, String> {
    let pod = std::env::current_dir().map_err(|e| format!("cannot find the pod directory: {e}"))?;
    join_pod_network(&pod, manifest)?;
    unshare(CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("cannot create the user namespace: {e}"))?;
    nix::unistd::write(ready, b"r").map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    if nix::unistd::read(go, &mut b).map_err(|e| e.to_string())? != 1 {
        return Err("the supervisor did not finish the user namespace setup".into());
    }
    let root_uid = nix::unistd::Uid::from_raw(0);
    let root_gid = nix::unistd::Gid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .map_err(|e| format!("setgid 0 in the user namespace: {e}"))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
        .map_err(|e| format!("setuid 0 in the user namespace: {e}"))?;
    // Changing credentials clears the parent-death signal: arm it again, and give up if the
    // supervisor is already gone.
    die_with_parent();
    if nix::unistd::getppid() != supervisor {
        return Err("the supervisor exited during setup".into());
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    // A CNI pod's network namespace was joined by the supervisor, before this user
    // namespace existed.
    if manifest.network.mode == orbit_stage1::net_mode::NONE {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    new_namespaces(flags)?;
    // SAFETY: single-threaded; the child runs the pod init.
    match unsafe { fork() }.map_err(|e| format!("cannot fork the pod init: {e}"))? {
        ForkResult::Child => {
            die_with_parent();
            std::process::exit(init::main(
                Flavor::Ns,
                &pod,
                manifest,
                cgroups,
                debug,
                mask,
                control,
            ));
        }
        ForkResult::Parent { child } => {
            nix::unistd::write(ready, child.to_string().as_bytes()).map_err(|e| e.to_string())?;
            loop {
                match waitpid(child, None) {
                    Ok(status) => {
                        if let Some((code, _)) = exit_of(status) {
                            return Ok(code);
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(format!("waitpid: {e}")),
                }
            }
        }
    }
}

/// The pod's lock: the descriptor stage0 handed over (`--lock-fd`), or a fresh one.
/// Either way it is close-on-exec, so apps never hold it.
pub(crate) fn lock_pod(pod: &Path, args: &Args) -> Result<OwnedFd, String> {
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

/// Waits for `child` (the pod init, or the process that forked it) and forwards stop
/// signals to the pod's `init`; records the pod's exit.
fn supervise(
    pod: &Path,
    child: Pid,
    init: Pid,
    mask: SigSet,
    relay: Option<&crate::notify::Relay>,
) -> Result<i32, String> {
    write_file(pod, paths::PID, &init.to_string());
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    let code = loop {
        if let Some(code) = reap(child)? {
            break code;
        }
        let mut fds = vec![nix::poll::PollFd::new(
            sfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if let Some(r) = relay {
            fds.push(nix::poll::PollFd::new(r.fd(), nix::poll::PollFlags::POLLIN));
        }
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        drop(fds);
        if let Some(r) = relay {
            r.relay(pod);
        }
        while let Ok(Some(info)) = sfd.read_signal() {
            let sig = Signal::try_from(info.ssi_signo as i32).ok();
            if sig.is_some_and(|s| FORWARDED.contains(&s)) {
                let _ = kill(init, Signal::SIGTERM);
            }
        }
    };
    write_file(pod, paths::EXIT, &code.to_string());
    write_file(pod, paths::FINISHED, &now());
    Ok(code)
}

/// Reaps finished children — the pod's `init` (its exit code is returned) and any other
/// (stage0 may leave a short-lived helper behind when it execs into the stage1).
fn reap(init: Pid) -> Result<Option<i32>, String> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(status) if status.pid() == Some(init) => {
                return Ok(exit_of(status).map(|(code, _)| code))
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::ECHILD) => return Ok(Some(orbit_stage1::EXIT_STAGE1_FAILURE)),
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    }
}

/// `gc`: removes the cgroups a killed supervisor left behind.
pub fn gc(args: &Args) -> Result<i32, String> {
    let pod = std::env::current_dir().map_err(|e| format!("cannot find the pod directory: {e}"))?;
    if let Some(cgroups) = PodCgroups::load(&pod, &args.uuid) {
        cgroups.remove();
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
