//! The CRI `RuntimeService`: pod sandboxes are mutable orbit pods (the `orbit app sandbox`
//! machinery), containers are their apps. Every answer is read from the store; every
//! change goes through the same library calls and stage1 entrypoints as the CLI.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::proto::{self, runtime_service_server::RuntimeService};
use super::records::{self, Container, ContainerMeta, Sandbox, SandboxMeta};
use super::{blocking, now, status_of, streaming, CriContext};
use crate::api::convert::LABEL_PREFIX;
use crate::pod::lifecycle;
use crate::pod::prepare::{self, PodRequest};
use crate::pod::stage1::{Stage1, STAGE1_ANNOTATION};
use crate::pod::status::{self, AppInfo};
use crate::pod::store::{PodRef, PodStore};
use crate::trust::TrustStore;

/// The runtime service.
#[derive(Clone)]
pub struct Runtime {
    pub(super) ctx: Arc<CriContext>,
    /// Whether sandboxes with a user namespace can run here (probed once).
    pub(super) userns: Arc<super::userns::Support>,
}

/// Marks pods made by the CRI server.
pub const CRI_ANNOTATION: &str = "orbit.dev/cri";

fn sandbox_state(pod: &PodRef) -> proto::PodSandboxState {
    if status::is_running(pod) {
        proto::PodSandboxState::SandboxReady
    } else {
        proto::PodSandboxState::SandboxNotready
    }
}

fn sandbox_summary(s: &Sandbox) -> proto::PodSandbox {
    let c = &s.config;
    proto::PodSandbox {
        id: s.pod.uuid.clone(),
        metadata: c.metadata.clone(),
        state: sandbox_state(&s.pod) as i32,
        created_at: s.meta.created_at,
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        runtime_handler: s.meta.runtime_handler.clone(),
    }
}

fn labels_match(
    have: &std::collections::HashMap<String, String>,
    want: &std::collections::HashMap<String, String>,
) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// The app of a container, as the pod reports it now (its directory may have moved).
fn app_of(pods: &PodStore, c: &Container) -> Option<AppInfo> {
    let pod = pods.refresh(&c.sandbox.pod).ok()?;
    status::info(&pod)
        .ok()?
        .apps
        .into_iter()
        .find(|a| a.name == c.meta.app)
}

fn container_state(app: Option<&AppInfo>) -> proto::ContainerState {
    use orbit_stage1::AppState;
    match app.map(|a| a.status.state) {
        Some(AppState::Created) => proto::ContainerState::ContainerCreated,
        Some(AppState::Running) => proto::ContainerState::ContainerRunning,
        Some(AppState::Exited) => proto::ContainerState::ContainerExited,
        None => proto::ContainerState::ContainerUnknown,
    }
}

fn container_summary(pods: &PodStore, c: &Container) -> proto::Container {
    let app = app_of(pods, c);
    proto::Container {
        id: c.id.clone(),
        pod_sandbox_id: c.sandbox.pod.uuid.clone(),
        metadata: c.config.metadata.clone(),
        image: c.config.image.clone(),
        image_ref: c.meta.image_id.clone(),
        state: container_state(app.as_ref()) as i32,
        created_at: c.meta.created_at,
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        image_id: c.meta.image_id.clone(),
    }
}

fn nanos(t: &Option<String>) -> i64 {
    t.as_deref().map_or(0, crate::clock::nanos)
}

fn container_status(pods: &PodStore, c: &Container) -> proto::ContainerStatus {
    let app = app_of(pods, c);
    let st = app.as_ref().map(|a| &a.status);
    let exited = matches!(st.map(|s| s.state), Some(orbit_stage1::AppState::Exited));
    // Exited without a recorded code: its stage1 was killed before it could say; that is
    // not a success.
    let unknown_end = exited && st.is_some_and(|s| s.exit_code.is_none());
    let exit_code = st
        .and_then(|s| s.exit_code)
        .unwrap_or(if unknown_end { 255 } else { 0 });
    let reason = match st {
        Some(s) if s.reason.is_some() => s.reason.clone().unwrap_or_default(),
        Some(s) if s.error.is_some() => "StartError".into(),
        _ if unknown_end => "Unknown".into(),
        _ if exited && exit_code == 0 => "Completed".into(),
        _ if exited => "Error".into(),
        _ => String::new(),
    };
    proto::ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state: container_state(app.as_ref()) as i32,
        created_at: c.meta.created_at,
        started_at: st.map_or(0, |s| nanos(&s.started_at)),
        finished_at: st.map_or(0, |s| nanos(&s.finished_at)),
        exit_code,
        image: c.config.image.clone(),
        image_ref: c.meta.image_id.clone(),
        reason,
        message: st.and_then(|s| s.error.clone()).unwrap_or_default(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c.config.mounts.clone(),
        log_path: c.meta.log_path.clone(),
        image_id: c.meta.image_id.clone(),
        resources: c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|r| proto::ContainerResources {
                linux: Some(r),
                windows: None,
            }),
        user: container_user(pods, c),
    }
}

/// The identity the container's first process is given: its app's user in the pod's
/// manifest, which the stage1 applies exactly before `execve` (groups: the primary one and
/// `additionalGids`, as the kernel lists them; then the gid and uid) or fails the app. Read
/// from there, not from /proc, so it holds once the app has exited too, and in a VM.
fn container_user(pods: &PodStore, c: &Container) -> Option<proto::ContainerUser> {
    let pod = pods.refresh(&c.sandbox.pod).ok()?;
    let app = status::manifest(&pod)
        .ok()?
        .apps
        .into_iter()
        .find(|a| a.name == c.meta.app)?;
    let mut groups: Vec<i64> = std::iter::once(app.user.gid)
        .chain(app.user.additional_gids)
        .map(i64::from)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Some(proto::ContainerUser {
        linux: Some(proto::LinuxContainerUser {
            uid: app.user.uid.into(),
            gid: app.user.gid.into(),
            supplemental_groups: groups,
        }),
    })
}

