//! Webhooks: signed JSON events POSTed to the platform's receiver
//! (`--webhook-url`): `room.created`, `room.closed` (from the rooms'
//! lifecycle events) and `dm.offline` (from the direct-message code, through
//! [`Webhooks::dm_offline`]).
//!
//! Emitting never waits and never fails: an event is serialized and pushed
//! on a bounded queue (`queue.rs`, the oldest dropped when full), and one
//! delivery task (`deliver.rs`) POSTs the queue in order, retrying what may
//! succeed later. A slow or dead receiver costs the chat nothing but the
//! queue's memory. At shutdown the task drains the queue within the grace
//! period, then gives up.

mod deliver;
pub mod event;
mod follow;
mod queue;
mod sign;

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, gauge};
use serde::Serialize;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use deliver::Delivery;
pub use event::DmOffline;
pub use follow::follow;
use queue::{Pending, Queue};
pub use sign::Secret;

/// What the webhook configuration can be wrong about (never echoes the
/// secret, nor the URL's query or credentials).
#[derive(Debug, Error)]
pub enum WebhookError {
    #[error("--webhook-url is not an http(s) URL")]
    BadUrl,
    #[error("cannot read --webhook-secret-file {path}: {source}")]
    SecretFile {
        path: String,
        source: std::io::Error,
    },
    #[error("--webhook-secret-file {0} is empty")]
    EmptySecret(String),
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The webhook settings, from the master's flags.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub delivery: Delivery,
    /// Events waiting at most; past it the oldest are dropped.
    pub queue: usize,
    /// One attempt's bound (connect, send, answer).
    pub timeout: Duration,
}

impl WebhookConfig {
    /// The configuration, `None` without `--webhook-url`. The secret comes
    /// from `--webhook-secret` (`WEBHOOK_SECRET`) or, preferred,
    /// `--webhook-secret-file`.
    pub fn from_flags(cfg: &crate::config::Config) -> Result<Option<Self>, WebhookError> {
        let Some(url) = cfg
            .webhook_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        let url: reqwest::Url = url.parse().map_err(|_| WebhookError::BadUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookError::BadUrl);
        }
        let secret = match (&cfg.webhook_secret_file, &cfg.webhook_secret) {
            (Some(path), _) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| WebhookError::SecretFile {
                        path: path.display().to_string(),
                        source,
                    })?;
                let text = text.trim();
                if text.is_empty() {
                    return Err(WebhookError::EmptySecret(path.display().to_string()));
                }
                Some(Secret::new(text))
            }
            (None, Some(s)) if !s.is_empty() => Some(Secret::new(s)),
            _ => None,
        };
        Ok(Some(Self {
            delivery: Delivery {
                url,
                secret,
                max_attempts: cfg.webhook_attempts.max(1),
                backoff: cfg.webhook_backoff,
                backoff_cap: cfg.webhook_backoff_cap.max(cfg.webhook_backoff),
            },
            queue: cfg.webhook_queue.max(1),
            timeout: cfg.webhook_timeout,
        }))
    }
}

struct Inner {
    queue: Arc<Queue>,
    host: String,
}

/// The handle the rest of the master emits through (cheap to clone). A
/// master without `--webhook-url` has a disabled one: emits do nothing.
#[derive(Clone, Default)]
pub struct Webhooks {
    inner: Option<Arc<Inner>>,
}

/// The running delivery: what shutdown needs.
pub struct Running {
    queue: Arc<Queue>,
    tasks: TaskTracker,
    give_up: CancellationToken,
}

