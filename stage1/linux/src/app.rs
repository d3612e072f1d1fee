//! Starting one app: fork, build the app's view of the world in the child (its own mount
//! namespace, root, /proc, /sys, /dev, /etc files, volumes, identity, stdio), and exec.
//! Setup failures travel back to the init over a close-on-exec pipe, so "exec path not
//! found" is reported as such, with exit status 127, instead of a silent exit.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
use nix::unistd::{fork, ForkResult, Pid};

use orbit_stage1::log::Stream;
use orbit_stage1::{App, PodManifest, EXIT_EXEC_FAILED, EXIT_STAGE1_FAILURE};

use crate::cgroup::PodCgroups;
use crate::init::echo_fd;
use crate::{mounts, security, Flavor};

/// A started app: its host pid, its output streams (fd, stream, fd to echo to) and, for an
/// interactive app, the pty master its input goes to.
pub struct Started {
    /// The pid in the pod's pid namespace (for waitpid and kill from the init).
    pub pid: Pid,
    /// The pid on the host (reported in status.json, used by `enter`).
    pub host_pid: i32,
    pub outputs: Vec<(OwnedFd, Stream, i32)>,
    pub input: Option<OwnedFd>,
}

/// The app's standard streams: pipes, or, for an interactive app, a pseudo-terminal that
/// the child allocates from its *own* /dev/pts (so `tty` and job control work inside) and
/// whose master it hands back over a socket (SCM_RIGHTS), as runc's console socket does.
enum Stdio {
    Pipes {
        out_r: OwnedFd,
        out_w: OwnedFd,
        err_r: OwnedFd,
        err_w: OwnedFd,
        /// The read end of the app's stdin FIFO (an attachable app), else /dev/null.
        input: Option<OwnedFd>,
    },
    Pty {
        parent: OwnedFd,
        child: OwnedFd,
    },
}

fn stdio(pod: &Path, app: &App) -> nix::Result<Stdio> {
    let interactive = app.interactive;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    if interactive {
        let (parent, child) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        return Ok(Stdio::Pty { parent, child });
    }
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // The init holds the FIFO open for writing, so this open does not wait for a writer.
    let input = if app.stdin {
        Some(nix::fcntl::open(
            &orbit_stage1::paths::app_stdin(pod, &app.name),
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?)
    } else {
        None
    };
    Ok(Stdio::Pipes {
        out_r,
        out_w,
        err_r,
        err_w,
        input,
    })
}

/// The size of the terminal on our stdin, if it is one.
fn terminal_size() -> Option<nix::pty::Winsize> {
    // SAFETY: winsize is plain old data; all-zero is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid, correctly sized struct.
    let r = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some(ws)
}

/// Why an app did not start.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

/// Forks and execs the app.
pub fn start(
    flavor: Flavor,
    pod: &Path,
    manifest: &PodManifest,
    app: &App,
    cgroups: &PodCgroups,
    mask: &SigSet,
) -> Result<Started, Failure> {
    let fail = |message: String| Failure {
        code: EXIT_STAGE1_FAILURE,
        message,
    };
    let io = stdio(pod, app).map_err(|e| fail(format!("cannot create the app's stdio: {e}")))?;
    let (report_r, report_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(format!("pipe: {e}")))?;
    let cgroup = cgroups.app_cgroup(&app.name).map_err(fail)?;
    // SAFETY: the init is single-threaded; the child sets up and execs or exits.
    let (forked, in_cgroup) = unsafe { crate::fork::fork_into(cgroup.as_ref().map(|c| c.as_fd())) }
        .map_err(|e| fail(format!("fork: {e}")))?;
    drop(cgroup);
    match forked {
        ForkResult::Child => {
            drop(report_r);
            // An app with a pid namespace of its own reports from inside it (the process
            // that runs the app), see `own_pid_namespace`.
            if !own_pid_namespace_wanted(flavor, app) {
                report_host_pid(&report_w);
            }
            let (code, msg) = match setup_and_exec(
                flavor,
                pod,
                manifest,
                app,
                (cgroups, in_cgroup),
                mask,
                (&io, &report_w),
            ) {
                Err(Setup::Exec(m)) => (EXIT_EXEC_FAILED, m),
                Err(Setup::Other(m)) => (EXIT_STAGE1_FAILURE, m),
            };
            let _ = nix::unistd::write(&report_w, format!("{code} {msg}").as_bytes());
            // SAFETY: _exit skips Rust/libc teardown that must not run twice in a fork child.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            let (outputs, input) = match io {
                Stdio::Pipes { out_r, err_r, .. } => (
                    vec![
                        (out_r, Stream::Stdout, echo_fd(Stream::Stdout)),
                        (err_r, Stream::Stderr, echo_fd(Stream::Stderr)),
                    ],
                    None,
                ),
                Stdio::Pty {
                    parent,
                    child: theirs,
                } => {
                    drop(theirs);
                    match receive_fd(&parent) {
                        Some(master) => {
                            let input = master.try_clone().ok();
                            (
                                vec![(master, Stream::Stdout, echo_fd(Stream::Stdout))],
                                input,
                            )
                        }
                        None => (vec![], None),
                    }
                }
            };
            let mut report = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = nix::unistd::read(&report_r, &mut buf) {
                if n == 0 {
                    break;
                }
                report.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&report).into_owned();
            let (host_pid, text) = text.split_once('\n').unwrap_or(("", &text));
            let host_pid: i32 = host_pid.parse().unwrap_or(child.as_raw());
            if !text.is_empty() {
                let _ = nix::sys::wait::waitpid(child, None);
                let (code, message) = text.split_once(' ').unwrap_or(("125", text));
                return Err(Failure {
                    code: code.parse().unwrap_or(EXIT_STAGE1_FAILURE),
                    message: message.to_string(),
                });
            }
            for (fd, _, _) in &outputs {
                let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
            }
            Ok(Started {
                pid: child,
                host_pid,
                outputs,
                input,
            })
        }
    }
}

