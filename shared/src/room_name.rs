//! Room names: 1–64 characters of `[A-Za-z0-9_-]`.

use thiserror::Error;

/// Longest room name accepted.
pub const MAX_LEN: usize = 64;

/// Why a room name was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RoomNameError {
    #[error("room name is empty")]
    Empty,
    #[error("room name is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("room name may only contain letters, digits, '_' and '-' (found {0:?})")]
    BadChar(char),
}

/// Checks a room name against the rule.
pub fn validate(name: &str) -> Result<(), RoomNameError> {
    if name.is_empty() {
        return Err(RoomNameError::Empty);
    }
    if name.chars().count() > MAX_LEN {
        return Err(RoomNameError::TooLong);
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        Some(c) => Err(RoomNameError::BadChar(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        assert!(validate("testroom").is_ok());
        assert!(validate("a-b_C9").is_ok());
        assert!(validate(&"x".repeat(64)).is_ok());
        assert_eq!(validate(""), Err(RoomNameError::Empty));
        assert_eq!(validate(&"x".repeat(65)), Err(RoomNameError::TooLong));
        assert_eq!(validate("a b"), Err(RoomNameError::BadChar(' ')));
        assert_eq!(validate("é"), Err(RoomNameError::BadChar('é')));
    }
}
