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

/// In a room of more than 100 members, arrivals and departures come as
/// `members_changed` frames (at most one a second), never as one `joined`
/// or `left` per member; the order of events is kept.
#[tokio::test]
async fn a_large_room_gathers_arrivals_and_departures() {
    let s = Server::default_server().await;
    let port = s.create_room("crowd").await;
    let mut watcher = Client::guest(port, "aaa-watcher").await;
    let mut clients = Vec::new();
    for i in 0..100 {
        clients.push(Client::guest(port, &format!("user{i:03}")).await);
    }
    // Up to 100 members: one `joined` each.
    for _ in 0..100 {
        watcher.recv_type("joined").await;
    }
    // Past 100: the next arrivals are gathered.
    let mut late = Vec::new();
    for i in 0..5 {
        late.push(Client::guest(port, &format!("late{i}")).await);
    }
    let late_ids: BTreeSet<String> = late.iter().map(Client::id).collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut frames = 0;
    while seen.len() < late_ids.len() {
        let (f, skipped) = watcher.recv_type_collect("members_changed").await;
        assert!(
            skipped.iter().all(|v| v["type"] != "joined"),
            "no `joined` past 100 members: {skipped:?}"
        );
        frames += 1;
        assert!(frames <= 5, "the arrivals never all came: {seen:?}");
        assert_eq!(f["more"], false, "{f}");
        assert!(f["left"].as_array().is_some_and(Vec::is_empty), "{f}");
        for m in f["joined"].as_array().expect("joined") {
            let id = m["id"].as_str().expect("id").to_owned();
            assert!(late_ids.contains(&id), "only the late arrivals: {f}");
            assert_eq!(m["connections"], 1, "{f}");
            seen.insert(id);
        }
    }
    // Three leave: one frame lists them with the new count.
    let gone: Vec<String> = clients.drain(..3).map(|c| c.id()).collect();
    let mut left: BTreeSet<String> = BTreeSet::new();
    let mut last_count = 0;
    while left.len() < gone.len() {
        let (f, skipped) = watcher.recv_type_collect("members_changed").await;
        assert!(
            skipped.iter().all(|v| v["type"] != "left"),
            "no `left` past 100 members: {skipped:?}"
        );
        for u in f["left"].as_array().expect("left") {
            left.insert(u["id"].as_str().expect("id").to_owned());
        }
        last_count = f["member_count"].as_u64().expect("member_count");
    }
    assert_eq!(left, gone.into_iter().collect::<BTreeSet<_>>());
    assert_eq!(last_count, 1 + 97 + 5);
    drop(late);
}
