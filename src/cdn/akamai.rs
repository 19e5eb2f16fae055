//! Akamai Fast Purge (CCU v3): `POST /ccu/v3/{invalidate|delete}/{url|tag}/{network}`,
//! EdgeGrid-signed, paced by a client-side copy of Akamai's token buckets so bulk purges do not
//! storm into 429s.

use super::edgegrid::{Credentials, Signer, normalise_host, parse_edgerc};
use super::{
    Attempt, Batch, BoxFuture, Bucket, Context, Field, FieldError, FieldKind, Measured, Model,
    OVERHEAD_MS, ProviderKind, PurgeConfig, PurgeResult, Purger, Receipt, Scope, Sending, TagRules,
    Values, describe_error, parse_base_url, retry_after, value,
};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use url::Url;

/// Akamai Fast Purge by URL and by cache tag.
pub struct AkamaiKind;

/// Largest request body Akamai accepts (413 above).
pub const MAX_BODY_BYTES: usize = 50_000;

/// Longest cache tag Akamai accepts (128 characters), and the characters besides letters and
/// digits it allows; not spaces, `*`, `/`, `:`, `,`, `@`, `<>`, `\`, braces, brackets,
/// parentheses, `"`, `;`, `=` or `?` (techdocs.akamai.com/purge-cache/docs/purge-content-cache-tag).
const MAX_TAG_BYTES: usize = 128;
const TAG_PUNCTUATION: &str = "!#$%&'+-.^_`|~";

/// `{"objects":[]}`: the body of a request before its objects.
const EMPTY_BODY: usize = r#"{"objects":[]}"#.len();

/// Tags per request: as many of the longest tags as fit in [`MAX_BODY_BYTES`] (each quoted,
/// none escaped: no allowed character needs it, and a comma apart), 381. Few enough that the
/// tag bucket (5,000 burst) covers many requests, and that one request's wait for tag tokens
/// at 500/min stays under a minute.
const TAGS_PER_REQUEST: usize = (MAX_BODY_BYTES - EMPTY_BODY + 1) / (MAX_TAG_BYTES + 3);

/// Not a settings field (never on the page, never in a snapshot made from the form): a factor
/// on the documented refill rates, so simulators and benchmarks can run the buckets faster.
pub const RATE_SCALE_VALUE: &str = "akamai_rate_scale";

/// URLs in one request of at most 50,000 bytes, for estimates: image-serving URLs of about
/// 90 characters, quoted and separated.
const URLS_PER_REQUEST: usize = 500;
/// Round trip assumed for an API request before one has been measured.
const UNMEASURED_REQUEST_MS: f64 = 300.0;
/// "Purges normally finish in about 5 seconds" (Akamai's `estimatedSeconds`).
const CLEARING_SECONDS: f64 = 5.0;

const ACTIONS: &[(&str, &str)] = &[
    (
        "invalidate",
        "Invalidate (recommended: refetched only when the origin has a newer version)",
    ),
    (
        "delete",
        "Delete (always refetched; cannot be undone, loads the origin)",
    ),
];
const NETWORKS: &[(&str, &str)] = &[("production", "Production"), ("staging", "Staging")];

const FIELDS: &[Field] = &[
    Field {
        name: "akamai_edgerc",
        label: ".edgerc section",
        help: "Paste a section of your .edgerc file, or choose the file (the [default] section is used, \
               or the first one). It fills the host and the three credentials below and is not kept.",
        kind: FieldKind::SecretText,
        default: "",
        docs: "",
    },
    Field {
        name: "akamai_host",
        label: "API host",
        help: "The credential's host from .edgerc, e.g. akab-xxxx.luna.akamaiapis.net. May be left empty \
               when an API base URL is set: requests are then signed for the base URL's host.",
        kind: FieldKind::Text,
        default: "",
        docs: "",
    },
    Field {
        name: "akamai_client_token",
        label: "Client token",
        help: "client_token from .edgerc.",
        kind: FieldKind::Secret,
        default: "",
        docs: "",
    },
    Field {
        name: "akamai_client_secret",
        label: "Client secret",
        help: "client_secret from .edgerc.",
        kind: FieldKind::Secret,
        default: "",
        docs: "",
    },
    Field {
        name: "akamai_access_token",
        label: "Access token",
        help: "access_token from .edgerc.",
        kind: FieldKind::Secret,
        default: "",
        docs: "",
    },
    Field {
        name: "akamai_action",
        label: "Action",
        help: "Akamai recommends invalidate.",
        kind: FieldKind::Choice(ACTIONS),
        default: "invalidate",
        docs: "",
    },
    Field {
        name: "akamai_network",
        label: "Network",
        help: "Which Akamai network to purge.",
        kind: FieldKind::Choice(NETWORKS),
        default: "production",
        docs: "",
    },
    Field {
        name: "akamai_base_url",
        label: "API base URL",
        help: "Leave empty to use https://<API host>. Requests go to this URL when set; they are signed for its host.",
        kind: FieldKind::Text,
        default: "",
        docs: "",
    },
];

/// Validated settings.
#[derive(Debug, Clone)]
struct Settings {
    base: Url,
    credentials: Credentials,
    action: &'static str,
    network: &'static str,
    rate_scale: f64,
}

