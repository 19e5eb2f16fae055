//! Purging: one trait, one file per provider, and the retry policy they share.
//!
//! Nothing outside this module knows which providers exist: the rest of the app stores a
//! [`ProviderSettings`] snapshot with each invalidation and asks [`build`] for a [`Purger`].

mod http_purge;

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use url::Url;

use crate::domain::settings::Settings;

/// A boxed future, so providers can live behind `dyn Purger`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What one attempt to purge one URL came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The cache no longer holds the URL (purged, or it was not cached).
    Done {
        http_status: Option<u16>,
        note: Option<String>,
    },
    /// A transient failure: try again later, not before `retry_after` when given.
    Retry {
        http_status: Option<u16>,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// A permanent failure: retrying cannot help.
    Fail {
        http_status: Option<u16>,
        reason: String,
    },
}

/// A CDN or cache that can purge URLs.
pub trait Purger: Send + Sync {
    /// How many URLs one call to [`Purger::purge`] may carry.
    fn batch_size(&self) -> usize {
        1
    }

    /// Purges `urls`; returns one [`Attempt`] per URL, in the same order.
    fn purge<'a>(&'a self, urls: &'a [Url]) -> BoxFuture<'a, Vec<Attempt>>;
}

/// Which provider an invalidation uses and its (non-secret) settings at the time it was queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum ProviderSettings {
    /// HTTP `PURGE` to the URL's own host, or to each purge node.
    HttpPurge { purge_nodes: Vec<String> },
}

impl ProviderSettings {
    /// The active provider as the admin configured it.
    pub fn from_settings(settings: &Settings) -> Self {
        Self::HttpPurge {
            purge_nodes: settings
                .purge_nodes
                .iter()
                .map(|u| u.as_str().trim_end_matches('/').to_string())
                .collect(),
        }
    }

    /// Short name stored with each invalidation.
    pub fn name(&self) -> &'static str {
        match self {
            Self::HttpPurge { .. } => "http_purge",
        }
    }

    /// What users read: "HTTP PURGE to 2 purge nodes".
    pub fn describe(&self) -> String {
        match self {
            Self::HttpPurge { purge_nodes } if purge_nodes.is_empty() => {
                "HTTP PURGE to each URL's own host".into()
            }
            Self::HttpPurge { purge_nodes } => format!("HTTP PURGE to {}", purge_nodes.join(", ")),
        }
    }

    /// Seconds the provider needs after accepting a purge until every edge serves fresh content.
    /// Zero for a cache purged directly.
    pub fn propagation_seconds(&self) -> u64 {
        match self {
            Self::HttpPurge { .. } => 0,
        }
    }
}

/// How purges are sent: timeouts, retries, concurrency.
#[derive(Debug, Clone)]
pub struct PurgeConfig {
    /// Attempts per URL before it is failed (at least 1).
    pub max_attempts: u32,
    /// First retry waits about this long; each further retry doubles it.
    pub backoff_base: Duration,
    /// Longest wait between two attempts (also caps `Retry-After`).
    pub backoff_max: Duration,
    /// Time limit of one request.
    pub timeout: Duration,
    /// Requests in flight at once per purge node.
    pub concurrency: usize,
}

impl Default for PurgeConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            concurrency: 8,
        }
    }
}

impl PurgeConfig {
    /// The wait before attempt `attempt + 1`: exponential with jitter, never shorter than `retry_after`.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.backoff_max);
        // "Equal jitter": half fixed, half random, so retries from many URLs spread out.
        let jittered = exp.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        retry_after.map_or(jittered, |r| r.min(self.backoff_max).max(jittered))
    }
}

/// The HTTP client purges are sent with: kept-alive connections, no redirects followed.
pub fn http_client(config: &PurgeConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(config.concurrency)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("cdn-invalidator/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The purger for an invalidation's provider settings.
pub fn build(
    settings: &ProviderSettings,
    client: reqwest::Client,
) -> anyhow::Result<Box<dyn Purger>> {
    Ok(match settings {
        ProviderSettings::HttpPurge { purge_nodes } => {
            let nodes = purge_nodes
                .iter()
                .map(|n| Url::parse(n))
                .collect::<Result<_, _>>()?;
            Box::new(http_purge::HttpPurge::new(client, nodes))
        }
    })
}

/// Reads `Retry-After` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Classifies an HTTP answer to a purge the way caches use status codes.
pub(crate) fn classify(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
) -> Attempt {
    let code = status.as_u16();
    let reason = format!("HTTP {code} {}", status.canonical_reason().unwrap_or(""))
        .trim_end()
        .to_string();
    match code {
        200..=299 => Attempt::Done {
            http_status: Some(code),
            note: None,
        },
        404 | 412 => Attempt::Done {
            http_status: Some(code),
            note: Some("was not cached".into()),
        },
        429 | 500..=599 => Attempt::Retry {
            http_status: Some(code),
            reason,
            retry_after: retry_after(headers),
        },
        _ => Attempt::Fail {
            http_status: Some(code),
            reason,
        },
    }
}

/// A transport error in a few words ("connection refused", "timed out").
pub(crate) fn describe_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    let root = source.to_string();
    if e.is_connect() {
        format!("could not connect: {root}")
    } else {
        root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let c = PurgeConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..PurgeConfig::default()
        };
        assert_eq!(c.backoff(1, None, 1.0), Duration::from_millis(100));
        assert_eq!(c.backoff(1, None, 0.0), Duration::from_millis(50));
        assert_eq!(c.backoff(3, None, 1.0), Duration::from_millis(400));
        assert_eq!(c.backoff(10, None, 1.0), Duration::from_secs(1));
        assert_eq!(
            c.backoff(1, Some(Duration::from_millis(700)), 0.0),
            Duration::from_millis(700)
        );
        assert_eq!(
            c.backoff(1, Some(Duration::from_secs(3600)), 0.0),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn status_codes_map_to_done_retry_or_fail() {
        let h = reqwest::header::HeaderMap::new();
        let at = |c: u16| classify(reqwest::StatusCode::from_u16(c).unwrap(), &h);
        assert!(matches!(at(200), Attempt::Done { note: None, .. }));
        assert!(matches!(at(204), Attempt::Done { .. }));
        assert!(matches!(at(404), Attempt::Done { note: Some(_), .. }));
        assert!(matches!(at(412), Attempt::Done { note: Some(_), .. }));
        assert!(matches!(at(429), Attempt::Retry { .. }));
        assert!(matches!(at(503), Attempt::Retry { .. }));
        assert!(matches!(at(405), Attempt::Fail { .. }));
        assert!(matches!(at(301), Attempt::Fail { .. }));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(
            "retry-after",
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
    }
}
