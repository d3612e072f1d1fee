//! A server-side SPDY session over an upgraded HTTP connection: the peer opens streams
//! (each is answered at once, as the kubelet's server does), this side reads and writes
//! their data. One task reads frames, one writes them in order. Incoming data waits per
//! stream up to a byte limit; a stream whose reader falls that far behind is reset, so
//! one stalled stream never stops the session from reading (and noticing the peer leave).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::spdy::{self, Frame, HeaderDecoder, HeaderEncoder, Headers};

/// Frames waiting to be written; `None` is "send GOAWAY and close".
pub(super) type Outbox = mpsc::Sender<Option<Frame>>;

/// Incoming bytes a stream may have waiting for its reader.
const MAX_BUFFERED: usize = 4 << 20;
/// Streams a session may have open at once (an exec needs 5; each forwarded connection 2).
const MAX_STREAMS: usize = 256;
/// RST_STREAM status: refused (too many streams).
const REFUSED_STREAM: u32 = 3;
/// RST_STREAM status: the receiver's buffer is full.
const FLOW_CONTROL_ERROR: u32 = 7;

/// A peer-opened stream's incoming half.
pub struct StreamReader {
    rx: mpsc::UnboundedReceiver<Bytes>,
    buffered: Arc<AtomicUsize>,
}

impl StreamReader {
    /// The next chunk; `None` once the peer half-closed or reset the stream.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let chunk = self.rx.recv().await?;
        self.buffered.fetch_sub(chunk.len(), Ordering::Relaxed);
        Some(chunk)
    }
}

/// The session's end of a stream's incoming half.
pub(super) struct Inbox {
    tx: mpsc::UnboundedSender<Bytes>,
    buffered: Arc<AtomicUsize>,
}

impl Inbox {
    /// Queues `data` for the stream's reader; false when the reader is gone or has
    /// [`MAX_BUFFERED`] bytes waiting already (it stopped reading).
    pub(super) fn deliver(&self, data: Bytes) -> bool {
        let len = data.len();
        if self.buffered.load(Ordering::Relaxed) + len > MAX_BUFFERED {
            return false;
        }
        self.buffered.fetch_add(len, Ordering::Relaxed);
        len == 0 || self.tx.send(data).is_ok()
    }

    fn closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A new stream (incoming half, outgoing half) and the inbox that feeds it.
fn stream_pair(id: u32, headers: Headers, out: Outbox) -> (Stream, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let buffered = Arc::new(AtomicUsize::new(0));
    let stream = Stream {
        headers,
        reader: StreamReader {
            rx,
            buffered: buffered.clone(),
        },
        writer: StreamWriter { id, out },
    };
    (stream, Inbox { tx, buffered })
}

/// A stream's outgoing half.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: Outbox,
}

/// The connection is gone.
#[derive(Debug)]
pub struct Closed;

