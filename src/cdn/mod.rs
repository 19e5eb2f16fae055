//! Purging: one trait per concern, one file per provider, and the retry policy they share.
//!
//! Nothing outside this module knows which providers exist. Each provider file defines a
//! [`ProviderKind`] (its settings fields, their validation, how to build a [`Purger`]) and is
//! listed once in [`PROVIDERS`]; the settings page, the worker and the invalidation pages work
//! from that list. Adding a provider touches its own file and that one registration.

mod akamai;
mod cloudflare;
mod cloudfront;
mod edgegrid;
mod fastly;
mod form;
mod http_purge;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use url::Url;

pub use crate::domain::estimate::{Bucket, Measured, Model, OVERHEAD_MS, Sending};
pub use crate::domain::settings::FieldError;
/// Lines of a [`FieldKind::Lines`] value, trimmed, blank ones dropped, with 1-based numbers.
pub use crate::domain::settings::non_blank_lines as lines;
pub use crate::domain::variants::{Scope, TagRules};
pub use form::{ProviderUpdate, apply_form};

/// Every provider, in the order the settings page lists them. The first is the default.
pub static PROVIDERS: &[&dyn ProviderKind] = &[
    &http_purge::HttpPurgeKind,
    &akamai::AkamaiKind,
    &cloudflare::CloudflareKind,
    &fastly::FastlyKind,
    &cloudfront::CloudFrontKind,
];

/// A boxed future, so providers can live behind `dyn Purger`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A provider's settings by field name (secrets included when building a purger).
pub type Values = BTreeMap<String, String>;

/// What one attempt to purge one URL came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The cache no longer holds the URL (purged, or it was not cached).
    Done {
        http_status: Option<u16>,
        note: Option<String>,
    },
    /// Accepted by a CDN that finishes later: done once [`Purger::poll`] says so.
    Pending { http_status: Option<u16> },
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
    /// Sent, but never answered because the cache was stuck on a request before it on the
    /// same connection: sent again at once, and not counted as one of the URL's attempts.
    Unanswered { reason: String },
}

/// What a provider answered for one accepted request (kept per batch, shown on the page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's id for the purge (Akamai `purgeId`, Cloudflare `result.id`, Fastly id, CloudFront Id).
    pub provider_id: Option<String>,
    /// Akamai's `supportId`.
    pub support_id: Option<String>,
    /// The provider's own estimate of seconds until the purge is live everywhere.
    pub estimated_seconds: Option<u64>,
}

/// The answer to one request: one [`Attempt`] per URL, in order, and the receipt if accepted.
#[derive(Debug, Clone, Default)]
pub struct PurgeResult {
    pub attempts: Vec<Attempt>,
    pub receipt: Option<Receipt>,
}

impl PurgeResult {
    /// The same attempt for every URL of a batch.
    pub fn all(n: usize, attempt: Attempt, receipt: Option<Receipt>) -> Self {
        Self {
            attempts: vec![attempt; n],
            receipt,
        }
    }
}

/// One request's worth of URLs, tags or prefixes. `reference` is stable for the same rows of
/// the same invalidation, so a provider with idempotency keys (CloudFront `CallerReference`)
/// can use it.
///
/// What the rows are depends on `scope`: [`Scope::Urls`] fills `urls` with the URLs;
/// [`Scope::Prefixes`] fills `urls` with prefixes (everything starting with one is purged);
/// [`Scope::Tags`] fills `tags`; [`Scope::Everything`] fills `urls` with the root of each
/// site (`https://host/`) for providers that clear by host, and the others ignore them.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub scope: Scope,
    pub urls: Vec<Url>,
    pub tags: Vec<String>,
    pub reference: String,
}

impl Batch {
    /// A batch of listed URLs.
    pub fn of_urls(urls: Vec<Url>, reference: String) -> Self {
        Self {
            scope: Scope::Urls,
            urls,
            tags: Vec::new(),
            reference,
        }
    }

