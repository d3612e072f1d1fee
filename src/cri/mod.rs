//! `orbit cri`: the Kubernetes Container Runtime Interface (CRI v1, `RuntimeService` and
//! `ImageService`) over orbit's store, stage1 interface and systemd integration. Pod
//! sandboxes are mutable orbit pods, containers are their apps; nothing lives only in the
//! server (see [`records`]), so a restarted `orbit cri` loses nothing and `orbit list`,
//! `status` and `logs` show CRI pods.
//!
//! The CRI protobuf definitions are vendored in `proto/k8s/cri/v1/` (Apache-2.0, from
//! kubernetes/cri-api) and compiled by `build.rs` with protox like orbit's own API.

mod cgroups;
mod events;
mod image_volume;
mod images;
mod procgroups;
pub mod records;
mod runtime;
mod seccomp;
mod spec;
mod start;
mod stats;
pub mod streaming;
mod sysctl;
mod userns;

use std::path::PathBuf;
use std::sync::Arc;

use tonic::Status;

use crate::config::ConfigDirs;
use crate::grpc::blocking;
use crate::image::store::Store;

/// The generated CRI messages, clients and servers (package `runtime.v1`).
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("runtime.v1");
}

/// The default socket (the kubelet's `--container-runtime-endpoint`).
pub const DEFAULT_SOCKET: &str = "/run/orbit/cri.sock";

/// What every CRI call needs.
#[derive(Debug, Clone)]
pub struct CriContext {
    /// The store.
    pub root: PathBuf,
    /// Configuration directories (trust, stage1 images, credentials).
    pub config: ConfigDirs,
    /// The orbit binary (sandboxes run `orbit run-prepared`; ExecSync runs `orbit enter`).
    pub orbit: PathBuf,
    /// Pull images without verifying signatures (the server's image policy).
    pub insecure_image: bool,
    /// How to reach registries.
    pub registry: crate::image::registry::RegistryOptions,
    /// The CNI network(s) sandboxes join (`--net` syntax).
    pub network: String,
    /// CNI plugin directories searched first.
    pub cni_plugin_dirs: Vec<PathBuf>,
    /// Sandboxes run as systemd services (a manager answered at start).
    pub systemd: bool,
    /// Container events for GetContainerEvents listeners (no listener is not an error).
    pub events: tokio::sync::broadcast::Sender<proto::ContainerEventResponse>,
    /// The last event sent per container (events only move forward: created, started,
    /// stopped, deleted — whether the server or the store's watcher saw it first).
    pub last_events: Arc<std::sync::Mutex<std::collections::HashMap<String, i32>>>,
    /// The streaming server's pending URLs (Exec, Attach, PortForward).
    pub streaming: Arc<streaming::Streaming>,
    /// The guest kernel of `kvm` sandboxes (`--kvm-kernel`; else the config dirs').
    pub kvm_kernel: Option<PathBuf>,
    /// The accelerator of `kvm` sandboxes (`--kvm-accel`).
    pub kvm_accel: Option<String>,
    /// A container without a seccomp profile gets the default filter (`--seccomp-default`);
    /// else it runs unconfined, as the CRI specifies.
    pub seccomp_default: bool,
}

impl CriContext {
    fn store(&self) -> Store {
        Store::new(&self.root)
    }
}

/// What `orbit cri` serves and where.
#[derive(Debug, Clone)]
pub struct CriOptions {
    /// Unix sockets.
    pub sockets: Vec<PathBuf>,
    /// The streaming server's address.
    pub streaming_address: std::net::SocketAddr,
    /// Everything the calls need.
    pub context: CriContext,
}

/// Unix nanoseconds now.
pub fn now() -> i64 {
    crate::clock::now_nanos()
}

/// A library error as a gRPC status.
fn status_of(e: anyhow::Error) -> Status {
    let text = format!("{e:#}");
    if let Some(p) = e.downcast_ref::<crate::pod::PodError>() {
        use crate::pod::PodError as P;
        return match p {
            P::UnknownPod(_) => Status::not_found(text),
            P::BadSpec(_) | P::AmbiguousPod { .. } => Status::invalid_argument(text),
            P::WrongState { .. } => Status::failed_precondition(text),
            _ => Status::internal(text),
        };
    }
    Status::internal(text)
}

/// Whether `ns` (an open `/proc/PID/ns/KIND`) is the node's namespace of that kind — this
/// process's.
fn is_nodes_namespace(ns: &std::fs::File, kind: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ours = std::fs::metadata(format!("/proc/self/ns/{kind}"));
    matches!((ns.metadata(), ours), (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()))
}

/// Bytes and inodes used under `dir` (not following links, not crossing into mounts).
fn du(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let (mut bytes, mut inodes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.dev() != top.dev() {
                continue;
            }
            bytes += m.blocks() * 512;
            inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// Serves the CRI until SIGTERM or SIGINT.
pub fn serve(opts: CriOptions) -> Result<(), crate::grpc::ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            crate::grpc::ServeError::Serve(format!("cannot start the async runtime: {e}"))
        })?;
    rt.block_on(async {
        let listeners = crate::grpc::bind(&[], &opts.sockets).await?;
        let stream_listener = streaming::bind(opts.streaming_address, &opts.context.streaming)
            .await
            .map_err(|e| {
                crate::grpc::ServeError::Serve(format!(
                    "cannot listen for streaming on {}: {e}",
                    opts.streaming_address
                ))
            })?;
        tokio::spawn(streaming::serve(
            stream_listener,
            opts.context.streaming.clone(),
        ));
        let ctx = Arc::new(opts.context);
        events::forward(ctx.clone()).map_err(|e| {
            crate::grpc::ServeError::Serve(format!(
                "cannot watch the store for container events: {e}"
            ))
        })?;
        let router = tonic::transport::Server::builder()
            .add_service(proto::runtime_service_server::RuntimeServiceServer::new(
                runtime::Runtime {
                    ctx: ctx.clone(),
                    userns: Default::default(),
                },
            ))
            .add_service(proto::image_service_server::ImageServiceServer::new(
                images::Images { ctx },
            ));
        crate::grpc::serve("orbit cri", listeners, router).await
    })
}
