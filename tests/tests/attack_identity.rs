//! Identity attacks (findings 6 and 7 of issue 12): invisible and bidi
//! characters in names and token subjects, tokens used before `nbf`,
//! guests posing as signed-in members, and WebSockets from foreign origins.
//!
//! Each test names the defence it relies on and why it fails without it.

mod attack_common;

use attack_common::{join_code, ws_with};
use chat_tests::client::enc;
use chat_tests::token::{sign, token};
use chat_tests::{Client, Server, ServerOpts, now_secs};
use serde_json::json;

/// Defence: `clean_name` refuses format (Cf) and bidi characters. Before,
/// only controls were refused: the zero-width and bidi names got a
/// `welcome` (code 0) and the assertion fails.
#[tokio::test]
async fn invisible_and_bidi_names_are_refused() {
    let s = Server::default_server().await;
    let port = s.create_room("names").await;
    for name in [
        "ad\u{200B}min",
        "\u{202E}nimda",
        "mod\u{2066}",
        "x\u{FEFF}",
        "a\u{00AD}b",
        "a\nb",
    ] {
        let (code, _) = join_code(port, &format!("name={}", enc(name)), &[]).await;
        assert_eq!(code, 4000, "name {name:?} was not refused");
    }
    // An ordinary non-ASCII name still joins.
    let (code, _) = join_code(port, &format!("name={}", enc("Zoë 山田")), &[]).await;
    assert_eq!(code, 0);
}

/// Defence: token subjects with controls, format or bidi characters are
/// refused (4001). Before, NUL, newline and bidi subjects were accepted.
#[tokio::test]
async fn hostile_token_subjects_are_refused() {
    let s = Server::start(ServerOpts::new().with_jwt()).await;
    let secret = s.jwt_secret.clone().unwrap();
    let port = s.create_room("subs").await;
    for sub in ["u\u{0}1", "u\n1", "u\u{202E}1", "u\u{200D}1"] {
        let t = token(&secret, sub, "Name", "subs", "member");
        let (code, _) = join_code(port, &format!("token={}", enc(&t)), &[]).await;
        assert_eq!(code, 4001, "sub {sub:?} was not refused");
    }
}

/// Defence: `nbf` is validated. Without it the early token joins (code 0).
#[tokio::test]
async fn a_token_before_its_nbf_is_refused() {
    let s = Server::start(ServerOpts::new().with_jwt()).await;
    let secret = s.jwt_secret.clone().unwrap();
    let port = s.create_room("nbf").await;
    let early = sign(
        &secret,
        &json!({"sub":"u1","room":"nbf","exp":now_secs()+3600,"nbf":now_secs()+600}),
    );
    let (code, _) = join_code(port, &format!("token={}", enc(&early)), &[]).await;
    assert_eq!(code, 4001, "a token used before nbf was accepted");
    let ripe = sign(
        &secret,
        &json!({"sub":"u1","room":"nbf","exp":now_secs()+3600,"nbf":now_secs()-60}),
    );
    let (code, _) = join_code(port, &format!("token={}", enc(&ripe)), &[]).await;
    assert_eq!(code, 0);
}

/// Defences: a guest may not join under a name a signed-in member holds in
/// the room (4000), and guests carry `guest: true` in every user object.
/// Without the first the impostor gets a welcome; without the second the
/// flags are missing.
#[tokio::test]
async fn guests_are_marked_and_cannot_pose_as_moderators() {
    let s = Server::start(ServerOpts::new().with_jwt()).await;
    let secret = s.jwt_secret.clone().unwrap();
    let port = s
        .create_room_settings("mixed", Some(json!({"guests": true})))
        .await;
    let t = token(&secret, "m1", "Mod", "mixed", "moderator");
    let mut moderator = Client::join(port, &format!("token={}", enc(&t))).await;
    assert!(moderator.welcome["you"].get("guest").is_none());
    let (code, _) = join_code(port, "name=mod", &[]).await;
    assert_eq!(code, 4000, "a guest took a moderator's name");
    let (code, _) = join_code(port, &format!("name={}", enc(" MOD ")), &[]).await;
    assert_eq!(code, 4000, "a guest took a moderator's name (case, spaces)");

    let mut guest = Client::join(port, "name=alice").await;
    assert_eq!(guest.welcome["you"]["guest"], true, "{}", guest.welcome);
    let joined = moderator.recv_type("joined").await;
    assert_eq!(joined["user"]["guest"], true, "{joined}");
    guest.say_acked("hello").await;
    let m = moderator.recv_type("message").await;
    assert_eq!(m["from"]["guest"], true, "{m}");
}

