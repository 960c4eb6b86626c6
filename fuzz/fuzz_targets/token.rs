//! Join tokens against a fixed secret: raw token text, or a header and
//! claims of the fuzzer's choosing signed with the room's secret (to get
//! past the signature and into the claims) or with another secret.
//!
//! Invariants: nothing panics; a token signed with another secret is never
//! accepted; an accepted token is three base64url parts whose signature
//! verifies with the secret under HS256, whose header says HS256 and whose
//! claims hold: `exp` not past, `nbf` not ahead, the room ours or `*`, a
//! clean `sub` that is the identity's id, and a role that is not guest.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chatroom::fuzzing::{GUEST_PREFIX, is_hostile_char, verify_token};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-secret-0123456789";
const ROOM: &str = "lobby";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `header.claims.signature`, signed with `secret` under HS256.
fn signed(header: &[u8], claims: &[u8], secret: &str) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret.as_bytes()),
        Algorithm::HS256,
    )
    .expect("HS256 signs anything");
    format!("{message}.{sig}")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let before = now();
    match mode % 3 {
        // Raw token text.
        0 => {
            if let Ok(token) = std::str::from_utf8(rest) {
                check(token, before);
            }
        }
        // Header and claims (split at the first 0xFF), signed with our secret.
        1 => {
            let (header, claims) = split(rest);
            check(&signed(header, claims, SECRET), before);
        }
        // The same signed with another secret: never accepted.
        _ => {
            let (header, claims) = split(rest);
            let token = signed(header, claims, "another-secret");
            assert!(verify_token(SECRET, ROOM, &token).is_err(), "{token}");
        }
    }
});

fn split(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&x| x == 0xFF) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (br#"{"alg":"HS256","typ":"JWT"}"#, b),
    }
}

fn check(token: &str, before: u64) {
    let Ok(id) = verify_token(SECRET, ROOM, token) else {
        return;
    };
    let after = now();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let message = format!("{}.{}", parts[0], parts[1]);
    let verified = jsonwebtoken::crypto::verify(
        parts[2],
        message.as_bytes(),
        &DecodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    );
    assert!(
        matches!(verified, Ok(true)),
        "signature of an accepted token"
    );
    // Lossy: the claims a room reads are valid UTF-8 once accepted, but a
    // claim it ignores need not be (serde skips it without checking).
    let json = |part: &str| -> serde_json::Value {
        let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url part");
        serde_json::from_str(&String::from_utf8_lossy(&bytes)).expect("JSON part")
    };
    let header = json(parts[0]);
    assert_eq!(header["alg"], "HS256", "{header}");
    let claims = json(parts[1]);
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(exp >= before, "expired token accepted: {claims}");
    if let Some(nbf) = claims.get("nbf").filter(|v| !v.is_null()) {
        let nbf = nbf.as_f64().expect("nbf of an accepted token is a number");
        assert!(
            nbf.round() <= after as f64,
            "immature token accepted: {claims}"
        );
    }
    let room = claims["room"].as_str().expect("room");
    assert!(room == ROOM || room == "*", "{claims}");
    let sub = claims["sub"].as_str().expect("sub");
    assert_eq!(id.id, sub);
    assert!(!sub.is_empty() && !sub.starts_with(GUEST_PREFIX));
    assert!(!sub.chars().any(is_hostile_char), "{sub:?}");
    assert!(!id.name.is_empty() && !id.name.chars().any(is_hostile_char));
    assert_ne!(id.role, chat_shared::protocol::Role::Guest);
}
