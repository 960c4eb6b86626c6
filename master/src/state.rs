//! The whole master, as the HTTP handlers and the IPC sessions see it.
//! Long-lived tasks get narrow handles instead (the supervisors a
//! `Supervisor`, and so does the catalog; the writer its `writer::Handles`,
//! the cache its store and a way to reach rooms, the load-balancer tasks
//! `lb::Host`); none of the modules named here imports this one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chat_shared::ipc::Snapshot;

use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::config::Config;
use crate::events::Events;
use crate::keys::Keys;
use crate::logging::LogControl;
use crate::metrics::Metrics;
use crate::registry::{Registry, RoomEntry};
use crate::store::{Store, StoreHealth};
use crate::supervisor::Sup;
use crate::writer::Writer;

/// The master.
pub struct Master {
    pub cfg: Config,
    pub keys: Keys,
    pub registry: Arc<Registry>,
    pub socket: PathBuf,
    pub hostname: String,
    pub started: Instant,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Cancelled to shut the whole server down.
    pub shutdown: CancellationToken,
    /// Cancelled to stop the APIs and the IPC listener (at shutdown, and
    /// before a restart, which leaves the rooms running).
    pub api_stop: CancellationToken,
    /// Cancelled to restart the master in place (`POST /api/v1/restart`).
    pub restart: CancellationToken,
    pub log: LogControl,
    pub metrics: Metrics,
    /// The load balancers this host registers with.
    pub lbs: Vec<Arc<crate::lb::LoadBalancer>>,
    pub store: Arc<dyn Store>,
    /// Whether the store answered at least once (readiness).
    pub store_health: Arc<StoreHealth>,
    pub cache: Arc<Cache>,
    pub writer: Arc<Writer>,
    /// The rooms' lifecycle events (published by the supervisors).
    pub events: Events,
    /// The room supervisors' handle (what they need of this master).
    pub supervisor: Sup,
    /// Users across rooms: direct messages, blocks, read state.
    pub users: Arc<crate::users::Users>,
    /// Webhook events (`Webhooks::dm_offline` for direct messages); a
    /// disabled handle without `--webhook-url`.
    pub webhooks: crate::webhook::Webhooks,
    /// Bans and unbans made in rooms, on their way to the store.
    pub room_bans: crate::room_bans::RoomBans,
}

impl Master {
    pub fn store_ever_reached(&self) -> bool {
        self.store_health.ever_reached()
    }

    /// The snapshot a room's worker pulls (and receives again on changes).
    /// The reference data travels on its own, in chunks (`cache.rs`).
    pub fn snapshot(&self, entry: &RoomEntry) -> Snapshot {
        self.registry
            .snapshot(entry, chat_shared::ipc::Reference::default())
    }

    /// Pushes the current snapshot to every room.
    pub fn push_snapshots(&self) {
        self.registry.push_snapshots();
    }
}

pub type Shared = Arc<Master>;