impl Webhooks {
    /// Starts the delivery task when configured. `host` goes in every event.
    pub fn start(
        cfg: Option<WebhookConfig>,
        host: String,
    ) -> Result<(Self, Option<Running>), WebhookError> {
        describe();
        let Some(cfg) = cfg else {
            return Ok((Self::default(), None));
        };
        if cfg.delivery.secret.is_none() {
            tracing::warn!(
                "--webhook-url without a secret: events are not signed and receivers cannot verify them"
            );
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            // A redirect is an answer, not a new target for signed events.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(WebhookError::Client)?;
        let queue = Arc::new(Queue::new(cfg.queue));
        let tasks = TaskTracker::new();
        let give_up = CancellationToken::new();
        tracing::info!(
            target_host = cfg.delivery.url.host_str().unwrap_or("?"),
            queue = cfg.queue,
            signed = cfg.delivery.secret.is_some(),
            "webhooks on"
        );
        tasks.spawn(deliver::run(
            queue.clone(),
            http,
            cfg.delivery,
            give_up.clone(),
        ));
        tasks.close();
        let hooks = Self {
            inner: Some(Arc::new(Inner {
                queue: queue.clone(),
                host,
            })),
        };
        Ok((
            hooks,
            Some(Running {
                queue,
                tasks,
                give_up,
            }),
        ))
    }

    /// Whether events go anywhere.
    #[allow(dead_code)]
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues an event of type `kind` with `data`; never waits, never fails
    /// (a full queue drops its oldest event, counted).
    pub fn emit<T: Serialize>(&self, kind: &'static str, data: T) {
        let Some(inner) = &self.inner else { return };
        let envelope = event::Envelope {
            id: event::new_id(),
            kind,
            ts: crate::registry::now_ms(),
            host: inner.host.clone(),
            data,
        };
        let body = match serde_json::to_vec(&envelope) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(event = kind, error = %e, "cannot serialize a webhook event");
                return;
            }
        };
        let pending = Pending {
            id: envelope.id,
            kind,
            body: body.into(),
        };
        match inner.queue.push(pending) {
            Some(p) => {
                if p.dropped {
                    counter!("chat_webhook_dropped_total").increment(1);
                    tracing::warn!(
                        event = kind,
                        depth = p.depth,
                        "webhook queue full; dropped the oldest event"
                    );
                }
                depth(p.depth);
            }
            None => {
                counter!("chat_webhook_failed_total", "reason" => "shutdown").increment(1);
            }
        }
    }

    /// `dm.offline`: the direct-message code calls this once a DM is stored
    /// and its recipient had no live connection anywhere. Never waits.
    #[allow(dead_code)] // called by the direct-message code
    pub fn dm_offline(&self, dm: DmOffline) {
        self.emit(event::DM_OFFLINE, dm);
    }

    /// `room.created`.
    pub fn room_created(&self, room: &str, port: u16) {
        self.emit(
            event::ROOM_CREATED,
            event::RoomCreated {
                room: room.to_owned(),
                port,
            },
        );
    }

    /// `room.closed`; `failed` carries why a room was given up.
    pub fn room_closed(&self, room: &str, failed: Option<&str>) {
        self.emit(
            event::ROOM_CLOSED,
            event::RoomClosed {
                room: room.to_owned(),
                reason: if failed.is_some() {
                    "failed"
                } else {
                    "stopped"
                },
                detail: failed.map(str::to_owned),
            },
        );
    }
}

impl Running {
    /// Shutdown: takes no more events, delivers what is queued until
    /// `deadline`, then gives up on the rest (counted as failed).
    pub async fn drain(self, deadline: tokio::time::Instant) {
        self.queue.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            self.give_up.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
        }
    }
}

/// The queue-depth gauge.
fn depth(n: usize) {
    gauge!("chat_webhook_queue_depth").set(n as f64);
}

fn describe() {
    describe_counter!(
        "chat_webhook_sent_total",
        "Webhook events the receiver accepted (2xx)."
    );
    describe_counter!(
        "chat_webhook_failed_total",
        "Webhook events given up: refused (4xx, not retried), exhausted (every retry failed) or shutdown (the grace ended)."
    );
    describe_counter!(
        "chat_webhook_retries_total",
        "Webhook attempts retried after a 5xx, a connection error or a timeout."
    );
    describe_counter!(
        "chat_webhook_dropped_total",
        "Webhook events dropped, oldest first, because the queue was full."
    );
    describe_gauge!(
        "chat_webhook_queue_depth",
        "Webhook events waiting for delivery."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(cap: usize) -> (Webhooks, Arc<Queue>) {
        let queue = Arc::new(Queue::new(cap));
        let hooks = Webhooks {
            inner: Some(Arc::new(Inner {
                queue: queue.clone(),
                host: "chat-1".into(),
            })),
        };
        (hooks, queue)
    }

    #[tokio::test]
    async fn dm_offline_carries_what_a_push_needs() {
        let (hooks, queue) = hooks(4);
        hooks.dm_offline(DmOffline {
            to: "u-2".into(),
            from: "u-1".into(),
            conversation: "u-1:u-2".into(),
            seq: 7,
            text: "hi".into(),
        });
        let e = queue.pop().await.map(|e| (e.kind, e.id, e.body));
        let Some((kind, id, body)) = e else {
            panic!("nothing queued")
        };
        assert_eq!(kind, "dm.offline");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["type"], "dm.offline");
        assert_eq!(v["id"], id.as_str());
        assert_eq!(v["host"], "chat-1");
        assert_eq!(
            v["data"],
            serde_json::json!({"to":"u-2","from":"u-1","conversation":"u-1:u-2","seq":7,"text":"hi"})
        );
    }

    #[test]
    fn a_disabled_handle_emits_nothing() {
        let hooks = Webhooks::default();
        assert!(!hooks.enabled());
        hooks.room_created("a", 1); // no queue, no panic
    }
}
