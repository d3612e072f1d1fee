//! The `kvm` flavor, host side: every pod in its own QEMU microVM. The apps' roots are
//! mounted on the host exactly as for `ns` and shared with the guest over 9p; the guest
//! agent (`orbit-kvm-agent`, PID 1 in the VM) runs the apps and reports over a
//! virtio-serial port; this supervisor turns its reports into the same pod-directory files
//! as `ns` (app status, CRI logs, pid, exit), relays `orbit stop` and `orbit enter`, and
//! exits with the pod's status when the VM has powered off.

mod initrd;
mod mutable;
mod net;
mod qemu;
mod stdin;
mod terminal;
mod volumes;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use orbit_stage1::agent::{
    self, AgentConfig, ExecRequest, ForwardRequest, GuestApp, GuestInterface, GuestMount,
    GuestShare, ToGuest, ToHost, BIDIRECTIONAL_REFUSED,
};
use orbit_stage1::log::{LineWriter, Stream};
use orbit_stage1::{net_mode, paths, AppState, AppStatus, PodManifest, Propagation, VolumeKind};

use crate::util::{now, read_manifest, write_file};
use crate::Args;

/// The pod annotation naming the guest kernel (set by stage0 from `--kvm-kernel` or the
/// config dirs' `kvm/vmlinux`).
pub const KERNEL_ANNOTATION: &str = "orbit.dev/kvm-kernel";
/// The pod annotation choosing the accelerator (`auto`, `kvm`, `tcg`).
pub const ACCEL_ANNOTATION: &str = "orbit.dev/kvm-accel";
/// The pod annotation sizing the VM's memory in MiB (at least; see `vm_size`).
pub const MEMORY_ANNOTATION: &str = "orbit.dev/kvm-memory-mib";
/// The pod annotation sizing the VM's vCPUs (at least).
pub const CPUS_ANNOTATION: &str = "orbit.dev/kvm-cpus";

/// Where the agent and control sockets live (short paths: unix sockets have a length limit).
const SOCKETS: &str = "/run/orbit/kvm";

fn agent_socket(uuid: &str) -> PathBuf {
    Path::new(SOCKETS).join(format!("{uuid}.agent"))
}

fn control_socket(uuid: &str) -> PathBuf {
    Path::new(SOCKETS).join(format!("{uuid}.ctl"))
}

fn kvm_dir(pod: &Path) -> PathBuf {
    pod.join("kvm")
}

/// `run`.
pub fn run(args: &Args) -> Result<i32, String> {
    let pod = std::env::current_dir().map_err(|e| format!("cannot find the pod directory: {e}"))?;
    let _lock = crate::run::lock_pod(&pod, args)?;
    // Whatever fails from here on, the exit hook (network teardown) still runs.
    let result = crate::run::wait_for_systemd(crate::Flavor::Kvm, args)
        .and_then(|()| read_manifest(&pod))
        .and_then(|manifest| {
            if !manifest.host_namespaces.is_empty() {
                Err(
                    "a kvm pod cannot share the host's pid or ipc namespace (hostNamespaces)"
                        .into(),
                )
            } else if manifest.network.mode == net_mode::HOST {
                Err(agent::HOST_NETWORK_REFUSED.into())
            } else {
                Ok(manifest)
            }
        })
        .and_then(|manifest| sysctls(&manifest).map(|_| manifest))
        .and_then(|manifest| {
            match manifest
                .apps
                .iter()
                .find_map(unsupported)
                .or_else(|| image_volumes_unsupported(&manifest.volumes))
            {
                Some(e) => Err(e),
                None => Ok(manifest),
            }
        })
        .and_then(|manifest| run_vm(args, &pod, &manifest));
    remove_sockets(&args.uuid);
    crate::run::run_exit_hook(&pod, args.debug);
    result
}

/// Why app `a` cannot run in a VM, if it cannot: host devices (a privileged app's
/// `allDevices` is fine: the VM's devices are its own) and bidirectional volumes (the
/// guest's mounts cannot reach the host; see `volumes`).
pub(crate) fn unsupported(a: &orbit_stage1::App) -> Option<String> {
    if !a.devices.is_empty() {
        return Some(format!(
            "app {}: a kvm pod's apps see the VM's devices, not the host's",
            a.name
        ));
    }
    a.mounts
        .iter()
        .find(|m| m.propagation == Propagation::Shared)
        .map(|m| {
            format!(
                "app {}: volume {}: {BIDIRECTIONAL_REFUSED}",
                a.name, m.volume
            )
        })
}

/// Why the VM cannot show `volumes`, if it cannot: image volumes (not shared into the
/// guest in this version).
pub(crate) fn image_volumes_unsupported(volumes: &[orbit_stage1::Volume]) -> Option<String> {
    volumes
        .iter()
        .find(|v| v.kind == VolumeKind::Image)
        .map(|v| {
            format!(
                "volume {}: the kvm stage1 does not mount image volumes; use the ns stage1",
                v.name
            )
        })
}

/// The sysctls stage0 asked for in the guest ([`agent::SYSCTLS_ANNOTATION`]).
fn sysctls(manifest: &PodManifest) -> Result<std::collections::BTreeMap<String, String>, String> {
    match manifest.annotations.get(agent::SYSCTLS_ANNOTATION) {
        None => Ok(Default::default()),
        Some(j) => serde_json::from_str(j)
            .map_err(|e| format!("malformed {} annotation: {e}", agent::SYSCTLS_ANNOTATION)),
    }
}

