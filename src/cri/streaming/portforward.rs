//! The Kubernetes port-forward protocol (`portforward.k8s.io`) on a SPDY session: for each
//! forwarded connection the client opens an `error` and a `data` stream carrying the same
//! `port` and `requestID` headers; the server connects to that port on the pod's loopback
//! — from inside the pod's network namespace, or through its stage1 when the port is in a
//! VM — and copies bytes both ways. Failures are written on the `error` stream.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::session::{Session, Stream, StreamWriter};

/// How a forwarded connection reaches the sandbox's port.
#[derive(Clone)]
pub enum Via {
    /// From inside the sandbox's network namespace, opened when the URL was made (a path
    /// under /proc could name another process's namespace once the sandbox is gone).
    Netns(std::sync::Arc<std::fs::File>),
    /// Through the sandbox's stage1 (`port-forward -- PORT`, which relays its standard
    /// input and output: kvm, whose ports are inside the VM): the command for a port.
    Stage1(std::sync::Arc<dyn Fn(u16) -> Result<std::process::Command, String> + Send + Sync>),
}

/// Where to forward to.
#[derive(Clone)]
pub struct Target {
    /// How to reach the port.
    pub via: Via,
    /// The sandbox id, for messages.
    pub sandbox: String,
    /// Ports the request allowed (all when empty).
    pub ports: Vec<i32>,
}

#[derive(Default)]
struct Pair {
    error: Option<StreamWriter>,
    data: Option<Stream>,
}

/// The pair a stream belongs to: its `requestID`, or — from clients too old to send one —
/// derived from the stream ids the way the kubelet does (data follows its error stream).
fn request_id(s: &Stream, kind: &str) -> String {
    if let Some(id) = s.header("requestid") {
        return id.to_string();
    }
    let id = s.id();
    if kind == "data" {
        id.saturating_sub(2)
    } else {
        id
    }
    .to_string()
}

/// Serves port-forward requests until the client closes the session.
pub async fn serve(mut session: Session, target: Target) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(stream) = session.next_stream().await {
        let kind = stream.header("streamtype").unwrap_or_default().to_string();
        let id = request_id(&stream, &kind);
        let pair = pairs.entry(id.clone()).or_default();
        match kind.as_str() {
            "error" => pair.error = Some(stream.writer),
            "data" => pair.data = Some(stream),
            _ => continue,
        }
        if pair.error.is_some() && pair.data.is_some() {
            let pair = pairs.remove(&id).expect("present");
            tokio::spawn(forward(
                target.clone(),
                pair.error.expect("present"),
                pair.data.expect("present"),
            ));
        }
    }
}

async fn forward(target: Target, error: StreamWriter, data: Stream) {
    let port = data.header("port").unwrap_or_default().to_string();
    let data_writer = data.writer.clone();
    let result = match port.parse::<u16>() {
        Ok(p) if p > 0 && (target.ports.is_empty() || target.ports.contains(&i32::from(p))) => {
            copy(&target, p, data).await
        }
        Ok(p) if p > 0 => Err(format!(
            "port {p} was not among the ports this forward allows"
        )),
        _ => Err(format!("invalid port '{port}'")),
    };
    if let Err(e) = result {
        let msg = format!(
            "error forwarding port {port} to pod {}: {e}",
            target.sandbox
        );
        let _ = error.write(msg.as_bytes()).await;
        data_writer.close().await;
    }
    error.close().await;
}

/// Connects to `port` on the loopback of the network namespace at `netns`: a thread of its
/// own joins the namespace (it ends right after; threads of the runtime never move).
async fn connect(
    netns: std::sync::Arc<std::fs::File>,
    port: u16,
) -> Result<tokio::net::TcpStream, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = (|| -> Result<std::net::TcpStream, String> {
            nix::sched::setns(&*netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("cannot enter the pod's network namespace: {e}"))?;
            let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
            let s = std::net::TcpStream::connect_timeout(&v4, Duration::from_secs(10))
                .or_else(|e4| {
                    std::net::TcpStream::connect_timeout(&v6, Duration::from_secs(10))
                        .map_err(|_| e4)
                })
                .map_err(|e| format!("cannot connect to localhost:{port} in the pod: {e}"))?;
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(s)
        })();
        let _ = tx.send(r);
    });
    let s = rx
        .await
        .map_err(|_| "the connecting thread died".to_string())??;
    tokio::net::TcpStream::from_std(s).map_err(|e| e.to_string())
}

type Reader = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
type Writer = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// Runs the stage1's relay for `port` and waits for it to say `connected` on its standard
/// error (or fail, with what it said). The child goes with the returned guard.
async fn relay(
    command: &(dyn Fn(u16) -> Result<std::process::Command, String> + Send + Sync),
    port: u16,
) -> Result<(Reader, Writer, tokio::process::Child), String> {
    use std::process::Stdio;
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::from(command(port)?);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run the stage1's port-forward: {e}"))?;
    let stderr = child.stderr.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut said = Vec::new();
    let connected = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l == "connected" {
                return true;
            }
            said.push(l);
        }
        false
    })
    .await;
    if connected != Ok(true) {
        let _ = child.kill().await;
        return Err(if said.is_empty() {
            "the stage1's port-forward did not connect".to_string()
        } else {
            said.join("; ")
        });
    }
    // What it says later is read (and dropped): a closed pipe would fail its messages.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let rd = Box::new(child.stdout.take().expect("piped"));
    let wr = Box::new(child.stdin.take().expect("piped"));
    Ok((rd, wr, child))
}

async fn copy(target: &Target, port: u16, data: Stream) -> Result<(), String> {
    let (mut rd, mut wr, _relay): (Reader, Writer, _) = match &target.via {
        Via::Netns(netns) => {
            let (rd, wr) = connect(netns.clone(), port).await?.into_split();
            (Box::new(rd), Box::new(wr), None)
        }
        Via::Stage1(command) => {
            let (rd, wr, child) = relay(command.as_ref(), port).await?;
            (rd, wr, Some(child))
        }
    };
    let Stream {
        mut reader, writer, ..
    } = data;
    let upstream = tokio::spawn(async move {
        while let Some(chunk) = reader.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let downstream = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer.write(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        writer.close().await;
    };
    // The pod's side closing ends the forward (the client waits for the error stream to
    // close before it closes its connection); what the client still sends gets a moment.
    downstream.await;
    let mut upstream = upstream;
    if tokio::time::timeout(Duration::from_secs(1), &mut upstream)
        .await
        .is_err()
    {
        upstream.abort();
    }
    Ok(())
}
