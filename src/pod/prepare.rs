//! Preparing a pod: resolve (or fetch) every app's image, work out each app's command,
//! environment, identity and root, and write the pod directory — `pod.json`, the app
//! directories, empty volumes, the /etc files, the chosen stage1 — moving it
//! `embryo → prepare → prepared` by renames. Images are resolved before the pod directory
//! exists, so a bad image leaves nothing behind; any later failure removes the directory.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::fcntl::Flock;

use orbit_stage1::{
    net_mode, paths, App, AppImage, AppRootfs, Mount, Network, NetworkRef, PodManifest, Volume,
    VolumeKind, INTERFACE_VERSION,
};

use super::isolation::{self, InsecureRun, IsolationRequest};
use super::spec::{self, set_env};
use super::stage1::Stage1;
use super::store::{DirState, PodRef, PodStore};
use super::{identity, PodError};
use crate::image::catalog::{self, StoredImage};
use crate::image::config::ImageConfig;
use crate::image::fetch::{self, FetchOptions};
use crate::image::source::SourceRef;
use crate::image::store::Store;
use crate::trust::TrustStore;

/// The default PATH for apps whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One app as the user asked for it.
#[derive(Debug, Clone, Default)]
pub struct AppRequest {
    /// Image reference or source.
    pub image: String,
    /// `--name`.
    pub name: Option<String>,
    /// `--exec`: replaces the image's entrypoint.
    pub exec: Option<String>,
    /// Arguments after `--`: replace the image's cmd.
    pub args: Option<Vec<String>>,
    /// `--working-dir`.
    pub working_dir: Option<String>,
    /// `--environment` / `--set-env` values, in order.
    pub env: Vec<(String, String)>,
    /// `--inherit-env`.
    pub inherit_env: bool,
    /// `--user`.
    pub user: Option<String>,
    /// `--group`.
    pub group: Option<String>,
    /// Groups the app is in besides its own and those the image's /etc/group lists.
    pub supplementary_gids: Vec<u32>,
    /// Whether the groups the image's /etc/group gives the user count too.
    pub groups_policy: GroupsPolicy,
    /// `--readonly-rootfs`.
    pub readonly_rootfs: bool,
    /// `--mount`s.
    pub mounts: Vec<Mount>,
    /// Host device nodes made in the app (CRI `devices`).
    pub devices: Vec<orbit_stage1::Device>,
    /// `--interactive`.
    pub interactive: bool,
    /// Standard input from a FIFO attaching clients write (CRI `stdin`).
    pub stdin: bool,
    /// A pid namespace of its own inside the pod's (CRI `NamespaceMode::CONTAINER`).
    pub pid_namespace: bool,
    /// Capabilities, seccomp and resource limits asked for.
    pub isolation: IsolationRequest,
}

/// How an app's supplementary groups are made (the CRI's `SupplementalGroupsPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupsPolicy {
    /// The groups the image's /etc/group lists the user in, plus the requested ones.
    #[default]
    Merge,
    /// Only the requested groups (and the primary group).
    Strict,
}

/// A pod as the user asked for it.
#[derive(Debug, Clone)]
pub struct PodRequest {
    /// Apps, in order.
    pub apps: Vec<AppRequest>,
    /// Volumes.
    pub volumes: Vec<Volume>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--net`: `none`, `host`, or comma-separated CNI networks `NAME[:ARGS]`.
    pub net: String,
    /// `--port`s.
    pub ports: Vec<String>,
    /// `--dns…` and `--hosts-entry`.
    pub dns: crate::net::dns::DnsRequest,
    /// `--cni-plugin-dir`s, searched before the default plugin directories.
    pub cni_plugin_dirs: Vec<std::path::PathBuf>,
    /// How to reach registries for `docker://` images.
    pub registry: crate::image::registry::RegistryOptions,
    /// When to fetch `docker://` images.
    pub pull_policy: crate::image::fetch::PullPolicy,
    /// `--no-overlay`: copy each app's root instead of overlaying the shared layers.
    pub no_overlay: bool,
    /// Pod annotations.
    pub annotations: BTreeMap<String, String>,
    /// An empty pod waiting for apps (`orbit app sandbox`).
    pub mutable: bool,
    /// `--insecure-options=image` for images fetched on the way.
    pub insecure_image: bool,
    /// Run-time checks lifted by `--insecure-options`.
    pub insecure: InsecureRun,
    /// `--private-users`: a user namespace with a private id range.
    pub private_users: bool,
    /// A user namespace with exactly these ids (a CRI sandbox's `hostUsers: false`, the
    /// kubelet's mapping) instead of a range orbit picks.
    pub user_namespace: Option<orbit_stage1::UserNamespace>,
    /// `--log`: file, journal or both (`None`: both when journald is there, else file).
    pub log: Option<String>,
    /// Namespaces shared with the host (`pid`, `ipc`): a CRI sandbox's hostPID / hostIPC.
    pub host_namespaces: Vec<String>,
}

