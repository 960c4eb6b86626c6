//! The public websocket-shootout benchmark protocol, spoken by rooms created
//! with `"mode":"shootout"` and nothing else on their port:
//! `{"type":"echo","payload":P}` comes back unchanged to its sender;
//! `{"type":"broadcast","payload":P}` goes to every connection (the sender
//! included) as `{"type":"broadcast","payload":P}`, then
//! `{"type":"broadcastResult","payload":P}` to the sender.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chat_shared::ipc::{Histogram, RoomStats};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::outbound::Outbound;
use crate::state::Worker;
use crate::wire::{Encoded, Socket};

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// The connections of a shootout-mode room (no identity, no presence) and
/// their counters.
#[derive(Debug, Default)]
pub struct Conns {
    conns: HashMap<u64, Arc<Outbound>>,
    next: u64,
    messages_in: u64,
    messages_out: u64,
    fanout: Histogram,
}

impl Conns {
    pub fn add(&mut self, out: Arc<Outbound>) -> u64 {
        self.next += 1;
        self.conns.insert(self.next, out);
        self.next
    }

    pub fn remove(&mut self, id: u64) {
        self.conns.remove(&id);
    }

    /// Sends a frame to every connection.
    pub fn broadcast(&mut self, bytes: &Encoded) {
        self.messages_in += 1;
        let started = Instant::now();
        let mut sent = 0;
        for out in self.conns.values() {
            if out.send(bytes) {
                sent += 1;
            }
        }
        self.fanout.observe(started.elapsed().as_secs_f64());
        self.messages_out += sent;
    }

    /// Closes every connection after what is queued.
    pub fn close_all(&self, code: u16, reason: &str) {
        for out in self.conns.values() {
            out.close_after_queue(code, reason);
        }
    }

    /// Adds these connections and counters to the room's.
    pub fn add_to(&self, stats: &mut RoomStats) {
        stats.connections = stats
            .connections
            .saturating_add(u32::try_from(self.conns.len()).unwrap_or(u32::MAX));
        stats.messages_in += self.messages_in;
        stats.messages_out += self.messages_out;
        stats.fanout.add(&self.fanout);
    }
}

/// What the server answers to one client frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Echo(Encoded),
    Broadcast { all: Encoded, result: Encoded },
    Ignore,
}

/// Decides the answer to one text frame.
pub fn reply(text: &Utf8Bytes) -> Reply {
    let Ok(frame) = serde_json::from_str::<Frame<'_>>(text.as_str()) else {
        return Reply::Ignore;
    };
    match frame.kind {
        "echo" => Reply::Echo(Encoded::text(text.as_str())),
        "broadcast" => {
            let p = frame.payload.get();
            Reply::Broadcast {
                all: Encoded::from(format!("{{\"type\":\"broadcast\",\"payload\":{p}}}")),
                result: Encoded::from(format!("{{\"type\":\"broadcastResult\",\"payload\":{p}}}")),
            }
        }
        _ => Reply::Ignore,
    }
}

/// Serves one connection of a shootout room.
pub async fn serve(
    socket: Socket,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
    worker: Arc<Worker>,
) {
    let (out, rx) = Outbound::new(worker.outbound_limit());
    let (mut stream, sink) = socket.split(config, out.clone()).await;
    let writer = tokio::spawn(crate::conn::write_loop(sink, rx, out.clone()));
    let id = worker.shootout().add(out.clone());
    let cancelled = out.cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let next = tokio::select! {
            _ = &mut cancelled => break,
            n = stream.next() => n,
        };
        let msg = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                if crate::conn::is_too_big(&e) {
                    out.close(chat_shared::protocol::close::TOO_BIG, "message too big");
                }
                break;
            }
            None => break,
        };
        let Message::Text(text) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        match reply(&text) {
            Reply::Echo(bytes) => {
                out.send(&bytes);
            }
            Reply::Broadcast { all, result } => {
                worker.shootout().broadcast(&all);
                out.send(&result);
            }
            Reply::Ignore => {}
        }
    }
    worker.shootout().remove(id);
    out.cancel.cancel();
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_and_broadcast_keep_the_payload() {
        let t = Utf8Bytes::from(r#"{"type":"echo","payload":{"a":[1,2.50,"x"]}}"#);
        assert_eq!(reply(&t), Reply::Echo(Encoded::from(t.as_str())));
        let t = Utf8Bytes::from(r#"{"type":"broadcast","payload":{"a":[1,2.50,"x"]}}"#);
        assert_eq!(
            reply(&t),
            Reply::Broadcast {
                all: Encoded::from(r#"{"type":"broadcast","payload":{"a":[1,2.50,"x"]}}"#),
                result: Encoded::from(r#"{"type":"broadcastResult","payload":{"a":[1,2.50,"x"]}}"#),
            }
        );
        assert_eq!(reply(&Utf8Bytes::from("nope")), Reply::Ignore);
        assert_eq!(
            reply(&Utf8Bytes::from(r#"{"type":"x","payload":1}"#)),
            Reply::Ignore
        );
    }
}
