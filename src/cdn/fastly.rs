//! Fastly: `POST /purge/{host}{path?query}` per URL with a `Fastly-Key` API token; with a
//! service ID, also `POST /service/{id}/purge` for up to 256 surrogate keys (cache tags) and
//! `POST /service/{id}/purge_all` for everything.
//!
//! The URL form is the one Fastly made the default in 2022 in place of `PURGE` sent to the URL
//! itself. Each request purges everywhere within about 150 ms, so there is nothing to poll. A
//! soft purge (`Fastly-Soft-Purge: 1`) marks objects stale instead of removing them; purge-all
//! cannot be soft (fastly/fastly-js `docs/PurgeApi.md`).

use super::{
    Attempt, Batch, BoxFuture, Context, Field, FieldError, FieldKind, Measured, Model, OVERHEAD_MS,
    ProviderKind, PurgeConfig, PurgeResult, Purger, Receipt, Scope, Sending, TagRules, Values,
    body_excerpt, describe_error, parse_base_url, refused, retry_after, status_text, value,
};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use url::Url;

/// Round trip assumed for an API request before one has been measured.
const UNMEASURED_REQUEST_MS: f64 = 200.0;

/// Most surrogate keys Fastly takes in one batch purge request.
const KEYS_PER_REQUEST: usize = 256;
/// What reading and recording one key of a batch's answer costs the app (milliseconds),
/// measured by `cargo bench --bench estimate_accuracy` (1,000 keys: about 25 ms beyond the
/// round trip on a 2-core machine).
const KEY_RECORD_MS: f64 = 0.025;
/// Longest surrogate key, in bytes (Fastly's `Surrogate-Key` header reference).
const MAX_KEY_BYTES: usize = 1024;

/// Fastly's purge API, by URL, and by surrogate key or everything when a service is named.
pub struct FastlyKind;

const DEFAULT_BASE: &str = "https://api.fastly.com";
const SOFT_PURGE: &[(&str, &str)] = &[
    ("off", "Off: remove the object from cache"),
    ("on", "On: soft purge (mark the object stale)"),
];

const FIELDS: &[Field] = &[
    Field {
        name: "fastly_base_url",
        label: "API base URL",
        help: "Fastly's API endpoint. Change it only to point at a test server.",
        kind: FieldKind::Text,
        default: DEFAULT_BASE,
        docs: "",
    },
    Field {
        name: "fastly_api_token",
        label: "API token",
        help: "A Fastly API token with the purge_select scope (purge by URL and surrogate key).",
        kind: FieldKind::Secret,
        default: "",
        docs: "",
    },
    Field {
        name: "fastly_service_id",
        label: "Service ID",
        help: "The Fastly service that serves the images. Needed to purge by surrogate key (cache tag) \
               or to purge everything; leave empty to purge by URL only. Purging everything also needs \
               the token's purge_all scope.",
        kind: FieldKind::Text,
        default: "",
        docs: "",
    },
    Field {
        name: "fastly_soft_purge",
        label: "Soft purge",
        help: "A soft purge marks objects stale, so Fastly can still serve them if the origin is down \
               (stale-if-error) while it fetches fresh copies.",
        kind: FieldKind::Choice(SOFT_PURGE),
        default: "off",
        docs: "",
    },
];

/// Validated settings.
struct Settings {
    base: String,
    token: String,
    soft: bool,
    /// Names the service for surrogate-key purges and purge-all; `None`: by URL only.
    service: Option<String>,
}

fn parse(values: &Values) -> Result<Settings, Vec<FieldError>> {
    let kind = &FastlyKind;
    let mut errors = Vec::new();
    let base = match parse_base_url(value(kind, values, "fastly_base_url")) {
        Ok(url) => url.as_str().trim_end_matches('/').to_string(),
        Err(message) => {
            errors.push(FieldError {
                field: "fastly_base_url",
                message,
            });
            String::new()
        }
    };
    let token = value(kind, values, "fastly_api_token").trim().to_string();
    if token.is_empty() {
        errors.push(FieldError {
            field: "fastly_api_token",
            message: "Enter an API token.".into(),
        });
    }
    let soft = match value(kind, values, "fastly_soft_purge") {
        "on" => true,
        "off" => false,
        other => {
            errors.push(FieldError {
                field: "fastly_soft_purge",
                message: format!("\"{other}\" is not a choice: pick on or off."),
            });
            false
        }
    };
    let service = service_id(values).unwrap_or_else(|error| {
        errors.push(error);
        None
    });
    if errors.is_empty() {
        Ok(Settings {
            base,
            token,
            soft,
            service,
        })
    } else {
        Err(errors)
    }
}

