//! The application's verbs on invalidations: queue one, retry one. Pages, the worker and any
//! future API call these, so every way in obeys the same rules.

use crate::cdn::{self, ProviderKind, ProviderSnapshot, PurgeConfig, Values};
use crate::domain::estimate::estimate;
use crate::domain::settings::Settings;
use crate::domain::status::UrlStatus;
use crate::domain::url_list::{self, HostPolicy};
use crate::domain::variants::{self, Scope, TargetError};
use crate::state::AppState;
use crate::store::{NewInvalidation, ProviderChoice, Store, StoreError, User};

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

/// The hosts URLs may name: the settings' publish server and allowed hosts, plus the hosts
/// the active provider serves; when it serves only some (CloudFront), only those.
pub async fn host_policy(store: &Store, settings: &Settings) -> Result<HostPolicy, StoreError> {
    let choice = store.load_provider().await?;
    let policy = settings.host_policy();
    Ok(match active_kind(&choice).served_hosts(&choice.values) {
        Some((hosts, who)) => policy.served_only(hosts, who),
        None => policy,
    })
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
    let new = Queued {
        user,
        idempotency_key,
        urls,
        duplicates_dropped,
        retry_of,
        scope: Scope::Urls,
        covered: Vec::new(),
    };
    let id = queue_with(&state.store, &state.config.purge, &provider, new).await?;
    state.wake_worker.notify_one();
    Ok(id)
}

/// What [`queue_with`] stores.
pub struct Queued<'a> {
    pub user: &'a User,
    pub idempotency_key: String,
    pub urls: Vec<String>,
    pub duplicates_dropped: usize,
    pub retry_of: Option<i64>,
    /// What `urls` are (listed URLs, tags, prefixes, sites).
    pub scope: Scope,
    /// For tags and prefixes: the template URLs each row clears, by the row's position.
    pub covered: Vec<(i64, String)>,
}

/// Stores a new invalidation for `provider` with its estimate: the provider's model (with
/// what was measured of its requests), corrected by its history. [`queue`] with the active
/// provider; benchmarks call it with a provider whose limits are sped up.
pub async fn queue_with(
    store: &Store,
    config: &PurgeConfig,
    provider: &ProviderSnapshot,
    queued: Queued<'_>,
) -> Result<i64, InvalidationError> {
    let Queued {
        user,
        idempotency_key,
        urls,
        duplicates_dropped,
        retry_of,
        scope,
        covered,
    } = queued;
    let measured = store.load_measured(&provider.provider).await?;
    let history = store.estimate_history(&provider.provider, scope).await?;
    let model = provider.model_for(scope, config, measured);
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
        scope,
        covered,
    };
    let id = store
        .create_invalidation(&new, |ahead| estimate(&model, ahead, total, &history))
        .await?;
    tracing::info!(id, user = %user.username, urls = total, "invalidation queued");
    Ok(id)
}

/// What an invalidation of every variant of some assets sends: one row per tag, prefix or
/// site, and the template URLs each row clears (for comparison and for *Check the cache*).
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub scope: Scope,
    pub rows: Vec<String>,
    /// (position of the row, template URL) pairs.
    pub covered: Vec<(i64, String)>,
}

impl Targets {
    /// The template URLs that row `position` clears.
    pub fn covered_by(&self, position: usize) -> impl Iterator<Item = &str> {
        self.covered
            .iter()
            .filter(move |(p, _)| *p == position as i64)
            .map(|(_, u)| u.as_str())
    }
}

/// Why the active provider cannot send `scope`, when it cannot.
pub fn scope_refusal(snapshot: &ProviderSnapshot, scope: Scope) -> Option<String> {
    if scope == Scope::Urls || snapshot.scopes().contains(&scope) {
        return None;
    }
    let who = snapshot.kind().map_or("This provider", |k| k.short_name());
    Some(match scope {
        Scope::Everything => format!("{who} offers no way to purge everything from here."),
        _ => format!("{who} cannot purge by {}: only listed URLs.", scope.label()),
    })
}

