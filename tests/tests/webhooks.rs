//! Webhooks against a real master: a receiver in the test verifies the
//! signature of `room.created` / `room.closed`; a 5xx is retried, a 4xx is
//! not; a dead or hanging receiver slows neither room creation nor chat;
//! a full queue drops its oldest events (counted); shutdown gives up on a
//! receiver that never answers. (`dm.offline` is emitted by the
//! direct-message code through `Webhooks::dm_offline`.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use chat_tests::{Client, Server, ServerOpts, wait_for, within};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::mpsc;

/// Bound of every wait for an event.
const EVENT_WAIT: Duration = Duration::from_secs(15);

/// One POST the receiver got.
#[derive(Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    json: Value,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A webhook receiver: records every POST, answers the planned statuses
/// in turn, then 200.
struct Receiver {
    url: String,
    got: mpsc::UnboundedReceiver<Received>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(plan: &[u16]) -> Receiver {
        let plan = Arc::new(Mutex::new(plan.iter().copied().collect::<VecDeque<_>>()));
        let (tx, got) = mpsc::unbounded_channel();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (plan, tx) = (plan.clone(), tx.clone());
                async move {
                    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let _ = tx.send(Received {
                        headers,
                        body,
                        json,
                    });
                    let status = plan.lock().unwrap().pop_front().unwrap_or(200);
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            got,
            _task: task,
        }
    }

    /// The next POST.
    async fn next(&mut self) -> Received {
        within(EVENT_WAIT, "a webhook POST", self.got.recv())
            .await
            .expect("the receiver stopped")
    }

    /// The next POST of event type `kind` (others are skipped).
    async fn next_of(&mut self, kind: &str) -> Received {
        loop {
            let r = self.next().await;
            if r.json["type"] == kind {
                return r;
            }
        }
    }
}

/// A receiver that accepts connections and never answers; tells each
/// accepted connection on the channel.
async fn hanging_receiver() -> (
    String,
    mpsc::UnboundedReceiver<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn); // never read, never answered, never closed
            let _ = tx.send(());
        }
    });
    (format!("http://127.0.0.1:{port}/hook"), rx, task)
}

/// A URL whose port nobody listens on.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/hook")
}

