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

/// What a [`RawNode`] does with the requests it reads.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Answers `200` (chunked) to the first `n` requests of each connection, the `n`-th with
    /// `Connection: close`, then closes it: later pipelined requests go unanswered.
    CloseAfter(usize),
    /// Reads requests and never answers.
    Hang,
    /// Answers `200` until a request whose path contains the marker, then nothing more on that
    /// connection (a cache stuck on one object).
    HangOn(&'static str),
}

/// A purge node on a bare socket, for what a well-behaved server never does. It parses
/// requests properly (several per read when pipelined, or one split over reads).
pub struct RawNode {
    pub port: u16,
    /// The path of every request read, in order of arrival, and whether it came pipelined
    /// (read before the answer to the request before it on its connection was written).
    received: Arc<Mutex<Vec<(String, bool)>>>,
    /// The path of every request answered.
    answered: Arc<Mutex<Vec<String>>>,
    connections: Arc<Mutex<usize>>,
}

impl RawNode {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let node = Self {
            port,
            received: Arc::default(),
            answered: Arc::default(),
            connections: Arc::default(),
        };
        let (received, answered, connections) = (
            node.received.clone(),
            node.answered.clone(),
            node.connections.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *connections.lock().unwrap() += 1;
                tokio::spawn(serve_raw(
                    stream,
                    behaviour,
                    received.clone(),
                    answered.clone(),
                ));
            }
        });
        node
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn received(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// Each request read, with whether it came pipelined behind another.
    pub fn received_pipelined(&self) -> Vec<(String, bool)> {
        self.received.lock().unwrap().clone()
    }

    pub fn answered(&self) -> Vec<String> {
        self.answered.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

async fn serve_raw(
    mut stream: tokio::net::TcpStream,
    behaviour: Behaviour,
    received: Arc<Mutex<Vec<(String, bool)>>>,
    answered: Arc<Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = Vec::new();
    let mut served = 0;
    let mut silent = false;
    let mut chunk = [0u8; 4096];
    loop {
        // A request parsed after another without a read between them was sent before the
        // answer to that one.
        let mut pipelined = false;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            let length = match request.parse(&buffer) {
                Ok(httparse::Status::Complete(length)) => length,
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            };
            assert_eq!(request.method, Some("PURGE"));
            let path = request.path.unwrap().to_string();
            buffer.drain(..length);
            received.lock().unwrap().push((path.clone(), pipelined));
            pipelined = true;
            let n = match behaviour {
                Behaviour::CloseAfter(n) => n,
                Behaviour::HangOn(marker) if !silent && !path.contains(marker) => 0,
                Behaviour::HangOn(_) => {
                    silent = true;
                    continue;
                }
                Behaviour::Hang => continue,
            };
            served += 1;
            let last = served == n;
            let response = format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{}\r\n6\r\npurged\r\n0\r\n\r\n",
                if last { "Connection: close\r\n" } else { "" }
            );
            if stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
            answered.lock().unwrap().push(path);
            if last {
                // Close as servers do (RFC 9112 §9.6): stop writing, read what the client had
                // already sent, so no reset destroys the answers it has not read yet.
                let _ = stream.shutdown().await;
                let drain = async { while let Ok(1..) = stream.read(&mut chunk).await {} };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}
