//! A mutable `kvm` pod (a CRI sandbox): apps are added, started, stopped and removed while
//! the VM runs, through the pod's control socket — the requests the `ns` init serves, so
//! the `app-*` entrypoints are the same. Adding mounts the app's root here, in the
//! supervisor's mount namespace that QEMU's 9p server shares, below the guest's view of the
//! pod (and its host volumes below their share, see `volumes`); starting and removing are
//! agent requests answered by the agent. An app with `stdin` reads what attaching clients
//! write to its FIFO (relayed to the agent: see `stdin`); one with a terminal gets one of the
//! guest's, whose output goes to its log (the serial console is not the user's any more).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orbit_stage1::agent::{GuestApp, ToGuest};
use orbit_stage1::{paths, AppState, VolumeKind};

use super::stdin::AppStdin;
use super::{bind_in_view, guest_app, kvm_dir, send, volumes, AppRecord, Session};
use crate::util::read_manifest;

/// How long the agent has to start an app or let go of one (TCG is slow).
const AGENT_ANSWER: Duration = Duration::from_secs(120);

/// The running pod, as the control socket's requests see it.
pub struct Pod {
    /// The pod directory.
    pub dir: PathBuf,
    /// The apps' states, shared with the reader of the agent's reports.
    pub session: Arc<Mutex<Session>>,
    /// The port to the agent.
    pub writer: Arc<Mutex<UnixStream>>,
    /// Added apps not yet removed.
    pub added: Mutex<HashMap<String, Added>>,
}

/// An added app.
pub struct Added {
    /// How the guest runs it.
    guest: GuestApp,
    /// Its input, if it has one.
    stdin: Option<AppStdin>,
}

/// Serves the pod's control socket (`control.sock`) on a thread of its own, one thread per
/// request.
pub fn serve(pod: Pod) -> Result<(), String> {
    let listener = crate::util::listen_at(&pod.dir.join(paths::CONTROL_SOCKET))?;
    let pod = Arc::new(pod);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let pod = pod.clone();
            std::thread::spawn(move || pod.serve_one(conn));
        }
    });
    Ok(())
}

impl Pod {
    /// One request, `VERB NAME`: answers `ok` or `error MESSAGE`.
    fn serve_one(&self, conn: UnixStream) {
        let mut line = String::new();
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            return;
        }
        let (verb, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        let (name, extra) = rest.split_once(' ').unwrap_or((rest, ""));
        let result = match verb {
            "add" => self.add(name),
            "start" => self.start(name),
            "stop" => self.signal(name, libc::SIGTERM),
            "kill" => self.signal(name, libc::SIGKILL),
            "rm" => self.remove(name),
            "log-reopen" => self.reopen_log(name),
            "stdin-close" => self.close_stdin(name),
            "resize" => self.resize(name, extra),
            other => Err(format!("unknown request '{other}'")),
        };
        let reply = match result {
            Ok(()) => "ok\n".to_string(),
            Err(e) => format!("error {e}\n"),
        };
        let _ = (&conn).write_all(reply.as_bytes());
    }

    /// Where the app's root is shown to the guest, below `kvm/`.
    fn view_of(app: &str) -> String {
        format!("share/apps/{app}")
    }