    /// Rows in the batch, whatever they are.
    pub fn len(&self) -> usize {
        match self.scope {
            Scope::Tags => self.tags.len(),
            _ => self.urls.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The answer for a batch of a scope the provider cannot send (never queued: the page and
/// the API refuse scopes the active provider lacks; this guards a changed provider).
pub fn unsupported(batch: &Batch, who: &str) -> PurgeResult {
    PurgeResult::all(
        batch.len(),
        Attempt::Fail {
            http_status: None,
            reason: format!("{who} cannot purge by {}", batch.scope.label()),
        },
        None,
    )
}

/// Purges the tags that follow `rules` by `send`, which gets only those (in order) and answers
/// one attempt for each; every other tag (stored before the rules were checked, or under
/// another provider's) fails alone with the reason, naming it as a `noun` ("tag").
pub async fn purge_following_rules<'a, F, Fut>(
    tags: &'a [String],
    rules: &TagRules,
    noun: &str,
    send: F,
) -> PurgeResult
where
    F: FnOnce(Vec<&'a str>) -> Fut,
    Fut: Future<Output = PurgeResult>,
{
    let refusals: Vec<Option<String>> = tags.iter().map(|t| rules.check(t).err()).collect();
    let valid: Vec<&str> = tags
        .iter()
        .zip(&refusals)
        .filter(|(_, refusal)| refusal.is_none())
        .map(|(tag, _)| tag.as_str())
        .collect();
    let sent = if valid.is_empty() {
        PurgeResult::default()
    } else {
        send(valid).await
    };
    let mut answers = sent.attempts.into_iter();
    let attempts = tags
        .iter()
        .zip(refusals)
        .map(|(tag, refusal)| {
            let answer = if refusal.is_none() {
                answers.next()
            } else {
                None
            };
            answer.unwrap_or_else(|| Attempt::Fail {
                http_status: None,
                reason: format!("not sent: {noun} \"{tag}\" {}", refusal.unwrap_or_default()),
            })
        })
        .collect();
    PurgeResult {
        attempts,
        receipt: sent.receipt,
    }
}

/// Where a purge that finishes later stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    Completed,
    InProgress,
    /// Could not ask (transient): ask again later.
    Unknown(String),
}

/// A CDN or cache that can purge URLs.
pub trait Purger: Send + Sync {
    /// Sizes of the requests `urls` should be split into, in order (they sum to `urls.len()`).
    fn batch_sizes(&self, urls: &[Url]) -> Vec<usize> {
        vec![1; urls.len()]
    }

    /// Most rows of `scope` (tags, prefixes, sites) per request; URLs use
    /// [`Purger::batch_sizes`].
    fn batch_size(&self, _scope: Scope) -> usize {
        1
    }

    /// Sends one batch.
    fn purge<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, PurgeResult>;

    /// Most URLs that may be pending (accepted, not completed) at once; more wait their turn.
    fn max_pending(&self) -> Option<usize> {
        None
    }

    /// Most rows of `scope` that may be pending at once, and which scopes' pending rows count
    /// against that cap (CloudFront: 3,000 paths, and separately 15 wildcard paths). The
    /// default is [`Purger::max_pending`] over listed URLs.
    fn max_pending_for(&self, scope: Scope) -> Option<(usize, Vec<Scope>)> {
        match scope {
            Scope::Urls => self.max_pending().map(|cap| (cap, vec![Scope::Urls])),
            _ => None,
        }
    }

    /// Asks whether the purge with `provider_id` has completed (for [`Attempt::Pending`]).
    fn poll<'a>(&'a self, _provider_id: &'a str) -> BoxFuture<'a, Poll> {
        Box::pin(async { Poll::Completed })
    }

    /// The cheapest harmless authenticated call the API offers, or a check of the configuration
    /// when there is none. `Ok` and `Err` carry a sentence for the admin.
    fn test_connection(&self) -> BoxFuture<'_, Result<String, String>>;

    /// One round trip to the provider on a kept-alive connection, for estimates, when the
    /// connection test alone would mismeasure it (a first request pays for connecting);
    /// `None`: the test's own time is the measure.
    fn round_trip(&self) -> BoxFuture<'_, Option<Duration>> {
        Box::pin(async { None })
    }
}

/// How a settings field is shown and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    /// One entry per line.
    Lines,
    /// Write-only: never rendered back, never logged, never in a snapshot.
    Secret,
    /// A multi-line secret (a pasted credentials file): write-only like [`FieldKind::Secret`],
    /// shown as a text area that a chosen file can fill.
    SecretText,
    /// One of (value, label).
    Choice(&'static [(&'static str, &'static str)]),
}

impl FieldKind {
    /// Write-only fields: never rendered back, never in a snapshot.
    pub fn is_secret(self) -> bool {
        matches!(self, Self::Secret | Self::SecretText)
    }
}

/// One settings field of a provider. Names are global form field names (e.g. `purge_nodes`).
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub label: &'static str,
    pub help: &'static str,
    pub kind: FieldKind,
    pub default: &'static str,
    /// The provider's documentation of what the field means, linked after the help ("" none).
    pub docs: &'static str,
}

/// What a purger needs from the application.
#[derive(Clone)]
pub struct Context {
    pub client: reqwest::Client,
    pub config: PurgeConfig,
}

/// A kind of provider: its settings and how to build a purger from them.
pub trait ProviderKind: Send + Sync {
    /// Stable name stored with settings and invalidations (`http_purge`, `akamai`, …).
    fn name(&self) -> &'static str;
    /// What admins read in the provider list.
    fn label(&self) -> &'static str;
    /// The provider in a sentence: "Akamai", "the cache".
    fn short_name(&self) -> &'static str;
    fn fields(&self) -> &'static [Field];
    /// Called on save before validation, with secrets included: lets a provider fill fields
    /// from a pasted blob (Akamai's `.edgerc` section) or normalise them.
    fn prepare(&self, _values: &mut Values) -> Vec<FieldError> {
        Vec::new()
    }
    /// Checks `values` (secrets included); each error names its field.
    fn validate(&self, values: &Values) -> Vec<FieldError>;
    /// One line for pages: "Akamai Fast Purge (production, invalidate)".
    fn describe(&self, values: &Values) -> String;
    /// The only hosts this provider can purge, when it cannot purge others (CloudFront: the
    /// distribution's domains), and how to name it in messages. They count as allowed hosts,
    /// and URLs on other hosts are refused when the list is checked, not failed later.
    fn served_hosts(&self, _values: &Values) -> Option<(Vec<String>, String)> {
        None
    }
    /// How this provider takes purges, for estimates before any history: from its documented
    /// limits, the settings `values`, the purge `config`, and what this installation measured
    /// of its requests (Test connection, or the first requests of the last invalidation).
    fn model(&self, values: &Values, config: &PurgeConfig, measured: Option<Measured>) -> Model;
    /// The account whose documented rate limits or caps every sender shares, when there is
    /// one: invalidations with the same key are sent by one worker at a time, so two
    /// instances together stay within the account's budget. `None`: no shared budget.
    fn pacing_key(&self, _values: &Values) -> Option<String> {
        None
    }
    /// The scopes besides listed URLs this provider can purge with `values`: tags, prefixes,
    /// everything. Listed URLs are always supported.
    fn scopes(&self, _values: &Values) -> Vec<Scope> {
        Vec::new()
    }
    /// What the provider accepts as a tag (only asked when it supports [`Scope::Tags`]).
    fn tag_rules(&self) -> TagRules {
        TagRules::header_list(self.short_name(), 1024)
    }
    /// True when purging everything goes site by site (a ban per host); false when one
    /// request clears a whole zone, service or distribution, whichever hosts it serves: then a
    /// purge of everything is recorded as one row, the publish server's site.
    fn everything_by_site(&self) -> bool {
        false
    }
    /// Why this provider cannot take `prefix` as one (Cloudflare: too many separators;
    /// CloudFront: a `*` of its own, a host it does not serve), asked before anything is
    /// queued; `Ok` by default.
    fn check_prefix(&self, _values: &Values, _prefix: &Url) -> Result<(), String> {
        Ok(())
    }
    /// How this provider takes purges of `scope` (see [`ProviderKind::model`], which is the
    /// model for listed URLs and the default for every scope).
    fn model_for(
        &self,
        _scope: Scope,
        values: &Values,
        config: &PurgeConfig,
        measured: Option<Measured>,
    ) -> Model {
        self.model(values, config, measured)
    }
    /// A purger for validated `values` (secrets included).
    fn build(&self, values: &Values, ctx: &Context) -> anyhow::Result<Box<dyn Purger>>;
}

/// The provider called `name`.
pub fn kind(name: &str) -> Option<&'static dyn ProviderKind> {
    PROVIDERS.iter().copied().find(|k| k.name() == name)
}

