//! A loopback Akamai Fast Purge (CCU v3) that checks requests the way the real API does:
//! EdgeGrid signature (verified here independently of the app's signer), path, method,
//! `Content-Type`, body size and shape, URLs and cache tags by Akamai's rules, and the token
//! buckets of requests, URLs and tags (refused requests cost nothing), answering with Akamai's
//! documented bodies and `X-Ratelimit-*` headers.
//! Shared with `benches/akamai_pacing.rs`.
#![allow(dead_code)]

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use cdn_invalidator::cdn::Scope;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const CLIENT_TOKEN: &str = "akab-client-token-sim-0000000000000000";
pub const CLIENT_SECRET: &str = "c2ltdWxhdGVkLWNsaWVudC1zZWNyZXQtZm9yLXRlc3Rz=";
pub const ACCESS_TOKEN: &str = "akab-access-token-sim-0000000000000000";

const REQUEST_BURST: f64 = 100.0;
const REQUESTS_PER_SECOND: f64 = 50.0;
const URL_BURST: f64 = 10_000.0;
const URLS_PER_SECOND: f64 = 200.0;
const TAG_BURST: f64 = 5_000.0;
const TAGS_PER_SECOND: f64 = 500.0 / 60.0;
const MAX_TAG_LEN: usize = 128;
const TAG_PUNCTUATION: &str = "!#$%&'+-.^_`|~";
const MAX_BODY: usize = 50_000;
const PROBLEM: &str = "application/api-problem+json";

/// `[default]` of an `.edgerc` for this simulator's credentials.
pub fn edgerc(host: &str) -> String {
    format!(
        "[default]\nclient_secret = {CLIENT_SECRET}\nhost = {host}\naccess_token = {ACCESS_TOKEN}\nclient_token = {CLIENT_TOKEN}\n"
    )
}

/// One request as received, with the answer given.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub content_type: String,
    pub body_len: usize,
    /// The URLs or tags of a purge (the path says which).
    pub objects: Vec<String>,
    pub status: u16,
    /// The problem `title` of an error answer.
    pub title: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

struct State {
    scale: f64,
    requests: f64,
    urls: f64,
    tags: f64,
    at: Instant,
    nonces: HashSet<String>,
    received: Vec<Received>,
    unauthorized_hosts: Vec<String>,
    next_id: u64,
    /// Another client keeps the URL bucket empty until our next purge request has been refused.
    drained: bool,
    /// The same for the tag bucket.
    tags_drained: bool,
    /// What accepted purges answer as `estimatedSeconds` (Akamai documents 5).
    estimated_seconds: u64,
    /// Added to every answer: a real API is a round trip across the internet away.
    latency: std::time::Duration,
    /// The first `.0` requests to come in take `.1` more on the way there (a busy network
    /// or machine while connections open), so their tokens are taken that much later.
    slow_start: (usize, std::time::Duration),
    /// Requests come in so far.
    arrived: usize,
}

impl State {
    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.at).as_secs_f64() * self.scale;
        self.requests = (self.requests + dt * REQUESTS_PER_SECOND).min(REQUEST_BURST);
        self.urls = (self.urls + dt * URLS_PER_SECOND).min(URL_BURST);
        self.tags = (self.tags + dt * TAGS_PER_SECOND).min(TAG_BURST);
        self.at = now;
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-sim{:06}", self.next_id)
    }

    /// (tokens left, burst, refill per second unscaled) of the bucket `kind` draws on.
    fn objects(&self, kind: Kind) -> (f64, f64, f64) {
        match kind {
            Kind::Url => (self.urls, URL_BURST, URLS_PER_SECOND),
            Kind::Tag => (self.tags, TAG_BURST, TAGS_PER_SECOND),
        }
    }

    /// The documented `X-Ratelimit-*` headers, at the current time scale; the object headers
    /// are about the bucket `kind` draws on.
    fn rate_headers(&self, kind: Kind) -> Vec<(&'static str, String)> {
        let (left, burst, rate) = self.objects(kind);
        let per_second = REQUESTS_PER_SECOND * self.scale;
        let per_second_urls = rate * self.scale;
        vec![
            ("X-Ratelimit-Limit", format!("{REQUEST_BURST}")),
            (
                "X-Ratelimit-Remaining",
                format!("{}", self.requests.floor()),
            ),
            ("X-Ratelimit-Limit-Per-Second", format!("{per_second}")),
            (
                "X-Ratelimit-Seconds-To-Refresh-Limit",
                format!("{:.6}", (REQUEST_BURST - self.requests) / per_second),
            ),
            ("X-Ratelimit-Limit-Objects", format!("{burst}")),
            ("X-Ratelimit-Remaining-Objects", format!("{}", left.floor())),
            (
                "X-Ratelimit-Limit-Per-Second-Objects",
                format!("{per_second_urls}"),
            ),
            (
                "X-Ratelimit-Seconds-To-Refresh-Limit-Objects",
                format!("{:.6}", (burst - left) / per_second_urls),
            ),
        ]
    }
}