    /// Mounts the app stage0 added to pod.json where the guest sees it.
    fn add(&self, name: &str) -> Result<(), String> {
        let manifest = read_manifest(&self.dir)?;
        let app = manifest
            .apps
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| format!("pod.json has no app {name}"))?;
        if let Some(e) = super::unsupported(app) {
            return Err(e);
        }
        if self.session.lock().unwrap().apps.contains_key(name) {
            return Err(format!("app {name} was added already"));
        }
        let stdin = app
            .stdin
            .then(|| AppStdin::open(&paths::app_stdin(&self.dir, name)))
            .transpose()?;
        let kvm = kvm_dir(&self.dir);
        // What to undo if adding fails: the root, its view and the host volumes.
        let mut root_mounted = false;
        let mut bound = false;
        let mounted = (|| {
            crate::mounts::mount_app_root(&self.dir, app)?;
            root_mounted = true;
            bind_in_view(
                &kvm,
                &paths::app_rootfs(&self.dir, name),
                &Self::view_of(name),
            )?;
            bound = true;
            for m in &app.mounts {
                let v = manifest.volume_of(m)?;
                match v.kind {
                    VolumeKind::Image => {
                        return Err(super::image_volumes_unsupported(std::slice::from_ref(v))
                            .unwrap_or_default())
                    }
                    VolumeKind::Host => {}
                    VolumeKind::Empty => {
                        let rel = format!("share/volumes/{}", v.name);
                        if !is_mount_point(&kvm.join(&rel)) {
                            bind_in_view(&kvm, &paths::volume_dir(&self.dir, &v.name), &rel)?;
                        }
                    }
                }
            }
            // Detaches what it attached if it fails.
            volumes::attach(&self.dir, &manifest, app)?;
            guest_app(&self.dir, &manifest, app)
        })();
        let mut guest = match mounted {
            Ok(g) => g,
            Err(e) => {
                let _ = volumes::detach(&self.dir, &manifest, app);
                if bound {
                    let _ = crate::mountfd::unmount_beneath(&kvm, Path::new(&Self::view_of(name)));
                }
                if root_mounted {
                    unmount(&paths::app_rootfs(&self.dir, name));
                }
                return Err(e);
            }
        };
        self.session
            .lock()
            .unwrap()
            .apps
            .insert(name.to_string(), AppRecord::new(&self.dir, &manifest, name));
        // Not the serial console: a terminal of the guest's, its output to the log.
        guest.terminal = std::mem::take(&mut guest.interactive);
        guest.stdin = app.stdin;
        self.added
            .lock()
            .unwrap()
            .insert(name.to_string(), Added { guest, stdin });
        Ok(())
    }

    /// Sends `msg` about `app` to the agent and waits for its answer.
    fn ask(&self, app: &str, msg: &ToGuest) -> Result<(), String> {
        let (tx, rx) = channel();
        self.session
            .lock()
            .unwrap()
            .waiters
            .insert(app.to_string(), tx);
        send(&self.writer, msg);
        rx.recv_timeout(AGENT_ANSWER)
            .map_err(|_| format!("the VM's agent did not answer about app {app}"))?
    }

    /// Starts a created app (once: a second start, even a concurrent one, is refused here,
    /// never sent to the agent).
    fn start(&self, name: &str) -> Result<(), String> {
        let guest = self
            .added
            .lock()
            .unwrap()
            .get(name)
            .map(|a| a.guest.clone())
            .ok_or_else(|| format!("no app named {name}"))?;
        {
            let mut session = self.session.lock().unwrap();
            let record = session
                .apps
                .get_mut(name)
                .ok_or_else(|| format!("no app named {name}"))?;
            if record.status.state != AppState::Created || record.starting {
                return Err(format!("app {name} was started already"));
            }
            record.starting = true;
        }
        let asked = self.ask(
            name,
            &ToGuest::StartApp {
                app: Box::new(guest),
            },
        );
        match &asked {
            Ok(()) => {
                // The agent has the app's input: relay what comes.
                self.with_stdin(name, |s| s.relay(name, self.writer.clone()));
            }
            Err(_) => {
                // No answer: the app may be stopped, removed or started again.
                if let Some(r) = self.session.lock().unwrap().apps.get_mut(name) {
                    r.starting = false;
                }
            }
        }
        asked
    }

    /// Runs `f` on added app `name`'s input, if it has one.
    fn with_stdin<T>(&self, name: &str, f: impl FnOnce(&mut AppStdin) -> T) -> Option<T> {
        self.added
            .lock()
            .unwrap()
            .get_mut(name)
            .and_then(|a| a.stdin.as_mut())
            .map(f)
    }

    /// Lets go of an attachable app's input (`stdin_once`: the first attachment ended): the
    /// app's input ends once the clients are gone (on a terminal: the EOF character).
    fn close_stdin(&self, name: &str) -> Result<(), String> {
        if !self.added.lock().unwrap().contains_key(name) {
            return Err(format!("no app named {name}"));
        }
        self.with_stdin(name, AppStdin::close);
        Ok(())
    }

    /// Sets the size (`COLS ROWS`) of an app's terminal.
    fn resize(&self, name: &str, size: &str) -> Result<(), String> {
        let (cols, rows) = crate::init::parse_size(size)?;
        let terminal = self
            .added
            .lock()
            .unwrap()
            .get(name)
            .map(|a| a.guest.terminal);
        match terminal {
            None => Err(format!("no app named {name}")),
            Some(false) => Err(format!("app {name} has no terminal")),
            Some(true) => {
                send(
                    &self.writer,
                    &ToGuest::AppResize {
                        app: name.to_string(),
                        cols,
                        rows,
                    },
                );
                Ok(())
            }
        }
    }

    /// App `name`'s state as the agent last reported it.
    fn state_of(&self, name: &str) -> Option<AppState> {
        self.session
            .lock()
            .unwrap()
            .apps
            .get(name)
            .map(|r| r.status.state)
    }

    fn signal(&self, name: &str, signal: i32) -> Result<(), String> {
        let state = self
            .state_of(name)
            .ok_or_else(|| format!("no app named {name}"))?;
        if state == AppState::Running {
            send(
                &self.writer,
                &ToGuest::StopApp {
                    app: name.to_string(),
                    signal,
                },
            );
        }
        Ok(())
    }

    /// Removes an app that is not running: the guest lets go of it, then its mounts here go.
    fn remove(&self, name: &str) -> Result<(), String> {
        match self.state_of(name) {
            None => return Ok(()),
            Some(AppState::Running) => return Err(format!("app {name} is running: stop it first")),
            Some(_)
                if self
                    .session
                    .lock()
                    .unwrap()
                    .apps
                    .get(name)
                    .is_some_and(|r| r.starting && r.status.state == AppState::Created) =>
            {
                return Err(format!("app {name} is starting: stop it first"))
            }
            Some(_) => {}
        }
        self.ask(
            name,
            &ToGuest::RemoveApp {
                app: name.to_string(),
            },
        )?;
        // The app's host volumes (its own clones) go with it.
        let manifest = read_manifest(&self.dir)?;
        if let Some(app) = manifest.apps.iter().find(|a| a.name == name) {
            volumes::detach(&self.dir, &manifest, app)?;
        }
        let kvm = kvm_dir(&self.dir);
        crate::mountfd::unmount_beneath(&kvm, Path::new(&Self::view_of(name)))?;
        unmount(&paths::app_rootfs(&self.dir, name));
        self.session.lock().unwrap().apps.remove(name);
        self.added.lock().unwrap().remove(name);
        Ok(())
    }

    /// Closes the app's log and opens (creates) `apps/NAME/log` again.
    fn reopen_log(&self, name: &str) -> Result<(), String> {
        let mut session = self.session.lock().unwrap();
        let record = session
            .apps
            .get_mut(name)
            .ok_or_else(|| format!("no app named {name}"))?;
        if record.log.is_some() {
            record.log = Some(
                super::open_log(&self.dir, name)
                    .map_err(|e| format!("cannot reopen the log of {name}: {e}"))?,
            );
        }
        Ok(())
    }
}

/// Whether something is mounted at `p` (its device differs from its parent's, or a bind of
/// the same file system: listed in mountinfo).
fn is_mount_point(p: &Path) -> bool {
    let target = p.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*target))
}

/// Unmounts `p` (a path the guest cannot change: the app's root in the pod directory) and
/// what is below it (lazily), leaving the directory.
fn unmount(p: &Path) {
    let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
}
