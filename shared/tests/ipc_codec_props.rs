//! Property tests of the IPC codec: every message of both directions
//! survives encode → frame → decode; any bytes decode to an error, never a
//! panic; a truncated frame is an error; reference data split in chunks
//! rebuilds what it describes.

use bytes::BytesMut;
use chat_shared::chunks;
use chat_shared::direct::{
    ConversationSummary, DirectEvent, DirectMessage, DirectReply, DirectRequest, DmSummary,
    Presence,
};
use chat_shared::framing::{self, MAX_FRAME};
use chat_shared::ipc::{
    Ban, Filter, Hello, HelloReply, Histogram, MasterMsg, Reference, ReferenceDelta, RoomConfig,
    RoomStats, ServerConfig, Snapshot, StoredMessage, WorkerMsg,
};
use chat_shared::limits::Limits;
use chat_shared::reference::ReferenceIndex;
use chat_shared::settings::{RoomMode, RoomSettings};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

/// Any characters, control and multi-byte ones included.
fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

fn stored() -> impl Strategy<Value = StoredMessage> {
    (
        any::<u64>(),
        any::<u64>(),
        text(),
        text(),
        text(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(epoch, seq, user_id, name, text, ts, deleted)| StoredMessage {
                epoch,
                seq,
                user_id,
                name,
                text,
                ts,
                deleted,
            },
        )
}

fn ban() -> impl Strategy<Value = Ban> {
    (
        text(),
        option::of(text()),
        option::of(any::<u64>()),
        option::of(text()),
    )
        .prop_map(|(user_id, room, until_ms, reason)| Ban {
            user_id,
            room,
            until_ms,
            reason,
        })
}

fn filter() -> impl Strategy<Value = Filter> {
    (text(), any::<bool>()).prop_map(|(pattern, reject)| Filter { pattern, reject })
}

fn reference() -> impl Strategy<Value = Reference> {
    (
        any::<u64>(),
        vec((text(), text()), 0..4),
        vec(ban(), 0..3),
        vec(filter(), 0..3),
    )
        .prop_map(|(version, users, bans, filters)| Reference {
            version,
            users,
            bans,
            filters,
        })
}

fn reference_delta() -> impl Strategy<Value = ReferenceDelta> {
    (
        option::of(any::<u64>()),
        any::<u64>(),
        vec((text(), option::of(text())), 0..4),
        vec((text(), vec(ban(), 0..2)), 0..3),
        option::of(vec(filter(), 0..3)),
    )
        .prop_map(|(base, version, users, bans, filters)| ReferenceDelta {
            base,
            version,
            users,
            bans,
            filters,
        })
}

fn settings() -> impl Strategy<Value = RoomSettings> {
    (
        option::of(any::<u32>()),
        any::<bool>(),
        any::<u32>(),
        option::of(any::<u64>()),
        any::<u64>(),
        any::<u32>(),
        prop_oneof![Just(RoomMode::Chat), Just(RoomMode::Shootout)],
    )
        .prop_map(
            |(
                max_members,
                guests,
                history_size,
                time_limit_secs,
                slow_mode_ms,
                max_text_len,
                mode,
            )| {
                RoomSettings {
                    max_members,
                    guests,
                    history_size,
                    time_limit_secs,
                    slow_mode_ms,
                    max_text_len,
                    mode,
                }
            },
        )
}

fn room_config() -> impl Strategy<Value = RoomConfig> {
    (text(), any::<u16>(), settings(), any::<u64>()).prop_map(
        |(name, port, settings, created_unix_ms)| RoomConfig {
            name,
            port,
            settings,
            created_unix_ms,
        },
    )
}

// Field by field on purpose: a field added to `Limits` later keeps its default.
#[allow(clippy::field_reassign_with_default)]
fn limits() -> impl Strategy<Value = Limits> {
    (
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>()),
        vec(text(), 0..3),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
        vec(text(), 0..3),
    )
        .prop_map(|(t, trusted_proxies, caps, allowed_origins)| {
            let mut l = Limits::default();
            l.header_timeout_ms = t.0;
            l.idle_timeout_ms = t.1;
            l.handshake_timeout_ms = t.2;
            l.new_conns_per_ip_per_sec = t.3;
            l.trusted_proxies = trusted_proxies;
            l.max_room_connections = caps.0;
            l.max_user_connections = caps.1;
            l.max_ip_connections = caps.2;
            l.welcome_history_bytes = caps.3;
            l.allowed_origins = allowed_origins;
            l
        })
}

