//! `orbit api-service`: the read-only gRPC API (`proto/orbit/api/v1/api.proto`) over TCP
//! and/or a Unix socket, or over sockets systemd passes (socket activation), with gRPC
//! reflection. See [`service`] for what each call reads.

pub mod convert;
pub mod events;
mod logs;
pub mod service;

use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

use crate::config::ConfigDirs;

/// The generated messages, client and server.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("orbit.api.v1");

    /// The encoded descriptors of the API, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("orbit_api_descriptor");
}

/// The default TCP address (rkt's API service port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:15441";

/// What `orbit api-service` serves and where.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// TCP addresses.
    pub listen: Vec<SocketAddr>,
    /// Unix socket paths.
    pub sockets: Vec<PathBuf>,
    /// The store.
    pub root: PathBuf,
    /// Configuration directories (stage1 images).
    pub config: ConfigDirs,
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The address or path.
        addr: String,
        /// The cause.
        error: std::io::Error,
    },
    /// The sockets systemd passed are not usable.
    #[error("socket activation: {0}")]
    Activation(String),
    /// The store cannot be watched for events.
    #[error("cannot watch the store {path} for events: {error}")]
    Watch {
        /// The store.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// The runtime or the gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Serve(String),
}

/// A bound listener.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, Option<PathBuf>),
}

impl Listener {
    fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp".into()),
            Listener::Unix(_, Some(p)) => p.display().to_string(),
            Listener::Unix(_, None) => "an activated unix socket".into(),
        }
    }
}

/// The sockets systemd passed (`LISTEN_PID`, `LISTEN_FDS`, from fd 3 on), if any.
/// Written here: the protocol is two environment variables and a loop, and the crates for
/// it either pull in libsystemd or do not hand back tokio listeners.
fn activated() -> Result<Vec<Listener>, ApiError> {
    let pid_matches = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count: i32 = match std::env::var("LISTEN_FDS").ok() {
        Some(n) if pid_matches => n
            .parse()
            .map_err(|_| ApiError::Activation(format!("LISTEN_FDS={n} is not a number")))?,
        _ => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    for fd in 3..3 + count {
        use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
        let addr: SockaddrStorage = getsockname(fd)
            .map_err(|e| ApiError::Activation(format!("fd {fd} is not a socket: {e}")))?;
        let listener = match addr.family() {
            Some(AddressFamily::Unix) => {
                // SAFETY: the service manager passed this fd to this process (LISTEN_PID
                // is ours) for it to own; nothing else in orbit uses fds 3.. at start.
                let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
                l.set_nonblocking(true)
                    .and_then(|()| UnixListener::from_std(l))
                    .map(|l| Listener::Unix(l, None))
            }
            Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                // SAFETY: as above.
                let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
                l.set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(l))
                    .map(Listener::Tcp)
            }
            other => {
                return Err(ApiError::Activation(format!(
                    "fd {fd} is a {other:?} socket: only TCP and Unix stream sockets are served"
                )))
            }
        }
        .map_err(|e| ApiError::Activation(format!("fd {fd}: {e}")))?;
        out.push(listener);
    }
    // Not for any process started later.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    Ok(out)
}

/// Binds a Unix socket at `path` (replacing a stale one), readable and writable by its
/// owner and group (0660): who may connect is decided by the socket's group.
fn bind_unix(path: &PathBuf) -> Result<Listener, ApiError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |error| ApiError::Listen {
        addr: path.display().to_string(),
        error,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another service is listening there",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let l = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(Listener::Unix(l, Some(path.clone())))
}

/// Serves until SIGTERM or SIGINT.
pub fn serve(opts: ServeOptions) -> Result<(), ApiError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ApiError::Serve(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(serve_async(opts))
}

async fn serve_async(opts: ServeOptions) -> Result<(), ApiError> {
    let mut listeners = activated()?;
    if listeners.is_empty() {
        for a in &opts.listen {
            let l = TcpListener::bind(a)
                .await
                .map_err(|error| ApiError::Listen {
                    addr: a.to_string(),
                    error,
                })?;
            listeners.push(Listener::Tcp(l));
        }
        for p in &opts.sockets {
            listeners.push(bind_unix(p)?);
        }
    }
    let hub = events::EventHub::start(&opts.root).map_err(|error| ApiError::Watch {
        path: opts.root.clone(),
        error,
    })?;
    let api = proto::public_api_server::PublicApiServer::new(service::ApiService::new(
        opts.root.clone(),
        opts.config.clone(),
        hub,
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ApiError::Serve(format!("reflection: {e}")))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let mut socket_files = Vec::new();
    for l in listeners {
        eprintln!("orbit api-service: listening on {}", l.describe());
        let router = tonic::transport::Server::builder()
            .add_service(api.clone())
            .add_service(reflection.clone());
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match l {
            Listener::Tcp(l) => {
                servers.spawn(
                    router.serve_with_incoming_shutdown(TcpListenerStream::new(l), shutdown),
                );
            }
            Listener::Unix(l, path) => {
                socket_files.extend(path);
                servers.spawn(
                    router.serve_with_incoming_shutdown(UnixListenerStream::new(l), shutdown),
                );
            }
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ApiError::Serve(format!("cannot handle SIGTERM: {e}")))?;
    let result = tokio::select! {
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
        Some(r) = servers.join_next() => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ApiError::Serve(e.to_string())),
            Err(e) => Err(ApiError::Serve(e.to_string())),
        },
    };
    let _ = stop_tx.send(true);
    // Open streams are not waited for: a following client would hold the service forever.
    servers.abort_all();
    for p in socket_files {
        let _ = std::fs::remove_file(p);
    }
    result
}