fn remove_sockets(uuid: &str) {
    let _ = std::fs::remove_file(agent_socket(uuid));
    let _ = std::fs::remove_file(control_socket(uuid));
}

/// The agent's configuration for `manifest`.
fn agent_config(
    pod: &Path,
    manifest: &PodManifest,
    interfaces: Vec<GuestInterface>,
    debug: bool,
) -> Result<AgentConfig, String> {
    let apps = manifest
        .apps
        .iter()
        .map(|a| guest_app(pod, manifest, a))
        .collect::<Result<_, _>>()?;
    let shares = volumes::shared(manifest)
        .then(|| GuestShare {
            tag: agent::HOST_VOLUMES_TAG.into(),
            path: agent::HOST_VOLUMES_MOUNT.into(),
        })
        .into_iter()
        .collect();
    Ok(AgentConfig {
        hostname: manifest.hostname.clone(),
        apps,
        shares,
        interfaces,
        debug,
        mutable: manifest.mutable,
        // Checked before the VM is made (see `run`).
        sysctls: sysctls(manifest).unwrap_or_default(),
    })
}

/// Where the guest finds volume `v` for app `app`: an empty one on the pod share, a host
/// one on the host volumes' share (see `volumes`); an image one nowhere (refused).
fn guest_volume(app: &str, v: &orbit_stage1::Volume) -> Option<GuestMount> {
    let (source, read_only) = match v.kind {
        VolumeKind::Empty => (
            format!("{}/volumes/{}", agent::POD_MOUNT, v.name),
            v.read_only,
        ),
        // Read-only on its own mount is the host side's; the guest's would be recursive.
        VolumeKind::Host => (
            volumes::guest_path(app, &v.name),
            v.read_only && v.recursive_read_only,
        ),
        VolumeKind::Image => return None,
    };
    Some(GuestMount {
        source,
        target: String::new(),
        read_only,
    })
}

/// App `a` as the guest runs it: its root on the pod share, its volumes (see
/// [`guest_volume`]), the pod's /etc files, its confinement (the seccomp filter compiled
/// here: the agent does not carry the compiler).
fn guest_app(
    pod: &Path,
    manifest: &PodManifest,
    a: &orbit_stage1::App,
) -> Result<GuestApp, String> {
    let etc = |f: &str| GuestMount {
        source: format!("{}/{}/{f}", agent::POD_MOUNT, paths::ETC_DIR),
        target: format!("/etc/{f}"),
        read_only: false,
    };
    let seccomp = orbit_stage1::confine::compile_filter(&a.isolators)
        .map_err(|e| format!("app {}: {e}", a.name))?;
    Ok(GuestApp {
        name: a.name.clone(),
        root: format!("{}/apps/{}", agent::POD_MOUNT, a.name),
        exec: a.exec.clone(),
        env: a.env.clone(),
        uid: a.user.uid,
        gid: a.user.gid,
        additional_gids: a.user.additional_gids.clone(),
        working_directory: a.working_directory.clone(),
        mounts: a
            .mounts
            .iter()
            .filter_map(|m| {
                let v = manifest.volumes.iter().find(|v| v.name == m.volume)?;
                Some(GuestMount {
                    target: m.target.clone(),
                    ..guest_volume(&a.name, v)?
                })
            })
            .collect(),
        etc_files: paths::ETC_FILES
            .iter()
            .filter(|f| pod.join(paths::ETC_DIR).join(f).exists())
            .map(|f| etc(f))
            .collect(),
        memory: a.isolators.resources.memory,
        read_only_rootfs: a.read_only_rootfs,
        interactive: a.interactive,
        // Set for an app added to a running VM (`mutable::Pod::add`).
        stdin: false,
        terminal: false,
        isolators: orbit_stage1::Isolators {
            seccomp: None,
            ..a.isolators.clone()
        },
        seccomp: seccomp.as_deref().map(orbit_stage1::seccomp::to_words),
        pid_namespace: a.pid_namespace,
    })
}

/// Assembles what the guest may see, `kvm/share/`, from bind mounts in the supervisor's
/// mount namespace: `apps/<name>` (the app's mounted root), `volumes/<name>` (the empty
/// volumes), `etc/` (the pod's /etc files); and the host volumes (see `volumes`). The
/// guest's root is the VM's, so nothing the host acts on later (pid, exit, status, logs,
/// CNI records, the exit hook) may be in it.
fn guest_view(pod: &Path, manifest: &PodManifest) -> Result<PathBuf, String> {
    let kvm = kvm_dir(pod);
    let view = kvm.join("share");
    // The directories mount points go in, made before the guest can write there.
    let mut dirs = vec![view.join("apps"), view.join("volumes")];
    if volumes::shared(manifest) {
        dirs.push(volumes::dir(pod));
    }
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    for a in &manifest.apps {
        bind_in_view(
            &kvm,
            &paths::app_rootfs(pod, &a.name),
            &format!("share/apps/{}", a.name),
        )?;
        volumes::attach(pod, manifest, a)?;
    }
    for v in manifest
        .volumes
        .iter()
        .filter(|v| v.kind == VolumeKind::Empty)
    {
        bind_in_view(
            &kvm,
            &paths::volume_dir(pod, &v.name),
            &format!("share/volumes/{}", v.name),
        )?;
    }
    bind_in_view(
        &kvm,
        &pod.join(paths::ETC_DIR),
        &format!("share/{}", paths::ETC_DIR),
    )?;
    Ok(view)
}

