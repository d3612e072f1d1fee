//! The `orbit cri` fixture and request helpers shared by the CRI tests (`tests/cri*.rs`):
//! a server on a Unix socket of the test's world that stops and removes every pod when
//! dropped, and the calls a kubelet makes, unwrapped.
//!
//! Include after `mod common;` and `#[path = "common/pods.rs"] mod pods_common;` with
//! `#[path = "common/cri.rs"] mod cri_common;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use orbit::cri::proto::{
    self, image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
    ContainerState,
};
use tonic::transport::Channel;

use crate::common::World;
use crate::pods_common::{assert_no_pods, assert_pod_gone, poll, wait_within};

/// An `orbit cri` on a Unix socket of `w`; on drop (a failing test too) the server is
/// killed by its pid and every pod of the world is stopped and removed — sandboxes are
/// detached from the server and would outlive the test otherwise.
pub struct Cri {
    pub child: Child,
    pub socket: PathBuf,
    /// `orbit` with the world's settings, for the clean-up.
    pub orbit: std::process::Command,
}

impl Cri {
    /// `orbit FLAGS --systemd=no cri --net=none` (no network unless a test asks).
    pub fn start(w: &World, flags: &[&str]) -> Cri {
        Cri::start_with(w, flags, &["--net=none"])
    }

    /// `orbit FLAGS --systemd=no cri CRI_FLAGS`.
    pub fn start_with(w: &World, flags: &[&str], cri_flags: &[&str]) -> Cri {
        Cri::spawn(w, flags, cri_flags, None, &[])
    }

    /// `orbit --systemd=no cri CRI_FLAGS` with `env` added to the server's environment
    /// (which its sandboxes inherit).
    pub fn start_with_env(w: &World, cri_flags: &[&str], env: &[(&str, &str)]) -> Cri {
        Cri::spawn(w, &[], cri_flags, None, env)
    }

    /// `orbit --systemd=yes cri --net=none` with the systemd manager on D-Bus address `bus`:
    /// sandboxes run as transient services.
    pub fn start_on_bus(w: &World, bus: &str) -> Cri {
        Cri::spawn(w, &[], &["--net=none"], Some(bus), &[])
    }