/// The default provider (HTTP PURGE).
pub fn default_kind() -> &'static dyn ProviderKind {
    PROVIDERS[0]
}

/// The value of `field` in `values`, or the field's default.
pub fn value<'a>(kind: &dyn ProviderKind, values: &'a Values, field: &str) -> &'a str {
    if let Some(v) = values.get(field) {
        return v;
    }
    kind.fields()
        .iter()
        .find(|f| f.name == field)
        .map_or("", |f| f.default)
}

/// Which provider an invalidation uses and its non-secret settings at the time it was queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSnapshot {
    pub provider: String,
    pub values: Values,
}

impl ProviderSnapshot {
    /// The active provider's non-secret values (secrets are never copied into a snapshot).
    pub fn new(kind: &dyn ProviderKind, all_values: &Values) -> Self {
        let values = kind
            .fields()
            .iter()
            .filter(|f| !f.kind.is_secret())
            .map(|f| {
                (
                    f.name.to_string(),
                    value(kind, all_values, f.name).to_string(),
                )
            })
            .collect();
        Self {
            provider: kind.name().to_string(),
            values,
        }
    }

    pub fn kind(&self) -> Option<&'static dyn ProviderKind> {
        kind(&self.provider)
    }

    /// What users read about where the purge went.
    pub fn describe(&self) -> String {
        self.kind()
            .map_or_else(|| self.provider.clone(), |k| k.describe(&self.values))
    }

    /// See [`ProviderKind::model`]; an unknown provider gets one request per URL at 1 s each.
    pub fn model(&self, config: &PurgeConfig, measured: Option<Measured>) -> Model {
        self.kind().map_or(
            Model {
                sending: Sending::Streams {
                    connections: config.concurrency.max(1),
                    batch: 1,
                    round_trip_ms: 1000.0,
                    per_url_ms: 0.0,
                },
                clearing_ms: 0.0,
                overhead_ms: OVERHEAD_MS,
            },
            |k| k.model(&self.values, config, measured),
        )
    }

    /// See [`ProviderKind::model_for`].
    pub fn model_for(
        &self,
        scope: Scope,
        config: &PurgeConfig,
        measured: Option<Measured>,
    ) -> Model {
        match self.kind() {
            Some(k) if scope != Scope::Urls => k.model_for(scope, &self.values, config, measured),
            _ => self.model(config, measured),
        }
    }

    /// See [`ProviderKind::check_prefix`].
    pub fn check_prefix(&self, prefix: &Url) -> Result<(), String> {
        self.kind()
            .map_or(Ok(()), |k| k.check_prefix(&self.values, prefix))
    }

    /// The scopes this snapshot's provider supports besides listed URLs.
    pub fn scopes(&self) -> Vec<Scope> {
        self.kind()
            .map(|k| k.scopes(&self.values))
            .unwrap_or_default()
    }

    /// See [`ProviderKind::pacing_key`]; empty when the provider has no shared budget.
    pub fn pacing_key(&self) -> String {
        self.kind()
            .and_then(|k| k.pacing_key(&self.values))
            .map(|key| format!("{}:{key}", self.provider))
            .unwrap_or_default()
    }

    /// Builds the purger, adding the current `secrets` to the snapshot's values.
    pub fn build(&self, secrets: &Values, ctx: &Context) -> anyhow::Result<Box<dyn Purger>> {
        let kind = self
            .kind()
            .ok_or_else(|| anyhow::anyhow!("unknown provider {}", self.provider))?;
        let mut values = self.values.clone();
        for f in kind.fields().iter().filter(|f| f.kind.is_secret()) {
            if let Some(secret) = secrets.get(f.name) {
                values.insert(f.name.to_string(), secret.clone());
            }
        }
        kind.build(&values, ctx)
    }
}

