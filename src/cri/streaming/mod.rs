//! The CRI streaming server: `Exec`, `Attach` and `PortForward` answer with a single-use
//! URL on this server (valid for a minute, as the kubelet's own streaming cache); the
//! kubelet or crictl connects there and upgrades the HTTP connection to SPDY/3.1, then
//! speaks the Kubernetes remote-command (`v4.channel.k8s.io`, …) or port-forward
//! (`portforward.k8s.io`) protocol on it — or, for a remote command, to a websocket
//! speaking the channel protocols (`v5.channel.k8s.io`, …; see [`websocket`]).

mod attach;
mod exec;
mod portforward;
mod pty;
mod remotecommand;
mod session;
mod spdy;
mod websocket;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tonic::Status;

pub use attach::Attach;
pub use exec::Exec;
pub use portforward::Target as PortForwardTarget;
pub use portforward::Via as PortForwardVia;
pub use remotecommand::Options;

/// How long a connection may take to send its request.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a URL stays valid.
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// URLs handed out and not yet used, at most (as the kubelet's server).
const MAX_PENDING: usize = 1000;
/// Remote-command protocols, preferred first.
const REMOTE_COMMAND: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
const PORT_FORWARD: &str = "portforward.k8s.io";

/// A session a URL stands for.
pub enum Pending {
    /// A command in a container.
    Exec(Exec, Options),
    /// A container's output.
    Attach(Attach, Options),
    /// Connections to a sandbox's ports.
    PortForward(PortForwardTarget),
}

impl Pending {
    fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(..) => "exec",
            Pending::Attach(..) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

/// The URLs handed out, and where the server listens.
#[derive(Default)]
pub struct Streaming {
    base: OnceLock<String>,
    pending: Mutex<HashMap<String, (Pending, Instant)>>,
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("base", &self.base.get())
            .finish()
    }
}

impl Streaming {
    /// A single-use URL for `p`.
    pub fn url_for(&self, p: Pending) -> Result<String, Status> {
        let base = self
            .base
            .get()
            .ok_or_else(|| Status::unavailable("the streaming server is not listening"))?;
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, (_, at)| at.elapsed() < TOKEN_TTL);
        if pending.len() >= MAX_PENDING {
            return Err(Status::resource_exhausted(
                "too many streaming requests waiting for their client",
            ));
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let url = format!("{base}/{}/{token}", p.kind());
        pending.insert(token, (p, Instant::now()));
        Ok(url)
    }

    fn take(&self, kind: &str, token: &str) -> Option<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.remove(token) {
            Some((p, at)) if at.elapsed() < TOKEN_TTL && p.kind() == kind => Some(p),
            _ => None,
        }
    }
}

/// Binds the streaming server's address (port 0: any free port).
pub async fn bind(
    addr: SocketAddr,
    streaming: &Streaming,
) -> Result<tokio::net::TcpListener, std::io::Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let mut local = listener.local_addr()?;
    if local.ip().is_unspecified() {
        local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let _ = streaming.base.set(format!("http://{local}"));
    Ok(listener)
}

/// Serves upgrades on `listener` forever.
pub async fn serve(listener: tokio::net::TcpListener, streaming: Arc<Streaming>) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of descriptors, say: wait instead of spinning.
                eprintln!("orbit cri: streaming: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let s = streaming.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, s.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}

fn reply(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = code;
    r
}

/// The header's values, comma-separated or repeated.
fn values<'a>(req: &'a Request<Incoming>, name: &str) -> Vec<&'a str> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

