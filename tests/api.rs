//! `orbit api-service` with a real gRPC client (the generated tonic client, over the
//! service's Unix socket): every call against pods and images the CLI made, filters,
//! events in order for a pod's whole life, logs following a running pod, an unprivileged
//! user with group access to the store, systemd socket activation, reflection, and 100
//! concurrent clients while pods come and go.

mod common;
#[path = "common/pods.rs"]
mod pods_common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{text, World};
use orbit::api::proto::{self, public_api_client::PublicApiClient, EventType, PodState};
use pods_common::*;
use tonic::transport::Channel;

/// An `orbit api-service` on a Unix socket; killed (by pid) on drop.
struct Api {
    child: Child,
    socket: PathBuf,
}

impl Api {
    /// Starts the service for `w`'s store, as `uid`/`gid` when given.
    fn start(w: &World, as_user: Option<(u32, u32)>) -> Api {
        let dir = w.path(&format!("api-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let socket = dir.join("api.sock");
        let mut c = w.cmd(&["api-service", "--socket", &socket.display().to_string()]);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        if let Some((uid, gid)) = as_user {
            c.uid(uid).gid(gid);
        }
        let child = c.spawn().unwrap();
        let mut api = Api { child, socket };
        poll(Duration::from_secs(20), "the API socket", || {
            if let Some(st) = api.child.try_wait().unwrap() {
                let mut e = String::new();
                use std::io::Read;
                api.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut e)
                    .unwrap();
                panic!("orbit api-service exited ({st}): {e}");
            }
            std::os::unix::net::UnixStream::connect(&api.socket).ok()
        });
        api
    }

    async fn client(&self) -> PublicApiClient<Channel> {
        PublicApiClient::new(channel(&self.socket).await)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gRPC channel over a Unix socket.
async fn channel(socket: &Path) -> Channel {
    orbit::grpc::unix_channel(socket).await.unwrap()
}

fn kv(k: &str, v: &str) -> proto::KeyValue {
    proto::KeyValue {
        key: k.into(),
        value: v.into(),
    }
}

async fn pods(c: &mut PublicApiClient<Channel>, f: Vec<proto::PodFilter>) -> Vec<proto::Pod> {
    c.list_pods(proto::ListPodsRequest {
        filters: f,
        detail: false,
    })
    .await
    .unwrap()
    .into_inner()
    .pods
}

fn ids(p: &[proto::Pod]) -> Vec<String> {
    let mut v: Vec<String> = p.iter().map(|p| p.id.clone()).collect();
    v.sort();
    v
}

/// Runs a pod to its end (`sh -c SCRIPT`) and returns its UUID.
fn run_to_end(w: &World, extra: &[&str], script: &str, code: i32) -> String {
    let uuid_file = w.path(&format!("uuid-{}", uuid::Uuid::new_v4()));
    let mut args = vec!["--uuid-file-save"];
    let f = uuid_file.display().to_string();
    args.push(&f);
    args.extend(extra);
    args.extend([BUSYBOX, "--exec", "/bin/sh", "--", "-c", script]);
    run_expect(w, &args, code);
    fs::read_to_string(uuid_file).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_describes_the_pods_and_images_the_cli_made() {
    let w = pod_world();
    let exited = run_to_end(
        &w,
        &["--annotation", "team=blue", "--label", "tier=front"],
        "echo out; echo err >&2; exit 3",
        3,
    );
    let prepared = out_ok(&w, &["prepare", BUSYBOX]).trim().to_string();
    let running = BgPod::start(
        &w,
        &[
            BUSYBOX,
            "--name",
            "sleeper",
            "--exec",
            "/bin/sleep",
            "--",
            "600",
        ],
    );
    let api = Api::start(&w, None);
    let mut c = api.client().await;

    let info = c
        .get_info(proto::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(PathBuf::from(&info.store_dir), w.store());
    assert_eq!(info.stage1_interface_version, 1);
    for f in ["ns", "fly", "kvm"] {
        assert!(
            info.stage1_flavors.contains(&f.to_string()),
            "{:?}",
            info.stage1_flavors
        );
    }
    assert_eq!(info.orbit_version, env!("CARGO_PKG_VERSION"));

    let all = pods(&mut c, vec![]).await;
    let mut want = vec![exited.clone(), prepared.clone(), running.uuid.clone()];
    want.sort();
    assert_eq!(ids(&all), want);
    let by_id: BTreeMap<String, proto::Pod> = all.into_iter().map(|p| (p.id.clone(), p)).collect();
    let e = &by_id[&exited];
    assert_eq!(e.state, PodState::Exited as i32);
    assert_eq!(e.exit_code, Some(3));
    assert!(e.created_at > 0 && e.started_at >= e.created_at && e.finished_at >= e.started_at);
    assert_eq!(e.stage1, "ns");
    assert!(e.manifest.is_empty(), "no manifest without detail");
    assert_eq!(e.apps.len(), 1);
    assert_eq!(e.apps[0].exit_code, Some(3));
    assert_eq!(e.apps[0].image.as_ref().unwrap().name, BUSYBOX);
    assert!(e.apps[0].finished_at >= e.apps[0].started_at && e.apps[0].started_at > 0);
    let r = &by_id[&running.uuid];
    assert_eq!(r.state, PodState::Running as i32);
    assert!(r.pid > 0);
    assert_eq!(r.apps[0].name, "sleeper");
    assert_eq!(r.apps[0].state, proto::AppState::Running as i32);
    assert!(
        r.cgroup.ends_with(&format!("orbit/{}", running.uuid)),
        "{}",
        r.cgroup
    );
    assert_eq!(by_id[&prepared].state, PodState::Prepared as i32);

    // Filters: fields AND, values and filters OR.
    let f = |f: proto::PodFilter| f;
    let only = |states: &[PodState]| proto::PodFilter {
        states: states.iter().map(|s| *s as i32).collect(),
        ..Default::default()
    };
    assert_eq!(
        ids(&pods(&mut c, vec![only(&[PodState::Running])]).await),
        vec![running.uuid.clone()]
    );
    let mut two = vec![running.uuid.clone(), prepared.clone()];
    two.sort();
    assert_eq!(
        ids(&pods(
            &mut c,
            vec![only(&[PodState::Running]), only(&[PodState::Prepared])]
        )
        .await),
        two
    );
    assert_eq!(
        ids(&pods(
            &mut c,
            vec![f(proto::PodFilter {
                app_names: vec!["sleeper".into()],
                ..Default::default()
            })]
        )
        .await),
        vec![running.uuid.clone()]
    );
    assert_eq!(
        ids(&pods(
            &mut c,
            vec![f(proto::PodFilter {
                annotations: vec![kv("team", "blue")],
                ..Default::default()
            })]
        )
        .await),
        vec![exited.clone()]
    );
    assert_eq!(
        ids(&pods(
            &mut c,
            vec![f(proto::PodFilter {
                labels: vec![kv("tier", "front")],
                ..Default::default()
            })]
        )
        .await),
        vec![exited.clone()]
    );
    assert!(pods(
        &mut c,
        vec![f(proto::PodFilter {
            labels: vec![kv("tier", "back")],
            ..Default::default()
        })]
    )
    .await
    .is_empty());
    assert_eq!(
        pods(
            &mut c,
            vec![f(proto::PodFilter {
                image_names: vec!["example.com/busybox".into()],
                ..Default::default()
            })]
        )
        .await
        .len(),
        3
    );
    assert!(pods(
        &mut c,
        vec![f(proto::PodFilter {
            network_names: vec!["default".into()],
            ..Default::default()
        })]
    )
    .await
    .is_empty());
    assert_eq!(
        ids(&pods(
            &mut c,
            vec![f(proto::PodFilter {
                ids: vec![exited[..8].to_string()],
                ..Default::default()
            })]
        )
        .await),
        vec![exited.clone()]
    );
    let detailed = c
        .list_pods(proto::ListPodsRequest {
            filters: vec![],
            detail: true,
        })
        .await
        .unwrap()
        .into_inner()
        .pods;
    for p in &detailed {
        let m: serde_json::Value = serde_json::from_slice(&p.manifest).unwrap();
        assert_eq!(m["uuid"], p.id.as_str());
    }

    // InspectPod by prefix, with the manifest; unknown and ambiguous ids are errors.
    let p = c
        .inspect_pod(proto::InspectPodRequest {
            id: exited[..8].to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod
        .unwrap();
    assert_eq!(p.id, exited);
    let m: serde_json::Value = serde_json::from_slice(&p.manifest).unwrap();
    assert_eq!(m["annotations"]["team"], "blue");
    let e = c
        .inspect_pod(proto::InspectPodRequest {
            id: "ffffffff".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    let e = c
        .inspect_pod(proto::InspectPodRequest { id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");

    // Images.
    fetch(&w, &layouts().marker);
    let images = c
        .list_images(proto::ListImagesRequest {
            filters: vec![],
            detail: false,
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    let mut names: Vec<String> = images.iter().flat_map(|i| i.names.clone()).collect();
    names.sort();
    assert_eq!(names, vec![BUSYBOX.to_string(), MARKER.to_string()]);
    let bb = images
        .iter()
        .find(|i| i.names.contains(&BUSYBOX.to_string()))
        .unwrap();
    assert_eq!(bb.layers.len(), 2);
    assert!(bb.size > 0 && bb.import_time > 0);
    assert_eq!(bb.platform, "linux/amd64");
    let list = |filter: proto::ImageFilter| {
        let mut c = c.clone();
        async move {
            c.list_images(proto::ListImagesRequest {
                filters: vec![filter],
                detail: false,
            })
            .await
            .unwrap()
            .into_inner()
            .images
        }
    };
    let by_prefix = list(proto::ImageFilter {
        prefixes: vec!["example.com/mark".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(by_prefix.len(), 1);
    assert_eq!(by_prefix[0].names, vec![MARKER.to_string()]);
    let by_id = list(proto::ImageFilter {
        ids: vec![bb.id[7..19].to_string()],
        ..Default::default()
    })
    .await;
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].id, bb.id);
    let future = list(proto::ImageFilter {
        imported_after: bb.import_time + 3_600_000_000_000,
        ..Default::default()
    })
    .await;
    assert!(future.is_empty());
    let past = list(proto::ImageFilter {
        imported_before: bb.import_time + 1,
        ..Default::default()
    })
    .await;
    assert!(past.iter().any(|i| i.id == bb.id));
    let img = c
        .inspect_image(proto::InspectImageRequest { id: BUSYBOX.into() })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    assert_eq!(img.id, bb.id);
    let digest = format!(
        "sha256:{}",
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &img.manifest))
    );
    assert_eq!(digest, img.id, "the manifest bytes are the stored manifest");
    let config: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
    assert_eq!(config["architecture"], "amd64");
    let e = c
        .inspect_image(proto::InspectImageRequest {
            id: "example.com/nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    drop(running);
}

/// Collects events from a ListenEvents stream until `done` says so (bounded).
async fn collect_events(
    stream: &mut tonic::Streaming<proto::ListenEventsResponse>,
    mut done: impl FnMut(&[proto::Event]) -> bool,
) -> Vec<proto::Event> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done(&got) {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("events so far: {got:#?}"))
            .unwrap()
            .expect("the stream ended");
        got.extend(msg.events);
    }
    got
}

fn kinds_for(events: &[proto::Event], id: &str) -> Vec<(EventType, String)> {
    events
        .iter()
        .filter(|e| e.id == id)
        .map(|e| (EventType::try_from(e.r#type).unwrap(), e.name.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_for_a_pods_whole_life_and_replay_from_a_time() {
    let w = pod_world();
    let api = Api::start(&w, None);
    let mut c = api.client().await;
    let since = orbit::clock::now_nanos();
    let mut live = c
        .listen_events(proto::ListenEventsRequest {
            filter: Some(proto::EventFilter::default()),
        })
        .await
        .unwrap()
        .into_inner();

    let uuid = out_ok(
        &w,
        &[
            "prepare", BUSYBOX, "--name", "main", "--exec", "/bin/sh", "--", "-c", "exit 7",
        ],
    )
    .trim()
    .to_string();
    let ran = orbit(&w, &["run-prepared", &uuid]);
    assert_eq!(ran.status.code(), Some(7), "{}", text(&ran.stderr));
    w.ok(&["gc", "--grace-period=0s"]);
    w.ok(&["gc", "--grace-period=0s"]);
    let events = collect_events(&mut live, |got| {
        got.iter()
            .any(|e| e.id == uuid && e.r#type == EventType::PodRemoved as i32)
    })
    .await;
    let main = "main".to_string();
    assert_eq!(
        kinds_for(&events, &uuid),
        vec![
            (EventType::PodPrepared, String::new()),
            (EventType::PodStarted, String::new()),
            (EventType::PodAppStarted, main.clone()),
            (EventType::PodAppExited, main.clone()),
            (EventType::PodExited, String::new()),
            (EventType::PodGarbageCollected, String::new()),
            (EventType::PodRemoved, String::new()),
        ],
        "{events:#?}"
    );
    let exit = |t: EventType| {
        events
            .iter()
            .find(|e| e.id == uuid && e.r#type == t as i32)
            .unwrap()
            .exit_code
    };
    assert_eq!(exit(EventType::PodAppExited), Some(7), "{events:#?}");
    assert_eq!(exit(EventType::PodExited), Some(7), "{events:#?}");
    assert!(events.iter().all(|e| !e.replayed && e.time >= since));

    // Images: fetched and removed.
    fetch(&w, &layouts().marker);
    w.ok(&["image", "rm", MARKER]);
    let events = collect_events(&mut live, |got| {
        got.iter()
            .any(|e| e.r#type == EventType::ImageRemoved as i32)
    })
    .await;
    let img: Vec<(i32, String)> = events.iter().map(|e| (e.r#type, e.name.clone())).collect();
    assert_eq!(
        img,
        vec![
            (EventType::ImageFetched as i32, MARKER.to_string()),
            (EventType::ImageRemoved as i32, MARKER.to_string())
        ]
    );

    // A later listener replays what the store still shows since a time, then goes live;
    // a filter keeps only one pod's events.
    let kept = run_to_end(&w, &[], "true", 0);
    let mut replay = c
        .listen_events(proto::ListenEventsRequest {
            filter: Some(proto::EventFilter {
                since_time: since,
                ids: vec![kept.clone()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let events = collect_events(&mut replay, |got| {
        got.iter().any(|e| e.r#type == EventType::PodExited as i32)
    })
    .await;
    assert!(
        events.iter().all(|e| e.replayed && e.id == kept),
        "{events:#?}"
    );
    assert_eq!(
        kinds_for(&events, &kept)
            .into_iter()
            .map(|k| k.0)
            .collect::<Vec<_>>(),
        vec![
            EventType::PodPrepared,
            EventType::PodStarted,
            EventType::PodAppStarted,
            EventType::PodAppExited,
            EventType::PodExited
        ]
    );
    let times: Vec<i64> = events.iter().map(|e| e.time).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    w.ok(&["gc", "--grace-period=0s"]);
    let events = collect_events(&mut replay, |got| {
        got.iter()
            .any(|e| e.r#type == EventType::PodGarbageCollected as i32)
    })
    .await;
    assert!(
        events.iter().all(|e| !e.replayed && e.id == kept),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_a_running_pod_to_its_end_and_filter_by_tail_and_time() {
    let w = pod_world();
    let api = Api::start(&w, None);
    let mut c = api.client().await;
    let go = w.path("go");
    fs::create_dir_all(&go).unwrap();
    // The app prints two lines, waits until the test creates /go/now, prints a third.
    let mut pod = BgPod::start(
        &w,
        &[
            "--volume",
            &format!("go,kind=host,source={}", go.display()),
            BUSYBOX,
            "--mount",
            "volume=go,target=/go",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "echo one; echo two >&2; while [ ! -e /go/now ]; do sleep 0.05; done; echo three",
        ],
    );
    let mut logs = c
        .get_logs(proto::GetLogsRequest {
            pod_id: pod.uuid.clone(),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut got: Vec<proto::LogRecord> = Vec::new();
    while got.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(30), logs.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.extend(m.records);
    }
    assert_eq!(got[0].text, "one");
    assert_eq!(got[0].stream, proto::LogStream::Stdout as i32);
    assert_eq!(got[1].text, "two");
    assert_eq!(got[1].stream, proto::LogStream::Stderr as i32);
    fs::write(go.join("now"), "").unwrap();
    // The third line arrives, then the stream ends with the pod.
    let rest = tokio::time::timeout(Duration::from_secs(30), async {
        let mut rest = Vec::new();
        while let Some(m) = logs.message().await.unwrap() {
            rest.extend(m.records);
        }
        rest
    })
    .await
    .expect("the log stream ends when the pod exits");
    assert_eq!(
        rest.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
        vec!["three"]
    );
    assert!(pod.wait(DEADLINE).status.success());

    let all = |req: proto::GetLogsRequest| {
        let mut c = c.clone();
        async move {
            let mut s = c.get_logs(req).await.unwrap().into_inner();
            let mut out = Vec::new();
            while let Some(m) = s.message().await.unwrap() {
                out.extend(m.records);
            }
            out
        }
    };
    let tail = all(proto::GetLogsRequest {
        pod_id: pod.uuid.clone(),
        tail: 1,
        ..Default::default()
    })
    .await;
    assert_eq!(
        tail.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
        vec!["three"]
    );
    let since = got[1].time + 1;
    let later = all(proto::GetLogsRequest {
        pod_id: pod.uuid.clone(),
        since_time: since,
        ..Default::default()
    })
    .await;
    assert_eq!(
        later.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
        vec!["three"]
    );
    let e = c
        .get_logs(proto::GetLogsRequest {
            pod_id: pod.uuid.clone(),
            app_name: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

/// Every file under `root` with its size and modification time.
fn fingerprint(root: &Path) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.insert(e.path(), (m.len(), m.mtime(), m.mtime_nsec()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_user_in_the_stores_group_reads_everything_and_changes_nothing() {
    let w = pod_world();
    let uuid = run_to_end(&w, &[], "echo hello", 0);
    // The documented set-up: the store root and the pod state directories belong to the
    // API's group; the root is 0750 (no private-users pods here).
    const GID: u32 = 54_321;
    let root = w.store();
    for d in std::iter::once(root.clone()).chain(
        fs::read_dir(root.join("pods"))
            .unwrap()
            .map(|e| e.unwrap().path()),
    ) {
        std::os::unix::fs::chown(&d, None, Some(GID)).unwrap();
    }
    // What orbit made: listable by root and the group only.
    assert_eq!(
        fs::metadata(root.join("pods/run"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o751
    );
    fs::set_permissions(&root, fs::Permissions::from_mode(0o750)).unwrap();
    // The world's temp directory must be traversable by that user.
    fs::set_permissions(root.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    let before = fingerprint(&root);
    let api = Api::start(&w, Some((54_321, GID)));
    let mut c = api.client().await;
    let listed = pods(&mut c, vec![]).await;
    assert_eq!(ids(&listed), vec![uuid.clone()]);
    assert_eq!(listed[0].apps[0].exit_code, Some(0));
    let mut s = c
        .get_logs(proto::GetLogsRequest {
            pod_id: uuid.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let m = s.message().await.unwrap().unwrap();
    assert_eq!(m.records[0].text, "hello");
    let images = c
        .list_images(proto::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(images.len(), 1);
    c.inspect_image(proto::InspectImageRequest { id: BUSYBOX.into() })
        .await
        .unwrap();
    c.inspect_pod(proto::InspectPodRequest { id: uuid.clone() })
        .await
        .unwrap();
    // The service's user: not root.
    let status = fs::read_to_string(format!("/proc/{}/status", api.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("54321")),
        "{status}"
    );

    // The API has no call that writes: one that is not in the service is Unimplemented,
    // and the store is untouched by everything above.
    let mut raw = tonic::client::Grpc::new(channel(&api.socket).await);
    raw.ready().await.unwrap();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/orbit.api.v1.PublicAPI/RemovePod");
    let e = raw
        .unary::<proto::InspectPodRequest, proto::InspectPodResponse, _>(
            tonic::Request::new(proto::InspectPodRequest { id: uuid.clone() }),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    assert_eq!(
        fingerprint(&root),
        before,
        "the API service changed the store"
    );
    assert!(pod_dir(&w, &uuid).exists());

    // A user outside the group is refused with a message saying what to do.
    let outsider = Api::start(&w, Some((54_322, 54_322)));
    let mut c = outsider.client().await;
    let e = c
        .list_pods(proto::ListPodsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("read access to the store"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_socket_activation_and_reflection() {
    let w = pod_world();
    let socket = w.path("activated.sock");
    // systemd's own tool: it binds the socket and starts the service with it as fd 3
    // (LISTEN_FDS/LISTEN_PID) when the first client connects.
    let c = w.cmd(&[]);
    let orbit = common::orbit_bin();
    let mut activator = Command::new("systemd-socket-activate");
    activator.arg("-l").arg(&socket);
    // It passes the service only the environment it is told to (-E).
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            activator.arg(format!("-E{}={}", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    activator
        .arg(&orbit)
        .arg("api-service")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Killed(
        activator
            .spawn()
            .expect("systemd-socket-activate (apt-get install systemd)"),
    );
    poll(Duration::from_secs(20), "the activation socket", || {
        socket.exists().then_some(())
    });
    let ch = channel(&socket).await;
    let mut api = PublicApiClient::new(ch.clone());
    let info = api
        .get_info(proto::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(PathBuf::from(info.store_dir), w.store());
    // The service is the activated orbit itself (systemd-socket-activate exec'd it).
    let exe = fs::read_link(format!("/proc/{}/exe", child.0.id())).unwrap();
    assert_eq!(exe.file_name(), orbit.file_name());

    // Reflection: a generic client learns the service and its seven read-only calls.
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let ch_alpha = ch.clone();
    let mut r = ServerReflectionClient::new(ch);
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let mut resp = r
        .server_reflection_info(tokio_stream::iter(vec![
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "orbit.api.v1.PublicAPI".into(),
            )),
        ]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        resp.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.iter().map(|s| s.name.clone()).collect();
    // The read-only API and reflection itself, nothing else: not the CRI's services, which
    // are compiled into the same binary.
    assert!(
        names.contains(&"orbit.api.v1.PublicAPI".to_string()),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .all(|n| n == "orbit.api.v1.PublicAPI" || n.starts_with("grpc.reflection.")),
        "{names:?}"
    );
    let Some(MessageResponse::FileDescriptorResponse(fd)) =
        resp.message().await.unwrap().unwrap().message_response
    else {
        panic!("no file descriptor");
    };
    use prost::Message;
    let file =
        prost_types::FileDescriptorProto::decode(fd.file_descriptor_proto[0].as_slice()).unwrap();
    let methods: Vec<String> = file.service[0]
        .method
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    assert_eq!(
        methods,
        [
            "GetInfo",
            "ListPods",
            "InspectPod",
            "ListImages",
            "InspectImage",
            "ListenEvents",
            "GetLogs"
        ]
    );
    // The CRI's symbols are unknown to it.
    let mut resp = r
        .server_reflection_info(tokio_stream::iter(vec![ask(
            MessageRequest::FileContainingSymbol("runtime.v1.RuntimeService".into()),
        )]))
        .await
        .unwrap()
        .into_inner();
    let unknown = match resp.message().await {
        Err(status) => status.code() == tonic::Code::NotFound,
        Ok(Some(m)) => matches!(m.message_response, Some(MessageResponse::ErrorResponse(_))),
        Ok(None) => false,
    };
    assert!(
        unknown,
        "the read-only API describes the CRI's RuntimeService"
    );

    // v1alpha (grpcurl, grpcio-reflection) lists the same services.
    use tonic_reflection::pb::v1alpha as alpha;
    let mut r = alpha::server_reflection_client::ServerReflectionClient::new(ch_alpha);
    let mut resp = r
        .server_reflection_info(tokio_stream::iter(vec![alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        }]))
        .await
        .unwrap()
        .into_inner();
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        resp.message().await.unwrap().unwrap().message_response
    else {
        panic!("no v1alpha service list");
    };
    let alpha_names: Vec<String> = list.service.iter().map(|s| s.name.clone()).collect();
    assert!(
        alpha_names.contains(&"orbit.api.v1.PublicAPI".to_string())
            && alpha_names
                .iter()
                .all(|n| n == "orbit.api.v1.PublicAPI" || n.starts_with("grpc.reflection.")),
        "{alpha_names:?}"
    );
}

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_list_and_follow_while_pods_come_and_go() {
    let w = pod_world();
    let running = BgPod::start(
        &w,
        &[
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "echo started; exec sleep 600",
        ],
    );
    let api = Api::start(&w, None);
    let baseline = fds(api.pid());
    // Pods come and go beside the clients (a shell loop with the world's orbit settings).
    let env = w.cmd(&[]);
    let mut churn = Command::new("sh");
    churn
        .arg("-c")
        .arg(r#"set -e; for i in 1 2 3 4 5; do "$0" run example.com/busybox:latest --exec /bin/true >/dev/null; "$0" gc --grace-period=0s >/dev/null; "$0" gc --grace-period=0s >/dev/null; done"#)
        .arg(common::orbit_bin())
        .envs(env.get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let churn = churn.spawn().unwrap();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let ch = channel(&api.socket).await;
        let uuid = running.uuid.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = PublicApiClient::new(ch);
            for _ in 0..3 {
                let pods = c
                    .list_pods(proto::ListPodsRequest::default())
                    .await
                    .unwrap()
                    .into_inner()
                    .pods;
                assert!(pods.iter().any(|p| p.id == uuid));
                // Whatever else is there is whole: a state and a manifest-derived app list.
                assert!(pods.iter().all(|p| p.state != PodState::Unspecified as i32));
            }
            if i % 2 == 0 {
                // Follow, read the first record, hang up mid-stream.
                let mut s = c
                    .get_logs(proto::GetLogsRequest {
                        pod_id: uuid,
                        follow: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let m = s.message().await.unwrap().unwrap();
                assert_eq!(m.records[0].text, "started");
            } else {
                let s = c
                    .listen_events(proto::ListenEventsRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                drop(s);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let out = churn.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Every client hung up: the service frees what their streams held.
    poll(
        Duration::from_secs(30),
        "the service to close the clients' connections",
        || (fds(api.pid()) <= baseline + 2).then_some(()),
    );
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage1_killed_outright_still_yields_its_exit_events() {
    let w = pod_world();
    let mut pod = BgPod::start(
        &w,
        &[
            BUSYBOX,
            "--name",
            "victim",
            "--exec",
            "/bin/sleep",
            "--",
            "600",
        ],
    );
    let api = Api::start(&w, None);
    let mut c = api.client().await;
    let mut live = c
        .listen_events(proto::ListenEventsRequest {
            filter: Some(proto::EventFilter {
                ids: vec![pod.uuid.clone()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    // SIGKILL to the stage1 supervisor: nothing is recorded on disk, its lock just goes.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pod.run_pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let events = collect_events(&mut live, |got| {
        got.iter().any(|e| e.r#type == EventType::PodExited as i32)
    })
    .await;
    assert_eq!(
        kinds_for(&events, &pod.uuid),
        vec![
            (EventType::PodAppExited, "victim".to_string()),
            (EventType::PodExited, String::new())
        ],
        "{events:#?}"
    );
    // No exit status was recorded: the event says so, rather than a missing code that
    // reads like success.
    let exited = events
        .iter()
        .find(|e| e.r#type == EventType::PodExited as i32)
        .unwrap();
    assert_eq!(exited.exit_code, None, "{exited:?}");
    assert_eq!(exited.reason, "unknown", "{exited:?}");
    let _ = pod.wait(DEADLINE);
    w.ok(&["gc", "--grace-period=0s"]);
}