fn server_config() -> impl Strategy<Value = ServerConfig> {
    (
        option::of(text()),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<bool>(),
        limits(),
    )
        .prop_map(
            |(
                jwt_secret,
                ping_interval_ms,
                max_frame_bytes,
                outbound_queue_bytes,
                ipc_heartbeat_ms,
                refuse_joins,
                limits,
            )| ServerConfig {
                jwt_secret,
                ping_interval_ms,
                max_frame_bytes,
                outbound_queue_bytes,
                ipc_heartbeat_ms,
                refuse_joins,
                limits,
            },
        )
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        any::<u64>(),
        server_config(),
        room_config(),
        option::of((any::<u64>(), any::<u64>())),
        reference(),
        vec(stored(), 0..3),
        any::<u32>(),
    )
        .prop_map(
            |(version, server, room, history, reference, recent, follow)| Snapshot {
                version,
                server,
                room,
                history,
                reference,
                recent,
                follow,
            },
        )
}

fn histogram() -> impl Strategy<Value = Histogram> {
    (any::<[u64; 10]>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(buckets, over, count, sum_ns)| Histogram {
            buckets,
            over,
            count,
            sum_ns,
        },
    )
}

fn stats() -> impl Strategy<Value = RoomStats> {
    (
        (any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>()),
        (any::<u64>(), any::<u64>(), any::<u32>()),
        histogram(),
    )
        .prop_map(|(a, b, fanout)| RoomStats {
            members: a.0,
            connections: a.1,
            messages_in: a.2,
            messages_out: a.3,
            epoch: b.0,
            seq: b.1,
            pending_writes: b.2,
            fanout,
        })
}

fn hello() -> impl Strategy<Value = Hello> {
    (
        text(),
        any::<u32>(),
        any::<u16>(),
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
        option::of(room_config()),
    )
        .prop_map(|(name, pid, port, listening, epoch, seq, room)| Hello {
            listening,
            epoch,
            seq,
            room,
            ..Hello::new(name, pid, port)
        })
}

fn hello_reply() -> impl Strategy<Value = HelloReply> {
    prop_oneof![
        snapshot().prop_map(|s| HelloReply::Accepted(Box::new(s))),
        text().prop_map(|reason| HelloReply::Refused { reason }),
    ]
}

fn worker_msg() -> impl Strategy<Value = WorkerMsg> {
    prop_oneof![
        any::<u16>().prop_map(|port| WorkerMsg::Listening { port }),
        (any::<u16>(), text()).prop_map(|(port, reason)| WorkerMsg::BindFailed { port, reason }),
        any::<u64>().prop_map(|nonce| WorkerMsg::Pong { nonce }),
        stats().prop_map(WorkerMsg::Stats),
        text().prop_map(|reason| WorkerMsg::Ended { reason }),
        vec(stored(), 0..4).prop_map(WorkerMsg::Messages),
        any::<u64>().prop_map(|seq| WorkerMsg::Deleted { seq }),
        (any::<u64>(), any::<u64>(), any::<u32>())
            .prop_map(|(id, before, limit)| { WorkerMsg::HistoryQuery { id, before, limit } }),
        any::<u64>().prop_map(|have| WorkerMsg::ReferenceWanted { have }),
        text().prop_map(|user| WorkerMsg::UserJoined { user }),
        text().prop_map(|user| WorkerMsg::UserLeft { user }),
        (any::<bool>(), vec(text(), 0..4))
            .prop_map(|(reset, users)| WorkerMsg::Users { reset, users }),
        (any::<u64>(), text(), any::<u64>(), direct_request()).prop_map(
            |(id, user, conn, request)| WorkerMsg::Direct {
                id,
                user,
                conn,
                request
            }
        ),
        (any::<u64>(), vec(text(), 0..4))
            .prop_map(|(conn, users)| WorkerMsg::Watch { conn, users }),
        (text(), text()).prop_map(|(user, reason)| WorkerMsg::Ban { user, reason }),
        text().prop_map(|user| WorkerMsg::Unban { user }),
    ]
}

fn direct_message() -> impl Strategy<Value = DirectMessage> {
    (
        (text(), any::<u64>(), text(), text()),
        (text(), text(), any::<u64>()),
    )
        .prop_map(
            |((conversation, seq, from, from_name), (to, text, ts))| DirectMessage {
                conversation,
                seq,
                from,
                from_name,
                to,
                text,
                ts,
            },
        )
}

fn direct_request() -> impl Strategy<Value = DirectRequest> {
    prop_oneof![
        (text(), text(), text()).prop_map(|(to, name, text)| DirectRequest::Send {
            to,
            name,
            text
        }),
        (text(), any::<bool>()).prop_map(|(user, block)| DirectRequest::Block { user, block }),
        (text(), any::<u64>(), any::<u32>()).prop_map(|(with, before, limit)| {
            DirectRequest::History {
                with,
                before,
                limit,
            }
        }),
        (text(), any::<u64>()).prop_map(|(with, seq)| DirectRequest::Read { with, seq }),
        any::<u64>().prop_map(|seq| DirectRequest::RoomRead { seq }),
        Just(DirectRequest::State),
    ]
}

