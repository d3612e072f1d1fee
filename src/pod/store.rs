//! The pod store: `pods/<state>/<uuid>/`. A pod changes state by `rename(2)` of its
//! directory, so every transition is atomic; whether a pod in `run/` is still running is
//! whether its stage1 holds the directory's `flock`. Nothing else records state.

use std::fs;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use super::PodError;

/// A pod directory's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirState {
    /// Being created.
    Embryo,
    /// Being prepared (app roots, pod.json).
    Prepare,
    /// Ready to run.
    Prepared,
    /// Running, or exited but not yet collected (see [`PodStore::is_locked`]).
    Run,
    /// Exited and marked by gc; removed after the grace period.
    ExitedGarbage,
    /// Being removed.
    Garbage,
}

impl DirState {
    /// Every state, in lifecycle order.
    pub const ALL: [DirState; 6] = [
        DirState::Embryo,
        DirState::Prepare,
        DirState::Prepared,
        DirState::Run,
        DirState::ExitedGarbage,
        DirState::Garbage,
    ];

    /// The directory name.
    pub fn dir(self) -> &'static str {
        match self {
            DirState::Embryo => "embryo",
            DirState::Prepare => "prepare",
            DirState::Prepared => "prepared",
            DirState::Run => "run",
            DirState::ExitedGarbage => "exited-garbage",
            DirState::Garbage => "garbage",
        }
    }
}

/// The pods under a store root.
#[derive(Debug, Clone)]
pub struct PodStore {
    root: PathBuf,
}

/// A pod found in the store.
#[derive(Debug, Clone)]
pub struct PodRef {
    /// Full UUID.
    pub uuid: String,
    /// Its directory's state.
    pub state: DirState,
    /// Its directory.
    pub path: PathBuf,
}

impl PodStore {
    /// Pods under `<store>/pods`.
    pub fn new(store_root: &Path) -> PodStore {
        PodStore {
            root: store_root.join("pods"),
        }
    }

    /// `<store>/pods`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a state.
    pub fn state_dir(&self, s: DirState) -> PathBuf {
        self.root.join(s.dir())
    }