/// Binds `src` at `rel` below the pod's `kvm/` directory, whose shares the guest writes: the
/// mount point is reached without following links (see `mountfd`).
fn bind_in_view(kvm: &Path, src: &Path, rel: &str) -> Result<(), String> {
    crate::mountfd::bind_beneath(src, kvm, Path::new(rel), false)
}

/// The guest NICs: the pod's CNI interfaces (addresses and gateway from network.json).
fn guest_interfaces(pod: &Path) -> Vec<GuestInterface> {
    let Ok(bytes) = std::fs::read(pod.join(paths::NETWORK_STATUS)) else {
        return Vec::new();
    };
    let Ok(status) = serde_json::from_slice::<orbit_stage1::NetworkStatus>(&bytes) else {
        return Vec::new();
    };
    status
        .networks
        .into_iter()
        .take(1)
        .map(|n| GuestInterface {
            ips: n.ips,
            gateway: n.gateways.first().cloned(),
        })
        .collect()
}

/// The VM's memory (MiB) and vCPUs: the apps' limits plus 192 MiB for the guest (at least
/// 256 MiB, one vCPU), or what stage0 asked for a pod whose apps come later
/// ([`MEMORY_ANNOTATION`], [`CPUS_ANNOTATION`]: a CRI sandbox's resources and overhead;
/// 2048 MiB when it gives none, as Kata's default), whichever is larger; never more vCPUs
/// than the host has.
fn vm_size(manifest: &PodManifest) -> (u64, u32) {
    let memory_bytes: u64 = manifest
        .apps
        .iter()
        .filter_map(|a| a.isolators.resources.memory)
        .sum();
    let millis: u64 = manifest
        .apps
        .iter()
        .filter_map(|a| a.isolators.resources.cpu_millis)
        .sum();
    let asked = |key: &str| {
        manifest
            .annotations
            .get(key)
            .and_then(|v| v.parse::<u64>().ok())
    };
    let default_mib = if manifest.mutable { 2048 } else { 0 };
    let memory_mib = (memory_bytes / (1 << 20) + 192)
        .max(256)
        .max(asked(MEMORY_ANNOTATION).unwrap_or(default_mib));
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let cpus = millis
        .div_ceil(1000)
        .max(asked(CPUS_ANNOTATION).unwrap_or(1))
        .clamp(1, host_cpus);
    (memory_mib, cpus as u32)
}

/// Per-app bookkeeping on the host.
struct AppRecord {
    status: AppStatus,
    /// A start was asked of the agent (a mutable pod's app starts once).
    starting: bool,
    log: Option<std::fs::File>,
    out: LineWriter,
    err: LineWriter,
}

impl AppRecord {
    /// A created app, its log (`apps/NAME/log`) open for appending when the pod logs to files.
    fn new(pod: &Path, manifest: &PodManifest, name: &str) -> AppRecord {
        AppRecord {
            status: AppStatus::created(),
            starting: false,
            log: manifest
                .log
                .file
                .then(|| open_log(pod, name).ok())
                .flatten(),
            out: LineWriter::new(Stream::Stdout),
            err: LineWriter::new(Stream::Stderr),
        }
    }
}

/// App `name`'s log file, created if missing, for appending.
fn open_log(pod: &Path, name: &str) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths::app_log(pod, name))
}

/// What the supervisor knows of the pod's apps, fed by the agent's reports.
struct Session {
    pod: PathBuf,
    apps: HashMap<String, AppRecord>,
    /// Apps in the order they exited, with their codes.
    exits: Vec<(String, i32)>,
    execs: Arc<Mutex<HashMap<u64, Sender<ToHost>>>>,
    /// Requests on a mutable pod's apps waiting for the agent's answer (`Started`/`Failed`
    /// for a start, `Removed` for a removal), by app.
    waiters: HashMap<String, Sender<Result<(), String>>>,
    terminal: bool,
}

impl Session {
    fn write_status(&self, app: &str) {
        if let Some(r) = self.apps.get(app) {
            let _ = r.status.write(&paths::app_status(&self.pod, app));
        }
    }

