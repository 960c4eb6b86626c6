//! Room names and room settings, as the master receives them in
//! `POST /api/v1/room/{name}` (any bytes: the path segment and the body).
//!
//! Invariants: nothing panics; an accepted name follows the rule
//! (1–64 of `[A-Za-z0-9_-]`) and reaches a worker's command line intact;
//! accepted settings pass their own validation and survive a JSON round
//! trip; refused settings say why.

#![no_main]

use chat_shared::room_name::{self, MAX_LEN};
use chat_shared::settings::RoomSettings;
use chatroom::fuzzing::room_from_command_line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    name(data);
    settings(data);
});

fn name(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let rule = !name.is_empty()
        && name.len() <= MAX_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let accepted = room_name::validate(name).is_ok();
    assert_eq!(accepted, rule, "{name:?}");
    if accepted {
        // `--room=<name>`: even a name starting with '-' is no flag.
        assert_eq!(room_from_command_line(name).as_deref(), Some(name));
    }
}

fn settings(data: &[u8]) {
    match RoomSettings::from_json(data) {
        Ok(s) => {
            assert!(s.validate().is_ok());
            let json = serde_json::to_vec(&s).expect("settings serialize");
            assert_eq!(RoomSettings::from_json(&json).as_ref(), Ok(&s));
        }
        Err(e) => assert!(e.starts_with("invalid settings"), "{e}"),
    }
}
