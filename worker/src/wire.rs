//! The WebSocket layer of a room's connections, built for fan-out.
//!
//! A server frame is encoded once ([`Encoded`]: the frame header and the
//! JSON payload in one shared buffer) and the same bytes are written to
//! every recipient's socket (vectored writes of the shared buffers): no
//! per-recipient copy or re-framing. Server frames are unmasked, so a
//! frame is the same for every connection.
//!
//! The handshake is done here ([`Upgrade`]); client frames are read by
//! tungstenite's protocol code (masking, fragments, UTF-8, size limits,
//! the close handshake) over the socket's read half. The few frames that
//! code writes itself (pongs, the reply to a client's close) go through
//! the connection's outbound queue ([`ReadIo`]), so they never cut into a
//! frame the writer is sending.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use axum::response::Response;
use bytes::{Buf, Bytes};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::outbound::Outbound;

/// The upgraded connection.
pub type Io = TokioIo<hyper::upgrade::Upgraded>;
/// The client frames of a connection.
pub type Reader = WebSocketStream<ReadIo>;
/// The raw write side of a connection.
pub type Writer = WriteHalf<Io>;

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
/// Longest frame header a server writes (no mask).
const MAX_HEADER: usize = 10;

/// A server text frame, encoded once: header and payload in one shared
/// buffer that every recipient's writer sends as it is.
#[derive(Clone, PartialEq, Eq)]
pub struct Encoded {
    frame: Bytes,
    /// Where the payload starts in `frame`.
    start: usize,
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Encoded").field(&self.as_str()).finish()
    }
}

impl Encoded {
    /// Serializes `msg` as JSON straight behind room for its header.
    pub fn json<T: Serialize>(msg: &T) -> Result<Self, serde_json::Error> {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&[0; MAX_HEADER]);
        serde_json::to_writer(&mut buf, msg)?;
        Ok(Self::framed(buf))
    }

    /// A text frame of `text`.
    pub fn text(text: &str) -> Self {
        let mut buf = Vec::with_capacity(MAX_HEADER + text.len());
        buf.extend_from_slice(&[0; MAX_HEADER]);
        buf.extend_from_slice(text.as_bytes());
        Self::framed(buf)
    }

    /// `buf` is `MAX_HEADER` spare bytes and the payload; the header is
    /// written right before the payload.
    fn framed(mut buf: Vec<u8>) -> Self {
        let len = buf.len() - MAX_HEADER;
        let mut head = [0u8; MAX_HEADER];
        let n = header(&mut head, OP_TEXT, len);
        let at = MAX_HEADER - n;
        buf[at..MAX_HEADER].copy_from_slice(&head[..n]);
        Self {
            frame: Bytes::from(buf).slice(at..),
            start: n,
        }
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        self.frame.len() - self.start
    }

    /// The payload (always UTF-8: it was made from a `str` or JSON).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.frame[self.start..]).unwrap_or("")
    }

    /// The whole frame, header included.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }
}

impl From<String> for Encoded {
    fn from(s: String) -> Self {
        Self::text(&s)
    }
}

impl From<&str> for Encoded {
    fn from(s: &str) -> Self {
        Self::text(s)
    }
}

/// Writes the header of an unmasked, final frame; its length.
fn header(out: &mut [u8; MAX_HEADER], opcode: u8, len: usize) -> usize {
    out[0] = 0x80 | opcode;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A close frame with `code` and `reason` (cut to what a close frame holds
/// by the caller).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut head = [0u8; MAX_HEADER];
    let n = header(&mut head, OP_CLOSE, 2 + reason.len());
    let mut v = Vec::with_capacity(n + 2 + reason.len());
    v.extend_from_slice(&head[..n]);
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(reason.as_bytes());
    Bytes::from(v)
}

/// An empty ping frame.
pub fn ping_frame() -> Bytes {
    Bytes::from_static(&[0x80 | OP_PING, 0])
}

/// Whether a raw frame is a close frame.
pub fn is_close(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 0x0f == OP_CLOSE)
}

/// A WebSocket upgrade request (HTTP/1.1): what the handshake needs.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
    config: WebSocketConfig,
}

/// The request is not a WebSocket upgrade.
#[derive(Debug)]
pub struct NotUpgrade;

impl axum::response::IntoResponse for NotUpgrade {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, "not a WebSocket upgrade").into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.version > Version::HTTP_11
            || parts.method != Method::GET
            || !header_contains(&parts.headers, header::CONNECTION, "upgrade")
            || !header_eq(&parts.headers, header::UPGRADE, "websocket")
            || !header_eq(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13")
        {
            return Err(NotUpgrade);
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(NotUpgrade)?
            .clone();
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(NotUpgrade)?;
        Ok(Self {
            key,
            on_upgrade,
            config: WebSocketConfig::default(),
        })
    }
}

fn header_eq(headers: &HeaderMap, key: header::HeaderName, value: &str) -> bool {
    headers
        .get(&key)
        .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

fn header_contains(headers: &HeaderMap, key: header::HeaderName, value: &str) -> bool {
    headers
        .get(&key)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.split(',').any(|p| p.trim().eq_ignore_ascii_case(value)))
}

/// A connection after the handshake: its read side (client frames) and its
/// raw write side.
pub struct Socket {
    io: Io,
}

