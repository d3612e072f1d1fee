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

use super::lifecycle::remove_locked;
use super::store::{try_lock, DirState, PodStore};
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
        // Hold the pod's lock while deciding and acting: a pod someone holds is in use, and
        // one that moved on (renamed) since it was listed is skipped.
        let Ok(Some(lock)) = try_lock(&pod.path) else {
            continue;
        };
        let result = match pod.state {
            DirState::Run => {
                let Ok(marked) = pods.transition(&pod, DirState::ExitedGarbage) else {
                    continue;
                };
                let _ = std::fs::write(marked.path.join(MARKED), b"");
                report.marked.push(pod.uuid.clone());
                // An exited pod's network goes at once (its stage1's exit hook did not run
                // if it was killed), whatever the grace period keeps of the rest.
                if let Err(e) = detach_network(&marked.path) {
                    report.failed.push((pod.uuid.clone(), e.to_string()));
                    continue;
                }
                if !opts.mark_only && opts.grace_period.is_zero() {
                    Some(remove_locked(pods, &marked, &lock, opts.debug))
                } else {
                    None
                }
            }
            DirState::ExitedGarbage
                if !opts.mark_only && age(&pod.path.join(MARKED)) >= opts.grace_period =>
            {
                Some(remove_locked(pods, &pod, &lock, opts.debug))
            }
            DirState::ExitedGarbage => detach_network(&pod.path).err().map(Err),
            DirState::Embryo | DirState::Prepare | DirState::Garbage if !opts.mark_only => {
                Some(remove_locked(pods, &pod, &lock, opts.debug))
            }
            DirState::Prepared if !opts.mark_only && age(&pod.path) >= opts.expire_prepared => {
                Some(remove_locked(pods, &pod, &lock, opts.debug))
            }
            _ => None,
        };
        match result {
            Some(Ok(())) => report.removed.push(pod.uuid.clone()),
            Some(Err(e)) => report.failed.push((pod.uuid.clone(), e.to_string())),
            None => {}
        }
    }
    sweep_network(pods, &mut report);
    remove_abandoned_new_dirs(pods);
    if pods.root().join("userns.json").exists() {
        super::userns::reclaim(pods)?;
    }
    Ok(report)
}

/// Detaches an exited pod from its networks, if it still is attached.
pub fn detach_network(pod: &std::path::Path) -> Result<(), PodError> {
    if crate::net::is_attached(pod) {
        crate::net::detach(pod)?;
    }
    Ok(())
}

/// Removes the per-pod firewall rules (orbit's nftables table: port forwards) of this
/// store's pods that are no longer attached. Pods whose stage1 was killed were detached
/// above, their rules with them; this catches whatever no record leads to (a pod directory
/// removed by hand). The per-network rules stay when no pod uses the network any more, as
/// docker keeps its bridges' rules: they match only orbit's subnets.
fn sweep_network(pods: &PodStore, report: &mut GcReport) {
    let store = pods.root().parent().unwrap_or(pods.root());
    // In lifecycle order, so a pod renamed to a later state while this looks is still seen.
    let attached = |uuid: &str| {
        DirState::ALL
            .iter()
            .any(|s| crate::net::is_attached(&pods.state_dir(*s).join(uuid)))
    };
    for (uuid, result) in crate::net::nft::sweep(store, attached) {
        if let Err(e) = result {
            report.failed.push((uuid, e.to_string()));
        }
    }
}

/// Removes `embryo/.new-*` directories whose creator died before naming them. Creating and
/// locking a directory cannot be one atomic step, so only ones older than a minute count
/// as abandoned (a live creator locks and renames within microseconds).
fn remove_abandoned_new_dirs(pods: &PodStore) {
    let Ok(entries) = std::fs::read_dir(pods.state_dir(DirState::Embryo)) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(".new-")
            && age(&e.path()) >= Duration::from_secs(60)
        {
            if let Ok(Some(_lock)) = try_lock(&e.path()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
