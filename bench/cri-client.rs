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

async fn one_pod(
    rt: &mut Rt,
    image: &str,
    tag: &str,
    i: usize,
    logs: &str,
) -> Result<Sample, String> {
    let config = sandbox_config(tag, i, logs);
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
    let running = t.elapsed();
    let t = Instant::now();
    if let Err(e) = stop_pod(rt, &sb, Some(&id)).await {
        return fail(rt, format!("stop/remove: {e}")).await;
    }
    Ok(Sample {
        start,
        running,
        stop: t.elapsed(),
    })
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
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
        _ => panic!("usage: cri-client SOCKET IMAGE N PARALLEL [LOG_BASE] | SOCKET cleanup"),
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
