//! Starting one app: fork, build the app's view of the world in the child (its own mount
//! namespace, root, /proc, /sys, /dev, /etc files, volumes, identity, stdio), and exec.
//! Setup failures travel back to the init over a close-on-exec pipe, so "exec path not
//! found" is reported as such, with exit status 127, instead of a silent exit.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
use nix::unistd::{fork, ForkResult, Gid, Pid, Uid};

use orbit_stage1::log::Stream;
use orbit_stage1::{App, PodManifest, EXIT_EXEC_FAILED, EXIT_STAGE1_FAILURE};

use crate::init::echo_fd;
use crate::{mounts, Flavor};

/// A started app: its host pid and its output streams (fd, stream, fd to echo to).
pub struct Started {
    pub pid: Pid,
    pub outputs: Vec<(OwnedFd, Stream, i32)>,
}

/// Why an app did not start.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

/// Forks and execs the app.
pub fn start(flavor: Flavor, pod: &Path, manifest: &PodManifest, app: &App, mask: &SigSet) -> Result<Started, Failure> {
    let fail = |message: String| Failure { code: EXIT_STAGE1_FAILURE, message };
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(format!("pipe: {e}")))?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(format!("pipe: {e}")))?;
    let (report_r, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(format!("pipe: {e}")))?;
    // SAFETY: the init is single-threaded; the child sets up and execs or exits.
    match unsafe { fork() }.map_err(|e| fail(format!("fork: {e}")))? {
        ForkResult::Child => {
            drop((out_r, err_r, report_r));
            let (code, msg) = match setup_and_exec(flavor, pod, manifest, app, mask, &out_w, &err_w) {
                Err(Setup::Exec(m)) => (EXIT_EXEC_FAILED, m),
                Err(Setup::Other(m)) => (EXIT_STAGE1_FAILURE, m),
            };
            let _ = nix::unistd::write(&report_w, format!("{code} {msg}").as_bytes());
            // SAFETY: _exit skips Rust/libc teardown that must not run twice in a fork child.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop((out_w, err_w, report_w));
            let mut report = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = nix::unistd::read(&report_r, &mut buf) {
                if n == 0 {
                    break;
                }
                report.extend_from_slice(&buf[..n]);
            }
            if !report.is_empty() {
                let _ = nix::sys::wait::waitpid(child, None);
                let text = String::from_utf8_lossy(&report);
                let (code, message) = text.split_once(' ').unwrap_or(("125", &text));
                return Err(Failure { code: code.parse().unwrap_or(EXIT_STAGE1_FAILURE), message: message.to_string() });
            }
            for fd in [&out_r, &err_r] {
                let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
            }
            Ok(Started {
                pid: child,
                outputs: vec![(out_r, Stream::Stdout, echo_fd(Stream::Stdout)), (err_r, Stream::Stderr, echo_fd(Stream::Stderr))],
            })
        }
    }
}

enum Setup {
    Exec(String),
    Other(String),
}

fn other<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Setup + '_ {
    move |e| Setup::Other(format!("{what}: {e}"))
}

fn setup_and_exec(
    flavor: Flavor,
    pod: &Path,
    manifest: &PodManifest,
    app: &App,
    mask: &SigSet,
    out: &OwnedFd,
    err: &OwnedFd,
) -> Result<std::convert::Infallible, Setup> {
    // Undo the init's signal setup: default handlers, nothing blocked.
    for s in mask.iter() {
        // SAFETY: restoring the default disposition is always sound.
        let _ = unsafe { sigaction(s, &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty())) };
    }
    mask.thread_unblock().map_err(other("cannot unblock signals"))?;
    nix::unistd::setsid().map_err(other("setsid"))?;

    let root = orbit_stage1::paths::app_rootfs(pod, &app.name);
    mounts::enter_app_root(flavor, pod, manifest, app, &root).map_err(|e| Setup::Other(e))?;
    let workdir = if app.working_directory.is_empty() { "/" } else { &app.working_directory };
    if std::fs::metadata(workdir).is_err() {
        std::fs::create_dir_all(workdir).map_err(other(&format!("cannot create working directory {workdir}")))?;
    }
    nix::unistd::chdir(workdir).map_err(other(&format!("cannot enter working directory {workdir}")))?;

    let gids: Vec<Gid> = std::iter::once(app.user.gid).chain(app.user.additional_gids.iter().copied()).map(Gid::from_raw).collect();
    nix::unistd::setgroups(&gids).map_err(other("setgroups"))?;
    nix::unistd::setresgid(Gid::from_raw(app.user.gid), Gid::from_raw(app.user.gid), Gid::from_raw(app.user.gid))
        .map_err(other("setgid"))?;
    nix::unistd::setresuid(Uid::from_raw(app.user.uid), Uid::from_raw(app.user.uid), Uid::from_raw(app.user.uid))
        .map_err(other("setuid"))?;

    let devnull = nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty()).map_err(other("/dev/null"))?;
    // SAFETY: dup2 onto the standard descriptors of this (about to exec) child.
    unsafe {
        libc::dup2(devnull.as_raw_fd(), 0);
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(err.as_raw_fd(), 2);
    }
    exec(app)
}

/// Resolves `exec[0]` against the app's own PATH (not the host's) and execs it.
fn exec(app: &App) -> Result<std::convert::Infallible, Setup> {
    let Some(arg0) = app.exec.first() else { return Err(Setup::Exec("the app has nothing to execute (no exec, entrypoint or cmd)".into())) };
    let path = resolve(arg0, &app.env).ok_or_else(|| Setup::Exec(format!("{arg0}: not found in the app's root (PATH from the app's environment)")))?;
    let cpath = CString::new(path.as_os_str().as_encoded_bytes()).map_err(other("exec path"))?;
    let argv: Vec<CString> = app.exec.iter().map(|a| CString::new(a.as_bytes())).collect::<Result<_, _>>().map_err(other("argv"))?;
    let envp: Vec<CString> = app.env.iter().map(|e| CString::new(e.as_bytes())).collect::<Result<_, _>>().map_err(other("env"))?;
    let e = nix::unistd::execve(&cpath, &argv, &envp).unwrap_err();
    Err(Setup::Exec(format!("cannot execute {}: {e}", path.display())))
}

fn resolve(arg0: &str, env: &[String]) -> Option<PathBuf> {
    if arg0.contains('/') {
        return Some(PathBuf::from(arg0)).filter(|p| p.exists());
    }
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':').map(|d| Path::new(d).join(arg0)).find(|p| p.is_file())
}
