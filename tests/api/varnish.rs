//! A real Varnish (`varnishd` from Debian's package) in front of an origin the test serves.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An origin whose body for every path is `"{version}:{path}"`; the version changes on demand.
#[derive(Clone)]
pub struct Origin {
    pub port: u16,
    version: Arc<Mutex<String>>,
    pub hits: Arc<Mutex<u32>>,
}

impl Origin {
    pub async fn start() -> Self {
        let version = Arc::new(Mutex::new("v1".to_string()));
        let hits = Arc::new(Mutex::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (v, h) = (version.clone(), hits.clone());
        let server = HttpServer::new(move || {
            let (v, h) = (v.clone(), h.clone());
            App::new().default_service(web::to(move |req: HttpRequest| {
                let (v, h) = (v.clone(), h.clone());
                async move {
                    *h.lock().unwrap() += 1;
                    let body = format!("{}:{}", v.lock().unwrap(), req.uri());
                    HttpResponse::Ok()
                        .insert_header(("Cache-Control", "public, max-age=3600"))
                        .body(body)
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
        }
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
    /// One client for every fetch: building one per fetch costs more than the fetch.
    client: reqwest::Client,
}

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
        let dir = tempfile::tempdir().unwrap();
        let vcl = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/varnish/purge.vcl"),
        )
        .unwrap()
        .replace("__BACKEND_PORT__", &backend_port.to_string());
        let vcl_path = dir.path().join("purge.vcl");
        std::fs::write(&vcl_path, vcl).unwrap();
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
            client: reqwest::Client::new(),
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