impl StreamWriter {
    /// Sends `data` (in frames of at most 32 KiB).
    pub async fn write(&self, data: &[u8]) -> Result<(), Closed> {
        for chunk in data.chunks(spdy::MAX_DATA) {
            self.frame(Frame::Data {
                id: self.id,
                data: Bytes::copy_from_slice(chunk),
                fin: false,
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes the stream: this side sends nothing more.
    pub async fn close(&self) {
        let _ = self
            .frame(Frame::Data {
                id: self.id,
                data: Bytes::new(),
                fin: true,
            })
            .await;
    }

    async fn frame(&self, f: Frame) -> Result<(), Closed> {
        self.out.send(Some(f)).await.map_err(|_| Closed)
    }
}

/// A stream the peer opened.
pub struct Stream {
    /// The stream's headers (lower-case names).
    pub headers: Headers,
    /// Incoming data.
    pub reader: StreamReader,
    /// Outgoing data.
    pub writer: StreamWriter,
}

impl Stream {
    /// A stream of a session whose transport is not SPDY (websocket channels): stream type
    /// `kind`, frames for id `id` on `out`.
    pub(super) fn local(kind: &str, id: u32, out: Outbox) -> (Stream, Inbox) {
        stream_pair(id, vec![("streamtype".into(), kind.into())], out)
    }

    /// The stream id.
    pub fn id(&self) -> u32 {
        self.writer.id
    }

    /// Header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        spdy::header(&self.headers, name)
    }
}

/// A SPDY session: the streams the peer opens, in order.
pub struct Session {
    streams: mpsc::Receiver<Stream>,
    out: Outbox,
    gone: watch::Receiver<bool>,
}

impl Session {
    /// Starts reading and writing frames on `io`.
    pub fn start<IO>(io: IO) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel(64);
        let out_for_reader = out.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(write_frames(wr, out_rx, stop_tx));
        let (streams_tx, streams) = mpsc::channel(16);
        let (gone_tx, gone) = watch::channel(false);
        tokio::spawn(async move {
            read_frames(rd, out_for_reader, streams_tx, stop_rx).await;
            let _ = gone_tx.send(true);
        });
        Session { streams, out, gone }
    }

    /// A session over another transport: its `streams`, the frames it writes on `out`
    /// (`Data` and `None` for the end), and `gone` becoming true when the peer leaves.
    pub(super) fn local(
        streams: mpsc::Receiver<Stream>,
        out: Outbox,
        gone: watch::Receiver<bool>,
    ) -> Session {
        Session { streams, out, gone }
    }

    /// The next stream the peer opens; `None` when the connection ended.
    pub async fn next_stream(&mut self) -> Option<Stream> {
        self.streams.recv().await
    }

    /// Becomes true when the peer is gone (its connection ended or it sent GOAWAY).
    pub fn gone(&self) -> watch::Receiver<bool> {
        self.gone.clone()
    }

    /// A handle that ends the session.
    pub fn closer(&self) -> Closer {
        Closer {
            out: self.out.clone(),
        }
    }
}

/// Ends a session.
#[derive(Clone)]
pub struct Closer {
    out: Outbox,
}

impl Closer {
    /// Sends GOAWAY after everything queued and closes the connection.
    pub async fn close(&self) {
        let _ = self.out.send(None).await;
    }
}

async fn write_frames<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Option<Frame>>,
    stop: watch::Sender<bool>,
) {
    let mut enc = HeaderEncoder::default();
    let mut last_seen = 0;
    while let Some(item) = rx.recv().await {
        let frame = match item {
            Some(f) => f,
            None => Frame::GoAway {
                last_good: last_seen,
                status: 0,
            },
        };
        if let Frame::SynReply { id, .. } = &frame {
            last_seen = *id;
        }
        let goaway = matches!(frame, Frame::GoAway { .. });
        let bytes = spdy::encode_frame(&frame, &mut enc);
        if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() || goaway {
            break;
        }
    }
    let _ = wr.shutdown().await;
    let _ = stop.send(true);
}

async fn read_frames<R: AsyncRead + Unpin>(
    mut rd: R,
    out: Outbox,
    streams: mpsc::Sender<Stream>,
    mut stop: watch::Receiver<bool>,
) {
    let mut dec = HeaderDecoder::default();
    let mut open: HashMap<u32, Inbox> = HashMap::new();
    let mut last_id = 0u32;
    loop {
        let frame = tokio::select! {
            f = spdy::read_frame(&mut rd, &mut dec) => f,
            _ = stop.wait_for(|s| *s) => break,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(spdy::SpdyError::Protocol(e)) => {
                eprintln!("orbit cri: streaming: {e}");
                break;
            }
            Err(spdy::SpdyError::Io(_)) => break,
        };
        match frame {
            Frame::SynStream { id, headers, fin } => {
                // Client streams are odd and increasing.
                if id % 2 == 0 || id <= last_id {
                    let _ = out
                        .send(Some(Frame::RstStream {
                            id,
                            status: spdy::PROTOCOL_ERROR,
                        }))
                        .await;
                    continue;
                }
                last_id = id;
                open.retain(|_, inbox| !inbox.closed());
                if open.len() >= MAX_STREAMS {
                    let _ = out
                        .send(Some(Frame::RstStream {
                            id,
                            status: REFUSED_STREAM,
                        }))
                        .await;
                    continue;
                }
                let (stream, inbox) = stream_pair(id, headers, out.clone());
                if !fin {
                    open.insert(id, inbox);
                }
                if out
                    .send(Some(Frame::SynReply {
                        id,
                        headers: vec![],
                        fin: false,
                    }))
                    .await
                    .is_err()
                {
                    break;
                }
                // Nobody takes streams any more: the exchange is over; refuse politely.
                if streams.send(stream).await.is_err() {
                    open.remove(&id);
                    let _ = out
                        .send(Some(Frame::RstStream {
                            id,
                            status: spdy::CANCEL,
                        }))
                        .await;
                }
            }
            Frame::Data { id, data, fin } => {
                if let Some(inbox) = open.get(&id) {
                    if !inbox.deliver(data) {
                        // Its reader stopped reading (or is gone): drop the stream, not
                        // the session.
                        open.remove(&id);
                        let _ = out
                            .send(Some(Frame::RstStream {
                                id,
                                status: FLOW_CONTROL_ERROR,
                            }))
                            .await;
                        continue;
                    }
                }
                if fin {
                    open.remove(&id);
                }
            }
            Frame::RstStream { id, .. } => {
                open.remove(&id);
            }
            Frame::Headers { id, fin: true, .. } => {
                open.remove(&id);
            }
            Frame::Ping(id) => {
                if id % 2 == 1 && out.send(Some(Frame::Ping(id))).await.is_err() {
                    break;
                }
            }
            Frame::GoAway { .. } => break,
            Frame::SynReply { .. } | Frame::Headers { .. } | Frame::Ignored => {}
        }
    }
}
