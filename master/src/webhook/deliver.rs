//! The delivery task: takes events from the queue oldest first and POSTs
//! them, signed, retrying 5xx answers, connection errors and timeouts with
//! exponential backoff (capped, with jitter). A 4xx (or a redirect) is the
//! receiver refusing the event: counted, not retried. Nothing here is ever
//! awaited by the chat.

use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use tokio_util::sync::CancellationToken;

use super::queue::{Pending, Queue};
use super::sign::Secret;

/// How events are delivered.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub url: reqwest::Url,
    pub secret: Option<Secret>,
    /// Attempts per event at most (the first included).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled at each one.
    pub backoff: Duration,
    /// Longest wait between two attempts.
    pub backoff_cap: Duration,
}

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Delivered,
    /// 4xx or 3xx: the receiver does not want it; never retried.
    Refused(u16),
    /// 5xx, a connection error or a timeout: worth another try.
    Retry(String),
}

/// Delivers until the queue is closed and empty, or `give_up` is cancelled
/// (the shutdown grace is over).
pub async fn run(
    queue: Arc<Queue>,
    http: reqwest::Client,
    d: Delivery,
    give_up: CancellationToken,
) {
    let target = d.url.host_str().unwrap_or("?").to_owned();
    loop {
        let e = tokio::select! {
            e = queue.pop() => e,
            _ = give_up.cancelled() => None,
        };
        let Some(e) = e else { break };
        super::depth(queue.len());
        deliver(&http, &d, &e, &target, &give_up).await;
    }
    let left = queue.len();
    if left > 0 {
        counter!("chat_webhook_failed_total", "reason" => "shutdown").increment(left as u64);
        tracing::warn!(left, %target, "stopping with webhook events not delivered");
    }
}

async fn deliver(
    http: &reqwest::Client,
    d: &Delivery,
    e: &Pending,
    target: &str,
    give_up: &CancellationToken,
) {
    let mut attempt = 1;
    loop {
        let outcome = tokio::select! {
            o = post(http, d, e) => o,
            _ = give_up.cancelled() => {
                counter!("chat_webhook_failed_total", "reason" => "shutdown").increment(1);
                return;
            }
        };
        match outcome {
            Attempt::Delivered => {
                counter!("chat_webhook_sent_total").increment(1);
                tracing::debug!(event = e.kind, id = %e.id, %target, attempt, "webhook delivered");
                return;
            }
            Attempt::Refused(status) => {
                counter!("chat_webhook_failed_total", "reason" => "refused").increment(1);
                tracing::warn!(event = e.kind, id = %e.id, %target, status, "the webhook receiver refused an event; not retried");
                return;
            }
            Attempt::Retry(why) if attempt >= d.max_attempts => {
                counter!("chat_webhook_failed_total", "reason" => "exhausted").increment(1);
                tracing::warn!(event = e.kind, id = %e.id, %target, attempts = attempt, error = %why, "giving up on a webhook event");
                return;
            }
            Attempt::Retry(why) => {
                counter!("chat_webhook_retries_total").increment(1);
                let wait = backoff(d, attempt);
                tracing::info!(event = e.kind, id = %e.id, %target, attempt, error = %why, wait_ms = wait.as_millis() as u64, "webhook delivery failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = give_up.cancelled() => {
                        counter!("chat_webhook_failed_total", "reason" => "shutdown").increment(1);
                        return;
                    }
                }
                attempt += 1;
            }
        }
    }
}

/// One POST, signed with the time of this attempt.
async fn post(http: &reqwest::Client, d: &Delivery, e: &Pending) -> Attempt {
    let ts = chrono::Utc::now().timestamp().to_string();
    let mut req = http
        .post(d.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Chat-Event", e.kind)
        .header("X-Chat-Delivery", &e.id)
        .header("X-Chat-Timestamp", &ts)
        .body(e.body.clone());
    if let Some(s) = &d.secret {
        req = req.header("X-Chat-Signature", s.signature(&ts, &e.body));
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => Attempt::Delivered,
        Ok(r) if r.status().is_server_error() => Attempt::Retry(format!("HTTP {}", r.status())),
        Ok(r) => Attempt::Refused(r.status().as_u16()),
        // Without the URL: it may carry a token.
        Err(err) => Attempt::Retry(chain(&err.without_url())),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The wait after failed attempt `n` (1-based): `backoff · 2^(n-1)`, capped,
/// then a random point in its upper half (jitter: receivers that come back
/// are not hit by every host at once).
pub fn backoff(d: &Delivery, n: u32) -> Duration {
    let full = d
        .backoff
        .saturating_mul(1u32 << (n.saturating_sub(1)).min(20))
        .min(d.backoff_cap);
    let half = full / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rand::random_range(0..=jitter_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let d = Delivery {
            url: "http://127.0.0.1:1/".parse().unwrap(),
            secret: None,
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(1000),
        };
        for _ in 0..50 {
            let b1 = backoff(&d, 1);
            assert!((50..=100).contains(&b1.as_millis()), "{b1:?}");
            let b3 = backoff(&d, 3);
            assert!((200..=400).contains(&b3.as_millis()), "{b3:?}");
            let b9 = backoff(&d, 9);
            assert!((500..=1000).contains(&b9.as_millis()), "{b9:?}");
            let far = backoff(&d, 40);
            assert!((500..=1000).contains(&far.as_millis()), "{far:?}");
        }
    }
}