/// Defence: `--allowed-origins`. A browser page from another origin is
/// refused before the upgrade (403); without the check it would join.
#[tokio::test]
async fn websockets_from_other_origins_are_refused() {
    let s =
        Server::start(ServerOpts::new().args(["--allowed-origins=https://app.example.com"])).await;
    let port = s.create_room("origins").await;
    let refused = ws_with(port, "name=eve", &[("Origin", "https://evil.example")]).await;
    assert_eq!(refused.err(), Some(403), "a foreign origin was let in");
    let (code, _) = join_code(port, "name=ann", &[("Origin", "https://app.example.com")]).await;
    assert_eq!(code, 0);
    // Non-browser clients send no Origin.
    let (code, _) = join_code(port, "name=bot", &[]).await;
    assert_eq!(code, 0);
}

/// Defences: confusable skeletons (Unicode TR39) and mixed-script words.
/// A guest or a signed-in member whose name has the skeleton of a
/// moderator present (`Μоd`: Greek Mu, Cyrillic o; `rnod`; `M0D`) is
/// refused with 4000, and so is a name mixing Latin and Cyrillic in one
/// word wherever it comes from. Before, only exact (case-insensitive) names
/// of signed-in members were protected, so every one of these joined.
#[tokio::test]
async fn homoglyphs_of_a_moderator_and_mixed_scripts_are_refused() {
    let s = Server::start(ServerOpts::new().with_jwt()).await;
    let secret = s.jwt_secret.clone().unwrap();
    let port = s
        .create_room_settings("glyphs", Some(json!({"guests": true})))
        .await;
    let t = token(&secret, "m1", "Mod", "glyphs", "moderator");
    let mut moderator = Client::join(port, &format!("token={}", enc(&t))).await;
    for name in ["\u{039C}\u{043E}d", "rnod", "M0D", "m\u{043E}d"] {
        let (code, _) = join_code(port, &format!("name={}", enc(name)), &[]).await;
        assert_eq!(code, 4000, "guest {name:?} posed as the moderator");
        let t = token(&secret, "u9", name, "glyphs", "member");
        let (code, _) = join_code(port, &format!("token={}", enc(&t)), &[]).await;
        assert_eq!(code, 4000, "member {name:?} posed as the moderator");
    }
    // Mixed scripts in one word: refused even with no one to imitate.
    for name in ["p\u{0430}ypal", "\u{0430}lice"] {
        let (code, _) = join_code(port, &format!("name={}", enc(name)), &[]).await;
        assert_eq!(code, 4000, "mixed-script name {name:?} was let in");
    }
    // Honest names still join: other scripts, one per word, and names that
    // merely resemble the moderator's.
    for name in ["Иван Petrov", "山田 ひろし", "Moderna", "mod2"] {
        let (code, _) = join_code(port, &format!("name={}", enc(name)), &[]).await;
        assert_eq!(code, 0, "{name:?} was refused");
    }
    // The moderator itself rejoins (another device) under its name.
    let (code, _) = join_code(port, &format!("token={}", enc(&t)), &[]).await;
    assert_eq!(code, 0, "the moderator's second device was refused");
    moderator.say_acked("still here").await;
}