    /// Creates the state directories.
    pub fn init(&self) -> Result<(), PodError> {
        if let Some(store) = self.root.parent() {
            crate::image::store::create_store_root(store)
                .map_err(|e| PodError::io("cannot create the store", store, e))?;
        }
        for s in DirState::ALL {
            let d = self.state_dir(s);
            if d.is_dir() {
                continue;
            }
            fs::create_dir_all(&self.root)
                .map_err(|e| PodError::io("cannot create", &self.root, e))?;
            // Listed by root and the store's group only; passable by a private-users pod's
            // id range on the way to its own directory.
            use std::os::unix::fs::DirBuilderExt;
            match fs::DirBuilder::new().mode(0o751).create(&d) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(PodError::io("cannot create", &d, e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Creates a new pod directory in `embryo/` with a fresh UUID, already locked: it is
    /// made under a hidden name, locked, and only then renamed to its UUID, so `gc` never sees
    /// an unlocked new pod and takes it for an abandoned one.
    pub fn create(&self) -> Result<(PodRef, Flock<std::os::fd::OwnedFd>), PodError> {
        self.init()?;
        let uuid = uuid::Uuid::new_v4().to_string();
        let embryos = self.state_dir(DirState::Embryo);
        let hidden = embryos.join(format!(".new-{uuid}"));
        fs::create_dir(&hidden)
            .map_err(|e| PodError::io("cannot create pod directory", &hidden, e))?;
        let Some(lock) = try_lock(&hidden)? else {
            let _ = fs::remove_dir(&hidden);
            return Err(PodError::io(
                "cannot lock new pod directory",
                &hidden,
                std::io::ErrorKind::WouldBlock.into(),
            ));
        };
        let path = embryos.join(&uuid);
        if let Err(e) = fs::rename(&hidden, &path) {
            let _ = fs::remove_dir(&hidden);
            return Err(PodError::io("cannot create pod directory", &path, e));
        }
        Ok((
            PodRef {
                uuid,
                state: DirState::Embryo,
                path,
            },
            lock,
        ))
    }

    /// Moves a pod to another state by renaming its directory.
    pub fn transition(&self, pod: &PodRef, to: DirState) -> Result<PodRef, PodError> {
        let path = self.state_dir(to).join(&pod.uuid);
        fs::rename(&pod.path, &path)
            .map_err(|e| PodError::io(&format!("cannot move pod to {}", to.dir()), &pod.path, e))?;
        Ok(PodRef {
            uuid: pod.uuid.clone(),
            state: to,
            path,
        })
    }

    /// Every pod, in every state.
    pub fn list(&self) -> Result<Vec<PodRef>, PodError> {
        let mut pods = Vec::new();
        for s in DirState::ALL {
            let d = self.state_dir(s);
            let entries = match fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(PodError::io("cannot list", &d, e)),
            };
            for e in entries.flatten() {
                let uuid = e.file_name().to_string_lossy().into_owned();
                if uuid::Uuid::parse_str(&uuid).is_ok() {
                    pods.push(PodRef {
                        uuid,
                        state: s,
                        path: e.path(),
                    });
                }
            }
        }
        pods.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        Ok(pods)
    }

    /// Finds a pod by full or unambiguously abbreviated UUID. A pod caught mid-rename is
    /// looked up again.
    pub fn find(&self, uuid_prefix: &str) -> Result<PodRef, PodError> {
        if uuid_prefix.is_empty() {
            return Err(PodError::UnknownPod(uuid_prefix.into()));
        }
        for _ in 0..3 {
            let mut matches: Vec<PodRef> = self
                .list()?
                .into_iter()
                .filter(|p| p.uuid.starts_with(uuid_prefix))
                .collect();
            matches.dedup_by(|a, b| a.uuid == b.uuid);
            match matches.len() {
                1 => return Ok(matches.remove(0)),
                0 => continue,
                _ => {
                    return Err(PodError::AmbiguousPod {
                        prefix: uuid_prefix.into(),
                        candidates: matches.into_iter().map(|p| p.uuid).collect(),
                    })
                }
            }
        }
        Err(PodError::UnknownPod(uuid_prefix.into()))
    }

    /// Re-finds a pod by its full UUID (its state may have changed).
    pub fn refresh(&self, pod: &PodRef) -> Result<PodRef, PodError> {
        self.find(&pod.uuid)
    }

    /// True when some process holds the pod directory's lock (its stage1 is running, or
    /// stage0 is preparing it). Never blocks, and never takes the lock itself — it reads
    /// `/proc/locks` — so `status` and `list` cannot make a starting pod fail to lock.
    pub fn is_locked(path: &Path) -> bool {
        match LockSnapshot::read() {
            Some(locks) => locks.is_locked(path),
            None => matches!(try_lock(path), Ok(None)),
        }
    }
}

/// The flocks held on the machine at one moment (`/proc/locks`), for deciding about many
/// pods with one read instead of one per pod.
#[derive(Debug, Clone, Default)]
pub struct LockSnapshot {
    /// `MAJ:MIN:INODE` of every held (not merely awaited) flock.
    held: std::collections::HashSet<String>,
}

impl LockSnapshot {
    /// Reads `/proc/locks`; `None` when it cannot be read.
    pub fn read() -> Option<LockSnapshot> {
        // The kernel produces /proc/locks a page at a time, and a lock taken or dropped
        // between two pages shifts the lines: one may be skipped. Read until two reads
        // agree (a stable list), else keep every lock any read saw held.
        let mut held = std::collections::HashSet::new();
        let mut last: Option<String> = None;
        for _ in 0..4 {
            let locks = read_in_one_call("/proc/locks")?;
            held.extend(locks.lines().filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // "1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF"; a blocked waiter's
                // line reads "1: -> FLOCK …" and does not match.
                (f.get(1) == Some(&"FLOCK")).then(|| f.get(5).map(|s| s.to_string()))?
            }));
            // One page holds the whole list: nothing can have been skipped.
            if locks.len() < 3072 || last.as_deref() == Some(locks.as_str()) {
                break;
            }
            last = Some(locks);
        }
        Some(LockSnapshot { held })
    }

    /// [`LockSnapshot::read`], or an empty snapshot (nothing locked) when unreadable.
    pub fn take() -> LockSnapshot {
        LockSnapshot::read().unwrap_or_default()
    }

    /// Whether a flock was held on `path` when the snapshot was taken.
    pub fn is_locked(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = fs::metadata(path) else {
            return false;
        };
        let dev = meta.dev();
        let key = format!(
            "{:02x}:{:02x}:{}",
            nix::sys::stat::major(dev),
            nix::sys::stat::minor(dev),
            meta.ino()
        );
        self.held.contains(&key)
    }
}

/// Reads a seq_file (`/proc/locks`) with as few `read(2)` calls as the kernel allows (each
/// returns up to a page). Read with small buffers, as `read_to_string` starts, the lines are
/// produced in many separate passes, and lines are skipped when other locks come and go
/// between them — a running pod then looked exited under load.
fn read_in_one_call(path: &str) -> Option<String> {
    use std::io::Read;
    let mut f = fs::File::open(path).ok()?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            return String::from_utf8(out).ok();
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Takes a pod directory's exclusive lock without blocking: `Ok(None)` when it is held.
pub fn try_lock(path: &Path) -> Result<Option<Flock<std::os::fd::OwnedFd>>, PodError> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| PodError::io("cannot open", path, e.into()))?;
    match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(PodError::io("cannot lock", path, e.into())),
    }
}
