//! A purge node that records the PURGE requests it gets and answers with a chosen status.

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path_and_query: String,
    pub host: String,
}

#[derive(Clone)]
pub struct PurgeNode {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl PurgeNode {
    /// Answers every request with `status` (and `Retry-After: 0` for 503, as an overloaded cache might).
    pub async fn start(status: u16) -> Self {
        Self::start_failing("", status, status).await
    }

    /// Answers `fail_status` to paths containing `marker` (when not empty), `status` to the rest.
    pub async fn start_failing(marker: &'static str, status: u16, fail_status: u16) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = received.clone();
        let server = HttpServer::new(move || {
            let log = log.clone();
            App::new().default_service(web::to(move |req: HttpRequest| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(Received {
                        method: req.method().to_string(),
                        path_and_query: req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        host: req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default()
                            .to_string(),
                    });
                    let status = if !marker.is_empty() && req.path().contains(marker) {
                        fail_status
                    } else {
                        status
                    };
                    let mut r = HttpResponse::build(StatusCode::from_u16(status).unwrap());
                    if status == 503 {
                        r.insert_header(("Retry-After", "0"));
                    }
                    r.body("node says so")
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self { port, received }
    }

    /// Answers every request with `307 Temporary Redirect` to `target` (for SSRF tests).
    pub async fn start_redirecting(target: &str) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (log, target) = (received.clone(), target.to_string());
        let server = HttpServer::new(move || {
            let (log, target) = (log.clone(), target.clone());
            App::new().default_service(web::to(move |req: HttpRequest| {
                let (log, target) = (log.clone(), target.clone());
                async move {
                    log.lock().unwrap().push(Received {
                        method: req.method().to_string(),
                        path_and_query: req.uri().to_string(),
                        host: String::new(),
                    });
                    HttpResponse::TemporaryRedirect()
                        .insert_header(("Location", format!("{target}{}", req.uri())))
                        .finish()
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self { port, received }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}
