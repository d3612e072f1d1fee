//! The `PublicAPI` gRPC service: every call reads the store as it is on disk (the
//! filesystem is the database); nothing is written and no lock a writer needs is taken.
//! Blocking file work runs on tokio's blocking pool; streams end when their client goes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use super::logs;
use super::proto::{self, public_api_server::PublicApi};
use crate::config::ConfigDirs;
use crate::events::{self, EventHub};
use crate::grpc::blocking;
use crate::image::catalog;
use crate::image::error::ImageError;
use crate::image::store::Store;
use crate::pod::store::{DirState, LockSnapshot, PodStore};
use crate::pod::PodError;

/// The service's state: where the store is, and the event hub.
#[derive(Clone)]
pub struct ApiService {
    root: PathBuf,
    config: ConfigDirs,
    hub: Arc<EventHub>,
    finished: Arc<FinishedPods>,
}

impl ApiService {
    /// A service over the store at `root`.
    pub fn new(root: PathBuf, config: ConfigDirs, hub: Arc<EventHub>) -> ApiService {
        ApiService {
            root,
            config,
            hub,
            finished: Arc::default(),
        }
    }

    /// Reads every pod once in the background, so that the first ListPods finds the
    /// finished ones already read.
    pub fn warm_up(&self) {
        let (root, finished) = (self.root.clone(), self.finished.clone());
        tokio::task::spawn_blocking(move || list_pods(&root, &[], false, &finished));
    }
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn pod_status(e: PodError) -> Status {
    match e {
        PodError::UnknownPod(p) => Status::not_found(format!("no pod {p}")),
        PodError::AmbiguousPod { prefix, candidates } => Status::invalid_argument(format!(
            "pod prefix {prefix} is ambiguous: {}",
            candidates.join(", ")
        )),
        e => io_status(e.to_string()),
    }
}

fn image_status(e: ImageError) -> Status {
    match e {
        ImageError::UnknownImage(i) => Status::not_found(format!("no image {i}")),
        ImageError::Ambiguous { .. } => Status::invalid_argument(e.to_string()),
        e => io_status(e.to_string()),
    }
}

/// A read that failed: permission problems say what to do.
fn io_status(text: String) -> Status {
    if text.contains("Permission denied") {
        Status::permission_denied(format!(
            "{text}: the API service's user needs read access to the store (see README: the store's group)"
        ))
    } else {
        Status::internal(text)
    }
}

/// Pods that can no longer change (their stage1 is gone), as last read, by UUID: a pod is
/// read again only when its directory was renamed (collected) or changed since.
#[derive(Default)]
pub struct FinishedPods(Mutex<HashMap<String, FinishedPod>>);

/// A finished pod's directory state and times when it was read, and what was read.
type FinishedPod = (DirState, [i64; 4], proto::Pod);

/// A directory's modification and change times: a rename or an entry written changes them.
fn stamp(path: &std::path::Path) -> Option<[i64; 4]> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some([m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()])
}

