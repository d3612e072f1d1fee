//! Events from the store, without polling: one inotify instance watches the pod state
//! directories, every pod directory and its apps' directories, and the image index; each
//! change re-reads only what it touched and compares it with what was known, and the
//! differences go to every listener (a broadcast channel). Changes under a pod (a log
//! growing, a status written) are also announced by UUID, for log followers.
//!
//! Replay (`since_time`) rebuilds past events from the timestamps the store keeps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::sync::broadcast;

use orbit_stage1::{paths, AppState, AppStatus};

use super::convert::nanos;
use super::proto::{self, EventType};
use crate::image::store::{self, Store};
use crate::pod::store::{DirState, PodRef, PodStore};

/// Where events and pod changes are published.
pub struct EventHub {
    events: broadcast::Sender<proto::Event>,
    changes: broadcast::Sender<String>,
}

impl EventHub {
    /// Starts watching the store at `root` (a thread for the life of the process).
    pub fn start(root: &Path) -> std::io::Result<Arc<EventHub>> {
        let (events, _) = broadcast::channel(8192);
        let (changes, _) = broadcast::channel(8192);
        let hub = Arc::new(EventHub { events, changes });
        let mut watcher = Watcher::new(root, hub.clone())?;
        std::thread::Builder::new()
            .name("orbit-api-events".into())
            .spawn(move || watcher.run())?;
        Ok(hub)
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<proto::Event> {
        self.events.subscribe()
    }

    /// UUIDs of pods something changed under (logs, statuses, state), from now on.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }
}

/// What is known about a pod.
#[derive(Debug, Clone, Default, PartialEq)]
struct PodSnap {
    state: Option<DirState>,
    prepared: bool,
    started: bool,
    exited: bool,
    apps: BTreeMap<String, AppStatus>,
}

fn read_trim(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What the store shows of pod `pod`. `finishing`: it was seen running, so an init that is
/// gone with no exit recorded yet gets [`EXIT_RECORD_GRACE`] to record it before the pod
/// counts as killed (at start-up and in replays a pod in that state was killed long ago).
fn snapshot(pod: &PodRef, finishing: bool) -> PodSnap {
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

/// The reason a pod-exited event carries when the pod recorded no exit status.
pub const UNKNOWN_EXIT: &str = "unknown";

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

fn event(kind: EventType, id: &str, name: &str, time: i64) -> proto::Event {
    proto::Event {
        r#type: kind as i32,
        id: id.to_string(),
        name: name.to_string(),
        time: if time == 0 { now() } else { time },
        exit_code: None,
        replayed: false,
        reason: String::new(),
    }
}

/// Now, Unix nanoseconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64
}

/// The events that take a pod from `old` to `new`, in lifecycle order.
fn diff(uuid: &str, dir: &Path, old: &PodSnap, new: &PodSnap) -> Vec<proto::Event> {
    let mut out = Vec::new();
    let file_time = |name: &str| nanos(&read_trim(dir, name));
    if new.prepared && !old.prepared {
        out.push(event(
            EventType::PodPrepared,
            uuid,
            "",
            file_time(paths::CREATED),
        ));
    }
    if new.started && !old.started {
        out.push(event(
            EventType::PodStarted,
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
            out.push(event(
                EventType::PodAppStarted,
                uuid,
                name,
                s.started_at.as_deref().map_or(0, nanos),
            ));
        }
        if s.state == AppState::Exited && was != Some(AppState::Exited) {
            let mut e = event(
                EventType::PodAppExited,
                uuid,
                name,
                s.finished_at.as_deref().map_or(0, nanos),
            );
            e.exit_code = s.exit_code;
            out.push(e);
        }
    }
    if new.exited && !old.exited {
        let mut e = event(EventType::PodExited, uuid, "", file_time(paths::FINISHED));
        e.exit_code = read_trim(dir, paths::EXIT).parse().ok();
        if e.exit_code.is_none() {
            e.reason = UNKNOWN_EXIT.to_string();
        }
        out.push(e);
    }
    let collected =
        |s: &PodSnap| matches!(s.state, Some(DirState::ExitedGarbage | DirState::Garbage));
    if collected(new) && !collected(old) {
        out.push(event(EventType::PodGarbageCollected, uuid, "", 0));
    }
    out
}

/// What an inotify watch is on.
#[derive(Debug, Clone)]
enum Target {
    /// The store root, `pods/`, a state directory or `images/`: entries come and go.
    Layout,
    /// `images/`: the index changes.
    Images,
    /// A pod's directory, its `apps/` or one app's directory.
    Pod(String),
}

struct Watcher {
    root: PathBuf,
    pods: PodStore,
    images: Store,
    inotify: Inotify,
    targets: HashMap<WatchDescriptor, (Target, PathBuf)>,
    watched_dirs: HashSet<PathBuf>,
    known: HashMap<String, PodSnap>,
    known_images: BTreeMap<String, String>,
    /// A pidfd of each running pod's init: readable when it dies, which is the only sign a
    /// stage1 killed outright (SIGKILL, OOM) gives.
    pidfds: HashMap<String, std::os::fd::OwnedFd>,
    hub: Arc<EventHub>,
}

const DIR_CHANGES: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::ONLYDIR);

const FILE_CHANGES: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::CREATE)
    .union(WatchMask::MODIFY)
    .union(WatchMask::ONLYDIR);

impl Watcher {
    fn new(root: &Path, hub: Arc<EventHub>) -> std::io::Result<Watcher> {
        let mut w = Watcher {
            root: root.to_path_buf(),
            pods: PodStore::new(root),
            images: Store::new(root),
            inotify: Inotify::init()?,
            targets: HashMap::new(),
            watched_dirs: HashSet::new(),
            known: HashMap::new(),
            known_images: BTreeMap::new(),
            pidfds: HashMap::new(),
            hub,
        };
        w.watch_layout();
        // What exists now is the starting point: no events for it.
        for p in w.pods.list().unwrap_or_default() {
            w.watch_pod(&p);
            let snap = snapshot(&p, false);
            w.track_pid(&p, &snap);
            w.known.insert(p.uuid.clone(), snap);
        }
        w.known_images = w.image_names();
        Ok(w)
    }

