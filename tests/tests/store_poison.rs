//! A message the store refuses for good (a poison record: here made by the
//! master's hidden debug-build flag `--test-poison`, since nothing a client
//! can send is invalid for either backend) fails only itself: its sender gets
//! an `error` frame with the message's `client_id` and seq instead of an ack,
//! and every other message, of that room and of others, is stored and acked.
//! Both backends: redb (embedded) and MongoDB (nx-27017).

mod data_common;

use std::time::Duration;

use chat_tests::{Client, Server, ServerOpts};
use data_common::{Nx, history_all, recv_type_within, seq_texts};

const POISON: &str = "POISON-RECORD";
const WAIT: Duration = Duration::from_secs(15);

async fn poison_fails_only_its_sender(server: &Server) {
    let port = server.create_room("lobby").await;
    let other_port = server.create_room("elsewhere").await;
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::guest(port, "bob").await;
    let mut carol = Client::guest(other_port, "carol").await;

    let first = alice.say_acked("before the poison").await;
    bob.say(&format!("a {POISON} in the text"), "bob-1").await;
    let (err, skipped) = recv_type_within(&mut bob, "error", WAIT, "bob's poison").await;
    assert!(
        skipped.iter().all(|f| f["type"] != "ack"),
        "the poison message was acked: {skipped:?}"
    );
    assert_eq!(err["code"], "not_stored", "{err}");
    assert_eq!(err["client_id"], "bob-1", "{err}");
    let poison_seq = err["seq"].as_u64().expect("error carries the seq");
    assert_eq!(poison_seq, first + 1, "{err}");

    // The same room and another room keep being acknowledged.
    let after = alice.say_acked("after the poison").await;
    assert!(after > poison_seq);
    bob.say_acked("bob again").await;
    carol.say_acked("another room").await;

    // What the room serves afterwards holds the stored messages only.
    let mut dave = Client::guest(port, "dave").await;
    let texts: Vec<String> = seq_texts(&history_all(&mut dave, 50).await)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(
        texts,
        ["before the poison", "after the poison", "bob again"],
        "history"
    );
}

#[tokio::test]
async fn store_poison_redb_fails_only_its_own_message() {
    let server = Server::start(ServerOpts::new().args(["--test-poison", POISON])).await;
    poison_fails_only_its_sender(&server).await;
    let logs = server.logs();
    assert!(
        logs.contains("the store refused a message"),
        "no log of the refusal:\n{logs}"
    );
    let metrics = chat_tests::metrics::scrape(&server).await;
    let failed = metrics.find("chat_store_failed_messages_total", &[]);
    assert!(
        failed.iter().any(|s| s.value == 1.0),
        "chat_store_failed_messages_total: {failed:?}"
    );
}

#[tokio::test]
async fn store_poison_mongodb_fails_only_its_own_message() {
    let nx = Nx::start_memory().await;
    let uri = nx.uri("poison");
    let server =
        Server::start(ServerOpts::new().args(["--test-poison", POISON, "--store", &uri])).await;
    poison_fails_only_its_sender(&server).await;
    let texts = nx.stored_texts("poison", "lobby").await;
    assert_eq!(
        texts,
        ["before the poison", "after the poison", "bob again"],
        "{texts:?}"
    );
}
