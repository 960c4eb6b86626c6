//! The master's cache of reference data (users, bans, filters): loaded from
//! the store into one versioned snapshot, refreshed every `--cache-refresh`
//! and at once after an admin change, and pushed to every room as a delta
//! (only what changed since the previous version) in chunks that each fit an
//! IPC frame. A room gets the full data, chunked, when it links, and again if
//! it finds itself out of step. A thousand rooms never query the database
//! themselves.
//!
//! The cache holds what it needs and nothing else: the store, the store's
//! health, and a way to reach every room (`Rooms`).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chat_shared::chunks;
use chat_shared::ipc::{Ban, Filter, MasterMsg, Reference};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::rooms::Rooms;
use crate::store::{FilterAction, ReferenceData, Store, StoreHealth};

/// The cached snapshot and when it was loaded, and the handles it refreshes
/// with.
pub struct Cache {
    inner: RwLock<CacheState>,
    store: Arc<dyn Store>,
    health: Arc<StoreHealth>,
    rooms: Arc<dyn Rooms>,
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
    pub fn new(store: Arc<dyn Store>, health: Arc<StoreHealth>, rooms: Arc<dyn Rooms>) -> Self {
        Self {
            inner: RwLock::new(CacheState {
                reference: Arc::new(Reference::default()),
                loaded_at: None,
                last_error: None,
            }),
            store,
            health,
            rooms,
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

impl Cache {
    /// Loads the reference data now and pushes it to every room if it
    /// changed; the current version, or why the store did not answer.
    pub async fn refresh(&self) -> Result<u64, String> {
        match self.store.load_reference().await {
            Ok(data) => {
                self.health.reached();
                if let Some((old, r)) = self.install(data) {
                    tracing::info!(
                        version = r.version,
                        users = r.users.len(),
                        bans = r.bans.len(),
                        filters = r.filters.len(),
                        "reference data changed; pushing the change to rooms"
                    );
                    self.rooms.broadcast(&reference_delta(&old, &r));
                }
                Ok(self.reference().version)
            }
            Err(e) => {
                let e = e.to_string();
                if self.failed(e.clone()) {
                    tracing::warn!(error = %e, "cannot load reference data; rooms keep the cached copy");
                }
                Err(e)
            }
        }
    }
}

/// Refreshes the cache every `every` until `shutdown`.
pub async fn run(cache: Arc<Cache>, every: Duration, shutdown: CancellationToken) {
    loop {
        let _ = cache.refresh().await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chat_shared::reference::ReferenceIndex;

    use super::*;
    use crate::store::{RedbStore, UserRecord};

    /// What the cache sent to rooms.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<MasterMsg>>);

    impl Rooms for Recorder {
        fn send(&self, _room: &str, msg: MasterMsg) -> bool {
            self.0.lock().expect("log").push(msg);
            true
        }

        fn broadcast(&self, msgs: &[MasterMsg]) {
            self.0.lock().expect("log").extend_from_slice(msgs);
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<MasterMsg> {
            std::mem::take(&mut *self.0.lock().expect("log"))
        }
    }

    async fn user(store: &dyn Store, id: &str, name: &str) {
        store
            .upsert_user(&UserRecord {
                id: id.into(),
                name: name.into(),
                roles: Vec::new(),
            })
            .await
            .expect("upsert");
    }

    #[tokio::test]
    async fn a_refresh_pushes_only_what_changed_to_every_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).await.expect("open"));
        let rooms = Arc::new(Recorder::default());
        let health = Arc::new(StoreHealth::new("redb"));
        let cache = Cache::new(store.clone(), health.clone(), rooms.clone());
        for i in 0..100 {
            user(&*store, &format!("u{i}"), &format!("U{i}")).await;
        }
        // What a room holds: the full data it got at its hello.
        let mut room = ReferenceIndex::default();
        assert_eq!(cache.refresh().await, Ok(1));
        assert!(health.ever_reached());
        for m in rooms.take() {
            let MasterMsg::ReferenceDelta(d) = m else {
                panic!("not a delta: {m:?}")
            };
            assert!(room.apply(&d));
        }
        assert_eq!(room.user_count(), 100);

        // Nothing changed: nothing is sent, the version stays.
        assert_eq!(cache.refresh().await, Ok(1));
        assert!(rooms.take().is_empty());

        user(&*store, "u7", "renamed").await;
        assert_eq!(cache.refresh().await, Ok(2));
        let sent = rooms.take();
        assert_eq!(sent.len(), 1);
        let MasterMsg::ReferenceDelta(d) = &sent[0] else {
            panic!("not a delta: {sent:?}")
        };
        assert_eq!(d.users, vec![("u7".to_owned(), Some("renamed".to_owned()))]);
        assert!(room.apply(d));
        assert_eq!(room.name("u7"), Some("renamed"));
        assert_eq!(room.to_reference(), *cache.reference());
    }
}
