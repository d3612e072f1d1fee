//! The pod init: PID 1 of the pod (`ns`) or the pod's supervisor child (`fly`). It prepares
//! the app roots, starts the apps, copies their output to the terminal and to the per-app
//! CRI logs, reaps every child, forwards stop signals to the apps, records each app's
//! status, and exits with the pod's status once all apps have exited: the first failing
//! app's exit code, or 0. A mutable pod (`orbit app sandbox`) instead keeps running with
//! no apps and takes `add`/`start`/`stop`/`rm` requests on `control.sock`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use orbit_stage1::log::{LineWriter, Stream};
use orbit_stage1::{paths, App, AppState, AppStatus, PodManifest};

use crate::cgroup::PodCgroups;
use crate::util::{exit_of, now, read_manifest};
use crate::{app, mounts, Flavor};

extern "C" fn ignore_signal(_: libc::c_int) {}

/// One stream of an app's output being copied to its log and the terminal.
struct Output {
    app: String,
    fd: OwnedFd,
    stream: Stream,
    writer: LineWriter,
    journal_lines: crate::journal::Lines,
    echo: i32,
}

struct Running {
    app: App,
    status: AppStatus,
    pid: Option<Pid>,
    log: Option<File>,
    /// The init's end of an attachable app's stdin FIFO (read and write: the app never sees
    /// end of input while the init holds it; `stdin-close` lets go).
    stdin: Option<OwnedFd>,
    /// An attachable app's terminal (master): what arrives on the FIFO is typed into it.
    terminal: Option<OwnedFd>,
}

/// The pod as its init sees it.
struct Pod<'a> {
    flavor: Flavor,
    dir: PathBuf,
    manifest: PodManifest,
    cgroups: &'a PodCgroups,
    mask: SigSet,
    apps: Vec<Running>,
    outputs: Vec<Output>,
    input: Option<OwnedFd>,
    first_failure: Option<i32>,
    stopping: bool,
    journal: Option<crate::journal::Journal>,
}

/// The listening control socket of a mutable pod (`control.sock`), `None` for another.
pub fn control_listener(
    dir: &Path,
    manifest: &PodManifest,
) -> Result<Option<UnixListener>, String> {
    if !manifest.mutable {
        return Ok(None);
    }
    crate::util::listen_at(&dir.join(paths::CONTROL_SOCKET)).map(Some)
}

/// Runs the pod; returns its exit status. `control` is the control socket when the caller
/// bound it (see [`control_listener`]); else the init binds it itself.
pub fn main(
    flavor: Flavor,
    pod: &Path,
    manifest: &PodManifest,
    cgroups: &PodCgroups,
    debug: bool,
    mask: SigSet,
    control: Option<UnixListener>,
) -> i32 {
    match run(flavor, pod, manifest, cgroups, debug, mask, control) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stage1 {}: {e}", flavor.name());
            orbit_stage1::EXIT_STAGE1_FAILURE
        }
    }
}

