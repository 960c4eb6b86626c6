//! This host's subscription to its channel (`chat:host:<id>`): what other
//! hosts publish for its connections is delivered to its rooms; presence
//! notices make its watchers' users be read again. A lost connection is
//! made again and the channel subscribed again (with backoff); every new
//! subscription reads every watched user again, since notices published
//! meanwhile were lost.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Node;
use super::commands::Job;
use super::health::{self, Side};
use super::wire::{self, Notice};
use crate::users::Fanout;

/// First and longest wait between two attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(2));

pub async fn run(
    node: Arc<Node>,
    client: redis::Client,
    jobs: mpsc::Sender<Job>,
    shutdown: CancellationToken,
) {
    let channel = wire::channel(&node.id);
    let mut backoff = BACKOFF.0;
    loop {
        let subscribed = tokio::time::timeout(super::ROUND_TRIP, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match subscribed {
            Ok(Ok(pubsub)) => {
                backoff = BACKOFF.0;
                node.health.report(Side::Subscription, Ok(()));
                // Anything published while unsubscribed is lost: read again.
                let _ = jobs.try_send(Job::CheckAll);
                let mut messages = pubsub.into_on_message();
                loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    health::received();
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    handle(&node, &jobs, &payload);
                }
                node.health
                    .report(Side::Subscription, Err("subscription lost".into()));
            }
            Ok(Err(e)) => {
                node.health.report(Side::Subscription, Err(e.to_string()));
            }
            Err(_) => {
                node.health.report(
                    Side::Subscription,
                    Err("no subscription within the bound".into()),
                );
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

fn handle(node: &Node, jobs: &mpsc::Sender<Job>, payload: &str) {
    match serde_json::from_str::<Notice>(payload) {
        Ok(Notice::Deliver { users, event }) => node.local.deliver(&users, None, &event),
        Ok(Notice::Presence { user }) => {
            if node.local.watches.is_watched(&user) && jobs.try_send(Job::Check(user)).is_err() {
                health::dropped();
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "an unreadable notice on this host's channel");
        }
    }
}