async fn handle(
    req: Request<Incoming>,
    streaming: Arc<Streaming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let parts: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let [kind, token] = parts[..] else {
        return Ok(reply(StatusCode::NOT_FOUND, "no such streaming endpoint"));
    };
    let upgrade = values(&req, "upgrade");
    let spdy = upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1"));
    let websocket = upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket"));
    if !spdy && !websocket {
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            "this endpoint needs an HTTP upgrade to SPDY/3.1 or websocket",
        ));
    }
    if websocket {
        // A malformed handshake does not use up the URL.
        let version = req
            .headers()
            .get("sec-websocket-version")
            .and_then(|v| v.to_str().ok());
        if req.headers().get("sec-websocket-key").is_none() || version != Some("13") {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                "a websocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
            ));
        }
    }
    let Some(pending) = streaming.take(kind, token) else {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "unknown or expired streaming URL: ask the runtime for a new one",
        ));
    };
    if websocket {
        return Ok(upgrade_to_websocket(req, pending));
    }
    let offered = values(&req, "x-stream-protocol-version");
    let supported: &[&str] = match pending {
        Pending::PortForward(_) => &[PORT_FORWARD],
        _ => &REMOTE_COMMAND,
    };
    let Some(protocol) = offered.iter().find(|p| supported.contains(p)).copied() else {
        return Ok(reply(
            StatusCode::FORBIDDEN,
            &format!(
                "unable to upgrade: none of the offered stream protocols ({}) is supported ({})",
                offered.join(", "),
                supported.join(", ")
            ),
        ));
    };
    let protocol = protocol.to_string();
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(hyper::header::CONNECTION, "Upgrade".parse().expect("valid"));
    h.insert(hyper::header::UPGRADE, "SPDY/3.1".parse().expect("valid"));
    h.insert(
        "X-Stream-Protocol-Version",
        protocol
            .parse()
            .expect("a supported protocol is a valid header"),
    );
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let v4 = protocol == REMOTE_COMMAND[0];
            run(session::Session::start(TokioIo::new(upgraded)), pending, v4).await;
        }
    });
    Ok(resp)
}

/// Answers a websocket upgrade for `pending` (a remote command: port forwarding speaks
/// SPDY) with the first channel protocol the client offers that orbit speaks (the oldest,
/// `channel.k8s.io`, when it offers none), then serves it.
fn upgrade_to_websocket(req: Request<Incoming>, pending: Pending) -> Response<Full<Bytes>> {
    if matches!(pending, Pending::PortForward(_)) {
        return reply(
            StatusCode::BAD_REQUEST,
            "port forwarding is served over SPDY only (crictl port-forward's default transport)",
        );
    }
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return reply(
            StatusCode::BAD_REQUEST,
            "a websocket upgrade needs Sec-WebSocket-Key",
        );
    };
    let offered = values(&req, "sec-websocket-protocol");
    let protocol = if offered.is_empty() {
        websocket::REMOTE_COMMAND[4]
    } else {
        match offered
            .iter()
            .find(|p| websocket::REMOTE_COMMAND.contains(p))
        {
            Some(p) => p,
            None => {
                return reply(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "unable to upgrade: none of the offered websocket protocols ({}) is supported ({})",
                        offered.join(", "),
                        websocket::REMOTE_COMMAND.join(", ")
                    ),
                )
            }
        }
    }
    .to_string();
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(hyper::header::CONNECTION, "Upgrade".parse().expect("valid"));
    h.insert(hyper::header::UPGRADE, "websocket".parse().expect("valid"));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    h.insert(
        "Sec-WebSocket-Accept",
        accept.parse().expect("base64 is a valid header"),
    );
    h.insert(
        "Sec-WebSocket-Protocol",
        protocol
            .parse()
            .expect("a supported protocol is a valid header"),
    );
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let first = match &pending {
                Pending::Exec(_, o) | Pending::Attach(_, o) => websocket::first_writable(o),
                Pending::PortForward(_) => 3,
            };
            let session = websocket::session(TokioIo::new(upgraded), &protocol, first).await;
            run(session, pending, websocket::structured_errors(&protocol)).await;
        }
    });
    resp
}

/// Serves `pending` on `session`; `v4`: the remote command reports a JSON status.
async fn run(session: session::Session, pending: Pending, v4: bool) {
    match pending {
        Pending::PortForward(target) => portforward::serve(session, target).await,
        Pending::Exec(exec, opts) => {
            if let Ok(streams) = remotecommand::accept(session, opts, v4).await {
                exec::exec(exec, opts, streams).await;
            }
        }
        Pending::Attach(attach, opts) => {
            if let Ok(streams) = remotecommand::accept(session, opts, v4).await {
                attach::attach(attach, opts, streams).await;
            }
        }
    }
}