/// Gives the app default signal dispositions and an empty mask: the init's handlers, its
/// blocked set, and the SIGPIPE that Rust's runtime ignores (ignored signals survive
/// `execve`, and an app that ignores SIGPIPE misbehaves in pipelines) must not leak into it.
pub(crate) fn reset_signals(mask: &SigSet) -> nix::Result<()> {
    for s in mask.iter().chain([nix::sys::signal::Signal::SIGPIPE]) {
        // SAFETY: restoring the default disposition is always sound.
        let _ = unsafe {
            sigaction(
                s,
                &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty()),
            )
        };
    }
    mask.thread_unblock()
}

enum Setup {
    Exec(String),
    Other(String),
}

/// Writes this process's pid as the host sees it on the report pipe: /proc is still the
/// host's procfs here, and its `self` link resolves in that procfs's pid namespace.
fn report_host_pid(report: &OwnedFd) {
    let host_pid = std::fs::read_link("/proc/self")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = nix::unistd::write(report, format!("{host_pid}\n").as_bytes());
}

fn own_pid_namespace_wanted(flavor: Flavor, app: &App) -> bool {
    flavor == Flavor::Ns && app.pid_namespace
}

/// Gives the app a pid namespace of its own (inside the pod's), whose PID 1 it becomes:
/// this process forks; the child goes on to set up and exec the app, and reports its host
/// pid (what `enter` joins and stats read); this process stays behind as the init's child,
/// passing stop signals on and the app's exit status back.
fn own_pid_namespace(report: &OwnedFd) -> Result<(), Setup> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(other("cannot create the app's pid namespace"))?;
    // SAFETY: single-threaded (a fork child of the init); both sides go on with plain code.
    match unsafe { fork() }.map_err(other("fork"))? {
        ForkResult::Child => {
            // A session of its own again, for a terminal to become its controlling one.
            let _ = nix::unistd::setsid();
            report_host_pid(report);
            Ok(())
        }
        ForkResult::Parent { child } => {
            // Only the app reports (and closes the pipe by exec'ing).
            // SAFETY: this process never returns to the caller that owns the descriptor.
            unsafe { libc::close(report.as_raw_fd()) };
            // SAFETY: _exit skips teardown that must not run in a fork child.
            unsafe { libc::_exit(relay_until_exit(child)) }
        }
    }
}

