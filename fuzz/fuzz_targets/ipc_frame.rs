//! The IPC decoder on any bytes: as one frame body of every message type,
//! as a byte stream cut into frames by the length codec (each frame decoded
//! and reference-data chunks reassembled in order), and as a pair of
//! reference data sets whose delta, split into chunks, must rebuild the new
//! set.
//!
//! Invariants: nothing panics; a decoded value re-encodes and decodes to
//! itself; the codec never yields a frame over the limit; chunks of a delta
//! rebuild what the delta describes.

#![no_main]

use bytes::BytesMut;
use chat_shared::chunks;
use chat_shared::reference::ReferenceIndex;
use chat_shared::framing::{self, MAX_FRAME};
use chat_shared::ipc::{Ban, Hello, HelloReply, MasterMsg, Reference, StoredMessage, WorkerMsg};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    bodies(data);
    stream(data);
    reassembly(data);
});

/// A decoded value survives encode → decode unchanged.
fn round_trip<M>(data: &[u8]) -> Option<M>
where
    M: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let m: M = framing::decode(data).ok()?;
    let bytes = framing::encode(&m).expect("a decoded message encodes");
    let again: M = framing::decode(&bytes).expect("an encoded message decodes");
    assert_eq!(m, again);
    Some(m)
}

fn bodies(data: &[u8]) {
    round_trip::<MasterMsg>(data);
    round_trip::<WorkerMsg>(data);
    round_trip::<HelloReply>(data);
    round_trip::<Hello>(data);
    if let Ok(h) = framing::decode_hello(data) {
        assert_eq!(h.magic, chat_shared::ipc::MAGIC);
        assert_eq!(h.version, chat_shared::ipc::ipc_version());
    }
    if let Ok(head) = framing::decode_hello_head(data) {
        assert_eq!(head.magic, chat_shared::ipc::MAGIC);
    }
    if let Some(n) = framing::decode_version_notice(data) {
        assert_eq!(n.magic, chat_shared::ipc::MAGIC);
    }
}

/// The bytes as they arrive on a socket: frames cut by the length codec,
/// each decoded as the master's messages; reference chunks applied in order
/// and recent-message chunks collected, as a worker does after its hello.
fn stream(data: &[u8]) {
    let mut codec = framing::codec();
    let mut buf = BytesMut::from(data);
    let mut reference = ReferenceIndex::from_reference(Reference::default());
    let mut recent: Vec<StoredMessage> = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => {
                assert!(frame.len() <= MAX_FRAME);
                match round_trip::<MasterMsg>(&frame) {
                    Some(MasterMsg::ReferenceDelta(d)) => {
                        let before = reference.to_reference();
                        if !reference.apply(&d) {
                            assert_eq!(
                                reference.to_reference(),
                                before,
                                "a refused chunk changes nothing"
                            );
                        } else {
                            assert_eq!(reference.version, d.version);
                        }
                    }
                    Some(MasterMsg::Recent(chunk)) => recent.extend(chunk),
                    _ => {
                        round_trip::<WorkerMsg>(&frame);
                    }
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
}

fn unique<'a>(ids: impl Iterator<Item = &'a String>) -> bool {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter().all(|i| seen.insert(i))
}

fn ban_key(b: &Ban) -> (String, Option<String>, Option<u64>, Option<String>) {
    (
        b.user_id.clone(),
        b.room.clone(),
        b.until_ms,
        b.reason.clone(),
    )
}

fn sorted(mut r: Reference) -> Reference {
    r.users.sort();
    r.bans.sort_by_key(ban_key);
    r
}

/// Two reference data sets: the delta between them, cut in small chunks
/// and applied in order, turns the old into the new; recent messages cut in
/// chunks keep their order.
fn reassembly(data: &[u8]) {
    let Ok(((old, new, max), _)) = postcard::take_from_bytes::<(Reference, Reference, u16)>(data)
    else {
        return;
    };
    let max = usize::from(max).max(1);
    // A profile is listed once per user (the store's key).
    if unique(old.users.iter().map(|u| &u.0)) && unique(new.users.iter().map(|u| &u.0)) {
        let mut r = ReferenceIndex::from_reference(old.clone());
        for c in chunks::split(chunks::delta(&old, &new), max) {
            assert!(r.apply(&c), "every chunk applies in order");
        }
        assert_eq!(sorted(r.to_reference()), sorted(new.clone()));
        let mut from_scratch = ReferenceIndex::from_reference(Reference {
            version: u64::MAX,
            ..Default::default()
        });
        for c in chunks::split(chunks::full(&new), max) {
            assert!(from_scratch.apply(&c));
        }
        assert_eq!(sorted(from_scratch.to_reference()), sorted(new.clone()));
    }
    let msgs: Vec<StoredMessage> = old
        .users
        .iter()
        .enumerate()
        .map(|(i, (id, name))| StoredMessage {
            epoch: 1,
            seq: i as u64 + 1,
            user_id: id.clone(),
            name: name.clone(),
            text: new.users.get(i).map(|u| u.1.clone()).unwrap_or_default(),
            ts: 0,
            deleted: false,
        })
        .collect();
    let n = msgs.len();
    let parts = chunks::messages(msgs.clone(), max);
    for p in &parts {
        assert!(!p.is_empty());
        let bytes: usize = p.iter().map(StoredMessage::max_encoded_size).sum();
        assert!(
            p.len() == 1 || bytes <= max,
            "a chunk holds one message or fits"
        );
        let frame = framing::encode(&MasterMsg::Recent(p.clone())).expect("encodes");
        assert!(
            frame.len() <= bytes + 16,
            "max_encoded_size bounds the encoding"
        );
    }
    let flat: Vec<StoredMessage> = parts.into_iter().flatten().collect();
    assert_eq!(flat.len(), n);
    assert_eq!(flat, msgs);
}
