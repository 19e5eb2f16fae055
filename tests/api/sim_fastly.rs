//! A loopback Fastly API (URL purge, surrogate-key purge, purge-all and `/tokens/self`),
//! checking requests as Fastly does and answering `{"status":"ok","id":…}`, a map of each
//! surrogate key to its purge id, or `{"msg":…,"detail":…}`.
//!
//! Documented: `POST /purge/{cached_url}` with `cached_url` like `www.example.com/path`;
//! `POST /service/{id}/purge` with `{"surrogate_keys":[…]}` (at most 256) or a space-separated
//! `Surrogate-Key` header; `POST /service/{id}/purge_all` (needs the token's purge_all scope,
//! never soft); the `Fastly-Key` header, `Fastly-Soft-Purge: 1`, 429 with
//! `Fastly-RateLimit-Remaining` and `Fastly-RateLimit-Reset` (UTC epoch seconds), the token
//! fields of `/tokens/self` (fastly/fastly-js `docs/PurgeApi.md`, docs.fastly.com/api).

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::json;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The service the simulator knows; others are "Record not found".
pub const SERVICE_ID: &str = "SU1Z0isxPaozGVKXdv0eY";
/// Most surrogate keys Fastly takes in one request.
const MAX_KEYS: usize = 256;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path_and_query: String,
    pub fastly_key: Option<String>,
    /// Whether `Fastly-Soft-Purge: 1` came with it.
    pub soft: bool,
    pub content_type: Option<String>,
    pub body: String,
    /// The HTTP status the simulator answered.
    pub status: u16,
    pub at: Instant,
}

/// One batch surrogate-key purge the simulator accepted.
#[derive(Debug, Clone)]
pub struct KeyPurge {
    pub service: String,
    pub keys: Vec<String>,
    pub soft: bool,
}

/// One purge the simulator accepted.
#[derive(Debug, Clone)]
pub struct Purge {
    pub id: String,
    /// `www.example.com/path?query`, as Fastly reads it.
    pub cached_url: String,
    /// Whether `Fastly-Soft-Purge: 1` came with it.
    pub soft: bool,
}

struct State {
    /// Added to every answer: a real API is a round trip across the internet away.
    latency: std::time::Duration,
    token: String,
    scope: String,
    /// Purge requests still to be answered 429 before accepting again.
    rate_limited: u32,
    reset_in_secs: u64,
    received: Vec<Received>,
    purges: Vec<Purge>,
    key_purges: Vec<KeyPurge>,
    /// Services purged entirely, in order.
    purged_all: Vec<String>,
    /// Keys to leave out of the next answer that names them (as if Fastly had not purged them).
    unanswered_keys: Vec<String>,
    next_id: u64,
}

