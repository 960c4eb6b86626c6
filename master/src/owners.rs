//! Room-name ownership across hosts that share a store: a host claims a name
//! (`owners`, unique on the name) before it starts the room, renews its lease
//! (`--owner-lease`, 30 s) every third of it, and gives the name up when the
//! room ends. A create on another host answers where the room is. When the
//! owner dies and its lease ends, another host may claim the name: the room's
//! history goes on there in a new epoch, after every seq the old owner could
//! have used. The embedded store is private to its master (its file is
//! locked), so names are always this host's there.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::Config;
use crate::registry::RoomEntry;
use crate::store::{Claim, OwnerRecord, Store, StoreError};

/// Time a claim may take before the create gives up.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);

/// What claims, renews and releases this host's room names.
pub struct Owners {
    store: Arc<dyn Store>,
    /// Whether other hosts may use the store.
    shared: bool,
    /// This host's key (`host:api-port`), the catalog's prefix too.
    key: String,
    host: String,
    lease: Duration,
    cfg: Config,
}

impl Owners {
    pub fn new(store: Arc<dyn Store>, cfg: &Config, hostname: &str) -> Self {
        let host = cfg.host.clone().unwrap_or_else(|| hostname.to_owned());
        Self {
            shared: store.kind() != "redb",
            store,
            key: format!("{host}:{}", cfg.port),
            host,
            lease: cfg.owner_lease,
            cfg: cfg.clone(),
        }
    }

    /// This host's key in the owners collection and the catalog.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether names must be claimed (the store is shared).
    pub fn shared(&self) -> bool {
        self.shared
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn record(&self, name: &str, port: u16) -> OwnerRecord {
        OwnerRecord {
            name: name.to_owned(),
            owner: self.key.clone(),
            host: self.host.clone(),
            port,
            url: self.cfg.room_url(port),
            until_ms: crate::registry::now_ms()
                .saturating_add(u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// Claims (or renews) the room's name for this host. A takeover (the
    /// previous owner's lease ended) makes the room continue its history in
    /// a new epoch, past every seq the old owner could have used.
    pub async fn claim(&self, entry: &RoomEntry) -> Result<Claim, StoreError> {
        if !self.shared {
            return Ok(Claim::Claimed { taken_over: false });
        }
        let claim = self.record(&entry.name, entry.port());
        let outcome = tokio::time::timeout(
            CLAIM_TIMEOUT,
            self.store.claim_owner(&claim, crate::registry::now_ms()),
        )
        .await
        .map_err(|_| StoreError::Task("the store did not answer the claim in time".into()))??;
        if outcome == (Claim::Claimed { taken_over: true }) {
            tracing::warn!(room = %entry.name, "took over a room whose owner's lease ended: new epoch");
            entry.taken_over.store(true, Ordering::Release);
        }
        Ok(outcome)
    }

    /// Gives up this host's claim on `name` (its lease would end anyway).
    pub async fn release(&self, name: &str) {
        if self.shared
            && let Err(e) = self.store.release_owner(name, &self.key).await
        {
            tracing::warn!(room = %name, error = %e, "cannot give up the room's name (its lease will end)");
        }
    }
}
