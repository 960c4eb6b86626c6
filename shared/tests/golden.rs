//! Golden bytes of every IPC message: a fixed sample of each type and
//! variant is encoded and compared with `tests/golden/<name>.hex`. postcard
//! encodes fields by position, so any change of a message's layout changes
//! these bytes: this test fails until the change is made on purpose (bump
//! `IPC_VERSION`, then rewrite the files with `UPDATE_GOLDEN=1 cargo test -p
//! chat-shared --test golden`). New variants and fields go at the end.
//!
//! A variant missing from the samples fails to compile (`variant_name`
//! matches every variant) or fails the coverage test.

use std::collections::BTreeSet;
use std::path::PathBuf;

use chat_shared::direct::{
    ConversationSummary, DirectEvent, DirectMessage, DirectReply, DirectRequest, DmSummary,
    Presence,
};
use chat_shared::framing::{HelloHead, VersionNotice, decode, encode};
use chat_shared::ipc::{
    Ban, Filter, Hello, HelloReply, Histogram, IPC_VERSION, MAGIC, MasterMsg, Reference,
    ReferenceDelta, RoomConfig, RoomStats, ServerConfig, Snapshot, StoredMessage, WorkerMsg,
};
use chat_shared::limits::Limits;
use chat_shared::settings::RoomSettings;

fn message(seq: u64) -> StoredMessage {
    StoredMessage {
        epoch: 77,
        seq,
        user_id: "u-1".into(),
        name: "Alice".into(),
        text: "héllo".into(),
        ts: 1_700_000_000_000,
        deleted: seq.is_multiple_of(2),
    }
}

fn room_config() -> RoomConfig {
    RoomConfig {
        name: "lobby".into(),
        port: 34_001,
        settings: RoomSettings {
            max_members: Some(10),
            guests: true,
            time_limit_secs: Some(3600),
            slow_mode_ms: 250,
            ..RoomSettings::default()
        },
        created_unix_ms: 1_700_000_000_123,
    }
}

fn reference() -> Reference {
    Reference {
        version: 3,
        users: vec![("u-1".into(), "Alice".into())],
        bans: vec![Ban {
            user_id: "u-2".into(),
            room: Some("lobby".into()),
            until_ms: Some(1_800_000_000_000),
            reason: Some("spam".into()),
        }],
        filters: vec![Filter {
            pattern: "/ba+d/".into(),
            reject: true,
        }],
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        version: 9,
        server: ServerConfig {
            jwt_secret: Some("secret".into()),
            ping_interval_ms: 25_000,
            max_frame_bytes: 65_536,
            outbound_queue_bytes: 1 << 20,
            ipc_heartbeat_ms: 1000,
            refuse_joins: false,
            limits: Limits {
                header_timeout_ms: 10_000,
                idle_timeout_ms: 60_000,
                handshake_timeout_ms: 10_000,
                new_conns_per_ip_per_sec: 50,
                trusted_proxies: vec!["127.0.0.1".into()],
                max_room_connections: 10_000,
                max_user_connections: 20,
                max_ip_connections: 200,
                welcome_history_bytes: 65_536,
                allowed_origins: vec!["https://app.example.com".into()],
            },
        },
        room: room_config(),
        history: Some((77, 41)),
        reference: reference(),
        recent: vec![message(40), message(41)],
        follow: 2,
    }
}

fn stats() -> RoomStats {
    let mut fanout = Histogram::default();
    fanout.observe(0.000_02);
    fanout.observe(1.0);
    RoomStats {
        members: 2,
        connections: 3,
        messages_in: 10,
        messages_out: 20,
        epoch: 77,
        seq: 41,
        pending_writes: 1,
        fanout,
    }
}

fn hello() -> Hello {
    Hello {
        magic: MAGIC,
        version: IPC_VERSION,
        name: "lobby".into(),
        pid: 4242,
        port: 34_001,
        listening: true,
        epoch: 77,
        seq: 41,
        room: Some(room_config()),
    }
}