/// The service ID setting: `None` when empty. Fastly's IDs are letters and digits; anything
/// else would change the request's path.
fn service_id(values: &Values) -> Result<Option<String>, FieldError> {
    let service = value(&FastlyKind, values, "fastly_service_id").trim();
    if !service.bytes().all(|b| b.is_ascii_alphanumeric()) || service.len() > 64 {
        return Err(FieldError {
            field: "fastly_service_id",
            message: format!(
                "\"{service}\" is not a Fastly service ID: copy the letters and digits shown for the service."
            ),
        });
    }
    Ok((!service.is_empty()).then(|| service.to_string()))
}

impl ProviderKind for FastlyKind {
    fn name(&self) -> &'static str {
        "fastly"
    }

    fn short_name(&self) -> &'static str {
        "Fastly"
    }

    fn label(&self) -> &'static str {
        "Fastly (purge by URL or surrogate key through the API)"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn validate(&self, values: &Values) -> Vec<FieldError> {
        parse(values).err().unwrap_or_default()
    }

    fn describe(&self, values: &Values) -> String {
        let service = value(self, values, "fastly_service_id").trim();
        let mut notes = Vec::new();
        if !service.is_empty() {
            notes.push(format!("service {service}"));
        }
        if value(self, values, "fastly_soft_purge") == "on" {
            notes.push("soft purge".to_string());
        }
        let what = if service.is_empty() {
            "Fastly API purge by URL"
        } else {
            "Fastly API purge by URL or surrogate key"
        };
        if notes.is_empty() {
            what.to_string()
        } else {
            format!("{what} ({})", notes.join(", "))
        }
    }

    /// Surrogate keys and purge-all go to a service: offered only when one is named. (Asked
    /// of snapshots too, which hold no token: only the service ID is looked at.)
    fn scopes(&self, values: &Values) -> Vec<Scope> {
        match service_id(values) {
            Ok(Some(_)) => vec![Scope::Tags, Scope::Everything],
            _ => Vec::new(),
        }
    }

    /// Keys are space-separated in `Surrogate-Key`, each at most 1,024 bytes; commas are
    /// refused too, as in every tag header this app knows, so one origin header fits all.
    fn tag_rules(&self) -> TagRules {
        TagRules::header_list("Fastly", MAX_KEY_BYTES)
    }

    /// Surrogate keys: requests of 256 keys, `concurrency` at once, not rate-limited.
    /// Everything: one request whatever the sites (it clears the service).
    fn model_for(
        &self,
        scope: Scope,
        values: &Values,
        config: &PurgeConfig,
        measured: Option<Measured>,
    ) -> Model {
        let round_trip_ms = measured.map_or(UNMEASURED_REQUEST_MS, |m| m.request_ms);
        let (connections, batch) = match scope {
            Scope::Tags => (config.concurrency.max(1), KEYS_PER_REQUEST),
            Scope::Everything => (1, usize::MAX),
            Scope::Urls | Scope::Prefixes => return self.model(values, config, measured),
        };
        // Each key's purge id is read from the answer and recorded before the next request of
        // its connection: one writer for all, so the cost is spread over the shares.
        let per_key_ms = KEY_RECORD_MS * connections as f64;
        Model {
            sending: Sending::Streams {
                connections,
                batch,
                round_trip_ms,
                per_url_ms: if scope == Scope::Tags {
                    per_key_ms
                } else {
                    0.0
                },
            },
            clearing_ms: 0.0,
            overhead_ms: OVERHEAD_MS,
        }
    }

    /// One request per URL, `concurrency` at once. Fastly's answer is the purge: it documents
    /// global propagation in about 150 ms ("instant"), which the app does not wait for, so the
    /// estimate ends with the last answer too.
    fn model(&self, _values: &Values, config: &PurgeConfig, measured: Option<Measured>) -> Model {
        Model {
            sending: Sending::Streams {
                connections: config.concurrency.max(1),
                batch: 1,
                round_trip_ms: measured.map_or(UNMEASURED_REQUEST_MS, |m| m.request_ms),
                per_url_ms: 0.0,
            },
            clearing_ms: 0.0,
            overhead_ms: OVERHEAD_MS,
        }
    }

    fn build(&self, values: &Values, ctx: &Context) -> anyhow::Result<Box<dyn Purger>> {
        let settings = parse(values).map_err(|e| anyhow::anyhow!("{}", e[0].message))?;
        Ok(Box::new(Fastly {
            client: ctx.client.clone(),
            settings,
        }))
    }
}

