//! A CRI `ContainerConfig` as an orbit app: command and args, environment, working
//! directory, user and groups, read-only root, capabilities, seccomp, resources and host
//! mounts (each a host volume of the pod named after the app); and the kubelet's log path.

use std::io::Read;
use std::time::{Duration, Instant};

use tonic::Status;

use orbit_stage1::{Mount, Propagation, Volume, VolumeKind};

use super::proto;
use crate::pod::isolation::IsolationRequest;
use crate::pod::prepare::{AppRequest, GroupsPolicy};
use crate::pod::store::PodRef;

fn security(c: &proto::ContainerConfig) -> proto::LinuxContainerSecurityContext {
    c.linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default()
}

/// The capabilities the app keeps: orbit's default set with `add` added and `drop`
/// dropped (`ALL` in either means every capability).
fn capabilities(caps: &proto::Capability) -> Result<IsolationRequest, Status> {
    let all = |v: &[String]| v.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    let name = |c: &String| {
        crate::pod::isolation::capability_name(c)
            .map_err(|e| Status::invalid_argument(format!("capability {c}: {e}")))
    };
    let mut req = IsolationRequest::default();
    if caps.add_capabilities.is_empty() && !all(&caps.drop_capabilities) {
        req.caps_remove = caps
            .drop_capabilities
            .iter()
            .map(name)
            .collect::<Result<_, _>>()?;
        return Ok(req);
    }
    let mut keep: Vec<String> = if all(&caps.drop_capabilities) {
        Vec::new()
    } else {
        orbit_stage1::isolators::DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect()
    };
    if all(&caps.add_capabilities) {
        keep = caps::all().iter().map(|c| c.to_string()).collect();
    } else {
        for c in &caps.add_capabilities {
            let c = name(c)?;
            if !keep.contains(&c) {
                keep.push(c);
            }
        }
    }
    if !all(&caps.drop_capabilities) {
        for c in &caps.drop_capabilities {
            let c = name(c)?;
            keep.retain(|k| *k != c);
        }
    }
    req.caps_retain = Some(keep);
    Ok(req)
}

/// Whether the container runs without a seccomp filter: it asked for `Unconfined`, or for
/// no profile at all — which the CRI defines as unconfined (the kubelet sends
/// `RuntimeDefault` when its SeccompDefault is on) — unless the server applies the default
/// to those (`orbit cri --seccomp-default`).
pub fn unconfined_seccomp(config: &proto::ContainerConfig, seccomp_default: bool) -> bool {
    use proto::security_profile::ProfileType;
    match security(config).seccomp {
        None => !seccomp_default,
        Some(p) => p.profile_type == ProfileType::Unconfined as i32,
    }
}

/// Refuses identities the CRI does not allow: a group without a user (the image's user
/// would run with a group it did not choose).
fn check_identity(sec: &proto::LinuxContainerSecurityContext) -> Result<(), Status> {
    if sec.run_as_group.is_some() && sec.run_as_user.is_none() && sec.run_as_username.is_empty() {
        return Err(Status::invalid_argument(
            "run_as_group is set without run_as_user or run_as_username; the CRI allows a \
             group only with a user: set the user too",
        ));
    }
    Ok(())
}

