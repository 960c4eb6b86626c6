//! Attacks with WebSocket frames (the classic cases of issue 12): oversized
//! messages, fragments summing over the limit, binary frames, text that is
//! not UTF-8, huge and deeply nested JSON, and thousands of unknown frames.
//!
//! Every case ends with the error the protocol documents (docs/PROTOCOL.md
//! §9, §13, §14), and a witness in the same room checks that the worker is
//! the same process, still chats and acks, that the master's /health
//! answers, and that the message acked before the attack is still stored.
//! Each test names the defence it relies on and how it fails without it.

mod attack_common;

use std::time::Duration;

use attack_common::Witness;
use chat_tests::{Client, Server};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// The server's default `--max-frame-bytes`.
const MAX_FRAME: usize = 64 * 1024;
/// Bound of the wait for a close.
const CLOSE_BOUND: Duration = Duration::from_secs(10);

/// A data frame as is: `Text`, `Binary` or `Continue`, final or not.
fn raw(data: Data, payload: impl Into<Bytes>, fin: bool) -> Message {
    Message::Frame(Frame::message(payload, OpCode::Data(data), fin))
}

/// A room with a witness, and an attacker joined as a guest.
async fn setup(room: &str) -> (Server, Witness, Client) {
    let s = Server::default_server().await;
    let port = s.create_room(room).await;
    let w = Witness::guest(&s, room, port).await;
    let attacker = Client::guest(port, "mallory").await;
    (s, w, attacker)
}

/// The close code the attacker got (a close frame is required).
async fn closed_with(c: &mut Client) -> (u16, String) {
    match c.expect_close_or_end(CLOSE_BOUND).await {
        Some(cr) => cr,
        None => panic!(
            "the connection ended without a close frame; skipped: {:?}",
            c.skipped
        ),
    }
}

/// Defence: the WebSocket message limit (`--max-frame-bytes`, axum's
/// `max_message_size`/`max_frame_size`). A 70 KiB message is refused with
/// 1009 before it is buffered; without the limit it is a `say` that the
/// room answers with `too_long`, and no close comes.
#[tokio::test]
async fn an_oversized_frame_is_closed_with_1009() {
    let (s, mut w, mut c) = setup("oversized").await;
    let text = json!({"type":"say","text":"x".repeat(70 * 1024)}).to_string();
    let _ = c.try_send(Message::text(text)).await;
    assert_eq!(closed_with(&mut c).await.0, 1009);
    w.survived(&s).await;
}

/// Defence: the message limit applies to the sum of fragments. Two
/// fragments of 40 KiB (each under the frame limit) are refused with 1009;
/// without the limit on the reassembled message they are a 80 KiB `say`.
#[tokio::test]
async fn fragments_summing_over_the_limit_are_closed_with_1009() {
    let (s, mut w, mut c) = setup("fragments").await;
    let half = "y".repeat(40 * 1024);
    let _ = c
        .try_send(raw(
            Data::Text,
            format!("{{\"type\":\"say\",\"text\":\"{half}"),
            false,
        ))
        .await;
    let _ = c
        .try_send(raw(Data::Continue, format!("{half}\"}}"), true))
        .await;
    assert_eq!(closed_with(&mut c).await.0, 1009);
    w.survived(&s).await;
}

/// Defence: the same limit against thousands of tiny fragments: 7,000
/// continuation frames of 10 bytes (70,000 bytes in all) are refused with
/// 1009 once their sum passes 64 KiB.
#[tokio::test]
async fn many_tiny_fragments_over_the_limit_are_closed_with_1009() {
    let (s, mut w, mut c) = setup("tiny").await;
    let n = 7_000;
    assert!(n * 10 > MAX_FRAME);
    let first = std::iter::once(raw(Data::Text, "[\"aaaaaaa\"", false));
    let rest = (1..n).map(|i| raw(Data::Continue, ",\"bbbbbbb\"", i == n - 1));
    c.feed_many(first.chain(rest)).await;
    assert_eq!(closed_with(&mut c).await.0, 1009);
    w.survived(&s).await;
}

/// Fragments under the limit are a message like any other: the protocol
/// allows them, and the defence above must not refuse them.
#[tokio::test]
async fn fragments_under_the_limit_make_one_message() {
    let (s, mut w, mut c) = setup("fragmented").await;
    let _ = c
        .try_send(raw(Data::Text, "{\"type\":\"say\",\"te", false))
        .await;
    let _ = c
        .try_send(raw(Data::Continue, "xt\":\"in pie", false))
        .await;
    let _ = c
        .try_send(raw(Data::Continue, "ces\",\"client_id\":\"f1\"}", true))
        .await;
    let ack = c.recv_type("ack").await;
    assert_eq!(ack["client_id"], "f1", "{ack}");
    w.survived(&s).await;
}

/// Defence: binary frames are refused with `binary_not_supported`, and each
/// is a strike: a stream of them is closed with 1008 `flooding`. Without
/// the strike, 2,000 binary frames never close the connection.
#[tokio::test]
async fn binary_frames_get_errors_then_a_flood_is_closed() {
    let (s, mut w, mut c) = setup("binary").await;
    c.send(Message::binary(vec![0u8, 159, 146, 150])).await;
    let e = c.recv_type("error").await;
    assert_eq!(e["code"], "binary_not_supported", "{e}");
    c.sync().await;
    c.feed_many((0..2_000).map(|i| Message::binary(vec![i as u8; 64])))
        .await;
    let (code, reason) = closed_with(&mut c).await;
    assert_eq!((code, reason.as_str()), (1008, "flooding"));
    w.survived(&s).await;
}

