//! The resume parameters of a join (`?since=&epoch=` among the others), as
//! the room's port parses the query string, then the join itself in a room
//! at epoch 7 whose memory holds messages 21 to 120.
//!
//! Invariants: nothing panics; a join is resumed exactly when the epoch is
//! the room's and every message after `since` is still in memory; a resumed
//! welcome is followed by those messages, in order, and nothing else; a
//! welcome that is not resumed carries history instead.

#![no_main]

use chat_shared::ipc::StoredMessage;
use chat_shared::protocol::{Role, ServerMsg};
use chat_shared::settings::RoomSettings;
use chatroom::fuzzing::{FuzzRoom, Identity, join_query};
use libfuzzer_sys::fuzz_target;

const EPOCH: u64 = 7;
const OLDEST: u64 = 21;
const SEQ: u64 = 120;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(params) = join_query(query) else {
        return;
    };
    let recent: Vec<StoredMessage> = (OLDEST..=SEQ)
        .map(|seq| StoredMessage {
            epoch: EPOCH,
            seq,
            user_id: "u1".into(),
            name: "Ann".into(),
            text: format!("message {seq}"),
            ts: seq * 1000,
            deleted: seq % 10 == 0,
        })
        .collect();
    let settings = RoomSettings {
        history_size: 30,
        ..RoomSettings::default()
    };
    let mut room = FuzzRoom::empty(settings, EPOCH, SEQ, recent);
    let who = Identity {
        id: "u2".into(),
        name: "Bob".into(),
        role: Role::Member,
    };
    let i = room
        .join(who, params.resume)
        .expect("an empty room admits a member");
    let frames = room
        .frames(i)
        .unwrap_or_else(|bad| panic!("invalid frame {bad:?}"));
    let Some(ServerMsg::Welcome {
        resumed,
        history,
        seq,
        epoch,
        deleted,
        ..
    }) = frames.first()
    else {
        panic!("the first frame is a welcome: {frames:?}");
    };
    assert_eq!((*epoch, *seq), (EPOCH, SEQ));
    let servable = params
        .resume
        .is_some_and(|r| r.epoch == EPOCH && r.since <= SEQ && r.since + 1 >= OLDEST);
    assert_eq!(*resumed, servable, "{params:?}");
    if let (true, Some(r)) = (*resumed, params.resume) {
        assert!(history.is_empty());
        assert!(deleted.iter().all(|d| *d <= r.since && d % 10 == 0));
        let replay: Vec<u64> = frames[1..]
            .iter()
            .map(|f| match f {
                ServerMsg::Message(m) => m.seq,
                other => panic!("only messages follow a resumed welcome: {other:?}"),
            })
            .collect();
        assert_eq!(replay, (r.since + 1..=SEQ).collect::<Vec<_>>());
    } else {
        assert_eq!(frames.len(), 1, "nothing follows a fresh welcome");
        assert!(!history.is_empty() && history.len() <= 30);
        assert_eq!(history.last().map(|m| m.seq), Some(SEQ));
    }
});
