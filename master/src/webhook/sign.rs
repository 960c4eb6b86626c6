//! Request signing: `X-Chat-Signature: sha256=<hex HMAC-SHA256 of
//! timestamp + "." + body>` with the webhook secret, beside
//! `X-Chat-Timestamp` (Unix seconds). The secret never leaves this type:
//! its `Debug` is redacted.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The webhook secret.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub fn new(secret: &str) -> Self {
        Self(secret.as_bytes().to_vec())
    }

    /// `sha256=<hex>` for this timestamp and body.
    pub fn signature(&self, timestamp: &str, body: &[u8]) -> String {
        // HMAC takes a key of any length: `new_from_slice` cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        let s = Secret::new("secret");
        assert_eq!(
            s.signature("1700000000", br#"{"a":1}"#),
            "sha256=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
    }
}
