//! A loopback Cloudflare API v4 (the parts a purge uses), checking requests as Cloudflare
//! does and answering with its envelope `{"success":…,"errors":[…],"messages":[],"result":…}`.
//!
//! Served under `/client/v4` like the real endpoint, so the provider's base URL path is exercised.
//! Documented: the Bearer token, the four bodies (`files`, `tags`, `prefixes`,
//! `purge_everything`), a cap on URLs per request (given: 100 on every plan in the current
//! documentation, 30 in older documentation), at most 100 tags or prefixes per request,
//! prefixes as `host/path` without scheme, query or fragment and with at most 31 path
//! separators, 429 over a rate limit, `result.id`, `/user/tokens/verify`. Error codes other than 10000
//! (authentication) are illustrative.

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most tags or prefixes per request, on every plan.
pub const MAX_OPERATIONS: usize = 100;
/// Most path separators in one prefix.
const MAX_PREFIX_SEPARATORS: usize = 31;

pub const ZONE_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";
pub const ZONE_NAME: &str = "example.com";

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    /// The HTTP status the simulator answered.
    pub status: u16,
    pub at: Instant,
}

/// One purge the simulator accepted: of `files`, `tags`, `prefixes`, or everything.
#[derive(Debug, Clone, Default)]
pub struct Purge {
    pub id: String,
    pub files: Vec<String>,
    pub tags: Vec<String>,
    pub prefixes: Vec<String>,
    pub everything: bool,
}

struct State {
    /// Added to every answer: a real API is a round trip across the internet away.
    latency: std::time::Duration,
    token: String,
    max_files: usize,
    /// Purge requests still to be answered 429 before accepting again.
    rate_limited: u32,
    retry_after_secs: u64,
    received: Vec<Received>,
    purges: Vec<Purge>,
}

#[derive(Clone)]
pub struct CloudflareSim {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

fn envelope_error(status: StatusCode, code: i64, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "success": false,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": null
    }))
}

fn success(result: Value) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "success": true, "errors": [], "messages": [], "result": result
    }))
}

