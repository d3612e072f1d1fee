//! `orbit cri`: supplementary groups by `SupplementalGroupsPolicy` (KEP-3619) with the
//! identity in `ContainerStatus.user`, and image volumes (KEP-4639) — a `Mount` showing an
//! image of the store read-only, whose layers the store keeps while the volume is in use.
//!
//! The busybox test image lists user 1000 in group `users` (100) in its /etc/group: that is
//! the group `Merge` keeps and `Strict` leaves out.

mod common;
#[path = "common/cri.rs"]
mod cri_common;
#[path = "common/pods.rs"]
mod pods_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cri_common::*;
use orbit::cri::proto::{self, ContainerState};
use pods_common::*;

/// A container of BUSYBOX running `script` as uid 1000 with supplemental group 1234 and
/// groups policy `policy`.
fn as_user_1000(name: &str, script: &str, policy: i32) -> proto::ContainerConfig {
    let mut c = container_config(name, BUSYBOX, script);
    c.linux = Some(proto::LinuxContainerConfig {
        security_context: Some(proto::LinuxContainerSecurityContext {
            run_as_user: Some(proto::Int64Value { value: 1000 }),
            supplemental_groups: vec![1234],
            supplemental_groups_policy: policy,
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

/// The groups in `id -G` output, sorted.
fn sorted(groups: &str) -> Vec<i64> {
    let mut g: Vec<i64> = groups
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    g.sort_unstable();
    g
}

fn user(uid: i64, gid: i64, groups: &[i64]) -> Option<proto::ContainerUser> {
    Some(proto::ContainerUser {
        linux: Some(proto::LinuxContainerUser {
            uid,
            gid,
            supplemental_groups: groups.to_vec(),
        }),
    })
}

/// The first log line of container status `s`, once written.
fn first_line(s: &proto::ContainerStatus) -> String {
    let log = PathBuf::from(&s.log_path);
    poll(
        Duration::from_secs(20),
        "the container's first line",
        || log_lines(&log).first().cloned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supplemental_groups_merge_or_strict_and_the_user_the_status_reports() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let features = rt
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .features;
    assert!(
        features.is_some_and(|f| f.supplemental_groups_policy),
        "the runtime must announce SupplementalGroupsPolicy"
    );
    let config = sandbox_config(&w, "groups");
    let sb = run_sandbox(&mut rt, &config).await;

    // Merge (the default): the image's group 100 besides the primary 1000 and the asked 1234.
    let merge = as_user_1000(
        "merge",
        "id -G; exec sleep 600",
        proto::SupplementalGroupsPolicy::Merge as i32,
    );
    let id = create(&mut rt, &sb, &config, merge).await;
    // Known before the process exists: the identity it will be given.
    assert_eq!(
        container_state(&mut rt, &id).await.user,
        user(1000, 1000, &[100, 1000, 1234])
    );
    let s = start(&mut rt, &id).await;
    assert_eq!(sorted(&first_line(&s)), vec![100, 1000, 1234]);
    assert_eq!(
        sorted(&sh(&mut rt, &id, "id -G").await.1),
        vec![100, 1000, 1234]
    );
    assert_eq!(s.user, user(1000, 1000, &[100, 1000, 1234]));
    // The status agrees with what the kernel gave the first process.
    let pid = container_pid(&mut rt, &id).await;
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = |k: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .to_string()
    };
    assert_eq!(sorted(&line("Groups:")), vec![100, 1000, 1234]);
    assert_eq!(sorted(&line("Uid:"))[0], 1000);
    assert_eq!(sorted(&line("Gid:"))[0], 1000);

    // Strict: only the asked group and the primary one; still reported once it has exited.
    let strict = as_user_1000(
        "strict",
        "id -G",
        proto::SupplementalGroupsPolicy::Strict as i32,
    );
    let id = create(&mut rt, &sb, &config, strict).await;
    rt.start_container(proto::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let s = wait_state(&mut rt, &id, ContainerState::ContainerExited).await;
    assert_eq!(s.exit_code, 0);
    assert_eq!(sorted(&first_line(&s)), vec![1000, 1234]);
    assert_eq!(s.user, user(1000, 1000, &[1000, 1234]));

    // A policy the CRI does not define is refused, and nothing is made.
    let bad = as_user_1000("bad", "true", 7);
    let e = create_refused(&mut rt, &sb, &config, bad).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("supplemental_groups_policy"), "{e}");
    assert_eq!(list_containers(&mut rt).await.len(), 2);

    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}

/// A container of BUSYBOX with `image` mounted at /vol.
fn with_image_volume(name: &str, image: &str) -> proto::ContainerConfig {
    let mut c = container_config(name, BUSYBOX, "exec sleep 600");
    c.mounts = vec![proto::Mount {
        container_path: "/vol".into(),
        image: Some(proto::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    }];
    c
}

/// The layer directories (`<store>/layers/sha256/<hex>`) of the image volumes in the pod's
/// manifest.
fn volume_layers(pod: &Path) -> Vec<PathBuf> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pod.join("pod.json")).unwrap()).unwrap();
    manifest["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "image")
        .flat_map(|v| v["image"]["lowers"].as_array().unwrap().clone())
        .map(|l| {
            PathBuf::from(l.as_str().unwrap())
                .parent()
                .unwrap()
                .to_path_buf()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_volume_shows_the_image_read_only_and_keeps_it_while_in_use() {
    let w = pod_world();
    fetch(&w, &layouts().marker);
    let cri = Cri::start(&w, &[]);
    let (mut rt, mut img) = cri.clients().await;
    let config = sandbox_config(&w, "imgvol");
    let sb = run_sandbox(&mut rt, &config).await;
    let pod = pod_dir(&w, &sb);

    // An image that is not in the store: refused, naming it, and nothing is left.
    let e = create_refused(
        &mut rt,
        &sb,
        &config,
        with_image_volume("missing", "example.com/absent:1"),
    )
    .await;
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    assert!(e.message().contains("example.com/absent:1"), "{e}");
    assert!(list_containers(&mut rt).await.is_empty());
    let manifest = std::fs::read_to_string(pod.join("pod.json")).unwrap();
    assert!(!manifest.contains("missing-0"), "{manifest}");
    assert!(!pod.join("apps/missing-0").exists());

    // A host path and an image at once: refused.
    let mut both = with_image_volume("both", MARKER);
    both.mounts[0].host_path = w.store().display().to_string();
    let e = create_refused(&mut rt, &sb, &config, both).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(list_containers(&mut rt).await.is_empty());

    // The marker image at /vol: its files, read-only, nosuid, nodev.
    let id = create(&mut rt, &sb, &config, with_image_volume("reader", MARKER)).await;
    start(&mut rt, &id).await;
    assert_eq!(
        sh(&mut rt, &id, "cat /vol/marker").await,
        (0, "marker-image".to_string())
    );
    let (code, _) = sh(&mut rt, &id, "touch /vol/new 2>&1").await;
    assert_ne!(code, 0, "the image volume must be read-only");
    let (_, out) = sh(&mut rt, &id, "touch /vol/marker 2>&1").await;
    assert!(out.contains("Read-only file system"), "{out}");
    let (_, opts) = sh(&mut rt, &id, "grep ' /vol ' /proc/mounts | cut -d' ' -f4").await;
    let opts: Vec<&str> = opts.split(',').collect();
    for o in ["ro", "nosuid", "nodev"] {
        assert!(opts.contains(&o), "/vol is mounted {opts:?}");
    }
    // Every layer of the image, not just its top one.
    assert_eq!(sh(&mut rt, &id, "test -x /vol/bin/busybox").await.0, 0);

    // RemoveImage while the volume is in use: the name goes, the layers the volume shows
    // stay (as an app's root's do) and the container still reads them.
    let layers = volume_layers(&pod);
    assert_eq!(layers.len(), 3, "{layers:?}");
    img.remove_image(proto::RemoveImageRequest {
        image: Some(proto::ImageSpec {
            image: MARKER.into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    for l in &layers {
        assert!(
            l.is_dir(),
            "layer {} of a volume in use was removed",
            l.display()
        );
    }
    assert_eq!(
        sh(&mut rt, &id, "cat /vol/marker").await,
        (0, "marker-image".to_string())
    );
    // Once the container is gone, nothing keeps the marker's own layer.
    stop_and_remove(&mut rt, &id).await;
    assert!(volume_layers(&pod).is_empty());
    let out = w.run(&["image", "gc"]);
    assert!(out.status.success(), "{out:?}");
    let gone: Vec<&PathBuf> = layers.iter().filter(|l| !l.exists()).collect();
    assert_eq!(gone.len(), 1, "only the marker layer is unused: {layers:?}");

    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}
