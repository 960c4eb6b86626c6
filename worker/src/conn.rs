//! One client connection: a reader that hands frames to the room and a
//! writer that drains the connection's outbound queue in batches.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_shared::protocol::{ServerMsg, close, code};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::identity::{Identity, Refusal};
use crate::outbound::{Frame, Inbox, Outbound};
use crate::room::{Resume, encode};
use crate::state::Worker;
use crate::wire::{Pending, Reader, Socket, Writer};

/// Frames written in one vectored write.
const WRITE_BATCH: usize = 64;
/// Time allowed to deliver a close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one upgraded WebSocket until it closes.
pub async fn serve(
    socket: Socket,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
    worker: Arc<Worker>,
    who: Result<Identity, Refusal>,
    resume: Option<Resume>,
) {
    let (out, rx) = Outbound::new(worker.outbound_limit());
    let (stream, sink) = socket.split(config, out.clone()).await;
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

async fn read_loop(mut stream: Reader, worker: &Worker, conn: &crate::room::Conn) {
    // One wait for the whole loop: registered once, not once per frame.
    let cancelled = conn.out.cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let next = tokio::select! {
            _ = &mut cancelled => return,
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
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(frame) => {
                // tungstenite queues its reply to a close only on the next
                // read, which never comes: reply here, echoing the client's
                // code (1000 when it gave none or one not to be sent). The
                // writer sends it after the queue, then ends.
                let code = frame
                    .map(|f| f.code)
                    .filter(|c| c.is_allowed())
                    .map_or(close::NORMAL, u16::from);
                conn.out.raw(crate::wire::close_frame(code, ""));
                return;
            }
        }
    }
}

/// The close code and reason for a frame the WebSocket layer refused: too
/// big (1009), text that is not UTF-8 (1007), a protocol violation (1002);
/// `None` for a transport error (the connection is gone).
fn refused_frame(e: &WsError) -> Option<(u16, &'static str)> {
    match e {
        WsError::Capacity(_) => Some((close::TOO_BIG, "message too big")),
        WsError::Utf8(_) => Some((close::INVALID_DATA, "text is not UTF-8")),
        WsError::Protocol(_) => Some((close::PROTOCOL_ERROR, "WebSocket protocol violation")),
        _ => None,
    }
}

pub fn is_too_big(e: &WsError) -> bool {
    matches!(e, WsError::Capacity(_))
}

/// Writes the connection's queue to its socket: each batch (up to
/// `WRITE_BATCH` frames taken without waiting) in vectored writes of the
/// shared frames. On a close, the rest of a frame already begun is
/// finished, then the close frame is sent.
pub async fn write_loop(mut sink: Writer, rx: Inbox, out: Arc<Outbound>) {
    let mut pending = Pending::default();
    let mut close_sent = false;
    let cancelled = out.cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut cancelled => break,
            f = rx.recv() => f,
        };
        // Let the tasks already woken run first (the room's other
        // broadcasts of this round): under load, one write carries several
        // frames instead of one system call per frame.
        tokio::task::yield_now().await;
        let mut text_bytes = queue(&mut pending, first, &mut close_sent);
        for _ in 1..WRITE_BATCH {
            match rx.try_recv() {
                Some(f) => text_bytes += queue(&mut pending, f, &mut close_sent),
                None => break,
            }
        }
        let ok = tokio::select! {
            biased;
            _ = &mut cancelled => false,
            r = pending.write(&mut sink) => r.is_ok(),
        };
        out.written(text_bytes);
        if !ok || close_sent || (out.is_closed() && rx.is_empty()) {
            break;
        }
        // An idle connection keeps no large queue.
        if rx.is_empty() {
            pending.shrink();
            rx.shrink();
        }
    }
    pending.finish_started_only();
    // Control frames the reader queued (the reply to a client's close).
    while let Some(f) = rx.try_recv() {
        if let Frame::Raw(b) = f {
            close_sent |= crate::wire::is_close(&b);
            pending.push(b);
        }
    }
    let close = (!close_sent).then(|| out.close_frame()).flatten();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if let Some((code, reason)) = close {
            pending.push(crate::wire::close_frame(code, &reason));
        }
        pending.write(&mut sink).await?;
        crate::wire::shutdown(&mut sink).await
    })
    .await;
    out.cancel.cancel();
}

/// Adds a frame to the batch; the text bytes it takes off the queue.
fn queue(pending: &mut Pending, frame: Frame, close_sent: &mut bool) -> usize {
    match frame {
        Frame::Text(t) => {
            pending.push(t.frame().clone());
            t.len()
        }
        Frame::Ping => {
            pending.push(crate::wire::ping_frame());
            0
        }
        Frame::Raw(b) => {
            *close_sent |= crate::wire::is_close(&b);
            pending.push(b);
            0
        }
        Frame::Wake => 0,
    }
}

/// Sends a notice from the operators to every member.
pub fn notice(worker: &Worker, text: String) {
    let bytes = encode(&ServerMsg::Notice { text });
    worker.room().broadcast(&bytes, None, None);
}