fn run(
    flavor: Flavor,
    dir: &Path,
    manifest: &PodManifest,
    cgroups: &PodCgroups,
    debug: bool,
    mask: SigSet,
    control: Option<UnixListener>,
) -> Result<i32, String> {
    let t0 = std::time::Instant::now();
    // The pod's PID 1 is the host's orbit binary: keep the pod's processes from reading or
    // tracing it through /proc/1.
    crate::security::not_dumpable();
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
        // (A CNI pod's loopback was brought up by the supervisor that joined its namespace.)
        if manifest.network.mode == orbit_stage1::net_mode::NONE {
            mounts::loopback_up().map_err(|e| format!("cannot bring up lo: {e}"))?;
        }
    }
    // Not pid 1 of a pid namespace of its own (fly, or a pod sharing the host's): orphans
    // of the apps come back to the init, which reaps them; what is left when the pod
    // stops dies with the pod's cgroup, which the supervisor kills and removes.
    if flavor != Flavor::Ns || manifest.shares_host("pid") {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) has no memory effects.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    }
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    let control = match control {
        Some(c) => Some(c),
        None => control_listener(dir, manifest)?,
    };
    let _raw = manifest
        .apps
        .iter()
        .any(|a| a.interactive)
        .then(RawTerminal::enter)
        .flatten();
    let mut pod = Pod {
        flavor,
        dir: dir.to_path_buf(),
        manifest: manifest.clone(),
        cgroups,
        mask,
        apps: Vec::new(),
        outputs: Vec::new(),
        input: None,
        first_failure: None,
        stopping: false,
        journal: manifest
            .log
            .journal
            .clone()
            .and_then(|j| crate::journal::Journal::new(j, &manifest.uuid)),
    };
    for a in &manifest.apps {
        pod.add(a.clone())?;
    }
    for a in &manifest.apps {
        pod.start(&a.name);
    }
    if debug {
        eprintln!(
            "stage1 {}: apps started in {:?}",
            flavor.name(),
            t0.elapsed()
        );
    }
    if pod.first_failure.is_some() {
        pod.signal_apps(Signal::SIGTERM);
    }
    pod.event_loop(&sfd, control.as_ref())?;
    Ok(pod.first_failure.unwrap_or(0))
}

