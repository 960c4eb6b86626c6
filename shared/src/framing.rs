//! Length-delimited postcard frames over a byte stream.
//!
//! Each frame is a 4-byte big-endian length followed by a postcard body. The
//! length is checked against [`MAX_FRAME`] before anything is allocated.
//!
//! A reader counts the bytes it receives (see [`Activity`]): a peer in the
//! middle of a large frame is alive even though no whole frame arrived yet.
//!
//! Two shapes are frozen across IPC versions (see ARCHITECTURE.md,
//! "Boundaries"), so that peers of different versions can tell each other
//! so: the head of a `Hello` ([`HelloHead`]: magic, version, room name, pid,
//! port) and the master's version notice ([`VersionNotice`]: magic, version),
//! its answer to a `Hello` of another version.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::ipc::{Hello, MAGIC, ipc_version};

/// Largest frame accepted on the IPC socket.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// What can go wrong on an IPC connection.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("undecodable frame: {0}")]
    Decode(postcard::Error),
    #[error("unencodable message: {0}")]
    Encode(postcard::Error),
    #[error("not a chatserver IPC peer (bad magic)")]
    BadMagic,
    #[error("IPC version mismatch: peer speaks {peer}, we speak {ours}")]
    Version { peer: u32, ours: u32 },
    #[error("frame of {0} bytes exceeds the IPC frame limit")]
    TooLarge(usize),
}

/// The codec both sides use.
pub fn codec() -> FrameCodec {
    FrameCodec {
        inner: LengthDelimitedCodec::builder()
            .max_frame_length(MAX_FRAME)
            .length_field_length(4)
            .new_codec(),
        mid_frame: false,
    }
}

/// Length-delimited frames whose end of stream inside a frame is an error.
///
/// The length codec alone takes a stream that ends right after a frame's
/// length (its head consumed, no body byte yet) for a clean end: a peer cut
/// off mid-frame would look like one that closed between frames.
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    /// A frame's head was read and its body is not complete yet.
    mid_frame: bool,
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, std::io::Error> {
        let before = buf.len();
        let frame = self.inner.decode(buf)?;
        match frame {
            Some(_) => self.mid_frame = false,
            None if buf.len() < before => self.mid_frame = true,
            None => {}
        }
        Ok(frame)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, std::io::Error> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() && !self.mid_frame => Ok(None),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the stream ended inside a frame",
            )),
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        self.inner.encode(body, dst)
    }
}

/// When a reader last received bytes, and how many it received in all.
/// Cheap to clone; shared between a reader and whoever watches its liveness.
#[derive(Debug, Clone)]
pub struct Activity {
    inner: Arc<ActivityInner>,
}

#[derive(Debug)]
struct ActivityInner {
    base: Instant,
    /// Milliseconds after `base` of the last byte received.
    last_ms: AtomicU64,
    bytes: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            inner: Arc::new(ActivityInner {
                base: Instant::now(),
                last_ms: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
            }),
        }
    }

    fn record(&self, n: usize) {
        let i = &self.inner;
        let ms = u64::try_from(i.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        i.last_ms.fetch_max(ms, Ordering::AcqRel);
        i.bytes.fetch_add(n as u64, Ordering::AcqRel);
    }

    /// Time since the last byte arrived (since the reader was made, before
    /// any byte).
    pub fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.inner.last_ms.load(Ordering::Acquire));
        self.inner.base.elapsed().saturating_sub(last)
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Acquire)
    }
}

/// A byte stream that records its reads in an [`Activity`].
pub struct Counted<R> {
    inner: R,
    activity: Activity,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.activity.record(n);
        }
        r
    }
}

/// Reading half of an IPC connection.
pub struct FrameReader<R> {
    inner: FramedRead<Counted<R>, FrameCodec>,
}