/// A prepared pod and the lock that keeps gc away until it is handed to its stage1.
pub struct Prepared {
    /// The pod.
    pub pod: PodRef,
    /// Its lock (on the directory inode: it survives the renames).
    pub lock: Flock<OwnedFd>,
    /// The stage1 that will run it.
    pub stage1: Stage1,
}

struct Resolved {
    image: StoredImage,
    name: String,
    config: ImageConfig,
    lowers: Vec<std::path::PathBuf>,
}

/// Prepares a pod in the store.
pub fn prepare(
    store: &Store,
    trust: &TrustStore,
    pods: &PodStore,
    req: &PodRequest,
    stage1: Stage1,
) -> Result<Prepared, PodError> {
    validate(req)?;
    // `fly` runs node agents on the host, as rkt's fly did: no capability, seccomp or path
    // confinement (it has no namespaces to make those meaningful anyway).
    let fly;
    let req = if stage1.name() == "fly" {
        fly = PodRequest {
            // fly pods share the host's network, whatever --net says.
            net: net_mode::HOST.to_string(),
            insecure: InsecureRun {
                capabilities: true,
                seccomp: true,
                paths: true,
                devices: true,
            },
            ..req.clone()
        };
        &fly
    } else {
        req
    };
    if stage1.name() == "kvm" && has_user_namespace(req) {
        return Err(PodError::BadSpec(
            "the kvm stage1 does not run --private-users pods: the VM is their boundary".into(),
        ));
    }
    if stage1.name() == "fly" && has_user_namespace(req) {
        return Err(PodError::BadSpec(
            "the fly stage1 runs apps in the host's namespaces, the user namespace too: a pod \
             with a user namespace needs the ns stage1"
                .into(),
        ));
    }
    if has_user_namespace(req) {
        super::userns::check_store_reachable(store.root())?;
    }
    let resolved = resolve_images(store, trust, req)?;
    let names = app_names(req, &resolved)?;
    // Networks are resolved (and their plugins looked for) before anything is made.
    let network = network(req, &resolved)?;
    let net_plan = if network.mode == net_mode::CNI {
        Some(crate::net::plan(
            trust.dirs(),
            store.root(),
            &network.networks,
            &req.cni_plugin_dirs,
        )?)
    } else {
        None
    };
    let (embryo, lock) = pods.create()?;
    let mut guard = Cleanup {
        path: Some(embryo.path.clone()),
    };
    let pod = pods.transition(&embryo, DirState::Prepare)?;
    guard.path = Some(pod.path.clone());
    write_pod(store, pods, &pod, req, &resolved, &names, network)?;
    if let Some(plan) = &net_plan {
        plan.save(&pod.path)?;
    }
    stage1.save(&pod.path)?;
    let pod = pods.transition(&pod, DirState::Prepared)?;
    guard.path = None;
    Ok(Prepared { pod, lock, stage1 })
}

