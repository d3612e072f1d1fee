//! A pod's state, derived from which directory it is in and whether its lock is held, plus
//! what its stage1 reported in the pod directory. Reading never blocks on a running pod.

use serde::Serialize;

use orbit_stage1::{paths, AppState, AppStatus, PodManifest};

use super::store::{DirState, LockSnapshot, PodRef, PodStore};
use super::PodError;

/// What `orbit status` / `orbit list` show about a pod.
#[derive(Debug, Clone, Serialize)]
pub struct PodInfo {
    /// UUID.
    pub uuid: String,
    /// `preparing`, `aborted-prepare`, `prepared`, `running`, `exited`, `exited-garbage`, `deleting`.
    pub state: String,
    /// The stage1 flavor/name.
    pub stage1: String,
    /// Host pid of the pod's init while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The pod's exit status once exited (absent if its stage1 was killed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// RFC 3339 timestamps.
    pub created: String,
    /// RFC 3339, when the stage1 started the pod.
    pub started: String,
    /// RFC 3339, when it finished.
    pub finished: String,
    /// The apps.
    pub apps: Vec<AppInfo>,
    /// When an app announced readiness (sd_notify READY=1), for pods under a notify unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Whether the pod relays sd_notify messages (it then is ready only after READY=1).
    pub notify: bool,
    /// The systemd service running the pod (`orbit run --unit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The pod's CNI networks: interface, addresses and gateways (from its network status).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<orbit_stage1::NetworkAttachment>,
    /// The manifest the apps were read from (not shown: `orbit cat-manifest` is).
    #[serde(skip)]
    pub manifest: Option<PodManifest>,
}

/// One app of a pod.
#[derive(Debug, Clone, Serialize)]
pub struct AppInfo {
    /// Name.
    pub name: String,
    /// Image name.
    pub image: String,
    /// Image digest.
    pub image_digest: String,
    /// Status as the stage1 reported it (`state`: created, running, exited).
    #[serde(flatten)]
    pub status: AppStatus,
}

fn read_trim(pod: &PodRef, name: &str) -> String {
    std::fs::read_to_string(pod.path.join(name))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl AppInfo {
    /// `created`, `running` or `exited`.
    pub fn state(&self) -> &'static str {
        match self.status.state {
            AppState::Created => "created",
            AppState::Running => "running",
            AppState::Exited => "exited",
        }
    }
}

/// The pod's manifest.
pub fn manifest(pod: &PodRef) -> Result<PodManifest, PodError> {
    let p = pod.path.join(paths::POD_MANIFEST);
    let bytes = std::fs::read(&p).map_err(|e| PodError::io("cannot read", &p, e))?;
    serde_json::from_slice(&bytes).map_err(|e| PodError::Corrupt {
        uuid: pod.uuid.clone(),
        detail: format!("pod.json is malformed: {e}"),
    })
}

/// The state name of a pod directory.
pub fn state(pod: &PodRef) -> String {
    state_from(pod, PodStore::is_locked(&pod.path))
}

fn state_from(pod: &PodRef, locked: bool) -> String {
    match pod.state {
        DirState::Embryo | DirState::Prepare if locked => "preparing",
        DirState::Embryo | DirState::Prepare => "aborted-prepare",
        DirState::Prepared => "prepared",
        DirState::Run if locked => "running",
        DirState::Run => "exited",
        DirState::ExitedGarbage => "exited-garbage",
        DirState::Garbage => "deleting",
    }
    .to_string()
}

/// True when the pod's stage1 is running.
pub fn is_running(pod: &PodRef) -> bool {
    pod.state == DirState::Run && PodStore::is_locked(&pod.path)
}

/// Everything about a pod.
pub fn info(pod: &PodRef) -> Result<PodInfo, PodError> {
    info_from(pod, state(pod))
}

/// [`info`] with the pod's lock looked up in `locks` (listing many pods reads
/// `/proc/locks` once).
pub fn info_with(pod: &PodRef, locks: &LockSnapshot) -> Result<PodInfo, PodError> {
    info_from(pod, state_from(pod, locks.is_locked(&pod.path)))
}

/// The name of the stage1 the pod runs with (`ns`, `kvm`, …).
pub fn stage1_name(pod: &PodRef) -> Option<String> {
    std::fs::read(pod.path.join(paths::STAGE1_MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice::<orbit_stage1::Stage1Manifest>(&b).ok())
        .map(|m| m.name)
}

fn info_from(pod: &PodRef, state: String) -> Result<PodInfo, PodError> {
    let running = state == "running";
    let exited = matches!(state.as_str(), "exited" | "exited-garbage" | "deleting");
    let manifest = manifest(pod).ok();
    let stage1 = stage1_name(pod).unwrap_or_default();
    let mut apps = Vec::new();
    for a in manifest.iter().flat_map(|m| m.apps.iter()) {
        let mut status = AppStatus::read(&paths::app_status(&pod.path, &a.name))
            .unwrap_or_else(|_| AppStatus::created());
        if exited && status.state != AppState::Exited {
            // The stage1 died before recording the app's end (killed): the app is gone too.
            status.state = AppState::Exited;
            status.pid = None;
        }
        apps.push(AppInfo {
            name: a.name.clone(),
            image: a.image.name.clone(),
            image_digest: a.image.digest.clone(),
            status,
        });
    }
    Ok(PodInfo {
        uuid: pod.uuid.clone(),
        pid: if running {
            read_trim(pod, paths::PID).parse().ok()
        } else {
            None
        },
        exit_code: if exited {
            read_trim(pod, paths::EXIT).parse().ok()
        } else {
            None
        },
        created: read_trim(pod, paths::CREATED),
        started: read_trim(pod, paths::STARTED),
        finished: read_trim(pod, paths::FINISHED),
        state,
        stage1,
        apps,
        unit: super::lifecycle::unit_of(pod),
        ready: Some(read_trim(pod, "ready")).filter(|r| !r.is_empty()),
        notify: pod.path.join("notify.sock").exists(),
        networks: std::fs::read(pod.path.join(paths::NETWORK_STATUS))
            .ok()
            .and_then(|b| serde_json::from_slice::<orbit_stage1::NetworkStatus>(&b).ok())
            .map(|s| s.networks)
            .unwrap_or_default(),
        manifest,
    })
}
