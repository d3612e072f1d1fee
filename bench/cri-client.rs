//! The CRI benchmark's client (`bench/cri.sh` builds and runs it against `orbit cri` and
//! containerd's CRI plugin): the kubelet's calls for one pod of one container, timed.
//!
//! `cri-client SOCKET IMAGE N PARALLEL [LOG_BASE]` — N pods, PARALLEL at a time. For each:
//!   - start = RunPodSandbox (host network, log directory in a private temporary directory
//!     under LOG_BASE, default the system's) + CreateContainer (IMAGE, `/bin/sh -c 'exec sleep
//!     3600'`) + StartContainer;
//!   - running = from RunPodSandbox's call until ContainerStatus first says RUNNING (polled
//!     every 5 ms right after StartContainer returns; equals start plus one status call when
//!     StartContainer returns a running container);
//!   - stop = StopPodSandbox + RemoveContainer + RemovePodSandbox (the kubelet's order: the
//!     sandbox stopped, then its exited container garbage-collected, then the sandbox).
//!
//! Prints `start p50 p99 max`, `running p50 p99 max` and `stop p50 p99 max` in milliseconds
//! and `wall SECONDS` (the whole run). Exits non-zero if a call fails (after trying to stop
//! and remove that pod's sandbox).
//!
//! `cri-client SOCKET exec-bench IMAGE N WARMUP SPDY_CLIENT [LOG_BASE]` — one pod as above
//! (label `app=cri-bench`, so `cleanup` finds it too), kept running for WARMUP untimed and N
//! timed rounds, serially; each round does, against its container:
//!   - execsync = ExecSync `["true"]` (the gRPC call until its answer; exit code 0 checked);
//!   - exec = Exec `["true"]` (stdout + stderr, no tty) and then SPDY_CLIENT (the SPDY/3.1
//!     client of tests/streaming-client) run as `SPDY_CLIENT exec URL --stdout --stderr` until
//!     it exits (status 0 checked: the remote command's exit code): the pair's wall time, as
//!     the kubelet's Exec followed by kubectl's upgrade; exec-url is the Exec call alone.
//!
//! Then stops and removes the pod. Prints `execsync`, `exec` and `exec-url` lines (`p50 p99
//! max` in milliseconds) and `wall SECONDS` (the timed rounds). Exits non-zero if a call or
//! the client fails (after stopping and removing the pod).
//!
//! `cri-client SOCKET smoke-start IMAGE CGROUP_PARENT LOG_BASE` — one pod as above, with the
//! sandbox's cgroup parent (a systemd slice or a cgroupfs path), left running; prints
//! `SANDBOX CONTAINER`. `cri-client SOCKET stats SANDBOX CONTAINER` prints their stats (see
//! `stats`); `cri-client SOCKET stop SANDBOX CONTAINER` stops and removes them (the modern
//! host's suite, tests/hosts/suite.sh).
//!
//! `cri-client SOCKET cleanup` — stops and removes every sandbox this client made (label
//! `app=cri-bench`) with its containers; prints `removed COUNT` (the script's exit trap).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orbit::cri::proto::{self, runtime_service_client::RuntimeServiceClient, ContainerState};
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;

async fn channel(socket: String) -> Channel {
    orbit::grpc::unix_channel(socket)
        .await
        .expect("the CRI socket")
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(v[((v.len() as f64 - 1.0) * q).round() as usize]);
    (at(0.5), at(0.99), ms(*v.last().expect("samples")))
}

struct Sample {
    start: Duration,
    running: Duration,
    stop: Duration,
}

