//! CRI host mounts as the kubelet and critest use them: read-only non-recursively (a mount
//! the node made below the source stays writable) or recursively (`recursive_read_only`,
//! advertised in the handlers' features, refused without `readonly` or with propagation),
//! and host mounts made *after* the sandbox or the container started reaching the
//! container as its propagation says. Each test mounts its own tmpfs trees (private to the
//! test, unmounted by guards) after the sandbox runs, as critest does.

mod common;
#[path = "common/cri.rs"]
mod cri_common;
#[path = "common/pods.rs"]
mod pods_common;

use std::fs;
use std::path::Path;

use common::TestMount;
use cri_common::*;
use orbit::cri::proto::{self, MountPropagation};
use pods_common::*;

fn host_mount(host: &Path, inside: &str, readonly: bool, rro: bool) -> proto::Mount {
    proto::Mount {
        container_path: inside.into(),
        host_path: host.display().to_string(),
        readonly,
        recursive_read_only: rro,
        // As critest sends it: orbit has no SELinux labels to apply.
        selinux_relabel: true,
        ..Default::default()
    }
}

fn propagated(host: &Path, inside: &str, p: MountPropagation) -> proto::Mount {
    proto::Mount {
        propagation: p as i32,
        ..host_mount(host, inside, false, false)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_mounts_are_top_only_unless_recursive() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let config = sandbox_config(&w, "ro");
    let sb = run_sandbox(&mut rt, &config).await;
    // The node mounts a tmpfs holding the volume, and a tmpfs below the volume, after the
    // sandbox runs: the volume's directory exists only in mounts the pod's own mount
    // namespace never had.
    let outer = w.path("outer");
    let _outer = TestMount::tmpfs(&outer, false);
    let tree = outer.join("vol");
    let sub = tree.join("sub");
    fs::create_dir_all(&sub).unwrap();
    let _sub = TestMount::tmpfs(&sub, false);

    let mut c = container_config("ro", BUSYBOX, "exec sleep 600");
    c.mounts = vec![
        host_mount(&tree, "/ro", true, false),
        host_mount(&tree, "/rro", true, true),
        host_mount(&tree, "/rw", false, false),
    ];
    let id = create(&mut rt, &sb, &config, c).await;
    start(&mut rt, &id).await;

    assert_read_only_as_asked(&mut rt, &id, &tree).await;
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recursive_read_only_needs_a_read_only_private_mount_and_is_advertised() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let handlers = rt
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runtime_handlers;
    // The default handler (named "", as the kubelet and critest look it up) and the
    // built-in flavors that run here do it.
    for name in ["", "ns", "fly"] {
        let h = handlers
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no handler {name:?}: {handlers:?}"));
        assert!(
            h.features.as_ref().unwrap().recursive_read_only_mounts,
            "{h:?}"
        );
    }

    let config = sandbox_config(&w, "rro");
    let sb = run_sandbox(&mut rt, &config).await;
    let tree = w.path("tree");
    let _tree = TestMount::tmpfs(&tree, true);
    let rro = |p: MountPropagation| proto::Mount {
        propagation: p as i32,
        ..host_mount(&tree, "/mnt", true, true)
    };
    for (mount, want) in [
        (
            rro(MountPropagation::PropagationHostToContainer),
            "PROPAGATION_HOST_TO_CONTAINER",
        ),
        (
            rro(MountPropagation::PropagationBidirectional),
            "PROPAGATION_BIDIRECTIONAL",
        ),
        (host_mount(&tree, "/mnt", false, true), "readonly"),
    ] {
        let mut c = container_config("bad", BUSYBOX, "exec sleep 600");
        c.mounts = vec![mount];
        let e = create_refused(&mut rt, &sb, &config, c).await;
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("recursive_read_only") && e.message().contains(want),
            "{}",
            e.message()
        );
    }
    let listed = list_containers(&mut rt).await;
    assert!(listed.is_empty(), "{listed:?}");
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_mounts_made_after_the_container_started_reach_it_as_its_propagation_says() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let config = sandbox_config(&w, "prop");
    let sb = run_sandbox(&mut rt, &config).await;
    // The shared tree exists only after the sandbox started (critest's rshared bind).
    let tree = w.path("tree");
    let _tree = TestMount::tmpfs(&tree, true);
    for d in ["late", "fromslave", "fromshared"] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }

    let mut c = privileged(container_config("prop", BUSYBOX, "exec sleep 600"));
    c.mounts = vec![
        propagated(&tree, "/hc", MountPropagation::PropagationHostToContainer),
        propagated(&tree, "/bd", MountPropagation::PropagationBidirectional),
        propagated(&tree, "/pv", MountPropagation::PropagationPrivate),
    ];
    let id = create(&mut rt, &sb, &config, c).await;
    start(&mut rt, &id).await;

    // The node mounts below the shared tree after the container started.
    let late = tree.join("late");
    let _late = TestMount::tmpfs(&late, false);
    fs::write(late.join("flag"), "late\n").unwrap();
    for inside in ["/hc", "/bd"] {
        assert_eq!(
            sh(&mut rt, &id, &format!("cat {inside}/late/flag")).await,
            (0, "late".to_string()),
            "{inside} did not receive the node's mount"
        );
    }
    let (code, out) = sh_err(&mut rt, &id, "ls -A /pv/late").await;
    assert_eq!((code, out.as_str()), (0, ""), "a private mount received it");

    // What the container mounts reaches the node through the bidirectional mount only.
    for (dir, inside) in [("fromslave", "/hc"), ("fromshared", "/bd")] {
        let (code, out) = sh_err(
            &mut rt,
            &id,
            &format!("mount -t tmpfs none {inside}/{dir} && echo {dir} > {inside}/{dir}/f"),
        )
        .await;
        assert_eq!(code, 0, "{out}");
    }
    assert!(
        !tree.join("fromslave/f").exists(),
        "a HostToContainer mount sent the container's mount to the node"
    );
    assert_eq!(
        fs::read_to_string(tree.join("fromshared/f")).unwrap(),
        "fromshared\n"
    );
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}
