//! The apps in the guest: their roots (kernel filesystems, /etc files, volumes, read-only
//! root), a memory cgroup each, spawning with the app's identity, output streaming, reaping
//! (PID 1 reaps every orphan too), `exec` requests, and the input and terminal of an
//! attachable app or exec.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::mount::{mount, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use orbit_stage1::agent::{AgentConfig, GuestApp, GuestUsage, ToHost, STDERR, STDOUT};

use crate::Port;

enum Kind {
    App {
        name: String,
        cgroup: PathBuf,
        readers: Vec<JoinHandle<()>>,
    },
    Exec {
        id: u64,
        readers: Vec<JoinHandle<()>>,
    },
}

/// Whose input (and terminal) an [`Input`] is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum InputOf {
    /// An exec's, by id.
    Exec(u64),
    /// An app's, by name.
    App(String),
}

/// Where an exec's or an app's input goes: a thread of its own writes it (a command that
/// does not read must not stall the agent), `None` ends it; the terminal's master, for
/// resizes.
struct Input {
    bytes: std::sync::mpsc::Sender<Option<Vec<u8>>>,
    terminal: Option<std::fs::File>,
}

impl Input {
    /// Input into `to`; at its end the pipe is closed, or on a terminal the EOF character
    /// typed.
    fn new(mut to: std::fs::File, terminal: bool) -> Input {
        let (bytes, rx) = std::sync::mpsc::channel::<Option<Vec<u8>>>();
        let master = if terminal { to.try_clone().ok() } else { None };
        std::thread::spawn(move || {
            for chunk in rx {
                let done = match chunk {
                    Some(b) => to.write_all(&b).is_err(),
                    None if terminal => to.write_all(&[4]).is_err(),
                    None => true,
                };
                if done {
                    return;
                }
            }
        });
        Input {
            bytes,
            terminal: master,
        }
    }
}

/// An exec not yet answered (`ExecExited`).
struct ExecRecord {
    /// Its session (the command is its leader: `setsid`).
    session: i32,
    /// A kill was asked: the killer answers, once nothing of the session is left.
    killed: bool,
}

/// How long a killed exec's processes may take to be gone (reaped) before it is answered
/// anyway.
const KILLED_GONE_WITHIN: Duration = Duration::from_secs(10);

struct State {
    running: HashMap<i32, Kind>,
    /// Execs and apps that take input or have a terminal.
    inputs: HashMap<InputOf, Input>,
    /// Execs not yet answered, by id.
    execs: HashMap<u64, ExecRecord>,
    /// Every app the agent knows (the configuration's and those started later), by name.
    apps: HashMap<String, GuestApp>,
    /// An immutable pod's apps that have not ended yet.
    apps_left: usize,
    /// A stop was asked: a mutable pod ends once none of its apps runs.
    stopping: bool,
}

/// Runs and reaps the apps.
#[derive(Clone)]
pub struct Supervisor {
    port: Port,
    config: Arc<AgentConfig>,
    state: Arc<Mutex<State>>,
    /// Woken when an app starts or a stop is asked.
    wake: Arc<Condvar>,
}

fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), String> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind {} on {}: {e}", source.display(), target.display()))?;
    if read_only {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("remount {} read-only: {e}", target.display()))?;
    }
    Ok(())
}

fn ensure_like(source: &Path, target: &Path) -> Result<(), String> {
    if target.exists() {
        return Ok(());
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    }
    let made = if source.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        std::fs::File::create(target).map(drop)
    };
    made.map_err(|e| format!("cannot create {}: {e}", target.display()))
}

