//! Starting a sandbox so that it outlives the CRI server: as a transient systemd service
//! when a manager answers (`orbit run-prepared` in `orbit-<uuid>.service`), else as a
//! detached `orbit run-prepared` in a session of its own; then waiting until its stage1
//! takes requests.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use tonic::Status;

use super::{status_of, CriContext};
use crate::pod::lifecycle;
use crate::pod::prepare::Prepared;
use crate::pod::store::PodStore;

/// `orbit --dir … --*-config … run-prepared UUID`.
fn argv(ctx: &CriContext, uuid: &str) -> Vec<String> {
    let mut argv = vec![ctx.orbit.display().to_string()];
    for (flag, dir) in [
        ("--dir", &ctx.root),
        ("--system-config", &ctx.config.vendor),
        ("--local-config", &ctx.config.system),
        ("--user-config", &ctx.config.user),
    ] {
        argv.push(flag.to_string());
        argv.push(dir.display().to_string());
    }
    argv.extend(["run-prepared".to_string(), uuid.to_string()]);
    argv
}

/// Checks the kubelet's cgroup parent against the driver orbit reports (RuntimeConfig):
/// a slice name under systemd, a path otherwise.
pub fn check_cgroup_parent(ctx: &CriContext, parent: &str) -> Result<(), Status> {
    if !ctx.systemd {
        return crate::pod::cgroup_parent::validate(parent)
            .map(|_| ())
            .map_err(|e| Status::invalid_argument(e.to_string()));
    }
    let unit_chars =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-' | '\\' | '@');
    if parent.len() > ".slice".len() && parent.ends_with(".slice") && parent.chars().all(unit_chars)
    {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "cgroup parent '{parent}': orbit uses the systemd cgroup driver here (RuntimeConfig), \
         which takes a slice such as kubepods-besteffort-pod1.slice; set the kubelet's \
         cgroupDriver to systemd"
    )))
}

/// Starts the prepared sandbox (below `cgroup_parent`, checked by [`check_cgroup_parent`])
/// and waits (bounded) until it is ready for containers.
pub fn start_sandbox(
    ctx: &CriContext,
    prepared: Prepared,
    cgroup_parent: Option<&str>,
) -> Result<(), Status> {
    let uuid = prepared.pod.uuid.clone();
    let argv = argv(ctx, &uuid);
    if ctx.systemd {
        let unit = format!("orbit-{uuid}.service");
        let opts = crate::systemd::ServiceOptions {
            slice: cgroup_parent,
            ..Default::default()
        };
        lifecycle::start_as_service(prepared, &unit, &argv, opts)
            .map_err(|e| status_of(e.into()))?;
    } else {
        if let Some(parent) = cgroup_parent {
            crate::pod::cgroup_parent::record(&prepared.pod.path, parent)
                .map_err(|e| status_of(e.into()))?;
        }
        let log = prepared.pod.path.join("cri/sandbox.log");
        let out = std::fs::File::create(&log)
            .map_err(|e| Status::internal(format!("cannot create {}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| Status::internal(format!("cannot create {}: {e}", log.display())))?;
        // Read back through this handle: a stage1 that fails moves the pod (and its log) to
        // the garbage, so the path may be gone by the time its words are wanted.
        let said = std::fs::File::open(&log)
            .map_err(|e| Status::internal(format!("cannot open {}: {e}", log.display())))?;
        // The stage1 claims the pod itself.
        drop(prepared);
        let mut argv = argv;
        argv.insert(argv.len() - 2, "--systemd=no".into());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: setsid is async-signal-safe; it only detaches the child from the server's
        // session and process group, so the sandbox outlives a server stopped with its group.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Status::internal(format!("cannot start the sandbox: {e}")))?;
        // Reaped when it ends (the sandbox does not outlive the server as a zombie); an early
        // end is noticed by the wait below.
        let (tx, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        return wait(ctx, &uuid, Some((&ended, said)));
    }
    wait(ctx, &uuid, None)
}

/// A detached `run-prepared`'s end, and its output (stdout and stderr) to read back.
type Detached<'a> = (
    &'a std::sync::mpsc::Receiver<std::io::Result<std::process::ExitStatus>>,
    std::fs::File,
);

/// Waits until the sandbox is ready; a detached `run-prepared` that ended first is an error
/// with what it said.
fn wait(ctx: &CriContext, uuid: &str, detached: Option<Detached>) -> Result<(), Status> {
    use std::io::Read;
    let pods = PodStore::new(&ctx.root);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match lifecycle::wait_ready(&pods, uuid, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() > deadline => return Err(status_of(e.into())),
            Err(e @ crate::pod::PodError::WrongState { .. }) => {
                if let Some((Ok(st), mut output)) = detached
                    .as_ref()
                    .map(|(ended, output)| (ended.try_recv(), output))
                {
                    let mut said = String::new();
                    let _ = output.read_to_string(&mut said);
                    return Err(Status::internal(format!(
                        "the sandbox's stage1 ended ({}) before it was ready: {}",
                        st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                        said.trim()
                    )));
                }
                // Still prepared (not yet claimed) or starting: go on waiting.
                if !matches!(&e, crate::pod::PodError::WrongState { state, .. } if state == "prepared" || state == "running")
                {
                    return Err(status_of(e.into()));
                }
            }
            Err(e) => return Err(status_of(e.into())),
        }
    }
}
