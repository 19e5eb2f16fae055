//! `cdn-invalidator invalidate` and `status`: the JSON API from a pipeline or a terminal.

use crate::{Progress, Unit};
use anyhow::Context;
use cdn_invalidator::domain::variants::Scope;
use serde_json::{Value, json};
use std::time::Duration;

/// Where the URLs come from.
pub enum Source {
    /// Asset IDs, and the scope (`urls`, `tags`, `prefixes`; the server's default when none).
    Assets(Vec<String>, Option<String>),
    /// A file of URLs, one a line (`-`: standard input).
    UrlsFile(std::path::PathBuf),
}

/// Exit codes: 0 every URL cleared; 1 some URL failed (or the server refused); 2 bad input.
pub const FAILED: i32 = 1;
pub const REFUSED_INPUT: i32 = 2;

struct Api {
    client: reqwest::Client,
    server: String,
    token: String,
}

impl Api {
    fn new(server: &str, token: &str) -> anyhow::Result<Self> {
        let server = server.trim().trim_end_matches('/').to_string();
        anyhow::ensure!(
            server.starts_with("http://") || server.starts_with("https://"),
            "--server must be the app's address, e.g. https://invalidator.example.com"
        );
        anyhow::ensure!(
            !token.trim().is_empty(),
            "give an API token with --token or CDN_INVALIDATOR_TOKEN (create one on the API tokens page)"
        );
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            server,
            token: token.trim().to_string(),
        })
    }

    /// Sends a request; returns the status and the JSON body (problem or result).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.server))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.server))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "detail": text }));
        Ok((status, json))
    }
}

/// A problem document in one line: "Not authenticated: The API token is unknown…".
fn problem(status: reqwest::StatusCode, body: &Value) -> String {
    let title = body["title"].as_str().unwrap_or(status.as_str());
    let detail = body["detail"].as_str().unwrap_or_default();
    format!("{title} ({}): {detail}", status.as_u16())
}

/// Queues an invalidation; with `wait`, follows it to the end. Returns the exit code.
pub async fn invalidate(
    server: &str,
    token: &str,
    source: Source,
    key: Option<String>,
    wait: bool,
) -> anyhow::Result<i32> {
    let api = Api::new(server, token)?;
    let body = match source {
        Source::Assets(ids, None) => json!({ "assets": ids }),
        Source::Assets(ids, Some(scope)) => json!({ "assets": ids, "scope": scope }),
        Source::UrlsFile(path) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading URLs from stdin")?
            } else {
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
            };
            let urls: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            json!({ "urls": urls })
        }
    };
    let (status, created) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/invalidations",
            Some(body),
            key.as_deref(),
        )
        .await?;
    if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
        eprintln!("{}", problem(status, &created));
        for e in created["errors"].as_array().into_iter().flatten() {
            eprintln!(
                "  line {}: {}: {}",
                e["line"],
                e["url"].as_str().or(e["id"].as_str()).unwrap_or_default(),
                e["message"].as_str().unwrap_or_default()
            );
        }
        return Ok(REFUSED_INPUT);
    }
    if !status.is_success() {
        eprintln!("{}", problem(status, &created));
        return Ok(FAILED);
    }
    let id = created["id"]
        .as_i64()
        .context("the server's answer has no id")?;
    eprintln!(
        "invalidation #{id} queued: {} {}, estimated {}",
        created["total"],
        rows_noun(&created),
        created["estimate"].as_str().unwrap_or("?")
    );
    println!("{id}");
    if wait { follow(&api, id).await } else { Ok(0) }
}

/// Shows invalidation `id`; with `wait`, follows it to the end. Returns the exit code.
pub async fn status(server: &str, token: &str, id: i64, wait: bool) -> anyhow::Result<i32> {
    let api = Api::new(server, token)?;
    if wait {
        return follow(&api, id).await;
    }
    let (status, inv) = api
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/invalidations/{id}?limit=1"),
            None,
            None,
        )
        .await?;
    if !status.is_success() {
        eprintln!("{}", problem(status, &inv));
        return Ok(FAILED);
    }
    print_summary(&inv);
    finished_code(&api, id, &inv).await
}

/// What an invalidation's rows are, for messages: URLs, cache tags, path prefixes, sites.
fn rows_noun(inv: &Value) -> &'static str {
    let total = inv["total"].as_u64().unwrap_or(0) as usize;
    match inv["scope"].as_str().and_then(Scope::parse) {
        Some(scope) if scope != Scope::Urls => scope.noun(total),
        _ => "URLs",
    }
}

fn print_summary(inv: &Value) {
    let c = &inv["counts"];
    println!(
        "#{} {}: {} {}, {} succeeded, {} failed, {} submitted, {} queued or retrying",
        inv["id"],
        inv["status"].as_str().unwrap_or("?"),
        inv["total"],
        rows_noun(inv),
        c["succeeded"],
        c["failed"],
        c["submitted"],
        c["queued"].as_i64().unwrap_or(0) + c["retrying"].as_i64().unwrap_or(0)
    );
}

fn is_finished(inv: &Value) -> bool {
    matches!(
        inv["status"].as_str(),
        Some("succeeded" | "partially_failed" | "failed")
    )
}

/// Polls until the invalidation is finished, with a progress bar on a terminal and a line
/// every few seconds otherwise; then prints the failed URLs with their reasons.
async fn follow(api: &Api, id: i64) -> anyhow::Result<i32> {
    let path = format!("/api/v1/invalidations/{id}?limit=1");
    let mut progress: Option<Progress> = None;
    loop {
        let (status, inv) = api.send(reqwest::Method::GET, &path, None, None).await?;
        if !status.is_success() {
            eprintln!("{}", problem(status, &inv));
            return Ok(FAILED);
        }
        let total = inv["total"].as_u64().unwrap_or(0);
        let done = inv["counts"]["succeeded"].as_u64().unwrap_or(0)
            + inv["counts"]["failed"].as_u64().unwrap_or(0);
        progress
            .get_or_insert_with(|| Progress::new("clearing", total, Unit::Urls))
            .set(done);
        if is_finished(&inv) {
            if let Some(p) = progress.take() {
                p.finish();
            }
            print_summary(&inv);
            return finished_code(api, id, &inv).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// For a finished invalidation: prints every failed URL with its reason; 1 when any failed.
/// An unfinished one is 0 (nothing failed yet).
async fn finished_code(api: &Api, id: i64, inv: &Value) -> anyhow::Result<i32> {
    if !is_finished(inv) || inv["counts"]["failed"].as_i64().unwrap_or(0) == 0 {
        return Ok(0);
    }
    let mut next = Some(format!(
        "/api/v1/invalidations/{id}?status=failed&limit=1000"
    ));
    while let Some(path) = next {
        let (status, page) = api.send(reqwest::Method::GET, &path, None, None).await?;
        if !status.is_success() {
            eprintln!("{}", problem(status, &page));
            break;
        }
        for u in page["urls"].as_array().into_iter().flatten() {
            println!(
                "FAILED {} {}",
                u["url"].as_str().unwrap_or_default(),
                u["error"].as_str().unwrap_or_default()
            );
        }
        next = page["urls_next"].as_str().map(str::to_string);
    }
    Ok(FAILED)
}
