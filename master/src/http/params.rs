//! Input of the room API's history and direct-message routes, checked
//! before anything reaches the store: path ids, query parameters (`before`,
//! `limit`, `q`; anything else is refused), and the store's answer in time.
//! Every refusal is a `400` with a message naming what is wrong.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use axum::extract::Query;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::message;
use crate::store::{StoreError, TextQuery};

/// A page holds at most this many entries; more is clamped.
pub const MAX_LIMIT: u32 = 200;
/// A page's size when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 50;
/// The longest `q`, in characters.
pub const MAX_Q: usize = 200;
/// Time a request may take in the store.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// A refusal or failure: the status and the `message` of the answer it
/// becomes.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    text: String,
}

impl Refusal {
    pub fn new(status: StatusCode, text: impl Into<String>) -> Self {
        Self {
            status,
            text: text.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        message(self.status, self.text)
    }
}

pub fn bad(text: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, text)
}

/// The path's parameters, or a `400` (e.g. a segment that is not UTF-8).
pub fn path<T>(p: Result<axum::extract::Path<T>, PathRejection>) -> Result<T, Refusal> {
    p.map(|axum::extract::Path(v)| v)
        .map_err(|e| bad(format!("bad path: {}", e.body_text())))
}

/// Checks a user id named in a path, as a room checks the users a `dm`
/// names (`field`: which parameter, for the message).
pub fn user_id(field: &str, id: &str) -> Result<(), Refusal> {
    chatroom::check_user_id(id).map_err(|why| bad(format!("bad {field}: {why}")))
}

/// The query parameters, each at most once, only those in `allowed`.
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(
        q: Result<Query<Vec<(String, String)>>, QueryRejection>,
        allowed: &[&str],
    ) -> Result<Self, Refusal> {
        let Query(pairs) = q.map_err(|e| bad(format!("bad query: {}", e.body_text())))?;
        let mut map = HashMap::new();
        for (k, v) in pairs {
            if !allowed.contains(&k.as_str()) {
                return Err(bad(format!(
                    "unknown query parameter {k:?} (allowed: {})",
                    allowed.join(", ")
                )));
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(bad(format!("query parameter {k:?} is given twice")));
            }
        }
        Ok(Self(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// `limit`: a decimal integer, clamped to 1..=[`MAX_LIMIT`];
    /// [`DEFAULT_LIMIT`] when absent.
    pub fn limit(&self) -> Result<u32, Refusal> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => decimal(v)
                .map(|n| n.clamp(1, u64::from(MAX_LIMIT)) as u32)
                .ok_or_else(|| {
                    bad(format!(
                        "bad limit {v:?}: a decimal integer (1 to {MAX_LIMIT})"
                    ))
                }),
        }
    }

    /// `before`: a seq, 1 to 2^63 − 1, exclusive; no bound when absent.
    pub fn before_seq(&self) -> Result<u64, Refusal> {
        match self.get("before") {
            None => Ok(u64::MAX),
            Some(v) => decimal(v)
                .filter(|n| (1..=i64::MAX as u64).contains(n))
                .ok_or_else(|| {
                    bad(format!(
                        "bad before {v:?}: a seq (a decimal integer from 1), exclusive"
                    ))
                }),
        }
    }

    /// `q`: 1 to [`MAX_Q`] characters without control characters.
    pub fn text_query(&self) -> Result<Option<TextQuery>, Refusal> {
        let Some(q) = self.get("q") else {
            return Ok(None);
        };
        if q.is_empty() {
            return Err(bad("q is empty: leave it out to list every message"));
        }
        if q.chars().count() > MAX_Q {
            return Err(bad(format!("q is longer than {MAX_Q} characters")));
        }
        if q.chars().any(char::is_control) {
            return Err(bad("q holds control characters"));
        }
        Ok(Some(TextQuery::new(q)))
    }
}

/// An unsigned decimal integer (digits only: no sign, no spaces).
fn decimal(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Runs a store call with a deadline; a failure or a timeout is `503`.
pub async fn in_store<T>(
    what: &str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, Refusal> {
    match tokio::time::timeout(STORE_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "{what} failed in the store");
            Err(unavailable("the store failed; retry later"))
        }
        Err(_) => {
            tracing::warn!("{what} timed out in the store");
            Err(unavailable("the store did not answer in time; retry later"))
        }
    }
}

pub fn unavailable(text: &str) -> Refusal {
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Result<Params, Refusal> {
        let pairs = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Params::parse(Ok(Query(pairs)), &["before", "limit", "q"])
    }

    #[test]
    fn limits_clamp_and_refuse_garbage() {
        let limit = |v: &str| params(&[("limit", v)]).ok().and_then(|p| p.limit().ok());
        assert_eq!(limit("0"), Some(1));
        assert_eq!(limit("7"), Some(7));
        assert_eq!(limit("100000000000000000000000"), None);
        assert_eq!(limit("201"), Some(MAX_LIMIT));
        for bad in ["", "-1", "+1", " 1", "1.5", "x", "0x10"] {
            assert_eq!(limit(bad), None, "{bad:?}");
        }
        assert_eq!(
            params(&[]).ok().and_then(|p| p.limit().ok()),
            Some(DEFAULT_LIMIT)
        );
    }

    #[test]
    fn before_is_a_positive_seq() {
        let before = |v: &str| {
            params(&[("before", v)])
                .ok()
                .and_then(|p| p.before_seq().ok())
        };
        assert_eq!(before("1"), Some(1));
        assert_eq!(before("9223372036854775807"), Some(i64::MAX as u64));
        for bad in ["0", "9223372036854775808", "-3", "a", ""] {
            assert_eq!(before(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn q_is_bounded_and_unknown_or_repeated_parameters_are_refused() {
        let q = |v: &str| params(&[("q", v)]).ok().and_then(|p| p.text_query().ok());
        assert!(q(".*").is_some_and(|q| q.is_some()));
        assert!(q(&"é".repeat(MAX_Q)).is_some());
        assert!(q(&"é".repeat(MAX_Q + 1)).is_none());
        assert!(q("").is_none());
        assert!(q("a\nb").is_none());
        assert!(params(&[("sort", "x")]).is_err());
        assert!(params(&[("q", "a"), ("q", "b")]).is_err());
    }
}
