//! The apps in the guest: their roots (kernel filesystems, /etc files, volumes, read-only
//! root), a memory cgroup each, spawning with the app's identity, output streaming, reaping
//! (PID 1 reaps every orphan too) and `exec` requests.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Read;
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

struct State {
    running: HashMap<i32, Kind>,
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

/// Mounts what the app sees: /proc, /sys (read-only), /dev, the pod's /etc files, its
/// volumes; makes its root read-only if asked.
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
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("proc"),
        &inside("proc"),
        Some("proc"),
        nosuid,
        None::<&str>,
    )
    .map_err(|e| format!("mount proc: {e}"))?;
    mount(
        Some("sysfs"),
        &inside("sys"),
        Some("sysfs"),
        nosuid | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| format!("mount sysfs: {e}"))?;
    bind(Path::new("/dev"), &inside("dev"), false)?;
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
    make: impl Fn(String) -> ToHost + Send + 'static,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16384];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => port.send(&make(String::from_utf8_lossy(&buf[..n]).into_owned())),
            }
        }
    })
}

/// Threads forwarding a child's piped stdout and stderr as `make(stream, data)` messages
/// (none for an interactive child: its output goes to the console).
fn readers(
    port: &Port,
    child: &mut std::process::Child,
    make: impl Fn(u8, String) -> ToHost + Send + Sync + Clone + 'static,
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

/// Spawns `argv` in `app`'s root as the app's user, in `cgroup` when given; `interactive`
/// gives it the serial console as its controlling terminal.
fn spawn(
    app: &GuestApp,
    argv: &[String],
    cgroup: Option<&Path>,
    interactive: bool,
) -> Result<std::process::Child, (i32, String)> {
    let root = Path::new(&app.root);
    let program = resolve(root, &argv[0], &app.env)
        .ok_or_else(|| (127, format!("{}: not found in the app's root", argv[0])))?;
    let c_root = CString::new(app.root.as_str()).map_err(|e| (125, e.to_string()))?;
    let c_wd = CString::new(app.working_directory.as_str()).map_err(|e| (125, e.to_string()))?;
    let c_procs = cgroup
        .map(|c| CString::new(c.join("cgroup.procs").to_string_lossy().as_bytes()))
        .transpose()
        .map_err(|e| (125, e.to_string()))?;
    let (uid, gid) = (app.uid, app.gid);
    let mut groups: Vec<libc::gid_t> = vec![gid];
    groups.extend(&app.additional_gids);
    let mut cmd = Command::new(&program);
    cmd.arg0(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(app.env.iter().filter_map(|e| e.split_once('=')));
    if interactive {
        let tty = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(orbit_stage1::agent::CONSOLE)
                .map(Stdio::from)
                .map_err(|e| (125, format!("cannot open the console: {e}")))
        };
        cmd.stdin(tty()?).stdout(tty()?).stderr(tty()?);
    } else {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
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
            if libc::chroot(c_root.as_ptr()) != 0 || libc::chdir(c_wd.as_ptr()) != 0 {
                return fail();
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return fail();
            }
            libc::setsid();
            if interactive {
                libc::ioctl(0, libc::TIOCSCTTY, 0);
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| (126, format!("cannot start {}: {e}", argv[0])))
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
                // Hold the lock while spawning: the reaper must find the pid registered.
                let mut st = self.state.lock().unwrap();
                let mut child = spawn(app, &app.exec, Some(&cgroup), app.interactive)?;
                let name = app.name.clone();
                let n = name.clone();
                let readers = readers(&self.port, &mut child, move |stream, data| ToHost::Output {
                    app: n.clone(),
                    stream,
                    data,
                });
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

    /// Runs an `exec` request in an app's root.
    pub fn exec(&self, id: u64, app: &str, argv: &[String]) {
        let Some(a) = self.state.lock().unwrap().apps.get(app).cloned() else {
            self.port.send(&ToHost::ExecOutput {
                id,
                stream: STDERR,
                data: format!("no app named '{app}'\n"),
            });
            self.port.send(&ToHost::ExecExited { id, code: 125 });
            return;
        };
        if argv.is_empty() {
            self.port.send(&ToHost::ExecExited { id, code: 125 });
            return;
        }
        let cgroup = PathBuf::from("/sys/fs/cgroup").join(&a.name);
        let mut st = self.state.lock().unwrap();
        match spawn(&a, argv, cgroup.exists().then_some(cgroup.as_path()), false) {
            Ok(mut child) => {
                let readers = readers(&self.port, &mut child, move |stream, data| {
                    ToHost::ExecOutput { id, stream, data }
                });
                st.running
                    .insert(child.id() as i32, Kind::Exec { id, readers });
            }
            Err((code, error)) => {
                self.port.send(&ToHost::ExecOutput {
                    id,
                    stream: STDERR,
                    data: format!("{error}\n"),
                });
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
                    let port = self.port.clone();
                    std::thread::spawn(move || {
                        for r in readers {
                            let _ = r.join();
                        }
                        port.send(&ToHost::ExecExited { id, code });
                    });
                }
                None => {}
            }
        }
    }
}
