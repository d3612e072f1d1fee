//! `orbit cri` driven over gRPC by the CRI's own generated client, the way the kubelet and
//! crictl drive it: sandboxes and containers through their whole lifecycle with statuses,
//! filters, logs in the kubelet's place, ExecSync, idempotent stop/remove, a server restart
//! in the middle of a pod's life, and the image service against a real registry.

mod common;
#[path = "common/cri.rs"]
mod cri_common;
#[path = "common/pods.rs"]
mod pods_common;
#[path = "common/registry.rs"]
mod registry_common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{TestMount, World};
use cri_common::*;
use orbit::cri::proto::{
    self, runtime_service_client::RuntimeServiceClient, ContainerState, PodSandboxState,
};
use pods_common::*;
use tonic::transport::Channel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_and_containers_through_their_lifecycle() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;

    let v = rt
        .version(proto::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "orbit");
    assert_eq!(v.runtime_api_version, "v1");
    let st = rt
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let conds = st.status.unwrap().conditions;
    assert!(conds.iter().any(|c| c.r#type == "RuntimeReady" && c.status));
    assert!(st.runtime_handlers.iter().any(|h| h.name == "ns"));
    // No guest kernel in this world's config dirs: kvm is not offered, and asking for it
    // says what is missing (tests/kvm.rs runs kvm sandboxes with a kernel).
    assert!(!st.runtime_handlers.iter().any(|h| h.name == "kvm"));
    let e = rt
        .run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(sandbox_config(&w, "vm")),
            runtime_handler: "kvm".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("guest kernel"), "{e}");
    assert_no_pods(&w);

    let config = sandbox_config(&w, "web");
    let sb = run_sandbox(&mut rt, &config).await;
    // The CLI sees the sandbox: it is an orbit pod.
    let listed = list_json(&w);
    assert!(
        listed.iter().any(|p| p["uuid"] == sb.as_str()),
        "{listed:?}"
    );
    let status = sandbox_status(&mut rt, &sb).await;
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(status.metadata.unwrap().name, "web");
    assert_eq!(status.labels["app"], "web");
    assert!(status.created_at > 0);
    let by_label = |app: &str, state: Option<PodSandboxState>| proto::ListPodSandboxRequest {
        filter: Some(proto::PodSandboxFilter {
            label_selector: HashMap::from([("app".to_string(), app.to_string())]),
            state: state.map(|s| proto::PodSandboxStateValue { state: s as i32 }),
            ..Default::default()
        }),
    };
    let items = rt
        .list_pod_sandbox(by_label("web", None))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(
        items.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        vec![sb.clone()]
    );
    assert!(rt
        .list_pod_sandbox(by_label("db", None))
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());
    assert!(rt
        .list_pod_sandbox(by_label("web", Some(PodSandboxState::SandboxNotready)))
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());

    // A container: created, started, its log where the kubelet looks, exec into it.
    let mut c = container_config(
        "main",
        BUSYBOX,
        "echo hello; echo $GREETING; id -u; exec sleep 600",
    );
    c.linux = Some(proto::LinuxContainerConfig {
        security_context: Some(proto::LinuxContainerSecurityContext {
            run_as_user: Some(proto::Int64Value { value: 1000 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create(&mut rt, &sb, &config, c).await;
    let s = container_state(&mut rt, &id).await;
    assert_eq!(s.state, ContainerState::ContainerCreated as i32);
    assert_eq!(s.metadata.unwrap().name, "main");
    let s = start(&mut rt, &id).await;
    assert!(s.started_at > 0);
    let log = PathBuf::from(&s.log_path);
    assert_eq!(log, w.path("kubelet-logs/web/main/0.log"));
    poll(Duration::from_secs(20), "three log lines", || {
        (log_lines(&log).len() >= 3).then_some(())
    });
    assert_eq!(log_lines(&log), vec!["hello", "hi", "1000"]);
    let out = exec(&mut rt, &id, &["cat", "/etc/hostname"], 0)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web-host");
    assert_eq!(out.exit_code, 0);
    let out = exec(&mut rt, &id, &["sh", "-c", "echo oops >&2; exit 3"], 0)
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "oops");
    let out = exec(&mut rt, &id, &["id", "-u"], 0).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1000",
        "exec runs as the container's user"
    );
    let e = exec(&mut rt, &id, &["sh", "-c", "sleep 3031; :"], 1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e}");
    // The timed-out command is gone, and what it started with it.
    poll(
        Duration::from_secs(10),
        "the timed-out command to end",
        || procs_with("sleep 3031").is_empty().then_some(()),
    );

    // Statistics from the container's cgroup and its writable layer.
    let out = exec(
        &mut rt,
        &id,
        &["dd", "if=/dev/zero", "of=/tmp/big", "bs=1M", "count=3"],
        10,
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let stats = rt
        .container_stats(proto::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    assert!(stats.memory.unwrap().usage_bytes.unwrap().value > 0);
    assert!(stats.writable_layer.unwrap().used_bytes.unwrap().value >= 3 << 20);
    let pod_stats = rt
        .pod_sandbox_stats(proto::PodSandboxStatsRequest {
            pod_sandbox_id: sb.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
        .linux
        .unwrap();
    assert!(pod_stats.process.unwrap().process_count.unwrap().value >= 1);
    assert_eq!(pod_stats.containers.len(), 1);
    let listed = rt
        .list_container_stats(proto::ListContainerStatsRequest {
            filter: Some(proto::ContainerStatsFilter {
                pod_sandbox_id: sb.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);

    // New limits reach the container's cgroup and its status.
    rt.update_container_resources(proto::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(proto::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let bases: HashMap<String, String> =
        serde_json::from_slice(&fs::read(pod_dir(&w, &sb).join("cgroups.json")).unwrap()).unwrap();
    let cg = |controller: &str, file: &str| {
        let base = bases
            .iter()
            .find(|(k, _)| k.split(',').any(|c| c == controller))
            .unwrap()
            .1;
        fs::read_to_string(format!(
            "/sys/fs/cgroup/{controller}/{}/orbit/{sb}/main-0/{file}",
            base.trim_start_matches('/')
        ))
        .unwrap()
        .trim()
        .to_string()
    };
    assert_eq!(
        cg("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(cg("cpu", "cpu.cfs_quota_us"), "50000");
    let s = container_state(&mut rt, &id).await;
    assert_eq!(
        s.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        64 << 20
    );

    let lister = rt.clone();
    let list = |f: proto::ContainerFilter| {
        let mut rt = lister.clone();
        async move {
            rt.list_containers(proto::ListContainersRequest { filter: Some(f) })
                .await
                .unwrap()
                .into_inner()
                .containers
        }
    };
    assert_eq!(
        list(proto::ContainerFilter {
            pod_sandbox_id: sb.clone(),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert_eq!(
        list(proto::ContainerFilter {
            state: Some(proto::ContainerStateValue {
                state: ContainerState::ContainerRunning as i32
            }),
            label_selector: HashMap::from([("role".to_string(), "main".to_string())]),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert!(list(proto::ContainerFilter {
        state: Some(proto::ContainerStateValue {
            state: ContainerState::ContainerExited as i32
        }),
        ..Default::default()
    })
    .await
    .is_empty());

    // Stop with a grace period: SIGTERM ends `sleep` (143); stop and remove are idempotent.
    rt.stop_container(proto::StopContainerRequest {
        container_id: id.clone(),
        timeout: 5,
    })
    .await
    .unwrap();
    let s = container_state(&mut rt, &id).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 143);
    assert!(s.finished_at >= s.started_at);
    stop_and_remove(&mut rt, &id).await;
    rt.remove_container(proto::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    assert!(list(proto::ContainerFilter::default()).await.is_empty());
    assert!(!log.exists(), "the log link goes with the container");
    let e = rt
        .container_status(proto::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // Bad requests: an image the store lacks, an unknown runtime handler (nothing left).
    let e = create_refused(
        &mut rt,
        &sb,
        &config,
        container_config("other", "example.com/nope:1", "true"),
    )
    .await;
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    let before = list_json(&w).len();
    let e = rt
        .run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(sandbox_config(&w, "bad")),
            runtime_handler: "no-such-stage1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert_eq!(list_json(&w).len(), before);

    rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .unwrap();
    let status = sandbox_status(&mut rt, &sb).await;
    assert_eq!(status.state, PodSandboxState::SandboxNotready as i32);
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
    // Removing a sandbox that is gone succeeds (the kubelet retries).
    rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cri_server_loses_no_pod_and_no_container() {
    let w = pod_world();
    let mut first = Cri::start(&w, &[]);
    let (mut rt, _) = first.clients().await;
    let config = sandbox_config(&w, "db");
    let sb = rt
        .run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "ns".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let id = rt
        .create_container(proto::CreateContainerRequest {
            pod_sandbox_id: sb.clone(),
            config: Some(container_config("db", BUSYBOX, "exec sleep 600")),
            sandbox_config: Some(config),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    start(&mut rt, &id).await;
    // kill -9 of the server: the sandbox runs on (it is not the server's child any more).
    first.kill();
    let second = Cri::start(&w, &[]);
    let (mut rt, _) = second.clients().await;
    let items = rt
        .list_pod_sandbox(proto::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].id, sb);
    assert_eq!(items[0].state, PodSandboxState::SandboxReady as i32);
    let s = container_state(&mut rt, &id).await;
    assert_eq!(s.state, ContainerState::ContainerRunning as i32);
    assert_eq!(s.metadata.unwrap().name, "db");
    rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .unwrap();
    let s = container_state(&mut rt, &id).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_context_mounts_and_dns_reach_the_container() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let mut config = sandbox_config(&w, "sec");
    config.dns_config = Some(proto::DnsConfig {
        servers: vec!["10.9.8.7".into()],
        searches: vec!["svc.example".into()],
        options: vec!["ndots:3".into()],
    });
    let sb = run_sandbox(&mut rt, &config).await;
    let rw = w.path("host-rw");
    let ro = w.path("host-ro");
    fs::create_dir_all(&rw).unwrap();
    fs::create_dir_all(&ro).unwrap();
    fs::write(ro.join("existing"), "from the host\n").unwrap();
    let mut c = container_config("sec", BUSYBOX, "exec sleep 600");
    c.mounts = vec![
        proto::Mount {
            container_path: "/data".into(),
            host_path: rw.display().to_string(),
            ..Default::default()
        },
        proto::Mount {
            container_path: "/ro".into(),
            host_path: ro.display().to_string(),
            readonly: true,
            ..Default::default()
        },
    ];
    c.linux = Some(proto::LinuxContainerConfig {
        security_context: Some(proto::LinuxContainerSecurityContext {
            capabilities: Some(proto::Capability {
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["CHOWN".into()],
                ..Default::default()
            }),
            readonly_rootfs: true,
            // A group only with a user (the CRI refuses a group alone).
            run_as_user: Some(proto::Int64Value { value: 0 }),
            run_as_group: Some(proto::Int64Value { value: 100 }),
            // allowPrivilegeEscalation: false.
            no_new_privs: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create(&mut rt, &sb, &config, c).await;
    start(&mut rt, &id).await;
    let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let run = |script: &str| {
        let mut rt = rt.clone();
        let (id, cmd) = (id.clone(), sh(script));
        async move {
            let out = rt
                .exec_sync(proto::ExecSyncRequest {
                    container_id: id,
                    cmd,
                    timeout: 10,
                })
                .await
                .unwrap()
                .into_inner();
            (
                out.exit_code,
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            )
        }
    };
    // Capabilities: the default set + NET_ADMIN (bit 12) − CHOWN (bit 0).
    let (_, capeff) = run("grep CapEff /proc/self/status | cut -f2").await;
    let caps = u64::from_str_radix(&capeff, 16).unwrap();
    assert!(caps & (1 << 12) != 0, "NET_ADMIN missing: {capeff}");
    assert!(caps & 1 == 0, "CHOWN kept: {capeff}");
    let (_, nnp) = run("grep NoNewPrivs /proc/self/status | cut -f2").await;
    assert_eq!(nnp, "1");
    assert_eq!(run("id -g").await.1, "100");
    // A read-only root; the host mounts, one writable, one not.
    assert_ne!(run("echo x > /newfile").await.0, 0);
    assert_eq!(
        run("echo written > /data/out && cat /ro/existing").await,
        (0, "from the host".to_string())
    );
    assert_eq!(fs::read_to_string(rw.join("out")).unwrap(), "written\n");
    assert_ne!(run("echo x > /ro/new").await.0, 0);
    // DNS as the kubelet asked.
    let (_, resolv) = run("cat /etc/resolv.conf").await;
    assert!(
        resolv.contains("nameserver 10.9.8.7")
            && resolv.contains("svc.example")
            && resolv.contains("ndots:3"),
        "{resolv}"
    );
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}

/// Interface names in a /proc/net/dev text.
fn interfaces(dev: &str) -> Vec<String> {
    let mut v: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|s| s.trim().to_string()))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_sandboxes_and_privileged_containers() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let mut config = sandbox_config(&w, "hostnet");
    config.linux = Some(proto::LinuxPodSandboxConfig {
        security_context: Some(proto::LinuxSandboxSecurityContext {
            namespace_options: Some(proto::NamespaceOption {
                network: proto::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let sb = run_sandbox(&mut rt, &config).await;
    let c = privileged(container_config("priv", BUSYBOX, "exec sleep 600"));
    let id = create(&mut rt, &sb, &config, c).await;
    start(&mut rt, &id).await;
    let out = exec(&mut rt, &id, &["cat", "/proc/net/dev"], 10)
        .await
        .unwrap();
    let host = fs::read_to_string("/proc/net/dev").unwrap();
    assert_eq!(
        interfaces(&String::from_utf8_lossy(&out.stdout)),
        interfaces(&host),
        "the host's network namespace"
    );
    // Privileged: every capability the runtime itself has (the host's bounding set).
    let capeff = |status: &str| {
        let v = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap()
            .trim()
            .to_string();
        u64::from_str_radix(&v, 16).unwrap()
    };
    let out = exec(&mut rt, &id, &["cat", "/proc/self/status"], 10)
        .await
        .unwrap();
    let host = capeff(&fs::read_to_string("/proc/self/status").unwrap());
    assert_eq!(capeff(&String::from_utf8_lossy(&out.stdout)), host);
    assert!(host.count_ones() > 30);
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_pulled_with_the_requests_credentials_listed_used_and_removed() {
    use registry_common::{image_as, Registry, PASS, USER};
    let reg = Registry::start();
    let w = pod_world();
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-key.pub");
    w.ok(&[
        "trust",
        "--prefix",
        &format!("{}/busybox", reg.host()),
        &key.display().to_string(),
    ]);
    let (_, digest) = image_as(&w, &reg, &reg.host(), "cri", 1, 4096, true);
    let cri = Cri::start(&w, &[&reg.ca()]);
    let (mut rt, mut img) = cri.clients().await;
    let name = format!("{}/busybox:cri", reg.host());
    let spec = |i: &str| {
        Some(proto::ImageSpec {
            image: i.into(),
            ..Default::default()
        })
    };
    let pull = |password: Option<&str>| proto::PullImageRequest {
        image: spec(&name),
        auth: password.map(|p| proto::AuthConfig {
            username: USER.into(),
            password: p.into(),
            ..Default::default()
        }),
        sandbox_config: None,
    };
    // No credentials, wrong ones: refused, nothing stored.
    let e = img.pull_image(pull(None)).await.unwrap_err();
    assert!(
        e.message().contains("authentication") || e.message().contains("401"),
        "{e}"
    );
    let e = img.pull_image(pull(Some("wrong"))).await.unwrap_err();
    assert!(
        e.message().contains("authentication") || e.message().contains("401"),
        "{e}"
    );
    let status = img
        .image_status(proto::ImageStatusRequest {
            image: spec(&name),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.image.is_none(),
        "an image that is not there is no error, and no image"
    );
    // The request's credentials: pulled, verified, listed.
    let got = img
        .pull_image(pull(Some(PASS)))
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    assert_eq!(got, digest);
    let status = img
        .image_status(proto::ImageStatusRequest {
            image: spec(&name),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let image = status.image.unwrap();
    assert_eq!(image.id, digest);
    assert_eq!(image.repo_tags, vec![name.clone()]);
    assert_eq!(
        image.repo_digests,
        vec![format!("{}/busybox@{digest}", reg.host())]
    );
    assert!(image.size > 0);
    assert!(status.info["info"].contains("key "), "{:?}", status.info);
    let all = img
        .list_images(proto::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(
        all.iter().any(|i| i.id == digest)
            && all
                .iter()
                .any(|i| i.repo_tags.contains(&BUSYBOX.to_string()))
    );
    let only = img
        .list_images(proto::ListImagesRequest {
            filter: Some(proto::ImageFilter {
                image: spec(&digest),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(
        only.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        vec![digest.clone()]
    );
    let fs_info = img
        .image_fs_info(proto::ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        fs_info.image_filesystems[0]
            .used_bytes
            .as_ref()
            .unwrap()
            .value
            > 0
    );

    // A container from the pulled image.
    let config = sandbox_config(&w, "pulled");
    let sb = run_sandbox(&mut rt, &config).await;
    let mut c = container_config("motd", &name, "");
    c.command = vec![];
    let id = create(&mut rt, &sb, &config, c).await;
    rt.start_container(proto::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let s = wait_state(&mut rt, &id, ContainerState::ContainerExited).await;
    assert_eq!(s.exit_code, 0);
    assert_eq!(s.reason, "Completed");
    assert_eq!(s.image_ref, digest);
    assert_eq!(log_lines(Path::new(&s.log_path)), vec!["hello from cri"]);
    rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .unwrap();

    // Removed by tag; removing again succeeds.
    img.remove_image(proto::RemoveImageRequest { image: spec(&name) })
        .await
        .unwrap();
    let status = img
        .image_status(proto::ImageStatusRequest {
            image: spec(&digest),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none());
    img.remove_image(proto::RemoveImageRequest { image: spec(&name) })
        .await
        .unwrap();
    assert_no_pods(&w);
}

/// A network namespace of the test's own (deleted on drop) for a world's pods.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_joins_the_kubelets_cni_network() {
    // Everything happens in a namespace of the test's own: `orbit cri` runs in it, and so
    // does every sandbox it starts.
    let ns = Netns(format!(
        "orbit-cri-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let st = std::process::Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap();
    assert!(st.success());
    let w = World::new().with_netns(fs::File::open(format!("/run/netns/{}", ns.0)).unwrap());
    fetch(&w, &layouts().busybox);
    // The kubelet's CNI directory: its first conflist is the pods' network.
    let cni = w.path("cni/net.d");
    fs::create_dir_all(&cni).unwrap();
    fs::write(
        cni.join("10-kube.conflist"),
        r#"{"cniVersion":"1.0.0","name":"kubepods","plugins":[{"type":"bridge","bridge":"kube0","isGateway":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.99.7.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}"#,
    )
    .unwrap();
    fs::write(
        cni.join("99-other.conflist"),
        r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    let cri = Cri::start_with(&w, &[], &["--cni-conf-dir", &cni.display().to_string()]);
    let (mut rt, _) = cri.clients().await;
    let config = sandbox_config(&w, "netted");
    let sb = run_sandbox(&mut rt, &config).await;
    let status = sandbox_status(&mut rt, &sb).await;
    let ip = status.network.unwrap().ip;
    assert!(ip.starts_with("10.99.7."), "{ip}");
    let id = create(
        &mut rt,
        &sb,
        &config,
        container_config("web", BUSYBOX, "exec sleep 600"),
    )
    .await;
    start(&mut rt, &id).await;
    let out = exec(
        &mut rt,
        &id,
        &["ip", "-4", "-o", "addr", "show", "eth0"],
        10,
    )
    .await
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{ip}/24")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The gateway (the bridge in the namespace) answers.
    let out = exec(
        &mut rt,
        &id,
        &["ping", "-c", "1", "-W", "5", "10.99.7.1"],
        15,
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stdout));
    rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .unwrap();
    assert_no_pods(&w);
    // No veth of the pod is left in the namespace.
    let links = std::process::Command::new("ip")
        .args([
            "netns", "exec", &ns.0, "ip", "-o", "link", "show", "type", "veth",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&links.stdout).trim(), "");
    drop(cri);
    drop(w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_events_follow_a_containers_life() {
    use proto::ContainerEventType as E;
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let mut events = rt
        .get_container_events(proto::GetEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let config = sandbox_config(&w, "evented");
    let sb = run_sandbox(&mut rt, &config).await;
    let id = create(
        &mut rt,
        &sb,
        &config,
        container_config("ev", BUSYBOX, "exec sleep 600"),
    )
    .await;
    start(&mut rt, &id).await;
    stop_and_remove(&mut rt, &id).await;
    let mut got = Vec::new();
    while got.last() != Some(&(E::ContainerDeletedEvent as i32)) {
        let e = tokio::time::timeout(Duration::from_secs(30), events.message())
            .await
            .unwrap_or_else(|_| panic!("events so far: {got:?}"))
            .unwrap()
            .unwrap();
        if e.container_id == id {
            assert_eq!(e.pod_sandbox_status.as_ref().unwrap().id, sb);
            got.push(e.container_event_type);
        }
    }
    assert_eq!(
        got,
        [
            E::ContainerCreatedEvent,
            E::ContainerStartedEvent,
            E::ContainerStoppedEvent,
            E::ContainerDeletedEvent
        ]
        .map(|e| e as i32)
    );
    rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .unwrap();
    assert_no_pods(&w);
}

/// ImageStatus's answer for `reference`: the image's ID, or None.
async fn image_id(
    img: &mut orbit::cri::proto::image_service_client::ImageServiceClient<Channel>,
    reference: &str,
) -> Option<String> {
    img.image_status(proto::ImageStatusRequest {
        image: Some(proto::ImageSpec {
            image: reference.into(),
            ..Default::default()
        }),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .image
    .map(|i| i.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reference_the_kubelet_holds_finds_the_same_image() {
    let w = pod_world();
    // The same image under a Docker Hub name too, as a pull of `busybox:1` stores it.
    let layout = format!("oci:{}", layouts().busybox.display());
    out_ok(
        &w,
        &[
            "--insecure-options=image",
            "fetch",
            "--name",
            "docker.io/library/busybox:1",
            &layout,
        ],
    );
    let cri = Cri::start(&w, &[]);
    let (mut rt, mut img) = cri.clients().await;
    let id = image_id(&mut img, BUSYBOX).await.expect("the test image");
    let status = img
        .image_status(proto::ImageStatusRequest {
            image: Some(proto::ImageSpec {
                image: id.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    let mut digests = status.repo_digests.clone();
    digests.sort();
    assert_eq!(
        digests,
        [
            format!("docker.io/library/busybox@{id}"),
            format!("example.com/busybox@{id}")
        ]
    );
    for reference in [
        id.clone(),
        id["sha256:".len()..].to_string(),
        BUSYBOX.to_string(),
        "example.com/busybox".to_string(),
        format!("example.com/busybox@{id}"),
        "docker.io/library/busybox:1".to_string(),
        "busybox:1".to_string(),
        format!("docker.io/library/busybox@{id}"),
        format!("library/busybox@{id}"),
        format!("busybox@{id}"),
    ] {
        assert_eq!(
            image_id(&mut img, &reference).await,
            Some(id.clone()),
            "{reference}"
        );
    }
    // A digest under a repository that does not name it, or a digest that is not there.
    let other = format!("sha256:{}", "0".repeat(64));
    for reference in [
        format!("example.com/other@{id}"),
        format!("example.com/busybox@{other}"),
    ] {
        assert_eq!(image_id(&mut img, &reference).await, None, "{reference}");
    }
    // ListImages' filter, CreateContainer and RemoveImage take the repo digest too.
    let repo_digest = format!("example.com/busybox@{id}");
    let listed = img
        .list_images(proto::ListImagesRequest {
            filter: Some(proto::ImageFilter {
                image: Some(proto::ImageSpec {
                    image: repo_digest.clone(),
                    ..Default::default()
                }),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(listed.iter().map(|i| &i.id).collect::<Vec<_>>(), [&id]);
    let config = sandbox_config(&w, "refs");
    let sb = run_sandbox(&mut rt, &config).await;
    let c = container_config("refs", &repo_digest, "exec sleep 600");
    let cid = create(&mut rt, &sb, &config, c).await;
    start(&mut rt, &cid).await;
    assert_eq!(sh(&mut rt, &cid, "cat /etc/motd").await.0, 0);
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
    img.remove_image(proto::RemoveImageRequest {
        image: Some(proto::ImageSpec {
            image: format!("busybox@{id}"),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    assert_eq!(
        image_id(&mut img, &id).await,
        None,
        "removed, with all its names"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_past_its_deadline_ends_with_deadline_exceeded() {
    let w = pod_world();
    // A registry that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = silent.local_addr().unwrap();
    let cri = Cri::start(&w, &[]);
    let (_, mut img) = cri.clients().await;
    for attempt in 0..3 {
        let mut req = tonic::Request::new(proto::PullImageRequest {
            image: Some(proto::ImageSpec {
                image: format!("{host}/silent/busybox:{attempt}"),
                ..Default::default()
            }),
            ..Default::default()
        });
        req.set_timeout(Duration::from_millis(800));
        let e = img.pull_image(req).await.unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::DeadlineExceeded,
            "attempt {attempt}: {e}"
        );
        assert!(e.message().contains("silent/busybox"), "{e}");
    }
    let listed = img
        .list_images(proto::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(
        listed
            .iter()
            .all(|i| !i.repo_tags.iter().any(|t| t.contains("silent"))),
        "{listed:?}"
    );
    drop(silent);
}

/// The `Seccomp:` mode of a container's shell (0: none, 2: a filter).
async fn seccomp_mode(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> String {
    sh(rt, id, "grep ^Seccomp: /proc/self/status | cut -f2")
        .await
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_without_a_profile_is_unconfined_unless_the_server_defaults_it() {
    let w = pod_world();
    for (cri_flags, nil_mode) in [
        (&["--net=none"][..], "0"),
        (&["--net=none", "--seccomp-default"][..], "2"),
    ] {
        let cri = Cri::start_with(&w, &[], cri_flags);
        let (mut rt, _) = cri.clients().await;
        let config = sandbox_config(&w, "seccomp");
        let sb = run_sandbox(&mut rt, &config).await;
        let profile = |t: proto::security_profile::ProfileType| {
            Some(proto::LinuxContainerConfig {
                security_context: Some(proto::LinuxContainerSecurityContext {
                    seccomp: Some(proto::SecurityProfile {
                        profile_type: t as i32,
                        localhost_ref: String::new(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        use proto::security_profile::ProfileType;
        for (name, linux, want) in [
            // The CRI: no profile means unconfined; the kubelet sends RuntimeDefault when
            // it wants the default (its SeccompDefault), or the server defaults it.
            ("nil", None, nil_mode),
            ("default", profile(ProfileType::RuntimeDefault), "2"),
            ("unconfined", profile(ProfileType::Unconfined), "0"),
        ] {
            let mut c = container_config(name, BUSYBOX, "exec sleep 600");
            c.linux = linux;
            let id = create(&mut rt, &sb, &config, c).await;
            start(&mut rt, &id).await;
            assert_eq!(
                seccomp_mode(&mut rt, &id).await,
                want,
                "{name} with {cri_flags:?}"
            );
        }
        remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_without_a_user_is_refused() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let config = sandbox_config(&w, "group");
    let sb = run_sandbox(&mut rt, &config).await;
    let with = |user: Option<i64>| {
        let mut c = container_config("group", BUSYBOX, "exec sleep 600");
        c.linux = Some(proto::LinuxContainerConfig {
            security_context: Some(proto::LinuxContainerSecurityContext {
                run_as_user: user.map(|value| proto::Int64Value { value }),
                run_as_group: Some(proto::Int64Value { value: 1234 }),
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    };
    let e = create_refused(&mut rt, &sb, &config, with(None)).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("run_as_group"), "{e}");
    let listed = list_containers(&mut rt).await;
    assert!(listed.is_empty(), "{listed:?}");
    // With a user, the group applies.
    let id = create(&mut rt, &sb, &config, with(Some(1000))).await;
    start(&mut rt, &id).await;
    assert_eq!(sh(&mut rt, &id, "id -u; id -g").await.1, "1000\n1234");
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_namespaces_sysctls_groups_masks_and_seccomp_profiles() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;

    // A sysctl of the node itself is refused, and nothing is left of the sandbox.
    let mut bad = sandbox_config(&w, "badsysctl");
    bad.linux = Some(proto::LinuxPodSandboxConfig {
        sysctls: HashMap::from([("kernel.panic".to_string(), "5".to_string())]),
        ..Default::default()
    });
    let e = rt
        .run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(bad),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("not namespaced"), "{e}");
    assert_no_pods(&w);

    let host_port_start =
        fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let mut config = sandbox_config(&w, "opts");
    config.linux = Some(proto::LinuxPodSandboxConfig {
        sysctls: HashMap::from([(
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "99".to_string(),
        )]),
        security_context: Some(proto::LinuxSandboxSecurityContext {
            namespace_options: Some(proto::NamespaceOption {
                pid: proto::NamespaceMode::Node as i32,
                ipc: proto::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let sb = run_sandbox(&mut rt, &config).await;

    let profile = w.path("seccomp/deny-mkdir.json");
    fs::create_dir_all(profile.parent().unwrap()).unwrap();
    fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let mut c = container_config("opts", BUSYBOX, "exec sleep 600");
    c.linux = Some(proto::LinuxContainerConfig {
        security_context: Some(proto::LinuxContainerSecurityContext {
            run_as_user: Some(proto::Int64Value { value: 1000 }),
            supplemental_groups: vec![1234, 5678],
            no_new_privs: false,
            masked_paths: vec!["/etc/motd".into()],
            seccomp: Some(proto::SecurityProfile {
                profile_type: proto::security_profile::ProfileType::Localhost as i32,
                localhost_ref: profile.display().to_string(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create(&mut rt, &sb, &config, c).await;
    start(&mut rt, &id).await;

    let groups = sh(&mut rt, &id, "id -G").await.1;
    let groups: Vec<&str> = groups.split_whitespace().collect();
    assert!(
        groups.contains(&"1234") && groups.contains(&"5678"),
        "{groups:?}"
    );
    // Privilege escalation allowed (no_new_privs off), the filter still loaded.
    assert_eq!(
        sh(&mut rt, &id, "grep NoNewPrivs /proc/self/status | cut -f2")
            .await
            .1,
        "0"
    );
    assert_eq!(
        sh(&mut rt, &id, "grep ^Seccomp: /proc/self/status | cut -f2")
            .await
            .1,
        "2"
    );
    // The Localhost profile: mkdir denied, everything else as usual.
    assert_ne!(sh(&mut rt, &id, "mkdir /tmp/denied").await.0, 0);
    assert_eq!(sh(&mut rt, &id, "touch /tmp/allowed").await.0, 0);
    // The kubelet's masked paths replace orbit's.
    assert_eq!(sh(&mut rt, &id, "cat /etc/motd").await, (0, String::new()));
    // The sysctl in the sandbox's network namespace, not the node's.
    assert_eq!(
        sh(
            &mut rt,
            &id,
            "cat /proc/sys/net/ipv4/ip_unprivileged_port_start"
        )
        .await
        .1,
        "99"
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(),
        host_port_start
    );
    // The host's pid and IPC namespaces: this test process is visible inside.
    for ns in ["pid", "ipc"] {
        let host = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_eq!(
            sh(&mut rt, &id, &format!("readlink /proc/self/ns/{ns}"))
                .await
                .1,
            host.display().to_string(),
            "{ns} namespace"
        );
    }
    let me = std::process::id();
    assert_eq!(sh(&mut rt, &id, &format!("test -d /proc/{me}")).await.0, 0);
    // …and its POSIX shared memory.
    let shm = format!("/dev/shm/orbit-test-{me}");
    fs::write(&shm, "shared").unwrap();
    let seen = sh(&mut rt, &id, &format!("cat {shm}")).await.1;
    let _ = fs::remove_file(&shm);
    assert_eq!(seen, "shared");

    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_container_log_is_reopened_without_losing_a_line() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let config = sandbox_config(&w, "rotate");
    let sb = run_sandbox(&mut rt, &config).await;
    let script = "echo before; while [ ! -e /tmp/next ]; do sleep 0.05; done; echo after; \
                  exec sleep 600";
    let id = create(
        &mut rt,
        &sb,
        &config,
        container_config("main", BUSYBOX, script),
    )
    .await;
    let log = PathBuf::from(start(&mut rt, &id).await.log_path);
    poll(Duration::from_secs(20), "the first line", || {
        (log_lines(&log) == ["before"]).then_some(())
    });
    // What the kubelet's log manager does: rename the log, then ask for a new one.
    let rotated = log.with_extension("log.20261126-000000");
    fs::rename(&log, &rotated).unwrap();
    rt.reopen_container_log(proto::ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(sh(&mut rt, &id, "touch /tmp/next").await.0, 0);
    poll(
        Duration::from_secs(20),
        "the line after the rotation",
        || (log_lines(&log) == ["after"]).then_some(()),
    );
    // The rotated file is a file of its own (the kubelet compresses and deletes it) with
    // exactly what came before.
    assert!(fs::symlink_metadata(&rotated).unwrap().is_file());
    assert_eq!(log_lines(&rotated), ["before"]);

    // Only a running container has a log to reopen.
    stop_only(&mut rt, &id).await;
    let e = rt
        .reopen_container_log(proto::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
}

/// StopContainer only (the container stays, exited).
async fn stop_only(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.stop_container(proto::StopContainerRequest {
        container_id: id.into(),
        timeout: 1,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_get_a_pid_namespace_of_their_own_as_the_kubelet_asks() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let config = sandbox_config(&w, "pidns");
    let sb = run_sandbox(&mut rt, &config).await;
    let nap = format!("sleep {}", 4000 + std::process::id() % 1000);
    let with_pid_mode = |name: &str, mode: proto::NamespaceMode| {
        let mut c = container_config(name, BUSYBOX, &format!("exec {nap}"));
        c.linux = Some(proto::LinuxContainerConfig {
            security_context: Some(proto::LinuxContainerSecurityContext {
                namespace_options: Some(proto::NamespaceOption {
                    pid: mode as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    };
    let own = create(
        &mut rt,
        &sb,
        &config,
        with_pid_mode("own", proto::NamespaceMode::Container),
    )
    .await;
    let shared = create(
        &mut rt,
        &sb,
        &config,
        with_pid_mode("shared", proto::NamespaceMode::Pod),
    )
    .await;
    start(&mut rt, &own).await;
    start(&mut rt, &shared).await;
    // CONTAINER: the container's command is PID 1 of a namespace that shows nothing else
    // (but what the exec itself runs).
    assert_eq!(
        sh(&mut rt, &own, "tr '\\0' ' ' < /proc/1/cmdline").await.1,
        nap
    );
    let sleepers = "for p in /proc/[0-9]*; do cat $p/comm; done 2>/dev/null | grep -cx sleep";
    assert_eq!(sh(&mut rt, &own, sleepers).await.1, "1");
    // The pod's namespace holds the other container's namespace: both sleepers show.
    assert_eq!(sh(&mut rt, &shared, sleepers).await.1, "2");
    // POD: the sandbox's namespace, shared.
    assert_ne!(
        sh(&mut rt, &shared, "tr '\\0' ' ' < /proc/1/cmdline")
            .await
            .1,
        nap
    );
    let ns = |id: String| {
        let mut rt = rt.clone();
        async move { sh(&mut rt, &id, "readlink /proc/self/ns/pid").await.1 }
    };
    assert_ne!(ns(own.clone()).await, ns(shared.clone()).await);
    // PID 1 ignores SIGTERM it has no handler for: StopContainer kills it after the grace
    // period, and it ends as killed.
    rt.stop_container(proto::StopContainerRequest {
        container_id: own.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    let st = wait_state(&mut rt, &own, ContainerState::ContainerExited).await;
    assert_eq!(st.exit_code, 137, "{st:?}");
    // Only the shared container's sleep is left.
    poll(Duration::from_secs(10), "one sleeper left", || {
        (procs_with(&nap).len() == 1).then_some(())
    });
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_and_mount_propagation_reach_the_container() {
    let w = pod_world();
    let shared = w.path("shared");
    let _shared = TestMount::tmpfs(&shared, true);
    fs::create_dir_all(shared.join("sub")).unwrap();
    let private = w.path("private");
    fs::create_dir_all(&private).unwrap();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let config = sandbox_config(&w, "dev");
    let sb = run_sandbox(&mut rt, &config).await;
    let mount = |host: &Path, inside: &str, p: proto::MountPropagation| proto::Mount {
        container_path: inside.into(),
        host_path: host.display().to_string(),
        propagation: p as i32,
        ..Default::default()
    };
    let device = |host: &str, inside: &str, perms: &str| proto::Device {
        container_path: inside.into(),
        host_path: host.into(),
        permissions: perms.into(),
    };

    // Refused up front, with what to do, and nothing left behind.
    let refused = [
        (
            vec![mount(
                &private,
                "/p",
                proto::MountPropagation::PropagationHostToContainer,
            )],
            vec![],
            tonic::Code::FailedPrecondition,
            "shared or slave",
        ),
        (
            vec![mount(
                &private,
                "/b",
                proto::MountPropagation::PropagationBidirectional,
            )],
            vec![],
            tonic::Code::FailedPrecondition,
            "needs a shared host mount",
        ),
        (
            vec![],
            vec![device("/etc/passwd", "/dev/pw", "r")],
            tonic::Code::InvalidArgument,
            "not a device node",
        ),
        (
            vec![],
            vec![device("/dev/fuse", "/dev/fu", "rx")],
            tonic::Code::InvalidArgument,
            "rwm",
        ),
    ];
    for (i, (mounts, devices, code, want)) in refused.into_iter().enumerate() {
        let mut c = container_config(&format!("bad{i}"), BUSYBOX, "exec sleep 600");
        c.mounts = mounts;
        c.devices = devices;
        let e = create_refused(&mut rt, &sb, &config, c).await;
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(want), "{}", e.message());
    }
    let listed = list_containers(&mut rt).await;
    assert!(listed.is_empty(), "{listed:?}");

    let mut c = container_config("dev", BUSYBOX, "exec sleep 600");
    c.mounts = vec![
        mount(
            &shared,
            "/hc",
            proto::MountPropagation::PropagationHostToContainer,
        ),
        mount(&shared, "/pv", proto::MountPropagation::PropagationPrivate),
    ];
    c.devices = vec![device("/dev/fuse", "/dev/fu", "r")];
    let id = create(&mut rt, &sb, &config, c).await;
    start(&mut rt, &id).await;

    // The host mounts below the shared source after the container started.
    let late = shared.join("sub");
    nix::mount::mount(
        Some("tmpfs"),
        &late,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    fs::write(late.join("f"), "late\n").unwrap();
    assert_eq!(
        sh(&mut rt, &id, "cat /hc/sub/f").await,
        (0, "late".to_string())
    );
    let (code, out) = sh(&mut rt, &id, "cat /pv/sub/f").await;
    assert_ne!(
        code, 0,
        "a private mount received the host's later mount: {out}"
    );

    // The device, read-only as asked.
    let (code, out) = sh(&mut rt, &id, "exec 3< /dev/fu && echo opened").await;
    assert_eq!((code, out.as_str()), (0, "opened"));
    let (code, out) = sh(&mut rt, &id, "sh -c 'exec 3> /dev/fu' 2>&1").await;
    assert!(
        code != 0 && out.contains("Operation not permitted"),
        "{code} {out}"
    );

    // A privileged container sees the host's devices and may open them; its bidirectional
    // mount is a peer of the host's: what it mounts there, the node sees (and the other
    // way round).
    let mut p = privileged(container_config("priv", BUSYBOX, "exec sleep 600"));
    p.mounts = vec![mount(
        &shared,
        "/bd",
        proto::MountPropagation::PropagationBidirectional,
    )];
    let pid = create(&mut rt, &sb, &config, p).await;
    start(&mut rt, &pid).await;
    let (code, out) = sh(&mut rt, &pid, "exec 3<> /dev/loop-control && echo opened").await;
    assert_eq!((code, out.as_str()), (0, "opened"));
    assert_eq!(
        sh(&mut rt, &pid, "cat /bd/sub/f").await,
        (0, "late".to_string())
    );
    let (code, out) = sh(
        &mut rt,
        &pid,
        "mkdir -p /bd/fromc && mount -t tmpfs none /bd/fromc && echo inside > /bd/fromc/f 2>&1",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        fs::read_to_string(shared.join("fromc/f")).unwrap(),
        "inside\n",
        "the container's mount did not reach the node"
    );
    // The HostToContainer container receives it too; the private one does not.
    assert_eq!(
        sh(&mut rt, &id, "cat /hc/fromc/f").await,
        (0, "inside".to_string())
    );
    assert_ne!(sh(&mut rt, &id, "cat /pv/fromc/f").await.0, 0);
    let (code, out) = sh(&mut rt, &id, "test -e /dev/loop-control || echo absent").await;
    assert_eq!((code, out.as_str()), (0, "absent"));
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}

/// The mount points of the cgroup hierarchies.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            matches!(right.split(' ').next()?, "cgroup" | "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// Cgroup directory `rel` (and what is below it) in every hierarchy, removed when dropped.
struct TestCgroup(String);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for root in cgroup_hierarchies() {
            let top = root.join(self.0.split('/').find(|c| !c.is_empty()).unwrap());
            let mut dirs: Vec<PathBuf> = walk_dirs(&top);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
            for d in dirs {
                let _ = fs::remove_dir(d);
            }
        }
    }
}

fn walk_dirs(d: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(d) else {
        return vec![];
    };
    let mut out = vec![d.to_path_buf()];
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk_dirs(&e.path()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_runs_below_the_kubelets_cgroup_parent_and_leaves_nothing_there() {
    let w = pod_world();
    let top = format!("orbit-test-{}", uuid::Uuid::new_v4().simple());
    let parent = format!("/{top}/besteffort/pod1");
    let _cleanup = TestCgroup(parent.clone());
    // The kubelet made the parent in the memory hierarchy; orbit makes what else it needs.
    let memory = PathBuf::from(format!("/sys/fs/cgroup/memory{parent}"));
    fs::create_dir_all(&memory).unwrap();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;

    for (bad, want) in [
        ("kubepods-besteffort-pod1.slice", "cgroupfs"),
        ("/kubepods/../etc", "'..'"),
    ] {
        let mut config = sandbox_config(&w, "cg-bad");
        config.linux = Some(proto::LinuxPodSandboxConfig {
            cgroup_parent: bad.into(),
            ..Default::default()
        });
        let e = rt
            .run_pod_sandbox(proto::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(want), "{}", e.message());
    }
    assert_no_pods(&w);

    let mut config = sandbox_config(&w, "cg");
    config.linux = Some(proto::LinuxPodSandboxConfig {
        cgroup_parent: parent.clone(),
        ..Default::default()
    });
    let sb = run_sandbox(&mut rt, &config).await;
    let id = create(
        &mut rt,
        &sb,
        &config,
        container_config("cg", BUSYBOX, "exec sleep 600"),
    )
    .await;
    start(&mut rt, &id).await;
    let pid = container_pid(&mut rt, &id).await;
    // In the sandbox's own cgroup below the parent; with the stage1's pod and app cgroups
    // below that for the controllers it manages.
    let own = format!("{parent}/orbit-{sb}");
    let apps = format!("{own}/orbit/{sb}/");
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for (controller, own) in [
        ("memory", &apps),
        ("pids", &apps),
        ("cpu", &apps),
        ("name=systemd", &own),
    ] {
        let line = cgroups
            .lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == controller))
            })
            .unwrap_or_else(|| panic!("no {controller} in {cgroups}"));
        assert!(
            line.split(':').nth(2).unwrap().starts_with(own.as_str()),
            "{controller}: {line} (want {own}…)"
        );
    }
    // Stats read the cgroups where they are.
    let stats = rt
        .container_stats(proto::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(stats.memory.unwrap().working_set_bytes.unwrap().value > 0);

    // Once the sandbox is stopped its stage1 has removed its cgroups, the container's too,
    // though the container was created after the sandbox started.
    rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .unwrap();
    let stage1s: Vec<PathBuf> = cgroup_hierarchies()
        .iter()
        .flat_map(|root| walk_dirs(&root.join(&top)))
        .filter(|d| d.ends_with(format!("orbit/{sb}")))
        .collect();
    assert!(
        stage1s.is_empty(),
        "left by the stopped sandbox: {stage1s:?}"
    );
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
    for root in cgroup_hierarchies() {
        let kubelets = root.starts_with("/sys/fs/cgroup/memory");
        let mine = root.join(&top);
        if kubelets {
            // The kubelet's parent stays, empty.
            assert_eq!(walk_dirs(&mine).len(), 3, "{:?}", walk_dirs(&mine));
        } else {
            assert!(!mine.exists(), "left behind: {:?}", walk_dirs(&mine));
        }
    }
}