/// A provider value no form has that benchmarks use to speed a provider's clock up (its rate
/// limits, its completion time): a positive number, 1 when absent or not one.
pub(crate) fn speed_up(values: &Values, name: &str) -> f64 {
    values
        .get(name)
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0)
}

/// An `http(s)` base URL setting (API endpoint, purge node): a host, no path beyond `/`.
pub fn parse_base_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("\"{text}\" is not a URL ({e})."))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("\"{text}\" must start with http:// or https://."));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("\"{text}\" has no host."));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("\"{text}\" must not have a query or fragment."));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "\"{text}\" must not contain a user name or password."
        ));
    }
    Ok(url)
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
    /// Requests in flight at once per purge node (HTTP PURGE to `http://` nodes: connections
    /// per node, each carrying one pipelined batch).
    pub concurrency: usize,
    /// How often a provider that finishes later (CloudFront) is asked for its status.
    pub poll_interval: Duration,
    /// How long a pending request may stay unconfirmed before its URLs are failed.
    pub poll_timeout: Duration,
    /// How long a worker's claim on an invalidation (and on a provider account) lasts without
    /// renewal: after a worker dies, another takes its work over this long after its last
    /// renewal. Renewed every third of it.
    pub lease: Duration,
    /// Invalidations of at most this many URLs get *Check the cache* by themselves when they
    /// finish (0: never).
    pub check_cache_up_to: usize,
}