/// Removes a half-prepared pod directory on failure.
struct Cleanup {
    path: Option<std::path::PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// Whether the pod gets a user namespace (`--private-users`, or the CRI's mapping).
fn has_user_namespace(req: &PodRequest) -> bool {
    req.private_users || req.user_namespace.is_some()
}

fn validate(req: &PodRequest) -> Result<(), PodError> {
    if let Some(n) = req
        .host_namespaces
        .iter()
        .find(|n| !matches!(n.as_str(), "pid" | "ipc"))
    {
        return Err(PodError::BadSpec(format!(
            "cannot share the host's '{n}' namespace (pid and ipc can be shared; the network with --net=host)"
        )));
    }
    if has_user_namespace(req) && !req.host_namespaces.is_empty() {
        return Err(PodError::BadSpec(
            "--private-users cannot share the host's pid or ipc namespace".into(),
        ));
    }
    if req.apps.is_empty() && !req.mutable {
        return Err(PodError::BadSpec("a pod needs at least one image".into()));
    }
    if req.apps.iter().filter(|a| a.interactive).count() > 0 && req.apps.len() > 1 {
        return Err(PodError::BadSpec(
            "--interactive works only with a single app".into(),
        ));
    }
    if has_user_namespace(req) && (req.net == "host" || req.no_overlay) {
        return Err(PodError::BadSpec(
            "--private-users works with its own network and overlay roots (not --net=host or --no-overlay) in this version".into(),
        ));
    }
    parse_net(&req.net)?;
    crate::net::dns::validate(&req.dns)?;
    let mut seen = Vec::new();
    for v in &req.volumes {
        if seen.contains(&&v.name) {
            return Err(PodError::BadSpec(format!(
                "volume '{}' is defined twice",
                v.name
            )));
        }
        seen.push(&v.name);
    }
    for a in &req.apps {
        for m in &a.mounts {
            if !req.volumes.iter().any(|v| v.name == m.volume) {
                return Err(PodError::BadSpec(format!(
                    "--mount volume={}: no --volume named '{}'",
                    m.volume, m.volume
                )));
            }
        }
    }
    if let Some(h) = &req.hostname {
        let ok = !h.is_empty()
            && h.len() <= 64
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return Err(PodError::BadSpec(format!(
                "--hostname {h}: letters, digits, '-' and '.', at most 64"
            )));
        }
    }
    Ok(())
}

fn resolve_images(
    store: &Store,
    trust: &TrustStore,
    req: &PodRequest,
) -> Result<Vec<Resolved>, PodError> {
    let mut out = Vec::new();
    for a in &req.apps {
        let image = match SourceRef::parse(&a.image) {
            Some(src) => {
                let src = src?;
                let opts = FetchOptions {
                    insecure_skip_verify: req.insecure_image,
                    registry: req.registry.clone(),
                    pull_policy: req.pull_policy,
                    ..FetchOptions::default()
                };
                let done = fetch::fetch(store, trust, &src, &opts)?;
                catalog::resolve(store, done.digest.as_str())?
            }
            None => catalog::resolve(store, &a.image)?,
        };
        let (_, config) = catalog::load(store, &image)?;
        let lowers = image_lowers(store, &config, &a.image)?;
        if !req.no_overlay && lowers.len() > orbit_stage1::MAX_OVERLAY_LAYERS {
            return Err(PodError::BadSpec(format!(
                "image {} has {} layers; an overlay root holds at most {} (as in docker and \
                 containerd): rebuild it with fewer layers (squash it, or merge RUN steps), \
                 or run it with --no-overlay (a copy of its root per app)",
                a.image,
                lowers.len(),
                orbit_stage1::MAX_OVERLAY_LAYERS
            )));
        }
        let name = image
            .by_name
            .clone()
            .or_else(|| image.names.first().cloned())
            .unwrap_or_else(|| image.digest.to_string());
        out.push(Resolved {
            image,
            name,
            config,
            lowers,
        });
    }
    Ok(out)
}

/// The unpacked layer directories of image `config` (named `what` in errors), top layer
/// first (overlayfs `lowerdir` order); an error when one is not unpacked.
pub fn image_lowers(
    store: &Store,
    config: &ImageConfig,
    what: &str,
) -> Result<Vec<std::path::PathBuf>, PodError> {
    let mut lowers: Vec<_> = config
        .diff_ids()?
        .iter()
        .map(|d| store.layer_rootfs(d))
        .collect();
    if let Some(missing) = lowers.iter().find(|l| !l.is_dir()) {
        return Err(PodError::Corrupt {
            uuid: "-".into(),
            detail: format!("layer {} of {what} is not unpacked; run `orbit image verify` and fetch the image again", missing.display()),
        });
    }
    lowers.reverse();
    Ok(lowers)
}

fn app_names(req: &PodRequest, resolved: &[Resolved]) -> Result<Vec<String>, PodError> {
    let mut names: Vec<String> = Vec::new();
    for (a, r) in req.apps.iter().zip(resolved) {
        let name = match &a.name {
            Some(n) => {
                spec::valid_name(n).map_err(|e| PodError::BadSpec(format!("--name: {e}")))?;
                if names.contains(n) {
                    return Err(PodError::BadSpec(format!(
                        "two apps are named '{n}'; give them different --name"
                    )));
                }
                n.clone()
            }
            None => {
                let repo = crate::image::reference::repository(&r.name);
                let base: String = repo
                    .rsplit('/')
                    .next()
                    .unwrap_or("app")
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_lowercase()
                        } else {
                            '-'
                        }
                    })
                    .collect();
                let base = if base.is_empty() || base.starts_with('-') {
                    "app".to_string()
                } else {
                    base
                };
                let mut n = base.clone();
                let mut i = 2;
                while names.contains(&n) {
                    n = format!("{base}-{i}");
                    i += 1;
                }
                n
            }
        };
        names.push(name);
    }
    Ok(names)
}

