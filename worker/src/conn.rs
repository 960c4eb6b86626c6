//! One client connection: a reader that hands frames to the room and a
//! writer that drains the connection's outbound queue in batches.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use chat_shared::protocol::{ServerMsg, close, code};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use crate::identity::{Identity, Refusal};
use crate::outbound::{Frame, Outbound};
use crate::room::{Resume, encode};
use crate::state::Worker;

/// Frames written before one flush.
const WRITE_BATCH: usize = 64;
/// Time allowed to deliver a close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one upgraded WebSocket until it closes.
pub async fn serve(
    socket: WebSocket,
    worker: Arc<Worker>,
    who: Result<Identity, Refusal>,
    resume: Option<Resume>,
) {
    let (sink, stream) = socket.split();
    let (out, rx) = Outbound::new(worker.outbound_limit());
    let writer = tokio::spawn(write_loop(sink, rx, out.clone()));
    let draining = worker.config().refuse_joins;
    let who = who.and_then(|who| {
        if draining {
            Err(Refusal::new(
                close::TRY_AGAIN_LATER,
                "server is draining; try again later",
            ))
        } else {
            Ok(who)
        }
    });
    // A token user's read state for `welcome`, asked before joining.
    let state = match &who {
        Ok(w) if w.role != chat_shared::protocol::Role::Guest => {
            crate::direct::fetch_state(&worker, &w.id).await
        }
        _ => None,
    };
    let joined = who.and_then(|who| {
        let mut room = worker.room();
        room.join(who, out.clone(), resume, state)
    });
    match joined {
        Err(refusal) => {
            tracing::info!(room = %worker.name, code = refusal.code, reason = %refusal.reason, "join refused");
            out.close_after_queue(refusal.code, &refusal.reason);
        }
        Ok(conn) => {
            tracing::debug!(room = %worker.name, user = %conn.user_id, conn = conn.id, "joined");
            read_loop(stream, &worker, &conn).await;
            worker.room().leave(&conn);
            // The client went away: stop the writer too. (A close asked by
            // the room lets the writer drain its queue first.)
            if !conn.out.is_closed() {
                conn.out.cancel.cancel();
            }
            tracing::debug!(room = %worker.name, user = %conn.user_id, conn = conn.id, "left");
        }
    }
    let _ = writer.await;
}

async fn read_loop(mut stream: SplitStream<WebSocket>, worker: &Worker, conn: &crate::room::Conn) {
    loop {
        let next = tokio::select! {
            _ = conn.out.cancel.cancelled() => return,
            next = stream.next() => next,
        };
        let msg = match next {
            None => return,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                match refused_frame(&e) {
                    Some((code, reason)) => {
                        tracing::info!(room = %worker.name, user = %conn.user_id, code, reason, "closing on a refused frame");
                        conn.out.close(code, reason);
                    }
                    None => {
                        tracing::debug!(room = %worker.name, user = %conn.user_id, error = %e, "read error");
                    }
                }
                return;
            }
        };
        conn.missed_pings.store(0, Ordering::Relaxed);
        if conn.out.is_closed() {
            // Kicked, banned or flooding: frames are read (so the client is
            // not blocked and reads its last frames) but ignored.
            continue;
        }
        match msg {
            Message::Text(text) => worker.room().handle_text(conn, text.as_str()),
            Message::Binary(_) => {
                let mut room = worker.room();
                room.strike(conn);
                room.error(
                    conn,
                    code::BINARY_NOT_SUPPORTED,
                    "binary frames are not supported; send JSON text",
                    None,
                );
            }
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => return,
        }
    }
}

/// The close code and reason for a frame the WebSocket layer refused: too
/// big (1009), text that is not UTF-8 (1007), a protocol violation (1002);
/// `None` for a transport error (the connection is gone).
fn refused_frame(e: &axum::Error) -> Option<(u16, &'static str)> {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error as WsError;
    if is_too_big(e) {
        return Some((close::TOO_BIG, "message too big"));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        match s.downcast_ref::<WsError>() {
            Some(WsError::Utf8(_)) => return Some((close::INVALID_DATA, "text is not UTF-8")),
            Some(WsError::Protocol(_)) => {
                return Some((close::PROTOCOL_ERROR, "WebSocket protocol violation"));
            }
            _ => {}
        }
        source = s.source();
    }
    None
}

pub fn is_too_big(e: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) =
            s.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        {
            return true;
        }
        source = s.source();
    }
    e.to_string().contains("Space limit exceeded") || e.to_string().contains("too long")
}

pub async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::UnboundedReceiver<Frame>,
    out: Arc<Outbound>,
) {
    loop {
        let first = tokio::select! {
            biased;
            _ = out.cancel.cancelled() => break,
            f = rx.recv() => f,
        };
        let Some(first) = first else { break };
        let batch = async {
            write_frame(&mut sink, &out, first).await?;
            for _ in 1..WRITE_BATCH {
                match rx.try_recv() {
                    Ok(f) => write_frame(&mut sink, &out, f).await?,
                    Err(_) => break,
                }
            }
            sink.flush().await
        };
        let ok = tokio::select! {
            biased;
            _ = out.cancel.cancelled() => false,
            r = batch => r.is_ok(),
        };
        if !ok || (out.is_closed() && rx.is_empty()) {
            break;
        }
    }
    let close = out.close_frame();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if let Some((code, reason)) = close {
            let frame = Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            }));
            sink.send(frame).await?;
        }
        // Also flushes the reply to a close the client started.
        sink.close().await
    })
    .await;
    out.cancel.cancel();
}

async fn write_frame(
    sink: &mut SplitSink<WebSocket, Message>,
    out: &Outbound,
    frame: Frame,
) -> Result<(), axum::Error> {
    match frame {
        Frame::Text(t) => {
            let len = t.len();
            let r = sink.feed(Message::Text(t)).await;
            out.written(len);
            r
        }
        Frame::Ping => sink.feed(Message::Ping(Default::default())).await,
        Frame::Wake => Ok(()),
    }
}

/// Sends a notice from the operators to every member.
pub fn notice(worker: &Worker, text: String) {
    let bytes = encode(&ServerMsg::Notice { text });
    worker.room().broadcast(&bytes, None, None);
}
