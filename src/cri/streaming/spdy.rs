//! SPDY/3.1 framing, as Kubernetes speaks it (the moby/spdystream library behind the
//! kubelet, kubectl and crictl): control and data frames, and header blocks compressed
//! with one zlib stream per direction primed with the SPDY/3 dictionary.
//!
//! Written by hand: no maintained Rust crate implements the server side of SPDY/3.1 (the
//! one crate found, `spdy-mux`, is a client multiplexer over WebSocket transports). Only
//! what spdystream uses is here: SETTINGS and WINDOW_UPDATE are read and ignored, as
//! spdystream does (it has no flow control).

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The SPDY/3 header compression dictionary (from the SPDY/3 specification).
const DICTIONARY: &[u8] = include_bytes!("spdy3-header-dictionary.bin");

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;
/// A decompressed header block larger than this is refused (a zlib bomb otherwise).
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// At most this many header values per block (NUL-separated values count one each).
const MAX_HEADER_VALUES: usize = 100;
/// A frame longer than this is refused: Kubernetes clients send at most 32 KiB of data per
/// frame, and a peer's 16 MiB frames would each be held in memory.
const MAX_FRAME: usize = 1 << 20;
/// The largest data frame this side writes.
pub const MAX_DATA: usize = 32 * 1024;

/// RST_STREAM status: protocol error.
pub const PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status: the stream was cancelled.
pub const CANCEL: u32 = 5;

/// Header names (lower case, as on the wire) and values.
pub type Headers = Vec<(String, String)>;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A stream opened by the peer.
    SynStream {
        id: u32,
        headers: Headers,
        fin: bool,
    },
    /// The answer to a SYN_STREAM.
    SynReply {
        id: u32,
        headers: Headers,
        fin: bool,
    },
    /// More headers on a stream.
    Headers {
        id: u32,
        headers: Headers,
        fin: bool,
    },
    /// Stream data; `fin` half-closes the sender's side.
    Data { id: u32, data: Bytes, fin: bool },
    /// A stream ended abnormally.
    RstStream { id: u32, status: u32 },
    /// A ping (answered by echoing it).
    Ping(u32),
    /// The peer opens no more streams.
    GoAway { last_good: u32, status: u32 },
    /// SETTINGS, WINDOW_UPDATE, NOOP and unknown control frames: ignored.
    Ignored,
}

/// What can go wrong reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
}

fn protocol(msg: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(msg.into())
}

/// Inflates the peer's header blocks (one zlib stream for the whole connection).
pub struct HeaderDecoder {
    z: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        HeaderDecoder {
            z: Decompress::new(true),
        }
    }
}

impl HeaderDecoder {
    /// Decodes one compressed header block.
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let mut input = block;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
            let before = self.z.total_in();
            let r = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.z.total_in() - before) as usize..];
            match r {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| protocol(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(protocol(format!("bad compressed headers: {e}"))),
                Ok(flate2::Status::StreamEnd) => break,
                Ok(_) if input.is_empty() && out.len() < out.capacity() => break,
                Ok(_) => {}
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(protocol("a header block is larger than 64 KiB"));
            }
        }
        parse_block(&out)
    }
}

/// Deflates this side's header blocks.
pub struct HeaderEncoder {
    z: Compress,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(DICTIONARY)
            .expect("a fresh deflate stream takes a dictionary");
        HeaderEncoder { z }
    }
}