/// The `info` map of a verbose status (crictl inspect prints its `info` entry as JSON).
fn verbose_info(v: serde_json::Value) -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([("info".to_string(), v.to_string())])
}

/// The pod's first address without its prefix length.
fn pod_ip(pod: &PodRef) -> String {
    status::info(pod)
        .ok()
        .and_then(|i| i.networks.first().and_then(|n| n.ips.first().cloned()))
        .map(|ip| ip.split('/').next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// A name orbit accepts for the app of container `name` (attempt `attempt`).
fn app_name(name: &str, attempt: u32) -> String {
    let mut n: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    n = n.trim_start_matches('-').to_string();
    if n.is_empty() {
        n = "container".into();
    }
    let suffix = format!("-{attempt}");
    n.truncate(63 - suffix.len());
    n + &suffix
}

/// What runtime handler `name` (a stage1; "" is the default, `ns`) implements: recursive
/// read-only mounts where the built-in flavors make them (`ns`, `fly`, and `kvm`, whose
/// host side clones a volume's tree and sets every mount of it read-only, as `ns` does) and
/// the kernel has `mount_setattr(2)`; nothing is promised for an external stage1.
fn handler_features(name: &str, userns_ok: bool) -> proto::RuntimeHandlerFeatures {
    let builtin = name.is_empty() || crate::pod::stage1::BUILTIN.contains(&name);
    proto::RuntimeHandlerFeatures {
        recursive_read_only_mounts: builtin && orbit_stage1_linux::recursive_read_only_supported(),
        // ns only (also the default handler ""), where the store takes idmapped mounts: fly
        // shares the node's namespaces, a kvm sandbox has a kernel of its own (see `userns`).
        user_namespaces: userns_ok && (name.is_empty() || name == "ns"),
    }
}

/// The stage1 a sandbox runs with: the RuntimeClass handler (which the cluster admin
/// controls), else the pod's `orbit.dev/stage1` annotation (which any pod author controls:
/// it may pick an isolating stage1, never `fly`), else `ns`. Only stage1s by name — the
/// built-in flavors and the config's `stage1.d/` entries — never a path.
fn stage1_for(
    handler: &str,
    annotation: Option<&String>,
    config: &crate::config::ConfigDirs,
) -> Result<String, Status> {
    let known = crate::pod::stage1::available(config);
    let (name, from_annotation) = match (handler, annotation) {
        ("", Some(a)) => (a.clone(), true),
        ("", None) => ("ns".to_string(), false),
        (h, _) => (h.to_string(), false),
    };
    if !known.contains(&name) {
        return Err(Status::invalid_argument(format!(
            "runtime handler {name}: not a stage1 this runtime offers ({})",
            known.join(", ")
        )));
    }
    if from_annotation && name == "fly" {
        return Err(Status::permission_denied(
            "the fly stage1 does not isolate pods: it is available through a RuntimeClass handler only, not the orbit.dev/stage1 annotation",
        ));
    }
    Ok(name)
}

impl Runtime {
    fn pods(&self) -> PodStore {
        PodStore::new(&self.ctx.root)
    }

    /// Prepares and starts a sandbox; on failure nothing is left.
    fn run_sandbox(&self, req: proto::RunPodSandboxRequest) -> Result<String, Status> {
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("RunPodSandbox needs a config"))?;
        let ctx = &self.ctx;
        let handler = stage1_for(
            &req.runtime_handler,
            config.annotations.get(STAGE1_ANNOTATION),
            &ctx.config,
        )?;
        let stage1 = Stage1::select(Some(&handler), None, None, &ctx.config)
            .map_err(|e| Status::invalid_argument(format!("runtime handler {handler}: {e}")))?;
        let linux = config.linux.clone().unwrap_or_default();
        let ns = linux
            .security_context
            .as_ref()
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let user_namespace =
            super::userns::for_sandbox(&ns, &handler, || self.userns.check(&ctx.root).clone())?;
        super::userns::check_sandbox(user_namespace.as_ref(), &linux)?;
        let host_net = ns.network == proto::NamespaceMode::Node as i32;
        let mut host_namespaces = Vec::new();
        if ns.pid == proto::NamespaceMode::Node as i32 {
            host_namespaces.push("pid".to_string());
        }
        if ns.ipc == proto::NamespaceMode::Node as i32 {
            host_namespaces.push("ipc".to_string());
        }
        if !host_namespaces.is_empty() && handler == "kvm" {
            return Err(Status::invalid_argument(
                "a kvm sandbox cannot share the host's pid or ipc namespace",
            ));
        }
        if host_net && handler == "kvm" {
            return Err(Status::invalid_argument(format!(
                "hostNetwork: {}",
                orbit_stage1::agent::HOST_NETWORK_REFUSED
            )));
        }
        let mut sysctls = super::sysctl::check(&linux.sysctls, host_net, &host_namespaces)?;
        let cgroup_parent = Some(linux.cgroup_parent.as_str()).filter(|p| !p.is_empty());
        if let Some(p) = cgroup_parent {
            super::start::check_cgroup_parent(ctx, p)?;
        }
        let ports = config
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| {
                let proto_name = match proto::Protocol::try_from(p.protocol) {
                    Ok(proto::Protocol::Udp) => "udp",
                    Ok(proto::Protocol::Sctp) => "sctp",
                    _ => "tcp",
                };
                let mut s = format!("{proto_name}:{}:{}", p.container_port, p.host_port);
                if !p.host_ip.is_empty() {
                    s.push(':');
                    s.push_str(&p.host_ip);
                }
                s
            })
            .collect();
        let dns = config
            .dns_config
            .as_ref()
            .map(|d| crate::net::dns::DnsRequest {
                servers: d.servers.clone(),
                search: d.searches.clone(),
                options: d.options.clone(),
                ..Default::default()
            })
            .unwrap_or_default();
        let mut annotations = BTreeMap::new();
        annotations.insert(CRI_ANNOTATION.to_string(), "sandbox".to_string());
        for (k, v) in &config.labels {
            annotations.insert(format!("{LABEL_PREFIX}{k}"), v.clone());
        }
        if handler == "kvm" {
            // The VM is the pod's own kernel: its agent sets them there, before any container.
            if !sysctls.is_empty() {
                annotations.insert(
                    orbit_stage1::agent::SYSCTLS_ANNOTATION.to_string(),
                    super::sysctl::for_guest(&std::mem::take(&mut sysctls)),
                );
            }
            let kernel = crate::pod::stage1::kvm_kernel(ctx.kvm_kernel.as_deref(), &ctx.config)
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            annotations.insert(
                crate::pod::stage1::KVM_KERNEL_ANNOTATION.to_string(),
                kernel.display().to_string(),
            );
            if let Some(a) = &ctx.kvm_accel {
                annotations.insert(
                    crate::pod::stage1::KVM_ACCEL_ANNOTATION.to_string(),
                    a.clone(),
                );
            }
            let (memory_mib, cpus) = super::spec::vm_size(&linux);
            if let Some(m) = memory_mib {
                annotations.insert(
                    crate::pod::stage1::KVM_MEMORY_ANNOTATION.to_string(),
                    m.to_string(),
                );
            }
            if let Some(c) = cpus {
                annotations.insert(
                    crate::pod::stage1::KVM_CPUS_ANNOTATION.to_string(),
                    c.to_string(),
                );
            }
        }
        let hostname = Some(config.hostname.clone()).filter(|h| !h.is_empty());
        let req = PodRequest {
            apps: vec![],
            volumes: vec![],
            hostname,
            net: if host_net {
                "host".into()
            } else {
                ctx.network.clone()
            },
            ports: if host_net { Vec::new() } else { ports },
            dns,
            cni_plugin_dirs: ctx.cni_plugin_dirs.clone(),
            registry: ctx.registry.clone(),
            pull_policy: crate::image::fetch::PullPolicy::Never,
            no_overlay: false,
            annotations,
            mutable: true,
            insecure_image: ctx.insecure_image,
            insecure: Default::default(),
            private_users: false,
            user_namespace,
            log: Some("file".into()),
            host_namespaces,
        };
        let pods = self.pods();
        let prepared = prepare::prepare(
            &ctx.store(),
            &TrustStore::new(ctx.config.clone()),
            &pods,
            &req,
            stage1,
        )
        .map_err(|e| status_of(e.into()))?;
        let pod = prepared.pod.clone();
        let meta = SandboxMeta {
            runtime_handler: handler,
            created_at: now(),
        };
        let started = records::save_sandbox(&pod.path, &config, &meta)
            .map_err(|e| Status::internal(format!("cannot record the sandbox: {e}")))
            .and_then(|()| super::start::start_sandbox(ctx, prepared, cgroup_parent))
            .and_then(|()| super::sysctl::apply(&pods, &pod, &sysctls));
        if let Err(e) = started {
            if let Ok(p) = pods.find(&pod.uuid) {
                if status::is_running(&p) {
                    let _ = lifecycle::stop(&pods, &p.uuid, true, Duration::from_secs(10), false);
                }
                if let Ok(p) = pods.find(&pod.uuid) {
                    let _ = lifecycle::remove(&pods, &p, false);
                }
            }
            return Err(e);
        }
        Ok(pod.uuid)
    }

    fn stop_sandbox(&self, id: &str) -> Result<(), Status> {
        let pods = self.pods();
        let Some(s) = records::find_sandbox(&pods, id) else {
            return Ok(()); // Gone: stopping it is done.
        };
        let Ok(pod) = pods.refresh(&s.pod) else {
            return Ok(());
        };
        if status::is_running(&pod) {
            // The apps get SIGTERM, then SIGKILL after the grace period.
            if lifecycle::stop(&pods, &pod.uuid, false, Duration::from_secs(10), false).is_err() {
                if let Ok(p) = pods.refresh(&pod) {
                    if status::is_running(&p) {
                        lifecycle::stop(&pods, &p.uuid, true, Duration::from_secs(10), false)
                            .map_err(|e| status_of(e.into()))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn remove_sandbox(&self, id: &str) -> Result<(), Status> {
        self.stop_sandbox(id)?;
        let pods = self.pods();
        let Some(s) = records::find_sandbox(&pods, id) else {
            return Ok(());
        };
        for c in records::containers_of(&s) {
            let _ = std::fs::remove_file(&c.meta.log_path);
        }
        match pods.refresh(&s.pod) {
            Ok(p) => lifecycle::remove(&pods, &p, false).map_err(|e| status_of(e.into())),
            Err(_) => Ok(()),
        }
    }

    fn create_container(&self, req: proto::CreateContainerRequest) -> Result<String, Status> {
        let ctx = &self.ctx;
        let pods = self.pods();
        let sandbox = records::find_sandbox(&pods, &req.pod_sandbox_id)
            .ok_or_else(|| Status::not_found(format!("no sandbox {}", req.pod_sandbox_id)))?;
        let pod = pods
            .refresh(&sandbox.pod)
            .map_err(|e| status_of(e.into()))?;
        if !status::is_running(&pod) {
            return Err(Status::failed_precondition(format!(
                "sandbox {} is not ready",
                pod.uuid
            )));
        }
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("CreateContainer needs a config"))?;
        let pod_userns = status::manifest(&pod)
            .map_err(|e| status_of(e.into()))?
            .user_namespace;
        super::userns::check_container(pod_userns.as_ref(), &config)?;
        let meta = config.metadata.clone().unwrap_or_default();
        if meta.name.is_empty() {
            return Err(Status::invalid_argument(
                "the container has no metadata.name",
            ));
        }
        let image_ref = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let image = super::images::find(ctx, &image_ref).map_err(|e| {
            Status::not_found(format!(
                "image {image_ref} is not in the store (PullImage first): {e}"
            ))
        })?;
        let app = app_name(&meta.name, meta.attempt);
        if records::containers_of(&sandbox)
            .iter()
            .any(|c| c.meta.app == app)
        {
            return Err(Status::already_exists(format!(
                "sandbox {} already has container {} attempt {}",
                pod.uuid, meta.name, meta.attempt
            )));
        }
        super::spec::check_propagation_for(status::stage1_name(&pod).as_deref(), &config)?;
        let spec = super::spec::app_request(&config, &image.digest.to_string(), &app)?;
        super::image_volume::check_stage1(&pod, &config)?;
        let volumes = super::spec::volumes(ctx, &config, &app)?;
        let id =
            uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
        let privileged = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged);
        let insecure = crate::pod::isolation::InsecureRun {
            capabilities: privileged,
            seccomp: privileged || super::spec::unconfined_seccomp(&config, ctx.seccomp_default),
            paths: privileged,
            devices: privileged,
        };
        let added = prepare::add_app_with_volumes(
            &ctx.store(),
            &TrustStore::new(ctx.config.clone()),
            &pod,
            &spec,
            &volumes,
            true,
            insecure,
        )
        .map_err(|e| status_of(e.into()))?;
        let log_path = if sandbox.config.log_directory.is_empty() || config.log_path.is_empty() {
            String::new()
        } else {
            PathBuf::from(&sandbox.config.log_directory)
                .join(&config.log_path)
                .display()
                .to_string()
        };
        let record = ContainerMeta {
            app: added.name.clone(),
            created_at: now(),
            image_id: image.digest.to_string(),
            image_ref,
            log_path: log_path.clone(),
        };
        let done = lifecycle::app_request(&pod, "app-add", &added.name, false)
            .map_err(|e| status_of(e.into()))
            .and_then(|()| {
                records::save_container(&pod.path, &id, &config, &record)
                    .map_err(|e| Status::internal(format!("cannot record the container: {e}")))
            })
            .and_then(|()| super::spec::link_log(&pod, &added.name, &log_path));
        if let Err(e) = done {
            let _ = lifecycle::app_request(&pod, "app-rm", &added.name, false);
            let _ = prepare::remove_app(&pod, &added.name);
            records::remove_container(&pod.path, &id);
            return Err(e);
        }
        if let Some(c) = records::find_container(&pods, &id) {
            super::events::emit(ctx, &c, proto::ContainerEventType::ContainerCreatedEvent);
        }
        Ok(id)
    }

    fn container(&self, id: &str) -> Result<Container, Status> {
        records::find_container(&self.pods(), id)
            .ok_or_else(|| Status::not_found(format!("no container {id}")))
    }

    fn running_pod(&self, c: &Container) -> Result<PodRef, Status> {
        let pod = self
            .pods()
            .refresh(&c.sandbox.pod)
            .map_err(|e| status_of(e.into()))?;
        if !status::is_running(&pod) {
            return Err(Status::failed_precondition(format!(
                "the sandbox of container {} is not running",
                c.id
            )));
        }
        Ok(pod)
    }

    fn stop_container(&self, id: &str, timeout: i64) -> Result<(), Status> {
        let Some(c) = records::find_container(&self.pods(), id) else {
            return Ok(());
        };
        let Ok(pod) = self.running_pod(&c) else {
            return Ok(()); // The sandbox is down: so is the container.
        };
        let pods = self.pods();
        let running = |c: &Container| {
            app_of(&pods, c).is_some_and(|a| a.status.state == orbit_stage1::AppState::Running)
        };
        if !running(&c) {
            return Ok(());
        }
        if timeout > 0 {
            lifecycle::app_request(&pod, "app-stop", &c.meta.app, false)
                .map_err(|e| status_of(e.into()))?;
            let deadline = std::time::Instant::now() + Duration::from_secs(timeout as u64);
            while running(&c) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if running(&c) {
            lifecycle::app_kill(&pod, &c.meta.app, false).map_err(|e| status_of(e.into()))?;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while running(&c) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if !running(&c) {
            super::events::emit(
                &self.ctx,
                &c,
                proto::ContainerEventType::ContainerStoppedEvent,
            );
        }
        Ok(())
    }

    fn remove_container(&self, id: &str) -> Result<(), Status> {
        let Some(c) = records::find_container(&self.pods(), id) else {
            return Ok(());
        };
        self.stop_container(id, 0)?;
        if let Ok(pod) = self.running_pod(&c) {
            lifecycle::app_request(&pod, "app-rm", &c.meta.app, false)
                .map_err(|e| status_of(e.into()))?;
        }
        let pod = self
            .pods()
            .refresh(&c.sandbox.pod)
            .map_err(|e| status_of(e.into()))?;
        let _ = prepare::remove_app(&pod, &c.meta.app);
        if !c.meta.log_path.is_empty() {
            let _ = std::fs::remove_file(&c.meta.log_path);
        }
        records::remove_container(&pod.path, &c.id);
        super::events::emit(
            &self.ctx,
            &c,
            proto::ContainerEventType::ContainerDeletedEvent,
        );
        Ok(())
    }

    /// After the kubelet renamed the container's log (our link to the file the stage1
    /// writes) to rotate it: the file itself takes the rotated name, the stage1 starts a
    /// new one, and the log path shows that. Nothing written before or after is lost.
    fn reopen_log(&self, id: &str) -> Result<(), Status> {
        let c = self.container(id)?;
        let pod = self.running_pod(&c)?;
        let running = app_of(&self.pods(), &c)
            .is_some_and(|a| a.status.state == orbit_stage1::AppState::Running);
        if !running {
            return Err(Status::failed_precondition(format!(
                "container {id} is not running: there is no log to reopen"
            )));
        }
        if c.meta.log_path.is_empty() {
            return Ok(());
        }
        let live = orbit_stage1::paths::app_log(&pod.path, &c.meta.app);
        let link = std::path::Path::new(&c.meta.log_path);
        let err = |what: &str, e: std::io::Error| Status::internal(format!("{what}: {e}"));
        if let Some(rotated) = super::spec::renamed_link(link, &live) {
            let aside = live.with_extension(format!("rotated-{}", now()));
            std::fs::rename(&live, &aside).map_err(|e| err("cannot move the log aside", e))?;
            if let Err(e) = lifecycle::app_request(&pod, "app-log-reopen", &c.meta.app, false) {
                let _ = std::fs::rename(&aside, &live);
                return Err(status_of(e.into()));
            }
            super::spec::move_file(&aside, &rotated)
                .map_err(|e| err(&format!("cannot move the log to {}", rotated.display()), e))?;
        } else {
            lifecycle::app_request(&pod, "app-log-reopen", &c.meta.app, false)
                .map_err(|e| status_of(e.into()))?;
        }
        super::spec::link_log(&pod, &c.meta.app, &c.meta.log_path)
    }

    fn exec_sync(&self, req: proto::ExecSyncRequest) -> Result<proto::ExecSyncResponse, Status> {
        let c = self.container(&req.container_id)?;
        let pod = self.running_pod(&c)?;
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("ExecSync needs a command"));
        }
        // `orbit enter`: exactly as confined as the app it enters.
        let mut cmd = std::process::Command::new(&self.ctx.orbit);
        cmd.arg("--dir")
            .arg(&self.ctx.root)
            .args(["enter", "--app", &c.meta.app, &pod.uuid, "--"])
            .args(&req.cmd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // Its own process group, so a timeout ends the command and what it started.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| Status::internal(format!("cannot run orbit enter: {e}")))?;
        let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
        // In a VM the command is the guest's to end: `orbit enter` asks and waits for it.
        let asked = (status::stage1_name(&pod).as_deref() == Some("kvm")).then_some(KVM_EXEC_END);
        let out = super::spec::output_within(child, timeout, asked)?;
        Ok(proto::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.status.code().unwrap_or_else(|| {
                use std::os::unix::process::ExitStatusExt;
                128 + out.status.signal().unwrap_or(0)
            }),
        })
    }
}

/// How long a timed-out ExecSync's `orbit enter` in a kvm pod has to end the command in the
/// VM (the guest confirms within 10 s, enter gives up after 12 s) before it is killed.
const KVM_EXEC_END: Duration = Duration::from_secs(15);

/// The stream options of an Exec or Attach, checked as the kubelet checks them.
fn stream_options(
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Result<streaming::Options, Status> {
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument(
            "one of stdin, stdout and stderr must be set",
        ));
    }
    if tty && stderr {
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be set: a terminal has one output",
        ));
    }
    Ok(streaming::Options {
        stdin,
        stdout,
        stderr,
        tty,
    })
}

