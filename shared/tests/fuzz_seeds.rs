//! Writes the seed corpus of the `ipc_frame` fuzz target with the real
//! encoder (after a change of the IPC types):
//!
//! ```text
//! UPDATE_SEEDS=1 cargo test -p chat-shared --test fuzz_seeds
//! ```
//!
//! Seeds are frame bodies of both directions, a byte stream of framed
//! chunks as a worker reads after its hello, and a pair of reference data
//! sets (the target's chunk reassembly check).

use std::path::PathBuf;

use bytes::BytesMut;
use chat_shared::chunks;
use chat_shared::framing;
use chat_shared::ipc::{
    Ban, Filter, Hello, HelloReply, MasterMsg, Reference, RoomConfig, ServerConfig, Snapshot,
    StoredMessage, WorkerMsg,
};
use chat_shared::settings::RoomSettings;
use tokio_util::codec::Encoder;

fn message(seq: u64) -> StoredMessage {
    StoredMessage {
        epoch: 7,
        seq,
        user_id: "u1".into(),
        name: "Ann".into(),
        text: format!("message {seq}"),
        ts: 1_700_000_000_000 + seq,
        deleted: seq == 2,
    }
}

fn reference(version: u64, tag: &str) -> Reference {
    Reference {
        version,
        users: vec![
            ("u1".into(), format!("Ann {tag}")),
            ("u2".into(), "Bob".into()),
        ],
        bans: vec![Ban {
            user_id: "u3".into(),
            room: Some("lobby".into()),
            until_ms: Some(5),
            reason: Some(tag.into()),
        }],
        filters: vec![Filter {
            pattern: "/sp[a4]m/".into(),
            reject: true,
        }],
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        version: 3,
        server: ServerConfig {
            jwt_secret: Some("secret".into()),
            ping_interval_ms: 20_000,
            max_frame_bytes: 65_536,
            outbound_queue_bytes: 1 << 20,
            ipc_heartbeat_ms: 2000,
            refuse_joins: false,
            limits: Default::default(),
        },
        room: RoomConfig {
            name: "lobby".into(),
            port: 34_001,
            settings: RoomSettings::default(),
            created_unix_ms: 1_700_000_000_000,
        },
        history: Some((7, 3)),
        reference: Reference::default(),
        recent: Vec::new(),
        follow: 2,
    }
}

/// The checked-in `ipc_frame` seeds are what the encoder makes now: an IPC
/// change that alters them fails here; `UPDATE_SEEDS=1` rewrites them.
#[test]
fn ipc_frame_seeds_match_the_encoder() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ipc_frame");
    let update = std::env::var_os("UPDATE_SEEDS").is_some();
    if update {
        std::fs::create_dir_all(&dir).expect("corpus dir");
    }
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        if update {
            std::fs::write(&path, bytes).expect("seed written");
        } else {
            let on_disk = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SEEDS=1 writes it)", path.display()));
            assert_eq!(
                on_disk,
                bytes,
                "{} is stale: rewrite the seeds with UPDATE_SEEDS=1",
                path.display()
            );
        }
    };
    let body = |m: &dyn erased::Encode| m.encode();

    let mut hello = Hello::new("lobby".into(), 4242, 34_001);
    write("hello", &body(&hello));
    hello.listening = true;
    hello.room = Some(snapshot().room);
    write("hello_listening", &body(&hello));
    write(
        "hello_accepted",
        &body(&HelloReply::Accepted(Box::new(snapshot()))),
    );
    write(
        "hello_refused",
        &body(&HelloReply::Refused {
            reason: "no such room".into(),
        }),
    );
    let master = [
        ("m_ping", MasterMsg::Ping { nonce: 9 }),
        ("m_snapshot", MasterMsg::Snapshot(Box::new(snapshot()))),
        (
            "m_shutdown",
            MasterMsg::Shutdown {
                reason: "bye".into(),
                restart: true,
            },
        ),
        (
            "m_history_page",
            MasterMsg::HistoryPage {
                id: 1,
                messages: vec![message(1), message(2)],
                more: true,
                error: None,
            },
        ),
        (
            "m_failed",
            MasterMsg::Failed {
                seqs: vec![4, 5],
                code: "conflict".into(),
            },
        ),
        (
            "m_kick",
            MasterMsg::Kick {
                user: "u1".into(),
                reason: "spam".into(),
            },
        ),
    ];
    for (name, m) in &master {
        write(name, &body(m));
    }
    let worker = [
        ("w_listening", WorkerMsg::Listening { port: 34_001 }),
        ("w_messages", WorkerMsg::Messages(vec![message(3)])),
        (
            "w_history_query",
            WorkerMsg::HistoryQuery {
                id: 1,
                before: 3,
                limit: 50,
            },
        ),
        ("w_reference_wanted", WorkerMsg::ReferenceWanted { have: 2 }),
        ("w_stats", WorkerMsg::Stats(Default::default())),
    ];
    for (name, m) in &worker {
        write(name, &body(m));
    }

    // What follows a hello reply: reference chunks and recent messages,
    // framed on one stream.
    let mut stream = BytesMut::new();
    let mut frames = Vec::new();
    for c in chunks::split(chunks::full(&reference(4, "new")), 40) {
        frames.push(MasterMsg::ReferenceDelta(Box::new(c)));
    }
    for c in chunks::messages((1..=4).map(message).collect(), 60) {
        frames.push(MasterMsg::Recent(c));
    }
    frames.push(MasterMsg::ReferenceDelta(Box::new(chunks::delta(
        &reference(4, "new"),
        &reference(5, "newer"),
    ))));
    for f in &frames {
        framing::codec()
            .encode(framing::encode(f).expect("encodes"), &mut stream)
            .expect("frames");
    }
    write("stream_after_hello", &stream);

    let pair = (reference(4, "old"), reference(5, "new"), 48u16);
    write(
        "reference_pair",
        &postcard::to_stdvec(&pair).expect("encodes"),
    );
}

/// Encoding of any message, for the list above.
mod erased {
    pub trait Encode {
        fn encode(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Vec<u8> {
            chat_shared::framing::encode(self)
                .expect("encodes")
                .to_vec()
        }
    }
}
