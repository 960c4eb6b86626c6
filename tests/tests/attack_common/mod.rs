//! Shared code of the attack tests (`attack_*.rs`): raw TCP connections an
//! attacker would open, and how to tell whether the server closed them.

#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a raw connection ended, from the client's side.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// The server closed it (EOF or reset) after sending these bytes.
    Closed(Vec<u8>),
    /// Still open when we stopped waiting.
    Open,
}

/// Opens a TCP connection to `127.0.0.1:port`.
pub async fn tcp(port: u16) -> TcpStream {
    chat_tests::within(
        chat_tests::TIMEOUT,
        "TCP connect",
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to {port}: {e}"))
}

/// Reads until the server closes the connection, at most `bound`.
pub async fn fate(s: &mut TcpStream, bound: Duration) -> Fate {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Fate::Open,
            Ok(Ok(0)) | Ok(Err(_)) => return Fate::Closed(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `bytes` one at a time, `gap` apart, until the server closes the
/// connection or `bound` passes; true when the server closed it.
pub async fn dribble(s: &mut TcpStream, bytes: &[u8], gap: Duration, bound: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    let mut buf = [0u8; 1024];
    for b in bytes.iter().cycle() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        if s.write_all(&[*b]).await.is_err() {
            return true;
        }
        // A read that ends the connection, or a gap of silence.
        match tokio::time::timeout(gap, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    false
}

/// Headers that never end: a slowloris sends them a byte at a time.
pub const ENDLESS_HEADERS: &[u8] = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A one-shot `GET` over a fresh connection; the raw answer, or `None` when
/// none came within `bound` (or the connection was refused).
pub async fn raw_get(port: u16, path: &str, key: Option<&str>, bound: Duration) -> Option<String> {
    let fut = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let key = key
            .map(|k| format!("X-API-Key: {k}\r\n"))
            .unwrap_or_default();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{key}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(bound, fut).await.ok().flatten()
}

/// Sets the soft and hard open-file limits of process `pid`.
pub fn set_nofile(pid: i32, limit: u64) {
    let lim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit reads `lim` and writes nothing (old limit pointer null).
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit({pid}): {}", std::io::Error::last_os_error());
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to a room with extra request headers; the HTTP status
/// when the server refuses the upgrade.
pub async fn ws_with(port: u16, query: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
    let mut req = format!("ws://127.0.0.1:{port}/?{query}")
        .into_client_request()
        .expect("a valid URL");
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).expect("a valid header name"),
            HeaderValue::from_str(v).expect("a valid header value"),
        );
    }
    match chat_tests::within(
        chat_tests::TIMEOUT,
        "WebSocket handshake",
        tokio_tungstenite::connect_async(req),
    )
    .await
    {
        Ok((ws, _)) => Ok(ws),
        Err(Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("WebSocket handshake: {e}"),
    }
}

/// The first thing a joining client gets: a JSON frame or a close code.
#[derive(Debug)]
pub enum First {
    Json(serde_json::Value),
    Close(u16, String),
}

pub async fn first(ws: &mut Ws) -> First {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let m = chat_tests::within(chat_tests::TIMEOUT, "a first frame", ws.next()).await;
        match m {
            Some(Ok(Message::Text(t))) => {
                return First::Json(serde_json::from_str(&t).expect("JSON frame"));
            }
            Some(Ok(Message::Close(Some(f)))) => {
                return First::Close(f.code.into(), f.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                return First::Close(0, String::new());
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Joins and returns the close code the server answered with (0: it let
/// the client in with a `welcome`).
pub async fn join_code(port: u16, query: &str, headers: &[(&str, &str)]) -> (u16, Option<Ws>) {
    let mut ws = ws_with(port, query, headers)
        .await
        .unwrap_or_else(|s| panic!("upgrade refused with {s}"));
    match first(&mut ws).await {
        First::Json(v) if v["type"] == "welcome" => (0, Some(ws)),
        First::Json(v) => panic!("first frame: {v}"),
        First::Close(code, _) => (code, None),
    }
}

/// A well-behaved client in the attacked room, and what it had stored
/// before the attack: after the attack it must still chat, the room's
/// worker must be the same process, the master must answer, and the
/// message must still be in the room's history.
pub struct Witness {
    pub client: chat_tests::Client,
    /// The seq of the message acked before the attack.
    pub seq: u64,
    pub text: String,
    /// The room worker's pid before the attack.
    pub pid: i32,
    pub room: String,
    pub port: u16,
    /// How a newcomer joins this room (`name=…` or `token=…`).
    pub newcomer_query: String,
}

impl Witness {
    /// Joins `room` with `query` (`name=…` or `token=…`) and gets a message
    /// acked. `newcomer_query` is how a later check joins.
    pub async fn new(
        s: &chat_tests::Server,
        room: &str,
        port: u16,
        query: &str,
        newcomer_query: &str,
    ) -> Witness {
        let mut client = chat_tests::Client::join(port, query).await;
        let text = format!("before the attack {}", chat_tests::random_string(8));
        let seq = client.say_acked(&text).await;
        Witness {
            client,
            seq,
            text,
            pid: s.room_pid(room).await,
            room: room.to_owned(),
            port,
            newcomer_query: newcomer_query.to_owned(),
        }
    }

    /// A guest witness in a room that lets guests in.
    pub async fn guest(s: &chat_tests::Server, room: &str, port: u16) -> Witness {
        Witness::new(s, room, port, "name=witness", "name=newcomer").await
    }

    /// Asserts that the attack changed nothing for others: the same worker,
    /// the master's /health answers 200, the witness still chats (a message
    /// acked after the attack), and a newcomer sees the message stored
    /// before it in the welcome's history.
    #[track_caller]
    pub fn survived<'a>(&'a mut self, s: &'a chat_tests::Server) -> impl Future<Output = ()> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let health = s
                .request(
                    reqwest::Method::GET,
                    &s.api_url("/api/v1/health"),
                    None,
                    None,
                )
                .await;
            assert_eq!(health.status, 200, "{caller}: /health: {}", health.text);
            assert_eq!(
                s.room_pid(&self.room).await,
                self.pid,
                "{caller}: the room's worker changed (it died and was restarted)"
            );
            let after = self.client.say_acked("after the attack").await;
            assert!(
                after > self.seq,
                "{caller}: ack seq {after} after the attack, {} before",
                self.seq
            );
            let newcomer = chat_tests::Client::join(self.port, &self.newcomer_query).await;
            let history = newcomer.welcome["history"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                history
                    .iter()
                    .any(|m| m["seq"] == self.seq && m["text"] == self.text.as_str()),
                "{caller}: the message acked before the attack is not in the history: {history:?}"
            );
        }
    }
}
