//! The public websocket-shootout benchmark protocol, spoken by rooms created
//! with `"mode":"shootout"` and nothing else on their port:
//! `{"type":"echo","payload":P}` comes back unchanged to its sender;
//! `{"type":"broadcast","payload":P}` goes to every connection (the sender
//! included) as `{"type":"broadcast","payload":P}`, then
//! `{"type":"broadcastResult","payload":P}` to the sender.

use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::outbound::Outbound;
use crate::state::Worker;

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// What the server answers to one client frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Echo(Utf8Bytes),
    Broadcast { all: Utf8Bytes, result: Utf8Bytes },
    Ignore,
}

/// Decides the answer to one text frame.
pub fn reply(text: &Utf8Bytes) -> Reply {
    let Ok(frame) = serde_json::from_str::<Frame<'_>>(text.as_str()) else {
        return Reply::Ignore;
    };
    match frame.kind {
        "echo" => Reply::Echo(text.clone()),
        "broadcast" => {
            let p = frame.payload.get();
            Reply::Broadcast {
                all: Utf8Bytes::from(format!("{{\"type\":\"broadcast\",\"payload\":{p}}}")),
                result: Utf8Bytes::from(format!(
                    "{{\"type\":\"broadcastResult\",\"payload\":{p}}}"
                )),
            }
        }
        _ => Reply::Ignore,
    }
}

/// Serves one connection of a shootout room.
pub async fn serve(socket: WebSocket, worker: Arc<Worker>) {
    let (sink, mut stream) = socket.split();
    let (out, rx) = Outbound::new(worker.outbound_limit());
    let writer = tokio::spawn(crate::conn::write_loop(sink, rx, out.clone()));
    let id = worker.room().add_plain(out.clone());
    loop {
        let next = tokio::select! {
            _ = out.cancel.cancelled() => break,
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
                let mut room = worker.room();
                room.broadcast_plain(&all);
                out.send(&result);
            }
            Reply::Ignore => {}
        }
    }
    worker.room().remove_plain(id);
    out.cancel.cancel();
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_and_broadcast_keep_the_payload() {
        let t = Utf8Bytes::from(r#"{"type":"echo","payload":{"a":[1,2.50,"x"]}}"#);
        assert_eq!(reply(&t), Reply::Echo(t.clone()));
        let t = Utf8Bytes::from(r#"{"type":"broadcast","payload":{"a":[1,2.50,"x"]}}"#);
        assert_eq!(
            reply(&t),
            Reply::Broadcast {
                all: Utf8Bytes::from(r#"{"type":"broadcast","payload":{"a":[1,2.50,"x"]}}"#),
                result: Utf8Bytes::from(
                    r#"{"type":"broadcastResult","payload":{"a":[1,2.50,"x"]}}"#
                ),
            }
        );
        assert_eq!(reply(&Utf8Bytes::from("nope")), Reply::Ignore);
        assert_eq!(
            reply(&Utf8Bytes::from(r#"{"type":"x","payload":1}"#)),
            Reply::Ignore
        );
    }
}
