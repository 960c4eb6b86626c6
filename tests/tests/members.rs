//! Large rooms: `welcome` lists the first 100 members and `member_count`;
//! `members` requests page through the rest. A welcome never outgrows the
//! connection's queue: with long messages it carries fewer of them.

use std::collections::BTreeSet;

use chat_tests::{Client, Server, ServerOpts};
use serde_json::{Value, json};

#[tokio::test]
async fn welcome_lists_the_first_members_and_members_pages_the_rest() {
    let s = Server::default_server().await;
    let port = s.create_room("big").await;
    let mut clients = Vec::new();
    for i in 0..120 {
        clients.push(Client::guest(port, &format!("user{i:03}")).await);
    }
    let mut last = Client::guest(port, "zz-last").await;
    let w = last.welcome.clone();
    assert_eq!(w["member_count"], 121, "{w}");
    let listed = w["members"].as_array().expect("members");
    assert_eq!(listed.len(), 100, "welcome lists at most 100 members");
    let names: Vec<&str> = listed.iter().filter_map(|m| m["name"].as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "ordered by name");

    // Page through everyone with pages of 50.
    let mut seen: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut req = json!({"type": "members", "limit": 50});
        if let Some(a) = &after {
            req["after"] = json!(a);
        }
        last.send_json(req).await;
        let page = last.recv_type("members").await;
        let members = page["members"].as_array().expect("members").clone();
        assert!(members.len() <= 50, "{page}");
        seen.extend(
            members
                .iter()
                .map(|m| m["name"].as_str().unwrap_or_default().to_owned()),
        );
        after = members
            .last()
            .and_then(|m| m["id"].as_str())
            .map(str::to_owned);
        if page["more"] == false {
            break;
        }
        assert!(seen.len() <= 121, "paging does not end");
    }
    assert_eq!(seen.len(), 121, "every member exactly once");
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 121);
    let mut ordered = seen.clone();
    ordered.sort();
    assert_eq!(seen, ordered);

    // Bad limits are refused.
    last.send_json(json!({"type": "members", "limit": 501}))
        .await;
    let e = last.recv_type("error").await;
    assert_eq!(e["code"], "bad_request", "{e}");
    drop(clients);
}

#[tokio::test]
async fn a_welcome_with_long_messages_fits_the_queue() {
    let s = Server::start(ServerOpts::new().args(["--outbound-queue-bytes", "65536"])).await;
    let settings: Value = json!({"history_size": 200, "max_text_len": 8000});
    let port = s.create_room_settings("long", Some(settings)).await;
    let text = "x".repeat(4000);
    let mut writers = Vec::new();
    for i in 0..4 {
        writers.push(Client::guest(port, &format!("w{i}")).await);
    }
    // 40 messages of 4000 bytes: 160 KB, more than the 64 KiB queue.
    for round in 0..10 {
        for w in writers.iter_mut() {
            let seq = w.say_acked(&text).await;
            assert!(seq > 0, "round {round}");
        }
    }
    let c = Client::guest(port, "reader").await;
    let history = c.welcome["history"].as_array().expect("history");
    assert!(!history.is_empty(), "some history is sent");
    assert!(
        history.len() < 40,
        "the welcome was trimmed to fit: {}",
        history.len()
    );
    let last = history.last().expect("last");
    assert_eq!(last["seq"], 40, "the newest messages are kept");
    assert_eq!(c.welcome["seq"], 40);
}