    fn add(&mut self, dir: &Path, mask: WatchMask, target: Target) {
        if self.watched_dirs.contains(dir) {
            return;
        }
        if let Ok(wd) = self.inotify.watches().add(dir, mask) {
            self.targets.insert(wd, (target, dir.to_path_buf()));
            self.watched_dirs.insert(dir.to_path_buf());
        }
    }

    /// The directories whose entries are pods or images (those that exist yet).
    fn watch_layout(&mut self) {
        let root = self.root.clone();
        // A store not created yet: its nearest existing parent tells when it appears.
        if let Some(parent) = root.ancestors().skip(1).find(|a| a.is_dir()) {
            if !root.is_dir() {
                self.add(parent, DIR_CHANGES, Target::Layout);
            }
        }
        self.add(&root, DIR_CHANGES, Target::Layout);
        self.add(&root.join("pods"), DIR_CHANGES, Target::Layout);
        for s in DirState::ALL {
            self.add(&self.pods.state_dir(s), DIR_CHANGES, Target::Layout);
        }
        self.add(
            &root.join("images"),
            FILE_CHANGES.union(DIR_CHANGES),
            Target::Images,
        );
    }

    fn watch_pod(&mut self, p: &PodRef) {
        let t = Target::Pod(p.uuid.clone());
        // Watches follow a directory across renames: keyed by the pod, not the path.
        self.add(&p.path, FILE_CHANGES, t.clone());
        let apps = p.path.join("apps");
        self.add(&apps, FILE_CHANGES, t.clone());
        for e in std::fs::read_dir(&apps).into_iter().flatten().flatten() {
            self.add(&e.path(), FILE_CHANGES, t.clone());
        }
    }

    fn publish(&self, events: Vec<proto::Event>) {
        for e in events {
            // No listener is not an error.
            let _ = self.hub.events.send(e);
        }
    }