/// Passes the stop signals this process gets on to `child` and returns its exit status
/// (128+N for signal N) once it ends.
fn relay_until_exit(child: nix::unistd::Pid) -> i32 {
    use nix::sys::signal::Signal;
    use nix::sys::wait::{waitpid, WaitStatus};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    let signals = set
        .thread_block()
        .ok()
        .and_then(|()| nix::sys::signalfd::SignalFd::new(&set).ok());
    loop {
        match waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Err(nix::errno::Errno::ECHILD) => return EXIT_STAGE1_FAILURE,
            _ => {}
        }
        match &signals {
            Some(sfd) => {
                if let Ok(Some(info)) = sfd.read_signal() {
                    if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                        if sig != Signal::SIGCHLD {
                            let _ = nix::sys::signal::kill(child, sig);
                        }
                    }
                }
            }
            None => {
                let _ = waitpid(child, None);
            }
        }
    }
}

fn other<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Setup + '_ {
    move |e| Setup::Other(format!("{what}: {e}"))
}

fn setup_and_exec(
    flavor: Flavor,
    pod: &Path,
    manifest: &PodManifest,
    app: &App,
    (cgroups, in_cgroup): (&PodCgroups, bool),
    mask: &SigSet,
    (io, report): (&Stdio, &OwnedFd),
) -> Result<std::convert::Infallible, Setup> {
    reset_signals(mask).map_err(other("cannot unblock signals"))?;
    security::not_dumpable();
    nix::unistd::setsid().map_err(other("setsid"))?;
    security::oom_score_adj(app).map_err(Setup::Other)?;
    // Opened while the host's cgroup file system is in sight; joined as late as possible:
    // on cgroup v1 the move waits for the one that put the init in the pod's cgroup (an RCU
    // grace period), which the app's root set-up overlaps. In a --private-users pod the
    // supervisor delegated the app's cgroup.procs to the pod's root.
    let membership = match in_cgroup {
        true => crate::cgroup::Membership::none(),
        false => cgroups.app_membership(&app.name).map_err(Setup::Other)?,
    };
    let own_pid_namespace_wanted = own_pid_namespace_wanted(flavor, app);
    if own_pid_namespace_wanted {
        // The process that stays behind to relay for the app belongs to its cgroup too.
        join_app_cgroup(flavor, &membership)?;
        own_pid_namespace(report)?;
    }

    let root = orbit_stage1::paths::app_rootfs(pod, &app.name);
    mounts::enter_app_root(flavor, pod, manifest, app, &root).map_err(Setup::Other)?;
    orbit_stage1::confine::enter_working_directory(&app.working_directory).map_err(Setup::Other)?;

    let devnull = nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty())
        .map_err(other("/dev/null"))?;
    let (stdin, stdout, stderr) = match io {
        Stdio::Pipes {
            out_w,
            err_w,
            input,
            ..
        } => {
            let stdin = match input {
                Some(fifo) => {
                    // Blocking reads for the app: it waits for input like on any pipe.
                    nix::fcntl::fcntl(fifo, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))
                        .map_err(other("stdin"))?;
                    fifo.as_raw_fd()
                }
                None => devnull.as_raw_fd(),
            };
            (stdin, out_w.as_raw_fd(), err_w.as_raw_fd())
        }
        Stdio::Pty { child, .. } => {
            let slave = open_terminal(child)?;
            let fd = slave.as_raw_fd();
            std::mem::forget(slave);
            (fd, fd, fd)
        }
    };
    // SAFETY: dup2 onto the standard descriptors of this (about to exec) child.
    unsafe {
        libc::dup2(stdin, 0);
        libc::dup2(stdout, 1);
        libc::dup2(stderr, 2);
    }
    let prepared = prepare_exec(manifest, app)?;
    if !own_pid_namespace_wanted {
        join_app_cgroup(flavor, &membership)?;
    }
    exec(app, prepared)
}

