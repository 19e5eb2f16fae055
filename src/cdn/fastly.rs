//! Fastly: `POST /purge/{host}{path?query}` per URL with a `Fastly-Key` API token.
//!
//! This is the API form Fastly made the default in 2022 in place of `PURGE` sent to the URL
//! itself. Each request purges one URL, everywhere within about 150 ms, so there is nothing
//! to poll. A soft purge (`Fastly-Soft-Purge: 1`) marks the object stale instead of removing it.

use super::{
    Attempt, Batch, BoxFuture, Context, Field, FieldError, FieldKind, Measured, Model, OVERHEAD_MS,
    ProviderKind, PurgeConfig, PurgeResult, Purger, Receipt, Sending, Values, body_excerpt,
    describe_error, parse_base_url, refused, retry_after, status_text, value,
};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use url::Url;

/// Round trip assumed for an API request before one has been measured.
const UNMEASURED_REQUEST_MS: f64 = 200.0;

/// Fastly's purge API, by URL.
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
    if errors.is_empty() {
        Ok(Settings { base, token, soft })
    } else {
        Err(errors)
    }
}

impl ProviderKind for FastlyKind {
    fn name(&self) -> &'static str {
        "fastly"
    }

    fn short_name(&self) -> &'static str {
        "Fastly"
    }

    fn label(&self) -> &'static str {
        "Fastly (purge by URL through the API)"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn validate(&self, values: &Values) -> Vec<FieldError> {
        parse(values).err().unwrap_or_default()
    }

    fn describe(&self, values: &Values) -> String {
        if value(self, values, "fastly_soft_purge") == "on" {
            "Fastly API purge by URL (soft purge)".into()
        } else {
            "Fastly API purge by URL".into()
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

/// What `GET /tokens/self` says about the token, as a sentence; `Err` when it cannot purge URLs.
fn judge_token(body: &str) -> Result<String, String> {
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
    if scopes.contains(&"purge_select") {
        Ok(format!(
            "Fastly accepted the API {about}; it may purge by URL."
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

impl Purger for Fastly {
    fn batch_sizes(&self, urls: &[Url]) -> Vec<usize> {
        vec![1; urls.len()]
    }

    fn purge<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, PurgeResult> {
        Box::pin(async move {
            let n = batch.urls.len();
            let [url] = batch.urls.as_slice() else {
                // One URL per request: several would be a framework bug, not Fastly's answer.
                return PurgeResult::all(
                    n,
                    Attempt::Fail {
                        http_status: None,
                        reason: format!("Fastly purges one URL per request, not {n}"),
                    },
                    None,
                );
            };
            let endpoint = match purge_endpoint(&self.settings.base, url) {
                Ok(e) => e,
                Err(reason) => {
                    return PurgeResult::all(
                        n,
                        Attempt::Fail {
                            http_status: None,
                            reason,
                        },
                        None,
                    );
                }
            };
            let mut request = self
                .client
                .post(endpoint)
                .header("Fastly-Key", &self.settings.token)
                .header(reqwest::header::ACCEPT, "application/json");
            if self.settings.soft {
                request = request.header("Fastly-Soft-Purge", "1");
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let wait = fastly_wait(response.headers(), SystemTime::now());
                    let body = response.text().await.unwrap_or_default();
                    interpret(status, wait, &body, n)
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
            judge_token(&body)
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
        let ok = judge_token(r#"{"name":"cdn-invalidator","scope":"purge_select","services":[]}"#)
            .unwrap();
        assert!(
            ok.contains("\"cdn-invalidator\"") && ok.contains("all services"),
            "{ok}"
        );
        assert!(judge_token(r#"{"name":"g","scope":"global"}"#).is_ok());
        let err = judge_token(r#"{"name":"ro","scope":"global:read purge_all"}"#).unwrap_err();
        assert!(err.contains("lacks purge_select"), "{err}");
    }
}