fn choice(options: &'static [(&'static str, &'static str)], v: &str) -> Option<&'static str> {
    options.iter().map(|(o, _)| *o).find(|o| *o == v)
}

fn settings(values: &Values) -> Result<Settings, Vec<FieldError>> {
    let kind = &AkamaiKind;
    let get = |name: &str| value(kind, values, name).trim().to_string();
    let mut errors = Vec::new();
    // The API host, or the host of an API base URL: one of the two is enough.
    let base_text = get("akamai_base_url");
    let typed_base = (!base_text.is_empty()).then(|| parse_base_url(&base_text));
    let host = normalise_host(&get("akamai_host"));
    let host = match (host.is_empty(), &typed_base) {
        (true, Some(Ok(base))) => base.host_str().unwrap_or_default().to_string(),
        (true, None) => {
            errors.push(FieldError {
                field: "akamai_host",
                message: "Enter the API host (or an API base URL), or paste an .edgerc section."
                    .into(),
            });
            host
        }
        // A base URL that does not parse has its own error below.
        _ => host,
    };
    let mut required = |name: &'static str, what: &str| {
        let v = get(name);
        if v.is_empty() {
            errors.push(FieldError {
                field: name,
                message: format!("Enter the {what}, or paste an .edgerc section."),
            });
        }
        v
    };
    let credentials = Credentials {
        host: host.clone(),
        client_token: required("akamai_client_token", "client token"),
        client_secret: required("akamai_client_secret", "client secret"),
        access_token: required("akamai_access_token", "access token"),
    };
    if !host.is_empty() && host.contains(|c: char| c == '/' || c.is_whitespace()) {
        errors.push(FieldError {
            field: "akamai_host",
            message: format!(
                "\"{host}\" must be a host name such as akab-xxxx.luna.akamaiapis.net."
            ),
        });
    }
    let base = match typed_base {
        None => Url::parse(&format!("https://{host}/")).ok(),
        Some(Ok(u)) if u.path() == "/" => Some(u),
        Some(Ok(_)) => {
            errors.push(FieldError {
                field: "akamai_base_url",
                message: format!("\"{base_text}\" must be a base URL without a path."),
            });
            None
        }
        Some(Err(message)) => {
            errors.push(FieldError {
                field: "akamai_base_url",
                message,
            });
            None
        }
    };
    let action = choice(ACTIONS, &get("akamai_action"));
    if action.is_none() {
        errors.push(FieldError {
            field: "akamai_action",
            message: "Choose invalidate or delete.".into(),
        });
    }
    let network = choice(NETWORKS, &get("akamai_network"));
    if network.is_none() {
        errors.push(FieldError {
            field: "akamai_network",
            message: "Choose production or staging.".into(),
        });
    }
    let rate_scale = super::speed_up(values, RATE_SCALE_VALUE);
    match (base, action, network, errors.is_empty()) {
        (Some(base), Some(action), Some(network), true) => Ok(Settings {
            base,
            credentials,
            action,
            network,
            rate_scale,
        }),
        _ => Err(errors),
    }
}

impl ProviderKind for AkamaiKind {
    fn name(&self) -> &'static str {
        "akamai"
    }

    fn short_name(&self) -> &'static str {
        "Akamai"
    }

    fn label(&self) -> &'static str {
        "Akamai Fast Purge (CCU v3)"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    /// Fills host and credentials from a pasted `.edgerc` section, then drops the paste.
    fn prepare(&self, values: &mut Values) -> Vec<FieldError> {
        let Some(text) = values.remove("akamai_edgerc") else {
            return Vec::new();
        };
        if text.trim().is_empty() {
            return Vec::new();
        }
        match parse_edgerc(&text) {
            Ok(c) => {
                values.insert("akamai_host".into(), c.host);
                values.insert("akamai_client_token".into(), c.client_token);
                values.insert("akamai_client_secret".into(), c.client_secret);
                values.insert("akamai_access_token".into(), c.access_token);
                Vec::new()
            }
            Err(message) => vec![FieldError {
                field: "akamai_edgerc",
                message,
            }],
        }
    }

    fn validate(&self, values: &Values) -> Vec<FieldError> {
        settings(values).err().unwrap_or_default()
    }

    fn describe(&self, values: &Values) -> String {
        format!(
            "Akamai Fast Purge ({}, {})",
            value(self, values, "akamai_network"),
            value(self, values, "akamai_action")
        )
    }

    /// Requests of up to 50,000 bytes (about [`URLS_PER_REQUEST`] URLs), paced by the
    /// account's token buckets as this process's pacer sees them now (full when it has sent
    /// nothing; what earlier invalidations took is gone until refilled), then Akamai's own
    /// promise: purges normally complete in about 5 seconds (its `estimatedSeconds`).
    fn model(&self, values: &Values, config: &PurgeConfig, measured: Option<Measured>) -> Model {
        paced_model(values, config, measured, Objects::Urls)
    }

    /// Fast Purge takes URLs and cache tags. It has no prefix purge, and it clears everything
    /// only by CP code, which names content by Akamai's billing units rather than by site:
    /// this app does not offer it.
    fn scopes(&self, _values: &Values) -> Vec<Scope> {
        vec![Scope::Tags]
    }

    fn tag_rules(&self) -> TagRules {
        TagRules {
            who: "Akamai",
            max_len: MAX_TAG_BYTES,
            punctuation: TAG_PUNCTUATION,
        }
    }

    /// Tags: requests of [`TAGS_PER_REQUEST`] tags paced by the tag bucket (5,000 burst,
    /// 500/min) and the requests bucket, then the same `estimatedSeconds` as URLs.
    fn model_for(
        &self,
        scope: Scope,
        values: &Values,
        config: &PurgeConfig,
        measured: Option<Measured>,
    ) -> Model {
        match scope {
            Scope::Tags => paced_model(values, config, measured, Objects::Tags),
            _ => self.model(values, config, measured),
        }
    }

    /// The token buckets belong to the API client, whose host is its own.
    fn pacing_key(&self, values: &Values) -> Option<String> {
        let host = settings(values).map_or_else(
            |_| value(self, values, "akamai_host").trim().to_string(),
            |s| s.credentials.host,
        );
        Some(host.to_ascii_lowercase())
    }

    fn build(&self, values: &Values, ctx: &Context) -> anyhow::Result<Box<dyn Purger>> {
        let s = settings(values).map_err(|e| anyhow::anyhow!("{}", e[0].message))?;
        Ok(Box::new(AkamaiPurge::new(ctx.client.clone(), s)))
    }
}

/// How requests for `objects` are paced: by the account's buckets of requests and of those
/// objects as this process's pacer sees them now (see [`AkamaiKind::model`]).
fn paced_model(
    values: &Values,
    config: &PurgeConfig,
    measured: Option<Measured>,
    objects: Objects,
) -> Model {
    let kind = &AkamaiKind;
    let rates = Rates::documented().scaled(super::speed_up(values, RATE_SCALE_VALUE));
    let base_text = value(kind, values, "akamai_base_url").trim();
    let base = if base_text.is_empty() {
        format!(
            "https://{}/",
            normalise_host(value(kind, values, "akamai_host"))
        )
    } else {
        base_text.to_string()
    };
    let (burst, per_second) = rates.objects(objects);
    let (requests_now, objects_now) = Url::parse(&base)
        .map_or((rates.request_burst, burst), |base| {
            Pacer::shared(base.as_str(), rates).level(Instant::now(), objects)
        });
    Model {
        sending: Sending::Paced {
            per_request: match objects {
                Objects::Urls => URLS_PER_REQUEST,
                Objects::Tags => TAGS_PER_REQUEST,
            },
            in_flight: config.concurrency.max(1),
            request_ms: measured.map_or(UNMEASURED_REQUEST_MS, |m| m.request_ms),
            urls: Some(Bucket {
                burst: objects_now,
                per_second,
            }),
            requests: Some(Bucket {
                burst: requests_now,
                per_second: rates.requests_per_second,
            }),
        },
        clearing_ms: CLEARING_SECONDS * 1000.0,
        overhead_ms: OVERHEAD_MS,
    }
}

