//! The master's cache of reference data (users, bans, filters): loaded from
//! the store into one versioned snapshot, refreshed every `--cache-refresh`
//! and at once after an admin change, and pushed to every room as a delta
//! (only what changed since the previous version) in chunks that each fit an
//! IPC frame. A room gets the full data, chunked, when it links, and again if
//! it finds itself out of step. A thousand rooms never query the database
//! themselves.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use chat_shared::chunks;
use chat_shared::ipc::{Ban, Filter, MasterMsg, Reference};
use serde::Serialize;

use crate::state::Shared;
use crate::store::{FilterAction, ReferenceData};

/// The cached snapshot and when it was loaded.
pub struct Cache {
    inner: RwLock<CacheState>,
}

struct CacheState {
    reference: Arc<Reference>,
    loaded_at: Option<Instant>,
    last_error: Option<String>,
}

/// What `GET /api/v1/cache` shows.
#[derive(Debug, Serialize)]
pub struct CacheInfo {
    pub version: u64,
    /// Seconds since the last successful load; `None` before the first.
    pub age_secs: Option<f64>,
    pub users: usize,
    pub bans: usize,
    pub filters: usize,
    pub last_error: Option<String>,
}

/// Converts the store's records into what rooms receive.
pub fn to_reference(data: ReferenceData, version: u64) -> Reference {
    Reference {
        version,
        users: data.users.into_iter().map(|u| (u.id, u.name)).collect(),
        bans: data
            .bans
            .into_iter()
            .map(|b| Ban {
                user_id: b.user_id,
                room: b.room,
                until_ms: b.until_ms,
                reason: b.reason,
            })
            .collect(),
        filters: data
            .filters
            .into_iter()
            .map(|f| Filter {
                pattern: f.pattern,
                reject: f.action == FilterAction::Reject,
            })
            .collect(),
    }
}

/// The full reference data as frames that each fit the IPC limit.
pub fn full_reference(r: &Reference) -> Vec<MasterMsg> {
    chunks::split(chunks::full(r), chunks::CHUNK_BYTES)
        .into_iter()
        .map(|c| MasterMsg::ReferenceDelta(Box::new(c)))
        .collect()
}

/// The change from `old` to `new` as frames that each fit the IPC limit.
pub fn reference_delta(old: &Reference, new: &Reference) -> Vec<MasterMsg> {
    chunks::split(chunks::delta(old, new), chunks::CHUNK_BYTES)
        .into_iter()
        .map(|c| MasterMsg::ReferenceDelta(Box::new(c)))
        .collect()
}

fn same_content(a: &Reference, b: &Reference) -> bool {
    a.users == b.users && a.bans == b.bans && a.filters == b.filters
}

impl Cache {
    pub fn new() -> Self {
        Self {
            inner: RwLock::new(CacheState {
                reference: Arc::new(Reference::default()),
                loaded_at: None,
                last_error: None,
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, CacheState> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, CacheState> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn reference(&self) -> Arc<Reference> {
        self.read().reference.clone()
    }

    pub fn info(&self) -> CacheInfo {
        let s = self.read();
        CacheInfo {
            version: s.reference.version,
            age_secs: s.loaded_at.map(|t| t.elapsed().as_secs_f64()),
            users: s.reference.users.len(),
            bans: s.reference.bans.len(),
            filters: s.reference.filters.len(),
            last_error: s.last_error.clone(),
        }
    }

    /// Installs freshly loaded data; returns the previous and the new
    /// reference when its content changed (its version is then one more).
    fn install(&self, data: ReferenceData) -> Option<(Arc<Reference>, Arc<Reference>)> {
        let mut s = self.write();
        s.loaded_at = Some(Instant::now());
        s.last_error = None;
        let fresh = to_reference(data, s.reference.version + 1);
        if same_content(&fresh, &s.reference) {
            return None;
        }
        let fresh = Arc::new(fresh);
        let old = std::mem::replace(&mut s.reference, fresh.clone());
        Some((old, fresh))
    }

    fn failed(&self, error: String) -> bool {
        let mut s = self.write();
        let first = s.last_error.is_none();
        s.last_error = Some(error);
        first
    }
}

/// Loads the reference data now and pushes it to every room if it changed.
pub async fn refresh(master: &Shared) -> Result<u64, String> {
    match master.store.load_reference().await {
        Ok(data) => {
            master.store_reached();
            if let Some((old, r)) = master.cache.install(data) {
                tracing::info!(
                    version = r.version,
                    users = r.users.len(),
                    bans = r.bans.len(),
                    filters = r.filters.len(),
                    "reference data changed; pushing the change to rooms"
                );
                let delta = reference_delta(&old, &r);
                for room in master.registry.all() {
                    for m in &delta {
                        room.send(m.clone());
                    }
                }
            }
            Ok(master.cache.reference().version)
        }
        Err(e) => {
            let e = e.to_string();
            if master.cache.failed(e.clone()) {
                tracing::warn!(error = %e, "cannot load reference data; rooms keep the cached copy");
            }
            Err(e)
        }
    }
}

/// Refreshes the cache every `--cache-refresh` until shutdown.
pub async fn run(master: Shared) {
    loop {
        let _ = refresh(&master).await;
        tokio::select! {
            _ = master.shutdown.cancelled() => return,
            _ = tokio::time::sleep(master.cfg.cache_refresh) => {}
        }
    }
}
