//! Cloudflare: `POST /zones/{zone_id}/purge_cache` with a Bearer API token, and one of
//! `{"files":[…]}` (URLs), `{"tags":[…]}` (cache tags), `{"prefixes":["host/path",…]}` (path
//! prefixes) or `{"purge_everything":true}` (the whole zone).
//!
//! Cloudflare calls it "Instant Purge": there is no status to poll, an accepted request is done.
//! URLs per request are capped (100 on every plan by Cloudflare's current documentation, 500 on
//! Enterprise; older documentation said 30), so the batch size is a setting. Tags and prefixes
//! are "operations" capped at 100 per request on every plan, and those requests (and purge
//! everything) have a rate of their own per plan, paced apart from the URL rate
//! (<https://developers.cloudflare.com/cache/how-to/purge-cache/>).

use super::{
    Attempt, Batch, BoxFuture, Bucket, Context, Field, FieldError, FieldKind, Measured, Model,
    OVERHEAD_MS, ProviderKind, PurgeConfig, PurgeResult, Purger, Receipt, Scope, Sending, TagRules,
    Values, body_excerpt, describe_error, parse_base_url, refused, retry_after, status_text, value,
};
use reqwest::StatusCode;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use url::Url;

/// Cloudflare's cache purge API: by URL ("single-file purge"), cache tag, prefix, or everything.
pub struct CloudflareKind;

const DEFAULT_BASE: &str = "https://api.cloudflare.com/client/v4";
/// Enterprise zones accept 500 URLs per request; no plan accepts more.
const MAX_BATCH: usize = 500;
/// Most tags or prefixes ("operations") in one request, on every plan (older documentation
/// said 30; a lower "URLs per request" setting lowers this too).
const MAX_OPERATIONS: usize = 100;
/// Most path separators (`/`) Cloudflare accepts in one prefix (purge by prefix, Limitations).
const MAX_PREFIX_SEPARATORS: usize = 31;
/// Longest cache tag sent. Cloudflare documents no limit for one tag, only that a response's
/// `Cache-Tag` headers together stay within 16 KB after the field name (older pages: 1,000
/// unique tags, and 120 characters of tags per purge call); 1,024 bytes keeps a tag a small
/// share of that and matches Fastly's surrogate keys, so one origin header fits both.
const MAX_TAG_BYTES: usize = 1024;

/// The zone's plan, for the rate of tag, prefix and purge-everything requests: (value, label).
const PLANS: &[(&str, &str)] = &[
    ("free", "Free: 5 requests a minute, bursts of 25"),
    ("pro", "Pro: 5 requests a second, bursts of 25"),
    ("business", "Business: 10 requests a second, bursts of 50"),
    (
        "enterprise",
        "Enterprise: 50 requests a second, bursts of 500",
    ),
];

const FIELDS: &[Field] = &[
    Field {
        name: "cloudflare_base_url",
        label: "API base URL",
        help: "Cloudflare's API v4 endpoint. Change it only to point at a test server.",
        kind: FieldKind::Text,
        default: DEFAULT_BASE,
        docs: "",
    },
    Field {
        name: "cloudflare_zone_id",
        label: "Zone ID",
        help: "The 32-character zone ID from the zone's Overview page (API section), not the domain name.",
        kind: FieldKind::Text,
        default: "",
        docs: "",
    },
    Field {
        name: "cloudflare_api_token",
        label: "API token",
        help: "An API token with the Zone → Cache Purge → Purge permission on this zone \
               (add Zone → Zone → Read so Test connection can confirm the zone).",
        kind: FieldKind::Secret,
        default: "",
        docs: "",
    },
    Field {
        name: "cloudflare_batch_size",
        label: "URLs per request",
        help: "Cloudflare's documentation allows at most 100 URLs per purge request on every plan, \
               500 on Enterprise zones (1–500). Older documentation said 30: lower it if Cloudflare \
               refuses requests as too large. Cache tags and prefixes go at most 100 a request, fewer when \
               this is lower.",
        kind: FieldKind::Text,
        default: "100",
        docs: "https://developers.cloudflare.com/cache/how-to/purge-cache/",
    },
    Field {
        name: "cloudflare_urls_per_second",
        label: "URLs per second",
        help: "The zone's single-file purge rate by its plan: 800 on Free, 1,500 on Pro and Business, \
               3,000 on Enterprise. Purges are paced to it instead of being refused, and estimates use it.",
        kind: FieldKind::Text,
        default: "800",
        docs: "https://developers.cloudflare.com/cache/how-to/purge-cache/",
    },
    Field {
        name: "cloudflare_plan",
        label: "Plan (tag, prefix and purge-everything rate)",
        help: "Purges by cache tag or prefix, and purge everything, have their own rate per plan, apart \
               from the URL rate: requests are paced to it instead of being refused. Free is the slowest, \
               so it is never too fast for any plan.",
        kind: FieldKind::Choice(PLANS),
        default: "free",
        docs: "https://developers.cloudflare.com/cache/how-to/purge-cache/",
    },
];

