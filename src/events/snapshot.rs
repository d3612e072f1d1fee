//! What the store shows of one pod, and the events between two such views.

use std::collections::BTreeMap;
use std::path::Path;

use orbit_stage1::{paths, AppState, AppStatus};

use super::{EventKind, StoreEvent, UNKNOWN_EXIT};
use crate::clock::nanos;
use crate::pod::store::{DirState, PodRef, PodStore};

/// What is known about a pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct PodSnap {
    pub(super) state: Option<DirState>,
    pub(super) prepared: bool,
    pub(super) started: bool,
    pub(super) exited: bool,
    pub(super) apps: BTreeMap<String, AppStatus>,
}

pub(super) fn read_trim(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What the store shows of pod `pod`. `finishing`: it was seen running, so an init that is
/// gone with no exit recorded yet gets [`EXIT_RECORD_GRACE`] to record it before the pod
/// counts as killed (at start-up and in replays a pod in that state was killed long ago).
pub(super) fn snapshot(pod: &PodRef, finishing: bool) -> PodSnap {
    let mut apps: BTreeMap<String, AppStatus> = crate::pod::status::manifest(pod)
        .map(|m| {
            m.apps
                .iter()
                .map(|a| {
                    let s = AppStatus::read(&paths::app_status(&pod.path, &a.name))
                        .unwrap_or_else(|_| AppStatus::created());
                    (a.name.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default();
    let gone = matches!(pod.state, DirState::ExitedGarbage | DirState::Garbage);
    let started = !read_trim(&pod.path, paths::STARTED).is_empty();
    // A stage1 killed outright records nothing: its free lock — and its init's absence (a
    // lock list read under churn can miss a lock) — say it is gone.
    let init_alive = read_trim(&pod.path, paths::PID)
        .parse::<u32>()
        .ok()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        // "PID (COMM) STATE …": a zombie (Z) or dead (X) init is gone.
        .and_then(|stat| stat.rsplit(')').next().map(|r| r.trim_start().to_string()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'));
    let killed = pod.state == DirState::Run
        && started
        && !init_alive
        && !PodStore::is_locked(&pod.path)
        && !(finishing && exit_recorded_soon(&pod.path));
    let exited = gone || killed || !read_trim(&pod.path, paths::EXIT).is_empty();
    if exited {
        // Its apps went with it, whatever their last status said (as `orbit status` shows).
        for s in apps.values_mut() {
            if s.state != AppState::Exited {
                s.state = AppState::Exited;
                s.pid = None;
            }
        }
    }
    PodSnap {
        state: Some(pod.state),
        prepared: !matches!(pod.state, DirState::Embryo | DirState::Prepare),
        started,
        exited,
        apps,
    }
}

/// How long a pod whose init is gone and whose lock looks free is given to record its exit
/// before it counts as killed: the supervisor writes the record right after it reaps the
/// init, and a lock list read under churn can miss its lock.
const EXIT_RECORD_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// True when pod `dir` records its exit status, shows its lock held again, or moves away
/// (`orbit gc` renamed it: the rescan of its new place tells how it ended) within
/// [`EXIT_RECORD_GRACE`]: it was not killed, it was finishing.
fn exit_recorded_soon(dir: &Path) -> bool {
    let deadline = std::time::Instant::now() + EXIT_RECORD_GRACE;
    loop {
        if !read_trim(dir, paths::EXIT).is_empty() || PodStore::is_locked(dir) || !dir.exists() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The events that take a pod from `old` to `new`, in lifecycle order.
pub(super) fn diff(uuid: &str, dir: &Path, old: &PodSnap, new: &PodSnap) -> Vec<StoreEvent> {
    let mut out = Vec::new();
    let file_time = |name: &str| nanos(&read_trim(dir, name));
    if new.prepared && !old.prepared {
        out.push(StoreEvent::new(
            EventKind::PodPrepared,
            uuid,
            "",
            file_time(paths::CREATED),
        ));
    }
    if new.started && !old.started {
        out.push(StoreEvent::new(
            EventKind::PodStarted,
            uuid,
            "",
            file_time(paths::STARTED),
        ));
    }
    for (name, s) in &new.apps {
        let before = old.apps.get(name);
        let was = before.map(|b| b.state);
        let ran = s.state == AppState::Running || s.started_at.is_some();
        if ran && !matches!(was, Some(AppState::Running) | Some(AppState::Exited)) {
            out.push(StoreEvent::new(
                EventKind::PodAppStarted,
                uuid,
                name,
                s.started_at.as_deref().map_or(0, nanos),
            ));
        }
        if s.state == AppState::Exited && was != Some(AppState::Exited) {
            let mut e = StoreEvent::new(
                EventKind::PodAppExited,
                uuid,
                name,
                s.finished_at.as_deref().map_or(0, nanos),
            );
            e.exit_code = s.exit_code;
            out.push(e);
        }
    }
    if new.exited && !old.exited {
        let mut e = StoreEvent::new(EventKind::PodExited, uuid, "", file_time(paths::FINISHED));
        e.exit_code = read_trim(dir, paths::EXIT).parse().ok();
        if e.exit_code.is_none() {
            e.reason = UNKNOWN_EXIT.to_string();
        }
        out.push(e);
    }
    let collected =
        |s: &PodSnap| matches!(s.state, Some(DirState::ExitedGarbage | DirState::Garbage));
    if collected(new) && !collected(old) {
        out.push(StoreEvent::new(EventKind::PodGarbageCollected, uuid, "", 0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A running pod whose init is gone, whose lock is free and which has not recorded its
    /// exit yet: what the watcher sees between the init's end and the supervisor's record.
    fn finishing_pod(root: &Path) -> PodRef {
        let uuid = "0a1b2c3d-0000-4000-8000-000000000001";
        let dir = root.join("pods/run").join(uuid);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(paths::STARTED), "2026-12-07T00:00:00Z").unwrap();
        // A pid that names no process: the init has ended.
        std::fs::write(dir.join(paths::PID), "2147483646").unwrap();
        PodRef {
            uuid: uuid.into(),
            state: DirState::Run,
            path: dir,
        }
    }

    #[test]
    fn a_finishing_pods_exit_event_waits_for_the_recorded_code() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = finishing_pod(tmp.path());
        let running = PodSnap {
            started: true,
            prepared: true,
            state: Some(DirState::Run),
            ..Default::default()
        };
        // The supervisor records the exit a moment after the watcher looks.
        let dir = pod.path.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(150));
            std::fs::write(dir.join(paths::EXIT), "7").unwrap();
        });
        let snap = snapshot(&pod, true);
        writer.join().unwrap();
        assert!(snap.exited);
        let events = diff(&pod.uuid, &pod.path, &running, &snap);
        let exited = events
            .iter()
            .find(|e| e.kind == EventKind::PodExited)
            .expect("a pod-exited event");
        assert_eq!(exited.exit_code, Some(7));
        assert_eq!(exited.reason, "");
    }

    #[test]
    fn a_finishing_pod_moved_away_is_not_called_killed() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = finishing_pod(tmp.path());
        // `orbit gc` renames the directory while the watcher looks at the old place.
        let (from, to) = (pod.path.clone(), tmp.path().join("pods/exited-garbage"));
        let mover = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::fs::create_dir_all(&to).unwrap();
            std::fs::rename(&from, to.join(from.file_name().unwrap())).unwrap();
        });
        let snap = snapshot(&pod, true);
        mover.join().unwrap();
        // Not exited here: the rescan of its new place reports its exit, with its code.
        assert!(!snap.exited, "a moved pod was taken for a killed one");
    }

    #[test]
    fn a_killed_pods_exit_event_says_the_code_is_unknown() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = finishing_pod(tmp.path());
        // Nothing records an exit: after the grace the pod counts as killed.
        let started = std::time::Instant::now();
        let snap = snapshot(&pod, true);
        assert!(started.elapsed() >= EXIT_RECORD_GRACE);
        assert!(snap.exited);
        let events = diff(&pod.uuid, &pod.path, &PodSnap::default(), &snap);
        let exited = events
            .iter()
            .find(|e| e.kind == EventKind::PodExited)
            .expect("a pod-exited event");
        assert_eq!(exited.exit_code, None);
        assert_eq!(exited.reason, UNKNOWN_EXIT);
        // Seen at start-up (not running before): no grace.
        let started = std::time::Instant::now();
        assert!(snapshot(&pod, false).exited);
        assert!(started.elapsed() < EXIT_RECORD_GRACE);
    }
}