/// Sends Fast Purge requests for one API client.
pub struct AkamaiPurge {
    client: reqwest::Client,
    signer: Signer,
    endpoint: Url,
    tag_endpoint: Url,
    status_endpoint: Url,
    pacer: Arc<Pacer>,
}

impl AkamaiPurge {
    fn new(client: reqwest::Client, s: Settings) -> Self {
        let endpoint = s
            .base
            .join(&format!("ccu/v3/{}/url/{}", s.action, s.network))
            .expect("a fixed relative path joins");
        let tag_endpoint = s
            .base
            .join(&format!("ccu/v3/{}/tag/{}", s.action, s.network))
            .expect("a fixed relative path joins");
        let status_endpoint = s
            .base
            .join("ccu/v3/rate-limit-status/url")
            .expect("a fixed relative path joins");
        let pacer = Pacer::shared(s.base.as_str(), Rates::documented().scaled(s.rate_scale));
        Self {
            client,
            signer: Signer::new(s.credentials),
            endpoint,
            tag_endpoint,
            status_endpoint,
            pacer,
        }
    }

    async fn post(&self, url: &Url, body: Vec<u8>) -> reqwest::Result<reqwest::Response> {
        let content_type = "application/json";
        let authorization =
            self.signer
                .authorization("POST", url, &[("Content-Type", content_type)], &body);
        self.client
            .post(url.clone())
            .header(CONTENT_TYPE, content_type)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .body(body)
            .send()
            .await
    }
}

/// `{"objects":[…]}` for `urls`.
fn request_body(urls: &[Url]) -> Vec<u8> {
    let objects: Vec<&str> = urls.iter().map(Url::as_str).collect();
    objects_body(&objects)
}

/// `{"objects":[…]}` for URLs or tags.
fn objects_body(objects: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "objects": objects })).expect("strings serialise")
}

/// Splits so each `{"objects":[…]}` body is at most [`MAX_BODY_BYTES`] and no request asks for
/// more URL tokens than the bucket holds.
fn split(urls: &[Url], max_body: usize, max_objects: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let (mut count, mut bytes) = (0usize, EMPTY_BODY);
    for url in urls {
        let len = serde_json::to_string(url.as_str()).map_or(url.as_str().len() + 2, |s| s.len());
        let added = len + usize::from(count > 0);
        if count > 0 && (bytes + added > max_body || count == max_objects) {
            sizes.push(count);
            (count, bytes) = (0, EMPTY_BODY);
        }
        bytes += len + usize::from(count > 0);
        count += 1;
    }
    if count > 0 {
        sizes.push(count);
    }
    sizes
}

/// An Akamai answer body (`application/api-problem+json` for errors, JSON for 201).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    title: Option<String>,
    detail: Option<String>,
    support_id: Option<String>,
    purge_id: Option<String>,
    estimated_seconds: Option<u64>,
}

impl Answer {
    fn parse(body: &str) -> Self {
        serde_json::from_str(body).unwrap_or_default()
    }

    /// `Akamai 403 Forbidden: unauthorized arl — http://… (support id …)`.
    fn words(&self, status: reqwest::StatusCode, raw: &str) -> String {
        let mut text = format!("Akamai {}", super::status_text(status));
        let title = self.title.as_deref().filter(|t| !t.is_empty());
        let detail = self.detail.as_deref().filter(|d| !d.is_empty());
        match (title, detail) {
            (Some(t), Some(d)) => text.push_str(&format!(": {t} — {d}")),
            (Some(t), None) => text.push_str(&format!(": {t}")),
            (None, Some(d)) => text.push_str(&format!(": {d}")),
            (None, None) if self.support_id.is_none() => {
                if let Some(raw) = super::body_excerpt(raw) {
                    text.push_str(&format!(": {raw}"));
                }
            }
            (None, None) => {}
        }
        if let Some(id) = &self.support_id {
            text.push_str(&format!(" (support id {id})"));
        }
        text
    }
}

/// The `X-Ratelimit-*` headers Akamai sends with 201 and 429 answers.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct RateHeaders {
    remaining: Option<f64>,
    per_second: Option<f64>,
    seconds_to_refresh: Option<f64>,
    remaining_objects: Option<f64>,
    per_second_objects: Option<f64>,
    seconds_to_refresh_objects: Option<f64>,
}

impl RateHeaders {
    fn read(headers: &HeaderMap) -> Self {
        let num = |name: &str| {
            headers
                .get(name)?
                .to_str()
                .ok()?
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
        };
        Self {
            remaining: num("x-ratelimit-remaining"),
            per_second: num("x-ratelimit-limit-per-second"),
            seconds_to_refresh: num("x-ratelimit-seconds-to-refresh-limit"),
            remaining_objects: num("x-ratelimit-remaining-objects"),
            per_second_objects: num("x-ratelimit-limit-per-second-objects"),
            seconds_to_refresh_objects: num("x-ratelimit-seconds-to-refresh-limit-objects"),
        }
    }

    /// How long until a request for `objects` URLs would be accepted: the token deficit over
    /// the refill rate, or the time to a full bucket when the rate is not given.
    fn wait_for(&self, objects: usize) -> Option<Duration> {
        let one =
            |remaining: Option<f64>, rate: Option<f64>, refresh: Option<f64>, need: f64| match (
                remaining, rate,
            ) {
                (Some(r), _) if r >= need => Some(0.0),
                (Some(r), Some(rate)) if rate > 0.0 => {
                    let wait = (need - r) / rate;
                    Some(refresh.map_or(wait, |f| wait.min(f)))
                }
                _ => refresh,
            };
        let requests = one(
            self.remaining,
            self.per_second,
            self.seconds_to_refresh,
            1.0,
        );
        let urls = one(
            self.remaining_objects,
            self.per_second_objects,
            self.seconds_to_refresh_objects,
            objects as f64,
        );
        let secs = match (requests, urls) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b)?,
        };
        Some(Duration::from_secs_f64(secs))
    }
}

