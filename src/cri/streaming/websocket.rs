//! The websocket transport of the streaming server (`crictl --transport websocket`, the
//! kubelet's `wsstream` clients): a remote command over the channel protocols
//! (`v5.channel.k8s.io` … `channel.k8s.io`), where every binary message starts with its
//! channel — 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize — and, from v5 on, `255 N`
//! closes channel N (the client's end of input). The connection becomes the same
//! [`Session`] the SPDY transport makes, with one stream per channel opened at once, so
//! the remote-command code serves both.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::session::{Session, Stream};
use super::spdy::Frame;

/// Websocket remote-command protocols, preferred first.
pub const REMOTE_COMMAND: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// The message prefix that closes a channel (v5).
const CLOSE_CHANNEL: u8 = 255;

/// The channels of `protocol`, in channel order, by the stream type the remote-command
/// code knows them as.
fn channels(protocol: &str) -> &'static [&'static str] {
    match protocol {
        // v3 added the resize channel (its error channel carries text, as v1/v2's).
        "channel.k8s.io" | "v2.channel.k8s.io" => &["stdin", "stdout", "stderr", "error"],
        _ => &["stdin", "stdout", "stderr", "error", "resize"],
    }
}

/// Whether `protocol` reports the outcome as a JSON status (v4 on).
pub fn structured_errors(protocol: &str) -> bool {
    matches!(protocol, "v4.channel.k8s.io" | "v5.channel.k8s.io")
}

/// The lowest channel the server writes for `opts` (stdout, stderr, else error).
pub fn first_writable(opts: &super::Options) -> u8 {
    if opts.stdout {
        1
    } else if opts.stderr && !opts.tty {
        2
    } else {
        3
    }
}

/// The session of a websocket connection `io` (already upgraded) speaking `protocol`;
/// `first` is the channel announced with an empty message, as the kubelet's server does.
pub async fn session<IO>(io: IO, protocol: &str, first: u8) -> Session
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut source) = ws.split();
    let close_signal = protocol == REMOTE_COMMAND[0];
    let names = channels(protocol);
    let (out, mut out_rx) = mpsc::channel::<Option<Frame>>(64);
    let (gone_tx, gone) = watch::channel(false);
    let (streams_tx, streams) = mpsc::channel(names.len());
    let mut inboxes = Vec::new();
    for (channel, name) in names.iter().enumerate() {
        let (stream, inbox) = Stream::local(name, channel as u32 + 1, out.clone());
        inboxes.push(Some(inbox));
        let _ = streams_tx.send(stream).await;
    }
    // Writes, in order: the first writable channel announced with an empty message, then
    // data prefixed with its channel, and the final close. (The server sends no v5 close
    // signals: the kubelet's does not, and clients take the end of the connection as the
    // end of every channel.)
    tokio::spawn(async move {
        if sink.send(Message::binary(vec![first])).await.is_err() {
            return;
        }
        while let Some(item) = out_rx.recv().await {
            let msg = match item {
                Some(Frame::Data { id, data, .. }) if !data.is_empty() => {
                    let mut m = Vec::with_capacity(data.len() + 1);
                    m.push((id - 1) as u8);
                    m.extend_from_slice(&data);
                    Message::binary(m)
                }
                Some(_) => continue,
                None => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            };
            if sink.send(msg).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            let data = match msg {
                Message::Binary(d) => d,
                Message::Close(_) => break,
                _ => continue,
            };
            match data[..] {
                [CLOSE_CHANNEL, ch] if close_signal => {
                    if let Some(slot) = inboxes.get_mut(ch as usize) {
                        *slot = None;
                    }
                }
                [ch, ..] => {
                    let payload = data.slice(1..);
                    let Some(slot) = inboxes.get_mut(ch as usize) else {
                        continue;
                    };
                    // A reader that stopped reading loses its channel's input, not the
                    // session.
                    if slot.as_ref().is_some_and(|inbox| !inbox.deliver(payload)) {
                        *slot = None;
                    }
                }
                [] => {}
            }
        }
        let _ = gone_tx.send(true);
    });
    Session::local(streams, out, gone)
}
