//! Events from the store, without polling: one inotify instance watches the pod state
//! directories, every pod directory and its apps' directories, and the image index; each
//! change re-reads only what it touched and compares it with what was known, and the
//! differences go to every listener (a broadcast channel). Changes under a pod (a log
//! growing, a status written) are also announced by UUID, for log followers.
//!

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::sync::broadcast;

use orbit_stage1::paths;

use super::snapshot::{diff, read_trim, snapshot, PodSnap};
use super::{EventKind, StoreEvent};
use crate::clock::nanos;
use crate::image::store::{self, Store};
use crate::pod::store::{DirState, PodRef, PodStore};

/// Where events and pod changes are published.
pub struct EventHub {
    events: broadcast::Sender<StoreEvent>,
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
            .name("orbit-store-events".into())
            .spawn(move || watcher.run())?;
        Ok(hub)
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    /// UUIDs of pods something changed under (logs, statuses, state), from now on.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }
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

    fn publish(&self, events: Vec<StoreEvent>) {
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
                events.push(StoreEvent::new(EventKind::PodRemoved, &uuid, "", 0));
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
                events.push(StoreEvent::new(
                    EventKind::ImageFetched,
                    digest,
                    name,
                    fetched_at(name),
                ));
            }
        }
        for (name, digest) in &self.known_images {
            if !now_names.contains_key(name) {
                events.push(StoreEvent::new(EventKind::ImageRemoved, digest, name, 0));
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