/// The rows and covered URLs of an invalidation of every variant of `asset_ids` by `scope`
/// (tags or prefixes), checked against the provider's tag rules and the host policy. Every
/// refused asset is named; nothing is queued unless all pass.
pub fn plan_variants(
    settings: &Settings,
    policy: &HostPolicy,
    snapshot: &ProviderSnapshot,
    scope: Scope,
    asset_ids: &[&str],
) -> Result<Targets, Vec<TargetError>> {
    let refuse = |asset_id: &str, reason: String| {
        vec![TargetError {
            asset_id: asset_id.to_string(),
            reason,
        }]
    };
    if let Some(reason) = scope_refusal(snapshot, scope) {
        return Err(refuse("", reason));
    }
    if asset_ids.is_empty() {
        return Err(refuse(
            "",
            "no asset is selected: tick the assets whose variants to clear.".into(),
        ));
    }
    let mut targets = Targets {
        scope,
        ..Targets::default()
    };
    let mut errors = Vec::new();
    for id in asset_ids {
        let urls = settings.template.expand(id);
        match scope {
            Scope::Tags => {
                if let Err(reason) = check_tag(snapshot, id) {
                    errors.push(TargetError {
                        asset_id: id.to_string(),
                        reason,
                    });
                    continue;
                }
                let position = targets.rows.len() as i64;
                targets.rows.push(id.to_string());
                targets
                    .covered
                    .extend(urls.into_iter().map(|u| (position, u)));
            }
            Scope::Prefixes => {
                let prefixes = match variants::prefixes(&settings.template, id) {
                    Ok(p) => p,
                    Err(reason) => {
                        errors.push(TargetError {
                            asset_id: id.to_string(),
                            reason,
                        });
                        continue;
                    }
                };
                if let Some(reason) = prefixes
                    .iter()
                    .find_map(|p| check_prefix(policy, snapshot, p).err())
                {
                    errors.push(TargetError {
                        asset_id: id.to_string(),
                        reason: format!("{reason}."),
                    });
                    continue;
                }
                let first = targets.rows.len();
                targets
                    .rows
                    .extend(prefixes.iter().map(|p| p.as_str().to_string()));
                for url in urls {
                    let at = prefixes
                        .iter()
                        .position(|p| url.starts_with(p.as_str()))
                        .unwrap_or(0);
                    targets.covered.push(((first + at) as i64, url));
                }
            }
            Scope::Urls | Scope::Everything => {
                return Err(refuse(id, "not a scope of variants".into()));
            }
        }
    }
    if errors.is_empty() {
        Ok(targets)
    } else {
        Err(errors)
    }
}

/// Whether `tag` may be sent to the snapshot's provider (its documented tag rules).
fn check_tag(snapshot: &ProviderSnapshot, tag: &str) -> Result<(), String> {
    snapshot
        .kind()
        .map(|k| k.tag_rules())
        .unwrap_or(cdn::TagRules::header_list("the provider", 1024))
        .check(tag)
        .map_err(|reason| format!("tag \"{tag}\" {reason}"))
}

/// Whether `prefix` may be sent: on a host the settings allow, and one the provider takes.
fn check_prefix(
    policy: &HostPolicy,
    snapshot: &ProviderSnapshot,
    prefix: &url::Url,
) -> Result<(), String> {
    if !policy.allows(prefix) {
        return Err(format!(
            "the prefix {prefix} is not on the publish server or an allowed host"
        ));
    }
    snapshot.check_prefix(prefix)
}

/// The sites an admin's *Purge everything* clears, one row each (`https://host/`): the
/// publish server's, and each allowed host's when the provider purges site by site (Varnish
/// bans). A provider that clears a whole zone, service or distribution in one request gets
/// one row, the publish server's site, so no other host is recorded cleared on its word.
pub fn everything(settings: &Settings, snapshot: &ProviderSnapshot) -> Targets {
    let mut rows: Vec<String> = Vec::new();
    if let Some(server) = &settings.publish_server {
        let base = server.image_base();
        let root = base.trim_end_matches("is/image/").to_string();
        rows.push(root);
    }
    if snapshot.kind().is_some_and(|k| k.everything_by_site()) {
        for host in &settings.allowed_hosts {
            let root = format!("https://{host}/");
            if !rows.contains(&root) {
                rows.push(root);
            }
        }
    }
    Targets {
        scope: Scope::Everything,
        rows,
        covered: Vec::new(),
    }
}

