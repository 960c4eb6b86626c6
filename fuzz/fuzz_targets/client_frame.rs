//! The client frame parser, alone and inside a room: any text as a client
//! WebSocket text frame (lines as successive frames from the room's members
//! in turn).
//!
//! Invariants: nothing panics; an accepted frame serializes back to a frame
//! that parses to the same command; a refused frame gets a stable error
//! code; everything the room queues for a client is a valid server frame.

#![no_main]

use chat_shared::limits::MAX_ERROR_MESSAGE_CHARS;
use chat_shared::protocol::{ClientMsg, ServerMsg, code};
use chat_shared::settings::RoomSettings;
use chatroom::fuzzing::{FuzzRoom, parse_client_frame};
use libfuzzer_sys::fuzz_target;

/// Frames handed to one room per input (the connection's burst is 100).
const MAX_FRAMES: usize = 64;

fuzz_target!(|data: &[u8]| {
    // A WebSocket text frame is valid UTF-8 (the socket layer checks).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    parse(text);
    for line in text.lines().take(MAX_FRAMES) {
        parse(line);
    }
    room(text);
});

fn parse(text: &str) {
    match parse_client_frame(text) {
        Ok(msg) => {
            let json = serde_json::to_string(&msg).expect("a command serializes");
            let again = parse_client_frame(&json).expect("a serialized command parses");
            match (&msg, &again) {
                // Signal data is free JSON: floats need not survive text exactly.
                (ClientMsg::Signal { to: a, .. }, ClientMsg::Signal { to: b, .. }) => {
                    assert_eq!(a, b)
                }
                _ => assert_eq!(msg, again),
            }
        }
        Err(refused) => {
            assert!(
                [code::BAD_JSON, code::BAD_REQUEST, code::UNKNOWN_TYPE].contains(&refused.code),
                "{refused:?}"
            );
            // An unknown type is echoed cut short, never whole.
            // (32 characters, each escaped in at most 10 bytes.)
            assert!(refused.code != code::UNKNOWN_TYPE || refused.message.len() <= 13 + 2 + 320);
        }
    }
}

fn room(text: &str) {
    let settings = RoomSettings {
        max_text_len: 64,
        history_size: 5,
        ..RoomSettings::default()
    };
    let mut room = FuzzRoom::new(settings);
    for (i, line) in text.lines().take(MAX_FRAMES).enumerate() {
        room.text(i, line);
    }
    for i in 0..room.clients() {
        let frames = room
            .frames(i)
            .unwrap_or_else(|bad| panic!("invalid server frame {bad:?}"));
        for f in frames {
            match f {
                // The room's text limit holds for everything it relays.
                ServerMsg::Message(m) => assert!(m.text.chars().count() <= 64),
                ServerMsg::Whisper { text, .. } => assert!(text.chars().count() <= 64),
                // Errors never echo more than their cap.
                ServerMsg::Error { message, .. } => {
                    assert!(message.chars().count() <= MAX_ERROR_MESSAGE_CHARS + 1)
                }
                _ => {}
            }
        }
    }
}