impl Default for PurgeConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            concurrency: 8,
            poll_interval: Duration::from_secs(10),
            poll_timeout: Duration::from_secs(60 * 60),
            lease: Duration::from_secs(30),
            check_cache_up_to: 0,
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

/// The `User-Agent` of every request this app sends.
pub(crate) const USER_AGENT: &str = concat!("cdn-invalidator/", env!("CARGO_PKG_VERSION"));

/// The HTTP client purges are sent with: kept-alive connections, no redirects followed.
pub fn http_client(config: &PurgeConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(config.concurrency)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()
}

/// "403 Forbidden": a status as providers' error texts start.
pub(crate) fn status_text(status: reqwest::StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    )
    .trim_end()
    .to_string()
}

/// The start of an answer's body (200 characters), for errors that carry no structured words.
pub(crate) fn body_excerpt(body: &str) -> Option<String> {
    let text: String = body.trim().chars().take(200).collect();
    (!text.is_empty()).then_some(text)
}

/// A refused API request: 429 and 5xx are worth retrying (not before `wait`), others fail.
pub(crate) fn refused(
    status: reqwest::StatusCode,
    reason: String,
    wait: Option<Duration>,
) -> Attempt {
    let http_status = Some(status.as_u16());
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Attempt::Retry {
            http_status,
            reason,
            retry_after: wait,
        }
    } else {
        Attempt::Fail {
            http_status,
            reason,
        }
    }
}

/// Reads `Retry-After` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?)
}

/// A `Retry-After` value (seconds or an HTTP date) as a wait from now.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
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
    classify_code(status.as_u16(), || retry_after(headers))
}

/// [`classify`] for a status code read off the wire; `retry_after` (the answer's
/// `Retry-After`) is only asked for when the purge is to be retried.
pub(crate) fn classify_code(code: u16, retry_after: impl FnOnce() -> Option<Duration>) -> Attempt {
    let reason = || {
        let text = reqwest::StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        format!("HTTP {code} {text}").trim_end().to_string()
    };
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
            reason: reason(),
            retry_after: retry_after(),
        },
        _ => Attempt::Fail {
            http_status: Some(code),
            reason: reason(),
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

    #[tokio::test]
    async fn only_tags_that_follow_the_rules_are_sent_the_others_fail_alone() {
        let tags: Vec<String> = ["a", "has space", "b", "c,d"].map(String::from).into();
        let rules = TagRules::header_list("Test", 16);
        let mut seen = Vec::new();
        let result = purge_following_rules(&tags, &rules, "tag", |valid| {
            seen = valid.iter().map(|t| t.to_string()).collect();
            let attempts = valid
                .iter()
                .map(|t| Attempt::Done {
                    http_status: Some(200),
                    note: Some(t.to_string()),
                })
                .collect();
            async move {
                PurgeResult {
                    attempts,
                    receipt: None,
                }
            }
        })
        .await;
        assert_eq!(seen, ["a", "b"]);
        let described: Vec<String> = result
            .attempts
            .iter()
            .map(|a| match a {
                Attempt::Done { note, .. } => format!("done {}", note.as_deref().unwrap_or("")),
                Attempt::Fail { reason, .. } => reason.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(described[0], "done a");
        assert!(
            described[1].starts_with("not sent: tag \"has space\" "),
            "{}",
            described[1]
        );
        assert_eq!(described[2], "done b");
        assert!(
            described[3].starts_with("not sent: tag \"c,d\" "),
            "{}",
            described[3]
        );
        // Nothing to send: no request at all.
        let bad = vec!["x y".to_string()];
        let result = purge_following_rules(&bad, &rules, "tag", |_| async {
            panic!("nothing follows the rules, nothing is sent")
        })
        .await;
        assert_eq!(result.attempts.len(), 1);
    }

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