fn write_pod(
    store: &Store,
    pods: &PodStore,
    pod: &PodRef,
    req: &PodRequest,
    resolved: &[Resolved],
    names: &[String],
    network: Network,
) -> Result<(), PodError> {
    let hostname = req
        .hostname
        .clone()
        .unwrap_or_else(|| format!("orbit-{}", &pod.uuid[..8]));
    let mut apps = Vec::new();
    for ((a, r), name) in req.apps.iter().zip(resolved).zip(names) {
        apps.push(build_app(
            store,
            pod,
            a,
            r,
            name,
            req.no_overlay,
            req.insecure,
        )?);
    }
    for v in req.volumes.iter().filter(|v| v.kind == VolumeKind::Empty) {
        let d = paths::volume_dir(&pod.path, &v.name);
        fs::create_dir_all(&d).map_err(|e| PodError::io("cannot create", &d, e))?;
    }
    write_etc(&pod.path, &hostname, &network, &req.dns)?;
    let user_namespace = match req.user_namespace {
        Some(ns) => Some(ns),
        None if req.private_users => Some(super::userns::allocate(pods, &pod.uuid)?),
        None => None,
    };
    if let Some(ns) = &user_namespace {
        give_pod_root_its_dirs(&pod.path, &apps, &req.volumes, ns)?;
        // The pod's /etc files: its root may edit them, as root in a pod without a user
        // namespace may (the directory holding them stays the host's).
        let etc: Vec<_> = paths::ETC_FILES
            .iter()
            .map(|f| pod.path.join(paths::ETC_DIR).join(f))
            .collect();
        super::userns::chown_to_pod_root(&etc.iter().map(|p| p.as_path()).collect::<Vec<_>>(), ns)?;
    }
    let manifest = PodManifest {
        log: log_target(req.log.as_deref())?,
        user_namespace,
        interface_version: INTERFACE_VERSION,
        uuid: pod.uuid.clone(),
        hostname,
        apps,
        volumes: req.volumes.clone(),
        network,
        mutable: req.mutable,
        annotations: req.annotations.clone(),
        host_namespaces: req.host_namespaces.clone(),
    };
    let p = pod.path.join(paths::POD_MANIFEST);
    fs::write(
        &p,
        serde_json::to_vec_pretty(&manifest).expect("manifest serializes"),
    )
    .map_err(|e| PodError::io("cannot write", &p, e))?;
    let created = pod.path.join(paths::CREATED);
    fs::write(&created, fetch::now_rfc3339()).map_err(|e| PodError::io("cannot write", &created, e))
}