fn sandbox_config(tag: &str, i: usize, logs: &str) -> proto::PodSandboxConfig {
    let name = format!("bench-{tag}-{i}");
    proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata {
            uid: format!("uid-{name}"),
            name: name.clone(),
            namespace: "bench".into(),
            attempt: 0,
        }),
        // Empty, as the kubelet leaves it for host-network pods (they share the host's UTS
        // namespace; runc refuses a hostname there).
        log_directory: format!("{logs}/{name}"),
        labels: HashMap::from([("app".to_string(), "cri-bench".to_string())]),
        linux: Some(proto::LinuxPodSandboxConfig {
            security_context: Some(proto::LinuxSandboxSecurityContext {
                namespace_options: Some(proto::NamespaceOption {
                    network: proto::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(image: &str) -> proto::ContainerConfig {
    proto::ContainerConfig {
        metadata: Some(proto::ContainerMetadata {
            name: "main".into(),
            attempt: 0,
        }),
        image: Some(proto::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), "exec sleep 3600".into()],
        log_path: "main/0.log".into(),
        ..Default::default()
    }
}

async fn stop_pod(rt: &mut Rt, sb: &str, container: Option<&str>) -> Result<(), tonic::Status> {
    rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
        pod_sandbox_id: sb.into(),
    })
    .await?;
    if let Some(id) = container {
        rt.remove_container(proto::RemoveContainerRequest {
            container_id: id.into(),
        })
        .await?;
    }
    rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
        pod_sandbox_id: sb.into(),
    })
    .await?;
    Ok(())
}

/// A started pod: its sandbox and container ids, start and running times.
struct Started {
    sandbox: String,
    container: String,
    start: Duration,
    running: Duration,
}

/// RunPodSandbox + CreateContainer + StartContainer, then ContainerStatus until RUNNING; on
/// failure the sandbox (if made) is stopped and removed.
async fn start_pod(
    rt: &mut Rt,
    image: &str,
    tag: &str,
    i: usize,
    logs: &str,
    cgroup_parent: Option<&str>,
) -> Result<Started, String> {
    let mut config = sandbox_config(tag, i, logs);
    if let (Some(parent), Some(linux)) = (cgroup_parent, config.linux.as_mut()) {
        linux.cgroup_parent = parent.to_string();
    }
    let t = Instant::now();
    let sb = rt
        .run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|e| format!("pod {i}: RunPodSandbox: {e}"))?
        .into_inner()
        .pod_sandbox_id;
    let fail = |rt: &Rt, what: String| {
        let (mut rt, sb) = (rt.clone(), sb.clone());
        async move {
            let _ = stop_pod(&mut rt, &sb, None).await;
            Err(format!("pod {i}: {what}"))
        }
    };
    let id = match rt
        .create_container(proto::CreateContainerRequest {
            pod_sandbox_id: sb.clone(),
            config: Some(container_config(image)),
            sandbox_config: Some(config),
        })
        .await
    {
        Ok(r) => r.into_inner().container_id,
        Err(e) => return fail(rt, format!("CreateContainer: {e}")).await,
    };
    if let Err(e) = rt
        .start_container(proto::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
    {
        return fail(rt, format!("StartContainer: {e}")).await;
    }
    let start = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = match rt
            .container_status(proto::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
        {
            Ok(r) => r.into_inner().status.unwrap_or_default(),
            Err(e) => return fail(rt, format!("ContainerStatus: {e}")).await,
        };
        if s.state == ContainerState::ContainerRunning as i32 {
            break;
        }
        if s.state == ContainerState::ContainerExited as i32 || Instant::now() > deadline {
            return fail(rt, format!("the container is not running: {s:?}")).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(Started {
        sandbox: sb,
        container: id,
        start,
        running: t.elapsed(),
    })
}

async fn one_pod(
    rt: &mut Rt,
    image: &str,
    tag: &str,
    i: usize,
    logs: &str,
) -> Result<Sample, String> {
    let p = start_pod(rt, image, tag, i, logs, None).await?;
    let t = Instant::now();
    if let Err(e) = stop_pod(rt, &p.sandbox, Some(&p.container)).await {
        let _ = stop_pod(rt, &p.sandbox, None).await;
        return Err(format!("pod {i}: stop/remove: {e}"));
    }
    Ok(Sample {
        start: p.start,
        running: p.running,
        stop: t.elapsed(),
    })
}

/// One exec-bench round's times.
struct ExecSample {
    execsync: Duration,
    exec: Duration,
    exec_url: Duration,
}

/// ExecSync `["true"]`, then Exec `["true"]` + the SPDY client on its URL; both checked.
async fn exec_round(rt: &mut Rt, id: &str, spdy: &str) -> Result<ExecSample, String> {
    let t = Instant::now();
    let r = rt
        .exec_sync(proto::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["true".into()],
            timeout: 30,
        })
        .await
        .map_err(|e| format!("ExecSync: {e}"))?
        .into_inner();
    let execsync = t.elapsed();
    if r.exit_code != 0 {
        return Err(format!(
            "ExecSync: exit code {}, stderr {:?}",
            r.exit_code,
            String::from_utf8_lossy(&r.stderr)
        ));
    }
    let t = Instant::now();
    let url = rt
        .exec(proto::ExecRequest {
            container_id: id.into(),
            cmd: vec!["true".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        })
        .await
        .map_err(|e| format!("Exec: {e}"))?
        .into_inner()
        .url;
    let exec_url = t.elapsed();
    let out = tokio::process::Command::new(spdy)
        .args(["exec", &url, "--stdout", "--stderr"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .map_err(|_| format!("{spdy} exec {url}: still running after 60 s"))?
        .map_err(|e| format!("cannot run {spdy}: {e}"))?;
    let exec = t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{spdy} exec {url}: {}, stderr {:?}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(ExecSample {
        execsync,
        exec,
        exec_url,
    })
}

/// The exec-bench mode: one pod kept running, warm-up rounds, then N timed rounds.
async fn exec_bench(
    rt: &mut Rt,
    image: &str,
    n: usize,
    warmup: usize,
    spdy: &str,
    logs: &str,
) -> Result<(Vec<ExecSample>, Duration), String> {
    let tag = format!("exec-{}", std::process::id());
    let p = start_pod(rt, image, &tag, 0, logs, None).await?;
    let mut samples = Vec::with_capacity(n);
    let mut wall = Duration::ZERO;
    let mut result = Ok(());
    for i in 0..warmup + n {
        if i == warmup {
            wall = Duration::ZERO;
        }
        let t = Instant::now();
        match exec_round(rt, &p.container, spdy).await {
            Ok(s) if i >= warmup => samples.push(s),
            Ok(_) => {}
            Err(e) => {
                result = Err(if i < warmup {
                    format!("warm-up round {}: {e}", i + 1)
                } else {
                    format!("round {}: {e}", i - warmup + 1)
                });
                break;
            }
        }
        wall += t.elapsed();
    }
    if let Err(e) = stop_pod(rt, &p.sandbox, Some(&p.container)).await {
        let _ = stop_pod(rt, &p.sandbox, None).await;
        result = result.and(Err(format!("stop/remove: {e}")));
    }
    result.map(|()| (samples, wall))
}

/// Stops and removes the benchmark's sandboxes (and their containers) left by a failed run.
async fn cleanup(mut rt: Rt) -> Result<usize, tonic::Status> {
    let items = rt
        .list_pod_sandbox(proto::ListPodSandboxRequest {
            filter: Some(proto::PodSandboxFilter {
                label_selector: HashMap::from([("app".to_string(), "cri-bench".to_string())]),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .items;
    for sb in &items {
        rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
            pod_sandbox_id: sb.id.clone(),
        })
        .await?;
        let containers = rt
            .list_containers(proto::ListContainersRequest {
                filter: Some(proto::ContainerFilter {
                    pod_sandbox_id: sb.id.clone(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers;
        for c in containers {
            rt.remove_container(proto::RemoveContainerRequest { container_id: c.id })
                .await?;
        }
        rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
            pod_sandbox_id: sb.id.clone(),
        })
        .await?;
    }
    Ok(items.len())
}

/// Prints a container's and its sandbox's stats as `KEY VALUE` lines: `container-memory`
/// (working set, bytes), `container-cpu` (cumulative ns), `sandbox-memory`, `sandbox-cpu`.
async fn stats(rt: &mut Rt, sandbox: &str, container: &str) -> Result<(), tonic::Status> {
    let c = rt
        .container_stats(proto::ContainerStatsRequest {
            container_id: container.into(),
        })
        .await?
        .into_inner()
        .stats
        .unwrap_or_default();
    let mem = c.memory.and_then(|m| m.working_set_bytes).map(|v| v.value);
    let cpu = c
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map(|v| v.value);
    println!("container-memory {}", mem.unwrap_or(0));
    println!("container-cpu {}", cpu.unwrap_or(0));
    let s = rt
        .pod_sandbox_stats(proto::PodSandboxStatsRequest {
            pod_sandbox_id: sandbox.into(),
        })
        .await?
        .into_inner()
        .stats
        .unwrap_or_default();
    let linux = s.linux.unwrap_or_default();
    let mem = linux
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value);
    let cpu = linux
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map(|v| v.value);
    println!("sandbox-memory {}", mem.unwrap_or(0));
    println!("sandbox-cpu {}", cpu.unwrap_or(0));
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, socket, mode, image, n, warmup, spdy, rest @ ..] = args.as_slice() {
        if mode == "exec-bench" && rest.len() <= 1 {
            let logs = match rest.first() {
                Some(b) => tempfile::Builder::new().prefix("cri-logs-").tempdir_in(b),
                None => tempfile::Builder::new().prefix("cri-logs-").tempdir(),
            }
            .expect("a temporary log directory");
            let mut rt = RuntimeServiceClient::new(channel(socket.clone()).await);
            let n = n.parse::<usize>().expect("N").max(1);
            let warmup = warmup.parse::<usize>().expect("WARMUP");
            let logs_path = logs.path().display().to_string();
            let r = exec_bench(&mut rt, image, n, warmup, spdy, &logs_path).await;
            drop(logs);
            match r {
                Ok((samples, wall)) => {
                    for (what, v) in [
                        ("execsync", samples.iter().map(|s| s.execsync).collect()),
                        ("exec", samples.iter().map(|s| s.exec).collect()),
                        ("exec-url", samples.iter().map(|s| s.exec_url).collect()),
                    ] {
                        let (p50, p99, max) = percentiles(v);
                        println!("{what} {p50:.2} {p99:.2} {max:.2}");
                    }
                    println!("wall {:.2}", wall.as_secs_f64());
                }
                Err(e) => {
                    eprintln!("cri-client: exec-bench: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
    }
    if let [_, socket, mode, image, parent, logs] = args.as_slice() {
        if mode == "smoke-start" {
            let mut rt = RuntimeServiceClient::new(channel(socket.clone()).await);
            let tag = format!("smoke{}", std::process::id());
            match start_pod(&mut rt, image, &tag, 0, logs, Some(parent)).await {
                Ok(p) => println!("{} {}", p.sandbox, p.container),
                Err(e) => {
                    eprintln!("cri-client: smoke-start: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
    }
    if let [_, socket, mode, sandbox, container] = args.as_slice() {
        if mode == "stats" || mode == "stop" {
            let mut rt = RuntimeServiceClient::new(channel(socket.clone()).await);
            let r = if mode == "stats" {
                stats(&mut rt, sandbox, container).await
            } else {
                stop_pod(&mut rt, sandbox, Some(container)).await
            };
            if let Err(e) = r {
                eprintln!("cri-client: {mode}: {e}");
                std::process::exit(1);
            }
            return;
        }
    }
    if let [_, socket, mode] = args.as_slice() {
        if mode == "cleanup" {
            match cleanup(RuntimeServiceClient::new(channel(socket.clone()).await)).await {
                Ok(n) => println!("removed {n}"),
                Err(e) => {
                    eprintln!("cri-client: cleanup: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
    }
    let (socket, image, n, parallel, base) = match args.as_slice() {
        [_, s, i, n, p, rest @ ..] if rest.len() <= 1 => (
            s.clone(),
            i.clone(),
            n.parse::<usize>().expect("N"),
            p.parse::<usize>().expect("PARALLEL").max(1),
            rest.first().cloned(),
        ),
        _ => panic!(
            "usage: cri-client SOCKET IMAGE N PARALLEL [LOG_BASE] \
             | SOCKET exec-bench IMAGE N WARMUP SPDY_CLIENT [LOG_BASE] | SOCKET cleanup \
             | SOCKET smoke-start IMAGE CGROUP_PARENT LOG_BASE | SOCKET stats|stop SANDBOX CONTAINER"
        ),
    };
    let logs = match &base {
        Some(b) => tempfile::Builder::new().prefix("cri-logs-").tempdir_in(b),
        None => tempfile::Builder::new().prefix("cri-logs-").tempdir(),
    }
    .expect("a temporary log directory");
    let logs_path = logs.path().display().to_string();
    // Sandbox names must be unique per runtime: a tag per run.
    let tag = format!("{}", std::process::id());
    let rt = RuntimeServiceClient::new(channel(socket).await);
    let next = Arc::new(AtomicUsize::new(0));
    let wall = Instant::now();
    let workers: Vec<_> = (0..parallel.min(n))
        .map(|_| {
            let (mut rt, next, image, tag, logs) = (
                rt.clone(),
                next.clone(),
                image.clone(),
                tag.clone(),
                logs_path.clone(),
            );
            tokio::spawn(async move {
                let mut v = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        return Ok(v);
                    }
                    match one_pod(&mut rt, &image, &tag, i, &logs).await {
                        Ok(s) => v.push(s),
                        Err(e) => {
                            // Stop handing out pods: the run has failed.
                            next.store(n, Ordering::SeqCst);
                            return Err(e);
                        }
                    }
                }
            })
        })
        .collect();
    let mut samples = Vec::new();
    let mut failed = false;
    for w in workers {
        match w.await.expect("a worker") {
            Ok(v) => samples.extend(v),
            Err(e) => {
                eprintln!("cri-client: {e}");
                failed = true;
            }
        }
    }
    let wall = wall.elapsed();
    drop(logs);
    if failed {
        std::process::exit(1);
    }
    for (what, v) in [
        ("start", samples.iter().map(|s| s.start).collect::<Vec<_>>()),
        ("running", samples.iter().map(|s| s.running).collect()),
        ("stop", samples.iter().map(|s| s.stop).collect()),
    ] {
        let (p50, p99, max) = percentiles(v);
        println!("{what} {p50:.1} {p99:.1} {max:.1}");
    }
    println!("wall {:.2}", wall.as_secs_f64());
}
