//! Running, stopping, entering and removing pods: stage0's side of the stage1 interface.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use super::prepare::Prepared;
use super::stage1::Stage1;
use super::status::{self, is_running};
use super::store::{try_lock, DirState, PodRef, PodStore};
use super::PodError;

/// Moves a prepared pod to `run/` and execs its stage1's `run` entrypoint: this process
/// becomes the pod. The pod's lock is handed over as `--lock-fd`, so it is never free
/// between preparation and the stage1 (gc cannot mistake a starting pod for an exited one).
pub fn exec_run(
    pods: &PodStore,
    prepared: Prepared,
    debug: bool,
    systemd: crate::systemd::PendingSystemd,
) -> PodError {
    let pod = match pods.transition(&prepared.pod, DirState::Run) {
        Ok(p) => p,
        Err(e) => return e,
    };
    if let Err(e) = super::cgroup_parent::join_recorded(&pod.path, &pod.uuid) {
        return e;
    }
    if let Err(e) = attach_network(pods, &pod, debug) {
        return e;
    }
    let scope = match register_with_systemd(&pod, systemd, debug) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let fd = prepared.lock.as_raw_fd();
    // Let the lock's descriptor survive the exec into stage1.
    if let Err(e) = nix::fcntl::fcntl(
        &*prepared.lock,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    ) {
        return PodError::io("cannot pass the pod lock", &pod.path, e.into());
    }
    let mut cmd = match prepared.stage1.command("run", &pod.path, &pod.uuid, debug) {
        Ok(c) => c,
        Err(e) => return e,
    };
    cmd.arg(format!("--lock-fd={fd}"));
    if let Some(scope) = scope {
        cmd.env(orbit_stage1::WAIT_CGROUP_ENV, scope);
    }
    let err = cmd.exec();
    PodError::Stage1(format!(
        "cannot execute stage1 '{}': {err}",
        prepared.stage1.name()
    ))
}