fn build_app(
    store: &Store,
    pod: &PodRef,
    a: &AppRequest,
    r: &Resolved,
    name: &str,
    no_overlay: bool,
    insecure: InsecureRun,
) -> Result<App, PodError> {
    let run = r.config.config.clone().unwrap_or_default();
    let mut exec: Vec<String> = match &a.exec {
        Some(e) => vec![e.clone()],
        None => run.entrypoint.clone().unwrap_or_default(),
    };
    match &a.args {
        Some(args) => exec.extend(args.iter().cloned()),
        None if a.exec.is_none() => exec.extend(run.cmd.clone().unwrap_or_default()),
        None => {}
    }
    if exec.is_empty() {
        return Err(PodError::BadSpec(format!(
            "image {} has no entrypoint or cmd; give one with --exec",
            r.name
        )));
    }
    let mut env: Vec<String> = Vec::new();
    if a.inherit_env {
        for (k, v) in std::env::vars() {
            set_env(&mut env, &k, &v);
        }
    }
    for e in run.env.clone().unwrap_or_default() {
        if let Some((k, v)) = e.split_once('=') {
            set_env(&mut env, k, v);
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    for (k, v) in &a.env {
        set_env(&mut env, k, v);
    }
    let image_user = run.user.clone().filter(|u| !u.is_empty());
    let (user_spec, image_group) = match (&a.user, image_user.as_deref()) {
        (Some(u), _) => (u.clone(), None),
        (None, Some(u)) => match u.split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (u.to_string(), None),
        },
        (None, None) => ("0".to_string(), None),
    };
    let group = a.group.clone().or(image_group);
    let passwd = identity::read_layered(&r.lowers, "etc/passwd");
    let groups = identity::read_layered(&r.lowers, "etc/group");
    let mut user = identity::resolve(
        &user_spec,
        group.as_deref(),
        passwd.as_deref(),
        groups.as_deref(),
    )?;
    if a.groups_policy == GroupsPolicy::Strict {
        user.additional_gids.clear();
    }
    for g in &a.supplementary_gids {
        if *g != user.gid && !user.additional_gids.contains(g) {
            user.additional_gids.push(*g);
        }
    }
    let isolators = isolation::isolators(&a.isolation, &user, insecure)?;

    let dir = paths::app_dir(&pod.path, name);
    for sub in ["rootfs", "upper", "work", "empty"] {
        let d = dir.join(sub);
        fs::create_dir_all(&d).map_err(|e| PodError::io("cannot create", &d, e))?;
    }
    let rootfs = if no_overlay {
        let target = dir.join("rootfs");
        fs::remove_dir(&target).map_err(|e| PodError::io("cannot prepare", &target, e))?;
        crate::image::extract::extract(store, &r.image, &target)?;
        AppRootfs {
            lowers: vec![],
            overlay: false,
        }
    } else {
        AppRootfs {
            lowers: r.lowers.clone(),
            overlay: true,
        }
    };
    let status = orbit_stage1::AppStatus::created();
    status
        .write(&paths::app_status(&pod.path, name))
        .map_err(|e| PodError::io("cannot write", &dir, e))?;
    let mut annotations = BTreeMap::new();
    annotations.insert("orbit.dev/image-name".to_string(), r.name.clone());
    Ok(App {
        name: name.to_string(),
        image: AppImage {
            name: r.name.clone(),
            digest: r.image.digest.to_string(),
        },
        exec,
        env,
        user,
        working_directory: a
            .working_dir
            .clone()
            .or(run.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        rootfs,
        read_only_rootfs: a.readonly_rootfs,
        mounts: a.mounts.clone(),
        devices: a.devices.clone(),
        interactive: a.interactive,
        stdin: a.stdin,
        pid_namespace: a.pid_namespace,
        isolators,
        annotations,
    })
}

/// Splits `--net` into the mode and, for CNI networks, the networks (`NAME[:ARGS]`).
fn parse_net(net: &str) -> Result<(String, Vec<NetworkRef>), PodError> {
    match net {
        net_mode::NONE | net_mode::HOST => return Ok((net.to_string(), Vec::new())),
        "" => {
            return Err(PodError::BadSpec(
                "--net is empty: give none, host, default, default-restricted or network names"
                    .into(),
            ))
        }
        _ => {}
    }
    let mut networks: Vec<NetworkRef> = Vec::new();
    for item in net.split(',') {
        let (name, args) = match item.split_once(':') {
            Some((n, a)) => (n, Some(a.to_string())),
            None => (item, None),
        };
        if name == net_mode::NONE || name == net_mode::HOST {
            return Err(PodError::BadSpec(format!(
                "--net={net}: '{name}' cannot be combined with other networks"
            )));
        }
        if !crate::net::conf::valid_name(name) {
            return Err(PodError::BadSpec(format!(
                "--net={net}: '{name}' is not a network name (letters, digits, '_', '.', '-')"
            )));
        }
        if networks.iter().any(|n| n.name == name) {
            return Err(PodError::BadSpec(format!(
                "--net={net}: '{name}' is given twice"
            )));
        }
        networks.push(NetworkRef {
            name: name.to_string(),
            args,
        });
    }
    Ok((net_mode::CNI.to_string(), networks))
}

/// The pod's network: mode, networks and forwarded ports (named ports resolved against the
/// first app's image, then the others').
fn network(req: &PodRequest, resolved: &[Resolved]) -> Result<Network, PodError> {
    let (mode, networks) = parse_net(&req.net)?;
    let offered: Vec<crate::net::ports::ImagePort> = resolved
        .iter()
        .flat_map(|r| {
            let rc = r.config.config.as_ref();
            let labels: Vec<(String, String)> = rc
                .and_then(|c| c.labels.clone())
                .unwrap_or_default()
                .into_iter()
                .collect();
            let exposed: Vec<String> = rc
                .and_then(|c| c.exposed_ports.as_ref())
                .and_then(|v| v.as_object())
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            crate::net::ports::image_ports(&labels, &exposed)
        })
        .collect();
    let ports = req
        .ports
        .iter()
        .map(|p| crate::net::ports::parse(p, &offered))
        .collect::<Result<Vec<_>, _>>()?;
    if !ports.is_empty() && mode != net_mode::CNI {
        return Err(PodError::BadSpec(format!(
            "--port needs a pod network; with --net={} the pod's ports are the host's or none",
            mode
        )));
    }
    Ok(Network {
        mode,
        networks,
        ports,
    })
}

fn write_etc(
    pod: &Path,
    hostname: &str,
    network: &Network,
    dns: &crate::net::dns::DnsRequest,
) -> Result<(), PodError> {
    use crate::net::dns;
    let etc = pod.join(paths::ETC_DIR);
    fs::create_dir_all(&etc).map_err(|e| PodError::io("cannot create", &etc, e))?;
    let own = network.mode != net_mode::HOST;
    // Only a network with a way out can use the host's servers.
    let routed = network.mode == net_mode::CNI;
    let hosts = dns::hosts(dns, hostname, dns::UNATTACHED_ADDRESS);
    let mut files = vec![("hosts", hosts), ("hostname", format!("{hostname}\n"))];
    if let Some(resolv) = dns::resolv_conf(dns, own, routed) {
        files.push(("resolv.conf", resolv));
    }
    for (f, content) in files {
        let p = etc.join(f);
        fs::write(&p, content).map_err(|e| PodError::io("cannot write", &p, e))?;
    }
    Ok(())
}

/// Adds an app to a mutable pod's manifest (`orbit app add`): resolves its image, creates
/// its directories and rewrites `pod.json` atomically. The running stage1 is told next.
pub fn add_app(
    store: &Store,
    trust: &TrustStore,
    pod: &PodRef,
    req: &AppRequest,
    insecure_image: bool,
    insecure: InsecureRun,
) -> Result<App, PodError> {
    add_app_with_volumes(store, trust, pod, req, &[], insecure_image, insecure)
}

/// [`add_app`], adding `volumes` to the pod for the app's mounts (a CRI container's host
/// paths) in the same write of the manifest.
pub fn add_app_with_volumes(
    store: &Store,
    trust: &TrustStore,
    pod: &PodRef,
    req: &AppRequest,
    volumes: &[Volume],
    insecure_image: bool,
    insecure: InsecureRun,
) -> Result<App, PodError> {
    let _lock = manifest_lock(pod)?;
    let mut manifest = super::status::manifest(pod)?;
    for v in volumes {
        if manifest.volumes.iter().any(|x| x.name == v.name) {
            return Err(PodError::BadSpec(format!(
                "the pod already has a volume named '{}'",
                v.name
            )));
        }
        manifest.volumes.push(v.clone());
    }
    if !manifest.mutable {
        return Err(PodError::WrongState {
            uuid: pod.uuid.clone(),
            state: "immutable".into(),
            what: "apps can be added only to pods made with `orbit app sandbox`".into(),
        });
    }
    for m in &req.mounts {
        if !manifest.volumes.iter().any(|v| v.name == m.volume) {
            return Err(PodError::BadSpec(format!(
                "--mount volume={}: the pod has no volume '{}'",
                m.volume, m.volume
            )));
        }
    }
    let pod_req = PodRequest {
        apps: vec![req.clone()],
        volumes: manifest.volumes.clone(),
        hostname: None,
        net: manifest.network.mode.clone(),
        ports: Vec::new(),
        dns: Default::default(),
        cni_plugin_dirs: Vec::new(),
        registry: Default::default(),
        pull_policy: crate::image::fetch::PullPolicy::New,
        no_overlay: false,
        annotations: BTreeMap::new(),
        mutable: true,
        insecure_image,
        insecure,
        private_users: false,
        user_namespace: None,
        log: None,
        host_namespaces: Vec::new(),
    };
    let resolved = resolve_images(store, trust, &pod_req)?;
    let name = app_names(&pod_req, &resolved)?.remove(0);
    if manifest.apps.iter().any(|a| a.name == name) {
        return Err(PodError::BadSpec(format!(
            "the pod already has an app named '{name}'; pick another with --name"
        )));
    }
    let app = build_app(store, pod, req, &resolved[0], &name, false, insecure)?;
    if let Some(ns) = &manifest.user_namespace {
        give_pod_root_its_dirs(&pod.path, std::slice::from_ref(&app), &[], ns)?;
    }
    manifest.apps.push(app.clone());
    write_manifest(pod, &manifest)?;
    Ok(app)
}

/// Removes an app from a mutable pod's manifest and deletes its directory (`orbit app rm`).
pub fn remove_app(pod: &PodRef, name: &str) -> Result<(), PodError> {
    let _lock = manifest_lock(pod)?;
    let mut manifest = super::status::manifest(pod)?;
    manifest.apps.retain(|a| a.name != name);
    // Volumes added for this app alone (`<app>-m<N>`, a CRI container's mounts) go with it.
    let own = format!("{name}-m");
    manifest.volumes.retain(|v| {
        !(v.name.starts_with(&own) && v.name[own.len()..].bytes().all(|b| b.is_ascii_digit()))
    });
    write_manifest(pod, &manifest)?;
    let dir = paths::app_dir(&pod.path, name);
    super::mounts::unmount_below(&dir);
    fs::remove_dir_all(&dir).map_err(|e| PodError::io("cannot remove", &dir, e))
}

/// Serializes read-modify-write of a running mutable pod's `pod.json` between stage0s.
fn manifest_lock(pod: &PodRef) -> Result<Flock<fs::File>, PodError> {
    let path = pod.path.join("pod.json.lock");
    let f = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| PodError::io("cannot open", &path, e))?;
    Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| PodError::io("cannot lock", &path, e.into()))
}