impl Runtime {
    fn exec_url(&self, req: proto::ExecRequest) -> Result<String, Status> {
        let c = self.container(&req.container_id)?;
        let pod = self.running_pod(&c)?;
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("Exec needs a command"));
        }
        let opts = stream_options(req.stdin, req.stdout, req.stderr, req.tty)?;
        let exec = streaming::Exec {
            orbit: self.ctx.orbit.clone(),
            root: self.ctx.root.clone(),
            relay_terminal: status::stage1_name(&pod).as_deref() == Some("kvm"),
            pod: pod.uuid,
            app: c.meta.app,
            cmd: req.cmd,
        };
        self.ctx
            .streaming
            .url_for(streaming::Pending::Exec(exec, opts))
    }

    fn attach_url(&self, req: proto::AttachRequest) -> Result<String, Status> {
        let c = self.container(&req.container_id)?;
        let pod = self.running_pod(&c)?;
        let opts = stream_options(req.stdin, req.stdout, req.stderr, req.tty)?;
        let pods = self.pods();
        let app = c.meta.app.clone();
        let (stdin, stdin_once, tty) = (c.config.stdin, c.config.stdin_once, c.config.tty);
        let exited = Box::new(move || {
            app_of(&pods, &c).is_none_or(|a| a.status.state == orbit_stage1::AppState::Exited)
        });
        let (p, a) = (pod.clone(), app.clone());
        let stdin_done = (stdin && stdin_once).then(|| {
            Box::new(move || {
                let _ = lifecycle::app_request(&p, "app-stdin-close", &a, false);
            }) as Box<dyn FnOnce() + Send + Sync>
        });
        let (p, a) = (pod.clone(), app.clone());
        let resize = tty.then(|| {
            std::sync::Arc::new(move |cols: u16, rows: u16| {
                let size = [cols.to_string(), rows.to_string()];
                let _ = lifecycle::app_request_with(
                    &p,
                    "app-resize",
                    &a,
                    &["--", &size[0], &size[1]],
                    false,
                );
            }) as std::sync::Arc<dyn Fn(u16, u16) + Send + Sync>
        });
        let attach = streaming::Attach {
            log: orbit_stage1::paths::app_log(&pod.path, &app),
            exited,
            stdin: (stdin && req.stdin).then(|| orbit_stage1::paths::app_stdin(&pod.path, &app)),
            stdin_done,
            resize,
        };
        self.ctx
            .streaming
            .url_for(streaming::Pending::Attach(attach, opts))
    }

    fn port_forward_url(&self, req: proto::PortForwardRequest) -> Result<String, Status> {
        let pods = self.pods();
        let sb = records::find_sandbox(&pods, &req.pod_sandbox_id)
            .ok_or_else(|| Status::not_found(format!("no sandbox {}", req.pod_sandbox_id)))?;
        let pod = pods.refresh(&sb.pod).map_err(|e| status_of(e.into()))?;
        let info = status::info(&pod).map_err(|e| status_of(e.into()))?;
        let Some(pid) = info.pid.filter(|_| status::is_running(&pod)) else {
            return Err(Status::failed_precondition(format!(
                "sandbox {} is not running",
                pod.uuid
            )));
        };
        if info.stage1 == "kvm" {
            // The ports are inside the VM: the stage1 relays.
            let stage1 =
                crate::pod::stage1::Stage1::load(&pod.path).map_err(|e| status_of(e.into()))?;
            let (dir, uuid) = (pod.path.clone(), pod.uuid.clone());
            let command = move |port: u16| {
                let mut c = stage1
                    .command("port-forward", &dir, &uuid, false)
                    .map_err(|e| e.to_string())?;
                c.args(["--", &port.to_string()]);
                Ok(c)
            };
            return self.ctx.streaming.url_for(streaming::Pending::PortForward(
                streaming::PortForwardTarget {
                    via: streaming::PortForwardVia::Stage1(std::sync::Arc::new(command)),
                    sandbox: pod.uuid.clone(),
                    ports: req.port,
                },
            ));
        }
        let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| {
            Status::failed_precondition(format!("cannot open the sandbox's network namespace: {e}"))
        })?;
        // A pod that shares the host's network (fly, host network) has the node's ports.
        let asked_for_host = sb
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|c| c.namespace_options.as_ref())
            .is_some_and(|n| n.network == proto::NamespaceMode::Node as i32);
        if super::is_nodes_namespace(&netns, "net") && !asked_for_host {
            return Err(Status::failed_precondition(format!(
                "sandbox {} runs in the node's network namespace without asking for it",
                pod.uuid
            )));
        }
        let target = streaming::PortForwardTarget {
            via: streaming::PortForwardVia::Netns(std::sync::Arc::new(netns)),
            sandbox: pod.uuid,
            ports: req.port,
        };
        self.ctx
            .streaming
            .url_for(streaming::Pending::PortForward(target))
    }
}