    fn handle(&mut self, msg: ToHost) -> bool {
        match msg {
            ToHost::Ready => {}
            ToHost::Started { app, pid } => {
                if let Some(r) = self.apps.get_mut(&app) {
                    r.status.state = AppState::Running;
                    r.status.pid = Some(pid);
                    r.status.started_at = Some(now());
                }
                self.write_status(&app);
                self.answer(&app, Ok(()));
            }
            ToHost::Failed { app, code, error } => {
                eprintln!("stage1 kvm: app {app}: {error}");
                self.finish(&app, code, None, None, Some(error.clone()));
                self.answer(&app, Err(error));
            }
            ToHost::Removed { app, error } => self.answer(&app, error.map_or(Ok(()), Err)),
            ToHost::Usage { apps } => {
                let running = |a: &&agent::GuestUsage| {
                    self.apps
                        .get(&a.app)
                        .is_some_and(|r| r.status.state == AppState::Running)
                };
                for a in apps.iter().filter(running) {
                    let _ = a.usage.write(&paths::app_usage(&self.pod, &a.app));
                }
            }
            ToHost::Output { app, stream, data } => {
                if self.terminal {
                    let _ = if stream == agent::STDERR {
                        std::io::stderr().write_all(data.as_bytes())
                    } else {
                        std::io::stdout().write_all(data.as_bytes())
                    };
                }
                if let Some(r) = self.apps.get_mut(&app) {
                    let w = if stream == agent::STDERR {
                        &mut r.err
                    } else {
                        &mut r.out
                    };
                    if let Some(f) = r.log.as_mut() {
                        let _ = w.feed(data.as_bytes(), &now(), f);
                    }
                }
            }
            ToHost::Exited {
                app,
                code,
                signal,
                oom,
            } => {
                let reason = oom.then(|| "OOMKilled".to_string());
                self.finish(&app, code, signal, reason, None);
            }
            ToHost::ExecOutput { id, .. }
            | ToHost::ExecExited { id, .. }
            | ToHost::Connected { id, .. }
            | ToHost::ConnData { id, .. }
            | ToHost::ConnClosed { id } => {
                let sender = self.execs.lock().unwrap().get(&id).cloned();
                if let (Some(s), m) = (sender, msg) {
                    let _ = s.send(m);
                }
            }
            ToHost::Done => return false,
        }
        true
    }

    fn answer(&mut self, app: &str, result: Result<(), String>) {
        if let Some(w) = self.waiters.remove(app) {
            let _ = w.send(result);
        }
    }

    fn finish(
        &mut self,
        app: &str,
        code: i32,
        signal: Option<i32>,
        reason: Option<String>,
        error: Option<String>,
    ) {
        if let Some(r) = self.apps.get_mut(app) {
            r.status.state = AppState::Exited;
            r.status.pid = None;
            r.status.exit_code = Some(code);
            r.status.signal = signal;
            r.status.reason = reason;
            r.status.error = error;
            r.status.finished_at = Some(now());
        }
        self.exits.push((app.to_string(), code));
        self.write_status(app);
        let _ = std::fs::remove_file(paths::app_usage(&self.pod, app));
    }
}

