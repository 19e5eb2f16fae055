//! *Check the cache*: after an invalidation, each purged URL is requested once, as a visitor
//! would, and what the cache answered is recorded (see [`crate::domain::freshness`]).
//!
//! Probes go only to hosts the settings allow (the same policy as purges), never follow a
//! redirect, read at most [`MAX_BODY_BYTES`] of a body, run [`CONCURRENCY`] at a time and stop
//! at [`TIME_LIMIT`]: a URL not reached by then is recorded as unknown.

use crate::domain::freshness::{Freshness, ProbeAnswer, classify};
use crate::domain::settings::Settings;
use crate::domain::status::{Scope, UrlStatus};
use crate::invalidations::InvalidationError;
use crate::store::{CacheCheck, InvalidationUrl, Store, now_millis};
use futures_util::StreamExt;
use std::time::Duration;
use url::Url;

/// Requests in flight at once: a check must not load the cache it checks.
pub const CONCURRENCY: usize = 4;
/// Time limit of one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit of a whole check.
pub const TIME_LIMIT: Duration = Duration::from_secs(120);
/// Most of a body read: the answer's headers say all; the body is read only so the
/// connection can be reused.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// Results are recorded in groups of this many.
const GROUP: usize = 50;
/// Most URLs one check requests.
pub const MAX_URLS: usize = 10_000;

/// Headers that tell whether an answer came from the cache's copy, in order of preference.
const CACHE_STATUS_HEADERS: &[&str] = &["x-cache", "cf-cache-status", "cache-status"];

/// Starts a check of `id`'s purged URLs in the background; `Ok(false)` when one is already
/// under way. Refused while the invalidation is still running.
pub async fn start(store: &Store, user_id: i64, id: i64) -> Result<bool, InvalidationError> {
    let inv = store
        .get_invalidation(id)
        .await?
        .ok_or(InvalidationError::NotFound(id))?;
    if !inv.status.is_finished() {
        return Err(InvalidationError::NothingToRetry(format!(
            "Invalidation #{id} is still running: check the cache once it has finished."
        )));
    }
    // A tag or prefix was cleared: its proof is the template's URLs of each asset.
    let covered = matches!(inv.scope, Scope::Tags | Scope::Prefixes);
    let mut urls = if covered {
        store.covered_to_check(id).await?
    } else if inv.scope == Scope::Everything {
        Vec::new()
    } else {
        store
            .invalidation_urls_with_status(id, UrlStatus::Succeeded)
            .await?
    };
    if urls.is_empty() {
        return Err(InvalidationError::NothingToRetry(format!(
            "Invalidation #{id} has no purged URLs to check."
        )));
    }
    urls.truncate(MAX_URLS);
    let settings = load_settings_of(store).await?;
    let policy = crate::invalidations::host_policy(store, &settings).await?;
    if !store
        .start_cache_check(id, user_id, urls.len() as i64, now_millis())
        .await?
    {
        return Ok(false);
    }
    let store = store.clone();
    tokio::spawn(async move {
        let allows = move |u: &Url| policy.allows(u);
        if let Err(e) = run(&store, id, urls, covered, &allows).await {
            tracing::warn!(id, error = %e, "cache check failed");
        }
        if let Err(e) = store.finish_cache_check(id, now_millis()).await {
            tracing::warn!(id, error = %e, "cache check not marked finished");
        }
    });
    Ok(true)
}

async fn load_settings_of(store: &Store) -> Result<Settings, InvalidationError> {
    let input = store.load_settings().await?;
    Settings::parse(&input).map_err(|e| InvalidationError::Settings(format!("{e:?}")))
}

/// Probes every URL and records the verdicts in groups.
async fn run(
    store: &Store,
    id: i64,
    urls: Vec<InvalidationUrl>,
    covered: bool,
    allows: &(dyn Fn(&Url) -> bool + Sync),
) -> anyhow::Result<()> {
    let client = client()?;
    let deadline = tokio::time::Instant::now() + TIME_LIMIT;
    let mut results = futures_util::stream::iter(urls.into_iter().map(|u| {
        let client = &client;
        async move {
            let check = check_one(client, &u, allows, deadline).await;
            CacheCheck {
                url_id: u.id,
                covered,
                ..check
            }
        }
    }))
    .buffer_unordered(CONCURRENCY);
    let mut group = Vec::with_capacity(GROUP);
    while let Some(check) = results.next().await {
        group.push(check);
        if group.len() == GROUP {
            store.record_cache_checks(id, &group, now_millis()).await?;
            group.clear();
        }
    }
    store.record_cache_checks(id, &group, now_millis()).await?;
    Ok(())
}

fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .connect_timeout(PROBE_TIMEOUT.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(CONCURRENCY)
        .user_agent(concat!(
            "cdn-invalidator/",
            env!("CARGO_PKG_VERSION"),
            " (cache check)"
        ))
        .build()
}

/// One URL's verdict (its `url_id` is filled in by the caller).
async fn check_one(
    client: &reqwest::Client,
    url: &InvalidationUrl,
    allows: &(dyn Fn(&Url) -> bool + Sync),
    deadline: tokio::time::Instant,
) -> CacheCheck {
    let unknown = |detail: String| CacheCheck {
        url_id: url.id,
        covered: false,
        freshness: Freshness::Unknown,
        http_status: None,
        detail,
    };
    let parsed = match Url::parse(&url.url) {
        Ok(u) => u,
        Err(e) => return unknown(format!("not checked: not a URL ({e})")),
    };
    if !allows(&parsed) {
        return unknown(
            "not checked: its host is not the publish server or an allowed host".into(),
        );
    }
    let answer = match tokio::time::timeout_at(deadline, probe(client, parsed)).await {
        Ok(answer) => answer,
        Err(_) => return unknown("not checked: the check's time limit passed".into()),
    };
    let purged_at = url.finished_at.unwrap_or_else(now_millis);
    let since_purge = (now_millis() - purged_at).max(0) as f64 / 1000.0;
    let (freshness, detail) = classify(&answer, since_purge);
    CacheCheck {
        url_id: url.id,
        covered: false,
        freshness,
        http_status: answer.http_status.map(i64::from),
        detail,
    }
}

/// Requests `url` once as a visitor would, and reads what the cache said about its copy.
async fn probe(client: &reqwest::Client, url: Url) -> ProbeAnswer {
    let request = client
        .get(url)
        // Akamai adds its X-Cache only when asked.
        .header("Pragma", "akamai-x-cache-on");
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return ProbeAnswer {
                error: Some(crate::cdn::describe_error(&e)),
                ..ProbeAnswer::default()
            };
        }
    };
    let headers = response.headers();
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let answer = ProbeAnswer {
        http_status: Some(response.status().as_u16()),
        age: text("age").and_then(|a| a.trim().parse().ok()),
        cache_status: CACHE_STATUS_HEADERS
            .iter()
            .find_map(|h| text(h).map(|v| format!("{}: {v}", display_name(h)))),
        x_varnish: text("x-varnish"),
        error: None,
    };
    // Read a little of the body, then let the rest go with the connection.
    let mut read = 0;
    while read < MAX_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            _ => break,
        }
    }
    answer
}

fn display_name(header: &str) -> &'static str {
    match header {
        "x-cache" => "X-Cache",
        "cf-cache-status" => "CF-Cache-Status",
        _ => "Cache-Status",
    }
}