/// Moves the calling app process into its cgroup, then (`ns`) into a cgroup namespace
/// whose root that cgroup is.
fn join_app_cgroup(flavor: Flavor, membership: &crate::cgroup::Membership) -> Result<(), Setup> {
    membership.join().map_err(Setup::Other)?;
    if flavor == Flavor::Ns {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(other("cannot create the cgroup namespace"))?;
    }
    Ok(())
}

/// In the child, inside the app's root: allocates a pty from the app's /dev/ptmx, sends the
/// master to the init, and makes the slave the controlling terminal.
fn open_terminal(sock: &OwnedFd) -> Result<OwnedFd, Setup> {
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(other("cannot open /dev/ptmx"))?;
    grantpt(&master).map_err(other("grantpt"))?;
    unlockpt(&master).map_err(other("unlockpt"))?;
    let name = ptsname_r(&master).map_err(other("ptsname"))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(other(&format!("cannot open {name}")))?;
    if let Some(ws) = terminal_size() {
        // SAFETY: TIOCSWINSZ reads the valid winsize struct.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(b"m")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(other("cannot hand the terminal to the pod init"))?;
    // SAFETY: TIOCSCTTY on the pty slave makes it this new session's controlling terminal.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(Setup::Other(format!(
            "cannot attach the terminal: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(slave)
}

/// In the init: receives the pty master the child sent (None if it failed first).
fn receive_fd(sock: &OwnedFd) -> Option<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed this descriptor in our table for us.
            return fds.first().map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    None
}

/// What `execve` needs, worked out before the app joins its cgroup (which may wait).
struct Exec {
    path: PathBuf,
    cpath: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    filter: Option<Vec<orbit_stage1::seccomp::BpfProgram>>,
}

/// Resolves `exec[0]` against the app's own PATH (not the host's), builds its argv and
/// environment and compiles its seccomp filter.
fn prepare_exec(manifest: &PodManifest, app: &App) -> Result<Exec, Setup> {
    let Some(arg0) = app.exec.first() else {
        return Err(Setup::Exec(
            "the app has nothing to execute (no exec, entrypoint or cmd)".into(),
        ));
    };
    let path = resolve(arg0, &app.env).ok_or_else(|| {
        Setup::Exec(format!(
            "{arg0}: not found in the app's root (PATH from the app's environment)"
        ))
    })?;
    let cpath = CString::new(path.as_os_str().as_encoded_bytes()).map_err(other("exec path"))?;
    let argv: Vec<CString> = app
        .exec
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(other("argv"))?;
    let first_app = manifest.apps.first().is_some_and(|a| a.name == app.name);
    crate::activation::close_unless_first(first_app);
    let envp: Vec<CString> = app
        .env
        .iter()
        .cloned()
        .chain(crate::activation::app_environment(first_app))
        .chain(crate::notify::app_environment())
        .map(|e| CString::new(e.into_bytes()))
        .collect::<Result<_, _>>()
        .map_err(other("env"))?;
    let filter = security::seccomp_filter(app).map_err(Setup::Other)?;
    Ok(Exec {
        path,
        cpath,
        argv,
        envp,
        filter,
    })
}

/// Drops to the app's identity and privileges and execs it.
fn exec(app: &App, e: Exec) -> Result<std::convert::Infallible, Setup> {
    security::confine(app, e.filter.as_deref()).map_err(Setup::Other)?;
    if app.pid_namespace {
        // Dies with the process that relays for it (a forced stop kills that one); the
        // credential change above cleared any earlier setting.
        // SAFETY: prctl(PR_SET_PDEATHSIG) has no memory effects.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    }
    let err = nix::unistd::execve(&e.cpath, &e.argv, &e.envp).unwrap_err();
    Err(Setup::Exec(format!(
        "cannot execute {}: {err}",
        e.path.display()
    )))
}

/// Resolves a command name against the app's own PATH, in the current root.
pub(crate) fn resolve(arg0: &str, env: &[String]) -> Option<PathBuf> {
    if arg0.contains('/') {
        return Some(PathBuf::from(arg0)).filter(|p| p.exists());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|d| Path::new(d).join(arg0))
        .find(|p| p.is_file())
}