impl AkamaiPurge {
    /// Sends one request of `n` objects to `endpoint` once the buckets hold the tokens for
    /// it, and reads Akamai's answer: what it means for every object, and the receipt when
    /// accepted.
    async fn send(
        &self,
        endpoint: &Url,
        objects: Objects,
        body: Vec<u8>,
        n: usize,
    ) -> (Attempt, Option<Receipt>) {
        let hold = self.pacer.acquire(objects, n).await;
        let response = self.post(endpoint, body).await;
        // Answered (or failed): the request has reached Akamai's buckets, or never will.
        drop(hold);
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                let attempt = Attempt::Retry {
                    http_status: None,
                    reason: describe_error(&e),
                    retry_after: None,
                };
                return (attempt, None);
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let answer = Answer::parse(&text);
        let code = status.as_u16();
        let attempt = match code {
            200..=299 => {
                let receipt = Receipt {
                    provider_id: answer.purge_id,
                    support_id: answer.support_id,
                    estimated_seconds: answer.estimated_seconds,
                };
                // Accepted is not cleared: Akamai promises clearing within its
                // `estimatedSeconds`, and the rows stay submitted until then.
                let accepted = if receipt.estimated_seconds.is_some_and(|s| s > 0) {
                    Attempt::Pending {
                        http_status: Some(code),
                    }
                } else {
                    Attempt::Done {
                        http_status: Some(code),
                        note: None,
                    }
                };
                return (accepted, Some(receipt));
            }
            429 => {
                let rate = RateHeaders::read(&headers);
                self.pacer.refused(objects, &rate);
                Attempt::Retry {
                    http_status: Some(code),
                    reason: answer.words(status, &text),
                    retry_after: rate.wait_for(n).or_else(|| retry_after(&headers)),
                }
            }
            500..=599 => Attempt::Retry {
                http_status: Some(code),
                reason: answer.words(status, &text),
                retry_after: retry_after(&headers),
            },
            _ => Attempt::Fail {
                http_status: Some(code),
                reason: answer.words(status, &text),
            },
        };
        (attempt, None)
    }

    async fn purge_urls(&self, urls: &[Url]) -> PurgeResult {
        let n = urls.len();
        // Akamai refuses URLs without an http(s) scheme: say so instead of failing the batch.
        if let Some(bad) = urls
            .iter()
            .find(|u| !matches!(u.scheme(), "http" | "https"))
        {
            let reason = format!("Akamai purges only http:// and https:// URLs, not {bad}");
            return PurgeResult::all(
                n,
                Attempt::Fail {
                    http_status: None,
                    reason,
                },
                None,
            );
        }
        let (attempt, receipt) = self
            .send(&self.endpoint, Objects::Urls, request_body(urls), n)
            .await;
        PurgeResult::all(n, attempt, receipt)
    }

    /// Sends the tags that follow Akamai's rules; a tag that does not (stored before the
    /// rules were checked, or by another provider's) fails alone, with the reason.
    async fn purge_tags(&self, tags: &[String]) -> PurgeResult {
        super::purge_following_rules(tags, &AkamaiKind.tag_rules(), "tag", |valid| async move {
            let (attempt, receipt) = self
                .send(
                    &self.tag_endpoint,
                    Objects::Tags,
                    objects_body(&valid),
                    valid.len(),
                )
                .await;
            PurgeResult::all(valid.len(), attempt, receipt)
        })
        .await
    }
}

impl Purger for AkamaiPurge {
    fn batch_sizes(&self, urls: &[Url]) -> Vec<usize> {
        split(urls, MAX_BODY_BYTES, self.pacer.rates.url_burst as usize)
    }

    /// Tags: [`TAGS_PER_REQUEST`], never more than the tag bucket holds.
    fn batch_size(&self, scope: Scope) -> usize {
        match scope {
            Scope::Tags => TAGS_PER_REQUEST.min(self.pacer.rates.tag_burst as usize),
            _ => 1,
        }
    }

    fn purge<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, PurgeResult> {
        Box::pin(async move {
            match batch.scope {
                Scope::Urls => self.purge_urls(&batch.urls).await,
                Scope::Tags => self.purge_tags(&batch.tags).await,
                Scope::Prefixes | Scope::Everything => super::unsupported(batch, "Akamai"),
            }
        })
    }

    fn test_connection(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            // Reading the rate-limit status is authenticated and purges nothing.
            let response = self
                .post(&self.status_endpoint, Vec::new())
                .await
                .map_err(|e| {
                    format!(
                        "Could not reach Akamai at {}: {}",
                        self.status_endpoint,
                        describe_error(&e)
                    )
                })?;
            let status = response.status();
            let headers = response.headers().clone();
            let text = response.text().await.unwrap_or_default();
            let answer = Answer::parse(&text);
            if !status.is_success() {
                return Err(format!(
                    "Akamai refused the credentials: {}",
                    answer.words(status, &text)
                ));
            }
            let rate = RateHeaders::read(&headers);
            let mut message = "Akamai accepted the credentials".to_string();
            if let (Some(urls), Some(requests)) = (rate.remaining_objects, rate.remaining) {
                message.push_str(&format!(
                    ": {urls} URL purges and {requests} requests available now"
                ));
            }
            if let Some(id) = answer.support_id {
                message.push_str(&format!(" (support id {id})"));
            }
            message.push('.');
            Ok(message)
        })
    }
}

/// Which of Akamai's object buckets a purge request draws on (besides the requests bucket,
/// which every purge request draws on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Objects {
    Urls,
    Tags,
}

/// Akamai's documented token buckets (per account): requests, URLs and cache tags.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rates {
    request_burst: f64,
    requests_per_second: f64,
    url_burst: f64,
    urls_per_second: f64,
    tag_burst: f64,
    tags_per_second: f64,
}

impl Rates {
    /// Requests: 100 burst, 50/s. URLs: 10,000 burst, 200/s (12,000/min). Tags: 5,000 burst,
    /// 500/min (techdocs.akamai.com/purge-cache/reference/rate-limiting).
    fn documented() -> Self {
        Self {
            request_burst: 100.0,
            requests_per_second: 50.0,
            url_burst: 10_000.0,
            urls_per_second: 200.0,
            tag_burst: 5_000.0,
            tags_per_second: 500.0 / 60.0,
        }
    }

    /// Refill rates multiplied by `factor`, bursts unchanged.
    fn scaled(self, factor: f64) -> Self {
        Self {
            requests_per_second: self.requests_per_second * factor,
            urls_per_second: self.urls_per_second * factor,
            tags_per_second: self.tags_per_second * factor,
            ..self
        }
    }

    /// (burst, refill per second) of the bucket of `objects`.
    fn objects(self, objects: Objects) -> (f64, f64) {
        match objects {
            Objects::Urls => (self.url_burst, self.urls_per_second),
            Objects::Tags => (self.tag_burst, self.tags_per_second),
        }
    }
}

/// The tokens one request in flight has reserved: one request, and `count` of `objects`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Taken {
    objects: Objects,
    count: f64,
}