/// Mounts what the guest's namespace holds of the app's world: the pod's /etc files, its
/// volumes, its root read-only if asked (its kernel filesystems and /dev are made in its own
/// mount namespace: see `spawn`).
fn prepare_root(app: &GuestApp) -> Result<(), String> {
    let root = Path::new(&app.root);
    let inside = |p: &str| root.join(p.trim_start_matches('/'));
    let mut binds: Vec<(PathBuf, PathBuf, bool)> = Vec::new();
    for m in app.etc_files.iter().chain(&app.mounts) {
        binds.push((PathBuf::from(&m.source), inside(&m.target), m.read_only));
    }
    for (src, dst, _) in &binds {
        ensure_like(src, dst)?;
    }
    for d in ["proc", "sys", "dev"] {
        std::fs::create_dir_all(inside(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    if app.read_only_rootfs {
        bind(root, root, true)?;
    }
    for (src, dst, ro) in &binds {
        bind(src, dst, *ro)?;
    }
    Ok(())
}

/// `arg0` resolved inside `root` with the app's PATH (the path to exec after chroot).
fn resolve(root: &Path, arg0: &str, env: &[String]) -> Option<String> {
    if arg0.contains('/') {
        return root
            .join(arg0.trim_start_matches('/'))
            .exists()
            .then(|| arg0.to_string());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':').find_map(|dir| {
        let candidate = format!("{}/{arg0}", dir.trim_end_matches('/'));
        root.join(candidate.trim_start_matches('/'))
            .exists()
            .then_some(candidate)
    })
}

fn reader(
    port: Port,
    mut pipe: impl Read + Send + 'static,
    make: impl Fn(&[u8]) -> ToHost + Send + 'static,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16384];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => port.send(&make(&buf[..n])),
            }
        }
    })
}

/// An app's output (text: the CRI log is lines of it).
fn app_output(app: String, stream: u8, data: &[u8]) -> ToHost {
    ToHost::Output {
        app,
        stream,
        data: String::from_utf8_lossy(data).into_owned(),
    }
}

/// An exec's output, any bytes.
fn exec_output(id: u64, stream: u8, data: &[u8]) -> ToHost {
    ToHost::ExecOutput {
        id,
        stream,
        data: orbit_stage1::agent::encode(data),
    }
}

/// Threads forwarding a child's piped stdout and stderr as `make(stream, data)` messages
/// (none for an interactive child: its output goes to the console).
fn readers(
    port: &Port,
    child: &mut std::process::Child,
    make: impl Fn(u8, &[u8]) -> ToHost + Send + Sync + Clone + 'static,
) -> Vec<JoinHandle<()>> {
    let mut out = Vec::new();
    if let Some(o) = child.stdout.take() {
        let m = make.clone();
        out.push(reader(port.clone(), o, move |d| m(STDOUT, d)));
    }
    if let Some(e) = child.stderr.take() {
        out.push(reader(port.clone(), e, move |d| make(STDERR, d)));
    }
    out
}