fn signature(secret: &str, ts: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sum of a metric's samples (every label set) in `/metrics`, parsed by
/// the harness's strict parser.
async fn metric(s: &Server, name: &str) -> f64 {
    chat_tests::metrics::scrape(s).await.sum(name)
}

/// Waits until `name` reaches `at_least`.
async fn metric_reaches(s: &Server, name: &str, at_least: f64) -> f64 {
    wait_for(EVENT_WAIT, &format!("{name} >= {at_least}"), || async {
        let v = metric(s, name).await;
        (v >= at_least).then_some(v)
    })
    .await
}

async fn server(args: &[String]) -> Server {
    let mut opts = ServerOpts::new().args(args.iter().cloned());
    opts.room_ports = 10;
    Server::start(opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_room_events_reach_the_receiver() {
    let mut rx = Receiver::start(&[]).await;
    let secret = chat_tests::random_string(32);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let mut s = server(&[
        "--webhook-url".into(),
        rx.url.clone(),
        "--webhook-secret-file".into(),
        secret_file.display().to_string(),
        "--shutdown-grace".into(),
        "5s".into(),
    ])
    .await;

    s.create_room("hooked").await;
    let created = rx.next_of("room.created").await;
    assert_eq!(created.json["data"]["room"], "hooked", "{}", created.json);
    assert!(created.json["data"]["port"].as_u64().unwrap_or(0) > 0);
    assert!(created.json["id"].as_str().is_some_and(|id| id.len() == 32));
    let ts = created.header("x-chat-timestamp");
    assert!(ts.parse::<u64>().is_ok(), "timestamp {ts:?}");
    assert_eq!(
        created.header("x-chat-signature"),
        signature(&secret, ts, &created.body),
        "the signature does not verify"
    );
    assert_ne!(
        created.header("x-chat-signature"),
        signature("another secret", ts, &created.body)
    );
    assert_eq!(created.header("x-chat-event"), "room.created");
    assert_eq!(created.header("content-type"), "application/json");

    // The secret is in no child's argv or environment, nor in the logs.
    let pid = s.room_pid("hooked").await;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    for (what, bytes) in [("environ", &environ), ("cmdline", &cmdline)] {
        assert!(
            !String::from_utf8_lossy(bytes).contains(&secret),
            "the webhook secret is in the room's {what}"
        );
    }

    s.shutdown_room("hooked").await.expect(202);
    let closed = rx.next_of("room.closed").await;
    assert_eq!(closed.json["data"]["room"], "hooked", "{}", closed.json);
    assert_eq!(closed.json["data"]["reason"], "stopped");
    let ts = closed.header("x-chat-timestamp");
    assert_eq!(
        closed.header("x-chat-signature"),
        signature(&secret, ts, &closed.body)
    );
    metric_reaches(&s, "chat_webhook_sent_total", 2.0).await;

    // At shutdown, the rooms' room.closed are delivered before the master
    // exits.
    s.create_room("last").await;
    rx.next_of("room.created").await;
    s.stop_gracefully().await;
    let closed = rx.next_of("room.closed").await;
    assert_eq!(closed.json["data"]["room"], "last", "{}", closed.json);
    assert!(!s.logs().contains(&secret), "the secret is in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_retried_and_a_4xx_is_not() {
    let mut rx = Receiver::start(&[500, 503]).await;
    let s = server(&[
        "--webhook-url".into(),
        rx.url.clone(),
        "--webhook-backoff".into(),
        "50ms".into(),
    ])
    .await;
    s.create_room("flaky").await;
    let first = rx.next().await;
    let second = rx.next().await;
    let third = rx.next().await;
    for r in [&first, &second, &third] {
        assert_eq!(r.json["type"], "room.created", "{}", r.json);
        assert_eq!(r.json["data"]["room"], "flaky");
    }
    // One event, three attempts: the same delivery id every time.
    let id = first.header("x-chat-delivery").to_owned();
    assert!(!id.is_empty());
    assert_eq!(second.header("x-chat-delivery"), id);
    assert_eq!(third.header("x-chat-delivery"), id);
    metric_reaches(&s, "chat_webhook_retries_total", 2.0).await;
    metric_reaches(&s, "chat_webhook_sent_total", 1.0).await;

    // A 4xx is the receiver's refusal: not retried. Events go in order, so
    // the next POST after the refused one is the next event.
    let mut rx2 = Receiver::start(&[404]).await;
    let s2 = server(&["--webhook-url".into(), rx2.url.clone()]).await;
    s2.create_room("refused").await;
    let refused = rx2.next().await;
    assert_eq!(refused.json["data"]["room"], "refused");
    s2.create_room("after").await;
    let next = rx2.next().await;
    assert_eq!(next.json["data"]["room"], "after", "{}", next.json);
    metric_reaches(&s2, "chat_webhook_failed_total", 1.0).await;
    assert_eq!(metric(&s2, "chat_webhook_retries_total").await, 0.0);
}

/// Creates a room and chats in it; every step is awaited as an event.
async fn create_and_chat(s: &Server, name: &str) {
    let port = s.create_room(name).await;
    let mut a = Client::guest(port, "ann").await;
    let mut b = Client::guest(port, "bob").await;
    for i in 0..5 {
        let text = format!("hello {i}");
        a.say_acked(&text).await;
        let m = b.recv_type("message").await;
        assert_eq!(m["text"], text.as_str(), "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_slows_neither_rooms_nor_chat() {
    let (url, mut accepted, _task) = hanging_receiver().await;
    let mut s = server(&[
        "--webhook-url".into(),
        url,
        "--webhook-timeout".into(),
        "60s".into(),
        "--shutdown-grace".into(),
        "2s".into(),
    ])
    .await;
    s.create_room("first").await;
    // The delivery task is stuck on the receiver from here on.
    within(
        EVENT_WAIT,
        "the receiver's first connection",
        accepted.recv(),
    )
    .await;
    // Rooms are created, joined and chatted in meanwhile: acks arrive.
    create_and_chat(&s, "second").await;
    create_and_chat(&s, "third").await;
    assert_eq!(metric(&s, "chat_webhook_sent_total").await, 0.0);
    assert!(metric(&s, "chat_webhook_queue_depth").await >= 1.0);
    // Shutdown gives up on it after the grace period instead of hanging.
    s.stop_gracefully().await;
    assert!(
        s.logs().contains("webhook events not delivered"),
        "no give-up logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_slows_neither_rooms_nor_chat() {
    let s = server(&[
        "--webhook-url".into(),
        dead_url(),
        "--webhook-backoff".into(),
        "20ms".into(),
        "--webhook-backoff-cap".into(),
        "100ms".into(),
    ])
    .await;
    create_and_chat(&s, "alone").await;
    // Connections refused: retried, then given up (8 attempts each).
    metric_reaches(&s, "chat_webhook_retries_total", 1.0).await;
    create_and_chat(&s, "still").await;
    metric_reaches(&s, "chat_webhook_failed_total", 1.0).await;
    assert_eq!(metric(&s, "chat_webhook_sent_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_oldest_events() {
    let (url, mut accepted, _task) = hanging_receiver().await;
    let s = server(&[
        "--webhook-url".into(),
        url,
        "--webhook-timeout".into(),
        "60s".into(),
        "--webhook-queue".into(),
        "2".into(),
    ])
    .await;
    s.create_room("q0").await;
    within(
        EVENT_WAIT,
        "the receiver's first connection",
        accepted.recv(),
    )
    .await;
    // q0's event is in flight; four more into a queue of two.
    for name in ["q1", "q2", "q3", "q4"] {
        s.create_room(name).await;
    }
    let dropped = metric_reaches(&s, "chat_webhook_dropped_total", 2.0).await;
    assert_eq!(dropped, 2.0);
    assert_eq!(metric(&s, "chat_webhook_queue_depth").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_from_the_environment_stays_out_of_rooms() {
    let mut rx = Receiver::start(&[]).await;
    let secret = chat_tests::random_string(32);
    let mut opts = ServerOpts::new()
        .env("WEBHOOK_URL", rx.url.clone())
        .env("WEBHOOK_SECRET", secret.clone());
    opts.room_ports = 5;
    let s = Server::start(opts).await;
    s.create_room("envroom").await;
    let info = s.api(Method::GET, "/api/v1/room/envroom").await;
    info.expect(200);
    let pid = info.data()["pid"].as_i64().unwrap() as i32;

    let event = rx.next_of("room.created").await;
    let ts = event.header("x-chat-timestamp");
    assert_eq!(
        event.header("x-chat-signature"),
        signature(&secret, ts, &event.body),
        "signed with the secret from WEBHOOK_SECRET"
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains(&secret),
        "the room inherited WEBHOOK_SECRET"
    );
    assert!(
        !environ.contains("WEBHOOK_"),
        "the room inherited a webhook variable"
    );
    let log = std::fs::read_to_string(&s.stderr_path).unwrap_or_default();
    assert!(
        !log.is_empty(),
        "no master log at {}",
        s.stderr_path.display()
    );
    assert!(!log.contains(&secret), "the secret is in the master's log");
}

/// A DM stored while its recipient has no live connection is a signed
/// `dm.offline`; a DM to a connected recipient is not (events arrive in
/// order, so the next `dm.offline` after it is the one to a third user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_to_an_offline_user_is_a_signed_dm_offline() {
    let mut rx = Receiver::start(&[]).await;
    let secret = chat_tests::random_string(32);
    let jwt = chat_tests::random_string(32);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, &secret).unwrap();
    let mut opts = ServerOpts::new().jwt_secret(jwt.clone()).args([
        "--webhook-url".to_string(),
        rx.url.clone(),
        "--webhook-secret-file".into(),
        secret_file.display().to_string(),
    ]);
    opts.room_ports = 10;
    let s = Server::start(opts).await;
    let port = s.create_room("inbox").await;
    let mut alice =
        Client::with_token(port, &chat_tests::token::member(&jwt, "alice", "inbox")).await;

    let send = |to: &str, text: &str| serde_json::json!({"type":"dm","to":to,"text":text,"client_id":format!("c-{to}-{text}")});
    alice.send_json(send("bob", "are you there?")).await;
    let ack = alice.recv_type("ack").await;
    assert_eq!(ack["seq"], 1, "{ack}");
    let hook = rx.next_of("dm.offline").await;
    let ts = hook.header("x-chat-timestamp");
    assert_eq!(
        hook.header("x-chat-signature"),
        signature(&secret, ts, &hook.body),
        "the signature does not verify"
    );
    let data = &hook.json["data"];
    assert_eq!(data["to"], "bob", "{}", hook.json);
    assert_eq!(data["from"], "alice", "{}", hook.json);
    assert_eq!(data["seq"], 1, "{}", hook.json);
    assert_eq!(data["text"], "are you there?", "{}", hook.json);
    assert_eq!(data["conversation"], ack["conversation"], "{}", hook.json);

    // Bob is connected now: his DM is delivered live, not pushed.
    let mut bob = Client::with_token(port, &chat_tests::token::member(&jwt, "bob", "inbox")).await;
    alice.send_json(send("bob", "hello live")).await;
    alice.recv_type("ack").await;
    let live = bob.recv_type("dm").await;
    assert_eq!(live["text"], "hello live", "{live}");
    alice.send_json(send("carol", "later")).await;
    alice.recv_type("ack").await;
    let next = rx.next_of("dm.offline").await;
    assert_eq!(
        next.json["data"]["to"], "carol",
        "a DM to a connected user was pushed: {}",
        next.json
    );
}