/// The client's view of the three buckets, kept so that it never counts more tokens than
/// Akamai's own buckets hold, whenever Akamai's copy takes a request's tokens.
///
/// Akamai takes a request's tokens when it arrives, some time between our sending it and our
/// reading its answer; a bucket refills only below its cap, so the later the tokens are
/// taken, the more refill a full bucket loses. Counting a request's tokens as taken at its
/// answer (the latest it can be) is therefore the worst case for Akamai's level, and the
/// client's level never runs ahead of it however long a request was in transit (a request
/// taken from a full bucket and stuck 200 ms on a busy machine costs its 200 ms of refill
/// here too). Until answered, a request's tokens are *reserved*: not yet out of the level,
/// but not available to other requests either.
#[derive(Debug, Clone)]
struct Buckets {
    rates: Rates,
    requests: f64,
    urls: f64,
    tags: f64,
    /// Tokens of requests sent and not yet answered: (requests, URLs, tags).
    reserved: (f64, f64, f64),
    at: Instant,
}

/// What a request waiting for tokens waits for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wait {
    /// Refill: the tokens are there after this long (zero: now).
    For(Duration),
    /// An answer: the bucket is full and the requests in flight have reserved too much of it.
    Answer,
}

impl Buckets {
    fn full(rates: Rates, now: Instant) -> Self {
        Self {
            rates,
            requests: rates.request_burst,
            urls: rates.url_burst,
            tags: rates.tag_burst,
            reserved: (0.0, 0.0, 0.0),
            at: now,
        }
    }

    /// The level of the bucket of `objects` (reserved tokens included).
    fn left(&self, objects: Objects) -> f64 {
        match objects {
            Objects::Urls => self.urls,
            Objects::Tags => self.tags,
        }
    }

    fn left_mut(&mut self, objects: Objects) -> &mut f64 {
        match objects {
            Objects::Urls => &mut self.urls,
            Objects::Tags => &mut self.tags,
        }
    }

    /// The tokens of `objects` reserved by requests in flight.
    fn reserved(&self, objects: Objects) -> f64 {
        match objects {
            Objects::Urls => self.reserved.1,
            Objects::Tags => self.reserved.2,
        }
    }

    fn reserved_mut(&mut self, objects: Objects) -> &mut f64 {
        match objects {
            Objects::Urls => &mut self.reserved.1,
            Objects::Tags => &mut self.reserved.2,
        }
    }

    /// Tokens free for a new request: (requests, `objects`).
    fn available(&self, objects: Objects) -> (f64, f64) {
        (
            self.requests - self.reserved.0,
            self.left(objects) - self.reserved(objects),
        )
    }

    /// Adds what refilled since the last call, up to each bucket's cap.
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        let rates = self.rates;
        self.requests = (self.requests + dt * rates.requests_per_second).min(rates.request_burst);
        self.urls = (self.urls + dt * rates.urls_per_second).min(rates.url_burst);
        self.tags = (self.tags + dt * rates.tags_per_second).min(rates.tag_burst);
        self.at = now;
    }

    /// How long until one request for `count` of `objects` fits (after a
    /// [`Buckets::refill`] to now).
    fn wait_for(&self, objects: Objects, count: f64) -> Wait {
        let (burst, per_second) = self.rates.objects(objects);
        let wait = |level: f64, reserved: f64, need: f64, cap: f64, rate: f64| {
            if level - reserved + 1e-9 >= need {
                Some(0.0)
            } else if cap - reserved + 1e-9 < need {
                None
            } else {
                Some((need + reserved - level) / rate)
            }
        };
        let requests = wait(
            self.requests,
            self.reserved.0,
            1.0,
            self.rates.request_burst,
            self.rates.requests_per_second,
        );
        let objects = wait(
            self.left(objects),
            self.reserved(objects),
            count.min(burst),
            burst,
            per_second,
        );
        match (requests, objects) {
            (Some(a), Some(b)) => Wait::For(Duration::from_secs_f64(a.max(b))),
            _ => Wait::Answer,
        }
    }

    /// Reserves the tokens of one request until it is answered (see [`Buckets::answered`]).
    fn take(&mut self, objects: Objects, count: f64) -> Taken {
        let (burst, _) = self.rates.objects(objects);
        let taken = Taken {
            objects,
            count: count.min(burst),
        };
        self.reserved.0 += 1.0;
        *self.reserved_mut(objects) += taken.count;
        taken
    }

    /// The request that reserved `taken` was answered (or failed) at `now`: its tokens leave
    /// the buckets now, the latest moment Akamai can have taken them.
    fn answered(&mut self, now: Instant, taken: Taken) {
        self.refill(now);
        self.reserved.0 -= 1.0;
        self.requests -= 1.0;
        *self.reserved_mut(taken.objects) -= taken.count;
        *self.left_mut(taken.objects) -= taken.count;
    }

    /// Akamai says fewer tokens are left than we thought (other clients share the account);
    /// the object headers of a refused request are about the bucket it drew on.
    fn sync(&mut self, now: Instant, objects: Objects, rate: &RateHeaders) {
        self.refill(now);
        if let Some(r) = rate.remaining {
            self.requests = self.requests.min(r);
        }
        if let Some(o) = rate.remaining_objects {
            let left = self.left_mut(objects);
            *left = left.min(o);
        }
    }
}

/// Waits for tokens before each purge request, so a bulk purge runs at the rate Akamai allows
/// instead of being refused; one per API base URL, shared by every batch of the process (URL
/// and tag purges draw on the same requests bucket).
struct Pacer {
    rates: Rates,
    buckets: Mutex<Buckets>,
    /// Woken when a request is answered: its reserved tokens may be what a waiting request
    /// needs.
    answered: tokio::sync::Notify,
    /// Requests take tokens in arrival order (tokio's mutex is fair).
    turn: tokio::sync::Mutex<()>,
}

impl Pacer {
    /// The tokens (requests, `objects`) this pacer counts free in the buckets at `now`.
    fn level(&self, now: Instant, objects: Objects) -> (f64, f64) {
        let mut buckets = self.buckets.lock().expect("pacer lock");
        buckets.refill(now);
        let (requests, left) = buckets.available(objects);
        (requests.max(0.0), left.max(0.0))
    }