/// Sends one purge request per URL.
pub struct Fastly {
    client: reqwest::Client,
    settings: Settings,
}

impl std::fmt::Debug for Fastly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fastly")
            .field("base", &self.settings.base)
            .field("api_token", &"<redacted>")
            .field("soft", &self.settings.soft)
            .field("service", &self.settings.service)
            .finish()
    }
}

/// `{base}/purge/{host[:port]}{path}[?query]`: Fastly's `cached_url` is the URL without its scheme.
fn purge_endpoint(base: &str, url: &Url) -> Result<String, String> {
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    let cached_url = &url[url::Position::BeforeHost..url::Position::AfterQuery];
    Ok(format!("{base}/purge/{cached_url}"))
}

/// Fastly's success answer `{"status":"ok","id":"…"}` and error answer `{"msg":"…","detail":"…"}`.
#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

/// "Fastly 401 Unauthorized: Provided credentials are missing or invalid — <detail>".
fn describe_answer(status: StatusCode, answer: Option<&Answer>, body: &str) -> String {
    let msg = answer.and_then(|a| a.msg.as_deref()).map(str::trim);
    let detail = answer.and_then(|a| a.detail.as_deref()).map(str::trim);
    let words = match (msg, detail) {
        (Some(m), Some(d)) if !d.is_empty() && d != m => format!("{m} — {d}"),
        (Some(m), _) if !m.is_empty() => m.to_string(),
        (_, Some(d)) if !d.is_empty() => d.to_string(),
        _ => body_excerpt(body).unwrap_or_else(|| "no details given".into()),
    };
    format!("Fastly {}: {words}", status_text(status))
}

/// The wait Fastly asks for: `Retry-After`, else until `Fastly-RateLimit-Reset` (UTC epoch seconds).
fn fastly_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(wait) = retry_after(headers) {
        return Some(wait);
    }
    let reset: u64 = headers
        .get("fastly-ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let now = now.duration_since(UNIX_EPOCH).ok()?;
    Some(Duration::from_secs(reset).saturating_sub(now))
}

/// What one answer to a purge request of `n` URLs (one, in practice) means.
fn interpret(status: StatusCode, wait: Option<Duration>, body: &str, n: usize) -> PurgeResult {
    let answer = serde_json::from_str::<Answer>(body).ok();
    let code = Some(status.as_u16());
    if status.is_success()
        && let Some(a) = answer
            .as_ref()
            .filter(|a| a.status.as_deref() == Some("ok"))
    {
        return PurgeResult::all(
            n,
            Attempt::Done {
                http_status: code,
                note: None,
            },
            Some(Receipt {
                provider_id: a.id.clone(),
                ..Receipt::default()
            }),
        );
    }
    let reason = describe_answer(status, answer.as_ref(), body);
    PurgeResult::all(n, refused(status, reason, wait), None)
}

/// What one answer to a batch surrogate-key purge of `keys` means: Fastly maps each key it
/// purged to a purge id (`{"key_1":"108-…","key_2":"108-…"}`); a key missing from the map
/// was not purged and goes again. The batch keeps the first key's purge id.
fn interpret_keys(
    status: StatusCode,
    wait: Option<Duration>,
    body: &str,
    keys: &[&str],
) -> PurgeResult {
    let code = Some(status.as_u16());
    let ids = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body)
        .ok()
        .filter(|_| status.is_success());
    let Some(ids) = ids else {
        let answer = serde_json::from_str::<Answer>(body).ok();
        let reason = describe_answer(status, answer.as_ref(), body);
        return PurgeResult::all(keys.len(), refused(status, reason, wait), None);
    };
    let id_of = |key: &str| ids.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let attempts = keys
        .iter()
        .map(|key| match id_of(key) {
            Some(_) => Attempt::Done {
                http_status: code,
                note: None,
            },
            None => Attempt::Retry {
                http_status: code,
                reason: format!("Fastly's answer has no purge id for surrogate key \"{key}\""),
                retry_after: None,
            },
        })
        .collect();
    PurgeResult {
        attempts,
        receipt: Some(Receipt {
            provider_id: keys.iter().find_map(|k| id_of(k)),
            ..Receipt::default()
        }),
    }
}