/// The app for container `config` running image `image` under the name `app`.
pub fn app_request(
    config: &proto::ContainerConfig,
    image: &str,
    app: &str,
) -> Result<AppRequest, Status> {
    let sec = security(config);
    check_identity(&sec)?;
    let (exec, args) = match (config.command.split_first(), config.args.is_empty()) {
        (Some((exe, rest)), _) => {
            let mut args = rest.to_vec();
            args.extend(config.args.iter().cloned());
            (Some(exe.clone()), Some(args))
        }
        (None, false) => (None, Some(config.args.clone())),
        (None, true) => (None, None),
    };
    let user = if !sec.run_as_username.is_empty() {
        Some(sec.run_as_username.clone())
    } else {
        sec.run_as_user.as_ref().map(|u| u.value.to_string())
    };
    let mut isolation = match &sec.capabilities {
        Some(c) => capabilities(c)?,
        None => IsolationRequest::default(),
    };
    if let Some(p) = &sec.seccomp {
        use proto::security_profile::ProfileType;
        match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => {}
            // No filter, as the pod asked (see `unconfined_seccomp`).
            Ok(ProfileType::Unconfined) => {}
            Ok(ProfileType::Localhost) => {
                isolation.seccomp_filter =
                    Some(super::seccomp::localhost_profile(&p.localhost_ref)?);
            }
            Err(_) => return Err(Status::invalid_argument("unknown seccomp profile type")),
        }
    }
    if let Some(p) = &sec.apparmor {
        use proto::security_profile::ProfileType;
        if p.profile_type == ProfileType::Localhost as i32 {
            return Err(Status::failed_precondition(format!(
                "AppArmor profile {}: orbit does not apply AppArmor profiles",
                p.localhost_ref
            )));
        }
    }
    // As the CRI asks: the kubelet sets it for allowPrivilegeEscalation=false.
    isolation.no_new_privileges = Some(sec.no_new_privs);
    if !sec.masked_paths.is_empty() {
        isolation.masked_paths = Some(sec.masked_paths.clone());
    }
    if !sec.readonly_paths.is_empty() {
        isolation.readonly_paths = Some(sec.readonly_paths.clone());
    }
    let devices = devices(&config.devices)?;
    // The kubelet asks for a pid namespace per container (CONTAINER) unless the pod shares
    // one (POD, shareProcessNamespace) or the node's (NODE, with a host-pid sandbox); no
    // options at all means POD, as for containerd.
    let pid_namespace = match sec.namespace_options.as_ref().map(|n| n.pid) {
        None => false,
        Some(m) if m == proto::NamespaceMode::Container as i32 => true,
        Some(m)
            if m == proto::NamespaceMode::Pod as i32 || m == proto::NamespaceMode::Node as i32 =>
        {
            false
        }
        Some(_) => {
            return Err(Status::unimplemented(
                "targeting another container's pid namespace (TARGET) is not supported",
            ))
        }
    };
    let supplementary_gids = sec
        .supplemental_groups
        .iter()
        .map(|g| {
            u32::try_from(*g)
                .map_err(|_| Status::invalid_argument(format!("supplemental group {g}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(r) = config.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        let pos = |v: i64| (v > 0).then_some(v as u64);
        isolation.resources.memory = pos(r.memory_limit_in_bytes);
        isolation.resources.cpu_shares = pos(r.cpu_shares);
        if r.cpu_quota > 0 && r.cpu_period > 0 {
            isolation.resources.cpu_millis =
                Some((r.cpu_quota as u64 * 1000) / r.cpu_period as u64);
        }
        if r.oom_score_adj != 0 {
            isolation.resources.oom_score_adj = Some(r.oom_score_adj as i32);
        }
    }
    let mounts = config
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            check_read_only(m)?;
            Ok(Mount {
                volume: format!("{app}-m{i}"),
                target: m.container_path.clone(),
                propagation: match &m.image {
                    Some(image) => super::image_volume::check(m, image)?,
                    None => propagation(m)?,
                },
            })
        })
        .collect::<Result<_, Status>>()?;
    Ok(AppRequest {
        image: image.to_string(),
        name: Some(app.to_string()),
        exec,
        args,
        working_dir: Some(config.working_dir.clone()).filter(|w| !w.is_empty()),
        env: config
            .envs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect(),
        inherit_env: false,
        user,
        group: sec.run_as_group.as_ref().map(|g| g.value.to_string()),
        supplementary_gids,
        groups_policy: groups_policy(&sec)?,
        readonly_rootfs: sec.readonly_rootfs,
        mounts,
        devices,
        interactive: config.tty,
        stdin: config.stdin,
        pid_namespace,
        isolation,
    })
}

/// How the container's supplementary groups are made: with the image's groups (`Merge`,
/// the default) or without them (`Strict`).
fn groups_policy(sec: &proto::LinuxContainerSecurityContext) -> Result<GroupsPolicy, Status> {
    use proto::SupplementalGroupsPolicy as P;
    match P::try_from(sec.supplemental_groups_policy) {
        Ok(P::Merge) => Ok(GroupsPolicy::Merge),
        Ok(P::Strict) => Ok(GroupsPolicy::Strict),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown supplemental_groups_policy {}: Merge (0) or Strict (1)",
            sec.supplemental_groups_policy
        ))),
    }
}