fn direct_reply() -> impl Strategy<Value = DirectReply> {
    let summary = (
        any::<u64>(),
        vec(
            (text(), text(), any::<u64>(), option::of(direct_message())).prop_map(
                |(conversation, with, unread, last)| ConversationSummary {
                    conversation,
                    with,
                    unread,
                    last,
                },
            ),
            0..3,
        ),
    )
        .prop_map(|(unread, conversations)| DmSummary {
            unread,
            conversations,
        });
    prop_oneof![
        (text(), any::<u64>())
            .prop_map(|(conversation, seq)| DirectReply::Stored { conversation, seq }),
        (text(), vec(direct_message(), 0..3), any::<bool>()).prop_map(|(with, messages, more)| {
            DirectReply::History {
                with,
                messages,
                more,
            }
        }),
        (text(), any::<bool>()).prop_map(|(user, blocked)| DirectReply::Blocked { user, blocked }),
        (option::of(text()), any::<u64>())
            .prop_map(|(conversation, seq)| DirectReply::Read { conversation, seq }),
        (any::<u64>(), summary).prop_map(|(last_read, dms)| DirectReply::State { last_read, dms }),
        (text(), text()).prop_map(|(code, message)| DirectReply::Error { code, message }),
    ]
}

fn direct_event() -> impl Strategy<Value = DirectEvent> {
    prop_oneof![
        direct_message().prop_map(DirectEvent::Dm),
        (text(), text(), any::<u64>()).prop_map(|(by, conversation, seq)| DirectEvent::Read {
            by,
            conversation,
            seq
        }),
    ]
}

fn master_msg() -> impl Strategy<Value = MasterMsg> {
    prop_oneof![
        any::<u64>().prop_map(|nonce| MasterMsg::Ping { nonce }),
        snapshot().prop_map(|s| MasterMsg::Snapshot(Box::new(s))),
        text().prop_map(|text| MasterMsg::Notice { text }),
        (text(), text()).prop_map(|(user, reason)| MasterMsg::Kick { user, reason }),
        (text(), any::<bool>())
            .prop_map(|(reason, restart)| MasterMsg::Shutdown { reason, restart }),
        any::<u64>().prop_map(|seq| MasterMsg::Durable { seq }),
        (
            any::<u64>(),
            vec(stored(), 0..3),
            any::<bool>(),
            option::of(text())
        )
            .prop_map(|(id, messages, more, error)| MasterMsg::HistoryPage {
                id,
                messages,
                more,
                error,
            }),
        reference().prop_map(|r| MasterMsg::Reference(Box::new(r))),
        (vec(any::<u64>(), 0..4), text()).prop_map(|(seqs, code)| MasterMsg::Failed { seqs, code }),
        vec(stored(), 0..4).prop_map(MasterMsg::Recent),
        reference_delta().prop_map(|d| MasterMsg::ReferenceDelta(Box::new(d))),
        (any::<u64>(), direct_reply()).prop_map(|(id, reply)| MasterMsg::DirectReply { id, reply }),
        (vec(text(), 0..3), option::of(any::<u64>()), direct_event()).prop_map(
            |(users, except, event)| MasterMsg::Deliver {
                users,
                except,
                event
            }
        ),
        (
            vec(any::<u64>(), 0..3),
            vec(
                (text(), any::<bool>(), option::of(any::<u64>())).prop_map(
                    |(user, online, last_seen)| Presence {
                        user,
                        online,
                        last_seen
                    }
                ),
                0..3
            )
        )
            .prop_map(|(conns, states)| MasterMsg::Presence { conns, states }),
    ]
}

/// Encodes `m` into a frame on a stream (length prefix and body), reads it
/// back with the codec and decodes it.
fn through_the_codec<M>(m: &M) -> M
where
    M: Serialize + DeserializeOwned,
{
    let body = framing::encode(m).expect("encodes");
    assert!(body.len() <= MAX_FRAME);
    let mut stream = BytesMut::new();
    framing::codec()
        .encode(body.clone(), &mut stream)
        .expect("frames");
    assert_eq!(stream.len(), body.len() + 4);
    let frame = framing::codec()
        .decode(&mut stream)
        .expect("a whole frame")
        .expect("one frame");
    assert!(stream.is_empty());
    framing::decode(&frame).expect("decodes")
}

