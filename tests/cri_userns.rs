//! User namespaces for CRI sandboxes (KEP-127, a pod's `hostUsers: false`), driven over
//! gRPC as the kubelet and critest's UserNamespaces specs drive them: the `ns` handler
//! advertises them; a POD-mode sandbox runs every container in one user namespace with
//! exactly the kubelet's mappings, its root unprivileged on the host (image layers and
//! idmapped volumes look root-owned, plain host volumes get the mapped ids); NODE keeps the
//! node's; what orbit cannot honour is refused by name and leaves nothing; removing the
//! sandbox leaves no pod, process, mount or cgroup.

mod common;
#[path = "common/cri.rs"]
mod cri_common;
#[path = "common/pods.rs"]
mod pods_common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::World;
use cri_common::*;
use orbit::cri::proto::{self, runtime_service_client::RuntimeServiceClient, NamespaceMode};
use pods_common::*;
use tonic::transport::Channel;

/// The kubelet's kind of mapping: container ids 0..65536 from `host`.
fn mapping(host: u32) -> Vec<proto::IdMapping> {
    vec![proto::IdMapping {
        host_id: host,
        container_id: 0,
        length: 65536,
    }]
}

const UIDS: u32 = 3_000_000;
const GIDS: u32 = 3_100_000;

fn pod_mode(uids: Vec<proto::IdMapping>, gids: Vec<proto::IdMapping>) -> proto::NamespaceOption {
    proto::NamespaceOption {
        userns_options: Some(proto::UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids,
            gids,
        }),
        ..Default::default()
    }
}