    fn spawn(
        w: &World,
        flags: &[&str],
        cri_flags: &[&str],
        bus: Option<&str>,
        env: &[(&str, &str)],
    ) -> Cri {
        let socket = w.path(&format!("cri-{}.sock", uuid::Uuid::new_v4().simple()));
        let mut args: Vec<&str> = flags.to_vec();
        let s = socket.display().to_string();
        args.push(if bus.is_some() {
            "--systemd=yes"
        } else {
            "--systemd=no"
        });
        args.extend(["cri", "--socket", &s]);
        args.extend(cri_flags);
        let mut orbit = w.cmd(&[]);
        let mut cmd = w.cmd(&args);
        cmd.envs(env.iter().copied());
        if let Some(bus) = bus {
            orbit.env("DBUS_SYSTEM_BUS_ADDRESS", bus);
            cmd.env("DBUS_SYSTEM_BUS_ADDRESS", bus);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        poll(Duration::from_secs(20), "the CRI socket", || {
            std::os::unix::net::UnixStream::connect(&socket).ok()
        });
        Cri {
            child,
            socket,
            orbit,
        }
    }

    pub fn orbit(&self, args: &[&str]) -> std::process::Output {
        let mut c = std::process::Command::new(self.orbit.get_program());
        c.envs(self.orbit.get_envs().filter_map(|(k, v)| Some((k, v?))));
        c.args(args).output().unwrap()
    }

    pub async fn clients(&self) -> (RuntimeServiceClient<Channel>, ImageServiceClient<Channel>) {
        let ch = orbit::grpc::unix_channel(&self.socket).await.unwrap();
        (
            RuntimeServiceClient::new(ch.clone()),
            ImageServiceClient::new(ch),
        )
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        self.kill();
        let list = self.orbit(&["list", "--format", "json"]);
        let pods: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap_or_default();
        for p in pods {
            let uuid = p["uuid"].as_str().unwrap_or_default().to_string();
            if p["state"] == "running" {
                self.orbit(&["stop", "--force", "--timeout", "10s", &uuid]);
            }
            self.orbit(&["rm", &uuid]);
        }
    }
}

pub fn sandbox_config(w: &World, name: &str) -> proto::PodSandboxConfig {
    proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: w
            .path(&format!("kubelet-logs/{name}"))
            .display()
            .to_string(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        annotations: HashMap::from([("note".to_string(), "from the test".to_string())]),
        ..Default::default()
    }
}

/// `c`, privileged.
pub fn privileged(mut c: proto::ContainerConfig) -> proto::ContainerConfig {
    c.linux = Some(proto::LinuxContainerConfig {
        security_context: Some(proto::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

pub fn container_config(name: &str, image: &str, script: &str) -> proto::ContainerConfig {
    proto::ContainerConfig {
        metadata: Some(proto::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(proto::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        envs: vec![proto::KeyValue {
            key: "GREETING".into(),
            value: "hi".into(),
        }],
        labels: HashMap::from([("role".to_string(), name.to_string())]),
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

/// RunPodSandbox with `config` (default runtime handler): the sandbox's ID.
pub async fn run_sandbox(
    rt: &mut RuntimeServiceClient<Channel>,
    config: &proto::PodSandboxConfig,
) -> String {
    run_sandbox_with(rt, config, "").await
}

/// RunPodSandbox with `config` and runtime handler `handler`: the sandbox's ID.
pub async fn run_sandbox_with(
    rt: &mut RuntimeServiceClient<Channel>,
    config: &proto::PodSandboxConfig,
    handler: &str,
) -> String {
    rt.run_pod_sandbox(proto::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: handler.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .pod_sandbox_id
}

/// CreateContainer `c` in sandbox `sb` (made with `config`): the container's ID.
pub async fn create(
    rt: &mut RuntimeServiceClient<Channel>,
    sb: &str,
    config: &proto::PodSandboxConfig,
    c: proto::ContainerConfig,
) -> String {
    rt.create_container(proto::CreateContainerRequest {
        pod_sandbox_id: sb.into(),
        config: Some(c),
        sandbox_config: Some(config.clone()),
    })
    .await
    .unwrap()
    .into_inner()
    .container_id
}

pub async fn sandbox_status(
    rt: &mut RuntimeServiceClient<Channel>,
    sb: &str,
) -> proto::PodSandboxStatus {
    rt.pod_sandbox_status(proto::PodSandboxStatusRequest {
        pod_sandbox_id: sb.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

/// StartContainer, then wait until the container runs.
pub async fn start(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> proto::ContainerStatus {
    rt.start_container(proto::StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap();
    wait_state(rt, id, ContainerState::ContainerRunning).await
}

/// StopContainer (5 s grace) then RemoveContainer.
pub async fn stop_and_remove(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.stop_container(proto::StopContainerRequest {
        container_id: id.into(),
        timeout: 5,
    })
    .await
    .unwrap();
    rt.remove_container(proto::RemoveContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap();
}

pub async fn container_state(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
) -> proto::ContainerStatus {
    rt.container_status(proto::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

pub async fn wait_state(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    want: ContainerState,
) -> proto::ContainerStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = container_state(rt, id).await;
        if s.state == want as i32 {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "container {id} never reached {want:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn exec(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<proto::ExecSyncResponse, tonic::Status> {
    rt.exec_sync(proto::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

/// The lines of a CRI log file: the records' text, a `P` record joined with the rest of
/// its line (a last line without a newline counts too).
pub fn log_lines(path: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let mut open = String::new();
    for l in fs::read_to_string(path).unwrap_or_default().lines() {
        let mut it = l.splitn(4, ' ').skip(2);
        let (Some(tag), Some(text)) = (it.next(), it.next()) else {
            continue;
        };
        open.push_str(text);
        if tag == "F" {
            lines.push(std::mem::take(&mut open));
        }
    }
    // A last line without a newline.
    lines.extend((!open.is_empty()).then_some(open));
    lines
}

/// CreateContainer `c` in sandbox `sb` (of `config`), which must fail: the error.
pub async fn create_refused(
    rt: &mut RuntimeServiceClient<Channel>,
    sb: &str,
    config: &proto::PodSandboxConfig,
    c: proto::ContainerConfig,
) -> tonic::Status {
    rt.create_container(proto::CreateContainerRequest {
        pod_sandbox_id: sb.into(),
        config: Some(c),
        sandbox_config: Some(config.clone()),
    })
    .await
    .expect_err("CreateContainer must refuse it")
}

/// Every container ListContainers shows.
pub async fn list_containers(rt: &mut RuntimeServiceClient<Channel>) -> Vec<proto::Container> {
    rt.list_containers(proto::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
}

/// `sh -c SCRIPT` in container `id` through ExecSync: exit code and trimmed stdout.
pub async fn sh(rt: &mut RuntimeServiceClient<Channel>, id: &str, script: &str) -> (i32, String) {
    let out = exec(rt, id, &["sh", "-c", script], 10).await.unwrap();
    (
        out.exit_code,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// `sh -c SCRIPT 2>&1` in container `id`: exit code and output.
pub async fn sh_err(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    script: &str,
) -> (i32, String) {
    sh(rt, id, &format!("{{ {script} ; }} 2>&1")).await
}

/// What critest's read-only specs check, in container `id` that mounts host directory
/// `vol` (holding the host's mount `vol/sub`) at `/ro` (readonly), `/rro` (readonly,
/// recursive_read_only) and `/rw`: the first read-only on its own mount only, the second on
/// every mount, the third not at all.
pub async fn assert_read_only_as_asked(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    vol: &Path,
) {
    let sub = vol.join("sub");
    // Non-recursive: the top is read-only, the node's tmpfs below it is not.
    let (code, out) = sh_err(rt, id, "touch /ro/top").await;
    assert!(
        code != 0 && out.contains("Read-only file system"),
        "{code} {out}"
    );
    let (code, out) = sh_err(rt, id, "echo nonrec > /ro/sub/file").await;
    assert_eq!(
        code, 0,
        "the tmpfs below a read-only mount is read-only: {out}"
    );
    assert_eq!(fs::read_to_string(sub.join("file")).unwrap(), "nonrec\n");
    // Recursive: both.
    for path in ["/rro/top", "/rro/sub/other"] {
        let (code, out) = sh_err(rt, id, &format!("touch {path}")).await;
        assert!(
            code != 0 && out.contains("Read-only file system"),
            "{path}: {code} {out}"
        );
    }
    assert_eq!(sh(rt, id, "cat /rro/sub/file").await.1, "nonrec");
    // Not read-only at all.
    let (code, out) = sh_err(rt, id, "touch /rw/top && touch /rw/sub/third").await;
    assert_eq!(code, 0, "{out}");
    assert!(vol.join("top").exists() && sub.join("third").exists());
}

/// The host pid of a running container's command, from its verbose status (what
/// `crictl inspect` shows as `info.pid`).
pub async fn container_pid(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> u64 {
    let status = rt
        .container_status(proto::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    info["pid"].as_u64().unwrap()
}

/// StopPodSandbox and RemovePodSandbox (crictl stopp, rmp); then no sandbox is listed and
/// nothing of the pod is left (directory, processes, mounts).
pub async fn remove_sandbox_leaving_nothing(
    rt: &mut RuntimeServiceClient<Channel>,
    w: &World,
    sb: &str,
) {
    rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
        pod_sandbox_id: sb.into(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
        pod_sandbox_id: sb.into(),
    })
    .await
    .unwrap();
    assert!(rt
        .list_pod_sandbox(proto::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());
    assert_no_pods(w);
    assert_pod_gone(sb, None);
}

/// The SPDY client: `$ORBIT_TEST_SPDY_CLIENT` (tests/run.sh builds it), else built now.
pub fn spdy_client() -> PathBuf {
    static CLIENT: OnceLock<PathBuf> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("ORBIT_TEST_SPDY_CLIENT") {
                return PathBuf::from(p);
            }
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let out = root.join("target/orbit-spdy-client");
            let st = Command::new("bash")
                .arg(root.join("tests/streaming-client/build.sh"))
                .arg(&out)
                .status()
                .unwrap();
            assert!(st.success(), "cannot build the SPDY test client");
            out
        })
        .clone()
}

/// Runs the client with `stdin` as its input; its output once it exits (within 60 s).
pub fn client(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(spdy_client())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = read_all(Box::new(child.stdout.take().unwrap()));
    let err = read_all(Box::new(child.stderr.take().unwrap()));
    let status = wait_within(&mut child, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the SPDY client {args:?} did not finish within 60 s"));
    feeder.join().unwrap();
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// `--kvm-kernel=PATH` for the kvm stage1's guest kernel made by scripts/kvm-kernel.sh
/// (tests/run.sh makes it; ORBIT_TEST_KVM_KERNEL points at it).
pub fn kvm_kernel() -> String {
    let k = std::env::var("ORBIT_TEST_KVM_KERNEL")
        .unwrap_or_else(|_| "/var/cache/orbit-kvm/vmlinux".to_string());
    assert!(
        Path::new(&k).is_file(),
        "no guest kernel at {k}: run `scripts/kvm-kernel.sh /var/cache/orbit-kvm` (tests/run.sh does)"
    );
    format!("--kvm-kernel={k}")
}
