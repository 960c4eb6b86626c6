//! Property tests of the client frame parser and of the room behind it:
//! any text or JSON never panics and always gets a valid answer; frames
//! built from the protocol's fields parse to the command they describe;
//! the room's limits (text length, reasons, pages, mutes, signal size)
//! hold whatever the values.

use chat_shared::protocol::{ClientMsg, ServerMsg, code};
use chat_shared::settings::RoomSettings;
use chatroom::fuzzing::{FUZZ_MEMBERS, FuzzRoom, parse_client_frame};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Client indices of a [`FuzzRoom`] (see [`FUZZ_MEMBERS`]).
const OWNER: usize = 0;
const MEMBER: usize = 2;

fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    json_of(any::<f64>().prop_map(Value::from).boxed())
}

/// JSON without floats: text need not carry a float exactly (serde_json
/// reads the last digit of some of them differently).
fn exact_json() -> impl Strategy<Value = Value> {
    json_of(any::<i32>().prop_map(Value::from).boxed())
}

fn json_of(number: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        number,
        text(8).prop_map(Value::from),
        prop_oneof![
            Just("say"),
            Just("whisper"),
            Just("history"),
            Just("typing"),
            Just("kick"),
            Just("mute"),
            Just("ban"),
            Just("delete"),
            Just("signal"),
            Just("members"),
            Just("ping"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec(
                (
                    prop_oneof![
                        Just("type".to_owned()),
                        Just("text".to_owned()),
                        Just("to".to_owned()),
                        Just("user".to_owned()),
                        Just("limit".to_owned()),
                        text(6)
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A valid client frame as JSON written by hand (not by the type's own
/// serializer), and the command it must parse to.
fn valid_frame() -> impl Strategy<Value = (Value, ClientMsg)> {
    let s = || text(20);
    prop_oneof![
        (s(), option::of(s())).prop_map(|(text, client_id)| {
            let mut v = json!({"type": "say", "text": text});
            if let Some(c) = &client_id {
                v["client_id"] = json!(c);
            }
            (v, ClientMsg::Say { text, client_id })
        }),
        (s(), s()).prop_map(|(to, text)| (
            json!({"type": "whisper", "to": to, "text": text}),
            ClientMsg::Whisper { to, text }
        )),
        (option::of(any::<u64>()), option::of(any::<u32>())).prop_map(|(before, limit)| (
            json!({"type": "history", "before": before, "limit": limit}),
            ClientMsg::History { before, limit }
        )),
        Just((json!({"type": "typing"}), ClientMsg::Typing)),
        (s(), option::of(s())).prop_map(|(user, reason)| (
            json!({"type": "kick", "user": user, "reason": reason}),
            ClientMsg::Kick { user, reason }
        )),
        (s(), any::<u64>()).prop_map(|(user, secs)| (
            json!({"type": "mute", "user": user, "secs": secs}),
            ClientMsg::Mute { user, secs }
        )),
        (s(), option::of(s())).prop_map(|(user, reason)| (
            json!({"type": "ban", "user": user, "reason": reason}),
            ClientMsg::Ban { user, reason }
        )),
        any::<u64>().prop_map(|seq| (
            json!({"type": "delete", "seq": seq}),
            ClientMsg::Delete { seq }
        )),
        (s(), exact_json()).prop_map(|(to, data)| (
            json!({"type": "signal", "to": to, "data": data}),
            ClientMsg::Signal { to, data }
        )),
        (option::of(s()), option::of(any::<u32>())).prop_map(|(after, limit)| (
            json!({"type": "members", "after": after, "limit": limit}),
            ClientMsg::Members { after, limit }
        )),
        Just((json!({"type": "ping"}), ClientMsg::Ping)),
    ]
}

/// Every frame the room queued for client `i`: all valid server frames.
fn frames(room: &mut FuzzRoom, i: usize) -> Vec<ServerMsg> {
    room.frames(i)
        .unwrap_or_else(|bad| panic!("the room queued an invalid frame: {bad}"))
}

fn error_codes(frames: &[ServerMsg]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerMsg::Error { code, .. } => Some(code.clone()),
            _ => None,
        })
        .collect()
}

fn room(max_text_len: u32) -> FuzzRoom {
    FuzzRoom::new(RoomSettings {
        max_text_len,
        ..RoomSettings::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(128)))]

    #[test]
    fn any_text_is_parsed_or_refused_with_a_code(t in text(200)) {
        if let Err(r) = parse_client_frame(&t) {
            prop_assert!([code::BAD_JSON, code::BAD_REQUEST, code::UNKNOWN_TYPE].contains(&r.code));
        }
        let mut r = room(4000);
        r.text(MEMBER, &t);
        for i in 0..r.clients() {
            frames(&mut r, i);
        }
    }

    #[test]
    fn any_json_is_parsed_or_refused_and_the_room_answers(v in json_value(), from in 0usize..4) {
        let t = v.to_string();
        let parsed = parse_client_frame(&t);
        if let Err(r) = &parsed {
            prop_assert!([code::BAD_REQUEST, code::UNKNOWN_TYPE].contains(&r.code), "{:?}", r);
        }
        let mut r = room(4000);
        r.text(from, &t);
        let mine = frames(&mut r, from);
        if parsed.is_err() {
            prop_assert_eq!(mine.len(), 1, "one error for a refused frame");
            let is_error = matches!(mine[0], ServerMsg::Error { .. });
            prop_assert!(is_error, "not an error: {:?}", mine[0]);
        }
        for i in 0..r.clients() {
            frames(&mut r, i);
        }
    }

    #[test]
    fn valid_frames_parse_to_their_command((v, expected) in valid_frame()) {
        let parsed = parse_client_frame(&v.to_string());
        prop_assert_eq!(parsed, Ok(expected));
    }

    #[test]
    fn an_unknown_field_or_type_is_refused((v, _) in valid_frame(), field in "[a-z]{1,8}", kind in "[a-z_]{1,40}") {
        let mut extra = v.clone();
        // PROTOCOL.md: `typing` and `ping` ignore extra fields.
        let fieldless = matches!(v["type"].as_str(), Some("typing" | "ping"));
        if extra.get(&field).is_none() && !fieldless {
            extra[field.as_str()] = json!(1);
            prop_assert_eq!(parse_client_frame(&extra.to_string()).map_err(|r| r.code), Err(code::BAD_REQUEST));
        }
        let mut other = v;
        other["type"] = json!(kind.clone());
        if let Err(r) = parse_client_frame(&other.to_string())
            && r.code == code::UNKNOWN_TYPE
        {
            // The type is echoed cut to 32 characters.
            let echoed = format!("{:?}", &kind[..kind.len().min(32)]);
            prop_assert!(r.message.contains(&echoed), "{}", r.message);
            prop_assert!(!kind.get(..33).is_some_and(|k| r.message.contains(k)));
        }
    }

    #[test]
    fn say_and_whisper_texts_are_bounded(len in 0usize..40, max in 1u32..30, whisper in any::<bool>()) {
        let mut r = room(max);
        let body = "é".repeat(len);
        let frame = if whisper {
            json!({"type": "whisper", "to": FUZZ_MEMBERS[OWNER].0, "text": body})
        } else {
            json!({"type": "say", "text": body})
        };
        r.text(MEMBER, &frame.to_string());
        let mine = frames(&mut r, MEMBER);
        let theirs = frames(&mut r, OWNER);
        let relayed = theirs.iter().any(|f| matches!(f, ServerMsg::Message(_) | ServerMsg::Whisper { .. }));
        if len == 0 {
            prop_assert_eq!(error_codes(&mine), vec![code::BAD_REQUEST.to_owned()]);
            prop_assert!(!relayed);
        } else if len > max as usize {
            prop_assert_eq!(error_codes(&mine), vec![code::TOO_LONG.to_owned()]);
            prop_assert!(!relayed);
        } else {
            prop_assert!(error_codes(&mine).is_empty());
            prop_assert!(relayed);
        }
    }

    #[test]
    fn reasons_and_client_ids_are_bounded(len in 250usize..262, kind in 0u8..3) {
        let mut r = room(4000);
        let long = "x".repeat(len);
        let victim = FUZZ_MEMBERS[MEMBER].0;
        let frame = match kind {
            0 => json!({"type": "kick", "user": victim, "reason": long}),
            1 => json!({"type": "ban", "user": victim, "reason": long}),
            _ => json!({"type": "say", "text": "hi", "client_id": long}),
        };
        r.text(OWNER, &frame.to_string());
        let codes = error_codes(&frames(&mut r, OWNER));
        if len > 256 {
            prop_assert_eq!(codes, vec![code::TOO_LONG.to_owned()]);
            prop_assert!(r.close_of(MEMBER).is_none());
        } else {
            prop_assert!(codes.is_empty(), "{:?}", codes);
            prop_assert_eq!(r.close_of(MEMBER).is_some(), kind < 2);
        }
    }

    #[test]
    fn pages_and_mutes_are_bounded(limit in 0u32..600, secs in prop_oneof![0u64..3, 604_799u64..604_802]) {
        let mut r = room(4000);
        r.text(OWNER, &json!({"type": "history", "limit": limit}).to_string());
        let history_ok = (1..=100).contains(&limit);
        prop_assert_eq!(error_codes(&frames(&mut r, OWNER)).is_empty(), history_ok);
        r.text(OWNER, &json!({"type": "members", "limit": limit}).to_string());
        let members_ok = (1..=500).contains(&limit);
        prop_assert_eq!(error_codes(&frames(&mut r, OWNER)).is_empty(), members_ok);
        let victim = FUZZ_MEMBERS[MEMBER].0;
        r.text(OWNER, &json!({"type": "mute", "user": victim, "secs": secs}).to_string());
        let mute_ok = (1..=7 * 24 * 3600).contains(&secs);
        let codes = error_codes(&frames(&mut r, OWNER));
        prop_assert_eq!(codes.is_empty(), mute_ok, "{:?}", codes);
    }

    #[test]
    fn signal_payloads_are_bounded(len in prop_oneof![0usize..100, 16_370usize..16_400]) {
        let mut r = room(4000);
        let data = json!("s".repeat(len));
        let size = data.to_string().len();
        let to = FUZZ_MEMBERS[OWNER].0;
        r.text(MEMBER, &json!({"type": "signal", "to": to, "data": data}).to_string());
        let codes = error_codes(&frames(&mut r, MEMBER));
        let got = frames(&mut r, OWNER).iter().any(|f| matches!(f, ServerMsg::Signal { .. }));
        if size > 16 * 1024 {
            prop_assert_eq!(codes, vec![code::TOO_LONG.to_owned()]);
            prop_assert!(!got);
        } else {
            prop_assert!(codes.is_empty());
            prop_assert!(got);
        }
    }
}

/// Cases per property: `default`, or `PROPTEST_CASES` for a longer run.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
