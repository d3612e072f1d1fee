//! GetContainerEvents: the store's pod events (the API service's inotify watcher) turned
//! into CRI container events — started and stopped apps of CRI sandboxes — plus created and
//! deleted, which the server announces itself when it makes or removes a container.

use std::sync::Arc;

use super::proto::{self, ContainerEventType};
use super::records;
use super::CriContext;
use crate::events::{EventHub, EventKind};
use crate::pod::store::PodStore;

/// An event for container `c`.
pub fn event(c: &records::Container, kind: ContainerEventType) -> proto::ContainerEventResponse {
    proto::ContainerEventResponse {
        container_id: c.id.clone(),
        container_event_type: kind as i32,
        created_at: super::now(),
        pod_sandbox_status: Some(proto::PodSandboxStatus {
            id: c.sandbox.pod.uuid.clone(),
            metadata: c.sandbox.config.metadata.clone(),
            created_at: c.sandbox.meta.created_at,
            labels: c.sandbox.config.labels.clone(),
            annotations: c.sandbox.config.annotations.clone(),
            runtime_handler: c.sandbox.meta.runtime_handler.clone(),
            ..Default::default()
        }),
        containers_statuses: vec![],
    }
}

/// Sends `kind` for `c` unless an event as late or later was sent for it already.
pub fn emit(ctx: &CriContext, c: &records::Container, kind: ContainerEventType) {
    let mut last = ctx.last_events.lock().unwrap_or_else(|p| p.into_inner());
    let before = last.get(&c.id).copied().unwrap_or(-1);
    if (kind as i32) <= before {
        return;
    }
    // Kept after a deletion too, so that a late watcher event for it is not sent.
    last.insert(c.id.clone(), kind as i32);
    let _ = ctx.events.send(event(c, kind));
}

/// Starts turning the store's app events into container events (a thread and a task for
/// the life of the server).
pub fn forward(ctx: Arc<CriContext>) -> std::io::Result<()> {
    let hub = EventHub::start(&ctx.root)?;
    let mut rx = hub.subscribe();
    tokio::spawn(async move {
        let _hub = hub;
        while let Ok(e) = rx.recv().await {
            let kind = match e.kind {
                EventKind::PodAppStarted => ContainerEventType::ContainerStartedEvent,
                EventKind::PodAppExited => ContainerEventType::ContainerStoppedEvent,
                _ => continue,
            };
            let ctx = ctx.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let pods = PodStore::new(&ctx.root);
                let Some(sb) = records::find_sandbox(&pods, &e.id) else {
                    return;
                };
                if let Some(c) = records::containers_of(&sb)
                    .into_iter()
                    .find(|c| c.meta.app == e.name)
                {
                    emit(&ctx, &c, kind);
                }
            })
            .await;
        }
    });
    Ok(())
}