fn worker_variant(m: &WorkerMsg) -> &'static str {
    match m {
        WorkerMsg::Listening { .. } => "listening",
        WorkerMsg::BindFailed { .. } => "bind_failed",
        WorkerMsg::Pong { .. } => "pong",
        WorkerMsg::Stats(_) => "stats",
        WorkerMsg::Ended { .. } => "ended",
        WorkerMsg::Messages(_) => "messages",
        WorkerMsg::Deleted { .. } => "deleted",
        WorkerMsg::HistoryQuery { .. } => "history_query",
        WorkerMsg::ReferenceWanted { .. } => "reference_wanted",
        WorkerMsg::UserJoined { .. } => "user_joined",
        WorkerMsg::UserLeft { .. } => "user_left",
        WorkerMsg::Users { .. } => "users",
        WorkerMsg::Direct { .. } => "direct",
        WorkerMsg::Watch { .. } => "watch",
        WorkerMsg::Ban { .. } => "ban",
        WorkerMsg::Unban { .. } => "unban",
    }
}

fn master_variant(m: &MasterMsg) -> &'static str {
    match m {
        MasterMsg::Ping { .. } => "ping",
        MasterMsg::Snapshot(_) => "snapshot",
        MasterMsg::Notice { .. } => "notice",
        MasterMsg::Kick { .. } => "kick",
        MasterMsg::Shutdown { .. } => "shutdown",
        MasterMsg::Durable { .. } => "durable",
        MasterMsg::HistoryPage { .. } => "history_page",
        MasterMsg::Reference(_) => "reference",
        MasterMsg::Failed { .. } => "failed",
        MasterMsg::Recent(_) => "recent",
        MasterMsg::ReferenceDelta(_) => "reference_delta",
        MasterMsg::DirectReply { .. } => "direct_reply",
        MasterMsg::Deliver { .. } => "deliver",
        MasterMsg::Presence { .. } => "presence",
    }
}

const WORKER_VARIANTS: usize = 16;
const MASTER_VARIANTS: usize = 14;

fn worker_samples() -> Vec<WorkerMsg> {
    vec![
        WorkerMsg::Listening { port: 34_001 },
        WorkerMsg::BindFailed {
            port: 34_001,
            reason: "in use".into(),
        },
        WorkerMsg::Pong { nonce: 5 },
        WorkerMsg::Stats(stats()),
        WorkerMsg::Ended {
            reason: "time limit".into(),
        },
        WorkerMsg::Messages(vec![message(40), message(41)]),
        WorkerMsg::Deleted { seq: 40 },
        WorkerMsg::HistoryQuery {
            id: 1,
            before: 30,
            limit: 50,
        },
        WorkerMsg::ReferenceWanted { have: 3 },
        WorkerMsg::UserJoined { user: "u-1".into() },
        WorkerMsg::UserLeft { user: "u-1".into() },
        WorkerMsg::Users {
            reset: true,
            users: vec!["u-1".into(), "u-2".into()],
        },
        WorkerMsg::Direct {
            id: 7,
            user: "u-1".into(),
            conn: 3,
            request: DirectRequest::Send {
                to: "u-2".into(),
                name: "Alice".into(),
                text: "héllo".into(),
            },
        },
        WorkerMsg::Watch {
            conn: 3,
            users: vec!["u-2".into()],
        },
        WorkerMsg::Ban {
            user: "u-3".into(),
            reason: "spam".into(),
        },
        WorkerMsg::Unban { user: "u-3".into() },
    ]
}

fn dm(seq: u64) -> DirectMessage {
    DirectMessage {
        conversation: "u-1:u-2".into(),
        seq,
        from: "u-1".into(),
        from_name: "Alice".into(),
        to: "u-2".into(),
        text: "héllo".into(),
        ts: 1_700_000_000_000,
    }
}