#[derive(Clone)]
pub struct FastlySim {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

fn error(status: StatusCode, msg: &str, detail: Option<&str>) -> HttpResponse {
    let body = match detail {
        Some(d) => json!({"msg": msg, "detail": d}),
        None => json!({ "msg": msg }),
    };
    HttpResponse::build(status).json(body)
}

impl FastlySim {
    /// Accepts `token`, whose scope `/tokens/self` reports as `scope`.
    pub async fn start(token: &str, scope: &str) -> Self {
        let state = Arc::new(Mutex::new(State {
            latency: std::time::Duration::ZERO,
            token: token.to_string(),
            scope: scope.to_string(),
            rate_limited: 0,
            reset_in_secs: 1,
            received: Vec::new(),
            purges: Vec::new(),
            key_purges: Vec::new(),
            purged_all: Vec::new(),
            unanswered_keys: Vec::new(),
            next_id: 974124,
        }));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = state.clone();
        let server = HttpServer::new(move || {
            let shared = shared.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let shared = shared.clone();
                async move {
                    let latency = shared.lock().unwrap().latency;
                    tokio::time::sleep(latency).await;
                    let mut state = shared.lock().unwrap();
                    let response = answer(&mut state, &req, &body);
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_string)
                    };
                    state.received.push(Received {
                        method: req.method().to_string(),
                        path_and_query: req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        fastly_key: header("fastly-key"),
                        soft: header("fastly-soft-purge").as_deref() == Some("1"),
                        content_type: header("content-type"),
                        body: String::from_utf8_lossy(&body).into_owned(),
                        status: response.status().as_u16(),
                        at: Instant::now(),
                    });
                    response
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self { port, state }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next `count` purges are answered 429, the window resetting `seconds` from now.
    pub fn rate_limit(&self, count: u32, seconds: u64) {
        let mut s = self.state.lock().unwrap();
        s.rate_limited = count;
        s.reset_in_secs = seconds;
    }

    /// Every answer comes `latency` after its request (`benches/estimate_accuracy.rs`).
    #[allow(dead_code)]
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn purges(&self) -> Vec<Purge> {
        self.state.lock().unwrap().purges.clone()
    }

    pub fn key_purges(&self) -> Vec<KeyPurge> {
        self.state.lock().unwrap().key_purges.clone()
    }

    /// Services purged entirely, in order.
    pub fn purged_all(&self) -> Vec<String> {
        self.state.lock().unwrap().purged_all.clone()
    }

    /// The next answer that would name `key` leaves it out.
    pub fn leave_out_key_once(&self, key: &str) {
        self.state.lock().unwrap().unanswered_keys.push(key.into());
    }
}

/// `POST /service/{id}/purge` or `/service/{id}/purge_all`, as (service, what).
fn service_call(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/service/")?;
    let (service, what) = rest.split_once('/')?;
    matches!(what, "purge" | "purge_all").then_some((service, what))
}

/// The keys of a batch purge: the JSON body's `surrogate_keys`, else the `Surrogate-Key`
/// header's space-separated list.
fn requested_keys(req: &HttpRequest, body: &[u8]) -> Result<Vec<String>, String> {
    if !body.is_empty() {
        let json: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        return json
            .get("surrogate_keys")
            .and_then(|k| k.as_array())
            .and_then(|keys| {
                keys.iter()
                    .map(|k| k.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| "surrogate_keys must be a list of strings".to_string());
    }
    let header = req
        .headers()
        .get("surrogate-key")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    Ok(header.split_whitespace().map(str::to_string).collect())
}

/// Answers the purge of `keys` or of everything on `service`.
fn answer_service(
    state: &mut State,
    req: &HttpRequest,
    body: &[u8],
    service: &str,
    what: &str,
    soft: bool,
) -> HttpResponse {
    if service != SERVICE_ID {
        return error(
            StatusCode::NOT_FOUND,
            "Record not found",
            Some("Cannot find service"),
        );
    }
    if what == "purge_all" {
        let scopes: Vec<&str> = state.scope.split_whitespace().collect();
        if !scopes.contains(&"purge_all") && !scopes.contains(&"global") {
            return error(StatusCode::FORBIDDEN, "Forbidden", None);
        }
        state.purged_all.push(service.to_string());
        return HttpResponse::Ok().json(json!({"status": "ok"}));
    }
    let keys = match requested_keys(req, body) {
        Ok(keys) if keys.is_empty() => {
            return error(
                StatusCode::BAD_REQUEST,
                "Bad request",
                Some("No surrogate keys given"),
            );
        }
        Ok(keys) if keys.len() > MAX_KEYS => {
            return error(
                StatusCode::BAD_REQUEST,
                "Bad request",
                Some(&format!(
                    "{} surrogate keys given; at most {MAX_KEYS} may be purged per request",
                    keys.len()
                )),
            );
        }
        Ok(keys) => keys,
        Err(detail) => return error(StatusCode::BAD_REQUEST, "Bad request", Some(&detail)),
    };
    let mut ids = serde_json::Map::new();
    let mut purged = Vec::new();
    for key in &keys {
        if let Some(at) = state.unanswered_keys.iter().position(|k| k == key) {
            state.unanswered_keys.remove(at);
            continue;
        }
        state.next_id += 1;
        ids.insert(
            key.clone(),
            json!(format!("108-1391560174-{}", state.next_id)),
        );
        purged.push(key.clone());
    }
    state.key_purges.push(KeyPurge {
        service: service.to_string(),
        keys: purged,
        soft,
    });
    HttpResponse::Ok().json(serde_json::Value::Object(ids))
}

fn answer(state: &mut State, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let authorised = req
        .headers()
        .get("fastly-key")
        .and_then(|h| h.to_str().ok())
        == Some(state.token.as_str());
    let path = req.uri().path();
    if path == "/tokens/self" && req.method() == "GET" {
        if !authorised {
            return error(
                StatusCode::UNAUTHORIZED,
                "Provided credentials are missing or invalid",
                None,
            );
        }
        return HttpResponse::Ok().json(json!({
            "id": "5Yo3XXnrQpjc20u0ybrf2g",
            "user_id": "4y5K5trZocEAQYkesWlk7M",
            "name": "cdn-invalidator",
            "scope": state.scope,
            "services": [],
            "created_at": "2024-01-08T12:00:00Z",
            "expires_at": null
        }));
    }
    let service = service_call(path);
    let Some(cached_url) = path.strip_prefix("/purge/").or(service.map(|_| "")) else {
        return error(
            StatusCode::NOT_FOUND,
            "Record not found",
            Some("Cannot find the requested resource"),
        );
    };
    if req.method() != "POST" {
        return error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", None);
    }
    if !authorised {
        return error(
            StatusCode::UNAUTHORIZED,
            "Provided credentials are missing or invalid",
            None,
        );
    }
    let soft = req
        .headers()
        .get("fastly-soft-purge")
        .and_then(|h| h.to_str().ok())
        == Some("1");
    if let Some((service, what)) = service {
        if let Some(limited) = rate_limited(state) {
            return limited;
        }
        return answer_service(state, req, body, service, what, soft);
    }
    // cached_url is host[:port]/path: no scheme, and a host before the first slash.
    let host = cached_url.split('/').next().unwrap_or_default();
    if cached_url.starts_with("http:") || cached_url.starts_with("https:") || host.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad request",
            Some("cached_url must be a host and path without a scheme"),
        );
    }
    if let Some(limited) = rate_limited(state) {
        return limited;
    }
    let full = match req.uri().query() {
        Some(q) => format!("{cached_url}?{q}"),
        None => cached_url.to_string(),
    };
    let id = format!("108-1391560174-{}", state.next_id);
    state.next_id += 1;
    state.purges.push(Purge {
        id: id.clone(),
        cached_url: full,
        soft,
    });
    HttpResponse::Ok().json(json!({"status": "ok", "id": id}))
}

/// A 429 while the simulator is told to refuse purges.
fn rate_limited(state: &mut State) -> Option<HttpResponse> {
    if state.rate_limited == 0 {
        return None;
    }
    state.rate_limited -= 1;
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + state.reset_in_secs;
    Some(
        HttpResponse::TooManyRequests()
            .insert_header(("Fastly-RateLimit-Remaining", "0"))
            .insert_header(("Fastly-RateLimit-Reset", reset.to_string()))
            .json(json!({"msg": "Too many requests", "detail": "Rate limit exceeded"})),
    )
}
