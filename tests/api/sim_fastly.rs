//! A loopback Fastly API (URL purge and `/tokens/self`), checking requests as Fastly does and
//! answering `{"status":"ok","id":…}` or `{"msg":…,"detail":…}`.
//!
//! Documented: `POST /purge/{cached_url}` with `cached_url` like `www.example.com/path`, the
//! `Fastly-Key` header, `Fastly-Soft-Purge: 1`, 429 with `Fastly-RateLimit-Remaining` and
//! `Fastly-RateLimit-Reset` (UTC epoch seconds), the token fields of `/tokens/self`.

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::json;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path_and_query: String,
    pub fastly_key: Option<String>,
    /// The HTTP status the simulator answered.
    pub status: u16,
    pub at: Instant,
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
        }));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = state.clone();
        let server = HttpServer::new(move || {
            let shared = shared.clone();
            App::new().default_service(web::to(move |req: HttpRequest| {
                let shared = shared.clone();
                async move {
                    let latency = shared.lock().unwrap().latency;
                    tokio::time::sleep(latency).await;
                    let mut state = shared.lock().unwrap();
                    let response = answer(&mut state, &req);
                    state.received.push(Received {
                        method: req.method().to_string(),
                        path_and_query: req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        fastly_key: req
                            .headers()
                            .get("fastly-key")
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
}

fn answer(state: &mut State, req: &HttpRequest) -> HttpResponse {
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
    let Some(cached_url) = path.strip_prefix("/purge/") else {
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
    // cached_url is host[:port]/path: no scheme, and a host before the first slash.
    let host = cached_url.split('/').next().unwrap_or_default();
    if cached_url.starts_with("http:") || cached_url.starts_with("https:") || host.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad request",
            Some("cached_url must be a host and path without a scheme"),
        );
    }
    if state.rate_limited > 0 {
        state.rate_limited -= 1;
        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + state.reset_in_secs;
        return HttpResponse::TooManyRequests()
            .insert_header(("Fastly-RateLimit-Remaining", "0"))
            .insert_header(("Fastly-RateLimit-Reset", reset.to_string()))
            .json(json!({"msg": "Too many requests", "detail": "Rate limit exceeded"}));
    }
    let soft = req
        .headers()
        .get("fastly-soft-purge")
        .and_then(|h| h.to_str().ok())
        == Some("1");
    let full = match req.uri().query() {
        Some(q) => format!("{cached_url}?{q}"),
        None => cached_url.to_string(),
    };
    let id = format!("108-1391560174-{}", 974124 + state.purges.len());
    state.purges.push(Purge {
        id: id.clone(),
        cached_url: full,
        soft,
    });
    HttpResponse::Ok().json(json!({"status": "ok", "id": id}))
}
