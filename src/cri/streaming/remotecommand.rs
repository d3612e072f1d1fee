//! The Kubernetes remote-command protocol (`v4.channel.k8s.io` and its predecessors) on a
//! SPDY session: the client opens an `error` stream and, as asked, `stdin`, `stdout`,
//! `stderr` and (with a terminal) `resize` streams; the server runs the command ([`super::exec`]) or
//! attaches to the container ([`super::attach`]) and reports the outcome on `error` as a
//! JSON `metav1.Status`, the way the kubelet's own streaming server does.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::session::{Closer, Session, StreamReader, StreamWriter};

/// How long the client has to open its streams (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What the client asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The streams of one exchange.
pub struct Streams {
    pub(super) error: StreamWriter,
    pub(super) stdin: Option<StreamReader>,
    pub(super) stdout: Option<StreamWriter>,
    pub(super) stderr: Option<StreamWriter>,
    /// Terminal sizes (columns, rows) from the `resize` stream.
    pub(super) resize: mpsc::Receiver<(u16, u16)>,
    pub(super) closer: Closer,
    /// True once the client is gone.
    pub(super) gone: tokio::sync::watch::Receiver<bool>,
    /// `v4.channel.k8s.io`: the outcome as a JSON status (plain text before v4).
    pub(super) v4: bool,
}

/// Waits for the streams `opts` calls for. A `resize` stream may come with them, later
/// or never; it is served in the background. Streams of other types are dropped.
pub async fn accept(mut session: Session, opts: Options, v4: bool) -> Result<Streams, String> {
    let closer = session.closer();
    let gone = session.gone();
    let (resize_tx, resize) = mpsc::channel(4);
    let (mut error, mut stdin, mut stdout, mut stderr) = (None, None, None, None);
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    loop {
        let ready = error.is_some()
            && (stdin.is_some() || !opts.stdin)
            && (stdout.is_some() || !opts.stdout)
            && (stderr.is_some() || !opts.stderr || opts.tty);
        if ready {
            break;
        }
        let stream = match tokio::time::timeout_at(deadline, session.next_stream()).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err("the client went away before opening its streams".into()),
            Err(_) => {
                closer.close().await;
                return Err("timed out waiting for the client to open its streams".into());
            }
        };
        // Only the streams asked for: a websocket has every channel whether used or not.
        match stream.header("streamtype").unwrap_or_default() {
            "error" => error = Some(stream.writer),
            "stdin" if opts.stdin => stdin = Some(stream.reader),
            "stdout" if opts.stdout => stdout = Some(stream.writer),
            "stderr" if opts.stderr => stderr = Some(stream.writer),
            "resize" => {
                tokio::spawn(read_resizes(stream.reader, resize_tx.clone()));
            }
            _ => {}
        }
    }
    tokio::spawn(async move {
        while let Some(s) = session.next_stream().await {
            if s.header("streamtype") == Some("resize") {
                tokio::spawn(read_resizes(s.reader, resize_tx.clone()));
            }
        }
    });
    Ok(Streams {
        error: error.expect("the loop ends only with an error stream"),
        stdin,
        stdout,
        stderr,
        resize,
        closer,
        gone,
        v4,
    })
}

/// Decodes the concatenated JSON size objects of a `resize` stream.
async fn read_resizes(mut reader: StreamReader, tx: mpsc::Sender<(u16, u16)>) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    let mut buf = Vec::new();
    while let Some(chunk) = reader.recv().await {
        buf.extend_from_slice(&chunk);
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Size>();
        let mut used = 0;
        while let Some(Ok(size)) = it.next() {
            used = it.byte_offset();
            if tx.send((size.width, size.height)).await.is_err() {
                return;
            }
        }
        buf.drain(..used);
        if buf.len() > 4096 {
            return; // Not sizes.
        }
    }
}

/// How the exchange ended.
pub enum Outcome {
    /// The command exited with this code (128+N for signal N).
    Exited(i32),
    /// It could not run, or the attachment failed.
    Failed(String),
}

/// The `metav1.Status` the client decodes from the error stream.
fn status_json(outcome: &Outcome) -> String {
    let v = match outcome {
        Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(msg) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
            "reason": "InternalError",
            "details": {"causes": [{"message": msg}]},
            "code": 500,
        }),
    };
    v.to_string()
}

/// Ends the exchange: output streams closed, the outcome on the error stream, GOAWAY.
pub(super) async fn finish(s: Streams, outcome: Outcome) {
    for w in [&s.stdout, &s.stderr].into_iter().flatten() {
        w.close().await;
    }
    let report = match (&outcome, s.v4) {
        (_, true) => status_json(&outcome),
        (Outcome::Exited(0), false) => String::new(),
        (Outcome::Exited(code), false) => {
            format!("command terminated with non-zero exit code: exit status {code}")
        }
        (Outcome::Failed(msg), false) => msg.clone(),
    };
    if !report.is_empty() {
        let _ = s.error.write(report.as_bytes()).await;
    }
    s.error.close().await;
    s.closer.close().await;
}

/// Copies `from` to `to` (or discards it without a stream) until EOF or `stop`; `Err` when
/// the client is gone.
pub(super) async fn pump<R: AsyncRead + Unpin>(
    mut from: R,
    to: Option<StreamWriter>,
) -> Result<(), ()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()), // EOF; a pty master says EIO.
            Ok(n) => n,
        };
        if let Some(w) = &to {
            w.write(&buf[..n]).await.map_err(|_| ())?;
        }
    }
}

/// Copies the client's stdin to `to` and closes it at the client's EOF.
pub(super) async fn feed<W: tokio::io::AsyncWrite + Unpin>(mut from: StreamReader, mut to: W) {
    while let Some(chunk) = from.recv().await {
        if to.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_what_client_go_decodes() {
        let v: serde_json::Value = serde_json::from_str(&status_json(&Outcome::Exited(0))).unwrap();
        assert_eq!(v["status"], "Success");
        let v: serde_json::Value = serde_json::from_str(&status_json(&Outcome::Exited(3))).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let v: serde_json::Value =
            serde_json::from_str(&status_json(&Outcome::Failed("no".into()))).unwrap();
        assert_eq!(v["message"], "no");
        assert_ne!(v["reason"], "NonZeroExitCode");
    }
}