/// What a purge call names: URLs or cache tags (the status call counts as URLs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Url,
    Tag,
}

/// Akamai's cache tag rules: at most 128 characters, letters, digits and a few punctuation
/// marks (checked here apart from the app's copy of them).
fn tag_allowed(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || TAG_PUNCTUATION.contains(c))
}

#[derive(Clone)]
pub struct AkamaiSim {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

fn hmac_base64(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    BASE64.encode(mac.finalize().into_bytes())
}

/// Checks an EdgeGrid `Authorization` header the way Akamai does; `Err` is the problem detail.
fn verify(req: &HttpRequest, body: &[u8], nonces: &mut HashSet<String>) -> Result<(), String> {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .ok_or("Missing authorization header")?;
    let fields = header
        .strip_prefix("EG1-HMAC-SHA256 ")
        .ok_or("Invalid authorization header")?;
    let signature_at = header
        .find("signature=")
        .ok_or("Invalid authorization header")?;
    let unsigned = &header[..signature_at];
    let field = |name: &str| {
        fields
            .split(';')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_default()
    };
    if field("client_token") != CLIENT_TOKEN || field("access_token") != ACCESS_TOKEN {
        return Err("Invalid client token or access token".into());
    }
    let timestamp = field("timestamp");
    let format =
        time::macros::format_description!("[year][month][day]T[hour]:[minute]:[second]+0000");
    let when = time::PrimitiveDateTime::parse(timestamp, &format)
        .map_err(|_| "Invalid timestamp")?
        .assume_utc();
    if (time::OffsetDateTime::now_utc() - when).abs() > time::Duration::minutes(5) {
        return Err("Timestamp is outside the allowed clock skew".into());
    }
    let nonce = field("nonce");
    if nonce.is_empty() || !nonces.insert(nonce.to_string()) {
        return Err("Nonce is missing or was used before".into());
    }
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let content_hash = if req.method() == "POST" && !body.is_empty() {
        BASE64.encode(Sha256::digest(&body[..body.len().min(131_072)]))
    } else {
        String::new()
    };
    // method, scheme, host, path?query, signed headers (none), content hash, unsigned header
    let data = format!(
        "{}\thttp\t{host}\t{path_and_query}\t\t{content_hash}\t{unsigned}",
        req.method()
    );
    let key = hmac_base64(CLIENT_SECRET.as_bytes(), timestamp.as_bytes());
    let expected = hmac_base64(key.as_bytes(), data.as_bytes());
    if field("signature") != expected {
        return Err("The signature does not match".into());
    }
    Ok(())
}

fn problem(status: u16, title: &str, detail: &str, support_id: &str) -> (u16, serde_json::Value) {
    (
        status,
        serde_json::json!({
            "httpStatus": status,
            "title": title,
            "detail": detail,
            "supportId": support_id,
            "describedBy": format!("https://techdocs.akamai.com/purge-cache/reference/{status}"),
        }),
    )
}

impl AkamaiSim {
    /// Starts with full buckets that refill `scale` times faster than Akamai's.
    pub async fn start(scale: f64) -> Self {
        let state = Arc::new(Mutex::new(State {
            scale,
            requests: REQUEST_BURST,
            urls: URL_BURST,
            tags: TAG_BURST,
            at: Instant::now(),
            nonces: HashSet::new(),
            received: Vec::new(),
            unauthorized_hosts: Vec::new(),
            next_id: 0,
            drained: false,
            tags_drained: false,
            estimated_seconds: 5,
            latency: std::time::Duration::ZERO,
            slow_start: (0, std::time::Duration::ZERO),
            arrived: 0,
        }));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = state.clone();
        let server = HttpServer::new(move || {
            let state = shared.clone();
            App::new()
                .app_data(web::PayloadConfig::new(1 << 20))
                .default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                    let state = state.clone();
                    async move {
                        // Half the round trip on the way there (tokens are taken on arrival),
                        // half on the way back.
                        let (half, there) = {
                            let mut s = state.lock().unwrap();
                            let half = s.latency / 2;
                            let slow = s.arrived < s.slow_start.0;
                            s.arrived += 1;
                            (half, if slow { half + s.slow_start.1 } else { half })
                        };
                        tokio::time::sleep(there).await;
                        let answer = Self::answer(&state, &req, &body);
                        tokio::time::sleep(half).await;
                        answer
                    }
                }))
        })
        .workers(2)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self { port, state }
    }

    fn answer(state: &Mutex<State>, req: &HttpRequest, body: &[u8]) -> HttpResponse {
        let mut s = state.lock().unwrap();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut received = Received {
            method: req.method().to_string(),
            path: req.path().to_string(),
            content_type: content_type.clone(),
            body_len: body.len(),
            objects: Vec::new(),
            status: 0,
            title: None,
            at: Instant::now(),
        };
        let support_id = s.id("edsup");
        let (status, json, rate_headers) =
            Self::decide(&mut s, req, body, &content_type, &support_id, &mut received);
        let kind = if req.path().contains("/tag/") {
            Kind::Tag
        } else {
            Kind::Url
        };
        received.status = status;
        received.title = json["title"].as_str().map(str::to_string);
        s.received.push(received);
        let mut r = HttpResponse::build(StatusCode::from_u16(status).unwrap());
        r.content_type(if status < 300 {
            "application/json"
        } else {
            PROBLEM
        });
        if rate_headers {
            for (k, v) in s.rate_headers(kind) {
                r.insert_header((k, v));
            }
        }
        r.body(json.to_string())
    }

    /// (status, body, whether to send the rate-limit headers).
    fn decide(
        s: &mut State,
        req: &HttpRequest,
        body: &[u8],
        content_type: &str,
        support_id: &str,
        received: &mut Received,
    ) -> (u16, serde_json::Value, bool) {
        if req.method() != "POST" {
            let (c, j) = problem(405, "Method Not Allowed", "Use POST.", support_id);
            return (c, j, false);
        }
        if let Err(detail) = verify(req, body, &mut s.nonces) {
            let (c, j) = problem(401, "Not authorized", &detail, support_id);
            return (c, j, false);
        }
        let parts: Vec<&str> = req.path().trim_start_matches('/').split('/').collect();
        let status_call = parts == ["ccu", "v3", "rate-limit-status", "url"];
        let purge_call = match parts.as_slice() {
            [
                "ccu",
                "v3",
                "invalidate" | "delete",
                "url",
                "staging" | "production",
            ] => Some(Kind::Url),
            [
                "ccu",
                "v3",
                "invalidate" | "delete",
                "tag",
                "staging" | "production",
            ] => Some(Kind::Tag),
            _ => None,
        };
        if !status_call && purge_call.is_none() {
            let (c, j) = problem(404, "Not Found", req.path(), support_id);
            return (c, j, false);
        }
        if !content_type.starts_with("application/json") {
            let (c, j) = problem(
                415,
                "Unsupported Media Type",
                "Content-Type must be application/json",
                support_id,
            );
            return (c, j, false);
        }
        s.refill();
        let Some(kind) = purge_call else {
            let j = serde_json::json!({"httpStatus": 201, "detail": "Rate limit status", "supportId": support_id});
            return (201, j, true);
        };
        match kind {
            Kind::Url if s.drained => {
                s.urls = 0.0;
                s.drained = false;
            }
            Kind::Tag if s.tags_drained => {
                s.tags = 0.0;
                s.tags_drained = false;
            }
            _ => {}
        }
        if body.len() > MAX_BODY {
            let (c, j) = problem(
                413,
                "Request Entity Too Large",
                &format!(
                    "The request body is {} bytes; at most {MAX_BODY} are allowed.",
                    body.len()
                ),
                support_id,
            );
            return (c, j, false);
        }
        let objects = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v.get("objects")?
                    .as_array()?
                    .iter()
                    .map(|o| o.as_str().map(str::to_string))
                    .collect::<Option<Vec<String>>>()
            });
        let Some(objects) = objects.filter(|o| !o.is_empty()) else {
            let (c, j) = problem(
                400,
                "bad request",
                "objects must be a non-empty list of strings",
                support_id,
            );
            return (c, j, false);
        };
        received.objects = objects.clone();
        if kind == Kind::Tag {
            if let Some(bad) = objects.iter().find(|t| !tag_allowed(t)) {
                let (c, j) = problem(400, "bad tag", bad, support_id);
                return (c, j, false);
            }
            return Self::take(s, kind, objects.len() as f64, support_id);
        }
        for object in &objects {
            let parsed = url::Url::parse(object).ok().filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
            });
            let Some(parsed) = parsed else {
                let (c, j) = problem(400, "bad URL", object, support_id);
                return (c, j, false);
            };
            if s.unauthorized_hosts
                .iter()
                .any(|h| Some(h.as_str()) == parsed.host_str())
            {
                let (c, j) = problem(403, "unauthorized arl", object, support_id);
                return (c, j, false);
            }
        }
        Self::take(s, kind, objects.len() as f64, support_id)
    }

    /// Takes a request token and `n` tokens of `kind`'s bucket and accepts, or refuses with
    /// 429 and takes nothing.
    fn take(s: &mut State, kind: Kind, n: f64, support_id: &str) -> (u16, serde_json::Value, bool) {
        let (left, burst, _) = s.objects(kind);
        if s.requests < 1.0 || left < n {
            let object_limit = left < n;
            let (limit, remaining, size) = if object_limit {
                (burst, left.floor(), n)
            } else {
                (REQUEST_BURST, s.requests.floor(), 1.0)
            };
            let title = match (object_limit, kind) {
                (true, Kind::Url) => "URL Rate Limit exceeded",
                (true, Kind::Tag) => "Tag Rate Limit exceeded",
                (false, _) => "Rate Limit exceeded",
            };
            let j = serde_json::json!({
                "supportId": support_id,
                "title": title,
                "httpStatus": 429,
                "describedBy": "https://techdocs.akamai.com/purge-cache/reference/api-errors",
                "detail": "",
                "rateLimit": limit,
                "rateLimitCurrentRequestSize": size,
                "rateLimitRemaining": remaining,
            });
            return (429, j, true);
        }
        s.requests -= 1.0;
        match kind {
            Kind::Url => s.urls -= n,
            Kind::Tag => s.tags -= n,
        }
        let purge_id = s.id("edcp");
        let j = serde_json::json!({
            "httpStatus": 201,
            "estimatedSeconds": s.estimated_seconds,
            "purgeId": purge_id,
            "supportId": support_id,
            "detail": "Request accepted",
        });
        (201, j, true)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Answers 403 "unauthorized arl" for URLs on `host` (not on this account's properties).
    pub fn deny_host(&self, host: &str) {
        self.state
            .lock()
            .unwrap()
            .unauthorized_hosts
            .push(host.into());
    }

    /// Accepted purges answer `estimatedSeconds: seconds` from now on.
    pub fn set_estimated_seconds(&self, seconds: u64) {
        self.state.lock().unwrap().estimated_seconds = seconds;
    }

    /// Every answer comes `latency` after its request.
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    /// The first `requests` to come in from now on take `delay` more on the way there.
    pub fn set_slow_start(&self, requests: usize, delay: std::time::Duration) {
        let mut s = self.state.lock().unwrap();
        s.slow_start = (s.arrived + requests, delay);
    }

    /// Another client on the account uses every URL token, and keeps doing so until our next
    /// purge request arrives (so that request is refused however long the app takes to send it).
    pub fn drain_url_tokens(&self) {
        let mut s = self.state.lock().unwrap();
        s.refill();
        s.urls = 0.0;
        s.drained = true;
    }

    /// [`AkamaiSim::drain_url_tokens`] for the tag bucket.
    pub fn drain_tag_tokens(&self) {
        let mut s = self.state.lock().unwrap();
        s.refill();
        s.tags = 0.0;
        s.tags_drained = true;
    }
}

/// What a purge driven through the worker came to.
#[derive(Debug)]
pub struct WorkerRun {
    pub started: Instant,
    pub elapsed: std::time::Duration,
    pub status: cdn_invalidator::store::InvalidationStatus,
    /// URLs Akamai accepted: *submitted* until its `estimatedSeconds` pass (then succeeded).
    pub accepted: usize,
    pub failed: usize,
}

/// Purges `urls` through the real worker (database, batching, retries, pacing) with the
/// production purge settings, against `sim`, with Akamai's refill rates times `scale`.
/// Only the rate scale is not something an admin can set: it is a hidden provider value.
pub async fn purge_through_worker(sim: &AkamaiSim, urls: Vec<String>, scale: f64) -> WorkerRun {
    let publish_server = url::Url::parse(&urls[0])
        .unwrap()
        .host_str()
        .unwrap()
        .to_string();
    let config = cdn_invalidator::cdn::PurgeConfig::default();
    purge_rows_through_worker(sim, Scope::Urls, urls, &publish_server, scale, config).await
}

/// [`purge_through_worker`] for rows of any `scope` (cache tags: asset IDs), with
/// `publish_server` as the settings' publish server and the worker's `config`.
pub async fn purge_rows_through_worker(
    sim: &AkamaiSim,
    scope: Scope,
    rows: Vec<String>,
    publish_server: &str,
    scale: f64,
    config: cdn_invalidator::cdn::PurgeConfig,
) -> WorkerRun {
    use cdn_invalidator::cdn::ProviderSnapshot;
    use cdn_invalidator::store::{NewInvalidation, ProviderChoice, Role, Store, UrlStatus};
    use cdn_invalidator::worker::Worker;

    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::connect(&format!("sqlite://{}/bench.db", dir.path().display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
        .unlock_secrets(cdn_invalidator::crypto::MasterKey::generate())
        .await
        .unwrap();
    let user = store
        .create_user("bench", "not-a-password-hash", Role::User)
        .await
        .unwrap();
    let mut values = std::collections::BTreeMap::new();
    for (k, v) in [
        ("akamai_host", "akab-sim.luna.akamaiapis.net".to_string()),
        ("akamai_base_url", sim.base()),
        ("akamai_action", "invalidate".into()),
        ("akamai_network", "production".into()),
    ] {
        values.insert(k.to_string(), v);
    }
    let secrets: std::collections::BTreeMap<String, String> = [
        ("akamai_client_token", CLIENT_TOKEN),
        ("akamai_client_secret", CLIENT_SECRET),
        ("akamai_access_token", ACCESS_TOKEN),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let choice = ProviderChoice {
        provider: "akamai".into(),
        values: values.clone(),
    };
    let settings = cdn_invalidator::domain::settings::SettingsInput {
        publish_server: publish_server.to_string(),
        ..Default::default()
    };
    store
        .save_settings(&settings, &choice, &secrets)
        .await
        .unwrap();
    values.insert("akamai_rate_scale".into(), scale.to_string());
    let snapshot = ProviderSnapshot {
        provider: "akamai".into(),
        values,
    };
    let count = rows.len();
    let id = store
        .create_invalidation(
            &NewInvalidation {
                created_by: user,
                idempotency_key: "bench".into(),
                provider: "akamai".into(),
                provider_settings: serde_json::to_string(&snapshot).unwrap(),
                urls: rows,
                duplicates_dropped: 0,
                retry_of: None,
                pacing_key: snapshot.pacing_key(),
                scope,
                covered: Vec::new(),
            },
            |_| Default::default(),
        )
        .await
        .unwrap();
    let worker = Worker::new(store.clone(), config, Arc::new(tokio::sync::Notify::new())).unwrap();
    let start = Instant::now();
    let (_, status) = worker
        .run_once()
        .await
        .unwrap()
        .expect("the invalidation ran");
    let elapsed = start.elapsed();
    let rows = store.invalidation_urls(id).await.unwrap();
    assert_eq!(rows.len(), count);
    let accepted = rows
        .iter()
        .filter(|u| matches!(u.status, UrlStatus::Succeeded | UrlStatus::Submitted))
        .count();
    let failed = rows
        .iter()
        .filter(|u| u.status == UrlStatus::Failed)
        .count();
    WorkerRun {
        started: start,
        elapsed,
        status,
        accepted,
        failed,
    }
}
