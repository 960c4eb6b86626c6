//! API keys: given by the operator or generated, compared in constant time.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::Rng;
use serde::Serialize;
use subtle::ConstantTimeEq;

/// The two API keys.
#[derive(Clone)]
pub struct Keys {
    pub key: String,
    pub admin_key: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

#[derive(Serialize)]
struct KeyFile<'a> {
    key: &'a str,
    admin_key: &'a str,
}

/// A strong random key: 32 random bytes, hex.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares a presented key with the expected one in constant time.
pub fn matches(presented: Option<&str>, expected: &str) -> bool {
    match presented {
        Some(p) => bool::from(p.as_bytes().ct_eq(expected.as_bytes())),
        None => false,
    }
}

impl Keys {
    /// Uses the given keys, generating what is missing. Generated keys are
    /// printed once and written to `keys.json` (mode 0600) in the run dir.
    pub fn resolve(
        key: Option<String>,
        admin_key: Option<String>,
        run_dir: &Path,
    ) -> std::io::Result<Self> {
        let generated = key.is_none() || admin_key.is_none();
        let keys = Self {
            key: key.unwrap_or_else(generate),
            admin_key: admin_key.unwrap_or_else(generate),
        };
        let path = run_dir.join("keys.json");
        if generated {
            let body = serde_json::to_vec_pretty(&KeyFile {
                key: &keys.key,
                admin_key: &keys.admin_key,
            })
            .map_err(std::io::Error::other)?;
            let _ = std::fs::remove_file(&path);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(&body)?;
            println!("chatserver: KEY or ADMIN_KEY was not set; generated keys (shown once):");
            println!("  KEY={}", keys.key);
            println!("  ADMIN_KEY={}", keys.admin_key);
            println!("  also in {} (owner-only)", path.display());
        } else {
            // Keys given by the operator are never written to disk.
            let _ = std::fs::remove_file(&path);
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare() {
        assert!(matches(Some("abc"), "abc"));
        assert!(!matches(Some("abd"), "abc"));
        assert!(!matches(Some("ab"), "abc"));
        assert!(!matches(None, "abc"));
        assert_eq!(generate().len(), 64);
        assert_ne!(generate(), generate());
    }

    #[test]
    fn key_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile_dir();
        let k = Keys::resolve(None, Some("given".into()), &dir).unwrap();
        assert_eq!(k.admin_key, "given");
        let meta = std::fs::metadata(dir.join("keys.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("chatkeys-{}", generate()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