/// Every variant of the direct-message types, by name.
fn direct_samples() -> Vec<(&'static str, Vec<u8>)> {
    let requests = [
        (
            "send",
            DirectRequest::Send {
                to: "u-2".into(),
                name: "Alice".into(),
                text: "hi".into(),
            },
        ),
        (
            "block",
            DirectRequest::Block {
                user: "u-2".into(),
                block: true,
            },
        ),
        (
            "history",
            DirectRequest::History {
                with: "u-2".into(),
                before: 9,
                limit: 50,
            },
        ),
        (
            "read",
            DirectRequest::Read {
                with: "u-2".into(),
                seq: 4,
            },
        ),
        ("room_read", DirectRequest::RoomRead { seq: 41 }),
        ("state", DirectRequest::State),
    ];
    let replies = [
        (
            "stored",
            DirectReply::Stored {
                conversation: "u-1:u-2".into(),
                seq: 4,
            },
        ),
        (
            "history",
            DirectReply::History {
                with: "u-2".into(),
                messages: vec![dm(3), dm(4)],
                more: true,
            },
        ),
        (
            "blocked",
            DirectReply::Blocked {
                user: "u-2".into(),
                blocked: false,
            },
        ),
        (
            "read",
            DirectReply::Read {
                conversation: Some("u-1:u-2".into()),
                seq: 4,
            },
        ),
        (
            "state",
            DirectReply::State {
                last_read: 41,
                dms: DmSummary {
                    unread: 2,
                    conversations: vec![ConversationSummary {
                        conversation: "u-1:u-2".into(),
                        with: "u-2".into(),
                        unread: 2,
                        last: Some(dm(4)),
                    }],
                },
            },
        ),
        (
            "error",
            DirectReply::Error {
                code: "forbidden".into(),
                message: "blocked".into(),
            },
        ),
    ];
    let events = [
        ("dm", DirectEvent::Dm(dm(4))),
        (
            "read",
            DirectEvent::Read {
                by: "u-2".into(),
                conversation: "u-1:u-2".into(),
                seq: 4,
            },
        ),
    ];
    let mut out = Vec::new();
    for (n, r) in requests {
        assert_eq!(decode::<DirectRequest>(&encode(&r).unwrap()).unwrap(), r);
        out.push((n, "request", encode(&r).unwrap().to_vec()));
    }
    for (n, r) in replies {
        assert_eq!(decode::<DirectReply>(&encode(&r).unwrap()).unwrap(), r);
        out.push((n, "reply", encode(&r).unwrap().to_vec()));
    }
    for (n, e) in events {
        assert_eq!(decode::<DirectEvent>(&encode(&e).unwrap()).unwrap(), e);
        out.push((n, "event", encode(&e).unwrap().to_vec()));
    }
    out.into_iter()
        .map(|(n, kind, bytes)| (leak(format!("direct_{kind}_{n}")), bytes))
        .collect()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn master_samples() -> Vec<MasterMsg> {
    vec![
        MasterMsg::Ping { nonce: 5 },
        MasterMsg::Snapshot(Box::new(snapshot())),
        MasterMsg::Notice {
            text: "maintenance".into(),
        },
        MasterMsg::Kick {
            user: "u-2".into(),
            reason: "spam".into(),
        },
        MasterMsg::Shutdown {
            reason: "restart".into(),
            restart: true,
        },
        MasterMsg::Durable { seq: 41 },
        MasterMsg::HistoryPage {
            id: 1,
            messages: vec![message(29)],
            more: true,
            error: Some("slow".into()),
        },
        MasterMsg::Reference(Box::new(reference())),
        MasterMsg::Failed {
            seqs: vec![40, 41],
            code: "not_stored".into(),
        },
        MasterMsg::Recent(vec![message(40), message(41)]),
        MasterMsg::ReferenceDelta(Box::new(ReferenceDelta {
            base: Some(3),
            version: 4,
            users: vec![("u-1".into(), Some("Alice".into())), ("u-3".into(), None)],
            bans: vec![("u-2".into(), Vec::new())],
            filters: Some(vec![Filter {
                pattern: "x".into(),
                reject: false,
            }]),
        })),
        MasterMsg::DirectReply {
            id: 7,
            reply: DirectReply::Stored {
                conversation: "u-1:u-2".into(),
                seq: 4,
            },
        },
        MasterMsg::Deliver {
            users: vec!["u-2".into()],
            except: Some(3),
            event: DirectEvent::Dm(dm(4)),
        },
        MasterMsg::Presence {
            conns: vec![3, 4],
            states: vec![
                Presence {
                    user: "u-2".into(),
                    online: false,
                    last_seen: Some(1_700_000_000_000),
                },
                Presence {
                    user: "u-3".into(),
                    online: true,
                    last_seen: None,
                },
            ],
        },
    ]
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    for line in bytes.chunks(32) {
        for b in line {
            out.push_str(&format!("{b:02x}"));
        }
        out.push('\n');
    }
    out
}

/// Compares (or with `UPDATE_GOLDEN=1` rewrites) one golden file; returns a
/// description of the mismatch, if any.
fn check(name: &str, bytes: &[u8]) -> Option<String> {
    let path = golden_dir().join(format!("{name}.hex"));
    let text = hex(bytes);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return None;
    }
    match std::fs::read_to_string(&path) {
        Ok(want) if want == text => None,
        Ok(want) => Some(format!(
            "{name}: encoding changed\nwant:\n{want}got:\n{text}"
        )),
        Err(e) => Some(format!("{name}: {} unreadable: {e}", path.display())),
    }
}