/// Every strict prefix of a frame body fails to decode as `M`.
fn prefixes_fail<M: DeserializeOwned + std::fmt::Debug>(body: &[u8]) {
    for cut in 0..body.len() {
        let r = framing::decode::<M>(&body[..cut]);
        assert!(
            r.is_err(),
            "a prefix of {cut}/{} bytes decoded: {r:?}",
            body.len()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(200)))]

    #[test]
    fn master_messages_round_trip(m in master_msg()) {
        prop_assert_eq!(through_the_codec(&m), m);
    }

    #[test]
    fn worker_messages_round_trip(m in worker_msg()) {
        prop_assert_eq!(through_the_codec(&m), m);
    }

    #[test]
    fn hellos_and_replies_round_trip(h in hello(), r in hello_reply()) {
        let body = framing::encode(&h).expect("encodes");
        prop_assert_eq!(framing::decode_hello(&body).expect("our own hello"), h.clone());
        let head = framing::decode_hello_head(&body).expect("a head");
        prop_assert_eq!((head.name, head.pid, head.port), (h.name, h.pid, h.port));
        prop_assert_eq!(through_the_codec(&r), r);
    }

    #[test]
    fn truncated_bodies_are_errors(m in master_msg(), w in worker_msg(), h in hello()) {
        prefixes_fail::<MasterMsg>(&framing::encode(&m).expect("encodes"));
        prefixes_fail::<WorkerMsg>(&framing::encode(&w).expect("encodes"));
        let body = framing::encode(&h).expect("encodes");
        for cut in 0..body.len() {
            prop_assert!(framing::decode_hello(&body[..cut]).is_err());
        }
    }

    #[test]
    fn truncated_frames_on_a_stream_are_errors(m in master_msg(), cut in any::<prop::sample::Index>()) {
        let body = framing::encode(&m).expect("encodes");
        let mut stream = BytesMut::new();
        framing::codec().encode(body, &mut stream).expect("frames");
        let cut = 1 + cut.index(stream.len() - 1);
        let mut part = BytesMut::from(&stream[..cut]);
        let mut codec = framing::codec();
        // Not a frame yet; at the end of the stream, an error.
        prop_assert!(matches!(codec.decode(&mut part), Ok(None)));
        prop_assert!(codec.decode_eof(&mut part).is_err());
    }

    #[test]
    fn any_bytes_decode_without_panicking(bytes in vec(any::<u8>(), 0..256)) {
        let _ = framing::decode::<MasterMsg>(&bytes);
        let _ = framing::decode::<WorkerMsg>(&bytes);
        let _ = framing::decode::<HelloReply>(&bytes);
        let _ = framing::decode_hello(&bytes);
        let _ = framing::decode_hello_head(&bytes);
        let _ = framing::decode_version_notice(&bytes);
        let mut stream = BytesMut::from(&bytes[..]);
        let mut codec = framing::codec();
        while let Ok(Some(frame)) = codec.decode(&mut stream) {
            prop_assert!(frame.len() <= MAX_FRAME);
            let _ = framing::decode::<MasterMsg>(&frame);
        }
    }

    #[test]
    fn chunks_of_a_delta_rebuild_the_new_data(
        old in reference(),
        new in reference(),
        max in 1usize..200,
    ) {
        let (old, new) = (unique_users(old), unique_users(new));
        let mut r = ReferenceIndex::from_reference(old.clone());
        for c in chunks::split(chunks::delta(&old, &new), max) {
            prop_assert!(r.apply(&c));
            let frame = framing::encode(&MasterMsg::ReferenceDelta(Box::new(c))).expect("encodes");
            prop_assert!(frame.len() <= MAX_FRAME);
        }
        prop_assert_eq!(sorted(r.to_reference()), sorted(new.clone()));
        let mut fresh = ReferenceIndex::from_reference(Reference::default());
        for c in chunks::split(chunks::full(&new), max) {
            prop_assert!(fresh.apply(&c));
        }
        prop_assert_eq!(sorted(fresh.to_reference()), sorted(new));
    }

    #[test]
    fn recent_messages_chunk_in_order(all in vec(stored(), 0..20), max in 1usize..300) {
        let parts = chunks::messages(all.clone(), max);
        for p in &parts {
            let bytes: usize = p.iter().map(StoredMessage::max_encoded_size).sum();
            prop_assert!(p.len() == 1 || bytes <= max);
            let frame = framing::encode(&MasterMsg::Recent(p.clone())).expect("encodes");
            prop_assert!(frame.len() <= bytes + 16);
        }
        prop_assert_eq!(parts.into_iter().flatten().collect::<Vec<_>>(), all);
    }
}

/// A profile is listed once per user (the store's key).
fn unique_users(mut r: Reference) -> Reference {
    let mut seen = std::collections::HashSet::new();
    r.users.retain(|(id, _)| seen.insert(id.clone()));
    r
}

fn sorted(mut r: Reference) -> Reference {
    r.users.sort();
    r.bans.sort_by(|a, b| {
        (&a.user_id, &a.room, a.until_ms, &a.reason)
            .cmp(&(&b.user_id, &b.room, b.until_ms, &b.reason))
    });
    r
}

/// Cases per property: `default`, or `PROPTEST_CASES` for a longer run.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
