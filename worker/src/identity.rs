//! Who a connecting client is: a signed token (`?token=`) or a guest name
//! (`?name=`), checked before the client joins.

use chat_shared::protocol::{Role, close};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use rand::Rng;
use serde::Deserialize;

/// Prefix of every guest id; token subjects may not use it.
pub const GUEST_PREFIX: &str = "guest:";
/// Longest display name.
pub const MAX_NAME_LEN: usize = 64;

/// An authenticated (or guest) user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub name: String,
    pub role: Role,
}

/// Why a client was refused: a close code and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: String,
}

impl Refusal {
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// Claims of a join token.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    name: Option<String>,
    room: String,
    #[serde(default)]
    role: Option<Role>,
    #[allow(dead_code)]
    exp: u64,
}

/// What the room allows.
pub struct Policy<'a> {
    pub room: &'a str,
    pub secret: Option<&'a str>,
    pub guests: bool,
}

/// Whether `c` is invisible or reorders text: controls, format characters
/// (Unicode category Cf: zero-width spaces and joiners, soft hyphen, word
/// joiner, BOM, tags) including every bidirectional control, and line or
/// paragraph separators. Such characters make one name look like another.
pub fn is_hostile_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// Checks a display name: trimmed, 1–64 characters, no control, format or
/// bidirectional characters, no word mixing scripts (homoglyphs).
pub fn clean_name(raw: &str) -> Result<String, Refusal> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(Refusal::new(close::BAD_REQUEST, "name is empty"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(Refusal::new(close::BAD_REQUEST, "name is too long"));
    }
    if name.chars().any(is_hostile_char) {
        return Err(Refusal::new(
            close::BAD_REQUEST,
            "name has control, invisible or bidirectional characters",
        ));
    }
    if crate::confusables::mixed_script_word(name).is_some() {
        return Err(Refusal::new(
            close::BAD_REQUEST,
            "name mixes scripts within a word (e.g. Latin and Cyrillic)",
        ));
    }
    Ok(name.to_owned())
}

/// Decides who the client is from `?token=` or `?name=`.
pub fn identify(
    policy: &Policy<'_>,
    token: Option<&str>,
    name: Option<&str>,
) -> Result<Identity, Refusal> {
    if let Some(token) = token {
        return verify_token(policy, token);
    }
    let guests_ok = policy.secret.is_none() || policy.guests;
    match name {
        Some(_) if !guests_ok => Err(Refusal::new(
            close::GUESTS_NOT_ALLOWED,
            "guests are not allowed in this room; a token is required",
        )),
        Some(raw) => {
            let name = clean_name(raw)?;
            let suffix: u64 = rand::rng().random();
            Ok(Identity {
                id: format!("{GUEST_PREFIX}{suffix:016x}"),
                name,
                role: Role::Guest,
            })
        }
        None if guests_ok => Err(Refusal::new(
            close::BAD_REQUEST,
            "a ?token= or a ?name= is required",
        )),
        None => Err(Refusal::new(close::UNAUTHORIZED, "a ?token= is required")),
    }
}

