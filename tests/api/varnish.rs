//! A real Varnish (`varnishd` from Debian's package) in front of an origin the test serves.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An origin whose body for every path is `"{version}:{path}"`; the version changes on demand.
/// Image responses (`/is/image/[Company/]<ID>?…`) are labelled `xkey: <ID>`, as an origin does
/// for tag purges with Varnish's xkey module.
#[derive(Clone)]
pub struct Origin {
    pub port: u16,
    version: Arc<Mutex<String>>,
    pub hits: Arc<Mutex<u32>>,
    /// Requests per path and query.
    per_url: Arc<Mutex<HashMap<String, u32>>>,
}

impl Origin {
    pub async fn start() -> Self {
        let version = Arc::new(Mutex::new("v1".to_string()));
        let hits = Arc::new(Mutex::new(0));
        let per_url = Arc::new(Mutex::new(HashMap::new()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (v, h, u) = (version.clone(), hits.clone(), per_url.clone());
        let server = HttpServer::new(move || {
            let (v, h, u) = (v.clone(), h.clone(), u.clone());
            App::new().default_service(web::to(move |req: HttpRequest| {
                let (v, h, u) = (v.clone(), h.clone(), u.clone());
                async move {
                    *h.lock().unwrap() += 1;
                    *u.lock().unwrap().entry(req.uri().to_string()).or_insert(0) += 1;
                    let body = format!("{}:{}", v.lock().unwrap(), req.uri());
                    let mut response = HttpResponse::Ok();
                    response.insert_header(("Cache-Control", "public, max-age=3600"));
                    // The asset ID is the last path segment (after the company folder).
                    if let Some(image) = req.path().strip_prefix("/is/image/")
                        && let Some(asset_id) = image.rsplit('/').next().filter(|id| !id.is_empty())
                    {
                        response.insert_header(("xkey", asset_id));
                    }
                    response.body(body)
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self {
            port,
            version,
            hits,
            per_url,
        }
    }

    /// How often the origin was asked for `path_and_query` (through any cache).
    pub fn hits_of(&self, path_and_query: &str) -> u32 {
        self.per_url
            .lock()
            .unwrap()
            .get(path_and_query)
            .copied()
            .unwrap_or(0)
    }

    pub fn set_version(&self, v: &str) {
        *self.version.lock().unwrap() = v.to_string();
    }
}

/// A `varnishd` child process, killed when dropped.
pub struct Varnish {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
    /// One client for every fetch: building one per fetch costs more than the fetch. It keeps
    /// an idle connection at most [`CLIENT_IDLE`], well under Varnish's `timeout_idle` (5 s):
    /// a connection reused just as Varnish closes it fails the fetch (`IncompleteMessage`).
    client: reqwest::Client,
}

/// How long the fetch client keeps an idle connection to Varnish (see [`Varnish::client`]).
const CLIENT_IDLE: Duration = Duration::from_secs(2);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Varnish {
    /// Starts varnishd with `tests/varnish/purge.vcl` in front of `backend_port`.
    pub async fn start(backend_port: u16) -> Self {
        Self::start_with_vcl(backend_port, "purge.vcl").await
    }

    /// Starts varnishd with `tests/varnish/<vcl>` in front of `backend_port`: `purge.vcl`
    /// (PURGE of URLs), `xkey.vcl` (and of tags), `ban.vcl` (and BAN by URL pattern).
    pub async fn start_with_vcl(backend_port: u16, vcl: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/varnish")
                .join(vcl),
        )
        .unwrap()
        .replace("__BACKEND_PORT__", &backend_port.to_string());
        let vcl_path = dir.path().join(vcl);
        std::fs::write(&vcl_path, text).unwrap();
        let port = free_port();
        let varnishd = ["/usr/sbin/varnishd", "varnishd"]
            .into_iter()
            .find(|p| Path::new(p).exists() || which(p))
            .expect("varnishd is installed (the test command installs it)");
        let log = std::fs::File::create(dir.path().join("varnishd.log")).unwrap();
        let child = Command::new(varnishd)
            .args(["-F", "-j", "none", "-n"])
            .arg(dir.path().join("work"))
            .args(["-a", &format!("127.0.0.1:{port}"), "-f"])
            .arg(&vcl_path)
            .args(["-s", "malloc,32m", "-T", "none", "-p", "default_ttl=3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("varnishd starts");
        let varnish = Self {
            port,
            child,
            dir,
            client: reqwest::Client::builder()
                .pool_idle_timeout(CLIENT_IDLE)
                .build()
                .expect("a plain HTTP client builds"),
        };
        varnish.wait_ready().await;
        varnish
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client
                .get(format!("http://127.0.0.1:{}/ready", self.port))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(self.dir.path().join("varnishd.log")).unwrap_or_default();
        panic!("varnishd did not start listening on {}:\n{log}", self.port);
    }

    /// GET through Varnish: (body, X-Cache header).
    pub async fn fetch(&self, path: &str, host: &str) -> (String, String) {
        let r = self
            .client
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .header("Host", host)
            .send()
            .await
            .unwrap();
        let cache = r
            .headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.text().await.unwrap(), cache)
    }
}

impl Varnish {
    /// A `varnishstat` counter (`MAIN.sess_conn`: connections accepted, `MAIN.client_req`…).
    pub fn counter(&self, name: &str) -> u64 {
        let out = Command::new("varnishstat")
            .arg("-n")
            .arg(self.dir.path().join("work"))
            .args(["-1", "-f", name])
            .output()
            .expect("varnishstat runs");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in varnishstat: {text}"))
    }
}

fn which(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for Varnish {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