/// Writing half of an IPC connection.
pub struct FrameWriter<W> {
    inner: FramedWrite<W, FrameCodec>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R) -> Self {
        let counted = Counted {
            inner: r,
            activity: Activity::new(),
        };
        Self {
            inner: FramedRead::new(counted, codec()),
        }
    }

    /// The reader's byte activity (received bytes, time since the last).
    pub fn activity(&self) -> Activity {
        self.inner.get_ref().activity.clone()
    }

    /// Next raw frame; `None` at a clean end of stream.
    pub async fn next_raw(&mut self) -> Result<Option<BytesMut>, FrameError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(r) => Ok(Some(r?)),
        }
    }

    /// Next message; `None` at a clean end of stream.
    pub async fn recv<M: DeserializeOwned>(&mut self) -> Result<Option<M>, FrameError> {
        match self.next_raw().await? {
            None => Ok(None),
            Some(buf) => decode(&buf).map(Some),
        }
    }

    /// Reads the first frame of a connection, checking magic and version
    /// before decoding the rest.
    pub async fn recv_hello(&mut self) -> Result<Option<Hello>, FrameError> {
        match self.next_raw().await? {
            None => Ok(None),
            Some(buf) => decode_hello(&buf).map(Some),
        }
    }
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(w: W) -> Self {
        Self {
            inner: FramedWrite::new(w, codec()),
        }
    }

    /// Encodes and sends one message.
    pub async fn send<M: Serialize>(&mut self, msg: &M) -> Result<(), FrameError> {
        self.send_bytes(encode(msg)?).await
    }

    /// Sends one frame body that is already encoded.
    pub async fn send_bytes(&mut self, body: Bytes) -> Result<(), FrameError> {
        if body.len() > MAX_FRAME {
            return Err(FrameError::TooLarge(body.len()));
        }
        self.inner.send(body).await?;
        Ok(())
    }
}

/// The head of a `Hello`, the same in every IPC version: enough for a
/// master to name the room of a worker that speaks another version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloHead {
    pub magic: [u8; 8],
    pub version: u32,
    pub name: String,
    pub pid: u32,
    pub port: u16,
}

/// The master's answer to a `Hello` of another IPC version, the same in
/// every version: which version the master speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionNotice {
    pub magic: [u8; 8],
    pub version: u32,
}

impl VersionNotice {
    /// Ours.
    pub fn ours() -> Self {
        Self {
            magic: MAGIC,
            version: ipc_version(),
        }
    }
}

/// Decodes the version-independent head of a `Hello` (magic checked).
pub fn decode_hello_head(buf: &[u8]) -> Result<HelloHead, FrameError> {
    let (head, _) = postcard::take_from_bytes::<HelloHead>(buf).map_err(FrameError::Decode)?;
    if head.magic != MAGIC {
        return Err(FrameError::BadMagic);
    }
    Ok(head)
}

/// Decodes a master's version notice: `None` when `buf` is not one.
pub fn decode_version_notice(buf: &[u8]) -> Option<VersionNotice> {
    let notice: VersionNotice = postcard::from_bytes(buf).ok()?;
    (notice.magic == MAGIC).then_some(notice)
}

/// Encodes one message into a frame body.
pub fn encode<M: Serialize>(msg: &M) -> Result<Bytes, FrameError> {
    postcard::to_stdvec(msg)
        .map(Bytes::from)
        .map_err(FrameError::Encode)
}

/// Decodes one frame body.
pub fn decode<M: DeserializeOwned>(buf: &[u8]) -> Result<M, FrameError> {
    postcard::from_bytes(buf).map_err(FrameError::Decode)
}