    /// Keeps a pidfd of a running pod's init, and none once it exited.
    fn track_pid(&mut self, p: &PodRef, snap: &PodSnap) {
        if snap.exited || p.state != DirState::Run {
            self.pidfds.remove(&p.uuid);
            return;
        }
        if self.pidfds.contains_key(&p.uuid) {
            return;
        }
        let pid = read_trim(&p.path, paths::PID)
            .parse::<i32>()
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(fd) = pid.and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        }) {
            self.pidfds.insert(p.uuid.clone(), fd);
        }
    }

    /// Re-reads one pod and publishes how it changed.
    fn rescan_pod(&mut self, p: &PodRef) {
        self.watch_pod(p);
        let old = self.known.get(&p.uuid).cloned().unwrap_or_default();
        let new = snapshot(p, old.started && !old.exited);
        self.track_pid(p, &new);
        if new != old {
            let events = diff(&p.uuid, &p.path, &old, &new);
            self.known.insert(p.uuid.clone(), new);
            self.publish(events);
        }
    }

    /// Lists the pods again: new ones, moved ones and `dirty` ones are re-read; missing ones
    /// are removed.
    fn rescan_pods(&mut self, dirty: &HashSet<String>, all: bool) {
        let Ok(pods) = self.pods.list() else { return };
        let mut seen = HashSet::new();
        for p in &pods {
            seen.insert(p.uuid.clone());
            let moved = self.known.get(&p.uuid).and_then(|s| s.state) != Some(p.state);
            if all || moved || dirty.contains(&p.uuid) {
                self.rescan_pod(p);
            }
        }
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|u| !seen.contains(*u))
            .cloned()
            .collect();
        for uuid in gone {
            self.pidfds.remove(&uuid);
            let old = self.known.remove(&uuid).unwrap_or_default();
            let mut events = Vec::new();
            if old.prepared {
                events.push(event(EventType::PodRemoved, &uuid, "", 0));
            }
            self.publish(events);
        }
        // Watches of removed directories went with them.
        self.watched_dirs.retain(|d| d.exists());
    }

    fn image_names(&self) -> BTreeMap<String, String> {
        self.images
            .images()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| Some((e.name.clone()?, e.digest.to_string())))
            .collect()
    }

    fn rescan_images(&mut self) {
        let now_names = self.image_names();
        let mut events = Vec::new();
        let fetched_at = |name: &str| {
            self.images
                .images()
                .unwrap_or_default()
                .iter()
                .find(|e| e.name.as_deref() == Some(name))
                .and_then(|e| e.annotation(store::FETCHED_ANNOTATION).map(nanos))
                .unwrap_or(0)
        };
        for (name, digest) in &now_names {
            if self.known_images.get(name) != Some(digest) {
                events.push(event(
                    EventType::ImageFetched,
                    digest,
                    name,
                    fetched_at(name),
                ));
            }
        }
        for (name, digest) in &self.known_images {
            if !now_names.contains_key(name) {
                events.push(event(EventType::ImageRemoved, digest, name, 0));
            }
        }
        self.known_images = now_names;
        self.publish(events);
    }

    fn run(&mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // The inotify instance and every running pod's pidfd, without a timeout.
            let (ended, inotify_ready) = {
                use rustix::event::{poll, PollFd, PollFlags};
                use std::os::fd::AsFd;
                let uuids: Vec<&String> = self.pidfds.keys().collect();
                let mut fds: Vec<PollFd> = vec![PollFd::new(&self.inotify, PollFlags::IN)];
                fds.extend(
                    uuids
                        .iter()
                        .map(|u| PollFd::from_borrowed_fd(self.pidfds[*u].as_fd(), PollFlags::IN)),
                );
                match poll(&mut fds, None) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => return,
                }
                let ended: HashSet<String> = fds[1..]
                    .iter()
                    .zip(&uuids)
                    .filter(|(f, _)| !f.revents().is_empty())
                    .map(|(_, u)| (*u).clone())
                    .collect();
                (ended, !fds[0].revents().is_empty())
            };
            for uuid in &ended {
                // Its process is gone: not watched again (a live one re-opens a pidfd).
                self.pidfds.remove(uuid);
            }
            let events: Vec<_> = if inotify_ready {
                match self.inotify.read_events_blocking(&mut buf) {
                    Ok(events) => events.collect(),
                    Err(_) => return,
                }
            } else {
                Vec::new()
            };
            let (mut layout, mut images, mut overflow) = (false, false, false);
            let mut dirty: HashSet<String> = ended;
            let mut logs_only = HashSet::new();
            let mut gone_watches = Vec::new();
            for e in events {
                if e.mask.contains(EventMask::Q_OVERFLOW) {
                    overflow = true;
                    continue;
                }
                if e.mask.contains(EventMask::IGNORED) {
                    gone_watches.push(e.wd.clone());
                    continue;
                }
                match self.targets.get(&e.wd).map(|(t, _)| t) {
                    Some(Target::Layout) => layout = true,
                    Some(Target::Images) => {
                        images = true;
                        layout = true;
                    }
                    Some(Target::Pod(uuid)) => {
                        // A log growing changes no state: followers are told, nothing is
                        // re-read.
                        if e.name.is_some_and(|n| n == "log") {
                            logs_only.insert(uuid.clone());
                        } else {
                            dirty.insert(uuid.clone());
                        }
                    }
                    None => {}
                }
            }
            // A directory whose watch is gone may be made again under the same path (an app
            // removed and added): it must be watchable again.
            for wd in gone_watches {
                if let Some((_, path)) = self.targets.remove(&wd) {
                    self.watched_dirs.remove(&path);
                }
            }
            for uuid in dirty.iter().chain(logs_only.difference(&dirty)) {
                let _ = self.hub.changes.send(uuid.clone());
            }
            if layout || overflow {
                // A directory may have appeared (a fresh store) and need watching.
                self.watch_layout();
            }
            self.rescan_pods(&dirty, overflow);
            if images || overflow {
                self.rescan_images();
            }
            if layout || overflow {
                for uuid in self.known.keys() {
                    let _ = self.hub.changes.send(uuid.clone());
                }
            }
        }
    }
}