/// Cloudflare's lowest documented single-file purge rate (Free plan), URLs per second.
const DEFAULT_RATE: u32 = 800;
/// Cloudflare's highest documented rate (Enterprise): more is a typo.
const MAX_RATE: u32 = 3_000;
/// Round trip assumed for an API request before one has been measured.
const UNMEASURED_REQUEST_MS: f64 = 300.0;

/// A token bucket's size and refill rate per second.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    bucket: f64,
    per_second: f64,
}

/// The documented rate of tag, prefix and purge-everything requests for `plan` (per account;
/// Free's purge everything alone may go at 5 a second, paced here like its tags: one request
/// clears the zone, so the slower rate costs nothing).
fn plan_rate(plan: &str) -> Option<Rate> {
    let (bucket, per_second) = match plan {
        "free" => (25.0, 5.0 / 60.0),
        "pro" => (25.0, 5.0),
        "business" => (50.0, 10.0),
        "enterprise" => (500.0, 50.0),
        _ => return None,
    };
    Some(Rate { bucket, per_second })
}

/// The plan in `values`, read on its own (snapshots have no token): Free when unknown.
fn plan_of(values: &Values) -> Rate {
    plan_rate(value(&CloudflareKind, values, "cloudflare_plan").trim())
        .or_else(|| plan_rate("free"))
        .expect("free is a plan")
}

/// Validated settings.
struct Settings {
    base: String,
    zone_id: String,
    token: String,
    batch_size: usize,
    urls_per_second: u32,
    /// The rate of tag, prefix and purge-everything requests.
    operations: Rate,
}

fn parse(values: &Values) -> Result<Settings, Vec<FieldError>> {
    let kind = &CloudflareKind;
    let mut errors = Vec::new();
    let base_text = value(kind, values, "cloudflare_base_url").trim();
    let base = match parse_base_url(base_text) {
        Ok(url) => url.as_str().trim_end_matches('/').to_string(),
        Err(message) => {
            errors.push(FieldError {
                field: "cloudflare_base_url",
                message,
            });
            String::new()
        }
    };
    let zone_id = value(kind, values, "cloudflare_zone_id").trim().to_string();
    if zone_id.is_empty() {
        errors.push(FieldError {
            field: "cloudflare_zone_id",
            message: "Enter the zone ID.".into(),
        });
    } else if zone_id.len() != 32 || !zone_id.chars().all(|c| c.is_ascii_hexdigit()) {
        errors.push(FieldError {
            field: "cloudflare_zone_id",
            message: format!(
                "\"{zone_id}\" is not a zone ID: Cloudflare zone IDs are 32 hexadecimal characters."
            ),
        });
    }
    let token = value(kind, values, "cloudflare_api_token")
        .trim()
        .to_string();
    if token.is_empty() {
        errors.push(FieldError {
            field: "cloudflare_api_token",
            message: "Enter an API token.".into(),
        });
    }
    let size_text = value(kind, values, "cloudflare_batch_size").trim();
    let batch_size = match size_text.parse::<usize>() {
        Ok(n) if (1..=MAX_BATCH).contains(&n) => n,
        _ => {
            errors.push(FieldError {
                field: "cloudflare_batch_size",
                message: format!("\"{size_text}\" must be a whole number from 1 to {MAX_BATCH}."),
            });
            0
        }
    };
    let rate_text = value(kind, values, "cloudflare_urls_per_second").trim();
    let urls_per_second = match rate_text.replace(',', "").parse::<u32>() {
        Ok(n) if (1..=MAX_RATE).contains(&n) => n,
        _ => {
            errors.push(FieldError {
                field: "cloudflare_urls_per_second",
                message: format!(
                    "\"{rate_text}\" must be a whole number from 1 to {MAX_RATE} (Cloudflare's Enterprise rate)."
                ),
            });
            0
        }
    };
    let plan_text = value(kind, values, "cloudflare_plan").trim();
    let operations = plan_rate(plan_text).unwrap_or_else(|| {
        errors.push(FieldError {
            field: "cloudflare_plan",
            message: format!(
                "\"{plan_text}\" is not a plan: choose Free, Pro, Business or Enterprise."
            ),
        });
        Rate {
            bucket: 0.0,
            per_second: 0.0,
        }
    });
    if errors.is_empty() {
        Ok(Settings {
            base,
            zone_id: zone_id.to_ascii_lowercase(),
            token,
            batch_size,
            urls_per_second,
            operations,
        })
    } else {
        Err(errors)
    }
}