/// Refuses a `recursive_read_only` mount the CRI does not allow — one not `readonly` too,
/// or with propagation (mounts arriving from the host later would not be read-only) — or
/// that this kernel cannot make (no `mount_setattr(2)`).
fn check_read_only(m: &proto::Mount) -> Result<(), Status> {
    use proto::MountPropagation as P;
    if !m.recursive_read_only {
        return Ok(());
    }
    if !m.readonly {
        return Err(Status::invalid_argument(format!(
            "mount {}: recursive_read_only needs readonly: true as well",
            m.container_path
        )));
    }
    if m.propagation != P::PropagationPrivate as i32 {
        let name = P::try_from(m.propagation).map_or("an unknown propagation", |p| p.as_str_name());
        return Err(Status::invalid_argument(format!(
            "mount {}: recursive_read_only needs PROPAGATION_PRIVATE, not {name} (mounts the \
             host makes below it later would not be read-only)",
            m.container_path
        )));
    }
    if !orbit_stage1_linux::recursive_read_only_supported() {
        return Err(Status::failed_precondition(format!(
            "mount {}: recursive_read_only needs mount_setattr(2), Linux 5.12 or later; this \
             kernel has none (ask for readonly only)",
            m.container_path
        )));
    }
    Ok(())
}

/// The propagation of mount `m`: private, a slave of the host's for `HostToContainer`
/// (whose source must be on a shared or slave host mount, as for containerd), or a peer
/// of it for `Bidirectional` (on a shared host mount).
fn propagation(m: &proto::Mount) -> Result<Propagation, Status> {
    use proto::MountPropagation as P;
    match P::try_from(m.propagation) {
        Ok(P::PropagationPrivate) => Ok(Propagation::Private),
        Ok(p @ (P::PropagationHostToContainer | P::PropagationBidirectional)) => {
            let bidirectional = p == P::PropagationBidirectional;
            let host = crate::pod::mounts::mount_of(std::path::Path::new(&m.host_path))
                .map_err(|e| Status::invalid_argument(format!("mount {}: {e}", m.host_path)))?;
            let (ok, needs) = if bidirectional {
                (host.shared, "a shared")
            } else {
                (host.shared || host.slave, "a shared or slave")
            };
            if !ok {
                let name = if bidirectional {
                    "Bidirectional"
                } else {
                    "HostToContainer"
                };
                return Err(Status::failed_precondition(format!(
                    "mount {}: {name} propagation needs {needs} host mount, and {} is mounted \
                     on {} as a {} one (mount --make-rshared {})",
                    m.host_path,
                    m.host_path,
                    host.mount_point,
                    if host.slave { "slave" } else { "private" },
                    host.mount_point
                )));
            }
            Ok(if bidirectional {
                Propagation::Shared
            } else {
                Propagation::Slave
            })
        }
        Err(_) => Err(Status::invalid_argument(format!(
            "mount {}: unknown propagation {}",
            m.container_path, m.propagation
        ))),
    }
}

/// Refuses the bidirectional mounts of a container in a sandbox whose stage1 `stage1` cannot
/// honour them, as the CRI asks: a kvm sandbox's (a mount made in its VM is the guest
/// kernel's; the host's mounts reach it with HostToContainer).
pub fn check_propagation_for(
    stage1: Option<&str>,
    config: &proto::ContainerConfig,
) -> Result<(), Status> {
    let bidirectional = proto::MountPropagation::PropagationBidirectional as i32;
    match config
        .mounts
        .iter()
        .find(|m| m.propagation == bidirectional)
    {
        Some(m) if stage1 == Some("kvm") => Err(Status::invalid_argument(format!(
            "mount {}: PROPAGATION_BIDIRECTIONAL: {}",
            m.container_path,
            orbit_stage1::agent::BIDIRECTIONAL_REFUSED
        ))),
        _ => Ok(()),
    }
}

/// The container's devices (see [`crate::pod::devices::resolve`]).
fn devices(asked: &[proto::Device]) -> Result<Vec<orbit_stage1::Device>, Status> {
    let mut out = Vec::new();
    for d in asked {
        out.extend(
            crate::pod::devices::resolve(&d.host_path, &d.container_path, &d.permissions)
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
        );
    }
    Ok(out)
}