    fn shared(base: &str, rates: Rates) -> Arc<Self> {
        static PACERS: OnceLock<Mutex<HashMap<String, Arc<Pacer>>>> = OnceLock::new();
        let key = format!(
            "{base} {} {} {}",
            rates.requests_per_second, rates.urls_per_second, rates.tags_per_second
        );
        let mut map = PACERS
            .get_or_init(Default::default)
            .lock()
            .expect("pacer registry lock");
        map.entry(key)
            .or_insert_with(|| {
                Arc::new(Pacer {
                    rates,
                    buckets: Mutex::new(Buckets::full(rates, Instant::now())),
                    answered: tokio::sync::Notify::new(),
                    turn: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// Returns once the buckets hold a request token and `count` tokens of `objects`, having
    /// reserved them; drop what it returns once the request is answered.
    async fn acquire(&self, objects: Objects, count: usize) -> Hold<'_> {
        let _turn = self.turn.lock().await;
        loop {
            // Listening before looking, so an answer between the two is not missed.
            let answered = self.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            let wait = {
                let mut b = self.buckets.lock().expect("pacer lock");
                b.refill(Instant::now());
                let wait = b.wait_for(objects, count as f64);
                if wait == Wait::For(Duration::ZERO) {
                    let taken = b.take(objects, count as f64);
                    return Hold { pacer: self, taken };
                }
                wait
            };
            match wait {
                Wait::For(d) => {
                    tokio::select! {
                        () = tokio::time::sleep(d) => {}
                        () = &mut answered => {}
                    }
                }
                Wait::Answer => answered.await,
            }
        }
    }

    fn refused(&self, objects: Objects, rate: &RateHeaders) {
        self.buckets
            .lock()
            .expect("pacer lock")
            .sync(Instant::now(), objects, rate);
    }
}

/// The tokens one request in flight has reserved, taken out of the buckets when dropped: once
/// the request is answered, or when its future is dropped unanswered.
struct Hold<'a> {
    pacer: &'a Pacer,
    taken: Taken,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if let Ok(mut buckets) = self.pacer.buckets.lock() {
            buckets.answered(Instant::now(), self.taken);
        }
        self.pacer.answered.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> Values {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn complete() -> Values {
        values(&[
            ("akamai_host", "akab-h.luna.akamaiapis.net"),
            ("akamai_client_token", "ct"),
            ("akamai_client_secret", "cs"),
            ("akamai_access_token", "at"),
        ])
    }

    #[test]
    fn prepare_fills_fields_from_an_edgerc_paste_and_drops_it() {
        let mut v = values(&[(
            "akamai_edgerc",
            "[default]\nclient_secret = cs=\nhost = akab-h.luna.akamaiapis.net\naccess_token = at\nclient_token = ct\n",
        )]);
        assert!(AkamaiKind.prepare(&mut v).is_empty());
        assert!(!v.contains_key("akamai_edgerc"));
        assert_eq!(v["akamai_client_secret"], "cs=");
        assert_eq!(v["akamai_host"], "akab-h.luna.akamaiapis.net");
        assert!(AkamaiKind.validate(&v).is_empty());

        let mut bad = values(&[("akamai_edgerc", "[default]\nhost = h\n")]);
        let errors = AkamaiKind.prepare(&mut bad);
        assert_eq!(errors[0].field, "akamai_edgerc");
        assert!(!bad.contains_key("akamai_edgerc"));
    }

    #[test]
    fn validation_names_each_missing_or_bad_field() {
        let errors = AkamaiKind.validate(&Values::new());
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "akamai_host",
                "akamai_client_token",
                "akamai_client_secret",
                "akamai_access_token"
            ]
        );
        let mut v = complete();
        v.insert("akamai_base_url".into(), "http://127.0.0.1:9/x".into());
        v.insert("akamai_network".into(), "moon".into());
        let fields: Vec<&str> = AkamaiKind.validate(&v).iter().map(|e| e.field).collect();
        assert_eq!(fields, ["akamai_base_url", "akamai_network"]);
    }

    #[test]
    fn an_api_base_url_stands_in_for_the_api_host() {
        let mut v = complete();
        v.remove("akamai_host");
        v.insert(
            "akamai_base_url".into(),
            "https://akab-base.luna.akamaiapis.net".into(),
        );
        assert!(AkamaiKind.validate(&v).is_empty());
        let s = settings(&v).unwrap();
        assert_eq!(s.credentials.host, "akab-base.luna.akamaiapis.net");
        assert_eq!(
            AkamaiKind.pacing_key(&v).as_deref(),
            Some("akab-base.luna.akamaiapis.net")
        );
        // Neither: the host is what is missing.
        v.remove("akamai_base_url");
        let errors = AkamaiKind.validate(&v);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "akamai_host");
        assert!(errors[0].message.contains("or an API base URL"));
    }

    #[test]
    fn endpoints_follow_action_network_and_base_url() {
        let ctx = Context {
            client: reqwest::Client::new(),
            config: Default::default(),
        };
        let s = settings(&complete()).unwrap();
        let p = AkamaiPurge::new(ctx.client.clone(), s);
        assert_eq!(
            p.endpoint.as_str(),
            "https://akab-h.luna.akamaiapis.net/ccu/v3/invalidate/url/production"
        );
        let mut v = complete();
        v.insert("akamai_base_url".into(), "http://127.0.0.1:9".into());
        v.insert("akamai_action".into(), "delete".into());
        v.insert("akamai_network".into(), "staging".into());
        let p = AkamaiPurge::new(ctx.client, settings(&v).unwrap());
        assert_eq!(
            p.endpoint.as_str(),
            "http://127.0.0.1:9/ccu/v3/delete/url/staging"
        );
        assert_eq!(
            p.status_endpoint.as_str(),
            "http://127.0.0.1:9/ccu/v3/rate-limit-status/url"
        );
        assert_eq!(
            p.tag_endpoint.as_str(),
            "http://127.0.0.1:9/ccu/v3/delete/tag/staging"
        );
        assert_eq!(
            AkamaiKind.describe(&v),
            "Akamai Fast Purge (staging, delete)"
        );
    }

    #[test]
    fn bodies_stay_within_50000_bytes() {
        let urls: Vec<Url> = (0..5000)
            .map(|i| {
                Url::parse(&format!(
                    "https://images.example.com/is/image/Co/asset-{i:05}?$p$"
                ))
                .unwrap()
            })
            .collect();
        let sizes = split(&urls, MAX_BODY_BYTES, 10_000);
        assert_eq!(sizes.iter().sum::<usize>(), urls.len());
        let mut rest = &urls[..];
        for size in &sizes {
            let (batch, tail) = rest.split_at(*size);
            let len = request_body(batch).len();
            assert!(len <= MAX_BODY_BYTES, "{len}");
            // Full: one more URL would not have fitted.
            if let Some(next) = tail.first() {
                let mut more = batch.to_vec();
                more.push(next.clone());
                assert!(request_body(&more).len() > MAX_BODY_BYTES);
            }
            rest = tail;
        }
        // The object bucket caps a request too.
        assert_eq!(split(&urls[..25], MAX_BODY_BYTES, 10), [10, 10, 5]);
        assert_eq!(
            request_body(&urls[..1]),
            br#"{"objects":["https://images.example.com/is/image/Co/asset-00000?$p$"]}"#
        );
    }

    #[test]
    fn tags_follow_akamais_documented_rules() {
        assert_eq!(AkamaiKind.scopes(&complete()), [Scope::Tags]);
        let rules = AkamaiKind.tag_rules();
        for ok in ["Backpack_B", "a-b.c~d", "!#$%&'+-.^_`|~", &"x".repeat(128)] {
            assert!(rules.check(ok).is_ok(), "{ok}");
        }
        assert!(
            rules
                .check(&"x".repeat(129))
                .unwrap_err()
                .contains("Akamai accepts tags of at most 128")
        );
        for bad in [
            "a b", "a*", "a/b", "a:b", "a,b", "a@b", "<a>", "a\\b", "{a}", "[a]", "(a)", "\"a\"",
            "a;b", "a=b", "a?b",
        ] {
            let error = rules.check(bad).unwrap_err();
            assert!(
                error.contains("which Akamai does not accept"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn a_request_of_the_longest_tags_stays_within_50000_bytes() {
        assert_eq!(TAGS_PER_REQUEST, 381);
        let longest: Vec<String> = (0..TAGS_PER_REQUEST + 1)
            .map(|i| format!("{i:0>128}"))
            .collect();
        let body = |n: usize| {
            let tags: Vec<&str> = longest[..n].iter().map(String::as_str).collect();
            objects_body(&tags).len()
        };
        assert!(body(TAGS_PER_REQUEST) <= MAX_BODY_BYTES);
        assert!(
            body(TAGS_PER_REQUEST + 1) > MAX_BODY_BYTES,
            "no smaller than needed"
        );
        let p = AkamaiPurge::new(reqwest::Client::new(), settings(&complete()).unwrap());
        assert_eq!(p.batch_size(Scope::Tags), TAGS_PER_REQUEST);
        assert_eq!(objects_body(&["a", "b"]), br#"{"objects":["a","b"]}"#);
    }

    #[test]
    fn the_estimate_for_tags_is_paced_by_the_tag_bucket() {
        let mut v = complete();
        // A base URL of its own, so no other test's pacer has taken tokens.
        v.insert("akamai_base_url".into(), "http://127.0.0.1:7/".into());
        let config = PurgeConfig::default();
        let model = AkamaiKind.model_for(Scope::Tags, &v, &config, None);
        let Sending::Paced {
            per_request, urls, ..
        } = model.sending
        else {
            panic!("{model:?}");
        };
        assert_eq!(per_request, TAGS_PER_REQUEST);
        assert_eq!(
            urls,
            Some(Bucket {
                burst: 5_000.0,
                per_second: 500.0 / 60.0
            })
        );
        // 12,000 tags: 7,000 beyond the burst at 500/min take 14 minutes.
        let ms = model.millis(0, 12_000);
        assert!((840_000.0..850_000.0).contains(&ms), "{ms}");
        // URLs keep their own model.
        let urls_model = AkamaiKind.model_for(Scope::Urls, &v, &config, None);
        assert_eq!(urls_model, AkamaiKind.model(&v, &config, None));
    }

    #[test]
    fn problem_answers_are_shown_in_akamais_words() {
        let body = r#"{"httpStatus":403,"supportId":"edcp-X","title":"unauthorized arl","detail":"http://a.example/","describedBy":"https://techdocs.akamai.com/purge-cache/reference/api-errors"}"#;
        let a = Answer::parse(body);
        assert_eq!(
            a.words(reqwest::StatusCode::FORBIDDEN, body),
            "Akamai 403 Forbidden: unauthorized arl — http://a.example/ (support id edcp-X)"
        );
        assert_eq!(
            Answer::parse("oops").words(reqwest::StatusCode::BAD_GATEWAY, "oops"),
            "Akamai 502 Bad Gateway: oops"
        );
        let ok = Answer::parse(
            r#"{"detail":"Request accepted","estimatedSeconds":5,"httpStatus":201,"purgeId":"p1","supportId":"s1"}"#,
        );
        assert_eq!(
            (ok.purge_id.as_deref(), ok.estimated_seconds),
            (Some("p1"), Some(5))
        );
    }

    fn assert_close_f(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-6, "{a} is not {b}");
    }

    fn assert_close(d: Duration, secs: f64) {
        assert!(
            (d.as_secs_f64() - secs).abs() < 1e-6,
            "{d:?} is not {secs} s"
        );
    }

    #[test]
    fn rate_headers_give_the_wait_until_the_request_fits() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("X-Ratelimit-Remaining", "99"),
            ("X-Ratelimit-Limit-Per-Second", "50"),
            ("X-Ratelimit-Seconds-To-Refresh-Limit", "0.02"),
            ("X-Ratelimit-Remaining-Objects", "94"),
            ("X-Ratelimit-Limit-Per-Second-Objects", "200"),
            ("X-Ratelimit-Seconds-To-Refresh-Limit-Objects", "49.53"),
        ] {
            h.insert(k, v.parse().unwrap());
        }
        let r = RateHeaders::read(&h);
        // 110 URLs asked, 94 left: 16 more at 200/s.
        assert_close(r.wait_for(110).unwrap(), 0.08);
        let only_refresh = RateHeaders {
            seconds_to_refresh_objects: Some(3.0),
            ..RateHeaders::default()
        };
        assert_eq!(only_refresh.wait_for(10), Some(Duration::from_secs(3)));
        assert_eq!(RateHeaders::default().wait_for(10), None);
    }

    #[test]
    fn buckets_burst_then_refill_at_the_documented_rates() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = Buckets::full(Rates::documented(), t0);
        assert_eq!(
            b.wait_for(Objects::Urls, 10_000.0),
            Wait::For(Duration::ZERO)
        );
        let taken = b.take(Objects::Urls, 10_000.0);
        b.answered(t0, taken);
        // 1,000 more URLs need 5 s at 200/s.
        assert_eq!(b.wait_for(Objects::Urls, 1_000.0), Wait::For(ms(5_000)));
        b.refill(t0 + ms(5_000));
        assert_eq!(
            b.wait_for(Objects::Urls, 1_000.0),
            Wait::For(Duration::ZERO)
        );
        // 100 requests in a burst, then 50/s.
        let mut b = Buckets::full(Rates::documented(), t0);
        for _ in 0..100 {
            assert_eq!(b.wait_for(Objects::Urls, 1.0), Wait::For(Duration::ZERO));
            let taken = b.take(Objects::Urls, 1.0);
            b.answered(t0, taken);
        }
        assert_eq!(b.wait_for(Objects::Urls, 1.0), Wait::For(ms(20)));
        // A 429's headers lower what we think is left; they never raise it.
        let mut b = Buckets::full(Rates::documented().scaled(10.0), t0);
        let rate = RateHeaders {
            remaining: Some(100.0),
            remaining_objects: Some(0.0),
            ..RateHeaders::default()
        };
        b.sync(t0, Objects::Urls, &rate);
        assert_eq!(b.urls, 0.0);
        assert_eq!(b.requests, 100.0);
        assert_eq!(b.wait_for(Objects::Urls, 2_000.0), Wait::For(ms(1_000)));
        assert_eq!(b.tags, 5_000.0, "a URL 429 says nothing of the tag bucket");
    }

    #[test]
    fn tags_have_their_own_bucket_and_share_the_requests_one() {
        let t0 = Instant::now();
        let mut b = Buckets::full(Rates::documented(), t0);
        // 5,000 in a burst, URLs untouched.
        assert_eq!(
            b.wait_for(Objects::Tags, 5_000.0),
            Wait::For(Duration::ZERO)
        );
        let taken = b.take(Objects::Tags, 5_000.0);
        b.answered(t0, taken);
        assert_eq!(b.urls, 10_000.0);
        assert_eq!(b.wait_for(Objects::Urls, 500.0), Wait::For(Duration::ZERO));
        // Then 500/min: 381 tags need 45.72 s.
        let Wait::For(wait) = b.wait_for(Objects::Tags, 381.0) else {
            panic!("refill is enough")
        };
        assert_close(wait, 45.72);
        b.refill(t0 + Duration::from_secs(60));
        assert_close_f(b.tags, 500.0);
        // The requests bucket is shared: a request of either kind takes a request token.
        let now = t0 + Duration::from_secs(60);
        let taken = b.take(Objects::Tags, 1.0);
        b.answered(now, taken);
        let taken = b.take(Objects::Urls, 1.0);
        b.answered(now, taken);
        assert_close_f(b.requests, 98.0);
        // A tag 429 lowers the tag bucket only.
        let rate = RateHeaders {
            remaining_objects: Some(10.0),
            ..RateHeaders::default()
        };
        b.sync(t0 + Duration::from_secs(60), Objects::Tags, &rate);
        assert_eq!((b.tags, b.urls), (10.0, 9_999.0));
        // Sped up for benchmarks and simulators, tags refill as much faster as the rest.
        let fast = Rates::documented().scaled(60.0);
        assert_close_f(fast.tags_per_second, 500.0);
        assert_close_f(fast.urls_per_second, 12_000.0);
        assert_eq!(fast.tag_burst, 5_000.0);
    }

    #[test]
    fn tokens_leave_the_buckets_when_answered_so_a_full_bucket_loses_the_transit_time() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = Buckets::full(Rates::documented(), t0);
        // Taken from full buckets: reserved, so no other request can have them…
        let first = b.take(Objects::Urls, 6_000.0);
        assert_eq!(
            b.wait_for(Objects::Urls, 4_000.0),
            Wait::For(Duration::ZERO)
        );
        let second = b.take(Objects::Urls, 4_000.0);
        // …and while both are in flight the full bucket cannot make room by refill: the next
        // request waits for an answer, not for a time.
        b.refill(t0 + ms(400));
        assert_eq!(b.wait_for(Objects::Urls, 1.0), Wait::Answer);
        assert_eq!(
            b.urls, 10_000.0,
            "a full bucket stays full while Akamai's may be"
        );
        // Answered 400 ms later: Akamai's bucket sat full until they arrived, so ours counts
        // no refill for the transit time and refills from the answer on.
        b.answered(t0 + ms(400), first);
        b.answered(t0 + ms(400), second);
        assert_close_f(b.urls, 0.0);
        assert_eq!(b.wait_for(Objects::Urls, 200.0), Wait::For(ms(1_000)));
        // Below the cap, the transit time costs nothing: the bucket refills meanwhile.
        b.refill(t0 + ms(1_400));
        let third = b.take(Objects::Urls, 100.0);
        assert_close_f(b.available(Objects::Urls).1, 100.0);
        b.answered(t0 + ms(1_900), third);
        assert_close_f(b.urls, 200.0);
        // The requests bucket likewise: 100 requests in flight from full leave nothing free.
        let mut b = Buckets::full(Rates::documented(), t0);
        let held: Vec<Taken> = (0..100).map(|_| b.take(Objects::Urls, 1.0)).collect();
        assert_eq!(b.wait_for(Objects::Urls, 1.0), Wait::Answer);
        b.answered(t0 + ms(1_000), held[0]);
        assert_eq!(b.wait_for(Objects::Urls, 1.0), Wait::For(ms(20)));
    }

    #[tokio::test]
    async fn one_pacer_per_base_url_is_shared() {
        let rates = Rates::documented().scaled(1000.0);
        let a = Pacer::shared("http://127.0.0.1:1/", rates);
        let b = Pacer::shared("http://127.0.0.1:1/", rates);
        let c = Pacer::shared("http://127.0.0.1:2/", rates);
        assert!(Arc::ptr_eq(&a, &b) && !Arc::ptr_eq(&a, &c));
        // 10,000 burst then 200,000/s: 30,000 URLs take at least 0.1 s.
        let start = Instant::now();
        for _ in 0..30 {
            a.acquire(Objects::Urls, 1_000).await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(99), "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_request_waiting_for_reserved_tokens_goes_when_one_is_answered() {
        let a = Pacer::shared("http://127.0.0.1:3/", Rates::documented());
        let held: Vec<Hold<'_>> = hold_tokens(&a, 100).await;
        let waiting = a.acquire(Objects::Urls, 1);
        tokio::pin!(waiting);
        let early = tokio::time::timeout(Duration::from_millis(50), &mut waiting).await;
        assert!(
            early.is_err(),
            "no token is free while 100 requests are in flight"
        );
        drop(held);
        let went = tokio::time::timeout(Duration::from_secs(1), &mut waiting).await;
        assert!(went.is_ok(), "the answers wake the waiting request");
    }

    async fn hold_tokens(pacer: &Pacer, n: usize) -> Vec<Hold<'_>> {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(pacer.acquire(Objects::Urls, 1).await);
        }
        held
    }
}