/// The events the store still shows that happened at or after `since` (Unix ns), oldest
/// first: pods' preparation, start, apps' starts and exits, exit and collection from their
/// recorded times; images' fetches. Removals leave nothing to replay.
pub fn replay(root: &Path, since: i64) -> Vec<proto::Event> {
    let pods = PodStore::new(root);
    let mut out = Vec::new();
    for p in pods.list().unwrap_or_default() {
        let snap = snapshot(&p, false);
        let mut events = diff(&p.uuid, &p.path, &PodSnap::default(), &snap);
        for e in &mut events {
            if e.r#type == EventType::PodGarbageCollected as i32 {
                // Collection renamed the directory: its change time is when.
                use std::os::unix::fs::MetadataExt;
                if let Ok(m) = std::fs::metadata(&p.path) {
                    e.time = m.ctime() * 1_000_000_000 + m.ctime_nsec();
                }
            }
        }
        out.extend(events);
    }
    for e in Store::new(root).images().unwrap_or_default() {
        if let Some(name) = &e.name {
            let t = e.annotation(store::FETCHED_ANNOTATION).map_or(0, nanos);
            out.push(event(
                EventType::ImageFetched,
                &e.digest.to_string(),
                name,
                t,
            ));
        }
    }
    out.retain(|e| e.time >= since);
    out.sort_by_key(|e| e.time);
    for e in &mut out {
        e.replayed = true;
    }
    out
}

/// Whether `e` passes `f` (time bounds aside).
pub fn matches(e: &proto::Event, f: &proto::EventFilter) -> bool {
    (f.types.is_empty() || f.types.contains(&e.r#type))
        && (f.ids.is_empty() || f.ids.iter().any(|i| e.id.starts_with(i.as_str())))
        && (f.names.is_empty() || f.names.contains(&e.name))
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
            .find(|e| e.r#type == EventType::PodExited as i32)
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
            .find(|e| e.r#type == EventType::PodExited as i32)
            .expect("a pod-exited event");
        assert_eq!(exited.exit_code, None);
        assert_eq!(exited.reason, UNKNOWN_EXIT);
        // Seen at start-up (not running before): no grace.
        let started = std::time::Instant::now();
        assert!(snapshot(&pod, false).exited);
        assert!(started.elapsed() < EXIT_RECORD_GRACE);
    }
}