impl Socket {
    /// Splits the connection: the reader of client frames (its own writes
    /// go to `out`'s queue) and the raw writer.
    pub async fn split(self, config: WebSocketConfig, out: Arc<Outbound>) -> (Reader, Writer) {
        let (read, write) = tokio::io::split(self.io);
        let io = ReadIo { read, out };
        let reader = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        (reader, write)
    }
}

impl Upgrade {
    /// Limits of the client frames read.
    pub fn limits(mut self, max_frame: usize, read_buffer: usize) -> Self {
        self.config = WebSocketConfig::default()
            .max_message_size(Some(max_frame))
            .max_frame_size(Some(max_frame))
            .read_buffer_size(read_buffer)
            // Only control frames go through tungstenite's writer.
            .write_buffer_size(0);
        self
    }

    /// Answers the handshake; `callback` gets the connection once upgraded.
    pub fn on_upgrade<C, F>(self, callback: C) -> Response
    where
        C: FnOnce(Socket, WebSocketConfig) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            key,
            on_upgrade,
            config,
        } = self;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    callback(
                        Socket {
                            io: TokioIo::new(upgraded),
                        },
                        config,
                    )
                    .await
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// The read half of a connection as tungstenite sees it: reads from the
/// socket; whatever it writes (pongs, the reply to a close) is queued on
/// the connection's outbound queue as raw frames. tungstenite writes whole
/// frames from its own buffer, and every write here takes all of it, so
/// each queued piece is whole frames.
pub struct ReadIo {
    read: ReadHalf<Io>,
    out: Arc<Outbound>,
}

impl AsyncRead for ReadIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.out.raw(Bytes::copy_from_slice(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Frames on their way to one socket, the first maybe partly written.
#[derive(Default)]
pub struct Pending {
    frames: std::collections::VecDeque<Bytes>,
    /// Whether the first frame was partly written (it must be finished
    /// before any other frame).
    started: bool,
}

/// Frame slots an empty queue keeps.
const KEEP_FRAMES: usize = 8;

/// Frames handed to one vectored write.
const MAX_IOVECS: usize = 64;

impl Pending {
    pub fn push(&mut self, frame: Bytes) {
        self.frames.push_back(frame);
    }

    /// Writes every frame (vectored). Cancel-safe: what was written is
    /// gone from the queue, what was not stays.
    pub async fn write(&mut self, w: &mut Writer) -> io::Result<()> {
        while !self.frames.is_empty() {
            let slices: Vec<io::IoSlice<'_>> = self
                .frames
                .iter()
                .take(MAX_IOVECS)
                .map(|b| io::IoSlice::new(b))
                .collect();
            let mut n = w.write_vectored(&slices).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            while n > 0 {
                let Some(front) = self.frames.front_mut() else {
                    break;
                };
                if n >= front.len() {
                    n -= front.len();
                    self.frames.pop_front();
                    self.started = false;
                } else {
                    front.advance(n);
                    self.started = true;
                    n = 0;
                }
            }
        }
        Ok(())
    }

    /// Keeps only the rest of a partly written frame (so a close can
    /// follow it); drops the frames not begun.
    pub fn finish_started_only(&mut self) {
        if self.started {
            self.frames.truncate(1);
        } else {
            self.frames.clear();
        }
    }

    /// Releases the queue's memory past a few frames' worth (kept, so the
    /// usual batch does not allocate).
    pub fn shrink(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > KEEP_FRAMES {
            self.frames = Default::default();
        }
    }
}

/// Flushes and shuts down the write side.
pub async fn shutdown(w: &mut Writer) -> io::Result<()> {
    w.flush().await?;
    w.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_for_every_length_class() {
        for (len, head) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
        ] {
            let e = Encoded::text(&"x".repeat(len));
            assert_eq!(e.len(), len);
            let f = e.frame();
            assert_eq!(f.len(), head + len);
            assert_eq!(f[0], 0x81);
            match head {
                2 => assert_eq!(f[1] as usize, len),
                4 => {
                    assert_eq!(f[1], 126);
                    assert_eq!(u16::from_be_bytes([f[2], f[3]]) as usize, len);
                }
                _ => {
                    assert_eq!(f[1], 127);
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&f[2..10]);
                    assert_eq!(u64::from_be_bytes(b) as usize, len);
                }
            }
        }
    }

    #[test]
    fn json_is_framed_and_readable() {
        let e = Encoded::json(&serde_json::json!({"type":"x","n":1}))
            .unwrap_or_else(|_| Encoded::text(""));
        // Compared as JSON: the key order depends on serde_json's
        // `preserve_order` feature, which the workspace's build unifies.
        let back: serde_json::Value =
            serde_json::from_str(e.as_str()).unwrap_or(serde_json::Value::Null);
        assert_eq!(back, serde_json::json!({"type":"x","n":1}));
        assert_eq!(e.frame()[1] as usize, e.len());
    }

    #[test]
    fn tungstenite_reads_our_frames() {
        use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
        let e = Encoded::text(&"é".repeat(40_000));
        let mut cur = std::io::Cursor::new(e.frame().to_vec());
        let (head, len) = FrameHeader::parse(&mut cur)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no header"));
        assert!(head.is_final);
        assert!(head.mask.is_none());
        assert_eq!(len as usize, e.len());
        let c = close_frame(1008, "slow consumer");
        let mut cur = std::io::Cursor::new(c.to_vec());
        let (head, len) = FrameHeader::parse(&mut cur)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no header"));
        assert!(head.is_final);
        assert_eq!(len, 2 + 13);
        assert!(is_close(&c));
        assert!(!is_close(e.frame()));
    }
}