impl ProviderKind for CloudflareKind {
    fn name(&self) -> &'static str {
        "cloudflare"
    }

    fn short_name(&self) -> &'static str {
        "Cloudflare"
    }

    fn label(&self) -> &'static str {
        "Cloudflare (purge by URL, cache tag or prefix)"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn validate(&self, values: &Values) -> Vec<FieldError> {
        parse(values).err().unwrap_or_default()
    }

    fn describe(&self, values: &Values) -> String {
        format!(
            "Cloudflare zone {} ({} URLs per request, {} URLs/s)",
            value(self, values, "cloudflare_zone_id").trim(),
            value(self, values, "cloudflare_batch_size").trim(),
            value(self, values, "cloudflare_urls_per_second").trim()
        )
    }

    /// Requests of the configured size, paced by the zone's documented single-file purge rate
    /// (a moving average: one second's worth at once). "Instant Purge": no delay is
    /// documented beyond the request itself.
    fn model(&self, values: &Values, config: &PurgeConfig, measured: Option<Measured>) -> Model {
        // The snapshot has no token, so these two are read on their own.
        let number = |field: &str, default: usize| {
            value(self, values, field)
                .trim()
                .replace(',', "")
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        let rate = number("cloudflare_urls_per_second", DEFAULT_RATE as usize) as f64;
        // What this process's pacer holds for the zone now: less after a recent purge.
        let zone = value(self, values, "cloudflare_zone_id")
            .trim()
            .to_ascii_lowercase();
        let tokens = Pacer::for_urls(&zone, rate).level(Instant::now());
        Model {
            sending: Sending::Paced {
                per_request: number("cloudflare_batch_size", 100),
                in_flight: config.concurrency.max(1),
                request_ms: measured.map_or(UNMEASURED_REQUEST_MS, |m| m.request_ms),
                urls: Some(Bucket {
                    burst: tokens,
                    per_second: rate,
                }),
                requests: None,
            },
            clearing_ms: 0.0,
            overhead_ms: OVERHEAD_MS,
        }
    }

    /// Purge rate limits are counted per zone.
    fn pacing_key(&self, values: &Values) -> Option<String> {
        Some(value(self, values, "cloudflare_zone_id").trim().to_string())
    }

    /// Every plan may purge by tag, prefix and everything by Cloudflare's current documentation
    /// (older pages said tags and prefixes were Enterprise-only: a zone without them gets
    /// Cloudflare's refusal, shown in its words).
    fn scopes(&self, _values: &Values) -> Vec<Scope> {
        vec![Scope::Tags, Scope::Prefixes, Scope::Everything]
    }

    /// `Cache-Tag` values: commas separate tags and spaces are not allowed (Cloudflare strips
    /// them), so visible ASCII but the comma, at most [`MAX_TAG_BYTES`]. Cloudflare compares
    /// tags without regard to case.
    fn tag_rules(&self) -> TagRules {
        TagRules::header_list("Cloudflare", MAX_TAG_BYTES)
    }

    fn check_prefix(&self, _values: &Values, prefix: &Url) -> Result<(), String> {
        prefix_of(prefix).map(drop)
    }

    /// Tags and prefixes: requests of up to 100 (or the smaller configured batch), paced by the
    /// plan's bucket of requests. Everything: one request for the zone, whatever the sites.
    fn model_for(
        &self,
        scope: Scope,
        values: &Values,
        config: &PurgeConfig,
        measured: Option<Measured>,
    ) -> Model {
        let per_request = match scope {
            Scope::Urls => return self.model(values, config, measured),
            Scope::Tags | Scope::Prefixes => value(self, values, "cloudflare_batch_size")
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .map_or(MAX_OPERATIONS, |n| n.min(MAX_OPERATIONS)),
            Scope::Everything => usize::MAX,
        };
        let rate = plan_of(values);
        let zone = value(self, values, "cloudflare_zone_id")
            .trim()
            .to_ascii_lowercase();
        let tokens = Pacer::for_operations(&zone, rate).level(Instant::now());
        Model {
            sending: Sending::Paced {
                per_request,
                in_flight: config.concurrency.max(1),
                request_ms: measured.map_or(UNMEASURED_REQUEST_MS, |m| m.request_ms),
                urls: None,
                requests: Some(Bucket {
                    burst: tokens,
                    per_second: rate.per_second,
                }),
            },
            clearing_ms: 0.0,
            overhead_ms: OVERHEAD_MS,
        }
    }

    fn build(&self, values: &Values, ctx: &Context) -> anyhow::Result<Box<dyn Purger>> {
        let settings = parse(values).map_err(|e| anyhow::anyhow!("{}", e[0].message))?;
        let pacer = Pacer::for_urls(&settings.zone_id, f64::from(settings.urls_per_second));
        let operations = Pacer::for_operations(&settings.zone_id, settings.operations);
        Ok(Box::new(Cloudflare {
            client: ctx.client.clone(),
            settings,
            pacer,
            operations,
        }))
    }
}