impl HeaderEncoder {
    /// Encodes and compresses one header block.
    pub fn encode(&mut self, headers: &Headers) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            plain.extend_from_slice(&(k.len() as u32).to_be_bytes());
            plain.extend_from_slice(k.to_ascii_lowercase().as_bytes());
            plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity() + 64);
            }
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("deflate into a growing buffer");
            input = &input[(self.z.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], SpdyError> {
    if b.len() < n {
        return Err(protocol("a header block ends early"));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn take_u32(b: &mut &[u8]) -> Result<u32, SpdyError> {
    let s = take(b, 4)?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn parse_block(mut b: &[u8]) -> Result<Headers, SpdyError> {
    let count = take_u32(&mut b)?;
    let mut headers = Vec::new();
    for _ in 0..count {
        let n = take_u32(&mut b)? as usize;
        let name = String::from_utf8_lossy(take(&mut b, n)?).to_ascii_lowercase();
        let n = take_u32(&mut b)? as usize;
        let value = String::from_utf8_lossy(take(&mut b, n)?).into_owned();
        // Several values of one name are separated by NUL.
        for v in value.split('\0') {
            if headers.len() == MAX_HEADER_VALUES {
                return Err(protocol("more than 100 header values"));
            }
            headers.push((name.clone(), v.to_string()));
        }
    }
    Ok(headers)
}

/// The first value of header `name` (lower case).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Reads the next frame; `None` at a clean end of the connection.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    headers: &mut HeaderDecoder,
) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME {
        return Err(protocol(format!("a frame of {len} bytes (at most 1 MiB)")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    let fin = flags & FLAG_FIN != 0;
    if word & 0x8000_0000 == 0 {
        return Ok(Some(Frame::Data {
            id: word & 0x7fff_ffff,
            data: Bytes::from(payload),
            fin,
        }));
    }
    let version = ((word >> 16) & 0x7fff) as u16;
    if version != VERSION {
        return Err(protocol(format!(
            "SPDY version {version} (only 3 is spoken)"
        )));
    }
    let mut p = &payload[..];
    let frame = match (word & 0xffff) as u16 {
        kind @ (SYN_STREAM | SYN_REPLY | HEADERS) => {
            let id = take_u32(&mut p)? & 0x7fff_ffff;
            if kind == SYN_STREAM {
                take(&mut p, 6)?; // associated stream, priority, slot
            }
            let headers = headers.decode(p)?;
            match kind {
                SYN_STREAM => Frame::SynStream { id, headers, fin },
                SYN_REPLY => Frame::SynReply { id, headers, fin },
                _ => Frame::Headers { id, headers, fin },
            }
        }
        RST_STREAM => Frame::RstStream {
            id: take_u32(&mut p)? & 0x7fff_ffff,
            status: take_u32(&mut p)?,
        },
        PING => Frame::Ping(take_u32(&mut p)?),
        GOAWAY => Frame::GoAway {
            last_good: take_u32(&mut p)? & 0x7fff_ffff,
            status: take_u32(&mut p).unwrap_or(0),
        },
        _ => Frame::Ignored,
    };
    Ok(Some(frame))
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&((u32::from(flags) << 24) | payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Serializes a frame (header blocks through `headers`, which must see every block in
/// the order they are sent).
pub fn encode_frame(frame: &Frame, headers: &mut HeaderEncoder) -> Vec<u8> {
    let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
    match frame {
        Frame::Data { id, data, fin } => {
            let mut out = Vec::with_capacity(8 + data.len());
            out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(
                &((u32::from(fin_flag(*fin)) << 24) | data.len() as u32).to_be_bytes(),
            );
            out.extend_from_slice(data);
            out
        }
        Frame::SynStream {
            id,
            headers: h,
            fin,
        }
        | Frame::SynReply {
            id,
            headers: h,
            fin,
        }
        | Frame::Headers {
            id,
            headers: h,
            fin,
        } => {
            let kind = match frame {
                Frame::SynStream { .. } => SYN_STREAM,
                Frame::SynReply { .. } => SYN_REPLY,
                _ => HEADERS,
            };
            let mut p = id.to_be_bytes().to_vec();
            if kind == SYN_STREAM {
                p.extend_from_slice(&[0; 6]); // associated stream, priority, slot
            }
            p.extend(headers.encode(h));
            control(kind, fin_flag(*fin), &p)
        }
        Frame::RstStream { id, status } => {
            let mut p = id.to_be_bytes().to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(RST_STREAM, 0, &p)
        }
        Frame::Ping(id) => control(PING, 0, &id.to_be_bytes()),
        Frame::GoAway { last_good, status } => {
            let mut p = last_good.to_be_bytes().to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(GOAWAY, 0, &p)
        }
        Frame::Ignored => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn frames_survive_a_round_trip_with_one_compression_context() {
        let mut enc = HeaderEncoder::default();
        let frames = vec![
            Frame::SynStream {
                id: 1,
                headers: h(&[("streamtype", "error")]),
                fin: false,
            },
            Frame::SynStream {
                id: 3,
                headers: h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
                fin: true,
            },
            Frame::SynReply {
                id: 3,
                headers: vec![],
                fin: false,
            },
            Frame::Data {
                id: 3,
                data: Bytes::from_static(b"hello"),
                fin: true,
            },
            Frame::RstStream { id: 5, status: 5 },
            Frame::Ping(7),
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
        ];
        let wire: Vec<u8> = frames
            .iter()
            .flat_map(|f| encode_frame(f, &mut enc))
            .collect();
        let mut dec = HeaderDecoder::default();
        let mut r = &wire[..];
        for want in &frames {
            let got = read_frame(&mut r, &mut dec).await.unwrap().unwrap();
            assert_eq!(&got, want);
        }
        assert_eq!(read_frame(&mut r, &mut dec).await.unwrap(), None);
    }

    #[test]
    fn the_dictionary_is_the_spdy3_one() {
        // Its Adler-32 is what a zlib stream primed with it announces (FDICT).
        let mut a: (u32, u32) = (1, 0);
        for b in DICTIONARY {
            a.0 = (a.0 + u32::from(*b)) % 65521;
            a.1 = (a.1 + a.0) % 65521;
        }
        assert_eq!((a.1 << 16) | a.0, 3_821_447_106);
        assert_eq!(DICTIONARY.len(), 1423);
    }

    #[test]
    fn multiple_values_are_split_and_a_short_block_is_an_error() {
        let mut enc = HeaderEncoder::default();
        let block = enc.encode(&h(&[("x-stream-protocol-version", "a\0b")]));
        let mut dec = HeaderDecoder::default();
        assert_eq!(
            dec.decode(&block).unwrap(),
            h(&[
                ("x-stream-protocol-version", "a"),
                ("x-stream-protocol-version", "b")
            ])
        );
        assert!(parse_block(&[0, 0, 0, 2, 0, 0, 0, 9, b'a']).is_err());
        // One name with a million NUL-separated values: refused, not multiplied.
        let bomb = enc.encode(&h(&[("x", &"\0".repeat(60_000))]));
        assert!(dec.decode(&bomb).is_err());
    }

    #[tokio::test]
    async fn garbage_is_a_protocol_error_not_a_panic() {
        let mut dec = HeaderDecoder::default();
        // A SYN_STREAM whose header block is not zlib.
        let wire = control(SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        let mut r = &wire[..];
        assert!(matches!(
            read_frame(&mut r, &mut dec).await,
            Err(SpdyError::Protocol(_))
        ));
        // Version 2.
        let mut wire = control(PING, 0, &[0, 0, 0, 1]);
        wire[1] = 2;
        let mut r = &wire[..];
        assert!(read_frame(&mut r, &mut HeaderDecoder::default())
            .await
            .is_err());
    }
}
