//! Bookkeeping while unpacking: deferred directory metadata, the paths this layer added
//! (for flatten-mode whiteouts) and the manifest being recorded. Keys are normalised paths
//! (empty = the target itself); removing a directory forgets everything below it.

use std::collections::{BTreeMap, BTreeSet};

use rustix::fs::Timespec;

use super::manifest::{LayerManifest, ManifestEntry, RawName};
use super::path::{descendants_end, descendants_start};

/// Mode and mtime of a directory, applied after all entries (so that writing children
/// neither fails on a read-only directory nor bumps its mtime).
#[derive(Debug, Clone, Copy)]
pub(super) struct DirMeta {
    /// Permission bits to set.
    pub mode: u32,
    /// Modification (and access) time to set.
    pub mtime: Timespec,
}

/// See the module documentation.
pub(super) struct Book {
    /// Directories whose mode/mtime are set in the final pass.
    pub dirs: BTreeMap<Vec<u8>, DirMeta>,
    /// Paths created or replaced by this layer; tracked in flatten mode only.
    added: Option<BTreeSet<Vec<u8>>>,
    /// The manifest being recorded, if asked for.
    manifest: Option<BTreeMap<Vec<u8>, ManifestEntry>>,
    /// Paths that manifest entries name in `hardlink_of`.
    link_targets: BTreeSet<Vec<u8>>,
}

impl Book {
    /// Empty books; `track_added` for flatten mode, `record` to build a manifest.
    pub(super) fn new(track_added: bool, record: bool) -> Book {
        Book {
            dirs: BTreeMap::new(),
            added: track_added.then(BTreeSet::new),
            manifest: record.then(BTreeMap::new),
            link_targets: BTreeSet::new(),
        }
    }

    /// Notes that this layer created (or replaced) `path`.
    pub(super) fn mark_added(&mut self, path: &[u8]) {
        if let Some(added) = &mut self.added {
            if !added.contains(path) {
                added.insert(path.to_vec());
            }
        }
    }

    /// Whether this layer created (or replaced) `path`.
    pub(super) fn is_added(&self, path: &[u8]) -> bool {
        self.added.as_ref().is_some_and(|a| a.contains(path))
    }

    /// Whether a manifest is being recorded.
    pub(super) fn recording(&self) -> bool {
        self.manifest.is_some()
    }

    /// Records (or replaces) the manifest entry of `path`.
    pub(super) fn record(&mut self, path: &[u8], entry: ManifestEntry) {
        if let Some(m) = &mut self.manifest {
            match m.get_mut(path) {
                Some(slot) => *slot = entry,
                None => {
                    m.insert(path.to_vec(), entry);
                }
            }
        }
    }

    /// The recorded entry of `path`.
    pub(super) fn entry(&self, path: &[u8]) -> Option<&ManifestEntry> {
        self.manifest.as_ref()?.get(path)
    }

    /// Records `path` as a hard link of `target`: a copy of the target's entry (or of
    /// `fallback` when the target was not recorded, e.g. it came from an older layer).
    pub(super) fn record_hardlink(
        &mut self,
        path: &[u8],
        target: &[u8],
        fallback: impl FnOnce() -> ManifestEntry,
    ) {
        if !self.recording() {
            return;
        }
        let (mut entry, root) = match self.entry(target) {
            Some(e) => {
                let root = e
                    .hardlink_of
                    .as_ref()
                    .map_or_else(|| target.to_vec(), |r| r.0.clone());
                (e.clone(), root)
            }
            None => (fallback(), target.to_vec()),
        };
        entry.hardlink_of = Some(RawName(root.clone()));
        self.link_targets.insert(root);
        self.record(path, entry);
    }

    /// Marks the recorded directory `path` opaque.
    pub(super) fn mark_opaque(&mut self, path: &[u8]) {
        if let Some(e) = self.manifest.as_mut().and_then(|m| m.get_mut(path)) {
            e.opaque = true;
        }
    }