/// What one answer to `purge_all` for `n` sites means; a 403 is most often a token without
/// the purge_all scope, which Fastly's own words do not say.
fn interpret_all(status: StatusCode, wait: Option<Duration>, body: &str, n: usize) -> PurgeResult {
    let mut result = interpret(status, wait, body, n);
    if status == StatusCode::FORBIDDEN {
        for attempt in &mut result.attempts {
            if let Attempt::Fail { reason, .. } = attempt {
                reason
                    .push_str(" (purging everything needs an API token with the purge_all scope)");
            }
        }
    }
    result
}

/// What `GET /tokens/self` says about the token, as a sentence; `Err` when it cannot purge URLs
/// or, with a `service` set, is limited to other services.
fn judge_token(body: &str, service: Option<&str>) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Token {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        scope: Option<String>,
        #[serde(default)]
        services: Option<Vec<String>>,
        #[serde(default)]
        expires_at: Option<String>,
    }
    let token: Token = serde_json::from_str(body).map_err(|e| {
        format!("Fastly answered GET /tokens/self with something unexpected ({e}).")
    })?;
    let name = token.name.as_deref().unwrap_or("(unnamed)");
    // Fastly's default scope is global.
    let scope = token.scope.as_deref().unwrap_or("global");
    let services = match token.services.as_deref() {
        None | Some([]) => "all services".to_string(),
        Some(list) => format!("services {}", list.join(", ")),
    };
    let expires = token
        .expires_at
        .as_deref()
        .map(|e| format!(", expires {e}"))
        .unwrap_or_default();
    let about = format!("token \"{name}\" (scope: {scope}; {services}{expires})");
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if let (Some(service), Some(list)) = (service, token.services.as_deref())
        && !list.is_empty()
        && !list.iter().any(|s| s == service)
    {
        return Err(format!(
            "Fastly accepted the API {about}, but it may not purge service {service}. Create a \
             token for that service, or correct the service ID."
        ));
    }
    // Purge-all needs its own scope (a global token's user role decides).
    let everything = match service {
        Some(_) if !scopes.contains(&"purge_all") && !scopes.contains(&"global") => {
            " It lacks the purge_all scope, so Fastly will refuse to purge everything."
        }
        _ => "",
    };
    let what = if service.is_some() {
        "by URL and surrogate key"
    } else {
        "by URL"
    };
    if scopes.contains(&"purge_select") {
        Ok(format!(
            "Fastly accepted the API {about}; it may purge {what}.{everything}"
        ))
    } else if scopes.contains(&"global") {
        Ok(format!(
            "Fastly accepted the API {about}. A global token purges if its user's role allows it; \
             a token with only the purge_select scope is safer."
        ))
    } else {
        Err(format!(
            "Fastly accepted the API {about}, but its scope lacks purge_select, so Fastly will refuse \
             URL purges. Create a token with the purge_select scope."
        ))
    }
}

/// What one POST came to: the status, the wait Fastly asked for, the body.
type Answered = (StatusCode, Option<Duration>, String);

