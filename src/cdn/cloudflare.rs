//! Cloudflare: `POST /zones/{zone_id}/purge_cache` with `{"files":[…]}` and a Bearer API token.
//!
//! Cloudflare calls it "Instant Purge": there is no status to poll, an accepted request is done.
//! URLs per request are capped (100 on every plan by Cloudflare's current documentation, 500 on
//! Enterprise; older documentation said 30), so the batch size is a setting.

use super::{
    Attempt, Batch, BoxFuture, Bucket, Context, Field, FieldError, FieldKind, Measured, Model,
    OVERHEAD_MS, ProviderKind, PurgeConfig, PurgeResult, Purger, Receipt, Sending, Values,
    body_excerpt, describe_error, parse_base_url, refused, retry_after, status_text, value,
};
use reqwest::StatusCode;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use url::Url;

/// Cloudflare's cache purge API, by URL ("single-file purge").
pub struct CloudflareKind;

const DEFAULT_BASE: &str = "https://api.cloudflare.com/client/v4";
/// Enterprise zones accept 500 URLs per request; no plan accepts more.
const MAX_BATCH: usize = 500;

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
               refuses requests as too large.",
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
];

/// Cloudflare's lowest documented single-file purge rate (Free plan), URLs per second.
const DEFAULT_RATE: u32 = 800;
/// Cloudflare's highest documented rate (Enterprise): more is a typo.
const MAX_RATE: u32 = 3_000;
/// Round trip assumed for an API request before one has been measured.
const UNMEASURED_REQUEST_MS: f64 = 300.0;

/// Validated settings.
struct Settings {
    base: String,
    zone_id: String,
    token: String,
    batch_size: usize,
    urls_per_second: u32,
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
    if errors.is_empty() {
        Ok(Settings {
            base,
            zone_id: zone_id.to_ascii_lowercase(),
            token,
            batch_size,
            urls_per_second,
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
        "Cloudflare (purge by URL)"
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
        let tokens = Pacer::shared(&zone, rate).level(Instant::now());
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

    fn build(&self, values: &Values, ctx: &Context) -> anyhow::Result<Box<dyn Purger>> {
        let settings = parse(values).map_err(|e| anyhow::anyhow!("{}", e[0].message))?;
        let pacer = Pacer::shared(&settings.zone_id, f64::from(settings.urls_per_second));
        Ok(Box::new(Cloudflare {
            client: ctx.client.clone(),
            settings,
            pacer,
        }))
    }
}

/// Sends purge requests to one zone.
pub struct Cloudflare {
    client: reqwest::Client,
    settings: Settings,
    pacer: Arc<Pacer>,
}

/// Keeps a zone's purges within its rate: a bucket of one second's worth of URLs, refilled at
/// the rate. A request takes its URLs' tokens when it is its turn, and waits when that leaves
/// the bucket in debt, so requests queue behind each other in order. One per zone, shared by
/// every invalidation of the process.
pub struct Pacer {
    per_second: f64,
    state: Mutex<(f64, Instant)>,
}

impl Pacer {
    fn shared(zone: &str, per_second: f64) -> Arc<Self> {
        static PACERS: OnceLock<Mutex<HashMap<String, Arc<Pacer>>>> = OnceLock::new();
        let key = format!("{zone}@{per_second}");
        let mut pacers = PACERS
            .get_or_init(Mutex::default)
            .lock()
            .expect("pacers lock");
        pacers
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Pacer {
                    per_second,
                    state: Mutex::new((per_second, Instant::now())),
                })
            })
            .clone()
    }

    /// The tokens in the bucket at `now`: below zero while requests wait their turn.
    fn level(&self, now: Instant) -> f64 {
        let (tokens, at) = *self.state.lock().expect("pacer lock");
        (tokens + now.saturating_duration_since(at).as_secs_f64() * self.per_second)
            .min(self.per_second)
    }

    /// Takes `urls` tokens and says how long to wait before sending them.
    fn reserve(&self, urls: usize, now: Instant) -> Duration {
        let mut state = self.state.lock().expect("pacer lock");
        let (tokens, at) = *state;
        let refilled = (tokens + now.saturating_duration_since(at).as_secs_f64() * self.per_second)
            .min(self.per_second);
        let left = refilled - urls as f64;
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
}

impl Purger for Cloudflare {
    fn batch_sizes(&self, urls: &[Url]) -> Vec<usize> {
        split(urls.len(), self.settings.batch_size)
    }

    fn purge<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, PurgeResult> {
        Box::pin(async move {
            let n = batch.urls.len();
            let wait = self.pacer.reserve(n, Instant::now());
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
                .body(purge_body(&batch.urls))
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
            pacer: Pacer::shared(ZONE, 800.0),
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
