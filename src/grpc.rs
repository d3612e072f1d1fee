//! Serving gRPC the way every orbit service does: on TCP addresses and Unix sockets, or on
//! the sockets systemd passed (socket activation), until SIGTERM or SIGINT; Unix socket
//! files made here are removed at the end.

use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

/// Why a service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
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
    /// The runtime or the gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Serve(String),
}

/// A bound listener.
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix listener, and the socket file this process made for it.
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
fn activated() -> Result<Vec<Listener>, ServeError> {
    let pid_matches = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count: i32 = match std::env::var("LISTEN_FDS").ok() {
        Some(n) if pid_matches => n
            .parse()
            .map_err(|_| ServeError::Activation(format!("LISTEN_FDS={n} is not a number")))?,
        _ => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    for fd in 3..3 + count {
        use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
        let addr: SockaddrStorage = getsockname(fd)
            .map_err(|e| ServeError::Activation(format!("fd {fd} is not a socket: {e}")))?;
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
                return Err(ServeError::Activation(format!(
                    "fd {fd} is a {other:?} socket: only TCP and Unix stream sockets are served"
                )))
            }
        }
        .map_err(|e| ServeError::Activation(format!("fd {fd}: {e}")))?;
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
fn bind_unix(path: &PathBuf) -> Result<Listener, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |error| ServeError::Listen {
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

/// The sockets systemd passed, or else the TCP addresses and Unix sockets given.
pub async fn bind(listen: &[SocketAddr], sockets: &[PathBuf]) -> Result<Vec<Listener>, ServeError> {
    let mut listeners = activated()?;
    if listeners.is_empty() {
        for a in listen {
            let l = TcpListener::bind(a)
                .await
                .map_err(|error| ServeError::Listen {
                    addr: a.to_string(),
                    error,
                })?;
            listeners.push(Listener::Tcp(l));
        }
        for p in sockets {
            listeners.push(bind_unix(p)?);
        }
    }
    Ok(listeners)
}

/// Serves `router` on every listener until SIGTERM or SIGINT (or a server fails), then
/// removes the socket files this process made. `name` prefixes the "listening on" lines.
pub async fn serve(
    name: &str,
    listeners: Vec<Listener>,
    router: tonic::transport::server::Router,
) -> Result<(), ServeError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let mut socket_files = Vec::new();
    for l in listeners {
        eprintln!("{name}: listening on {}", l.describe());
        let router = router.clone();
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
        .map_err(|e| ServeError::Serve(format!("cannot handle SIGTERM: {e}")))?;
    let result = tokio::select! {
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
        Some(r) = servers.join_next() => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServeError::Serve(e.to_string())),
            Err(e) => Err(ServeError::Serve(e.to_string())),
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

/// A client channel to a gRPC service on a Unix socket (the API service, the CRI server).
pub async fn unix_channel(
    socket: impl Into<PathBuf>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let socket = socket.into();
    // The URI is required by the API but unused: every connection goes to the socket.
    tonic::transport::Endpoint::from_static("http://[::]:1")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}

/// Runs a request's blocking work (store reads, stage1 calls) off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, tonic::Status> + Send + 'static,
) -> Result<T, tonic::Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| tonic::Status::internal(format!("the request's worker failed: {e}")))?
}

/// The time a request's caller allows (its `grpc-timeout` header), if it set one.
pub fn deadline_of(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Duration> {
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    use std::time::Duration;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How much before the caller's deadline [`within_deadline`] answers: tonic's own timer
/// answers CANCELLED at the deadline itself, and the caller must see DEADLINE_EXCEEDED.
const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_millis(20);

/// Runs `work`, answering DEADLINE_EXCEEDED (naming `what`) when the caller's `deadline`
/// comes first.
pub async fn within_deadline<T>(
    deadline: Option<std::time::Duration>,
    what: &str,
    work: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let Some(d) = deadline else {
        return work.await;
    };
    tokio::time::timeout(d.saturating_sub(DEADLINE_MARGIN), work)
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "{what} did not finish within the caller's deadline ({} ms)",
                d.as_millis()
            )))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        let mut m = tonic::metadata::MetadataMap::new();
        for (v, d) in [
            ("2H", Duration::from_secs(7200)),
            ("3M", Duration::from_secs(180)),
            ("5S", Duration::from_secs(5)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("9n", Duration::from_nanos(9)),
        ] {
            m.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(deadline_of(&m), Some(d), "{v}");
        }
        for bad in ["", "S", "5x", "-5S"] {
            m.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(deadline_of(&m), None, "{bad}");
        }
    }
}
