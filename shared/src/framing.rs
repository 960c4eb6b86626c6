//! Length-delimited postcard frames over a byte stream.
//!
//! Each frame is a 4-byte big-endian length followed by a postcard body. The
//! length is checked against [`MAX_FRAME`] before anything is allocated.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::ipc::{Hello, IPC_VERSION, MAGIC};

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
}

/// The codec both sides use.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .length_field_length(4)
        .new_codec()
}

/// Reading half of an IPC connection.
pub struct FrameReader<R> {
    inner: FramedRead<R, LengthDelimitedCodec>,
}

/// Writing half of an IPC connection.
pub struct FrameWriter<W> {
    inner: FramedWrite<W, LengthDelimitedCodec>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R) -> Self {
        Self {
            inner: FramedRead::new(r, codec()),
        }
    }

    /// Next raw frame; `None` at a clean end of stream.
    pub async fn next_raw(&mut self) -> Result<Option<bytes::BytesMut>, FrameError> {
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
        self.inner.send(encode(msg)?).await?;
        Ok(())
    }
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
    if version != IPC_VERSION {
        return Err(FrameError::Version {
            peer: version,
            ours: IPC_VERSION,
        });
    }
    decode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{MasterMsg, WorkerMsg};

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

    #[tokio::test]
    async fn oversized_length_is_refused_before_allocating() {
        use tokio::io::AsyncWriteExt;
        let (mut a, b) = tokio::io::duplex(64);
        let mut r = FrameReader::new(b);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(r.next_raw().await.is_err());
    }
}