impl Fastly {
    /// POSTs to `endpoint` with the token, a JSON `body` when given, and the soft-purge
    /// header when `soft`.
    async fn post(
        &self,
        endpoint: String,
        body: Option<Vec<u8>>,
        soft: bool,
    ) -> Result<Answered, Attempt> {
        let mut request = self
            .client
            .post(endpoint)
            .header("Fastly-Key", &self.settings.token)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if soft {
            request = request.header("Fastly-Soft-Purge", "1");
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let wait = fastly_wait(response.headers(), SystemTime::now());
                let body = response.text().await.unwrap_or_default();
                Ok((status, wait, body))
            }
            Err(e) => Err(Attempt::Retry {
                http_status: None,
                reason: describe_error(&e),
                retry_after: None,
            }),
        }
    }

    /// `{base}/service/{id}/{what}`, or why there is none.
    fn service_endpoint(&self, what: &str) -> Result<String, Attempt> {
        match &self.settings.service {
            Some(id) => Ok(format!("{}/service/{id}/{what}", self.settings.base)),
            None => Err(Attempt::Fail {
                http_status: None,
                reason: "no Fastly service ID is set: an admin enters it in Settings".into(),
            }),
        }
    }

    async fn purge_url(&self, urls: &[Url]) -> PurgeResult {
        let n = urls.len();
        let fail = |reason: String| {
            let attempt = Attempt::Fail {
                http_status: None,
                reason,
            };
            PurgeResult::all(n, attempt, None)
        };
        let [url] = urls else {
            // One URL per request: several would be a framework bug, not Fastly's answer.
            return fail(format!("Fastly purges one URL per request, not {n}"));
        };
        let endpoint = match purge_endpoint(&self.settings.base, url) {
            Ok(e) => e,
            Err(reason) => return fail(reason),
        };
        match self.post(endpoint, None, self.settings.soft).await {
            Ok((status, wait, body)) => interpret(status, wait, &body, n),
            Err(attempt) => PurgeResult::all(n, attempt, None),
        }
    }

    /// One batch surrogate-key purge of the keys that follow Fastly's rules; a key that does
    /// not fails alone, with the reason.
    async fn purge_keys(&self, keys: &[String]) -> PurgeResult {
        let rules = FastlyKind.tag_rules();
        super::purge_following_rules(keys, &rules, "surrogate key", |valid| async move {
            let body = serde_json::to_vec(&serde_json::json!({ "surrogate_keys": valid }))
                .expect("strings serialise");
            match self.service_endpoint("purge") {
                Err(attempt) => PurgeResult::all(valid.len(), attempt, None),
                Ok(endpoint) => match self.post(endpoint, Some(body), self.settings.soft).await {
                    Ok((status, wait, body)) => interpret_keys(status, wait, &body, &valid),
                    Err(attempt) => PurgeResult::all(valid.len(), attempt, None),
                },
            }
        })
        .await
    }

    /// `purge_all` once for every site of the batch: it clears the whole service. Never soft:
    /// Fastly cannot soft-purge everything.
    async fn purge_everything(&self, n: usize) -> PurgeResult {
        let endpoint = match self.service_endpoint("purge_all") {
            Ok(e) => e,
            Err(attempt) => return PurgeResult::all(n, attempt, None),
        };
        match self.post(endpoint, None, false).await {
            Ok((status, wait, body)) => interpret_all(status, wait, &body, n),
            Err(attempt) => PurgeResult::all(n, attempt, None),
        }
    }
}

impl Purger for Fastly {
    fn batch_sizes(&self, urls: &[Url]) -> Vec<usize> {
        vec![1; urls.len()]
    }

    /// 256 surrogate keys per request; every site in one purge-all.
    fn batch_size(&self, scope: Scope) -> usize {
        match scope {
            Scope::Tags => KEYS_PER_REQUEST,
            Scope::Everything => usize::MAX,
            Scope::Urls | Scope::Prefixes => 1,
        }
    }

    fn purge<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, PurgeResult> {
        Box::pin(async move {
            match batch.scope {
                Scope::Urls => self.purge_url(&batch.urls).await,
                Scope::Tags => self.purge_keys(&batch.tags).await,
                Scope::Everything => self.purge_everything(batch.len()).await,
                Scope::Prefixes => super::unsupported(batch, "Fastly"),
            }
        })
    }

