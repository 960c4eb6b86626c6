//! Forged join tokens (a classic case of issue 12): `alg: none` in its
//! spellings, other algorithms (HS384, HS512, an RS256 header over an HMAC
//! of the secret), bad or missing signatures, a tampered payload, expired,
//! for another room, without `sub` or `exp`, and before `nbf`.
//!
//! Each is refused at join with the close code of docs/PROTOCOL.md §14
//! (4001 unauthorized, 4002 expired, 4003 wrong room), and a witness in the
//! room checks that the worker is the same, still chats, and lost nothing.
//! Defence: `verify_token` (HS256 only, `exp` and `sub` required, `nbf`
//! honoured, no leeway, `room` checked). Removing any one of its checks lets
//! the matching token in (close code 0) and the test fails.

mod attack_common;

use attack_common::{Witness, join_code};
use chat_tests::client::enc;
use chat_tests::token::{alg_none, b64url, sign};
use chat_tests::{Server, ServerOpts, now_secs};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// `claims` signed with HMAC-SHA256 of `secret`, under any header.
fn with_header(header: &Value, claims: &Value, secret: &str) -> String {
    let msg = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(
        msg.as_bytes(),
        &EncodingKey::from_secret(secret.as_bytes()),
        Algorithm::HS256,
    )
    .expect("signing");
    format!("{msg}.{sig}")
}

/// `claims` signed with the secret under another HMAC algorithm.
fn signed_as(alg: Algorithm, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signing")
}

#[tokio::test]
async fn forged_tokens_are_refused_and_the_room_goes_on() {
    let s = Server::start(ServerOpts::new().with_jwt()).await;
    let secret = s.jwt_secret.clone().expect("a JWT secret");
    let room = "vault";
    let port = s.create_room(room).await;
    let q = |sub: &str| {
        format!(
            "token={}",
            enc(&chat_tests::token::member(&secret, sub, room))
        )
    };
    let mut w = Witness::new(&s, room, port, &q("witness"), &q("newcomer")).await;

    let exp = now_secs() + 3600;
    let good = json!({"sub":"eve","room":room,"exp":exp});
    let valid = sign(&secret, &good);
    let (head, rest) = valid.split_once('.').expect("a JWT");
    let (_, sig) = rest.split_once('.').expect("a JWT");
    let tampered_claims = json!({"sub":"eve","room":room,"exp":exp,"role":"owner"});
    let tampered = format!(
        "{head}.{}.{sig}",
        b64url(tampered_claims.to_string().as_bytes())
    );
    let none_header = |alg: &str| {
        format!(
            "{}.{}.",
            b64url(json!({"alg":alg,"typ":"JWT"}).to_string().as_bytes()),
            b64url(good.to_string().as_bytes())
        )
    };
    let cases: Vec<(&str, String, u16)> = vec![
        ("alg none", alg_none(&good), 4001),
        ("alg None", none_header("None"), 4001),
        ("alg NONE", none_header("NONE"), 4001),
        (
            "alg none with the real signature",
            format!("{}.{sig}", none_header("none").trim_end_matches('.')),
            4001,
        ),
        ("HS384", signed_as(Algorithm::HS384, &good, &secret), 4001),
        ("HS512", signed_as(Algorithm::HS512, &good, &secret), 4001),
        (
            "RS256 header over an HMAC of the secret",
            with_header(&json!({"alg":"RS256","typ":"JWT"}), &good, &secret),
            4001,
        ),
        (
            "ES256 header over an HMAC of the secret",
            with_header(&json!({"alg":"ES256","typ":"JWT"}), &good, &secret),
            4001,
        ),
        ("another secret", sign("not-the-secret", &good), 4001),
        (
            "no signature",
            format!("{head}.{}.", rest.split_once('.').unwrap().0),
            4001,
        ),
        ("a tampered payload", tampered, 4001),
        (
            "expired",
            sign(
                &secret,
                &json!({"sub":"eve","room":room,"exp":now_secs() - 5}),
            ),
            4002,
        ),
        (
            "another room",
            sign(&secret, &json!({"sub":"eve","room":"other","exp":exp})),
            4003,
        ),
        (
            "no sub",
            sign(&secret, &json!({"room":room,"exp":exp})),
            4001,
        ),
        (
            "an empty sub",
            sign(&secret, &json!({"sub":"","room":room,"exp":exp})),
            4001,
        ),
        (
            "a sub that is not a string",
            sign(&secret, &json!({"sub":42,"room":room,"exp":exp})),
            4001,
        ),
        (
            "no exp",
            sign(&secret, &json!({"sub":"eve","room":room})),
            4001,
        ),
        (
            "no room",
            sign(&secret, &json!({"sub":"eve","exp":exp})),
            4001,
        ),
        (
            "nbf in the future",
            sign(
                &secret,
                &json!({"sub":"eve","room":room,"exp":exp,"nbf":now_secs() + 600}),
            ),
            4001,
        ),
        (
            "a guest role",
            sign(
                &secret,
                &json!({"sub":"eve","room":room,"exp":exp,"role":"guest"}),
            ),
            4001,
        ),
        ("garbage", "a.b.c".to_owned(), 4001),
        ("huge garbage", "A".repeat(6000), 4001),
    ];
    for (what, tok, code) in &cases {
        let (got, _) = join_code(port, &format!("token={}", enc(tok)), &[]).await;
        assert_eq!(got, *code, "{what}: expected close {code}, got {got}");
    }
    // The genuine token still joins (the checks above refused the forgery,
    // not the user).
    let (got, _) = join_code(port, &format!("token={}", enc(&valid)), &[]).await;
    assert_eq!(got, 0, "the valid token was refused");
    w.survived(&s).await;
}