/// Defence: text that is not UTF-8 closes the connection with 1007 (the
/// WebSocket layer refuses it; the room says why). Before, the connection
/// was dropped without a close code.
#[tokio::test]
async fn text_that_is_not_utf8_is_closed_with_1007() {
    let (s, mut w, mut c) = setup("utf8").await;
    let _ = c
        .try_send(raw(
            Data::Text,
            vec![b'{', b'"', 0xC3, 0x28, 0xFF, b'"', b'}'],
            true,
        ))
        .await;
    assert_eq!(closed_with(&mut c).await.0, 1007);
    // Split in fragments: a sequence cut in two is fine, a bad one is not.
    let port = w.port;
    let mut c = Client::guest(port, "mallory2").await;
    let _ = c
        .try_send(raw(Data::Text, vec![b'"', 0xE2, 0x82], false))
        .await;
    let _ = c
        .try_send(raw(Data::Continue, vec![0x28, b'"'], true))
        .await;
    assert_eq!(closed_with(&mut c).await.0, 1007);
    w.survived(&s).await;
}

/// Defence: a continuation frame without a first fragment breaks the
/// protocol: 1002.
#[tokio::test]
async fn a_stray_continuation_frame_is_closed_with_1002() {
    let (s, mut w, mut c) = setup("stray").await;
    let _ = c.try_send(raw(Data::Continue, "\"}", true)).await;
    assert_eq!(closed_with(&mut c).await.0, 1002);
    w.survived(&s).await;
}

/// Defence: serde_json's recursion limit (128 levels): 32,000 nested
/// arrays (64,000 bytes, under the frame limit) are refused with
/// `bad_json`, and the connection stays open. Without the limit the parser
/// recurses 32,000 deep: the room's stack overflows, the worker dies, and
/// the witness loses its connection.
#[tokio::test]
async fn deeply_nested_json_is_refused_with_bad_json() {
    let (s, mut w, mut c) = setup("nested").await;
    let depth = 32_000;
    for doc in [
        format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        format!(
            "{{\"type\":\"say\",\"text\":\"hi\",\"x\":{}1{}}}",
            "{\"a\":".repeat(depth / 5),
            "}".repeat(depth / 5)
        ),
    ] {
        assert!(doc.len() < MAX_FRAME, "{}", doc.len());
        c.send_text(&doc).await;
        let e = c.recv_type("error").await;
        assert_eq!(e["code"], "bad_json", "{e}");
        let msg = e["message"].as_str().unwrap_or_default();
        assert!(msg.contains("recursion limit"), "{e}");
    }
    c.sync().await;
    w.survived(&s).await;
}

/// Defence: bounded parsing of huge JSON under the frame limit: an array of
/// 30,000 numbers, an object with 5,000 fields, and a `say` whose text is
/// 60,000 characters get an error each (`bad_request`, `too_long`) and the
/// connection stays open; a 1 MiB JSON document is refused before it is
/// parsed (1009).
#[tokio::test]
async fn huge_json_is_refused() {
    let (s, mut w, mut c) = setup("hugejson").await;
    let numbers = format!("[{}0]", "0,".repeat(30_000));
    let fields: String = (0..5_000).map(|i| format!(",\"f{i}\":1")).collect();
    let object = format!("{{\"type\":\"say\",\"text\":\"hi\"{fields}}}");
    let text = json!({"type":"say","text":"z".repeat(60_000)}).to_string();
    for (doc, code) in [
        (numbers, "bad_request"),
        (object, "bad_request"),
        (text, "too_long"),
    ] {
        assert!(doc.len() < MAX_FRAME, "{}", doc.len());
        c.send_text(&doc).await;
        let e = c.recv_type("error").await;
        assert_eq!(e["code"], code, "{e}");
    }
    c.sync().await;
    let huge = format!("[{}0]", "0,".repeat(512 * 1024));
    let _ = c.try_send(Message::text(huge)).await;
    assert_eq!(closed_with(&mut c).await.0, 1009);
    w.survived(&s).await;
}

/// Defence: every unknown frame is a strike (5/s, bursts of 50): 3,000
/// frames of an unknown type get `unknown_type` errors, then the connection
/// is closed with 1008 `flooding`. Without strikes the frame bucket only
/// answers `rate_limited`, and the connection is never closed.
#[tokio::test]
async fn thousands_of_unknown_frames_are_closed_with_1008() {
    let (s, mut w, mut c) = setup("unknown").await;
    let frames = (0..3_000).map(|i| Message::text(format!("{{\"type\":\"x{i}\",\"n\":{i}}}")));
    c.feed_many(frames).await;
    let (code, reason) = closed_with(&mut c).await;
    assert_eq!((code, reason.as_str()), (1008, "flooding"));
    let unknown = c
        .skipped
        .iter()
        .filter(|f| f["type"] == "error" && f["code"] == "unknown_type")
        .count();
    assert!(unknown > 0, "no unknown_type error: {:?}", c.skipped);
    assert!(
        c.skipped.len() < 3_000,
        "every frame was answered before the close"
    );
    w.survived(&s).await;
}
