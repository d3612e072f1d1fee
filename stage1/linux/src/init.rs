//! The pod init: PID 1 of the pod (`ns`) or the pod's supervisor child (`fly`). It prepares
//! the app roots, starts every app, copies their output to the terminal and to the per-app
//! CRI logs, reaps every child, forwards stop signals to the apps, records each app's
//! status, and exits with the pod's status once all apps have exited: the first failing
//! app's exit code, or 0.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use orbit_stage1::log::{LineWriter, Stream};
use orbit_stage1::{paths, App, AppState, AppStatus, PodManifest};

use crate::cgroup::PodCgroups;
use crate::util::{exit_of, now};
use crate::{app, mounts, Flavor};

extern "C" fn ignore_signal(_: libc::c_int) {}

/// One stream of an app's output being copied to its log and the terminal.
struct Output {
    app: usize,
    fd: OwnedFd,
    writer: LineWriter,
    echo: i32,
}

struct Running {
    app: App,
    status: AppStatus,
    pid: Option<Pid>,
    log: Option<File>,
}

/// Runs the pod; returns its exit status.
pub fn main(
    flavor: Flavor,
    pod: &Path,
    manifest: &PodManifest,
    cgroups: &PodCgroups,
    debug: bool,
    mask: SigSet,
) -> i32 {
    match run(flavor, pod, manifest, cgroups, debug, mask) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stage1 {}: {e}", flavor.name());
            orbit_stage1::EXIT_STAGE1_FAILURE
        }
    }
}

fn run(
    flavor: Flavor,
    pod: &Path,
    manifest: &PodManifest,
    cgroups: &PodCgroups,
    debug: bool,
    mask: SigSet,
) -> Result<i32, String> {
    let t0 = std::time::Instant::now();
    // A pid-namespace init only receives signals it has a handler for: install no-op
    // handlers; the signals stay blocked and are read from a signalfd.
    let handler = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in mask.iter() {
        // SAFETY: the handler is an empty extern "C" fn, trivially async-signal-safe.
        unsafe { sigaction(s, &handler) }.map_err(|e| format!("sigaction: {e}"))?;
    }
    if flavor == Flavor::Ns {
        nix::unistd::sethostname(&manifest.hostname)
            .map_err(|e| format!("cannot set the hostname: {e}"))?;
        if manifest.network.mode != "host" {
            mounts::loopback_up().map_err(|e| format!("cannot bring up lo: {e}"))?;
        }
    } else {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) has no memory effects.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    }
    for a in &manifest.apps {
        mounts::mount_app_root(pod, a)
            .map_err(|e| format!("app {}: cannot mount its root: {e}", a.name))?;
    }
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;

    let mut apps: Vec<Running> = Vec::new();
    let mut outputs: Vec<Output> = Vec::new();
    let mut input: Option<OwnedFd> = None;
    let _raw = manifest
        .apps
        .iter()
        .any(|a| a.interactive)
        .then(RawTerminal::enter)
        .flatten();
    let mut first_failure: Option<i32> = None;
    for a in &manifest.apps {
        let log = File::options()
            .create(true)
            .append(true)
            .open(paths::app_log(pod, &a.name))
            .ok();
        let idx = apps.len();
        let mut status = AppStatus::created();
        match app::start(flavor, pod, manifest, a, cgroups, &mask) {
            Ok(started) => {
                status.state = AppState::Running;
                status.pid = Some(started.pid.as_raw());
                status.started_at = Some(now());
                for (fd, stream, echo) in started.outputs {
                    outputs.push(Output {
                        app: idx,
                        fd,
                        writer: LineWriter::new(stream),
                        echo,
                    });
                }
                input = input.or(started.input);
                let _ = status.write(&paths::app_status(pod, &a.name));
                apps.push(Running {
                    app: a.clone(),
                    status,
                    pid: Some(started.pid),
                    log,
                });
            }
            Err(failure) => {
                eprintln!(
                    "stage1 {}: app {}: {}",
                    flavor.name(),
                    a.name,
                    failure.message
                );
                status.state = AppState::Exited;
                status.exit_code = Some(failure.code);
                status.error = Some(failure.message);
                status.finished_at = Some(now());
                let _ = status.write(&paths::app_status(pod, &a.name));
                first_failure.get_or_insert(failure.code);
                apps.push(Running {
                    app: a.clone(),
                    status,
                    pid: None,
                    log,
                });
            }
        }
    }
    if debug {
        eprintln!(
            "stage1 {}: apps started in {:?}",
            flavor.name(),
            t0.elapsed()
        );
    }
    let stopping = first_failure.is_some();
    if stopping {
        signal_apps(&apps, Signal::SIGTERM);
    }
    event_loop(
        pod,
        &mut apps,
        &mut outputs,
        input,
        &sfd,
        &mut first_failure,
    )?;
    Ok(first_failure.unwrap_or(0))
}

