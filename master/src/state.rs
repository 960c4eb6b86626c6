//! What the master's tasks share.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::keys::Keys;
use crate::logging::LogControl;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// The master.
pub struct Master {
    pub cfg: Config,
    pub keys: Keys,
    pub registry: Registry,
    pub worker_bin: PathBuf,
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
    /// Room supervisors (one task per worker process).
    pub supervisors: TaskTracker,
    pub log: LogControl,
    pub metrics: Metrics,
    /// The load balancers this host registers with.
    pub lbs: Vec<Arc<crate::lb::LoadBalancer>>,
}

pub type Shared = Arc<Master>;