#[test]
fn every_ipc_message_keeps_its_golden_bytes() {
    let mut failures = Vec::new();
    let mut all: Vec<(String, Vec<u8>)> = vec![
        ("hello".into(), encode(&hello()).unwrap().to_vec()),
        (
            "hello_reply_accepted".into(),
            encode(&HelloReply::Accepted(Box::new(snapshot())))
                .unwrap()
                .to_vec(),
        ),
        (
            "hello_reply_refused".into(),
            encode(&HelloReply::Refused {
                reason: "unknown room".into(),
            })
            .unwrap()
            .to_vec(),
        ),
        ("snapshot".into(), encode(&snapshot()).unwrap().to_vec()),
        (
            "version_notice".into(),
            encode(&VersionNotice {
                magic: MAGIC,
                version: IPC_VERSION,
            })
            .unwrap()
            .to_vec(),
        ),
    ];
    for m in worker_samples() {
        let name = format!("worker_{}", worker_variant(&m));
        assert_eq!(decode::<WorkerMsg>(&encode(&m).unwrap()).unwrap(), m);
        all.push((name, encode(&m).unwrap().to_vec()));
    }
    for m in master_samples() {
        let name = format!("master_{}", master_variant(&m));
        assert_eq!(decode::<MasterMsg>(&encode(&m).unwrap()).unwrap(), m);
        all.push((name, encode(&m).unwrap().to_vec()));
    }
    for (name, bytes) in direct_samples() {
        all.push((name.to_owned(), bytes));
    }
    for (name, bytes) in &all {
        failures.extend(check(name, bytes));
    }
    assert!(
        failures.is_empty(),
        "IPC layout changed: bump IPC_VERSION if on purpose, then UPDATE_GOLDEN=1\n{}",
        failures.join("\n")
    );
}

#[test]
fn samples_cover_every_variant() {
    let w: BTreeSet<_> = worker_samples().iter().map(worker_variant).collect();
    let m: BTreeSet<_> = master_samples().iter().map(master_variant).collect();
    assert_eq!(
        w.len(),
        WORKER_VARIANTS,
        "a WorkerMsg variant has no sample"
    );
    assert_eq!(
        m.len(),
        MASTER_VARIANTS,
        "a MasterMsg variant has no sample"
    );
}

#[test]
fn the_hello_head_is_frozen() {
    // The head every version keeps: magic, version, name, pid, port.
    let head: HelloHead =
        chat_shared::framing::decode_hello_head(&encode(&hello()).unwrap()).unwrap();
    assert_eq!(
        (head.name.as_str(), head.pid, head.port),
        ("lobby", 4242, 34_001)
    );
}