    /// Forgets `path` (and, if it was a directory, everything below it) after it was
    /// removed from the target.
    pub(super) fn forget(&mut self, path: &[u8], was_dir: bool) {
        self.dirs.remove(path);
        if let Some(a) = &mut self.added {
            a.remove(path);
        }
        if let Some(m) = &mut self.manifest {
            m.remove(path);
        }
        if was_dir {
            self.forget_below(path);
        }
        self.unlink_dependents(path, was_dir);
    }

    fn forget_below(&mut self, dir: &[u8]) {
        let (start, end) = (descendants_start(dir), descendants_end(dir));
        remove_range(&mut self.dirs, &start, &end);
        if let Some(a) = &mut self.added {
            let keys: Vec<Vec<u8>> = a.range(start.clone()..end.clone()).cloned().collect();
            for k in keys {
                a.remove(&k);
            }
        }
        if let Some(m) = &mut self.manifest {
            remove_range(m, &start, &end);
        }
    }

    /// Hard links recorded against a removed path no longer share its (new) inode.
    fn unlink_dependents(&mut self, path: &[u8], was_dir: bool) {
        let mut gone: Vec<Vec<u8>> = Vec::new();
        if self.link_targets.remove(path) {
            gone.push(path.to_vec());
        }
        if was_dir {
            let (start, end) = (descendants_start(path), descendants_end(path));
            gone.extend(self.link_targets.range(start..end).cloned());
            for g in &gone {
                self.link_targets.remove(g);
            }
        }
        if gone.is_empty() {
            return;
        }
        if let Some(m) = &mut self.manifest {
            for e in m.values_mut() {
                if e.hardlink_of.as_ref().is_some_and(|t| gone.contains(&t.0)) {
                    e.hardlink_of = None;
                }
            }
        }
    }

    /// The finished manifest, if one was recorded.
    pub(super) fn into_manifest(self) -> Option<LayerManifest> {
        let entries = self
            .manifest?
            .into_iter()
            .map(|(path, mut e)| {
                e.path = if path.is_empty() {
                    RawName::from(".")
                } else {
                    RawName(path)
                };
                e
            })
            .collect();
        Some(LayerManifest { entries })
    }
}

fn remove_range<V>(map: &mut BTreeMap<Vec<u8>, V>, start: &[u8], end: &[u8]) {
    let keys: Vec<Vec<u8>> = map
        .range(start.to_vec()..end.to_vec())
        .map(|(k, _)| k.clone())
        .collect();
    for k in keys {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::unpack::manifest::EntryKind;

    #[test]
    fn forgetting_a_dir_forgets_its_contents_only() {
        let mut b = Book::new(true, true);
        for p in [&b"a"[..], b"a/x", b"a/y/z", b"ab", b"a0"] {
            b.mark_added(p);
            b.record(p, ManifestEntry::new(EntryKind::File, 0o644, 0, 0));
        }
        b.forget(b"a", true);
        let m = b.into_manifest().unwrap();
        let paths: Vec<String> = m.entries.iter().map(|e| e.path.to_string()).collect();
        assert_eq!(paths, ["a0", "ab"]);
    }

    #[test]
    fn hardlinks_lose_their_link_when_the_target_is_replaced() {
        let mut b = Book::new(false, true);
        b.record(b"t", ManifestEntry::new(EntryKind::File, 0o644, 0, 0));
        b.record_hardlink(b"l1", b"t", || unreachable!());
        b.record_hardlink(b"l2", b"l1", || unreachable!());
        assert_eq!(
            b.entry(b"l2").unwrap().hardlink_of,
            Some(RawName::from("t"))
        );
        b.forget(b"t", false);
        assert_eq!(b.entry(b"l1").unwrap().hardlink_of, None);
        assert_eq!(b.entry(b"l2").unwrap().hardlink_of, None);
    }
}