fn run_vm(args: &Args, pod: &Path, manifest: &PodManifest) -> Result<i32, String> {
    let kernel = manifest
        .annotations
        .get(KERNEL_ANNOTATION)
        .map(PathBuf::from)
        .ok_or("no guest kernel given (stage0 sets the orbit.dev/kvm-kernel annotation)")?;
    let modules = kernel.with_file_name("modules");
    let agent_bin = initrd::agent_binary()?;
    let initramfs = initrd::initramfs(&agent_bin, &modules)?;
    let want = manifest
        .annotations
        .get(ACCEL_ANNOTATION)
        .map(String::as_str)
        .unwrap_or("auto");
    let accel = qemu::choose_accel(want, &kernel, &initramfs)?;
    // The host volumes are cloned from the host's mount namespace (see `volumes`).
    if volumes::shared(manifest) {
        crate::mountfd::remember_host_namespace()?;
    }
    // The apps' roots are mounted here, in a mount namespace of the supervisor's own that
    // QEMU shares (so the 9p server sees them) and that vanishes with both.
    crate::run::new_namespaces(CloneFlags::CLONE_NEWNS)?;
    for a in &manifest.apps {
        crate::mounts::mount_app_root(pod, a)?;
    }
    let cni = manifest.network.mode == net_mode::CNI;
    let netns = pod.join(paths::NETNS);
    let tap = if cni {
        Some((net::TAP.to_string(), net::setup(&netns, "eth0")?))
    } else {
        None
    };
    let config = agent_config(
        pod,
        manifest,
        if cni {
            guest_interfaces(pod)
        } else {
            Vec::new()
        },
        args.debug,
    )?;
    let dir = kvm_dir(pod);
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let view = guest_view(pod, manifest)?;
    orbit_stage1::status::write_atomic(
        &view.join(agent::CONFIG_FILE),
        &serde_json::to_vec(&config).expect("config serializes"),
    )
    .map_err(|e| format!("cannot write the agent configuration: {e}"))?;
    let mut shares = vec![(agent::POD_TAG.to_string(), view, false)];
    if volumes::shared(manifest) {
        shares.push((
            agent::HOST_VOLUMES_TAG.to_string(),
            volumes::dir(pod),
            false,
        ));
    }
    let (memory_mib, cpus) = vm_size(manifest);
    std::fs::create_dir_all(SOCKETS).map_err(|e| format!("mkdir {SOCKETS}: {e}"))?;
    let sock = agent_socket(&args.uuid);
    let _ = std::fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).map_err(|e| format!("bind {}: {e}", sock.display()))?;
    let vm = qemu::Vm {
        kernel: &kernel,
        initrd: &initramfs,
        accel: &accel,
        memory_mib,
        cpus,
        shares,
        agent_socket: &sock,
        cmdline: if tap.is_some() { agent::NET_ARG } else { "" },
        tap,
    };
    let console = dir.join("console.log");
    let console_file =
        std::fs::File::create(&console).map_err(|e| format!("{}: {e}", console.display()))?;
    let mut cmd = vm.command();
    if manifest.apps.iter().any(|a| a.interactive) {
        // The guest's serial console is the app's terminal: QEMU's stdio is ours.
        cmd.stderr(console_file);
    } else {
        cmd.stdin(std::process::Stdio::null())
            .stdout(console_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(console_file);
    }
    let netns_file = if cni {
        Some(std::fs::File::open(&netns).map_err(|e| format!("{}: {e}", netns.display()))?)
    } else {
        None
    };
    let netns_fd = netns_file.as_ref().map(|f| f.as_raw_fd());
    // SAFETY: prctl and setns are single system calls, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(fd) = netns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    // Signals for the supervisor are taken by a thread (blocked here, inherited by threads;
    // QEMU gets them unblocked back by the exec's default mask reset below).
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("sigprocmask: {e}"))?;
    let started = Instant::now();
    let mut qemu = cmd.spawn().map_err(|e| format!("cannot start {} (install qemu-system-x86 from bookworm-backports: scripts/kvm-kernel.sh): {e}", qemu::QEMU))?;
    drop(netns_file);
    write_file(pod, paths::PID, &std::process::id().to_string());
    write_file(&dir, "qemu.pid", &qemu.id().to_string());
    write_file(pod, paths::STARTED, &now());
    if accel == "tcg" && args.debug {
        eprintln!("stage1 kvm: running under TCG");
    }
    let stream = match accept(&listener, &mut qemu) {
        Ok(s) => s,
        Err(e) => {
            let _ = qemu.kill();
            let _ = qemu.wait();
            let tail = std::fs::read_to_string(&console).unwrap_or_default();
            return Err(format!("{e}; QEMU said: {}", tail.trim()));
        }
    };
    let to_agent = stream.try_clone().map_err(|e| e.to_string())?;
    // A guest that stops reading makes writes fail after a while instead of blocking every
    // sender (and the lock they share) for good.
    to_agent
        .set_write_timeout(Some(AGENT_WRITE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let writer = Arc::new(Mutex::new(to_agent));
    spawn_signal_thread(mask, writer.clone(), qemu.id());
    spawn_usage_thread(writer.clone());
    let execs: Arc<Mutex<HashMap<u64, Sender<ToHost>>>> = Arc::default();
    spawn_control_thread(&args.uuid, writer.clone(), execs.clone())?;
    let session = Session {
        pod: pod.to_path_buf(),
        apps: manifest
            .apps
            .iter()
            .map(|a| (a.name.clone(), AppRecord::new(pod, manifest, &a.name)))
            .collect(),
        exits: Vec::new(),
        execs,
        waiters: HashMap::new(),
        // A sandbox's apps write to their logs only; a pod run from a shell shows them.
        terminal: !manifest.mutable,
    };
    let session = Arc::new(Mutex::new(session));
    let mut reader = BufReader::new(stream);
    let mut ready = false;
    while let Some(line) = agent_line(&mut reader) {
        match serde_json::from_str::<ToHost>(&line) {
            Ok(msg) => {
                if matches!(msg, ToHost::Ready) {
                    ready = true;
                    if args.debug {
                        eprintln!("stage1 kvm: agent ready after {:?}", started.elapsed());
                    }
                    if manifest.mutable {
                        mutable::serve(mutable::Pod {
                            dir: pod.to_path_buf(),
                            session: session.clone(),
                            writer: writer.clone(),
                            added: Mutex::default(),
                        })?;
                    }
                }
                if !session.lock().unwrap().handle(msg) {
                    break;
                }
            }
            Err(e) if args.debug => eprintln!("stage1 kvm: bad agent message ({e}): {line}"),
            Err(_) => {}
        }
    }
    let _ = std::fs::remove_file(pod.join(paths::CONTROL_SOCKET));
    let mut session = session.lock().unwrap();
    wait_qemu(&mut qemu, Duration::from_secs(30));
    if args.debug {
        eprintln!("stage1 kvm: VM gone after {:?}", started.elapsed());
    }
    if !ready {
        // The agent gave up before it ran anything (it says why on the console).
        let tail = std::fs::read_to_string(&console).unwrap_or_default();
        let said: Vec<&str> = tail
            .lines()
            .filter(|l| l.starts_with("orbit-kvm-agent:"))
            .collect();
        return Err(format!(
            "the VM's agent did not start: {}",
            if said.is_empty() {
                "it said nothing (see kvm/console.log in the pod directory)".to_string()
            } else {
                said.join("; ")
            }
        ));
    }
    // Apps the VM took down with it (QEMU killed, guest crashed); an immutable pod's apps
    // that never got to start too.
    let unfinished: Vec<String> = session
        .apps
        .iter()
        .filter(|(_, r)| {
            r.status.state == AppState::Running
                || (!manifest.mutable && r.status.state != AppState::Exited)
        })
        .map(|(name, _)| name.clone())
        .collect();
    for a in unfinished {
        session.finish(&a, 137, Some(9), Some("VMTerminated".into()), None);
    }
    // A sandbox's apps come and go: its own status is whether it ran, not theirs.
    let code = session
        .exits
        .iter()
        .find(|(_, c)| *c != 0 && !manifest.mutable)
        .map(|(_, c)| *c)
        .unwrap_or(0);
    write_file(pod, paths::EXIT, &code.to_string());
    write_file(pod, paths::FINISHED, &now());
    Ok(code)
}

/// The longest message the guest may send (an app's output comes in 16 KiB chunks).
const MAX_LINE: u64 = 1 << 20;

/// The agent's next line, at most [`MAX_LINE`] bytes (a longer one is skipped whole: the
/// guest must not make the host allocate without bound); `None` at the end.
fn agent_line(reader: &mut impl BufRead) -> Option<String> {
    loop {
        let mut buf = Vec::new();
        let n = std::io::Read::take(&mut *reader, MAX_LINE)
            .read_until(b'\n', &mut buf)
            .ok()?;
        if n == 0 {
            return None;
        }
        if buf.ends_with(b"\n") {
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
        if (n as u64) < MAX_LINE {
            // The stream ended in the middle of a line.
            return None;
        }
        // Too long: drop the rest of it.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let m = std::io::Read::take(&mut *reader, MAX_LINE)
                .read_until(b'\n', &mut rest)
                .ok()?;
            if m == 0 {
                return None;
            }
            if rest.ends_with(b"\n") {
                break;
            }
        }
    }
}

/// Accepts the agent's port connection (QEMU connects at start-up) unless QEMU exits first.
fn accept(listener: &UnixListener, qemu: &mut std::process::Child) -> Result<UnixStream, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("accept: {e}")),
        }
        if let Ok(Some(st)) = qemu.try_wait() {
            return Err(format!("QEMU exited ({st}) before the VM started"));
        }
        if Instant::now() > deadline {
            return Err("QEMU did not connect the agent's port within 60 s".into());
        }
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(listener),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16));
    }
}