fn signal_apps(apps: &[Running], sig: Signal) {
    for a in apps {
        if let Some(pid) = a.pid {
            let _ = kill(pid, sig);
        }
    }
}

fn event_loop(
    pod: &Path,
    apps: &mut [Running],
    outputs: &mut Vec<Output>,
    mut input: Option<OwnedFd>,
    sfd: &SignalFd,
    first_failure: &mut Option<i32>,
) -> Result<(), String> {
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: fd 0 is the init's stdin, open for its whole life.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    loop {
        let running = apps.iter().any(|a| a.pid.is_some());
        if !running && outputs.is_empty() {
            return Ok(());
        }
        let mut fds: Vec<PollFd> = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        // SAFETY: the borrowed fds live in `outputs`, which is not changed while `fds` lives.
        let borrowed: Vec<BorrowedFd> = outputs
            .iter()
            .map(|o| unsafe { BorrowedFd::borrow_raw(o.fd.as_raw_fd()) })
            .collect();
        fds.extend(
            borrowed
                .iter()
                .map(|fd| PollFd::new(*fd, PollFlags::POLLIN)),
        );
        if input.is_some() {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
        // Once every app has exited, drain what is buffered without waiting for writers that
        // outlive their app (a pod's stray children die with the init anyway).
        let timeout = if running {
            PollTimeout::NONE
        } else {
            PollTimeout::ZERO
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if input.is_some() && ready.get(outputs.len() + 1) == Some(&true) {
            relay_input(stdin, &mut input, &mut buf);
        }
        if ready[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                let sig = Signal::try_from(info.ssi_signo as i32).ok();
                if sig != Some(Signal::SIGCHLD) {
                    signal_apps(apps, Signal::SIGTERM);
                }
            }
        }
        let mut closed = Vec::new();
        for (i, o) in outputs.iter_mut().enumerate() {
            if !running || ready[i + 1] {
                match nix::unistd::read(o.fd.as_fd(), &mut buf) {
                    Ok(0) => closed.push(i),
                    Ok(n) => emit(o, &buf[..n], apps),
                    Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {
                        if !running {
                            closed.push(i);
                        }
                    }
                    Err(_) => closed.push(i),
                }
            }
        }
        for i in closed.into_iter().rev() {
            let mut o = outputs.remove(i);
            if let Some(log) = apps[o.app].log.as_mut() {
                let _ = o.writer.flush_partial(&now(), log);
            }
        }
        reap_all(pod, apps, first_failure);
    }
}

/// Copies the user's keystrokes to the interactive app's terminal; stops at end of input.
fn relay_input(stdin: BorrowedFd, input: &mut Option<OwnedFd>, buf: &mut [u8]) {
    let Some(master) = input.as_ref() else { return };
    match nix::unistd::read(stdin, buf) {
        Ok(0) | Err(_) => *input = None,
        Ok(n) => {
            let _ = nix::unistd::write(master, &buf[..n]);
        }
    }
}

/// The user's terminal in raw mode while an interactive app runs (keys go to the app's own
/// terminal, which does the echoing and line editing); restored on drop.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        // SAFETY: fd 0 is open for the init's whole life.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let saved = nix::sys::termios::tcgetattr(stdin).ok()?;
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(stdin, nix::sys::termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: as above.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let _ =
            nix::sys::termios::tcsetattr(stdin, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

fn emit(o: &mut Output, data: &[u8], apps: &mut [Running]) {
    if o.echo >= 0 {
        // SAFETY: fds 1 and 2 are the init's own stdout/stderr, open for its whole life.
        let fd = unsafe { BorrowedFd::borrow_raw(o.echo) };
        let _ = nix::unistd::write(fd, data);
    }
    if let Some(log) = apps[o.app].log.as_mut() {
        let _ = o.writer.feed(data, &now(), log);
        let _ = log.flush();
    }
}

fn reap_all(pod: &Path, apps: &mut [Running], first_failure: &mut Option<i32>) {
    loop {
        let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(s) => s,
        };
        let (Some(pid), Some((code, signal))) = (status.pid(), exit_of(status)) else {
            continue;
        };
        let Some(a) = apps.iter_mut().find(|a| a.pid == Some(pid)) else {
            continue;
        };
        a.pid = None;
        a.status.state = AppState::Exited;
        a.status.exit_code = Some(code);
        a.status.signal = signal;
        a.status.finished_at = Some(now());
        let _ = a.status.write(&paths::app_status(pod, &a.app.name));
        if code != 0 {
            first_failure.get_or_insert(code);
        }
    }
}

/// Maps an app's output streams: stdout echoes to fd 1, stderr to fd 2.
pub fn echo_fd(stream: Stream) -> i32 {
    match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    }
}