/// Where a process's streams go — a terminal of the guest's (`tty`, with the size it starts
/// with), else pipes (stdin piped when `stdin`) — and the terminal's master side.
fn io_for(
    tty: Option<Option<(u16, u16)>>,
    stdin: bool,
) -> Result<(Io, Option<std::fs::File>), String> {
    let Some(size) = tty else {
        return Ok((Io::Pipes { stdin }, None));
    };
    let ws = size.map(|(cols, rows)| nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let p =
        nix::pty::openpty(ws.as_ref(), None).map_err(|e| format!("cannot open a terminal: {e}"))?;
    // Not inherited by apps or execs started meanwhile (another session could be read or
    // typed into).
    for fd in [&p.master, &p.slave] {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    Ok((Io::Terminal(p.slave), Some(std::fs::File::from(p.master))))
}

/// Threads relaying a spawned child's output as `make(stream, data)` messages — its pipes',
/// or all of its terminal's (`master`) as stdout — and where its input goes: its stdin pipe,
/// or the terminal (which also takes the resizes).
fn wire(
    port: &Port,
    child: &mut std::process::Child,
    master: Option<std::fs::File>,
    make: impl Fn(u8, &[u8]) -> ToHost + Send + Sync + Clone + 'static,
) -> (Vec<JoinHandle<()>>, Option<Input>) {
    match master {
        Some(m) => {
            let readers = m
                .try_clone()
                .ok()
                .map(|r| vec![reader(port.clone(), r, move |d| make(STDOUT, d))])
                .unwrap_or_default();
            (readers, Some(Input::new(m, true)))
        }
        None => {
            let input = child
                .stdin
                .take()
                .map(|p| Input::new(std::fs::File::from(OwnedFd::from(p)), false));
            (readers(port, child, make), input)
        }
    }
}

/// Where a spawned process's standard streams go.
enum Io {
    /// The serial console, its controlling terminal (an interactive app).
    Console,
    /// Pipes (stdout and stderr read by the agent; stdin piped when `stdin`, else empty).
    Pipes { stdin: bool },
    /// A terminal's slave side, its controlling terminal (an exec or app with a terminal).
    Terminal(OwnedFd),
}

/// Which pid namespace a spawned process lands in.
#[derive(Clone, Copy)]
enum PidNs {
    /// The VM's.
    Guest,
    /// A new one, whose PID 1 it is.
    New,
    /// Running process `pid`'s.
    Of(i32),
}

/// Runs `f` on a thread of its own whose children land in `ns` (a thread's namespace for
/// children is its own; the agent's other threads keep the VM's).
fn in_pid_ns<T: Send>(
    ns: PidNs,
    f: impl FnOnce() -> Result<T, (i32, String)> + Send,
) -> Result<T, (i32, String)> {
    let enter = move || -> Result<(), (i32, String)> {
        match ns {
            PidNs::Guest => Ok(()),
            PidNs::New => nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
                .map_err(|e| (125, format!("cannot create a pid namespace: {e}"))),
            PidNs::Of(pid) => {
                let ns = std::fs::File::open(format!("/proc/{pid}/ns/pid"))
                    .map_err(|e| (125, format!("cannot open the app's pid namespace: {e}")))?;
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWPID)
                    .map_err(|e| (125, format!("cannot join the app's pid namespace: {e}")))
            }
        }
    };
    if matches!(ns, PidNs::Guest) {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(move || enter().and_then(|()| f()))
            .join()
            .unwrap_or_else(|_| Err((125, "the spawning thread panicked".into())))
    })
}