/// Rewrites a pod's `pod.json` atomically.
fn write_manifest(pod: &PodRef, manifest: &PodManifest) -> Result<(), PodError> {
    let path = pod.path.join(paths::POD_MANIFEST);
    let bytes = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
    orbit_stage1::status::write_atomic(&path, &bytes)
        .map_err(|e| PodError::io("cannot write", &path, e))
}

/// In a `--private-users` pod, root is an unprivileged host id: it must own what it writes
/// (each app's directory, upper and work dirs, status file and log) and the empty volumes.
fn give_pod_root_its_dirs(
    pod: &Path,
    apps: &[App],
    volumes: &[orbit_stage1::Volume],
    ns: &orbit_stage1::UserNamespace,
) -> Result<(), PodError> {
    let mut owned = Vec::new();
    for a in apps {
        let dir = paths::app_dir(pod, &a.name);
        let log = paths::app_log(pod, &a.name);
        fs::write(&log, b"").map_err(|e| PodError::io("cannot create", &log, e))?;
        for p in [
            dir.clone(),
            dir.join("upper"),
            dir.join("work"),
            dir.join("rootfs"),
            paths::app_status(pod, &a.name),
            log,
        ] {
            owned.push(p);
        }
    }
    for v in volumes.iter().filter(|v| v.kind == VolumeKind::Empty) {
        owned.push(paths::volume_dir(pod, &v.name));
    }
    let refs: Vec<&Path> = owned.iter().map(|p| p.as_path()).collect();
    super::userns::chown_to_pod_root(&refs, ns)
}

/// journald's native socket (`ORBIT_JOURNAL_SOCKET` overrides it, for tests).
fn journal_socket() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("ORBIT_JOURNAL_SOCKET")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/run/systemd/journal/socket".into());
    path.exists().then_some(path)
}

/// Where app output goes, from `--log`.
fn log_target(choice: Option<&str>) -> Result<orbit_stage1::LogTarget, PodError> {
    let journal = journal_socket();
    let need_journal = |file: bool| {
        journal.clone().map(|j| orbit_stage1::LogTarget { file, journal: Some(j) }).ok_or_else(|| {
            PodError::BadSpec("--log=journal: journald is not running here (no /run/systemd/journal/socket); use --log=file".into())
        })
    };
    match choice {
        None => Ok(orbit_stage1::LogTarget {
            file: true,
            journal,
        }),
        Some("file") => Ok(orbit_stage1::LogTarget {
            file: true,
            journal: None,
        }),
        Some("journal") => need_journal(false),
        Some("both") => need_journal(true),
        Some(other) => Err(PodError::BadSpec(format!(
            "--log={other}: use file, journal or both"
        ))),
    }
}