impl CloudflareSim {
    /// A zone `ZONE_ID` reachable with `token`, allowing `max_files` URLs per request.
    pub async fn start(token: &str, max_files: usize) -> Self {
        let state = Arc::new(Mutex::new(State {
            latency: std::time::Duration::ZERO,
            token: token.to_string(),
            max_files,
            rate_limited: 0,
            retry_after_secs: 1,
            received: Vec::new(),
            purges: Vec::new(),
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
                    state.received.push(Received {
                        method: req.method().to_string(),
                        path: req.path().to_string(),
                        authorization: req
                            .headers()
                            .get("authorization")
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_string),
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

    /// The base URL to configure, with Cloudflare's `/client/v4` path.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/client/v4", self.port)
    }

    /// The next `count` purge requests are answered 429 with `Retry-After: seconds`.
    pub fn rate_limit(&self, count: u32, seconds: u64) {
        let mut s = self.state.lock().unwrap();
        s.rate_limited = count;
        s.retry_after_secs = seconds;
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
}

fn answer(state: &mut State, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let Some(rest) = req.path().strip_prefix("/client/v4/") else {
        return envelope_error(StatusCode::NOT_FOUND, 7000, "No route for that URI");
    };
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let authorised = bearer == Some(state.token.as_str());
    let method = req.method().as_str();
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["user", "tokens", "verify"] if method == "GET" => {
            if !authorised {
                return envelope_error(StatusCode::UNAUTHORIZED, 1000, "Invalid API Token");
            }
            HttpResponse::Ok().json(json!({
                "success": true,
                "errors": [],
                "messages": [{"code": 10000, "message": "This API Token is valid and active", "type": null}],
                "result": {"id": "f267e341f3dd4697bd3b9f71dd96247f", "status": "active"}
            }))
        }
        ["zones", zone] if method == "GET" => {
            if !authorised {
                return envelope_error(StatusCode::FORBIDDEN, 10000, "Authentication error");
            }
            if *zone != ZONE_ID {
                return unknown_zone(rest);
            }
            success(json!({"id": ZONE_ID, "name": ZONE_NAME, "status": "active"}))
        }
        ["zones", zone, "purge_cache"] => {
            if method != "POST" {
                return envelope_error(StatusCode::METHOD_NOT_ALLOWED, 10405, "Method not allowed");
            }
            if !authorised {
                return envelope_error(StatusCode::FORBIDDEN, 10000, "Authentication error");
            }
            if *zone != ZONE_ID {
                return unknown_zone(rest);
            }
            if state.rate_limited > 0 {
                state.rate_limited -= 1;
                return too_many(state.retry_after_secs);
            }
            purge(state, req, body)
        }
        _ => envelope_error(StatusCode::NOT_FOUND, 7000, "No route for that URI"),
    }
}

fn too_many(retry_after_secs: u64) -> HttpResponse {
    HttpResponse::TooManyRequests()
        .insert_header(("Retry-After", retry_after_secs.to_string()))
        .json(json!({
            "success": false,
            "errors": [{"code": 971, "message": "Please wait and consider throttling your request speed"}],
            "messages": [],
            "result": null
        }))
}

fn unknown_zone(rest: &str) -> HttpResponse {
    envelope_error(
        StatusCode::BAD_REQUEST,
        7003,
        &format!("Could not route to /{rest}, perhaps your object identifier is invalid?"),
    )
}

fn purge(state: &mut State, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let json_type = req
        .headers()
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !json_type {
        return envelope_error(StatusCode::BAD_REQUEST, 6003, "Invalid request headers");
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
        return envelope_error(
            StatusCode::BAD_REQUEST,
            1012,
            "Request must contain one of \"purge_everything\", \"files\", \"tags\", \"hosts\" or \"prefixes\"",
        );
    };
    let Some(object) = parsed.as_object() else {
        return envelope_error(
            StatusCode::BAD_REQUEST,
            1012,
            "Request must contain one of \"purge_everything\", \"files\", \"tags\", \"hosts\" or \"prefixes\"",
        );
    };
    if object.len() > 1 {
        return envelope_error(
            StatusCode::BAD_REQUEST,
            1012,
            "Only one type of purge may be requested at a time",
        );
    }
    let accepted = match object.iter().next() {
        Some((key, value)) if key == "files" && value.is_array() => {
            purge_files(state, value.as_array().unwrap())
        }
        Some((key, value)) if key == "tags" || key == "prefixes" => operations(key, value),
        Some((key, Value::Bool(true))) if key == "purge_everything" => Ok(Purge {
            everything: true,
            ..Purge::default()
        }),
        _ => Err((
            1012,
            "Request must contain one of \"purge_everything\", \"files\", \"tags\", \"hosts\" or \"prefixes\"".into(),
        )),
    };
    match accepted {
        Ok(purge) => record(state, purge),
        Err((code, message)) => envelope_error(StatusCode::BAD_REQUEST, code, &message),
    }
}

/// A request Cloudflare refuses with 400: its error code and message.
type Refusal = (i64, String);

/// A purge of `tags` or `prefixes` (`key`), checked as Cloudflare does.
fn operations(key: &str, value: &Value) -> Result<Purge, Refusal> {
    let bad = |message: String| (1016, message);
    let items: Vec<String> = match value.as_array() {
        Some(list) if list.iter().all(Value::is_string) => list
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
        _ => return Err(bad(format!("\"{key}\" must be a list of strings"))),
    };
    if items.is_empty() {
        return Err(bad(format!("\"{key}\" must not be empty")));
    }
    if items.len() > MAX_OPERATIONS {
        return Err((
            1018,
            format!("You may only purge up to {MAX_OPERATIONS} {key} per API call"),
        ));
    }
    if key == "prefixes" {
        for prefix in &items {
            if prefix.contains("://") {
                return Err(bad(format!(
                    "Invalid prefix {prefix}: a prefix must not include the scheme"
                )));
            }
            if prefix.contains('?') || prefix.contains('#') {
                return Err(bad(format!(
                    "Invalid prefix {prefix}: query strings and fragments cannot be purged by prefix"
                )));
            }
            if prefix.matches('/').count() > MAX_PREFIX_SEPARATORS {
                return Err(bad(format!(
                    "Invalid prefix {prefix}: more than {MAX_PREFIX_SEPARATORS} path separators"
                )));
            }
        }
    } else if let Some(tag) = items.iter().find(|t| t.is_empty() || t.contains(' ')) {
        return Err(bad(format!("Invalid tag \"{tag}\"")));
    }
    Ok(if key == "tags" {
        Purge {
            tags: items,
            ..Purge::default()
        }
    } else {
        Purge {
            prefixes: items,
            ..Purge::default()
        }
    })
}

/// A purge of `files`, checked as Cloudflare does.
fn purge_files(state: &State, files: &[Value]) -> Result<Purge, Refusal> {
    if files.len() > state.max_files {
        return Err((
            1015,
            format!(
                "You may only purge up to {} files per API call",
                state.max_files
            ),
        ));
    }
    let mut urls = Vec::new();
    for file in files {
        // A file is a full URL, or {"url": …, "headers": {…}} for custom cache keys.
        let text = file
            .as_str()
            .or_else(|| file.get("url").and_then(Value::as_str));
        match text.and_then(|t| url::Url::parse(t).ok()) {
            Some(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                urls.push(u.to_string())
            }
            _ => {
                return Err((1016, format!("Invalid url: {file}")));
            }
        }
    }
    Ok(Purge {
        files: urls,
        ..Purge::default()
    })
}

/// Keeps an accepted purge and answers with its id.
fn record(state: &mut State, mut purge: Purge) -> HttpResponse {
    let id = format!(
        "{:032x}",
        state.purges.len() as u128 + 0x9a7806061c88ada191ed06f989cc
    );
    purge.id = id.clone();
    state.purges.push(purge);
    success(json!({ "id": id }))
}