fn with_namespaces(
    mut config: proto::PodSandboxConfig,
    ns: proto::NamespaceOption,
) -> proto::PodSandboxConfig {
    config.linux = Some(proto::LinuxPodSandboxConfig {
        security_context: Some(proto::LinuxSandboxSecurityContext {
            namespace_options: Some(ns),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// The container's security context with `ns` (critest gives a container its sandbox's).
fn in_namespaces(
    mut c: proto::ContainerConfig,
    ns: Option<proto::NamespaceOption>,
) -> proto::ContainerConfig {
    c.linux = Some(proto::LinuxContainerConfig {
        security_context: Some(proto::LinuxContainerSecurityContext {
            namespace_options: ns,
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

fn mount(host: &Path, target: &str, idmapped: bool) -> proto::Mount {
    proto::Mount {
        container_path: target.into(),
        host_path: host.display().to_string(),
        uid_mappings: if idmapped { mapping(UIDS) } else { vec![] },
        gid_mappings: if idmapped { mapping(GIDS) } else { vec![] },
        ..Default::default()
    }
}

/// A directory of the test's world whose owner is host root, with mode `mode`.
fn host_dir(w: &World, name: &str, mode: u32) -> PathBuf {
    let d = w.path(name);
    fs::create_dir_all(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
    d
}

/// The non-empty lines of the container's log, once it has exited.
async fn output_of(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> Vec<String> {
    let s = wait_state(rt, id, proto::ContainerState::ContainerExited).await;
    let lines = log_lines(Path::new(&s.log_path));
    assert_eq!(s.exit_code, 0, "{lines:?}");
    lines
}

/// The mapping lines of `/proc/PID/{uid,gid}_map` as `(container, host, length)`.
fn map_fields(line: &str) -> (u64, u64, u64) {
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(f.len(), 3, "{line:?}");
    (f[0], f[1], f[2])
}

/// Cgroup directories anywhere in the host's hierarchies named after pod `uuid`, and those
/// below them.
fn cgroups_of(uuid: &str) -> Vec<PathBuf> {
    fn walk(d: &Path, uuid: &str, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.path().to_string_lossy().contains(uuid) {
                    out.push(e.path());
                }
                walk(&e.path(), uuid, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), uuid, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ns_handler_advertises_user_namespaces_and_reports_its_state_dir() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let st = rt
        .status(proto::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let supports = |name: &str| {
        st.runtime_handlers
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no handler {name}: {:?}", st.runtime_handlers))
            .features
            .unwrap()
            .user_namespaces
    };
    assert!(supports("ns"), "{:?}", st.runtime_handlers);
    // fly shares the node's namespaces.
    assert!(!supports("fly"), "{:?}", st.runtime_handlers);
    // critest probes the file system of the state dir's parent (its `stateDir`): the store.
    let config: serde_json::Value = serde_json::from_str(&st.info["config"]).unwrap();
    assert_eq!(
        Path::new(config["stateDir"].as_str().unwrap()).parent(),
        Some(w.store().as_path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_mode_sandbox_runs_its_containers_in_the_kubelets_user_namespace() {
    let w = pod_world();
    // Volumes the pod's root may reach: a plain one it may write (world-writable, as a
    // kubelet's emptyDir is made for the pod), one holding a host-root file it may not, and
    // an idmapped one holding a host-root file.
    let plain = host_dir(&w, "plain", 0o777);
    fs::write(plain.join("hosts-own"), "host\n").unwrap();
    fs::set_permissions(plain.join("hosts-own"), fs::Permissions::from_mode(0o644)).unwrap();
    let mapped = host_dir(&w, "mapped", 0o755);
    fs::write(mapped.join("seed"), "seed\n").unwrap();
    // The kubelet's own files (its /etc/hosts, a termination log) are idmapped files.
    let mapped_file = w.path("mapped-file");
    fs::write(&mapped_file, "").unwrap();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let ns = pod_mode(mapping(UIDS), mapping(GIDS));
    let config = with_namespaces(sandbox_config(&w, "userns"), ns.clone());
    let sb = run_sandbox(&mut rt, &config).await;

    // The status reports the user namespace the pod runs with.
    let status = sandbox_status(&mut rt, &sb).await;
    let reported = status
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .and_then(|o| o.userns_options)
        .unwrap();
    assert_eq!(reported.mode, NamespaceMode::Pod as i32);
    assert_eq!(
        (reported.uids, reported.gids),
        (mapping(UIDS), mapping(GIDS))
    );

    // As critest's NamespaceMode_POD spec: the container carries the sandbox's options.
    let script = "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; \
                  stat -c %u:%g /bin/busybox /mapped/seed /mapped-file; \
                  touch /plain/by-root /mapped/by-root; echo written >> /mapped-file; \
                  (echo x >> /plain/hosts-own) 2>/dev/null; echo rc=$?; \
                  echo '10.1.2.3 extra' >> /etc/hosts; echo hosts=$?";
    let mut c = in_namespaces(container_config("ids", BUSYBOX, script), Some(ns.clone()));
    c.mounts = vec![
        mount(&plain, "/plain", false),
        mount(&mapped, "/mapped", true),
        mount(&mapped_file, "/mapped-file", true),
    ];
    let id = create(&mut rt, &sb, &config, c).await;
    rt.start_container(proto::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let out = output_of(&mut rt, &id).await;
    assert_eq!(out.len(), 9, "{out:?}");
    assert_eq!(
        map_fields(&out[0]),
        (0, UIDS.into(), 65536),
        "uid_map: {out:?}"
    );
    assert_eq!(
        map_fields(&out[1]),
        (0, GIDS.into(), 65536),
        "gid_map: {out:?}"
    );
    assert_eq!(out[2..4], ["0", "0"], "root inside: {out:?}");
    assert_eq!(
        out[4..7],
        ["0:0", "0:0", "0:0"],
        "the image's layers and the idmapped volumes show host root as the pod's: {out:?}"
    );
    assert_eq!(out[7], "rc=1", "a host-root file stays unwritable: {out:?}");
    assert_eq!(
        out[8], "hosts=0",
        "the pod's root may edit its /etc/hosts: {out:?}"
    );
    assert_eq!(fs::read_to_string(&mapped_file).unwrap(), "written\n");
    assert_eq!(
        fs::read_to_string(plain.join("hosts-own")).unwrap(),
        "host\n"
    );
    // On the host: the plain volume got the mapped ids, the idmapped one the host's own.
    let owner = |p: PathBuf| {
        let m = fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        (m.uid(), m.gid())
    };
    assert_eq!(owner(plain.join("by-root")), (UIDS, GIDS));
    assert_eq!(owner(mapped.join("by-root")), (0, 0));

    // Every container of the sandbox joins the same user namespace, with or without the
    // options; it runs as an unprivileged host id; ExecSync lands in it too.
    let a = create(
        &mut rt,
        &sb,
        &config,
        in_namespaces(container_config("a", BUSYBOX, "exec sleep 600"), Some(ns)),
    )
    .await;
    let b = create(
        &mut rt,
        &sb,
        &config,
        container_config("b", BUSYBOX, "exec sleep 600"),
    )
    .await;
    start(&mut rt, &a).await;
    start(&mut rt, &b).await;
    let userns = |pid: u64| fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    let (pa, pb) = (
        container_pid(&mut rt, &a).await,
        container_pid(&mut rt, &b).await,
    );
    assert_eq!(userns(pa), userns(pb));
    assert_ne!(userns(pa), fs::read_link("/proc/self/ns/user").unwrap());
    let proc_status = fs::read_to_string(format!("/proc/{pb}/status")).unwrap();
    let uid_line = proc_status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some(UIDS.to_string().as_str()),
        "{uid_line}"
    );
    let (code, map) = sh(&mut rt, &b, "cat /proc/self/uid_map").await;
    assert_eq!((code, map_fields(&map)), (0, (0, UIDS.into(), 65536)));
    // A removed container's cgroup (the host's root made it for the pod's root) goes with it.
    let a_cgroups = || -> Vec<PathBuf> {
        cgroups_of(&sb)
            .into_iter()
            .filter(|p| p.ends_with("a-0"))
            .collect()
    };
    assert!(!a_cgroups().is_empty(), "{:?}", cgroups_of(&sb));
    stop_and_remove(&mut rt, &a).await;
    assert!(a_cgroups().is_empty(), "{:?}", a_cgroups());

    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
    let left = cgroups_of(&sb);
    assert!(left.is_empty(), "cgroups left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_mode_keeps_the_nodes_user_namespace() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let ns = proto::NamespaceOption {
        userns_options: Some(proto::UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let config = with_namespaces(sandbox_config(&w, "node"), ns.clone());
    let sb = run_sandbox(&mut rt, &config).await;
    let c = in_namespaces(
        container_config("ids", BUSYBOX, "cat /proc/self/uid_map"),
        Some(ns),
    );
    let id = create(&mut rt, &sb, &config, c).await;
    rt.start_container(proto::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let out = output_of(&mut rt, &id).await;
    let host = fs::read_to_string("/proc/self/uid_map").unwrap();
    let host: Vec<_> = host.lines().map(map_fields).collect();
    assert_eq!(
        out.iter().map(|l| map_fields(l)).collect::<Vec<_>>(),
        host,
        "{out:?}"
    );
    let reported = sandbox_status(&mut rt, &sb)
        .await
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .and_then(|o| o.userns_options)
        .unwrap();
    assert_eq!(reported.mode, NamespaceMode::Node as i32);
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespaces_orbit_cannot_honour_are_refused_and_leave_nothing() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let range = |container_id: u32, host_id: u32| proto::IdMapping {
        host_id,
        container_id,
        length: 65536,
    };
    let mode = |m: NamespaceMode| proto::NamespaceOption {
        userns_options: Some(proto::UserNamespace {
            mode: m as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut host_network = pod_mode(mapping(UIDS), mapping(GIDS));
    host_network.network = NamespaceMode::Node as i32;
    let cases = [
        // critest: more than one mapping; container id 0 not mapped; CONTAINER; TARGET.
        (
            pod_mode(vec![range(0, 1000), range(0, 2000)], mapping(GIDS)),
            "",
            "2 uid mappings",
        ),
        (
            pod_mode(vec![range(1, 1000)], mapping(GIDS)),
            "",
            "container id 1",
        ),
        (mode(NamespaceMode::Container), "", "CONTAINER"),
        (mode(NamespaceMode::Target), "", "TARGET"),
        (pod_mode(mapping(0), mapping(GIDS)), "", "host id 0"),
        (host_network, "", "node's"),
        (pod_mode(mapping(UIDS), mapping(GIDS)), "fly", "fly"),
    ];
    for (ns, handler, needle) in cases {
        let e = rt
            .run_pod_sandbox(proto::RunPodSandboxRequest {
                config: Some(with_namespaces(sandbox_config(&w, "bad"), ns)),
                runtime_handler: handler.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{needle}: {e:?}");
        assert!(e.message().contains(needle), "{needle}: {}", e.message());
    }
    let mut privileged = with_namespaces(
        sandbox_config(&w, "priv"),
        pod_mode(mapping(UIDS), mapping(GIDS)),
    );
    if let Some(s) = privileged
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        s.privileged = true;
    }
    let e = rt
        .run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(privileged),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert_no_pods(&w);

    // Containers that would leave the sandbox's user namespace, or gain host-root powers in
    // it, or idmap with another mapping, are refused; nothing of them is left.
    let vol = host_dir(&w, "vol", 0o755);
    let ns = pod_mode(mapping(UIDS), mapping(GIDS));
    let config = with_namespaces(sandbox_config(&w, "userns"), ns.clone());
    let sb = run_sandbox(&mut rt, &config).await;
    let ok = || container_config("c", BUSYBOX, "true");
    let mut privileged = in_namespaces(ok(), Some(ns.clone()));
    if let Some(s) = privileged
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        s.privileged = true;
    }
    let mut other_ids = ok();
    other_ids.mounts = vec![proto::Mount {
        uid_mappings: mapping(UIDS + 65536),
        ..mount(&vol, "/v", true)
    }];
    let mut other_userns = pod_mode(mapping(UIDS + 65536), mapping(GIDS));
    other_userns.userns_options.as_mut().unwrap().gids = mapping(GIDS);
    let mut device = ok();
    device.devices = vec![proto::Device {
        container_path: "/dev/fuse".into(),
        host_path: "/dev/fuse".into(),
        permissions: "rw".into(),
    }];
    for (c, needle) in [
        (privileged, "privileged"),
        (device, "devices"),
        (other_ids, "differ from the sandbox's"),
        (in_namespaces(ok(), Some(mode(NamespaceMode::Node))), "NODE"),
        (in_namespaces(ok(), Some(other_userns)), "other ids"),
    ] {
        let e = create_refused(&mut rt, &sb, &config, c).await;
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{needle}: {e:?}");
        assert!(e.message().contains(needle), "{needle}: {}", e.message());
    }
    // An idmapped mount needs a sandbox with a user namespace.
    let node = sandbox_config(&w, "node");
    let node_sb = run_sandbox(&mut rt, &node).await;
    let mut idmapped = ok();
    idmapped.mounts = vec![mount(&vol, "/v", true)];
    let e = create_refused(&mut rt, &node_sb, &node, idmapped).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("need a sandbox with a user namespace"),
        "{e:?}"
    );
    let listed = list_containers(&mut rt).await;
    assert!(listed.is_empty(), "{listed:?}");
    // (The last removal asserts that no pod at all is left.)
    rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .unwrap();
    assert_pod_gone(&sb, None);
    remove_sandbox_leaving_nothing(&mut rt, &w, &node_sb).await;
}