/// Every pod that passes `filters` (a pod vanishing while it is read is skipped).
fn list_pods(
    root: &std::path::Path,
    filters: &[proto::PodFilter],
    detail: bool,
    finished: &FinishedPods,
) -> Result<Vec<proto::Pod>, Status> {
    let pods = PodStore::new(root);
    // Listed first, locks read after: a pod that starts in between is seen locked.
    let listed = pods.list().map_err(pod_status)?;
    let locks = LockSnapshot::read();
    let cacheable = locks.is_some();
    let locks = locks.unwrap_or_default();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in &listed {
        seen.insert(p.uuid.clone());
        let Some(before) = stamp(&p.path) else {
            continue;
        };
        let cached = finished
            .0
            .lock()
            .expect("no panics holding it")
            .get(&p.uuid)
            .filter(|(state, s, _)| *state == p.state && *s == before)
            .map(|(_, _, pod)| pod.clone());
        let mut pod = match cached {
            Some(pod) => pod,
            None => {
                let Ok(info) = crate::pod::status::info_with(p, &locks) else {
                    continue;
                };
                let pod = convert::pod(p, &info, false);
                // Nothing writes into a pod whose stage1 recorded its exit (or that gc
                // marked); it is kept only if its directory did not change while it was
                // read and its lock is still free.
                let done = cacheable
                    && (pod.state == proto::PodState::ExitedGarbage as i32
                        || (pod.state == proto::PodState::Exited as i32
                            && pod.exit_code.is_some()
                            && !PodStore::is_locked(&p.path)));
                match stamp(&p.path) {
                    Some(after) if done && after == before => {
                        finished
                            .0
                            .lock()
                            .expect("no panics holding it")
                            .insert(p.uuid.clone(), (p.state, after, pod.clone()));
                    }
                    Some(_) => {}
                    // Gone while it was read.
                    None => continue,
                }
                pod
            }
        };
        if detail {
            pod.manifest =
                std::fs::read(p.path.join(orbit_stage1::paths::POD_MANIFEST)).unwrap_or_default();
        }
        if filters.is_empty() || filters.iter().any(|f| convert::pod_matches(&pod, f)) {
            out.push(pod);
        }
    }
    finished
        .0
        .lock()
        .expect("no panics holding it")
        .retain(|uuid, _| seen.contains(uuid));
    Ok(out)
}

#[tonic::async_trait]
impl PublicApi for ApiService {
    async fn get_info(
        &self,
        _: Request<proto::GetInfoRequest>,
    ) -> Result<Response<proto::GetInfoResponse>, Status> {
        let root = self.root.clone();
        let config = self.config.clone();
        let info = blocking(move || {
            let store = Store::new(&root);
            Ok(proto::Info {
                orbit_version: env!("CARGO_PKG_VERSION").to_string(),
                stage1_interface_version: orbit_stage1::INTERFACE_VERSION,
                api_version: "v1".into(),
                store_dir: root.display().to_string(),
                pods_dir: PodStore::new(&root).root().display().to_string(),
                images_dir: store.images_dir().display().to_string(),
                layers_dir: store.layers_dir().display().to_string(),
                stage1_flavors: crate::pod::stage1::available(&config),
            })
        })
        .await?;
        Ok(Response::new(proto::GetInfoResponse { info: Some(info) }))
    }

    async fn list_pods(
        &self,
        req: Request<proto::ListPodsRequest>,
    ) -> Result<Response<proto::ListPodsResponse>, Status> {
        let req = req.into_inner();
        let root = self.root.clone();
        let finished = self.finished.clone();
        let pods = blocking(move || list_pods(&root, &req.filters, req.detail, &finished)).await?;
        Ok(Response::new(proto::ListPodsResponse { pods }))
    }

    async fn inspect_pod(
        &self,
        req: Request<proto::InspectPodRequest>,
    ) -> Result<Response<proto::InspectPodResponse>, Status> {
        let id = req.into_inner().id;
        let root = self.root.clone();
        let pod = blocking(move || {
            let pods = PodStore::new(&root);
            // A pod caught between two directories is looked up again.
            for _ in 0..3 {
                let p = pods.find(&id).map_err(pod_status)?;
                if let Ok(info) = crate::pod::status::info_with(&p, &LockSnapshot::take()) {
                    return Ok(convert::pod(&p, &info, true));
                }
            }
            Err(Status::not_found(format!(
                "pod {id} vanished while being read"
            )))
        })
        .await?;
        Ok(Response::new(proto::InspectPodResponse { pod: Some(pod) }))
    }