/// Sends purge requests to one zone.
pub struct Cloudflare {
    client: reqwest::Client,
    settings: Settings,
    /// URLs per second (single-file purge).
    pacer: Arc<Pacer>,
    /// Tag, prefix and purge-everything requests: a rate of their own, by plan.
    operations: Arc<Pacer>,
}

/// Keeps a zone's purges within a rate: a token bucket of `capacity`, refilled at `per_second`
/// (URLs: one second's worth of URLs; tags, prefixes, everything: the plan's bucket of
/// requests). A request takes its tokens when it is its turn, and waits when that leaves the
/// bucket in debt, so requests queue behind each other in order. One per zone and kind of
/// purge, shared by every invalidation of the process.
pub struct Pacer {
    capacity: f64,
    per_second: f64,
    state: Mutex<(f64, Instant)>,
}

impl Pacer {
    /// The URL rate of `zone`: a bucket of one second's worth (Cloudflare's moving average).
    fn for_urls(zone: &str, per_second: f64) -> Arc<Self> {
        Self::shared(&format!("{zone} urls"), per_second, per_second)
    }

    /// The rate of `zone`'s tag, prefix and purge-everything requests.
    fn for_operations(zone: &str, rate: Rate) -> Arc<Self> {
        Self::shared(&format!("{zone} operations"), rate.bucket, rate.per_second)
    }

    fn shared(name: &str, capacity: f64, per_second: f64) -> Arc<Self> {
        static PACERS: OnceLock<Mutex<HashMap<String, Arc<Pacer>>>> = OnceLock::new();
        let key = format!("{name}@{capacity}/{per_second}");
        let mut pacers = PACERS
            .get_or_init(Mutex::default)
            .lock()
            .expect("pacers lock");
        pacers
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Pacer {
                    capacity,
                    per_second,
                    state: Mutex::new((capacity, Instant::now())),
                })
            })
            .clone()
    }

    /// The tokens in the bucket at `now`: below zero while requests wait their turn.
    fn level(&self, now: Instant) -> f64 {
        let (tokens, at) = *self.state.lock().expect("pacer lock");
        (tokens + now.saturating_duration_since(at).as_secs_f64() * self.per_second)
            .min(self.capacity)
    }

    /// Takes `count` tokens and says how long to wait before sending them.
    fn reserve(&self, count: usize, now: Instant) -> Duration {
        let mut state = self.state.lock().expect("pacer lock");
        let (tokens, at) = *state;
        let refilled = (tokens + now.saturating_duration_since(at).as_secs_f64() * self.per_second)
            .min(self.capacity);
        let left = refilled - count as f64;
        *state = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.per_second)
        }
    }
}

impl std::fmt::Debug for Cloudflare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloudflare")
            .field("base", &self.settings.base)
            .field("zone_id", &self.settings.zone_id)
            .field("api_token", &"<redacted>")
            .field("batch_size", &self.settings.batch_size)
            .finish()
    }
}

/// The body of a purge by URL.
fn purge_body(urls: &[Url]) -> String {
    serde_json::json!({ "files": urls.iter().map(Url::as_str).collect::<Vec<_>>() }).to_string()
}

/// The body of a purge by cache tag.
fn tags_body(tags: &[&str]) -> String {
    serde_json::json!({ "tags": tags }).to_string()
}

/// The body of a purge by prefix (each `host/path`, see [`prefix_of`]).
fn prefixes_body(prefixes: &[&str]) -> String {
    serde_json::json!({ "prefixes": prefixes }).to_string()
}

/// The body of a purge of the whole zone.
fn everything_body() -> String {
    serde_json::json!({ "purge_everything": true }).to_string()
}

/// The prefix Cloudflare is sent for `url`: `host/path`, without scheme (or port), as the
/// purge-by-prefix page writes them; refused with a reason when it has a query or fragment,
/// or more than 31 path separators, which Cloudflare does not accept.
fn prefix_of(url: &Url) -> Result<String, String> {
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "Cloudflare cannot purge by a prefix with a query string or fragment ({url})"
        ));
    }
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("the prefix {url} has no host"));
    }
    let prefix = format!("{host}{}", url.path());
    let separators = prefix.matches('/').count();
    if separators > MAX_PREFIX_SEPARATORS {
        return Err(format!(
            "the prefix {prefix} has {separators} path separators (/); Cloudflare accepts at most {MAX_PREFIX_SEPARATORS}"
        ));
    }
    Ok(prefix)
}