macro_rules! run_blocking {
    ($self:ident, $f:expr) => {{
        let this = $self.clone();
        blocking(move || $f(this)).await
    }};
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(
        &self,
        _: Request<proto::VersionRequest>,
    ) -> Result<Response<proto::VersionResponse>, Status> {
        Ok(Response::new(proto::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "orbit".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<proto::RunPodSandboxRequest>,
    ) -> Result<Response<proto::RunPodSandboxResponse>, Status> {
        let req = req.into_inner();
        let id = run_blocking!(self, move |s: Runtime| s.run_sandbox(req))?;
        Ok(Response::new(proto::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<proto::StopPodSandboxRequest>,
    ) -> Result<Response<proto::StopPodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        run_blocking!(self, move |s: Runtime| s.stop_sandbox(&id))?;
        Ok(Response::new(proto::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<proto::RemovePodSandboxRequest>,
    ) -> Result<Response<proto::RemovePodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        run_blocking!(self, move |s: Runtime| s.remove_sandbox(&id))?;
        Ok(Response::new(proto::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<proto::PodSandboxStatusRequest>,
    ) -> Result<Response<proto::PodSandboxStatusResponse>, Status> {
        let req = req.into_inner();
        let (id, verbose) = (req.pod_sandbox_id, req.verbose);
        run_blocking!(self, move |s: Runtime| {
            let sb = records::find_sandbox(&s.pods(), &id)
                .ok_or_else(|| Status::not_found(format!("no sandbox {id}")))?;
            let pod = s.pods().refresh(&sb.pod).map_err(|e| status_of(e.into()))?;
            let info = if verbose {
                verbose_info(serde_json::json!({
                    "pod": status::info(&pod).ok(),
                    "manifest": status::manifest(&pod).ok(),
                }))
            } else {
                Default::default()
            };
            let sum = sandbox_summary(&Sandbox {
                pod: pod.clone(),
                ..sb.clone()
            });
            let mut ns = sb
                .config
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|c| c.namespace_options.clone());
            // The user namespace the pod really runs with.
            if let Some(u) = status::manifest(&pod).ok().and_then(|m| m.user_namespace) {
                ns.get_or_insert_with(Default::default).userns_options =
                    Some(super::userns::reported(&u));
            }
            Ok(Response::new(proto::PodSandboxStatusResponse {
                status: Some(proto::PodSandboxStatus {
                    id: sum.id,
                    metadata: sum.metadata,
                    state: sum.state,
                    created_at: sum.created_at,
                    network: Some(proto::PodSandboxNetworkStatus {
                        ip: pod_ip(&pod),
                        additional_ips: vec![],
                    }),
                    linux: Some(proto::LinuxPodSandboxStatus {
                        namespaces: Some(proto::Namespace { options: ns }),
                    }),
                    labels: sum.labels,
                    annotations: sum.annotations,
                    runtime_handler: sum.runtime_handler,
                }),
                info,
                containers_statuses: records::containers_of(&sb)
                    .iter()
                    .map(|c| container_status(&s.pods(), c))
                    .collect(),
                timestamp: now(),
            }))
        })
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<proto::ListPodSandboxRequest>,
    ) -> Result<Response<proto::ListPodSandboxResponse>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        run_blocking!(self, move |s: Runtime| {
            let items = records::sandboxes(&s.pods())
                .iter()
                .map(sandbox_summary)
                .filter(|p| filter.id.is_empty() || p.id.starts_with(&filter.id))
                .filter(|p| filter.state.as_ref().is_none_or(|st| st.state == p.state))
                .filter(|p| labels_match(&p.labels, &filter.label_selector))
                .collect();
            Ok(Response::new(proto::ListPodSandboxResponse { items }))
        })
    }

    async fn create_container(
        &self,
        req: Request<proto::CreateContainerRequest>,
    ) -> Result<Response<proto::CreateContainerResponse>, Status> {
        let req = req.into_inner();
        let id = run_blocking!(self, move |s: Runtime| s.create_container(req))?;
        Ok(Response::new(proto::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: Request<proto::StartContainerRequest>,
    ) -> Result<Response<proto::StartContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        run_blocking!(self, move |s: Runtime| {
            let c = s.container(&id)?;
            let pod = s.running_pod(&c)?;
            lifecycle::app_request(&pod, "app-start", &c.meta.app, false)
                .map_err(|e| status_of(e.into()))?;
            super::events::emit(&s.ctx, &c, proto::ContainerEventType::ContainerStartedEvent);
            Ok(())
        })?;
        Ok(Response::new(proto::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<proto::StopContainerRequest>,
    ) -> Result<Response<proto::StopContainerResponse>, Status> {
        let req = req.into_inner();
        run_blocking!(self, move |s: Runtime| s
            .stop_container(&req.container_id, req.timeout))?;
        Ok(Response::new(proto::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<proto::RemoveContainerRequest>,
    ) -> Result<Response<proto::RemoveContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        run_blocking!(self, move |s: Runtime| s.remove_container(&id))?;
        Ok(Response::new(proto::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<proto::ListContainersRequest>,
    ) -> Result<Response<proto::ListContainersResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        run_blocking!(self, move |s: Runtime| {
            let containers = records::sandboxes(&s.pods())
                .iter()
                .filter(|sb| {
                    f.pod_sandbox_id.is_empty() || sb.pod.uuid.starts_with(&f.pod_sandbox_id)
                })
                .flat_map(records::containers_of)
                .map(|c| container_summary(&s.pods(), &c))
                .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
                .filter(|c| f.state.as_ref().is_none_or(|st| st.state == c.state))
                .filter(|c| labels_match(&c.labels, &f.label_selector))
                .collect();
            Ok(Response::new(proto::ListContainersResponse { containers }))
        })
    }

    async fn container_status(
        &self,
        req: Request<proto::ContainerStatusRequest>,
    ) -> Result<Response<proto::ContainerStatusResponse>, Status> {
        let req = req.into_inner();
        let (id, verbose) = (req.container_id, req.verbose);
        run_blocking!(self, move |s: Runtime| {
            let c = s.container(&id)?;
            let info = if verbose {
                let app = app_of(&s.pods(), &c);
                let manifest = s
                    .pods()
                    .refresh(&c.sandbox.pod)
                    .ok()
                    .and_then(|p| status::manifest(&p).ok())
                    .and_then(|m| m.apps.into_iter().find(|a| a.name == c.meta.app));
                verbose_info(serde_json::json!({
                    "sandboxID": c.sandbox.pod.uuid,
                    "app": c.meta.app,
                    "pid": app.as_ref().and_then(|a| a.status.pid),
                    "status": app.map(|a| a.status),
                    "runtimeSpec": manifest,
                }))
            } else {
                Default::default()
            };
            Ok(Response::new(proto::ContainerStatusResponse {
                status: Some(container_status(&s.pods(), &c)),
                info,
            }))
        })
    }

    async fn update_container_resources(
        &self,
        req: Request<proto::UpdateContainerResourcesRequest>,
    ) -> Result<Response<proto::UpdateContainerResourcesResponse>, Status> {
        let req = req.into_inner();
        run_blocking!(self, move |s: Runtime| {
            let c = s.container(&req.container_id)?;
            let pod = s.running_pod(&c)?;
            let Some(r) = req.linux else {
                return Ok(());
            };
            if status::stage1_name(&pod).as_deref() == Some("kvm") {
                return Err(Status::unimplemented(
                    "changing a running container's resources in a kvm sandbox is not \
                     supported yet: its limits are inside the VM",
                ));
            }
            super::cgroups::update(&pod.path, &pod.uuid, &c.meta.app, &r)?;
            // Recorded, so ContainerStatus reports the limits in force.
            let mut config = c.config.clone();
            config.linux.get_or_insert_with(Default::default).resources = Some(r);
            records::save_container(&pod.path, &c.id, &config, &c.meta)
                .map_err(|e| Status::internal(format!("cannot record the container: {e}")))
        })?;
        Ok(Response::new(proto::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<proto::ReopenContainerLogRequest>,
    ) -> Result<Response<proto::ReopenContainerLogResponse>, Status> {
        let id = req.into_inner().container_id;
        run_blocking!(self, move |s: Runtime| s.reopen_log(&id))?;
        Ok(Response::new(proto::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        req: Request<proto::ExecSyncRequest>,
    ) -> Result<Response<proto::ExecSyncResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(
            run_blocking!(self, move |s: Runtime| s.exec_sync(req))?
        ))
    }

    async fn exec(
        &self,
        req: Request<proto::ExecRequest>,
    ) -> Result<Response<proto::ExecResponse>, Status> {
        let req = req.into_inner();
        let url = run_blocking!(self, move |s: Runtime| s.exec_url(req))?;
        Ok(Response::new(proto::ExecResponse { url }))
    }

    async fn attach(
        &self,
        req: Request<proto::AttachRequest>,
    ) -> Result<Response<proto::AttachResponse>, Status> {
        let req = req.into_inner();
        let url = run_blocking!(self, move |s: Runtime| s.attach_url(req))?;
        Ok(Response::new(proto::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<proto::PortForwardRequest>,
    ) -> Result<Response<proto::PortForwardResponse>, Status> {
        let req = req.into_inner();
        let url = run_blocking!(self, move |s: Runtime| s.port_forward_url(req))?;
        Ok(Response::new(proto::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        req: Request<proto::ContainerStatsRequest>,
    ) -> Result<Response<proto::ContainerStatsResponse>, Status> {
        let id = req.into_inner().container_id;
        run_blocking!(self, move |s: Runtime| {
            let c = s.container(&id)?;
            Ok(Response::new(proto::ContainerStatsResponse {
                stats: Some(super::stats::container(&c)),
            }))
        })
    }

    async fn list_container_stats(
        &self,
        req: Request<proto::ListContainerStatsRequest>,
    ) -> Result<Response<proto::ListContainerStatsResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        run_blocking!(self, move |s: Runtime| {
            let stats = records::sandboxes(&s.pods())
                .iter()
                .filter(|sb| {
                    f.pod_sandbox_id.is_empty() || sb.pod.uuid.starts_with(&f.pod_sandbox_id)
                })
                .flat_map(records::containers_of)
                .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
                .filter(|c| labels_match(&c.config.labels, &f.label_selector))
                .map(|c| super::stats::container(&c))
                .collect();
            Ok(Response::new(proto::ListContainerStatsResponse { stats }))
        })
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<proto::PodSandboxStatsRequest>,
    ) -> Result<Response<proto::PodSandboxStatsResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        run_blocking!(self, move |s: Runtime| {
            let sb = records::find_sandbox(&s.pods(), &id)
                .ok_or_else(|| Status::not_found(format!("no sandbox {id}")))?;
            let containers = records::containers_of(&sb);
            Ok(Response::new(proto::PodSandboxStatsResponse {
                stats: Some(super::stats::sandbox(&sb, &containers)),
            }))
        })
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<proto::ListPodSandboxStatsRequest>,
    ) -> Result<Response<proto::ListPodSandboxStatsResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        run_blocking!(self, move |s: Runtime| {
            let stats = records::sandboxes(&s.pods())
                .iter()
                .filter(|sb| f.id.is_empty() || sb.pod.uuid.starts_with(&f.id))
                .filter(|sb| labels_match(&sb.config.labels, &f.label_selector))
                .map(|sb| super::stats::sandbox(sb, &records::containers_of(sb)))
                .collect();
            Ok(Response::new(proto::ListPodSandboxStatsResponse { stats }))
        })
    }

    async fn update_runtime_config(
        &self,
        _: Request<proto::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<proto::UpdateRuntimeConfigResponse>, Status> {
        // The pod CIDR is the CNI configuration's business.
        Ok(Response::new(proto::UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        req: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let verbose = req.into_inner().verbose;
        let this = self.clone();
        let userns_ok = blocking(move || {
            let ok = this.userns.check(&this.ctx.root).is_ok();
            Ok::<_, Status>(ok)
        })
        .await?;
        let names = crate::pod::stage1::available(&self.ctx.config)
            .into_iter()
            // kvm only with a guest kernel to boot.
            .filter(|name| {
                name != "kvm"
                    || crate::pod::stage1::kvm_kernel(
                        self.ctx.kvm_kernel.as_deref(),
                        &self.ctx.config,
                    )
                    .is_ok()
            });
        // The default handler ("", ns) first, as the kubelet looks it up for pods without a
        // RuntimeClass.
        let handlers = std::iter::once(String::new())
            .chain(names)
            .map(|name| proto::RuntimeHandler {
                features: Some(handler_features(&name, userns_ok)),
                name,
            })
            .collect();
        // Where the pods' state lives (critest probes its file system for idmapped mounts
        // there, as it reads containerd's `stateDir`).
        let info = if verbose {
            let config = serde_json::json!({ "stateDir": self.ctx.root.join("pods") });
            std::collections::HashMap::from([("config".to_string(), config.to_string())])
        } else {
            Default::default()
        };
        Ok(Response::new(proto::StatusResponse {
            status: Some(proto::RuntimeStatus {
                conditions: vec![
                    proto::RuntimeCondition {
                        r#type: "RuntimeReady".into(),
                        status: true,
                        ..Default::default()
                    },
                    proto::RuntimeCondition {
                        r#type: "NetworkReady".into(),
                        status: true,
                        ..Default::default()
                    },
                ],
            }),
            info,
            runtime_handlers: handlers,
            features: Some(proto::RuntimeFeatures {
                // Strict or Merge, and ContainerStatus.user.
                supplemental_groups_policy: true,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        _: Request<proto::CheckpointContainerRequest>,
    ) -> Result<Response<proto::CheckpointContainerResponse>, Status> {
        Err(Status::unimplemented(
            "CheckpointContainer is not supported",
        ))
    }

    type GetContainerEventsStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<proto::ContainerEventResponse, Status>> + Send>,
    >;

    async fn get_container_events(
        &self,
        _: Request<proto::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        use futures_util::StreamExt;
        let stream =
            tokio_stream::wrappers::BroadcastStream::new(self.ctx.events.subscribe()).map(|r| {
                r.map_err(|e| Status::data_loss(format!("container events were dropped: {e}")))
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<proto::ListMetricDescriptorsRequest>,
    ) -> Result<Response<proto::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(proto::ListMetricDescriptorsResponse {
            descriptors: vec![],
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<proto::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<proto::ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(proto::ListPodSandboxMetricsResponse {
            pod_metrics: vec![],
        }))
    }

    async fn runtime_config(
        &self,
        _: Request<proto::RuntimeConfigRequest>,
    ) -> Result<Response<proto::RuntimeConfigResponse>, Status> {
        let driver = if self.ctx.systemd {
            proto::CgroupDriver::Systemd
        } else {
            proto::CgroupDriver::Cgroupfs
        };
        Ok(Response::new(proto::RuntimeConfigResponse {
            linux: Some(proto::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }
}
