//! What every handler, the worker and the services share. Imports nothing above it.

use crate::config::Config;
use crate::store::Store;
use std::sync::Arc;
use tokio::sync::Notify;

/// Shared by every handler.
pub struct AppState {
    pub store: Store,
    pub config: Config,
    /// Wakes the purge worker when an invalidation is queued.
    pub wake_worker: Arc<Notify>,
}
