//! Join tokens (HS256 JWTs) for rooms.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

/// Signs `claims` with HS256.
pub fn sign(secret: &str, claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signing a token")
}

/// A valid token for `room` (one hour), with a role.
pub fn token(secret: &str, sub: &str, name: &str, room: &str, role: &str) -> String {
    sign(
        secret,
        &json!({
            "sub": sub,
            "name": name,
            "room": room,
            "role": role,
            "exp": crate::now_secs() + 3600,
        }),
    )
}

/// A member token.
pub fn member(secret: &str, sub: &str, room: &str) -> String {
    token(secret, sub, sub, room, "member")
}

/// base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned token (`"alg":"none"`).
pub fn alg_none(claims: &Value) -> String {
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64url(claims.to_string().as_bytes());
    format!("{header}.{payload}.")
}

#[cfg(test)]
mod tests {
    #[test]
    fn b64() {
        assert_eq!(super::b64url(b"f"), "Zg");
        assert_eq!(super::b64url(b"fo"), "Zm8");
        assert_eq!(super::b64url(b"foo"), "Zm9v");
        assert_eq!(super::b64url(b"\xff\xfe"), "__4");
    }
}