impl Pod<'_> {
    /// Mounts a new app's root and records it as created.
    fn add(&mut self, a: App) -> Result<(), String> {
        if self.apps.iter().any(|r| r.app.name == a.name) {
            return Err(format!("the pod already has an app named {}", a.name));
        }
        mounts::mount_app_root(&self.dir, &a)
            .map_err(|e| format!("app {}: cannot mount its root: {e}", a.name))?;
        let log = if self.manifest.log.file {
            File::options()
                .create(true)
                .append(true)
                .open(paths::app_log(&self.dir, &a.name))
                .ok()
        } else {
            None
        };
        let stdin = if a.stdin {
            Some(open_stdin_fifo(&paths::app_stdin(&self.dir, &a.name))?)
        } else {
            None
        };
        let status = AppStatus::created();
        let _ = status.write(&paths::app_status(&self.dir, &a.name));
        self.apps.push(Running {
            app: a,
            status,
            pid: None,
            log,
            stdin,
            terminal: None,
        });
        Ok(())
    }

    /// Starts a created (or exited) app; a failure to start is recorded as its exit.
    fn start(&mut self, name: &str) -> Option<String> {
        let Some(idx) = self.apps.iter().position(|r| r.app.name == name) else {
            return Some(format!("no app named {name}"));
        };
        if self.apps[idx].pid.is_some() {
            return Some(format!("app {name} is already running"));
        }
        let a = self.apps[idx].app.clone();
        let mut status = AppStatus::created();
        let limits = match self.manifest.user_namespace {
            // The pod cgroup's limits (set by the supervisor) bound a --private-users pod.
            Some(_) => Ok(()),
            None => self.cgroups.ready_for_start(&a, self.flavor == Flavor::Ns),
        };
        let result = limits
            .map_err(|message| app::Failure {
                code: orbit_stage1::EXIT_STAGE1_FAILURE,
                message,
            })
            .and_then(|()| {
                app::start(
                    self.flavor,
                    &self.dir,
                    &self.manifest,
                    &a,
                    self.cgroups,
                    &self.mask,
                )
            });
        let error = match result {
            Ok(started) => {
                status.state = AppState::Running;
                status.pid = Some(started.host_pid);
                status.started_at = Some(now());
                for (fd, stream, echo) in started.outputs {
                    self.outputs.push(Output {
                        app: a.name.clone(),
                        fd,
                        stream,
                        writer: LineWriter::new(stream),
                        journal_lines: Default::default(),
                        echo,
                    });
                }
                if a.stdin {
                    self.apps[idx].terminal = started.input;
                } else {
                    self.input = self.input.take().or(started.input);
                }
                self.apps[idx].pid = Some(started.pid);
                None
            }
            Err(failure) => {
                eprintln!(
                    "stage1 {}: app {}: {}",
                    self.flavor.name(),
                    a.name,
                    failure.message
                );
                status.state = AppState::Exited;
                status.exit_code = Some(failure.code);
                status.error = Some(failure.message.clone());
                status.finished_at = Some(now());
                self.first_failure.get_or_insert(failure.code);
                Some(failure.message)
            }
        };
        let _ = status.write(&paths::app_status(&self.dir, &a.name));
        self.apps[idx].status = status;
        error
    }

    fn signal_apps(&self, sig: Signal) {
        for a in &self.apps {
            if let Some(pid) = a.pid {
                let _ = kill(pid, sig);
            }
        }
    }

    fn running(&self) -> bool {
        self.apps.iter().any(|a| a.pid.is_some())
    }

    fn event_loop(&mut self, sfd: &SignalFd, control: Option<&UnixListener>) -> Result<(), String> {
        // 16 KiB a read (conmon reads 8): every byte of it is in each idle pod's memory.
        let mut buf = vec![0u8; 16 * 1024];
        // SAFETY: fd 0 is the init's stdin, open for its whole life.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        loop {
            let running = self.running();
            let waiting = control.is_some() && !self.stopping;
            if !running && !waiting && self.outputs.is_empty() {
                return Ok(());
            }
            let mut fds: Vec<PollFd> = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
            // SAFETY: the borrowed fds live in `self.outputs`, unchanged while `fds` lives.
            let borrowed: Vec<BorrowedFd> = self
                .outputs
                .iter()
                .map(|o| unsafe { BorrowedFd::borrow_raw(o.fd.as_raw_fd()) })
                .collect();
            fds.extend(
                borrowed
                    .iter()
                    .map(|fd| PollFd::new(*fd, PollFlags::POLLIN)),
            );
            let input_at = fds.len();
            if self.input.is_some() {
                fds.push(PollFd::new(stdin, PollFlags::POLLIN));
            }
            let control_at = fds.len();
            if let Some(l) = control.filter(|_| !self.stopping) {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            // Attachable apps with a terminal: their FIFO's bytes are typed into it.
            let relays_at = fds.len();
            let relays: Vec<usize> = (0..self.apps.len())
                .filter(|i| self.apps[*i].stdin.is_some() && self.apps[*i].terminal.is_some())
                .collect();
            // SAFETY: the fds live in `self.apps`, unchanged while `fds` lives.
            let relay_fds: Vec<BorrowedFd> = relays
                .iter()
                .filter_map(|i| self.apps[*i].stdin.as_ref())
                .map(|f| unsafe { BorrowedFd::borrow_raw(f.as_raw_fd()) })
                .collect();
            fds.extend(
                relay_fds
                    .iter()
                    .map(|fd| PollFd::new(*fd, PollFlags::POLLIN)),
            );
            // Once every app has exited, drain what is buffered without waiting for writers
            // that outlive their app (a pod's stray children die with the init anyway).
            let timeout = if running || waiting {
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
            if ready[0] {
                while let Ok(Some(info)) = sfd.read_signal() {
                    if Signal::try_from(info.ssi_signo as i32).ok() != Some(Signal::SIGCHLD) {
                        self.stopping = true;
                        self.signal_apps(Signal::SIGTERM);
                    }
                }
            }
            if self.input.is_some() && ready.get(input_at) == Some(&true) {
                relay_input(stdin, &mut self.input, &mut buf);
            }
            for (k, i) in relays.iter().enumerate() {
                if ready.get(relays_at + k) == Some(&true) {
                    let a = &self.apps[*i];
                    if let (Some(fifo), Some(term)) = (&a.stdin, &a.terminal) {
                        if let Ok(n) = nix::unistd::read(fifo, &mut buf) {
                            let _ = nix::unistd::write(term, &buf[..n]);
                        }
                    }
                }
            }
            self.pump(&ready[1..], running, &mut buf);
            self.reap_all();
            if let Some(l) = control {
                if ready.get(control_at) == Some(&true) {
                    if let Ok((conn, _)) = l.accept() {
                        self.serve(conn);
                    }
                }
            }
        }
    }

    /// Copies ready output to the logs and the terminal; closes finished streams.
    fn pump(&mut self, ready: &[bool], running: bool, buf: &mut [u8]) {
        let mut closed = Vec::new();
        for (i, o) in self.outputs.iter_mut().enumerate() {
            if running && !ready.get(i).copied().unwrap_or(false) {
                continue;
            }
            let log = self
                .apps
                .iter_mut()
                .find(|a| a.app.name == o.app)
                .and_then(|a| a.log.as_mut());
            match nix::unistd::read(o.fd.as_fd(), buf) {
                Ok(0) => closed.push(i),
                Ok(n) => emit(o, &buf[..n], log, self.journal.as_ref()),
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) if running => {}
                Err(_) => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            let mut o = self.outputs.remove(i);
            // The log has every byte already (a last line without a newline as `P`).
            if let Some(j) = &self.journal {
                let (app, stream) = (o.app.clone(), o.stream);
                o.journal_lines.finish(|line| j.send(&app, stream, line));
            }
        }
    }

    fn reap_all(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let (Some(pid), Some((code, signal))) = (status.pid(), exit_of(status)) else {
                continue;
            };
            let Some(a) = self.apps.iter_mut().find(|a| a.pid == Some(pid)) else {
                continue;
            };
            a.pid = None;
            a.status.state = AppState::Exited;
            a.status.pid = None;
            a.status.exit_code = Some(code);
            a.status.signal = signal;
            if signal == Some(libc::SIGKILL) && self.cgroups.oom_killed(&a.app.name) {
                a.status.reason = Some("OOMKilled".into());
            }
            a.status.finished_at = Some(now());
            let _ = a.status.write(&paths::app_status(&self.dir, &a.app.name));
            if code != 0 && !self.manifest.mutable {
                self.first_failure.get_or_insert(code);
            }
        }
    }

    /// One request on the control socket: `add|start|stop|rm NAME`; answers `ok` or
    /// `error MESSAGE`.
    fn serve(&mut self, conn: UnixStream) {
        let mut line = String::new();
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            return;
        }
        let (verb, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        let (name, extra) = rest.split_once(' ').unwrap_or((rest, ""));
        let result = match verb {
            "add" => read_manifest(&self.dir).and_then(|m| {
                let a = m
                    .apps
                    .iter()
                    .find(|a| a.name == name)
                    .cloned()
                    .ok_or_else(|| format!("pod.json has no app {name}"))?;
                // Its layers as the `app-add` entrypoint idmapped them.
                let a = match m.user_namespace {
                    Some(_) => crate::userns::idmapped_app(&self.dir, &m, &a)?.0,
                    None => a,
                };
                self.manifest = m;
                self.add(a)
            }),
            "start" => self.start(name).map_or(Ok(()), Err),
            "stop" | "kill" => match self.apps.iter().find(|a| a.app.name == name) {
                Some(Running { pid: Some(pid), .. }) => {
                    let sig = if verb == "kill" {
                        Signal::SIGKILL
                    } else {
                        Signal::SIGTERM
                    };
                    kill(*pid, sig).map_err(|e| e.to_string())
                }
                Some(_) => Ok(()),
                None => Err(format!("no app named {name}")),
            },
            "rm" => self.remove(name),
            "log-reopen" => self.reopen_log(name),
            "stdin-close" => self.close_stdin(name),
            "resize" => self.resize(name, extra),
            _ => Err(format!("unknown request '{verb}'")),
        };
        let reply = match result {
            Ok(()) => "ok\n".to_string(),
            Err(e) => format!("error {e}\n"),
        };
        let _ = (&conn).write_all(reply.as_bytes());
    }

    /// Lets go of an attachable app's input (`stdin_once`: the first attachment ended): the
    /// app reads end of input once the clients are gone; on a terminal, end of input is the
    /// EOF character.
    fn close_stdin(&mut self, name: &str) -> Result<(), String> {
        let app = self
            .apps
            .iter_mut()
            .find(|a| a.app.name == name)
            .ok_or_else(|| format!("no app named {name}"))?;
        if let Some(term) = &app.terminal {
            let _ = nix::unistd::write(term, &[4]);
        }
        app.stdin = None;
        Ok(())
    }

    /// Sets the size (`COLS ROWS`) of an attachable app's terminal.
    fn resize(&mut self, name: &str, size: &str) -> Result<(), String> {
        let app = self
            .apps
            .iter()
            .find(|a| a.app.name == name)
            .ok_or_else(|| format!("no app named {name}"))?;
        let (cols, rows) = parse_size(size)?;
        let term = app
            .terminal
            .as_ref()
            .ok_or_else(|| format!("app {name} has no terminal"))?;
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the valid winsize struct; `term` is an open pty master.
        if unsafe { libc::ioctl(term.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
            return Err(format!(
                "cannot resize: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Closes the app's log file and opens (creates) `apps/NAME/log` again: whoever moved
    /// the old file keeps everything written before this point.
    fn reopen_log(&mut self, name: &str) -> Result<(), String> {
        let path = paths::app_log(&self.dir, name);
        let app = self
            .apps
            .iter_mut()
            .find(|a| a.app.name == name)
            .ok_or_else(|| format!("no app named {name}"))?;
        if app.log.is_some() {
            app.log = Some(
                File::options()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
            );
        }
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<(), String> {
        let idx = self
            .apps
            .iter()
            .position(|a| a.app.name == name)
            .ok_or_else(|| format!("no app named {name}"))?;
        if self.apps[idx].pid.is_some() {
            return Err(format!("app {name} is running; stop it first"));
        }
        let root = paths::app_rootfs(&self.dir, name);
        let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
        if self.manifest.user_namespace.is_some() {
            // Its cgroup is the host's root's to remove (`app-rm` does).
            crate::userns::unmount_app(&self.dir, name);
        } else {
            self.cgroups.remove_app(name);
        }
        self.apps.remove(idx);
        Ok(())
    }
}

/// The `COLS ROWS` of a `resize` request.
pub(crate) fn parse_size(size: &str) -> Result<(u16, u16), String> {
    size.split_once(' ')
        .and_then(|(c, r)| Some((c.parse::<u16>().ok()?, r.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("resize needs COLS ROWS, not '{size}'"))
}

/// Makes (anew) an attachable app's stdin FIFO, which only root may write.
pub(crate) fn make_stdin_fifo(path: &std::path::Path) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    nix::unistd::mkfifo(
        path,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .map_err(|e| format!("cannot make {}: {e}", path.display()))
}

/// Makes (anew) and opens an attachable app's stdin FIFO: read-write, so opening never
/// waits and the app sees no end of input while the init holds it.
fn open_stdin_fifo(path: &std::path::Path) -> Result<OwnedFd, String> {
    make_stdin_fifo(path)?;
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))
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

fn emit(
    o: &mut Output,
    data: &[u8],
    log: Option<&mut File>,
    journal: Option<&crate::journal::Journal>,
) {
    if let Some(j) = journal {
        let (app, stream) = (o.app.clone(), o.stream);
        o.journal_lines
            .feed(data, |line| j.send(&app, stream, line));
    }
    if o.echo >= 0 {
        // SAFETY: fds 1 and 2 are the init's own stdout/stderr, open for its whole life.
        let fd = unsafe { BorrowedFd::borrow_raw(o.echo) };
        let _ = nix::unistd::write(fd, data);
    }
    if let Some(log) = log {
        let _ = o.writer.feed(data, &now(), log);
        let _ = log.flush();
    }
}

/// Maps an app's output streams: stdout echoes to fd 1, stderr to fd 2.
pub fn echo_fd(stream: Stream) -> i32 {
    match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    }
}