fn wait_qemu(qemu: &mut std::process::Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        match qemu.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() > deadline => {
                let _ = qemu.kill();
                let _ = qemu.wait();
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn send(writer: &Arc<Mutex<UnixStream>>, msg: &ToGuest) {
    if let Ok(mut w) = writer.lock() {
        let _ = w.write_all(&agent::line(msg));
    }
}

/// How long a write to the agent may wait for the guest to read.
const AGENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopped VM has to power off before QEMU is killed (an agent that cannot
/// answer must not keep a pod alive).
const STOP_GRACE: Duration = Duration::from_secs(15);

/// First SIGTERM/SIGINT/SIGHUP: the agent stops the apps (SIGTERM), and QEMU is killed if
/// the VM is still there after [`STOP_GRACE`]; a second signal kills the apps at once.
/// QEMU is signalled through a pidfd, which cannot name a recycled pid.
fn spawn_signal_thread(mask: SigSet, writer: Arc<Mutex<UnixStream>>, qemu: u32) {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, qemu as libc::pid_t, 0) } as i32;
    std::thread::spawn(move || {
        let mut first = true;
        while mask.wait().is_ok() {
            let msg = if first { ToGuest::Stop } else { ToGuest::Kill };
            // The timer first: a guest that stopped reading must not keep the pod alive.
            if first && pidfd >= 0 {
                std::thread::spawn(move || {
                    std::thread::sleep(STOP_GRACE);
                    // SAFETY: pidfd_send_signal(2) on our own pidfd; no memory is passed.
                    unsafe {
                        libc::syscall(
                            libc::SYS_pidfd_send_signal,
                            pidfd,
                            libc::SIGKILL,
                            std::ptr::null::<libc::siginfo_t>(),
                            0,
                        )
                    };
                });
            }
            send(&writer, &msg);
            first = false;
        }
    });
}

/// How often the apps' use of the VM is asked for (the kubelet looks every 10 s).
const USAGE_EVERY: Duration = Duration::from_secs(5);

/// Asks the agent what the apps use every [`USAGE_EVERY`] until the port is gone; the
/// answers become the apps' `usage.json`.
fn spawn_usage_thread(writer: Arc<Mutex<UnixStream>>) {
    std::thread::spawn(move || loop {
        std::thread::sleep(USAGE_EVERY);
        let sent = writer
            .lock()
            .map(|mut w| w.write_all(&agent::line(&ToGuest::Usage)).is_ok())
            .unwrap_or(false);
        if !sent {
            return;
        }
    });
}

/// Serves `enter` on the control socket: each request becomes an agent `exec`, its output
/// and exit relayed back as agent messages, one per line.
fn spawn_control_thread(
    uuid: &str,
    writer: Arc<Mutex<UnixStream>>,
    execs: Arc<Mutex<HashMap<u64, Sender<ToHost>>>>,
) -> Result<(), String> {
    let path = control_socket(uuid);
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("bind {}: {e}", path.display()))?;
    let next = Arc::new(Mutex::new(0u64));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (writer, execs, next) = (writer.clone(), execs.clone(), next.clone());
            std::thread::spawn(move || {
                let mut line = String::new();
                let Ok(input) = conn.try_clone() else { return };
                let mut reader = BufReader::new(input);
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let id = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n
                };
                let (tx, rx) = channel();
                if let Ok(req) = serde_json::from_str::<ForwardRequest>(&line) {
                    execs.lock().unwrap().insert(id, tx);
                    forward(&writer, &conn, id, req.port, rx);
                    execs.lock().unwrap().remove(&id);
                    return;
                }
                let Ok(req) = serde_json::from_str::<ExecRequest>(&line) else {
                    return;
                };
                execs.lock().unwrap().insert(id, tx);
                send(
                    &writer,
                    &ToGuest::Exec {
                        id,
                        app: req.app,
                        argv: req.argv,
                        stdin: req.stdin,
                        tty: req.tty,
                        size: req.size,
                    },
                );
                // Also without input: the client going away is noticed there.
                let w = writer.clone();
                std::thread::spawn(move || relay_exec_input(&w, id, reader));
                let mut out = &conn;
                for msg in rx {
                    let done = matches!(msg, ToHost::ExecExited { .. });
                    if out.write_all(&agent::line(&msg)).is_err() {
                        // The client is gone: so is its command.
                        send(&writer, &ToGuest::ExecKill { id });
                        break;
                    }
                    if done {
                        break;
                    }
                }
                execs.lock().unwrap().remove(&id);
            });
        }
    });
    Ok(())
}

