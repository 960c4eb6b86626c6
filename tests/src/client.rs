//! A WebSocket client of a room.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::TIMEOUT;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a client can observe next.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A text frame, parsed as JSON (`Value::String` with the raw text if it
    /// is not JSON).
    Json(Value),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A close frame (code and reason; `None` without a payload).
    Close(Option<(u16, String)>),
    /// The stream ended without a close frame.
    Ended,
    /// A read error (e.g. a reset).
    Error(String),
    /// Nothing arrived in time.
    Timeout,
}

/// A room client.
pub struct Client {
    ws: Ws,
    /// The `welcome` frame (after [`Client::join`]; `Null` otherwise).
    pub welcome: Value,
    /// Frames skipped by `recv_type` and `expect_close`, in order.
    pub skipped: Vec<Value>,
    /// Set once a close frame or the end of the stream was seen.
    pub closed: bool,
}

fn url(port: u16, query: &str) -> String {
    if query.is_empty() {
        format!("ws://127.0.0.1:{port}/")
    } else {
        format!("ws://127.0.0.1:{port}/?{query}")
    }
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// Connects to `ws://127.0.0.1:{port}/?{query}` (no frame read).
    pub async fn connect(port: u16, query: &str) -> Client {
        let u = url(port, query);
        let (ws, _) = crate::within(
            TIMEOUT,
            "WebSocket connect",
            tokio_tungstenite::connect_async(u.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("connecting to {u}: {e}"));
        Client::from_ws(ws)
    }

    /// Like [`Client::connect`], but with a tiny socket receive buffer, so
    /// that a client that stops reading fills the server's queue quickly.
    pub async fn connect_small_rcvbuf(port: u16, query: &str) -> Client {
        let u = url(port, query);
        let sock = TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let stream = crate::within(
            TIMEOUT,
            "TCP connect",
            sock.connect(([127, 0, 0, 1], port).into()),
        )
        .await
        .unwrap_or_else(|e| panic!("connecting to {u}: {e}"));
        let (ws, _) = crate::within(
            TIMEOUT,
            "WebSocket handshake",
            tokio_tungstenite::client_async(u.clone(), MaybeTlsStream::Plain(stream)),
        )
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake with {u}: {e}"));
        Client::from_ws(ws)
    }

    /// Tries to connect; the error text when the handshake fails.
    pub async fn try_connect(port: u16, query: &str) -> Result<Client, String> {
        let u = url(port, query);
        match tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(u)).await {
            Err(_) => Err("timeout".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok((ws, _))) => Ok(Client::from_ws(ws)),
        }
    }

    fn from_ws(ws: Ws) -> Client {
        Client {
            ws,
            welcome: Value::Null,
            skipped: Vec::new(),
            closed: false,
        }
    }

    /// Connects and reads the `welcome` frame (stored in `self.welcome`).
    pub async fn join(port: u16, query: &str) -> Client {
        let mut c = Client::connect(port, query).await;
        let w = c.recv_json().await;
        assert_eq!(w["type"], "welcome", "first frame after join: {w}");
        c.welcome = w;
        c
    }

    /// Joins as a guest named `name`.
    pub async fn guest(port: u16, name: &str) -> Client {
        Client::join(port, &format!("name={}", enc(name))).await
    }

    /// Joins with a token.
    pub async fn with_token(port: u16, token: &str) -> Client {
        Client::join(port, &format!("token={}", enc(token))).await
    }

    /// This client's user id (from `welcome`).
    pub fn id(&self) -> String {
        self.welcome["you"]["id"]
            .as_str()
            .expect("no welcome.you.id")
            .to_owned()
    }

    /// This client's name (from `welcome`).
    pub fn name(&self) -> String {
        self.welcome["you"]["name"]
            .as_str()
            .expect("no welcome.you.name")
            .to_owned()
    }

    /// The next event (ping and pong frames are skipped), at most `dur`.
    pub async fn next_event(&mut self, dur: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + dur;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Event::Timeout,
                Ok(n) => n,
            };
            return match next {
                None => {
                    self.closed = true;
                    Event::Ended
                }
                Some(Err(e)) => {
                    self.closed = true;
                    Event::Error(e.to_string())
                }
                Some(Ok(Message::Text(t))) => Event::Json(
                    serde_json::from_str(t.as_str()).unwrap_or(Value::String(t.to_string())),
                ),
                Some(Ok(Message::Binary(b))) => Event::Binary(b.to_vec()),
                Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
                Some(Ok(Message::Frame(_))) => continue,
                Some(Ok(Message::Close(f))) => {
                    self.closed = true;
                    Event::Close(f.map(|f| (u16::from(f.code), f.reason.to_string())))
                }
            };
        }
    }

    /// The next text frame, raw (ping/pong skipped), at most 5 s.
    #[track_caller]
    pub fn recv_text(&mut self) -> impl Future<Output = String> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = tokio::time::Instant::now() + TIMEOUT;
            loop {
                match tokio::time::timeout_at(deadline, self.ws.next()).await {
                    Err(_) => panic!("{caller}: no text frame within {TIMEOUT:?}"),
                    Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                    Ok(other) => panic!("{caller}: expected a text frame, got {other:?}"),
                }
            }
        }
    }

    /// The next text frame as JSON, at most 5 s.
    #[track_caller]
    pub fn recv_json(&mut self) -> impl Future<Output = Value> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            match self.next_event(TIMEOUT).await {
                Event::Json(v) => v,
                other => panic!("{caller}: expected a JSON frame, got {other:?}"),
            }
        }
    }

    /// Waits for the next frame of type `kind` (at most 5 s in all); frames
    /// of other types are kept in `self.skipped`.
    #[track_caller]
    pub fn recv_type<'a>(&'a mut self, kind: &'a str) -> impl Future<Output = Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = tokio::time::Instant::now() + TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.next_event(left).await {
                    Event::Json(v) if v["type"] == kind => return v,
                    Event::Json(v) => self.skipped.push(v),
                    other => panic!(
                        "{caller}: waiting for a {kind:?} frame, got {other:?}; skipped so far: {:?}",
                        self.skipped
                    ),
                }
            }
        }
    }

    /// Like `recv_type`, but returns the frames skipped on the way too
    /// (and does not keep them in `self.skipped`).
    #[track_caller]
    pub fn recv_type_collect<'a>(
        &'a mut self,
        kind: &'a str,
    ) -> impl Future<Output = (Value, Vec<Value>)> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let mut skipped = Vec::new();
            let deadline = tokio::time::Instant::now() + TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.next_event(left).await {
                    Event::Json(v) if v["type"] == kind => return (v, skipped),
                    Event::Json(v) => skipped.push(v),
                    other => panic!(
                        "{caller}: waiting for a {kind:?} frame, got {other:?}; skipped: {skipped:?}"
                    ),
                }
            }
        }
    }

    /// Waits for the close frame (at most 5 s); text frames before it are
    /// kept in `self.skipped`. Panics if the stream ends without one.
    #[track_caller]
    pub fn expect_close(&mut self) -> impl Future<Output = (u16, String)> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            match self.expect_close_or_end(TIMEOUT).await {
                Some(cr) => cr,
                None => panic!(
                    "{caller}: the connection ended without a close frame; skipped: {:?}",
                    self.skipped
                ),
            }
        }
    }

    /// Waits for the close frame or the end of the stream (at most `dur`):
    /// `Some((code, reason))` for a close frame (code 1005 without payload),
    /// `None` when the stream ended or failed without one.
    #[track_caller]
    pub fn expect_close_or_end(
        &mut self,
        dur: Duration,
    ) -> impl Future<Output = Option<(u16, String)>> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = tokio::time::Instant::now() + dur;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.next_event(left).await {
                    Event::Json(v) => self.skipped.push(v),
                    Event::Binary(_) => {}
                    Event::Close(Some(cr)) => return Some(cr),
                    Event::Close(None) => return Some((1005, String::new())),
                    Event::Ended | Event::Error(_) => return None,
                    Event::Timeout => panic!(
                        "{caller}: the connection was not closed within {dur:?}; skipped: {:?}",
                        self.skipped
                    ),
                }
            }
        }
    }

    /// Asserts that no text frame arrives within `dur` (and the connection
    /// stays open).
    #[track_caller]
    pub fn expect_silence(&mut self, dur: Duration) -> impl Future<Output = ()> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            match self.next_event(dur).await {
                Event::Timeout => {}
                other => panic!("{caller}: expected silence, got {other:?}"),
            }
        }
    }

    /// Sends a JSON frame.
    pub async fn send_json(&mut self, v: Value) {
        self.send(Message::text(v.to_string())).await;
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, t: &str) {
        self.send(Message::text(t.to_owned())).await;
    }

    /// Sends any frame.
    pub async fn send(&mut self, m: Message) {
        crate::within(TIMEOUT, "sending a frame", self.ws.send(m))
            .await
            .expect("sending a frame");
    }

    /// Sends a frame, returning the error instead of panicking.
    pub async fn try_send(&mut self, m: Message) -> Result<(), String> {
        match tokio::time::timeout(TIMEOUT, self.ws.send(m)).await {
            Err(_) => Err("timeout".into()),
            Ok(r) => r.map_err(|e| e.to_string()),
        }
    }

    /// Queues frames without flushing (errors ignored: the server may close).
    pub async fn feed_many(&mut self, frames: impl IntoIterator<Item = Message>) -> usize {
        let mut n = 0;
        for f in frames {
            match tokio::time::timeout(TIMEOUT, self.ws.feed(f)).await {
                Ok(Ok(())) => n += 1,
                _ => break,
            }
        }
        let _ = tokio::time::timeout(TIMEOUT, self.ws.flush()).await;
        n
    }

    /// `say` with a client id.
    pub async fn say(&mut self, text: &str, client_id: &str) {
        self.send_json(serde_json::json!({"type":"say","text":text,"client_id":client_id}))
            .await;
    }

    /// Says `text` and waits for its `ack`; returns the acked seq.
    #[track_caller]
    pub fn say_acked<'a>(&'a mut self, text: &'a str) -> impl Future<Output = u64> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let cid = crate::random_string(8);
            self.say(text, &cid).await;
            let (ack, skipped) = self.recv_type_collect("ack").await;
            self.skipped.extend(skipped);
            assert_eq!(ack["client_id"], cid.as_str(), "{caller}: ack {ack}");
            ack["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("{caller}: ack without seq: {ack}"))
        }
    }

    /// Round trip: `ping` → `pong`, proving the connection is alive and every
    /// frame queued before it was delivered. Skipped frames are returned.
    #[track_caller]
    pub fn sync(&mut self) -> impl Future<Output = Vec<Value>> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            self.send_json(serde_json::json!({"type":"ping"})).await;
            let deadline = tokio::time::Instant::now() + TIMEOUT;
            let mut skipped = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.next_event(left).await {
                    Event::Json(v) if v["type"] == "pong" => return skipped,
                    Event::Json(v) => skipped.push(v),
                    other => panic!("{caller}: waiting for pong, got {other:?}"),
                }
            }
        }
    }

    /// Sends a close frame and waits (at most 5 s) for the server's close
    /// frame or the end of the stream. Returns whether the server answered.
    pub async fn close(&mut self) -> bool {
        let _ = tokio::time::timeout(
            TIMEOUT,
            self.ws.send(Message::Close(Some(CloseFrame {
                code: 1000.into(),
                reason: "bye".into(),
            }))),
        )
        .await;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Json(_) | Event::Binary(_) => {}
                Event::Close(_) | Event::Ended | Event::Error(_) => return true,
                Event::Timeout => return false,
            }
        }
    }

    /// The underlying stream.
    pub fn ws(&mut self) -> &mut Ws {
        &mut self.ws
    }
}