/// Decodes a `Hello`, checking its magic and version first.
pub fn decode_hello(buf: &[u8]) -> Result<Hello, FrameError> {
    let ((magic, version), _) =
        postcard::take_from_bytes::<([u8; 8], u32)>(buf).map_err(FrameError::Decode)?;
    if magic != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if version != ipc_version() {
        return Err(FrameError::Version {
            peer: version,
            ours: ipc_version(),
        });
    }
    decode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{HelloReply, IPC_VERSION, MasterMsg, WorkerMsg};

    #[tokio::test]
    async fn round_trip_and_garbage() {
        let (a, b) = tokio::io::duplex(1024);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let (mut w, mut r) = (FrameWriter::new(aw), FrameReader::new(br));
        let _keep = (ar, bw);
        let hello = Hello::new("room".into(), 42, 34000);
        w.send(&hello).await.unwrap();
        assert_eq!(r.recv_hello().await.unwrap(), Some(hello));
        w.send(&WorkerMsg::Listening { port: 34000 }).await.unwrap();
        let m: WorkerMsg = r.recv().await.unwrap().unwrap();
        assert_eq!(m, WorkerMsg::Listening { port: 34000 });
        // A frame that is not a MasterMsg fails to decode, without panicking.
        w.send(&u64::MAX).await.unwrap();
        assert!(r.recv::<MasterMsg>().await.is_err());
    }

    #[test]
    fn hello_checks_magic_and_version() {
        let mut h = Hello::new("r".into(), 1, 1);
        h.version = IPC_VERSION + 1;
        let buf = encode(&h).unwrap();
        assert!(matches!(
            decode_hello(&buf),
            Err(FrameError::Version { .. })
        ));
        h.magic = *b"XXXXXXXX";
        let buf = encode(&h).unwrap();
        assert!(matches!(decode_hello(&buf), Err(FrameError::BadMagic)));
        assert!(decode_hello(&[1, 2]).is_err());
    }

    #[test]
    fn hello_head_and_version_notice_survive_a_version_change() {
        let mut h = Hello::new("room".into(), 7, 34001);
        h.version = IPC_VERSION + 5;
        let head = decode_hello_head(&encode(&h).unwrap()).unwrap();
        assert_eq!(
            (head.name.as_str(), head.pid, head.port, head.version),
            ("room", 7, 34001, IPC_VERSION + 5)
        );
        let notice = encode(&VersionNotice::ours()).unwrap();
        assert_eq!(decode_version_notice(&notice), Some(VersionNotice::ours()));
        // A notice is never taken for a reply, nor a reply for a notice.
        assert!(decode::<HelloReply>(&notice).is_err());
        let refused = encode(&HelloReply::Refused { reason: "x".into() }).unwrap();
        assert_eq!(decode_version_notice(&refused), None);
    }

    #[tokio::test]
    async fn activity_counts_bytes_of_an_unfinished_frame() {
        use tokio::io::AsyncWriteExt;
        let (mut a, b) = tokio::io::duplex(1024);
        let mut r = FrameReader::new(b);
        let activity = r.activity();
        // The length of a 100-byte frame and 10 bytes of it: no whole frame.
        a.write_all(&100u32.to_be_bytes()).await.unwrap();
        a.write_all(&[0u8; 10]).await.unwrap();
        let got = tokio::time::timeout(Duration::from_millis(100), r.next_raw()).await;
        assert!(got.is_err(), "no frame is complete yet");
        assert_eq!(activity.bytes(), 14);
    }

    /// Found by the property tests: a stream that ended right after a
    /// frame's length read as a clean end of stream.
    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_an_error() {
        use tokio::io::AsyncWriteExt;
        for sent in [&[0u8, 0, 0, 9][..], &[0, 0, 0, 9, 1, 2], &[0, 0]] {
            let (mut a, b) = tokio::io::duplex(64);
            let mut r = FrameReader::new(b);
            a.write_all(sent).await.unwrap();
            drop(a);
            assert!(r.next_raw().await.is_err(), "{sent:?}");
        }
        // Between frames, the end is clean.
        let (mut a, b) = tokio::io::duplex(64);
        let mut r = FrameReader::new(b);
        a.write_all(&[0, 0, 0, 1, 7]).await.unwrap();
        drop(a);
        assert_eq!(r.next_raw().await.unwrap().as_deref(), Some(&[7u8][..]));
        assert!(r.next_raw().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_allocating() {
        use tokio::io::AsyncWriteExt;
        let (mut a, b) = tokio::io::duplex(64);
        let mut r = FrameReader::new(b);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(r.next_raw().await.is_err());
    }
}
