//! A small HTTP client of the master's APIs: `X-API-Key`, `{"data": ...}`
//! answers, and failures turned into one-line reasons.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

/// Which of the master's two APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Admin,
    Room,
}

impl Which {
    fn api(self) -> &'static str {
        match self {
            Which::Admin => "admin API",
            Which::Room => "room API",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Which::Admin => "admin key",
            Which::Room => "room API key",
        }
    }
}

/// Why a call failed.
#[derive(Debug)]
pub enum ApiError {
    /// No connection, or no answer in time.
    Unreachable {
        which: Which,
        url: String,
        reason: String,
    },
    /// 401: the key was refused.
    Refused { which: Which },
    /// 404; `route_missing` when the server's generic fallback answered,
    /// i.e. the route itself does not exist.
    NotFound {
        message: String,
        route_missing: bool,
    },
    /// 405: the route exists, not with this method.
    MethodNotAllowed { url: String },
    /// Any other non-2xx status.
    Status { status: StatusCode, message: String },
    /// A 2xx answer that is not the expected JSON.
    BadAnswer { url: String, reason: String },
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Unreachable { which, url, reason } => {
                write!(f, "cannot reach the {} at {url}: {reason}", which.api())
            }
            ApiError::Refused { which } => write!(
                f,
                "the {} was refused (401 Unauthorized); check --{} or {}",
                which.key(),
                match which {
                    Which::Admin => "key",
                    Which::Room => "api-key",
                },
                match which {
                    Which::Admin => "ADMIN_KEY",
                    Which::Room => "KEY",
                }
            ),
            ApiError::NotFound { message, .. } => write!(f, "not found: {message}"),
            ApiError::MethodNotAllowed { url } => {
                write!(f, "the server does not support this request ({url}: 405)")
            }
            ApiError::Status { status, message } => {
                if message.is_empty() {
                    write!(f, "the server answered {status}")
                } else {
                    write!(f, "the server answered {status}: {message}")
                }
            }
            ApiError::BadAnswer { url, reason } => {
                write!(f, "unexpected answer from {url}: {reason}")
            }
        }
    }
}

impl std::error::Error for ApiError {}

/// The innermost cause of an error: for reqwest that is usually the useful
/// part ("Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// One of the master's APIs with its key.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    key: String,
    which: Which,
    timeout: Duration,
}

impl Api {
    pub fn new(which: Which, base: Url, key: String, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("chatctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {}", root_cause(&e)))?;
        Ok(Self {
            http,
            base,
            key,
            which,
            timeout,
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The URL of `segments` under the base (each segment percent-encoded).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    /// A base URL without a trailing slash, for messages.
    pub fn display_base(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// Sends a request; returns `data` of a 2xx answer (or the whole body if
    /// it has no `data`).
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        self.call_query(method, segments, &[], body).await
    }

    /// [`Api::call`] with query parameters (percent-encoded).
    pub async fn call_query(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut req = self
            .http
            .request(method, url.clone())
            .header("X-API-Key", &self.key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = res.status();
        let text = res.text().await.map_err(|e| self.unreachable(&e))?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        let message = json
            .as_ref()
            .and_then(|j| j.get("message").and_then(Value::as_str))
            .map(str::to_owned)
            .unwrap_or_else(|| text.trim().chars().take(200).collect());
        if status.is_success() {
            return match json {
                Some(Value::Object(mut o)) => Ok(o.remove("data").unwrap_or(Value::Object(o))),
                Some(other) => Ok(other),
                None => Err(ApiError::BadAnswer {
                    url: url.to_string(),
                    reason: format!("not JSON ({status})"),
                }),
            };
        }
        Err(match status {
            StatusCode::UNAUTHORIZED => ApiError::Refused { which: self.which },
            StatusCode::NOT_FOUND => ApiError::NotFound {
                route_missing: message == "Not found" || message == "Not Found",
                message,
            },
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed {
                url: url.to_string(),
            },
            _ => ApiError::Status { status, message },
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> ApiError {
        let reason = if e.is_timeout() {
            format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            )
        } else {
            root_cause(e)
        };
        ApiError::Unreachable {
            which: self.which,
            url: self.display_base(),
            reason,
        }
    }

    /// Whether the API answers at all (any HTTP answer counts).
    pub async fn answers(&self) -> bool {
        self.http
            .get(self.url(&["livez"]))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok()
    }
}
