//! Acks tell a resend from a conflict: a message whose (room, seq) already
//! holds a *different* stored message (here written straight into the
//! database, as another host serving the same room would) is never
//! acknowledged: its sender gets `error` `conflict` with the message's
//! `client_id` and seq, and the stored message stays.

mod data_common;

use std::time::Duration;

use chat_tests::{Client, Server, ServerOpts};
use data_common::{Nx, recv_type_within};
use mongodb::bson::doc;

#[tokio::test]
async fn store_conflict_is_never_acked() {
    let nx = Nx::start_memory().await;
    let uri = nx.uri("conflict");
    let server = Server::start(ServerOpts::new().args(["--store", &uri])).await;
    let port = server.create_room("lobby").await;
    let mut alice = Client::guest(port, "alice").await;
    let next = alice.welcome["seq"].as_u64().expect("welcome seq") + 1;
    nx.insert(
        "conflict",
        "messages",
        doc! { "room": "lobby", "epoch": 7_i64, "seq": next as i64, "user_id": "someone",
        "name": "Someone", "text": "already here", "ts": 1_i64, "deleted": false },
    )
    .await;

    alice.say("mine", "c-1").await;
    let (err, skipped) =
        recv_type_within(&mut alice, "error", Duration::from_secs(15), "conflict").await;
    assert!(
        skipped.iter().all(|f| f["type"] != "ack"),
        "a conflicting message was acked: {skipped:?}"
    );
    assert_eq!(err["code"], "conflict", "{err}");
    assert_eq!(err["client_id"], "c-1", "{err}");
    assert_eq!(err["seq"].as_u64(), Some(next), "{err}");
    // The next message is acked; the stored message at `next` is untouched.
    assert_eq!(alice.say_acked("after").await, next + 1);
    let texts = nx.stored_texts("conflict", "lobby").await;
    assert_eq!(texts, ["already here", "after"]);
    let logs = server.logs();
    assert!(
        logs.contains("a different message is already stored"),
        "no log of the conflict:\n{logs}"
    );
}