/// The size of a kvm sandbox's VM from the kubelet's pod resources and the RuntimeClass
/// overhead: memory in MiB (the pod's limit plus the overhead, or plus 192 MiB for the guest
/// without one) and vCPUs (the CPU limit and overhead, rounded up); `None` where the pod
/// sets no limit.
pub fn vm_size(linux: &proto::LinuxPodSandboxConfig) -> (Option<u64>, Option<u64>) {
    let pos = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
    let limits = linux.resources.as_ref();
    let overhead = linux.overhead.as_ref();
    let memory = limits.and_then(|r| pos(r.memory_limit_in_bytes)).map(|m| {
        let extra = overhead
            .and_then(|o| pos(o.memory_limit_in_bytes))
            .unwrap_or(192 << 20);
        (m + extra).div_ceil(1 << 20)
    });
    let millis =
        |r: &proto::LinuxContainerResources| Some(pos(r.cpu_quota)? * 1000 / pos(r.cpu_period)?);
    let cpus = limits
        .and_then(millis)
        .map(|m| (m + overhead.and_then(millis).unwrap_or(0)).div_ceil(1000));
    (memory, cpus)
}

/// The volumes of the container's mounts (named as [`app_request`]'s mounts): host paths,
/// or images from the store (see [`super::image_volume`]).
pub fn volumes(
    ctx: &super::CriContext,
    config: &proto::ContainerConfig,
    app: &str,
) -> Result<Vec<Volume>, Status> {
    config
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let name = format!("{app}-m{i}");
            match &m.image {
                Some(image) => super::image_volume::volume(ctx, image, name),
                None => Ok(Volume {
                    name,
                    kind: VolumeKind::Host,
                    source: Some(m.host_path.clone().into()),
                    read_only: m.readonly,
                    image: None,
                    recursive_read_only: m.recursive_read_only,
                    // Checked against the sandbox's user namespace (`userns::check_container`).
                    idmap: !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty(),
                }),
            }
        })
        .collect()
}

/// Makes the kubelet's log path (`log_directory/log_path`) show the app's CRI log: a
/// symbolic link to the file the stage1 writes.
pub fn link_log(pod: &PodRef, app: &str, log_path: &str) -> Result<(), Status> {
    if log_path.is_empty() {
        return Ok(());
    }
    let target = orbit_stage1::paths::app_log(&pod.path, app);
    let link = std::path::Path::new(log_path);
    let err =
        |e: std::io::Error| Status::internal(format!("cannot link the log at {log_path}: {e}"));
    if let Some(d) = link.parent() {
        std::fs::create_dir_all(d).map_err(err)?;
    }
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).map_err(err)
}

/// Another name of the link at `link` to `target` in the same directory: where the kubelet
/// renamed it to rotate the log.
pub fn renamed_link(
    link: &std::path::Path,
    target: &std::path::Path,
) -> Option<std::path::PathBuf> {
    std::fs::read_dir(link.parent()?)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p != link && std::fs::read_link(p).is_ok_and(|t| t == target))
}

/// Moves `from` to `to`, replacing what is there: a rename, or across file systems a copy
/// renamed into place.
pub fn move_file(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            // A new file (never through a link someone left at the temporary name).
            let tmp = to.with_extension(format!("orbit-tmp-{}", uuid::Uuid::new_v4().simple()));
            let copied = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .and_then(|mut out| std::io::copy(&mut std::fs::File::open(from)?, &mut out))
                .and_then(|_| std::fs::rename(&tmp, to));
            if copied.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            copied?;
            std::fs::remove_file(from)
        }
        r => r,
    }
}

