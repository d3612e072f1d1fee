//! `orbit gc`: finishes whatever was interrupted and removes pods that are done.
//!
//! - `run/` pods whose lock is free have exited: they are marked (moved to
//!   `exited-garbage/`, with the time recorded) and removed once the grace period passed.
//! - `embryo/` and `prepare/` pods whose lock is free were abandoned mid-preparation
//!   (stage0 killed): removed.
//! - `prepared/` pods older than `--expire-prepared` and unclaimed: removed.
//! - `garbage/` pods (a removal that was interrupted): removed.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::lifecycle::remove;
use super::store::{DirState, PodStore};
use super::PodError;

/// When a pod was marked as exited garbage (a file in its directory).
const MARKED: &str = "gc-marked";

/// gc settings.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// How long exited pods are kept after being marked.
    pub grace_period: Duration,
    /// How long an unclaimed prepared pod is kept.
    pub expire_prepared: Duration,
    /// Only mark exited pods.
    pub mark_only: bool,
    /// Pass `--debug` to stage1 gc.
    pub debug: bool,
}

/// What gc did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    /// Pods marked as exited garbage.
    pub marked: Vec<String>,
    /// Pods removed.
    pub removed: Vec<String>,
    /// Pods that could not be removed, with why.
    pub failed: Vec<(String, String)>,
}

fn age(path: &std::path::Path) -> Duration {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

/// Runs gc over every pod.
pub fn gc(pods: &PodStore, opts: &GcOptions) -> Result<GcReport, PodError> {
    let mut report = GcReport::default();
    for pod in pods.list()? {
        if PodStore::is_locked(&pod.path) {
            continue;
        }
        let result = match pod.state {
            DirState::Run => {
                let marked = pods.transition(&pod, DirState::ExitedGarbage)?;
                let _ = std::fs::write(marked.path.join(MARKED), b"");
                report.marked.push(pod.uuid.clone());
                if !opts.mark_only && opts.grace_period.is_zero() {
                    Some(remove(pods, &marked, opts.debug))
                } else {
                    None
                }
            }
            DirState::ExitedGarbage
                if !opts.mark_only && age(&pod.path.join(MARKED)) >= opts.grace_period =>
            {
                Some(remove(pods, &pod, opts.debug))
            }
            DirState::Embryo | DirState::Prepare | DirState::Garbage if !opts.mark_only => {
                Some(remove(pods, &pod, opts.debug))
            }
            DirState::Prepared if !opts.mark_only && age(&pod.path) >= opts.expire_prepared => {
                Some(remove(pods, &pod, opts.debug))
            }
            _ => None,
        };
        match result {
            Some(Ok(())) => report.removed.push(pod.uuid.clone()),
            Some(Err(e)) => report.failed.push((pod.uuid.clone(), e.to_string())),
            None => {}
        }
    }
    Ok(report)
}