/// Spawns `argv` in `app` as the app's user with its confinement (see [`crate::spawn`]), in
/// `cgroup` when given, with `io`: a start of the app when `join` is `None`, else a process
/// joining the running app whose pid it gives.
fn spawn(
    app: &GuestApp,
    argv: &[String],
    cgroup: Option<&Path>,
    io: Io,
    join: Option<i32>,
) -> Result<std::process::Child, (i32, String)> {
    let root = Path::new(&app.root);
    let program = resolve(root, &argv[0], &app.env)
        .ok_or_else(|| (127, format!("{}: not found in the app's root", argv[0])))?;
    let c_procs = cgroup
        .map(|c| CString::new(c.join("cgroup.procs").to_string_lossy().as_bytes()))
        .transpose()
        .map_err(|e| (125, e.to_string()))?;
    let request = serde_json::to_string(&crate::spawn::Request {
        app: app.clone(),
        program,
        argv: argv.to_vec(),
        join,
    })
    .map_err(|e| (125, e.to_string()))?;
    let (report, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| (125, format!("pipe: {e}")))?;
    let report_fd = std::os::fd::AsRawFd::as_raw_fd(&report_w);
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("orbit-kvm-agent")
        .arg(crate::spawn::ARG)
        .env_clear()
        .env(crate::spawn::ENV, request);
    let controlling_tty = !matches!(io, Io::Pipes { .. });
    match io {
        Io::Console => {
            let tty = || {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(orbit_stage1::agent::CONSOLE)
                    .map(Stdio::from)
                    .map_err(|e| (125, format!("cannot open the console: {e}")))
            };
            cmd.stdin(tty()?).stdout(tty()?).stderr(tty()?);
        }
        Io::Pipes { stdin } => {
            cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        Io::Terminal(slave) => {
            let dup = |fd: &std::os::fd::OwnedFd| {
                fd.try_clone()
                    .map(Stdio::from)
                    .map_err(|e| (125, format!("cannot share the terminal: {e}")))
            };
            cmd.stdin(dup(&slave)?)
                .stdout(dup(&slave)?)
                .stderr(Stdio::from(slave));
        }
    }
    // SAFETY: only async-signal-safe system calls between fork and exec, on data prepared
    // before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if let Some(procs) = &c_procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return fail();
                }
                libc::close(fd);
            }
            // The helper's report descriptor, open across its exec.
            let moved = if report_fd == crate::spawn::REPORT_FD {
                libc::fcntl(report_fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(report_fd, crate::spawn::REPORT_FD)
            };
            if moved < 0 {
                return fail();
            }
            libc::setsid();
            if controlling_tty {
                libc::ioctl(0, libc::TIOCSCTTY, 0);
            }
            Ok(())
        });
    }
    let ns = match join {
        None if app.pid_namespace => PidNs::New,
        Some(pid) if app.pid_namespace => PidNs::Of(pid),
        _ => PidNs::Guest,
    };
    let child = in_pid_ns(ns, move || {
        cmd.spawn()
            .map_err(|e| (126, format!("cannot start {}: {e}", argv[0])))
    })?;
    drop(report_w);
    // The helper's word: nothing once the command runs.
    let mut said = String::new();
    let _ = std::fs::File::from(report).read_to_string(&mut said);
    match said.split_once(' ') {
        None => Ok(child),
        Some((code, message)) => Err((code.parse().unwrap_or(125), message.to_string())),
    }
}

/// Unmounts (lazily) every mount at or below `root`, deepest first.
fn unmount_below(root: &Path) -> Result<(), String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read the mounts: {e}"))?;
    let prefix = root.to_string_lossy().into_owned();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| format!("cannot unmount {p}: {e}"))?;
    }
    Ok(())
}

fn exit_code(status: WaitStatus) -> Option<(i32, Option<i32>)> {
    match status {
        WaitStatus::Exited(_, c) => Some((c, None)),
        WaitStatus::Signaled(_, s, _) => Some((128 + s as i32, Some(s as i32))),
        _ => None,
    }
}

