//! Private uid/gid ranges for `--private-users` pods: each pod gets 65536 ids of its own,
//! allocated under a lock in the store (`pods/userns.json`) so no two pods share a range;
//! ranges of pods that no longer exist are reclaimed on the next allocation.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::chown;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use orbit_stage1::UserNamespace;

use super::store::PodStore;
use super::PodError;

/// Refuses a `--private-users` pod whose ids cannot reach the store at `root`: its root is
/// an unprivileged id on the host, which must be able to search every directory above the
/// store (the layers and its own directory are looked up as that id when its root is
/// mounted). Names the first directory that blocks it and what to do.
pub fn check_store_reachable(root: &Path) -> Result<(), PodError> {
    use std::os::unix::fs::MetadataExt;
    let root = fs::canonicalize(root).map_err(|e| PodError::io("cannot resolve", root, e))?;
    let mut ancestors: Vec<&Path> = root.ancestors().collect();
    ancestors.reverse();
    for dir in ancestors {
        let m = fs::metadata(dir).map_err(|e| PodError::io("cannot read", dir, e))?;
        // An ACL may grant what the mode bits do not: the kernel decides then.
        if m.mode() & 0o001 != 0 || has_acl(dir) {
            continue;
        }
        return Err(PodError::BadSpec(format!(
            "--private-users: the pod's ids cannot reach the store {}: {} (mode {:04o}, owner \
             {}) does not let other users search it, and a private-users pod's root is an \
             unprivileged id on the host; allow it (`chmod o+x {}`) or keep the store below \
             directories others can search (ORBIT_DIR, e.g. the default /var/lib/orbit)",
            root.display(),
            dir.display(),
            m.mode() & 0o7777,
            m.uid(),
            dir.display()
        )));
    }
    Ok(())
}

/// Whether `dir` carries an access ACL.
fn has_acl(dir: &Path) -> bool {
    rustix::fs::getxattr(dir, "system.posix_acl_access", &mut [0u8; 0][..]).is_ok_and(|n| n > 0)
}

/// Ids per pod.
pub const RANGE_SIZE: u32 = 65536;
/// The first host id handed out (above the usual system and login ranges).
const FIRST_BASE: u32 = 0x0100_0000;
/// How many ranges exist.
const MAX_RANGES: u32 = 4096;

fn with_ranges<T>(
    pods: &PodStore,
    f: impl FnOnce(&mut BTreeMap<String, u32>) -> Result<T, PodError>,
) -> Result<T, PodError> {
    let lock_path = pods.root().join("userns.lock");
    let lock_file = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| PodError::io("cannot open", &lock_path, e))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| PodError::io("cannot lock", &lock_path, e.into()))?;
    let path = pods.root().join("userns.json");
    let mut ranges: BTreeMap<String, u32> = match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| PodError::Corrupt {
            uuid: "-".into(),
            detail: format!("{}: {e}", path.display()),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(PodError::io("cannot read", &path, e)),
    };
    let out = f(&mut ranges)?;
    let bytes = serde_json::to_vec_pretty(&ranges).expect("a map serializes");
    orbit_stage1::status::write_atomic(&path, &bytes)
        .map_err(|e| PodError::io("cannot write", &path, e))?;
    Ok(out)
}

/// Allocates a range for pod `uuid`. Ranges are released when their pod is removed;
/// ranges of pods that vanished without that are reclaimed by [`reclaim`] (`orbit gc`).
pub fn allocate(pods: &PodStore, uuid: &str) -> Result<UserNamespace, PodError> {
    with_ranges(pods, |ranges| {
        let used: Vec<u32> = ranges.values().copied().collect();
        let slot = (0..MAX_RANGES).find(|s| !used.contains(s)).ok_or_else(|| {
            PodError::BadSpec(format!(
                "all {MAX_RANGES} private user ranges are in use; remove exited pods (`orbit gc`)"
            ))
        })?;
        ranges.insert(uuid.to_string(), slot);
        let base = FIRST_BASE + slot * RANGE_SIZE;
        Ok(UserNamespace {
            uid_base: base,
            gid_base: base,
            size: RANGE_SIZE,
        })
    })
}

/// Drops the ranges of pods that no longer exist in any state. Pods move between state
/// directories by rename without this lock, so a pod counts as gone only when two scans,
/// made while holding the lock, both miss it.
pub fn reclaim(pods: &PodStore) -> Result<(), PodError> {
    with_ranges(pods, |ranges| {
        let first: Vec<String> = pods.list()?.into_iter().map(|p| p.uuid).collect();
        let second: Vec<String> = pods.list()?.into_iter().map(|p| p.uuid).collect();
        ranges.retain(|u, _| first.contains(u) || second.contains(u));
        Ok(())
    })
}

/// Releases pod `uuid`'s range.
pub fn release(pods: &PodStore, uuid: &str) -> Result<(), PodError> {
    with_ranges(pods, |ranges| {
        ranges.remove(uuid);
        Ok(())
    })
}

/// Gives the pod's root (host id `base`) the directories it must write to.
pub fn chown_to_pod_root(paths: &[&Path], ns: &UserNamespace) -> Result<(), PodError> {
    for p in paths {
        if p.exists() {
            chown(p, Some(ns.uid_base), Some(ns.gid_base))
                .map_err(|e| PodError::io("cannot chown", p, e))?;
        }
    }
    Ok(())
}
