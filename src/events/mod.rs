//! The store's events, without polling: pods prepared, started, their apps started and
//! exited, pods exited, collected and removed, images fetched and removed. The API service
//! streams them (`ListenEvents`) and the CRI server turns them into container events; each
//! converts these library types into its own protocol.
//!
//! [`EventHub`] watches the store live; [`replay`] rebuilds past events from the timestamps
//! the store keeps.

mod replay;
mod snapshot;
mod watcher;

pub use replay::replay;
pub use watcher::EventHub;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    PodPrepared,
    PodStarted,
    PodAppStarted,
    PodAppExited,
    PodExited,
    PodGarbageCollected,
    PodRemoved,
    ImageFetched,
    ImageRemoved,
}

/// One change the store shows.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreEvent {
    pub kind: EventKind,
    /// The pod's UUID, or the image's digest.
    pub id: String,
    /// The app's name (app events) or the image's name (image events); empty otherwise.
    pub name: String,
    /// When it happened, Unix nanoseconds.
    pub time: i64,
    /// An exit's recorded code, when there is one.
    pub exit_code: Option<i32>,
    /// Rebuilt from the store's timestamps rather than seen as it happened.
    pub replayed: bool,
    /// Why an exit carries no code ([`UNKNOWN_EXIT`]); empty otherwise.
    pub reason: String,
}

/// The reason a pod-exited event carries when the pod recorded no exit status (its stage1
/// was killed outright).
pub const UNKNOWN_EXIT: &str = "unknown";

impl StoreEvent {
    /// An event of `kind` at `time` (Unix ns; 0 means now).
    fn new(kind: EventKind, id: &str, name: &str, time: i64) -> StoreEvent {
        StoreEvent {
            kind,
            id: id.to_string(),
            name: name.to_string(),
            time: if time == 0 {
                crate::clock::now_nanos()
            } else {
                time
            },
            exit_code: None,
            replayed: false,
            reason: String::new(),
        }
    }
}
