//! The store's records as the API's messages, and the API's filters applied to them.

use std::collections::BTreeMap;

use orbit_stage1::{paths, AppState};

use super::proto;
use crate::clock::nanos;
use crate::events::{EventKind, StoreEvent};
use crate::image::catalog::{self, StoredImage};
use crate::image::store::{self, Store};
use crate::pod::status::PodInfo;
use crate::pod::store::PodRef;

/// Pod annotations under this prefix are the pod's labels (`orbit run --label`).
pub const LABEL_PREFIX: &str = "orbit.dev/label/";

fn opt_nanos(t: &Option<String>) -> i64 {
    t.as_deref().map_or(0, nanos)
}

fn kv(map: &BTreeMap<String, String>) -> Vec<proto::KeyValue> {
    map.iter()
        .map(|(k, v)| proto::KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

/// The API's pod state for `orbit status`'s state name.
pub fn pod_state(name: &str) -> proto::PodState {
    use proto::PodState as S;
    match name {
        "preparing" => S::Preparing,
        "aborted-prepare" => S::AbortedPrepare,
        "prepared" => S::Prepared,
        "running" => S::Running,
        "exited" => S::Exited,
        "exited-garbage" => S::ExitedGarbage,
        "deleting" => S::Deleting,
        _ => S::Unspecified,
    }
}

/// The pod's cgroup: the recorded base of its stage1 plus `orbit/<uuid>`.
fn cgroup(pod: &PodRef) -> String {
    let Ok(bytes) = std::fs::read(pod.path.join("cgroups.json")) else {
        return String::new();
    };
    let Ok(base) = serde_json::from_slice::<BTreeMap<String, String>>(&bytes) else {
        return String::new();
    };
    let root = ["pids", "memory", ""]
        .iter()
        .find_map(|c| base.get(*c))
        .or_else(|| base.values().next());
    match root {
        Some(r) => format!("{}/orbit/{}", r.trim_end_matches('/'), pod.uuid),
        None => String::new(),
    }
}

/// A pod as the API describes it; `detail` adds its manifest.
pub fn pod(p: &PodRef, info: &PodInfo, detail: bool) -> proto::Pod {
    let annotations = info
        .manifest
        .as_ref()
        .map(|m| kv(&m.annotations))
        .unwrap_or_default();
    let apps = info
        .apps
        .iter()
        .map(|a| proto::App {
            name: a.name.clone(),
            image: Some(proto::ImageRef {
                name: a.image.clone(),
                digest: a.image_digest.clone(),
            }),
            state: match a.status.state {
                AppState::Created => proto::AppState::Created,
                AppState::Running => proto::AppState::Running,
                AppState::Exited => proto::AppState::Exited,
            } as i32,
            exit_code: a.status.exit_code,
            started_at: opt_nanos(&a.status.started_at),
            finished_at: opt_nanos(&a.status.finished_at),
            pid: a.status.pid.unwrap_or(0),
            annotations: Vec::new(),
        })
        .collect();
    proto::Pod {
        id: info.uuid.clone(),
        state: pod_state(&info.state) as i32,
        apps,
        networks: info
            .networks
            .iter()
            .map(|n| proto::Network {
                name: n.name.clone(),
                interface: n.interface.clone(),
                addresses: n.ips.clone(),
                gateways: n.gateways.clone(),
            })
            .collect(),
        pid: info.pid.unwrap_or(0),
        exit_code: info.exit_code,
        created_at: nanos(&info.created),
        started_at: nanos(&info.started),
        finished_at: nanos(&info.finished),
        annotations,
        stage1: info.stage1.clone(),
        unit: info.unit.clone().unwrap_or_default(),
        cgroup: cgroup(p),
        manifest: if detail {
            std::fs::read(p.path.join(paths::POD_MANIFEST)).unwrap_or_default()
        } else {
            Vec::new()
        },
    }
}

fn any_or_empty<T>(wanted: &[T], f: impl Fn(&T) -> bool) -> bool {
    wanted.is_empty() || wanted.iter().any(f)
}

fn has_all(have: &[proto::KeyValue], wanted: &[proto::KeyValue]) -> bool {
    wanted
        .iter()
        .all(|w| have.iter().any(|h| h.key == w.key && h.value == w.value))
}

/// Whether an image reference (`name[:tag]` or digest) names the app's image.
fn image_matches(app: &proto::App, wanted: &str) -> bool {
    let Some(img) = &app.image else { return false };
    let bare = |n: &str| {
        n.rsplit_once(':')
            .map_or(n.to_string(), |(a, _)| a.to_string())
    };
    img.name == wanted
        || bare(&img.name) == wanted
        || img.digest == wanted
        || img.digest.trim_start_matches("sha256:") == wanted
}

/// Whether `pod` passes `f`.
pub fn pod_matches(pod: &proto::Pod, f: &proto::PodFilter) -> bool {
    let labels: Vec<proto::KeyValue> = pod
        .annotations
        .iter()
        .filter_map(|a| {
            a.key.strip_prefix(LABEL_PREFIX).map(|k| proto::KeyValue {
                key: k.to_string(),
                value: a.value.clone(),
            })
        })
        .collect();
    any_or_empty(&f.ids, |id| pod.id.starts_with(id.as_str()))
        && any_or_empty(&f.states, |s| *s == pod.state)
        && any_or_empty(&f.app_names, |n| pod.apps.iter().any(|a| &a.name == n))
        && any_or_empty(&f.image_names, |n| {
            pod.apps.iter().any(|a| image_matches(a, n))
        })
        && any_or_empty(&f.network_names, |n| {
            pod.networks.iter().any(|x| &x.name == n)
        })
        && has_all(&pod.annotations, &f.annotations)
        && has_all(&labels, &f.labels)
}

/// An image as the API describes it; `detail` adds its manifest and config.
pub fn image(
    store: &Store,
    img: &StoredImage,
    detail: bool,
) -> crate::image::error::Result<proto::Image> {
    let d = catalog::inspect(store, img)?;
    let first = img.entries.first();
    let ann = |k: &str| {
        first
            .and_then(|e| e.annotation(k))
            .unwrap_or("")
            .to_string()
    };
    let labels = d
        .config
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let (manifest, config) = if detail {
        let (bytes, m) = store.manifest(&img.digest)?;
        let config_digest = m.config().digest().to_string().parse()?;
        let config = store.read_blob(&config_digest, "config")?;
        (bytes, config)
    } else {
        (Vec::new(), Vec::new())
    };
    let platform = ann(store::PLATFORM_ANNOTATION);
    Ok(proto::Image {
        id: d.digest.clone(),
        names: d.names.clone(),
        size: d.size as i64,
        import_time: nanos(&d.fetched),
        verification: d.verified.clone(),
        source: d.source.clone(),
        platform: if platform.is_empty() {
            format!("{}/{}", d.config.os, d.config.architecture)
        } else {
            platform
        },
        layers: d
            .layers
            .iter()
            .map(|l| proto::Layer {
                digest: l.digest.clone(),
                diff_id: l.diff_id.clone(),
                size: l.size as i64,
                media_type: l.media_type.clone(),
            })
            .collect(),
        labels: kv(&labels),
        manifest,
        config,
    })
}

/// Whether `image` passes `f`.
pub fn image_matches_filter(image: &proto::Image, f: &proto::ImageFilter) -> bool {
    let hex = image.id.trim_start_matches("sha256:");
    any_or_empty(&f.ids, |id| {
        let id = id.trim_start_matches("sha256:");
        !id.is_empty() && hex.starts_with(id)
    }) && any_or_empty(&f.prefixes, |p| {
        image.names.iter().any(|n| n.starts_with(p.as_str()))
    }) && has_all(&image.labels, &f.labels)
        && (f.imported_after == 0 || image.import_time >= f.imported_after)
        && (f.imported_before == 0 || image.import_time < f.imported_before)
}

/// A store event as the API sends it.
pub fn event(e: StoreEvent) -> proto::Event {
    let kind = match e.kind {
        EventKind::PodPrepared => proto::EventType::PodPrepared,
        EventKind::PodStarted => proto::EventType::PodStarted,
        EventKind::PodAppStarted => proto::EventType::PodAppStarted,
        EventKind::PodAppExited => proto::EventType::PodAppExited,
        EventKind::PodExited => proto::EventType::PodExited,
        EventKind::PodGarbageCollected => proto::EventType::PodGarbageCollected,
        EventKind::PodRemoved => proto::EventType::PodRemoved,
        EventKind::ImageFetched => proto::EventType::ImageFetched,
        EventKind::ImageRemoved => proto::EventType::ImageRemoved,
    };
    proto::Event {
        r#type: kind as i32,
        id: e.id,
        name: e.name,
        time: e.time,
        exit_code: e.exit_code,
        replayed: e.replayed,
        reason: e.reason,
    }
}

/// Whether `e` passes `f` (time bounds aside).
pub fn event_matches(e: &proto::Event, f: &proto::EventFilter) -> bool {
    (f.types.is_empty() || f.types.contains(&e.r#type))
        && (f.ids.is_empty() || f.ids.iter().any(|i| e.id.starts_with(i.as_str())))
        && (f.names.is_empty() || f.names.contains(&e.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_with(id: &str, app: &str, image: &str, ann: &[(&str, &str)]) -> proto::Pod {
        proto::Pod {
            id: id.into(),
            state: proto::PodState::Exited as i32,
            apps: vec![proto::App {
                name: app.into(),
                image: Some(proto::ImageRef {
                    name: image.into(),
                    digest: format!("sha256:{}", "a".repeat(64)),
                }),
                ..Default::default()
            }],
            annotations: ann
                .iter()
                .map(|(k, v)| proto::KeyValue {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn pod_filters_and_within_or_across_values() {
        let p = pod_with(
            "1234-abcd",
            "web",
            "example.com/web:1",
            &[("team", "a"), ("orbit.dev/label/tier", "front")],
        );
        let f = |f: proto::PodFilter| pod_matches(&p, &f);
        assert!(f(proto::PodFilter::default()));
        assert!(f(proto::PodFilter {
            ids: vec!["12".into(), "zz".into()],
            ..Default::default()
        }));
        assert!(!f(proto::PodFilter {
            ids: vec!["zz".into()],
            ..Default::default()
        }));
        assert!(f(proto::PodFilter {
            image_names: vec!["example.com/web".into()],
            app_names: vec!["web".into()],
            ..Default::default()
        }));
        assert!(!f(proto::PodFilter {
            image_names: vec!["example.com/web".into()],
            app_names: vec!["db".into()],
            ..Default::default()
        }));
        assert!(f(proto::PodFilter {
            labels: vec![proto::KeyValue {
                key: "tier".into(),
                value: "front".into()
            }],
            ..Default::default()
        }));
        assert!(!f(proto::PodFilter {
            annotations: vec![proto::KeyValue {
                key: "team".into(),
                value: "b".into()
            }],
            ..Default::default()
        }));
        assert!(!f(proto::PodFilter {
            states: vec![proto::PodState::Running as i32],
            ..Default::default()
        }));
    }
}