/// Queues an invalidation of `targets` (tags, prefixes or everything) with the active
/// provider, as [`queue`] does for URLs.
pub async fn queue_targets(
    state: &AppState,
    user: &User,
    idempotency_key: String,
    targets: Targets,
    retry_of: Option<i64>,
) -> Result<i64, InvalidationError> {
    let provider = active_snapshot(&state.store.load_provider().await?);
    if let Some(reason) = scope_refusal(&provider, targets.scope) {
        return Err(InvalidationError::NotAllowed(reason));
    }
    let new = Queued {
        user,
        idempotency_key,
        urls: targets.rows,
        duplicates_dropped: 0,
        retry_of,
        scope: targets.scope,
        covered: targets.covered,
    };
    let id = queue_with(&state.store, &state.config.purge, &provider, new).await?;
    state.wake_worker.notify_one();
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
    if inv.scope == Scope::Everything {
        // Purging everything again takes an admin and its confirmation, never a Retry button.
        return Err(InvalidationError::NothingToRetry(
            "A purge of everything is not retried from here: an admin purges everything again on Settings, Every variant of an asset, with its confirmation.".into(),
        ));
    }
    if inv.scope != Scope::Urls {
        return retry_targets(state, user, id, inv.scope, failed, &settings).await;
    }
    let text = failed
        .iter()
        .map(|u| u.url.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    if let Err(errors) = url_list::parse(
        &text,
        &host_policy(&state.store, &settings).await?,
        usize::MAX,
    ) {
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

/// [`retry`] of a tag, prefix or everything invalidation: the failed rows again, each with
/// the template URLs it clears; prefixes and sites pass the current host policy first.
async fn retry_targets(
    state: &AppState,
    user: &User,
    id: i64,
    scope: Scope,
    failed: Vec<crate::store::InvalidationUrl>,
    settings: &Settings,
) -> Result<i64, InvalidationError> {
    let rows: Vec<String> = failed.into_iter().map(|u| u.url).collect();
    // The same checks as Continue, with today's settings: the admin's mapping, the
    // provider's tag rules, and for prefixes the image path, the hosts and the provider.
    let (variants, _) = state.store.load_variants().await?;
    if variants::Variants::parse(&variants).and_then(|v| v.scope()) != Some(scope) {
        return Err(InvalidationError::NotAllowed(format!(
            "Nothing was retried: clearing by {} is no longer offered (Settings, Every variant of an asset).",
            scope.label()
        )));
    }
    let snapshot = active_snapshot(&state.store.load_provider().await?);
    let policy = host_policy(&state.store, settings).await?;
    let check = |row: &str| -> Result<(), String> {
        match scope {
            Scope::Tags => check_tag(&snapshot, row),
            _ => {
                let url = url::Url::parse(row).map_err(|e| format!("{row} is not a URL ({e})"))?;
                variants::check_image_path(&url)?;
                check_prefix(&policy, &snapshot, &url)
            }
        }
    };
    let refused: Vec<String> = rows.iter().filter_map(|r| check(r).err()).collect();
    if !refused.is_empty() {
        return Err(InvalidationError::NotAllowed(format!(
            "Nothing was retried: {}.",
            refused.join("; ")
        )));
    }
    let (all_covered, _) = state.store.covered_urls(id, i64::MAX).await?;
    let covered = all_covered
        .into_iter()
        .filter_map(|(url, by)| rows.iter().position(|r| *r == by).map(|p| (p as i64, url)))
        .collect();
    let targets = Targets {
        scope,
        rows,
        covered,
    };
    queue_targets(state, user, format!("retry-of-{id}"), targets, Some(id)).await
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
    if let Err(errors) = url_list::parse(
        &text,
        &host_policy(&state.store, &settings).await?,
        usize::MAX,
    ) {
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

/// Runs the provider's connection test on `snapshot` with `secrets`, and says which settings
/// (`what`) and which provider were checked. A test that reached the provider also times its
/// request, for estimates made before any invalidation has been sent.
pub async fn test_connection(
    store: &Store,
    config: &PurgeConfig,
    snapshot: &ProviderSnapshot,
    secrets: &Values,
    what: &str,
) -> Result<Result<String, String>, StoreError> {
    let ctx = match cdn::http_client(config) {
        Ok(client) => cdn::Context {
            client,
            config: config.clone(),
        },
        Err(e) => return Ok(Err(format!("Checked {what}: no HTTP client: {e}"))),
    };
    let label = snapshot.kind().map_or("provider", |k| k.label());
    let purger = match snapshot.build(secrets, &ctx) {
        Ok(purger) => purger,
        Err(e) => {
            return Ok(Err(format!(
                "Checked {what} ({label}): they cannot be used: {e}"
            )));
        }
    };
    let result = purger.test_connection().await;
    if result.is_ok() {
        // Timed on the connection the test opened: a first request pays for connecting.
        let round_trip = match purger.round_trip().await {
            Some(round_trip) => round_trip,
            None => {
                let again = std::time::Instant::now();
                let _ = purger.test_connection().await;
                again.elapsed()
            }
        };
        let measured = cdn::Measured {
            request_ms: (round_trip.as_secs_f64() * 1000.0).max(0.001),
            urls_per_request: 1.0,
        };
        store.save_measured(&snapshot.provider, measured).await?;
    }
    Ok(result
        .map(|m| format!("Checked {what} ({label}): {m}"))
        .map_err(|m| format!("Checked {what} ({label}): {m}")))
}

/// Creates an API token for `user` named `name`: the token's text, shown once (only its hash
/// is stored), or why the name is refused.
pub async fn create_api_token(
    store: &Store,
    user: &User,
    name: &str,
) -> Result<Result<String, String>, StoreError> {
    use crate::domain::api_token;
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let name = match api_token::name(name) {
        Ok(name) => name,
        Err(message) => return Ok(Err(message)),
    };
    let mut random = [0u8; api_token::RANDOM_BYTES];
    OsRng.fill_bytes(&mut random);
    let token = api_token::format(&random);
    let hash = api_token::hash(&token).expect("a token just made has a hash");
    store.create_api_token(user.id, &name, &hash).await?;
    Ok(Ok(token))
}
