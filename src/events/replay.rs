//! Past events, rebuilt from the timestamps the store keeps.

use std::path::Path;

use super::snapshot::{diff, snapshot, PodSnap};
use super::{EventKind, StoreEvent};
use crate::clock::nanos;
use crate::image::store::{self, Store};
use crate::pod::store::PodStore;

/// The events the store still shows that happened at or after `since` (Unix ns), oldest
/// first: pods' preparation, start, apps' starts and exits, exit and collection from their
/// recorded times; images' fetches. Removals leave nothing to replay.
pub fn replay(root: &Path, since: i64) -> Vec<StoreEvent> {
    let pods = PodStore::new(root);
    let mut out = Vec::new();
    for p in pods.list().unwrap_or_default() {
        let snap = snapshot(&p, false);
        let mut events = diff(&p.uuid, &p.path, &PodSnap::default(), &snap);
        for e in &mut events {
            if e.kind == EventKind::PodGarbageCollected {
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
            out.push(StoreEvent::new(
                EventKind::ImageFetched,
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