/// Waits for `child` — the leader of its own process group — (its output read meanwhile),
/// killing the group after `timeout` and answering once all of it is gone. With `asked`,
/// the child is first asked (SIGTERM) to end the command itself and given that long: a kvm
/// pod's `orbit enter`, whose command runs in the VM, exits once the guest has confirmed
/// that nothing of it is left. Output is collected until the command exits and then for at
/// most a second more: a process it left in the background holding the pipes does not hold
/// the answer.
pub fn output_within(
    mut child: std::process::Child,
    timeout: Option<Duration>,
    asked: Option<Duration>,
) -> Result<std::process::Output, Status> {
    use std::sync::{Arc, Mutex};
    let reader = |r: Option<Box<dyn Read + Send>>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let b = buf.clone();
        std::thread::spawn(move || {
            if let Some(mut r) = r {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock()
                        .expect("no panics holding it")
                        .extend_from_slice(&chunk[..n]);
                }
            }
            let _ = tx.send(());
        });
        (buf, rx)
    };
    let (out, out_done) = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let (err, err_done) = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = timeout.map(|t| Instant::now() + t);
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .map_err(|e| Status::internal(format!("waiting for the command: {e}")))?
        {
            break st;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            if let Some(grace) = asked {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                let until = Instant::now() + grace;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            // The whole process group: the command `orbit enter` started stays in it. The
            // answer waits until all of it is gone (reaped by the container's init).
            let group = [nix::unistd::Pid::from_raw(child.id() as i32)];
            super::procgroups::kill(&group);
            let _ = child.kill();
            let _ = child.wait();
            super::procgroups::wait_gone(&group, super::procgroups::GONE_WITHIN);
            return Err(Status::deadline_exceeded(format!(
                "the command timed out after {}s",
                timeout.unwrap_or_default().as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let drain_until = Instant::now() + Duration::from_secs(1);
    for done in [out_done, err_done] {
        let _ = done.recv_timeout(drain_until.saturating_duration_since(Instant::now()));
    }
    let take =
        |b: Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().expect("no panics holding it"));
    Ok(std::process::Output {
        status,
        stdout: take(out),
        stderr: take(err),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_kvm_sandbox_refuses_bidirectional_mounts() {
        use proto::MountPropagation as P;
        let with = |p: P| proto::ContainerConfig {
            mounts: vec![proto::Mount {
                container_path: "/mnt".into(),
                host_path: "/tmp".into(),
                propagation: p as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = check_propagation_for(Some("kvm"), &with(P::PropagationBidirectional)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("/mnt") && e.message().contains("guest's kernel"));
        for p in [P::PropagationHostToContainer, P::PropagationPrivate] {
            check_propagation_for(Some("kvm"), &with(p)).unwrap();
        }
        for stage1 in [Some("ns"), Some("fly"), None] {
            check_propagation_for(stage1, &with(P::PropagationBidirectional)).unwrap();
        }
    }

    #[test]
    fn recursive_read_only_needs_readonly_and_private_propagation() {
        use proto::MountPropagation as P;
        let mount = |readonly, rro, p: P| proto::Mount {
            container_path: "/mnt".into(),
            host_path: "/tmp".into(),
            readonly,
            recursive_read_only: rro,
            propagation: p as i32,
            ..Default::default()
        };
        for ok in [
            mount(false, false, P::PropagationPrivate),
            mount(true, false, P::PropagationHostToContainer),
            mount(false, false, P::PropagationBidirectional),
        ] {
            assert!(check_read_only(&ok).is_ok(), "{ok:?}");
        }
        for (bad, want) in [
            (mount(false, true, P::PropagationPrivate), "readonly: true"),
            (
                mount(true, true, P::PropagationHostToContainer),
                "not PROPAGATION_HOST_TO_CONTAINER",
            ),
            (
                mount(true, true, P::PropagationBidirectional),
                "not PROPAGATION_BIDIRECTIONAL",
            ),
        ] {
            let e = check_read_only(&bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains(want), "{}", e.message());
        }
        if orbit_stage1_linux::recursive_read_only_supported() {
            assert!(check_read_only(&mount(true, true, P::PropagationPrivate)).is_ok());
        }
    }

    #[test]
    fn a_kvm_sandbox_is_sized_by_the_pods_limits_and_overhead() {
        let res = |memory: i64, quota: i64| proto::LinuxContainerResources {
            memory_limit_in_bytes: memory,
            cpu_quota: quota,
            cpu_period: 100_000,
            ..Default::default()
        };
        let mut linux = proto::LinuxPodSandboxConfig::default();
        assert_eq!(vm_size(&linux), (None, None));
        linux.resources = Some(res(512 << 20, 150_000));
        assert_eq!(vm_size(&linux), (Some(704), Some(2)));
        linux.overhead = Some(res(100 << 20, 50_000));
        assert_eq!(vm_size(&linux), (Some(612), Some(2)));
    }
}
