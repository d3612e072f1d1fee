//! Per-app status, reported by the stage1 through `apps/<name>/status.json`.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Lifecycle state of an app.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AppState {
    /// Prepared, not started.
    Created,
    /// Running.
    Running,
    /// Exited (see exit code / signal).
    Exited,
}

/// What a stage1 reports about one app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    /// State.
    pub state: AppState,
    /// Host pid while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Exit code (128+n when killed by signal n).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Why it ended, when the exit code alone does not say it (`OOMKilled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why it failed to start, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

impl AppStatus {
    /// A freshly created app.
    pub fn created() -> AppStatus {
        AppStatus {
            state: AppState::Created,
            pid: None,
            exit_code: None,
            signal: None,
            reason: None,
            error: None,
            started_at: None,
            finished_at: None,
        }
    }

    /// Reads a status file.
    pub fn read(path: &Path) -> std::io::Result<AppStatus> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Writes a status file atomically (temp file + rename), so readers never see half of it.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        write_atomic(path, &serde_json::to_vec(self).expect("status serializes"))
    }
}

/// What an app uses, for a stage1 whose apps' cgroups are not the host's (`kvm`: they are
/// in the VM): written to [`crate::paths::app_usage`] every few seconds while it runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AppUsage {
    /// CPU time used, nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_nanos: Option<u64>,
    /// Memory in use, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Memory in use less inactive file pages (the kubelet's working set), bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    /// Processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

impl AppUsage {
    /// Reads a usage file; `None` if there is none (or it is unreadable).
    pub fn read(path: &Path) -> Option<AppUsage> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Writes a usage file atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        write_atomic(path, &serde_json::to_vec(self).expect("usage serializes"))
    }
}

/// Writes `bytes` to `path` via `path.tmp` and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}