    async fn list_images(
        &self,
        req: Request<proto::ListImagesRequest>,
    ) -> Result<Response<proto::ListImagesResponse>, Status> {
        let req = req.into_inner();
        let root = self.root.clone();
        let images = blocking(move || {
            let store = Store::new(&root);
            let mut out = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for e in store.images().map_err(image_status)? {
                if !seen.insert(e.digest.clone()) {
                    continue;
                }
                // An image removed meanwhile is skipped.
                let Ok(img) = catalog::resolve(&store, &e.digest.to_string()) else {
                    continue;
                };
                let Ok(image) = convert::image(&store, &img, req.detail) else {
                    continue;
                };
                if req.filters.is_empty()
                    || req
                        .filters
                        .iter()
                        .any(|f| convert::image_matches_filter(&image, f))
                {
                    out.push(image);
                }
            }
            Ok(out)
        })
        .await?;
        Ok(Response::new(proto::ListImagesResponse { images }))
    }

    async fn inspect_image(
        &self,
        req: Request<proto::InspectImageRequest>,
    ) -> Result<Response<proto::InspectImageResponse>, Status> {
        let id = req.into_inner().id;
        let root = self.root.clone();
        let image = blocking(move || {
            let store = Store::new(&root);
            let img = catalog::resolve(&store, &id).map_err(image_status)?;
            convert::image(&store, &img, true).map_err(image_status)
        })
        .await?;
        Ok(Response::new(proto::InspectImageResponse {
            image: Some(image),
        }))
    }

    type ListenEventsStream = Streamed<proto::ListenEventsResponse>;

    async fn listen_events(
        &self,
        req: Request<proto::ListenEventsRequest>,
    ) -> Result<Response<Self::ListenEventsStream>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        // Subscribed before the replay is read: nothing falls between the two.
        let mut live = self.hub.subscribe();
        let (tx, rx) = mpsc::channel(64);
        let root = self.root.clone();
        tokio::spawn(async move {
            let until = filter.until_time;
            let past_until = move |e: &proto::Event| until != 0 && e.time > until;
            let mut replayed = std::collections::HashSet::new();
            if filter.since_time != 0 {
                let since = filter.since_time;
                let past = tokio::task::spawn_blocking(move || events::replay(&root, since))
                    .await
                    .unwrap_or_default();
                let batch: Vec<proto::Event> = past
                    .into_iter()
                    .map(convert::event)
                    .filter(|e| convert::event_matches(e, &filter) && !past_until(e))
                    .collect();
                for e in &batch {
                    replayed.insert((e.r#type, e.id.clone(), e.name.clone()));
                }
                if !batch.is_empty()
                    && tx
                        .send(Ok(proto::ListenEventsResponse { events: batch }))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            loop {
                let e = tokio::select! {
                    e = live.recv() => e.map(convert::event),
                    () = tx.closed() => return,
                };
                match e {
                    Ok(e) => {
                        if past_until(&e) {
                            return;
                        }
                        if !convert::event_matches(&e, &filter)
                            || replayed.remove(&(e.r#type, e.id.clone(), e.name.clone()))
                        {
                            continue;
                        }
                        let mut batch = vec![e];
                        // Whatever else is already waiting goes in the same message, through
                        // the same checks (a lag is reported by the next `recv`).
                        while let Ok(more) = live.try_recv().map(convert::event) {
                            if past_until(&more) {
                                break;
                            }
                            if convert::event_matches(&more, &filter)
                                && !replayed.remove(&(
                                    more.r#type,
                                    more.id.clone(),
                                    more.name.clone(),
                                ))
                            {
                                batch.push(more);
                            }
                        }
                        if tx
                            .send(Ok(proto::ListenEventsResponse { events: batch }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "{n} events were dropped because this client read too slowly; listen again with since_time to replay"
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type GetLogsStream = Streamed<proto::GetLogsResponse>;

    async fn get_logs(
        &self,
        req: Request<proto::GetLogsRequest>,
    ) -> Result<Response<Self::GetLogsStream>, Status> {
        let req = req.into_inner();
        let root = self.root.clone();
        let changes = self.hub.subscribe_changes();
        let first = {
            let req = req.clone();
            blocking(move || logs::open(&root, &req)).await?
        };
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(logs::stream(first, req, changes, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