fn verify_token(policy: &Policy<'_>, token: &str) -> Result<Identity, Refusal> {
    let Some(secret) = policy.secret else {
        return Err(Refusal::new(
            close::UNAUTHORIZED,
            "this server has no token secret; join with ?name=",
        ));
    };
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => Refusal::new(close::TOKEN_EXPIRED, "token expired"),
        ErrorKind::ImmatureSignature => {
            Refusal::new(close::UNAUTHORIZED, "token not valid yet (nbf)")
        }
        ErrorKind::InvalidSignature => Refusal::new(close::UNAUTHORIZED, "invalid token signature"),
        ErrorKind::InvalidAlgorithm => Refusal::new(
            close::UNAUTHORIZED,
            "invalid token algorithm (HS256 required)",
        ),
        _ => Refusal::new(close::UNAUTHORIZED, "invalid token"),
    })?;
    let c = data.claims;
    if c.room != "*" && c.room != policy.room {
        return Err(Refusal::new(close::WRONG_ROOM, "token is for another room"));
    }
    if c.sub.is_empty()
        || c.sub.starts_with(GUEST_PREFIX)
        || c.sub.len() > 128
        || c.sub.chars().any(is_hostile_char)
    {
        return Err(Refusal::new(close::UNAUTHORIZED, "invalid token subject"));
    }
    let role = c.role.unwrap_or(Role::Member);
    if role == Role::Guest {
        return Err(Refusal::new(close::UNAUTHORIZED, "invalid token role"));
    }
    let name = match c.name.as_deref() {
        Some(n) => clean_name(n)?,
        // Without a name claim the subject is shown, cut to the name limit.
        None => clean_name(&c.sub.chars().take(MAX_NAME_LEN).collect::<String>())?,
    };
    Ok(Identity {
        id: c.sub,
        name,
        role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn token(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    const P: Policy<'static> = Policy {
        room: "r1",
        secret: Some("s3cret"),
        guests: false,
    };

    #[test]
    fn valid_token() {
        let t = token(
            "s3cret",
            json!({"sub":"u1","name":"Ann","room":"r1","role":"moderator","exp":now()+60}),
        );
        let id = identify(&P, Some(&t), None).unwrap();
        assert_eq!(
            id,
            Identity {
                id: "u1".into(),
                name: "Ann".into(),
                role: Role::Moderator
            }
        );
        let t = token("s3cret", json!({"sub":"u1","room":"*","exp":now()+60}));
        assert_eq!(identify(&P, Some(&t), None).unwrap().role, Role::Member);
    }

    #[test]
    fn token_failures() {
        let bad_sig = token("other", json!({"sub":"u1","room":"r1","exp":now()+60}));
        assert_eq!(
            identify(&P, Some(&bad_sig), None).unwrap_err().code,
            close::UNAUTHORIZED
        );
        let expired = token("s3cret", json!({"sub":"u1","room":"r1","exp":now()-10}));
        assert_eq!(
            identify(&P, Some(&expired), None).unwrap_err().code,
            close::TOKEN_EXPIRED
        );
        let wrong = token("s3cret", json!({"sub":"u1","room":"r2","exp":now()+60}));
        assert_eq!(
            identify(&P, Some(&wrong), None).unwrap_err().code,
            close::WRONG_ROOM
        );
        let guesty = token(
            "s3cret",
            json!({"sub":"guest:1","room":"r1","exp":now()+60}),
        );
        assert_eq!(
            identify(&P, Some(&guesty), None).unwrap_err().code,
            close::UNAUTHORIZED
        );
        // alg: none
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsInJvb20iOiJyMSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert_eq!(
            identify(&P, Some(none), None).unwrap_err().code,
            close::UNAUTHORIZED
        );
        assert_eq!(
            identify(&P, Some("garbage"), None).unwrap_err().code,
            close::UNAUTHORIZED
        );
    }

    #[test]
    fn hostile_subjects_names_and_nbf() {
        for sub in ["u\u{0}1", "u\n1", "u\u{202E}1", "u\u{200B}1"] {
            let t = token("s3cret", json!({"sub":sub,"room":"r1","exp":now()+60}));
            assert_eq!(
                identify(&P, Some(&t), None).unwrap_err().code,
                close::UNAUTHORIZED,
                "{sub:?}"
            );
        }
        let early = token(
            "s3cret",
            json!({"sub":"u1","room":"r1","exp":now()+600,"nbf":now()+300}),
        );
        assert_eq!(
            identify(&P, Some(&early), None).unwrap_err().code,
            close::UNAUTHORIZED
        );
        let ripe = token(
            "s3cret",
            json!({"sub":"u1","room":"r1","exp":now()+600,"nbf":now()-5}),
        );
        assert!(identify(&P, Some(&ripe), None).is_ok());
        for name in [
            "a\u{200D}b",
            "\u{202E}nimda",
            "x\u{FEFF}",
            "a\u{2066}b",
            "t\u{E0041}",
        ] {
            assert_eq!(
                clean_name(name).unwrap_err().code,
                close::BAD_REQUEST,
                "{name:?}"
            );
        }
        assert!(clean_name("Zoë 山田").is_ok());
        assert_eq!(
            clean_name("p\u{0430}ypal").unwrap_err().code,
            close::BAD_REQUEST,
            "Latin and Cyrillic in one word"
        );
    }

    #[test]
    fn guests() {
        assert_eq!(
            identify(&P, None, Some("al")).unwrap_err().code,
            close::GUESTS_NOT_ALLOWED
        );
        let open = Policy {
            room: "r1",
            secret: None,
            guests: false,
        };
        let g = identify(&open, None, Some(" alice ")).unwrap();
        assert!(g.id.starts_with(GUEST_PREFIX));
        assert_eq!(g.name, "alice");
        assert_eq!(
            identify(&open, None, None).unwrap_err().code,
            close::BAD_REQUEST
        );
        assert_eq!(
            identify(&open, None, Some("")).unwrap_err().code,
            close::BAD_REQUEST
        );
        let allowed = Policy { guests: true, ..P };
        assert!(identify(&allowed, None, Some("bob")).is_ok());
    }
}