/// Puts this process (about to become the pod) into the transient scope
/// `orbit-<uuid>.scope` and has the pod registered with machined, when systemd is used.
/// Neither waits on the start path: systemd moves us while the stage1 starts up (the stage1
/// waits for the move before it forks the pod, told by `ORBIT_WAIT_CGROUP`), and a small
/// helper process registers the machine once the scope holds the pod. Returns the scope to
/// wait for.
fn register_with_systemd(
    pod: &PodRef,
    pending: crate::systemd::PendingSystemd,
    timing: bool,
) -> Result<Option<String>, PodError> {
    let t0 = std::time::Instant::now();
    let sd = |e: crate::systemd::SystemdError| PodError::Stage1(e.to_string());
    let Some(systemd) = pending.finish().map_err(sd)? else {
        return Ok(None);
    };
    if timing {
        eprintln!("orbit: systemd: connected after {:?}", t0.elapsed());
    }
    let uuid = &pod.uuid;
    let manifest = super::status::manifest(pod)?;
    let description = unit_description(&pod.uuid, &manifest);
    let me = std::process::id();
    // The pod's limits (the stage1's pod cgroup gets the same sums) become the scope's
    // MemoryMax, CPUQuota and TasksMax; orbit's per-app cgroups sit below.
    let resources: Vec<&orbit_stage1::Resources> = manifest
        .apps
        .iter()
        .map(|a| &a.isolators.resources)
        .collect();
    let total = orbit_stage1::Resources::pod_total(&resources);
    let limits = crate::systemd::ScopeLimits {
        memory: total.memory,
        cpu_millis: total.cpu_millis,
        tasks: total.pids,
    };
    // Already the main process of the pod's own unit (`--unit`, the CRI, a unit file's
    // ExecStart): the unit is the pod's cgroup; a nested scope would pull orbit out of it.
    let scope = (!crate::systemd::in_own_unit()).then(|| format!("orbit-{uuid}.scope"));
    if let Some(name) = &scope {
        systemd
            .start_scope(name, &description, &[me], &limits, false)
            .map_err(sd)?;
    }
    if timing {
        eprintln!("orbit: systemd: scope requested after {:?}", t0.elapsed());
    }
    if let Ok(exe) = std::env::current_exe() {
        let _ = std::process::Command::new(exe)
            .args([
                crate::systemd::REGISTER_MACHINE,
                &format!("orbit-{uuid}"),
                &me.to_string(),
                &pod.path.to_string_lossy(),
                scope.as_deref().unwrap_or(""),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn();
    }
    Ok(scope)
}

/// Attaches a pod with CNI networks (its plan made at preparation), points its own name in
/// /etc/hosts at its first address, and leaves the stage1 the teardown as its exit hook.
fn attach_network(pods: &PodStore, pod: &PodRef, timing: bool) -> Result<(), PodError> {
    let Some(plan) = crate::net::NetPlan::load(&pod.path)? else {
        return Ok(());
    };
    let t0 = std::time::Instant::now();
    let manifest = super::status::manifest(pod)?;
    let hook = pod.path.join(orbit_stage1::paths::ON_EXIT);
    let exe = std::env::current_exe().map_err(|e| {
        PodError::io(
            "cannot find the orbit binary",
            Path::new("/proc/self/exe"),
            e,
        )
    })?;
    let argv = serde_json::json!([exe, crate::net::TEARDOWN]);
    std::fs::write(&hook, argv.to_string()).map_err(|e| PodError::io("cannot write", &hook, e))?;
    let store = pods.root().parent().unwrap_or(pods.root());
    let status = crate::net::attach(&pod.path, &pod.uuid, &plan, &manifest.network.ports, store)?;
    if let Some(ip) = status
        .networks
        .first()
        .and_then(|n| n.ips.first())
        .and_then(|cidr| cidr.split('/').next())
    {
        let hosts = pod.path.join(orbit_stage1::paths::ETC_DIR).join("hosts");
        let text = std::fs::read_to_string(&hosts).unwrap_or_default();
        let text = crate::net::dns::with_address(&text, &manifest.hostname, ip);
        std::fs::write(&hosts, text).map_err(|e| PodError::io("cannot write", &hosts, e))?;
    }
    if timing {
        eprintln!("orbit: networks attached after {:?}", t0.elapsed());
    }
    Ok(())
}

/// A pod's systemd unit description: its UUID and images.
fn unit_description(uuid: &str, manifest: &orbit_stage1::PodManifest) -> String {
    let images: Vec<&str> = manifest
        .apps
        .iter()
        .map(|a| a.image.name.as_str())
        .collect();
    format!("orbit pod {uuid} ({})", images.join(", "))
}

/// The pod-directory file naming the systemd service that runs the pod (`--unit`).
pub const UNIT_FILE: &str = "systemd-unit";

/// Starts a prepared pod as transient service `unit` running `argv` (the orbit command line
/// that claims and runs the prepared pod), and records the unit in the pod directory.
pub fn start_as_service(
    prepared: Prepared,
    unit: &str,
    argv: &[String],
    opts: crate::systemd::ServiceOptions,
) -> Result<(), PodError> {
    let sd = |e: crate::systemd::SystemdError| PodError::Stage1(e.to_string());
    let systemd = crate::systemd::Systemd::connect(crate::systemd::Mode::Yes)
        .map_err(sd)?
        .expect("Mode::Yes connects or fails");
    let description =
        unit_description(&prepared.pod.uuid, &super::status::manifest(&prepared.pod)?);
    let path = prepared.pod.path.join(UNIT_FILE);
    std::fs::write(&path, unit).map_err(|e| PodError::io("cannot write", &path, e))?;
    // The service claims the pod itself: let go of it first.
    drop(prepared);
    systemd
        .start_service(unit, &description, argv, opts)
        .map_err(sd)
}

/// The systemd unit running a pod, if it was started with `--unit`.
pub fn unit_of(pod: &PodRef) -> Option<String> {
    std::fs::read_to_string(pod.path.join(UNIT_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Takes a prepared pod for running (refusing one that someone else is starting).
pub fn claim_prepared(pods: &PodStore, uuid: &str) -> Result<Prepared, PodError> {
    let pod = pods.find(uuid)?;
    if pod.state != DirState::Prepared {
        return Err(PodError::WrongState {
            uuid: pod.uuid.clone(),
            state: status::state(&pod),
            what: "only a prepared pod can be run with run-prepared".into(),
        });
    }
    let lock = try_lock(&pod.path)?.ok_or_else(|| PodError::WrongState {
        uuid: pod.uuid.clone(),
        state: "being started".into(),
        what: "another orbit is starting it".into(),
    })?;
    let stage1 = Stage1::load(&pod.path)?;
    Ok(Prepared { pod, lock, stage1 })
}

/// Asks a running pod to stop (SIGTERM to its apps, or SIGKILL with `force`) through its
/// stage1, then waits up to `timeout` for it to exit.
pub fn stop(
    pods: &PodStore,
    uuid: &str,
    force: bool,
    timeout: Duration,
    debug: bool,
) -> Result<PodRef, PodError> {
    let pod = pods.find(uuid)?;
    if !is_running(&pod) {
        return Err(PodError::WrongState {
            uuid: pod.uuid.clone(),
            state: status::state(&pod),
            what: "it is not running".into(),
        });
    }
    if let (Some(unit), false) = (unit_of(&pod), force) {
        // A pod run as a service stops through systemd, so the unit records a clean stop.
        if let Ok(Some(systemd)) = crate::systemd::Systemd::connect(crate::systemd::Mode::Auto) {
            systemd
                .stop_unit(&unit)
                .map_err(|e| PodError::Stage1(e.to_string()))?;
            if !wait_unlocked(&pod.path, timeout) {
                return Err(PodError::Stage1(format!(
                    "pod {} did not stop within {}s; use `orbit stop --force`",
                    pod.uuid,
                    timeout.as_secs()
                )));
            }
            return Ok(pod);
        }
    }
    let stage1 = Stage1::load(&pod.path)?;
    let mut cmd = stage1.command("stop", &pod.path, &pod.uuid, debug)?;
    if force {
        cmd.arg("--force");
    }
    let st = cmd
        .status()
        .map_err(|e| PodError::Stage1(format!("cannot run stage1 stop: {e}")))?;
    if !st.success() {
        return Err(PodError::Stage1(format!(
            "stage1 '{}' failed to stop pod {} ({st})",
            stage1.name(),
            pod.uuid
        )));
    }
    if !wait_unlocked(&pod.path, timeout) {
        return Err(PodError::Stage1(format!(
            "pod {} did not stop within {}s; use `orbit stop --force`",
            pod.uuid,
            timeout.as_secs()
        )));
    }
    Ok(pod)
}

/// Blocks until the pod directory's lock is free (the pod exited), at most `timeout`.
pub fn wait_unlocked(path: &Path, timeout: Duration) -> bool {
    let path = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ok = nix::fcntl::open(
            &path,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
        .and_then(|fd| nix::fcntl::Flock::lock(fd, nix::fcntl::FlockArg::LockShared).ok())
        .is_some();
        let _ = tx.send(ok);
    });
    rx.recv_timeout(timeout).unwrap_or(false)
}

/// Runs a command in a running pod's app through its stage1's `enter` (exec: the terminal
/// and the exit status pass straight through).
pub fn exec_enter(
    pods: &PodStore,
    uuid: &str,
    app: Option<&str>,
    command: &[String],
    debug: bool,
) -> PodError {
    let pod = match pods.find(uuid) {
        Ok(p) => p,
        Err(e) => return e,
    };
    if !is_running(&pod) {
        return PodError::WrongState {
            uuid: pod.uuid.clone(),
            state: status::state(&pod),
            what: "only a running pod can be entered".into(),
        };
    }
    let stage1 = match Stage1::load(&pod.path) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let mut cmd = match stage1.command("enter", &pod.path, &pod.uuid, debug) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Some(a) = app {
        cmd.arg(format!("--app={a}"));
    }
    cmd.arg("--").args(command);
    let err = cmd.exec();
    PodError::Stage1(format!(
        "cannot execute stage1 '{}' enter: {err}",
        stage1.name()
    ))
}

/// Removes a pod that is not running: stage1 `gc`, then the directory (through `garbage/`).
pub fn remove(pods: &PodStore, pod: &PodRef, debug: bool) -> Result<(), PodError> {
    let Some(lock) = try_lock(&pod.path)? else {
        return Err(PodError::WrongState {
            uuid: pod.uuid.clone(),
            state: status::state(pod),
            what: "stop it first (`orbit stop`)".into(),
        });
    };
    remove_locked(pods, pod, &lock, debug)
}

/// [`remove`] for a caller that already holds the pod's lock.
pub fn remove_locked(
    pods: &PodStore,
    pod: &PodRef,
    _lock: &nix::fcntl::Flock<std::os::fd::OwnedFd>,
    debug: bool,
) -> Result<(), PodError> {
    if matches!(pod.state, DirState::Run | DirState::ExitedGarbage) {
        if let Ok(stage1) = Stage1::load(&pod.path) {
            match stage1.command("gc", &pod.path, &pod.uuid, debug) {
                Ok(mut cmd) => {
                    let _ = cmd.status();
                }
                // Without the built-in stage1's gc, what a killed supervisor left (its
                // cgroups) would stay behind: the pod is kept until the binary is back.
                Err(e @ PodError::MissingStage1Binary { .. }) => return Err(e),
                // A stage1 without a gc entrypoint.
                Err(_) => {}
            }
        }
    }
    // A network or cgroup whose removal fails keeps the pod (and its records) for a retry.
    super::gc::detach_network(&pod.path)?;
    super::cgroup_parent::remove_recorded(&pod.path, &pod.uuid)?;
    if status::manifest(pod).is_ok_and(|m| m.user_namespace.is_some()) {
        super::userns::release(pods, &pod.uuid)?;
    }
    let doomed = if pod.state == DirState::Garbage {
        pod.clone()
    } else {
        pods.transition(pod, DirState::Garbage)?
    };
    super::mounts::unmount_below(&doomed.path);
    std::fs::remove_dir_all(&doomed.path)
        .map_err(|e| PodError::io("cannot remove", &doomed.path, e))
}

/// Kills a running app at once (SIGKILL): `app-stop --force`.
pub fn app_kill(pod: &PodRef, app: &str, debug: bool) -> Result<(), PodError> {
    app_request_with(pod, "app-stop", app, &["--force"], debug)
}

/// Waits (at most `timeout`) until pod `uuid` runs with all its apps running (and, under a
/// notify unit, has announced readiness); an error when it ends or never gets there.
pub fn wait_ready(pods: &PodStore, uuid: &str, timeout: Duration) -> Result<PodRef, PodError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let pod = pods.find(uuid)?;
        let info = status::info(&pod)?;
        // Running, with its init's pid recorded (the supervisor writes it after the fork,
        // and the init may be quicker to open its control socket).
        if info.state == "running"
            && info.pid.is_some()
            && info.apps.iter().all(|a| a.state() == "running")
            && (!info.notify || info.ready.is_some())
            && (!info.manifest.as_ref().is_some_and(|m| m.mutable)
                || pod.path.join(orbit_stage1::paths::CONTROL_SOCKET).exists())
        {
            return Ok(pod);
        }
        if info.state != "prepared" && info.state != "running"
            || std::time::Instant::now() > deadline
        {
            return Err(PodError::WrongState {
                uuid: pod.uuid.clone(),
                state: info.state,
                what: format!("it did not become ready within {}s", timeout.as_secs()),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends an `app-*` request (`app-add`, `app-start`, `app-stop`, `app-rm`) for `app` to a
/// running pod's stage1.
pub fn app_request(pod: &PodRef, entrypoint: &str, app: &str, debug: bool) -> Result<(), PodError> {
    app_request_with(pod, entrypoint, app, &[], debug)
}

/// [`app_request`] with arguments after `--` (`app-resize -- COLS ROWS`).
pub fn app_request_with(
    pod: &PodRef,
    entrypoint: &str,
    app: &str,
    extra: &[&str],
    debug: bool,
) -> Result<(), PodError> {
    if !is_running(pod) {
        return Err(PodError::WrongState {
            uuid: pod.uuid.clone(),
            state: status::state(pod),
            what: "apps can be changed only in a running pod".into(),
        });
    }
    let stage1 = Stage1::load(&pod.path)?;
    let out = stage1
        .command(entrypoint, &pod.path, &pod.uuid, debug)?
        .arg(format!("--app={app}"))
        .args(extra)
        .output()
        .map_err(|e| PodError::Stage1(format!("cannot run stage1 {entrypoint}: {e}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(PodError::Stage1(if msg.is_empty() {
            format!("stage1 {entrypoint} failed ({})", out.status)
        } else {
            msg
        }));
    }
    Ok(())
}