/// Relays what an `enter` client sends for exec `id` (input, its end, terminal sizes) to
/// the agent until the client goes away — which kills the command, whether or not its input
/// had ended (a silent command would never notice; killing one that has ended does nothing).
fn relay_exec_input(writer: &Arc<Mutex<UnixStream>>, id: u64, from: impl BufRead) {
    for line in from.lines() {
        let Ok(line) = line else { break };
        let msg = match serde_json::from_str::<agent::ExecControl>(&line) {
            Ok(agent::ExecControl::Input { data }) => ToGuest::ExecInput { id, data },
            Ok(agent::ExecControl::Resize { cols, rows }) => ToGuest::ExecResize { id, cols, rows },
            Ok(agent::ExecControl::Close) => ToGuest::ExecCloseInput { id },
            // Answered by the command's exit once nothing of it is left in the guest.
            Ok(agent::ExecControl::Kill) => ToGuest::ExecKill { id },
            Err(_) => continue,
        };
        send(writer, &msg);
    }
    send(writer, &ToGuest::ExecKill { id });
}

/// Relays forwarded connection `id` to `port` in the VM for the control connection `conn`:
/// `ok` or `error MESSAGE` on a line once the agent has connected, then bytes both ways.
fn forward(
    writer: &Arc<Mutex<UnixStream>>,
    conn: &UnixStream,
    id: u64,
    port: u16,
    rx: std::sync::mpsc::Receiver<ToHost>,
) {
    send(writer, &ToGuest::Connect { id, port });
    let mut out = conn;
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(ToHost::Connected { error: None, .. }) => {
            if out.write_all(b"ok\n").is_err() {
                send(writer, &ToGuest::ConnAbort { id });
                return;
            }
        }
        Ok(ToHost::Connected { error: Some(e), .. }) => {
            let _ = out.write_all(format!("error {e}\n").as_bytes());
            return;
        }
        _ => {
            let _ = out.write_all(b"error the VM's agent did not answer\n");
            return;
        }
    }
    // The client's bytes to the agent, on a thread of their own.
    let (w, input) = (writer.clone(), conn.try_clone());
    std::thread::spawn(move || {
        let Ok(mut input) = input else { return };
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match std::io::Read::read(&mut input, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => send(
                    &w,
                    &ToGuest::ConnData {
                        id,
                        data: agent::encode(&buf[..n]),
                    },
                ),
            }
        }
        send(&w, &ToGuest::ConnClose { id });
    });
    for msg in rx {
        match msg {
            ToHost::ConnData { data, .. } => {
                let bytes = agent::decode(&data).unwrap_or_default();
                if out.write_all(&bytes).is_err() {
                    // The client is gone: both directions end.
                    send(writer, &ToGuest::ConnAbort { id });
                    break;
                }
            }
            ToHost::ConnClosed { .. } => break,
            _ => {}
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

/// `port-forward -- PORT`: a connection to PORT on the VM's loopback, relayed from stdin and
/// to stdout; `connected` on stderr once it is open (a failure is a message and exit 1).
pub fn port_forward(args: &Args) -> Result<i32, String> {
    let port: u16 = args
        .command
        .first()
        .and_then(|p| p.parse().ok())
        .ok_or("port-forward needs a port: port-forward -- PORT")?;
    let mut conn = UnixStream::connect(control_socket(&args.uuid))
        .map_err(|e| format!("the pod's VM does not answer ({e}); is it running?"))?;
    conn.write_all(&agent::line(&ForwardRequest { port }))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(conn.try_clone().map_err(|e| e.to_string())?);
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .map_err(|e| format!("no answer from the pod's VM: {e}"))?;
    if let Some(e) = answer.trim_end().strip_prefix("error ") {
        return Err(e.to_string());
    }
    eprintln!("connected");
    let mut upstream = conn.try_clone().map_err(|e| e.to_string())?;
    let feeder = std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut upstream);
        let _ = upstream.shutdown(std::net::Shutdown::Write);
    });
    std::io::copy(&mut reader, &mut std::io::stdout().lock())
        .map_err(|e| format!("the connection broke: {e}"))?;
    drop(feeder);
    Ok(0)
}

