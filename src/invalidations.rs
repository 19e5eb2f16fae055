//! The application's verbs on invalidations: queue one, retry one. Pages, the worker and any
//! future API call these, so every way in obeys the same rules.

use crate::cdn::{self, ProviderKind, ProviderSnapshot};
use crate::domain::estimate::estimate;
use crate::domain::settings::Settings;
use crate::domain::status::UrlStatus;
use crate::domain::url_list;
use crate::state::AppState;
use crate::store::{NewInvalidation, ProviderChoice, StoreError, User};

/// Why an invalidation could not be queued or retried.
#[derive(Debug, thiserror::Error)]
pub enum InvalidationError {
    #[error("There is no invalidation #{0}.")]
    NotFound(i64),
    /// Nothing to retry (none failed, or it is still running).
    #[error("{0}")]
    NothingToRetry(String),
    /// The current settings refuse some of the URLs; nothing was queued.
    #[error("{0}")]
    NotAllowed(String),
    #[error("stored settings do not parse: {0}")]
    Settings(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The active provider kind of a stored choice (the default when none was chosen).
pub fn active_kind(choice: &ProviderChoice) -> &'static dyn ProviderKind {
    cdn::kind(&choice.provider).unwrap_or_else(cdn::default_kind)
}

/// The provider snapshot a new invalidation records.
pub fn active_snapshot(choice: &ProviderChoice) -> ProviderSnapshot {
    ProviderSnapshot::new(active_kind(choice), &choice.values)
}

/// The stored URL settings, parsed.
pub async fn load_settings(state: &AppState) -> Result<Settings, InvalidationError> {
    let input = state.store.load_settings().await?;
    Settings::parse(&input).map_err(|e| InvalidationError::Settings(format!("{e:?}")))
}

/// Stores a new invalidation of already validated `urls` with the active provider and its
/// estimate, then wakes the worker. Returns its id (the existing one for a repeated key).
pub async fn queue(
    state: &AppState,
    user: &User,
    idempotency_key: String,
    urls: Vec<String>,
    duplicates_dropped: usize,
    retry_of: Option<i64>,
) -> Result<i64, InvalidationError> {
    let provider = active_snapshot(&state.store.load_provider().await?);
    let measured = state.store.load_measured(&provider.provider).await?;
    let history = state.store.estimate_history(&provider.provider).await?;
    let model = provider.model(&state.config.purge, measured);
    let total = urls.len() as i64;
    let new = NewInvalidation {
        created_by: user.id,
        idempotency_key,
        provider: provider.provider.clone(),
        provider_settings: serde_json::to_string(&provider)
            .map_err(|e| InvalidationError::Settings(e.to_string()))?,
        urls,
        duplicates_dropped,
        retry_of,
        pacing_key: provider.pacing_key(),
    };
    let id = state
        .store
        .create_invalidation(&new, |ahead| estimate(&model, ahead, total, &history))
        .await?;
    state.wake_worker.notify_one();
    tracing::info!(id, user = %user.username, urls = total, "invalidation queued");
    Ok(id)
}

/// Queues a new invalidation of the failed URLs of `id`, linked to it: one retry per
/// invalidation, whoever asks (asking again leads to the same retry). The URLs pass the
/// current settings' checks first, like new ones; when any is refused nothing is queued.
pub async fn retry(state: &AppState, user: &User, id: i64) -> Result<i64, InvalidationError> {
    let inv = state
        .store
        .get_invalidation(id)
        .await?
        .ok_or(InvalidationError::NotFound(id))?;
    if let Some(existing) = state.store.find_retry_of(id).await? {
        return Ok(existing);
    }
    if !inv.status.is_finished() || inv.failed == 0 {
        return Err(InvalidationError::NothingToRetry(format!(
            "Invalidation #{id} has no failed URLs to retry{}.",
            if inv.status.is_finished() {
                ""
            } else {
                " yet: it is still running"
            }
        )));
    }
    let failed = state
        .store
        .invalidation_urls_with_status(id, UrlStatus::Failed)
        .await?;
    let settings = load_settings(state).await?;
    let text = failed
        .iter()
        .map(|u| u.url.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    if let Err(errors) = url_list::parse(&text, &settings.host_policy(), usize::MAX) {
        let refused: Vec<String> = errors
            .lines
            .iter()
            .map(|e| format!("{} {}", failed[e.line - 1].url, e.reason))
            .collect();
        return Err(InvalidationError::NotAllowed(format!(
            "Nothing was retried: the settings no longer allow {}",
            refused.join("; ")
        )));
    }
    let urls = failed.into_iter().map(|u| u.url).collect();
    queue(state, user, format!("retry-of-{id}"), urls, 0, Some(id)).await
}

/// Queues a new invalidation of the URLs the last cache check of `id` found stale (*Invalidate
/// again*). They pass the current settings' checks first, like new ones. Asking twice for the
/// same check's result leads to the same invalidation.
pub async fn invalidate_stale(
    state: &AppState,
    user: &User,
    id: i64,
) -> Result<i64, InvalidationError> {
    let summary = state.store.cache_check_summary(id).await?.ok_or_else(|| {
        InvalidationError::NothingToRetry(format!(
            "Invalidation #{id} has not been checked: check the cache first."
        ))
    })?;
    let stale = state.store.all_stale_urls(id).await?;
    if stale.is_empty() || summary.finished_at.is_none() {
        return Err(InvalidationError::NothingToRetry(format!(
            "The last cache check of invalidation #{id} found no stale URL{}.",
            if summary.finished_at.is_none() {
                " yet: it is still running"
            } else {
                ""
            }
        )));
    }
    let settings = load_settings(state).await?;
    let text = stale.join("\n");
    if let Err(errors) = url_list::parse(&text, &settings.host_policy(), usize::MAX) {
        let refused: Vec<String> = errors
            .lines
            .iter()
            .map(|e| format!("{} {}", stale[e.line - 1], e.reason))
            .collect();
        return Err(InvalidationError::NotAllowed(format!(
            "Nothing was invalidated: the settings no longer allow {}",
            refused.join("; ")
        )));
    }
    let key = format!("again-{id}-{}", summary.started_at);
    queue(state, user, key, stale, 0, None).await
}