/// Sizes of consecutive requests of at most `size` URLs.
fn split(count: usize, size: usize) -> Vec<usize> {
    let size = size.max(1);
    (0..count.div_ceil(size))
        .map(|i| size.min(count - i * size))
        .collect()
}

/// Cloudflare's response envelope: `{"success":…,"errors":[{"code":…,"message":…}],"result":…}`.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    #[serde(default)]
    result: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: String,
}

/// Cloudflare's errors in its own words: "Authentication error (code 10000); …".
fn error_words(errors: &[ApiMessage]) -> String {
    errors
        .iter()
        .map(|e| match e.code {
            Some(code) => format!("{} (code {code})", e.message),
            None => e.message.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// "Cloudflare 403 Forbidden: Authentication error (code 10000)", or the start of a body that
/// is not Cloudflare's JSON (a proxy's error page).
fn describe_answer(status: StatusCode, envelope: Option<&Envelope>, body: &str) -> String {
    let words = match envelope {
        Some(e) if !e.errors.is_empty() => error_words(&e.errors),
        _ => body_excerpt(body).unwrap_or_else(|| "no details given".into()),
    };
    format!("Cloudflare {}: {words}", status_text(status))
}

/// What one answer to a purge request of `n` URLs means.
fn interpret(status: StatusCode, wait: Option<Duration>, body: &str, n: usize) -> PurgeResult {
    let envelope = serde_json::from_str::<Envelope>(body).ok();
    let code = Some(status.as_u16());
    if status.is_success()
        && let Some(e) = envelope.as_ref().filter(|e| e.success)
    {
        let id = e
            .result
            .as_ref()
            .and_then(|r| r.get("id"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        return PurgeResult::all(
            n,
            Attempt::Done {
                http_status: code,
                note: None,
            },
            Some(Receipt {
                provider_id: id,
                ..Receipt::default()
            }),
        );
    }
    let reason = describe_answer(status, envelope.as_ref(), body);
    PurgeResult::all(n, refused(status, reason, wait), None)
}

impl Cloudflare {
    async fn get(&self, path: &str) -> Result<(StatusCode, String), String> {
        let response = self
            .client
            .get(format!("{}{path}", self.settings.base))
            .bearer_auth(&self.settings.token)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "Cloudflare's API could not be reached: {}.",
                    describe_error(&e)
                )
            })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Ok((status, body))
    }

    /// Waits for `count` tokens of `pacer`, then POSTs `body` to the zone's `purge_cache` and
    /// reads the answer as `n` rows' attempts.
    async fn send_purge(&self, pacer: &Pacer, count: usize, body: String, n: usize) -> PurgeResult {
        let wait = pacer.reserve(count, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let sent = self
            .client
            .post(format!(
                "{}/zones/{}/purge_cache",
                self.settings.base, self.settings.zone_id
            ))
            .bearer_auth(&self.settings.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                let wait = retry_after(response.headers());
                match response.text().await {
                    Ok(body) => interpret(status, wait, &body, n),
                    Err(e) => PurgeResult::all(
                        n,
                        Attempt::Retry {
                            http_status: Some(status.as_u16()),
                            reason: format!(
                                "Cloudflare {}: the answer could not be read: {}",
                                status_text(status),
                                describe_error(&e)
                            ),
                            retry_after: wait,
                        },
                        None,
                    ),
                }
            }
            Err(e) => PurgeResult::all(
                n,
                Attempt::Retry {
                    http_status: None,
                    reason: describe_error(&e),
                    retry_after: None,
                },
                None,
            ),
        }
    }

    /// Sends the prefixes Cloudflare accepts in one request; the others fail, with the reason,
    /// unsent.
    async fn purge_prefixes(&self, urls: &[Url]) -> PurgeResult {
        let checked: Vec<Result<String, String>> = urls.iter().map(prefix_of).collect();
        let prefixes: Vec<&str> = checked.iter().filter_map(|c| c.as_deref().ok()).collect();
        let sent = if prefixes.is_empty() {
            None
        } else {
            let body = prefixes_body(&prefixes);
            Some(
                self.send_purge(&self.operations, 1, body, prefixes.len())
                    .await,
            )
        };
        let receipt = sent.as_ref().and_then(|r| r.receipt.clone());
        let mut answers = sent.map(|r| r.attempts).unwrap_or_default().into_iter();
        let attempts = checked
            .into_iter()
            .map(|c| match c {
                Ok(_) => answers.next().unwrap_or(Attempt::Fail {
                    http_status: None,
                    reason: "Cloudflare's answer did not cover this prefix".into(),
                }),
                Err(reason) => Attempt::Fail {
                    http_status: None,
                    reason,
                },
            })
            .collect();
        PurgeResult { attempts, receipt }
    }
}

impl Purger for Cloudflare {
    fn batch_sizes(&self, urls: &[Url]) -> Vec<usize> {
        split(urls.len(), self.settings.batch_size)
    }

    /// Tags and prefixes: at most 100 per request, fewer when the URL batch is set lower (a
    /// zone that refuses large requests refuses them by any kind). Everything: every site in
    /// one request, since `purge_everything` clears the whole zone.
    fn batch_size(&self, scope: Scope) -> usize {
        match scope {
            Scope::Urls => self.settings.batch_size,
            Scope::Tags | Scope::Prefixes => self.settings.batch_size.min(MAX_OPERATIONS),
            Scope::Everything => usize::MAX,
        }
    }

    fn purge<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, PurgeResult> {
        Box::pin(async move {
            match batch.scope {
                Scope::Urls => {
                    let n = batch.urls.len();
                    self.send_purge(&self.pacer, n, purge_body(&batch.urls), n)
                        .await
                }
                Scope::Tags => {
                    let tags: Vec<&str> = batch.tags.iter().map(String::as_str).collect();
                    self.send_purge(&self.operations, 1, tags_body(&tags), tags.len())
                        .await
                }
                Scope::Prefixes => self.purge_prefixes(&batch.urls).await,
                // The rows are the sites cleared; one request clears the zone for all of them.
                Scope::Everything => {
                    self.send_purge(&self.operations, 1, everything_body(), batch.len())
                        .await
                }
            }
        })
    }

    /// `GET /user/tokens/verify` proves the token is active (any token may call it), then
    /// `GET /zones/{zone_id}` proves the zone ID is right and reachable with that token.
    /// The test makes two calls: one of them, timed on the connection it opened.
    fn round_trip(&self) -> BoxFuture<'_, Option<Duration>> {
        Box::pin(async move {
            let started = Instant::now();
            self.get("/user/tokens/verify").await.ok()?;
            Some(started.elapsed())
        })
    }

    fn test_connection(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let (status, body) = self.get("/user/tokens/verify").await?;
            let verify = serde_json::from_str::<Envelope>(&body).ok();
            let token_status = verify
                .as_ref()
                .filter(|e| status.is_success() && e.success)
                .and_then(|e| e.result.as_ref())
                .and_then(|r| r.get("status"))
                .and_then(|s| s.as_str())
                .map(str::to_string);
            match token_status.as_deref() {
                Some("active") => {}
                Some(other) => {
                    return Err(format!(
                        "Cloudflare knows the API token, but its status is \"{other}\": it cannot purge."
                    ));
                }
                None => {
                    return Err(format!(
                        "Cloudflare rejected the API token: {}.",
                        describe_answer(status, verify.as_ref(), &body)
                    ));
                }
            }
            let zone_id = &self.settings.zone_id;
            let (status, body) = self.get(&format!("/zones/{zone_id}")).await?;
            let zone = serde_json::from_str::<Envelope>(&body).ok();
            match zone.as_ref().filter(|e| status.is_success() && e.success) {
                Some(e) => {
                    let field = |name: &str| {
                        e.result
                            .as_ref()
                            .and_then(|r| r.get(name))
                            .and_then(|v| v.as_str())
                            .unwrap_or("?")
                            .to_string()
                    };
                    Ok(format!(
                        "Cloudflare accepted the API token (active) and shows zone {} ({zone_id}, status {}).",
                        field("name"),
                        field("status")
                    ))
                }
                None => {
                    let words = describe_answer(status, zone.as_ref(), &body);
                    let hint = if status == StatusCode::FORBIDDEN {
                        " If the token has only the Cache Purge permission, Cloudflare will not show the zone: \
                         add Zone → Zone → Read for this zone so the test can confirm the zone ID."
                    } else {
                        " Check the zone ID."
                    };
                    Err(format!(
                        "The API token is active, but zone {zone_id} could not be read: {words}.{hint}"
                    ))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_lets_one_seconds_worth_through_then_spaces_requests_at_the_rate() {
        let pacer = Pacer {
            capacity: 800.0,
            per_second: 800.0,
            state: Mutex::new((800.0, Instant::now())),
        };
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..10).map(|_| pacer.reserve(100, t0)).collect();
        // Eight requests of 100 fit the first second's 800; the next wait 1/8 s each in turn.
        assert!(waits[..8].iter().all(Duration::is_zero), "{waits:?}");
        assert_eq!(waits[8], Duration::from_millis(125));
        assert_eq!(waits[9], Duration::from_millis(250));
        // Time refills the bucket.
        assert!(pacer.reserve(100, t0 + Duration::from_secs(2)).is_zero());
    }

    fn values(pairs: &[(&str, &str)]) -> Values {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";

    #[test]
    fn settings_are_validated_field_by_field() {
        let kind = CloudflareKind;
        let errors = kind.validate(&values(&[
            ("cloudflare_zone_id", "example.com"),
            ("cloudflare_batch_size", "501"),
            ("cloudflare_base_url", "ftp://x"),
        ]));
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "cloudflare_base_url",
                "cloudflare_zone_id",
                "cloudflare_api_token",
                "cloudflare_batch_size"
            ]
        );
        assert!(errors[1].message.contains("32 hexadecimal"));
        for bad in ["0", "x", ""] {
            let errors = kind.validate(&values(&[
                ("cloudflare_zone_id", ZONE),
                ("cloudflare_api_token", "t"),
                ("cloudflare_batch_size", bad),
            ]));
            assert_eq!(errors.len(), 1, "{bad}");
            assert_eq!(errors[0].field, "cloudflare_batch_size");
        }
        // Defaults fill what is missing: the real endpoint and 100 URLs per request.
        let s = parse(&values(&[
            ("cloudflare_zone_id", ZONE),
            ("cloudflare_api_token", "t"),
        ]))
        .ok()
        .unwrap();
        assert_eq!(s.base, "https://api.cloudflare.com/client/v4");
        assert_eq!(s.batch_size, 100);
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        let s = parse(&values(&[
            ("cloudflare_zone_id", ZONE),
            ("cloudflare_api_token", "very-secret-token"),
        ]))
        .ok()
        .unwrap();
        let cf = Cloudflare {
            client: reqwest::Client::new(),
            pacer: Pacer::for_urls(ZONE, 800.0),
            operations: Pacer::for_operations(ZONE, plan_of(&Values::new())),
            settings: s,
        };
        let text = format!("{cf:?}");
        assert!(
            !text.contains("very-secret-token") && text.contains(ZONE),
            "{text}"
        );
    }

    #[test]
    fn urls_split_into_batches_of_the_configured_size() {
        assert_eq!(split(65, 30), [30, 30, 5]);
        assert_eq!(split(30, 30), [30]);
        assert_eq!(split(0, 30), Vec::<usize>::new());
        assert_eq!(split(3, 1), [1, 1, 1]);
    }

    #[test]
    fn the_body_lists_full_urls_as_files() {
        let urls = [
            Url::parse("https://images.example.com/is/image/a?$p$&wid=10").unwrap(),
            Url::parse("http://images.example.com/b%20c").unwrap(),
        ];
        let body: serde_json::Value = serde_json::from_str(&purge_body(&urls)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"files": [
                "https://images.example.com/is/image/a?$p$&wid=10",
                "http://images.example.com/b%20c"
            ]})
        );
    }

    #[test]
    fn tags_prefixes_and_everything_have_cloudflares_bodies() {
        let body = |text: String| serde_json::from_str::<serde_json::Value>(&text).unwrap();
        assert_eq!(
            body(tags_body(&["Backpack_B", "Lamp_X"])),
            serde_json::json!({"tags": ["Backpack_B", "Lamp_X"]})
        );
        assert_eq!(
            body(prefixes_body(&["images.example.com/is/image/a"])),
            serde_json::json!({"prefixes": ["images.example.com/is/image/a"]})
        );
        assert_eq!(
            body(everything_body()),
            serde_json::json!({"purge_everything": true})
        );
    }

    #[test]
    fn prefixes_lose_the_scheme_and_are_refused_with_a_query_or_too_many_separators() {
        let prefix = |s: &str| prefix_of(&Url::parse(s).unwrap());
        assert_eq!(
            prefix("https://images.example.com/is/image/Company/Backpack_B").unwrap(),
            "images.example.com/is/image/Company/Backpack_B"
        );
        assert_eq!(
            prefix("http://images.example.com:8080/is/image/a%20b").unwrap(),
            "images.example.com/is/image/a%20b"
        );
        assert!(
            prefix("https://h.example.com/a?x=1")
                .unwrap_err()
                .contains("query string")
        );
        assert!(prefix("https://h.example.com/a#f").is_err());
        // 31 separators in all (host/…) pass; 32 do not.
        let ok = format!("https://h.example.com{}", "/a".repeat(31));
        assert!(prefix(&ok).is_ok());
        let deep = format!("https://h.example.com{}", "/a".repeat(32));
        let reason = prefix(&deep).unwrap_err();
        assert!(
            reason.contains("32 path separators") && reason.contains("at most 31"),
            "{reason}"
        );
    }

    #[test]
    fn tags_and_prefixes_go_100_a_request_paced_by_the_plan() {
        let kind = CloudflareKind;
        assert_eq!(
            kind.scopes(&Values::new()),
            [Scope::Tags, Scope::Prefixes, Scope::Everything]
        );
        let rules = kind.tag_rules();
        assert!(rules.check("Backpack_B").is_ok());
        assert!(rules.check("a b").is_err() && rules.check("a,b").is_err());
        assert!(rules.check(&"a".repeat(1025)).is_err());
        assert_eq!(plan_of(&Values::new()), plan_rate("free").unwrap());
        assert_eq!(
            plan_rate("enterprise"),
            Some(Rate {
                bucket: 500.0,
                per_second: 50.0
            })
        );
        let errors = kind.validate(&values(&[
            ("cloudflare_zone_id", ZONE),
            ("cloudflare_api_token", "t"),
            ("cloudflare_plan", "platinum"),
        ]));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "cloudflare_plan");
        let s = |batch: &str| {
            let settings = parse(&values(&[
                ("cloudflare_zone_id", ZONE),
                ("cloudflare_api_token", "t"),
                ("cloudflare_batch_size", batch),
            ]))
            .ok()
            .unwrap();
            Cloudflare {
                client: reqwest::Client::new(),
                pacer: Pacer::for_urls(ZONE, 800.0),
                operations: Pacer::for_operations(ZONE, settings.operations),
                settings,
            }
        };
        assert_eq!(s("500").batch_size(Scope::Tags), 100);
        assert_eq!(s("500").batch_size(Scope::Urls), 500);
        assert_eq!(s("30").batch_size(Scope::Prefixes), 30);
        assert_eq!(s("30").batch_size(Scope::Everything), usize::MAX);
        // Free: 25 requests at once, then one every 12 s.
        let pacer = Pacer {
            capacity: 25.0,
            per_second: 5.0 / 60.0,
            state: Mutex::new((25.0, Instant::now())),
        };
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..27).map(|_| pacer.reserve(1, t0)).collect();
        assert!(waits[..25].iter().all(Duration::is_zero), "{waits:?}");
        assert_eq!(waits[25].as_secs_f64().round(), 12.0);
        assert_eq!(waits[26].as_secs_f64().round(), 24.0);
    }

    #[test]
    fn success_is_done_with_the_purge_id() {
        let body = r#"{"success":true,"errors":[],"messages":[],"result":{"id":"9a7806061c88ada191ed06f989cc3dac"}}"#;
        let r = interpret(StatusCode::OK, None, body, 2);
        assert_eq!(r.attempts.len(), 2);
        assert!(matches!(
            r.attempts[1],
            Attempt::Done {
                http_status: Some(200),
                ..
            }
        ));
        assert_eq!(
            r.receipt.unwrap().provider_id.as_deref(),
            Some("9a7806061c88ada191ed06f989cc3dac")
        );
    }

    #[test]
    fn errors_are_shown_in_cloudflares_words() {
        let body = r#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[],"result":null}"#;
        let r = interpret(StatusCode::FORBIDDEN, None, body, 1);
        assert!(r.receipt.is_none());
        assert_eq!(
            r.attempts[0],
            Attempt::Fail {
                http_status: Some(403),
                reason: "Cloudflare 403 Forbidden: Authentication error (code 10000)".into()
            }
        );
        // A 200 that says success:false is not a success.
        let body = r#"{"success":false,"errors":[{"code":1012,"message":"a"},{"code":1013,"message":"b"}]}"#;
        let r = interpret(StatusCode::OK, None, body, 1);
        assert!(
            matches!(&r.attempts[0], Attempt::Fail { reason, .. } if reason == "Cloudflare 200 OK: a (code 1012); b (code 1013)")
        );
        // Not Cloudflare's JSON (a proxy's page): its start is shown.
        let r = interpret(StatusCode::BAD_GATEWAY, None, "<html>bad gateway</html>", 1);
        assert!(
            matches!(&r.attempts[0], Attempt::Retry { reason, .. } if reason == "Cloudflare 502 Bad Gateway: <html>bad gateway</html>")
        );
    }

    #[test]
    fn rate_limits_are_retried_after_the_wait_cloudflare_asks_for() {
        let body = r#"{"success":false,"errors":[{"code":971,"message":"Please wait and consider throttling your request speed"}]}"#;
        let r = interpret(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            body,
            1,
        );
        assert!(matches!(
            &r.attempts[0],
            Attempt::Retry { http_status: Some(429), retry_after: Some(d), reason }
                if *d == Duration::from_secs(3) && reason.contains("throttling")
        ));
    }
}