/// How long `enter`, asked by a signal to end its command, waits for the VM to confirm that
/// nothing of it is left before it gives up and exits (the agent answers within 10 s).
const KILL_ANSWER: Duration = Duration::from_secs(12);

/// `enter`: runs the command in the app inside the VM through the supervisor; exits with
/// its status. Its input goes along; on a terminal, the command gets one of the guest's
/// (this one is made raw so every byte passes, and its size follows this one's).
/// SIGTERM, SIGINT or SIGHUP ends the command and everything it started in the guest, and
/// `enter` exits once the guest has confirmed that none of it is left (the CRI server ends
/// a timed-out ExecSync so: its answer must come after the command is gone).
pub fn enter(args: &Args) -> Result<i32, String> {
    // Blocked before any thread starts (they inherit it): taken by one thread below.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| format!("sigprocmask: {e}"))?;
    let pod = std::env::current_dir().map_err(|e| format!("cannot find the pod directory: {e}"))?;
    let manifest = read_manifest(&pod)?;
    let app = match &args.app {
        Some(a) => a.clone(),
        None if manifest.apps.len() == 1 => manifest.apps[0].name.clone(),
        None => return Err("the pod has several apps: pick one with --app".into()),
    };
    let argv = if args.command.is_empty() {
        vec!["/bin/sh".to_string()]
    } else {
        args.command.clone()
    };
    let stdin = std::io::stdin();
    let tty = nix::unistd::isatty(&stdin).unwrap_or(false);
    let mut conn = UnixStream::connect(control_socket(&args.uuid))
        .map_err(|e| format!("the pod's VM does not answer ({e}); is it running?"))?;
    let request = ExecRequest {
        app,
        argv,
        stdin: true,
        tty,
        size: if tty { terminal::size() } else { None },
    };
    conn.write_all(&agent::line(&request))
        .map_err(|e| e.to_string())?;
    let _raw = if tty {
        Some(terminal::Raw::new(&stdin)?)
    } else {
        None
    };
    let control = conn.try_clone().map_err(|e| e.to_string())?;
    let killer = conn.try_clone().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            let _ = (&killer).write_all(&agent::line(&agent::ExecControl::Kill));
            // The bound on the answer: then the read below ends.
            std::thread::sleep(KILL_ANSWER);
            let _ = killer.shutdown(std::net::Shutdown::Both);
        }
    });
    terminal::spawn_input(control, tty);
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<ToHost>(&line) {
            Ok(ToHost::ExecOutput { stream, data, .. }) => {
                let bytes = agent::decode(&data).unwrap_or_default();
                let _ = if stream == agent::STDERR {
                    std::io::stderr().write_all(&bytes)
                } else {
                    let mut out = std::io::stdout();
                    out.write_all(&bytes).and_then(|()| out.flush())
                };
            }
            Ok(ToHost::ExecExited { code, .. }) => return Ok(code),
            _ => {}
        }
    }
    Err("the pod's VM went away during the command".into())
}

/// `stop`: SIGTERM to the supervisor (the agent stops the apps, the VM powers off), or with
/// `--force` SIGKILL to QEMU.
pub fn stop(args: &Args) -> Result<i32, String> {
    let pod = std::env::current_dir().map_err(|e| format!("cannot find the pod directory: {e}"))?;
    let (file, sig) = if args.force {
        (kvm_dir(&pod).join("qemu.pid"), Signal::SIGKILL)
    } else {
        (pod.join(paths::PID), Signal::SIGTERM)
    };
    let pid: i32 = std::fs::read_to_string(&file)
        .map_err(|e| format!("{}: {e}", file.display()))?
        .trim()
        .parse()
        .map_err(|_| format!("malformed {}", file.display()))?;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(0),
        Err(e) => Err(format!("cannot signal pid {pid}: {e}")),
    }
}

/// `gc`: the sockets a killed supervisor left (QEMU died with it: parent-death signal).
pub fn gc(args: &Args) -> Result<i32, String> {
    remove_sockets(&args.uuid);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_is_sized_by_its_apps_or_by_what_stage0_asked() {
        let mut m: PodManifest = serde_json::from_value(serde_json::json!({
            "interfaceVersion": 1, "uuid": "u", "hostname": "h", "apps": [],
            "volumes": [], "network": {"mode": "none"}
        }))
        .unwrap();
        assert_eq!(vm_size(&m).0, 256);
        m.mutable = true;
        assert_eq!(vm_size(&m).0, 2048);
        m.annotations.insert(MEMORY_ANNOTATION.into(), "640".into());
        m.annotations.insert(CPUS_ANNOTATION.into(), "1".into());
        assert_eq!(vm_size(&m), (640, 1));
    }

    #[test]
    fn an_overlong_agent_line_is_skipped_and_the_next_one_read() {
        let mut input = vec![b'x'; (MAX_LINE as usize) * 2 + 10];
        input.push(b'\n');
        input.extend_from_slice(b"{\"t\":\"done\"}\n");
        let mut r = std::io::Cursor::new(input);
        assert_eq!(agent_line(&mut r).as_deref(), Some("{\"t\":\"done\"}\n"));
        assert_eq!(agent_line(&mut r), None);
    }
}