    /// `GET /tokens/self`: a read that changes nothing and describes the token, scope included.
    fn test_connection(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let response = self
                .client
                .get(format!("{}/tokens/self", self.settings.base))
                .header("Fastly-Key", &self.settings.token)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| {
                    format!("Fastly's API could not be reached: {}.", describe_error(&e))
                })?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            if !status.is_success() {
                let answer = serde_json::from_str::<Answer>(&body).ok();
                return Err(format!(
                    "Fastly rejected the API token: {}.",
                    describe_answer(status, answer.as_ref(), &body)
                ));
            }
            judge_token(&body, self.settings.service.as_deref())
        })
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

    #[test]
    fn settings_need_a_token_and_a_known_choice() {
        let errors = FastlyKind.validate(&values(&[("fastly_soft_purge", "maybe")]));
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["fastly_api_token", "fastly_soft_purge"]);
        let s = parse(&values(&[("fastly_api_token", "k")])).ok().unwrap();
        assert_eq!(s.base, "https://api.fastly.com");
        assert!(!s.soft);
        assert_eq!(
            FastlyKind.describe(&values(&[("fastly_soft_purge", "on")])),
            "Fastly API purge by URL (soft purge)"
        );
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        let f = Fastly {
            client: reqwest::Client::new(),
            settings: parse(&values(&[("fastly_api_token", "very-secret-key")]))
                .ok()
                .unwrap(),
        };
        assert!(!format!("{f:?}").contains("very-secret-key"));
    }

    #[test]
    fn the_endpoint_is_the_url_without_its_scheme() {
        let at = |u: &str| purge_endpoint("https://api.fastly.com", &Url::parse(u).unwrap());
        assert_eq!(
            at("https://www.example.com/is/image/a%20b?$p$&wid=10").unwrap(),
            "https://api.fastly.com/purge/www.example.com/is/image/a%20b?$p$&wid=10"
        );
        assert_eq!(
            at("http://user@www.example.com:8080/x").unwrap(),
            "https://api.fastly.com/purge/www.example.com:8080/x"
        );
    }

    #[test]
    fn success_is_done_with_the_purge_id() {
        let r = interpret(
            StatusCode::OK,
            None,
            r#"{"status":"ok","id":"108-1391560174-974124"}"#,
            1,
        );
        assert!(matches!(
            r.attempts[0],
            Attempt::Done {
                http_status: Some(200),
                ..
            }
        ));
        assert_eq!(
            r.receipt.unwrap().provider_id.as_deref(),
            Some("108-1391560174-974124")
        );
    }

    #[test]
    fn errors_are_shown_in_fastlys_words() {
        let r = interpret(
            StatusCode::UNAUTHORIZED,
            None,
            r#"{"msg":"Provided credentials are missing or invalid"}"#,
            1,
        );
        assert_eq!(
            r.attempts[0],
            Attempt::Fail {
                http_status: Some(401),
                reason: "Fastly 401 Unauthorized: Provided credentials are missing or invalid"
                    .into()
            }
        );
        let r = interpret(
            StatusCode::BAD_REQUEST,
            None,
            r#"{"msg":"Bad request","detail":"Invalid URL"}"#,
            1,
        );
        assert!(
            matches!(&r.attempts[0], Attempt::Fail { reason, .. } if reason == "Fastly 400 Bad Request: Bad request — Invalid URL")
        );
        let r = interpret(StatusCode::SERVICE_UNAVAILABLE, None, "", 1);
        assert!(
            matches!(&r.attempts[0], Attempt::Retry { reason, .. } if reason == "Fastly 503 Service Unavailable: no details given")
        );
    }

    #[test]
    fn the_wait_comes_from_retry_after_or_the_rate_limit_reset() {
        let now = UNIX_EPOCH + Duration::from_secs(1_452_032_000);
        let mut h = HeaderMap::new();
        h.insert("fastly-ratelimit-reset", "1452032384".parse().unwrap());
        assert_eq!(fastly_wait(&h, now), Some(Duration::from_secs(384)));
        h.insert("retry-after", "5".parse().unwrap());
        assert_eq!(fastly_wait(&h, now), Some(Duration::from_secs(5)));
        assert_eq!(fastly_wait(&HeaderMap::new(), now), None);
        // A reset already past means "now".
        let mut h = HeaderMap::new();
        h.insert("fastly-ratelimit-reset", "1".parse().unwrap());
        assert_eq!(fastly_wait(&h, now), Some(Duration::ZERO));
    }

    #[test]
    fn a_token_without_purge_select_is_refused() {
        let ok = judge_token(
            r#"{"name":"cdn-invalidator","scope":"purge_select","services":[]}"#,
            None,
        )
        .unwrap();
        assert!(
            ok.contains("\"cdn-invalidator\"") && ok.contains("all services"),
            "{ok}"
        );
        assert!(judge_token(r#"{"name":"g","scope":"global"}"#, None).is_ok());
        let err =
            judge_token(r#"{"name":"ro","scope":"global:read purge_all"}"#, None).unwrap_err();
        assert!(err.contains("lacks purge_select"), "{err}");
    }
    #[test]
    fn a_service_id_offers_surrogate_keys_and_everything() {
        let token = ("fastly_api_token", "k");
        assert!(FastlyKind.scopes(&values(&[token])).is_empty());
        // Snapshots hold no token: the service ID alone decides.
        let with = values(&[("fastly_service_id", "SU1Z0isxPaozGVKXdv0eY")]);
        assert_eq!(FastlyKind.scopes(&with), [Scope::Tags, Scope::Everything]);
        assert_eq!(
            FastlyKind.describe(&values(&[
                ("fastly_service_id", "SU1Z0isxPaozGVKXdv0eY"),
                ("fastly_soft_purge", "on")
            ])),
            "Fastly API purge by URL or surrogate key (service SU1Z0isxPaozGVKXdv0eY, soft purge)"
        );
        // Anything but letters and digits would change the request's path.
        let bad = values(&[token, ("fastly_service_id", "../tokens")]);
        let fields: Vec<&str> = FastlyKind.validate(&bad).iter().map(|e| e.field).collect();
        assert_eq!(fields, ["fastly_service_id"]);
        assert!(FastlyKind.scopes(&bad).is_empty());
    }

    #[test]
    fn surrogate_keys_have_no_whitespace_and_at_most_1024_bytes() {
        let rules = FastlyKind.tag_rules();
        assert!(rules.check("Company/Backpack_B").is_ok());
        assert!(rules.check(&"k".repeat(1024)).is_ok());
        assert!(
            rules
                .check(&"k".repeat(1025))
                .unwrap_err()
                .contains("Fastly accepts tags of at most 1024")
        );
        assert!(rules.check("a b").is_err());
        assert!(rules.check("a\tb").is_err());
    }

    #[test]
    fn each_key_is_done_only_when_fastlys_answer_lists_it() {
        let r = interpret_keys(
            StatusCode::OK,
            None,
            r#"{"a":"108-1-1","c":"108-1-3"}"#,
            &["a", "b", "c"],
        );
        assert!(matches!(r.attempts[0], Attempt::Done { .. }));
        assert!(
            matches!(&r.attempts[1], Attempt::Retry { reason, .. } if reason.contains("no purge id for surrogate key \"b\"")),
            "{:?}",
            r.attempts[1]
        );
        assert!(matches!(r.attempts[2], Attempt::Done { .. }));
        assert_eq!(r.receipt.unwrap().provider_id.as_deref(), Some("108-1-1"));
        let r = interpret_keys(
            StatusCode::BAD_REQUEST,
            None,
            r#"{"msg":"Bad request","detail":"Too many keys"}"#,
            &["a"],
        );
        assert_eq!(
            r.attempts,
            [Attempt::Fail {
                http_status: Some(400),
                reason: "Fastly 400 Bad Request: Bad request — Too many keys".into()
            }]
        );
    }

    #[test]
    fn a_forbidden_purge_all_names_the_scope_it_needs() {
        let r = interpret_all(StatusCode::FORBIDDEN, None, r#"{"msg":"Forbidden"}"#, 2);
        assert_eq!(r.attempts.len(), 2);
        assert!(
            matches!(&r.attempts[0], Attempt::Fail { reason, .. } if reason == "Fastly 403 Forbidden: Forbidden (purging everything needs an API token with the purge_all scope)"),
            "{:?}",
            r.attempts[0]
        );
        let ok = interpret_all(StatusCode::OK, None, r#"{"status":"ok"}"#, 2);
        assert!(
            ok.attempts
                .iter()
                .all(|a| matches!(a, Attempt::Done { .. }))
        );
    }

    #[test]
    fn a_token_for_other_services_or_without_purge_all_is_named() {
        let other = judge_token(
            r#"{"name":"t","scope":"purge_select","services":["OTHER"]}"#,
            Some("SVC"),
        )
        .unwrap_err();
        assert!(other.contains("may not purge service SVC"), "{other}");
        let ok = judge_token(
            r#"{"name":"t","scope":"purge_select","services":["SVC"]}"#,
            Some("SVC"),
        )
        .unwrap();
        assert!(ok.contains("by URL and surrogate key"), "{ok}");
        assert!(ok.contains("lacks the purge_all scope"), "{ok}");
        let all = judge_token(
            r#"{"name":"t","scope":"purge_select purge_all"}"#,
            Some("SVC"),
        )
        .unwrap();
        assert!(!all.contains("purge_all scope"), "{all}");
    }
}