fn oom_killed(cgroup: &Path) -> bool {
    std::fs::read_to_string(cgroup.join("memory.events"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"))
}

impl Supervisor {
    /// A supervisor for `config`'s apps, reporting on `port`.
    pub fn new(port: Port, config: AgentConfig) -> Supervisor {
        Supervisor {
            port,
            state: Arc::new(Mutex::new(State {
                running: HashMap::new(),
                inputs: HashMap::new(),
                execs: HashMap::new(),
                apps: HashMap::new(),
                apps_left: config.apps.len(),
                stopping: false,
            })),
            config: Arc::new(config),
            wake: Arc::new(Condvar::new()),
        }
    }

    /// Starts every app of the configuration.
    pub fn start_apps(&self) {
        for app in &self.config.apps {
            self.start_app(app.clone());
        }
    }

    /// Starts `app`; one that cannot start is reported as failed (and, in an immutable pod,
    /// counts as done).
    pub fn start_app(&self, app: GuestApp) {
        let app = &app;
        let known = {
            let mut st = self.state.lock().unwrap();
            let known = st.apps.contains_key(&app.name);
            st.apps
                .entry(app.name.clone())
                .or_insert_with(|| app.clone());
            known
        };
        let cgroup = PathBuf::from("/sys/fs/cgroup").join(&app.name);
        let started = if known {
            Err((125, format!("app {} was started already", app.name)))
        } else {
            prepare_root(app).map_err(|e| (125, e)).and_then(|()| {
                std::fs::create_dir_all(&cgroup).map_err(|e| (125, format!("cgroup: {e}")))?;
                if let Some(m) = app.memory {
                    std::fs::write(cgroup.join("memory.max"), m.to_string())
                        .map_err(|e| (125, format!("memory.max: {e}")))?;
                    let _ = std::fs::write(cgroup.join("memory.swap.max"), "0");
                }
                // An OOM kill takes the whole app, as on the host.
                let _ = std::fs::write(cgroup.join("memory.oom.group"), "1");
                let (io, master) = if app.interactive {
                    (Io::Console, None)
                } else {
                    io_for(app.terminal.then_some(None), app.stdin).map_err(|e| (125, e))?
                };
                // Hold the lock while spawning: the reaper must find the pid registered.
                let mut st = self.state.lock().unwrap();
                let mut child = spawn(app, &app.exec, Some(&cgroup), io, None)?;
                let name = app.name.clone();
                let n = name.clone();
                let (readers, input) = wire(&self.port, &mut child, master, move |stream, data| {
                    app_output(n.clone(), stream, data)
                });
                if let Some(i) = input {
                    st.inputs.insert(InputOf::App(name.clone()), i);
                }
                let pid = child.id() as i32;
                st.running.insert(
                    pid,
                    Kind::App {
                        name: name.clone(),
                        cgroup: cgroup.clone(),
                        readers,
                    },
                );
                self.port.send(&ToHost::Started { app: name, pid });
                Ok(())
            })
        };
        if let Err((code, error)) = started {
            self.port.send(&ToHost::Failed {
                app: app.name.clone(),
                code,
                error,
            });
            if !self.config.mutable {
                self.state.lock().unwrap().apps_left -= 1;
            }
        }
        self.wake.notify_all();
    }

    /// Sends signal `sig` to app `name` (SIGKILL: to every process in its cgroup).
    pub fn signal_app(&self, name: &str, sig: i32) {
        let Ok(sig) = Signal::try_from(sig) else {
            return;
        };
        let st = self.state.lock().unwrap();
        for (pid, kind) in &st.running {
            if let Kind::App {
                name: n, cgroup, ..
            } = kind
            {
                if n == name {
                    let _ = kill(Pid::from_raw(*pid), sig);
                    if sig == Signal::SIGKILL {
                        let _ = std::fs::write(cgroup.join("cgroup.kill"), "1");
                    }
                }
            }
        }
    }

    /// Forgets exited app `name`: unmounts what was mounted in its root, removes its
    /// cgroup, and answers `Removed`.
    pub fn remove_app(&self, name: &str) {
        let result = (|| {
            let mut st = self.state.lock().unwrap();
            let running = st
                .running
                .values()
                .any(|k| matches!(k, Kind::App { name: n, .. } if n == name));
            if running {
                return Err(format!("app {name} is running: stop it first"));
            }
            let Some(app) = st.apps.get(name) else {
                return Ok(());
            };
            // Forgotten only once its mounts are gone: a failed removal can be retried.
            unmount_below(Path::new(&app.root))?;
            st.apps.remove(name);
            let _ = std::fs::remove_dir(PathBuf::from("/sys/fs/cgroup").join(name));
            Ok(())
        })();
        self.port.send(&ToHost::Removed {
            app: name.to_string(),
            error: result.err(),
        });
    }

    /// Runs an `exec` request in an app's root: with `stdin` its input comes through
    /// [`Supervisor::input`]; with `tty` (and the size it starts with) on a terminal of
    /// the guest's.
    pub fn exec(
        &self,
        id: u64,
        app: &str,
        argv: &[String],
        stdin: bool,
        tty: Option<Option<(u16, u16)>>,
    ) {
        let Some(a) = self.state.lock().unwrap().apps.get(app).cloned() else {
            self.port.send(&exec_output(
                id,
                STDERR,
                format!("no app named '{app}'\n").as_bytes(),
            ));
            self.port.send(&ToHost::ExecExited { id, code: 125 });
            return;
        };
        if argv.is_empty() {
            self.port.send(&ToHost::ExecExited { id, code: 125 });
            return;
        }
        let cgroup = PathBuf::from("/sys/fs/cgroup").join(&a.name);
        let (io, master) = match io_for(tty, stdin) {
            Ok(io) => io,
            Err(e) => {
                self.port
                    .send(&exec_output(id, STDERR, format!("{e}\n").as_bytes()));
                self.port.send(&ToHost::ExecExited { id, code: 125 });
                return;
            }
        };
        let mut st = self.state.lock().unwrap();
        // An exec joins the running app (its mounts, its pid namespace).
        let app_pid = st.running.iter().find_map(|(pid, k)| {
            matches!(k, Kind::App { name, .. } if *name == a.name).then_some(*pid)
        });
        let spawned = match app_pid {
            Some(pid) => spawn(
                &a,
                argv,
                cgroup.exists().then_some(cgroup.as_path()),
                io,
                Some(pid),
            ),
            None => Err((125, format!("app {} is not running", a.name))),
        };
        match spawned {
            Ok(mut child) => {
                let make = move |stream, data: &[u8]| exec_output(id, stream, data);
                let (readers, input) = wire(&self.port, &mut child, master, make);
                if let Some(i) = input {
                    st.inputs.insert(InputOf::Exec(id), i);
                }
                let pid = child.id() as i32;
                st.execs.insert(
                    id,
                    ExecRecord {
                        session: pid,
                        killed: false,
                    },
                );
                st.running.insert(pid, Kind::Exec { id, readers });
            }
            Err((code, error)) => {
                self.port
                    .send(&exec_output(id, STDERR, format!("{error}\n").as_bytes()));
                self.port.send(&ToHost::ExecExited { id, code });
            }
        }
    }

    /// Reports what each running app's cgroup uses.
    pub fn report_usage(&self) {
        let names: Vec<(String, PathBuf)> = {
            let st = self.state.lock().unwrap();
            st.running
                .values()
                .filter_map(|k| match k {
                    Kind::App { name, cgroup, .. } => Some((name.clone(), cgroup.clone())),
                    Kind::Exec { .. } => None,
                })
                .collect()
        };
        let apps = names
            .into_iter()
            .map(|(app, cg)| {
                let field = |file: &str, key: &str| {
                    std::fs::read_to_string(cg.join(file))
                        .ok()?
                        .lines()
                        .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
                };
                let read = |file: &str| {
                    std::fs::read_to_string(cg.join(file))
                        .ok()?
                        .trim()
                        .parse::<u64>()
                        .ok()
                };
                let memory = read("memory.current");
                let inactive = field("memory.stat", "inactive_file ");
                GuestUsage {
                    app,
                    usage: orbit_stage1::AppUsage {
                        cpu_nanos: field("cpu.stat", "usage_usec ").map(|u| u * 1000),
                        memory_bytes: memory,
                        working_set_bytes: memory.map(|m| m.saturating_sub(inactive.unwrap_or(0))),
                        pids: read("pids.current"),
                    },
                }
            })
            .collect();
        self.port.send(&ToHost::Usage { apps });
    }

    /// Input for an exec or an app.
    pub fn input(&self, of: &InputOf, data: &str) {
        let Some(bytes) = orbit_stage1::agent::decode(data) else {
            return;
        };
        if let Some(i) = self.state.lock().unwrap().inputs.get(of) {
            let _ = i.bytes.send(Some(bytes));
        }
    }

    /// The end of an exec's or an app's input.
    pub fn close_input(&self, of: &InputOf) {
        if let Some(i) = self.state.lock().unwrap().inputs.get(of) {
            let _ = i.bytes.send(None);
        }
    }

    /// Kills exec `id` and everything of its session (it is the leader of one: `setsid`),
    /// and answers `ExecExited` once none of it is left, reaped (zombies count: the check
    /// after a timed-out exec must not see them), or after [`KILLED_GONE_WITHIN`].
    pub fn exec_kill(&self, id: u64) {
        let session = {
            let mut st = self.state.lock().unwrap();
            match st.execs.get_mut(&id) {
                Some(e) if !e.killed => {
                    e.killed = true;
                    e.session
                }
                _ => return,
            }
        };
        let (port, state) = (self.port.clone(), self.state.clone());
        std::thread::spawn(move || {
            orbit_stage1::procs::end_session(session, KILLED_GONE_WITHIN);
            state.lock().unwrap().execs.remove(&id);
            port.send(&ToHost::ExecExited {
                id,
                code: 128 + libc::SIGKILL,
            });
        });
    }

    /// The size of an exec's or an app's terminal.
    pub fn resize(&self, of: &InputOf, cols: u16, rows: u16) {
        let st = self.state.lock().unwrap();
        if let Some(m) = st.inputs.get(of).and_then(|i| i.terminal.as_ref()) {
            let ws = libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads the valid winsize; `m` is an open terminal master.
            unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(m), libc::TIOCSWINSZ, &ws) };
        }
    }

    /// Sends `sig` to every running app: the pod is stopping.
    pub fn signal_apps(&self, sig: Signal) {
        let mut st = self.state.lock().unwrap();
        st.stopping = true;
        for (pid, kind) in &st.running {
            if matches!(kind, Kind::App { .. }) {
                let _ = kill(Pid::from_raw(*pid), sig);
            }
        }
        self.wake.notify_all();
    }

    /// Whether the pod is done: every app of an immutable pod has exited; a mutable pod was
    /// stopped and none of its apps runs.
    fn done(&self) -> bool {
        let st = self.state.lock().unwrap();
        if self.config.mutable {
            st.stopping && !st.running.values().any(|k| matches!(k, Kind::App { .. }))
        } else {
            st.apps_left == 0
        }
    }

    /// Reaps children (and orphans) until the pod is done.
    pub fn reap_until_done(&self) {
        loop {
            if self.done() {
                return;
            }
            let status = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => {
                    // Nothing to reap now: wait for a child, a start or a stop.
                    let st = self.state.lock().unwrap();
                    let _ = self.wake.wait_timeout(st, Duration::from_millis(20));
                    continue;
                }
                Ok(s) => s,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            };
            let (Some(pid), Some((code, signal))) = (status.pid(), exit_code(status)) else {
                continue;
            };
            let kind = self.state.lock().unwrap().running.remove(&pid.as_raw());
            match kind {
                Some(Kind::App {
                    name,
                    cgroup,
                    readers,
                }) => {
                    // Its input ends with it (a terminal's master stays open for the reader).
                    self.state
                        .lock()
                        .unwrap()
                        .inputs
                        .remove(&InputOf::App(name.clone()));
                    for r in readers {
                        let _ = r.join();
                    }
                    let oom = oom_killed(&cgroup);
                    self.port.send(&ToHost::Exited {
                        app: name,
                        code,
                        signal,
                        oom,
                    });
                    let mut st = self.state.lock().unwrap();
                    st.apps_left = st.apps_left.saturating_sub(1);
                }
                Some(Kind::Exec { id, readers }) => {
                    self.state.lock().unwrap().inputs.remove(&InputOf::Exec(id));
                    let (port, state) = (self.port.clone(), self.state.clone());
                    std::thread::spawn(move || {
                        for r in readers {
                            let _ = r.join();
                        }
                        // Unless killed: the killer answers once the rest is gone.
                        let mut st = state.lock().unwrap();
                        if st.execs.get(&id).is_some_and(|e| !e.killed) {
                            st.execs.remove(&id);
                            port.send(&ToHost::ExecExited { id, code });
                        }
                    });
                }
                None => {}
            }
        }
    }
}
