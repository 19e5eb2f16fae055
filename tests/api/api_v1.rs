//! The JSON API: tokens (page and CLI), bearer authentication, the same rules as the pages,
//! problem+json errors, idempotency and throttling.

use crate::helpers::*;
use crate::purge_node::PurgeNode;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Creates a token named `name` on `b`'s API tokens page; returns its text.
pub async fn create_token(b: &Browser, name: &str) -> String {
    let csrf = b.csrf_from("/tokens").await;
    let r = b
        .post_form(
            "/tokens",
            &[("action", "create"), ("name", name), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = scraper::Html::parse_document(&r.text().await.unwrap());
    texts(&html, "#token-value").remove(0)
}

/// A client with no cookies, as a pipeline would be.
fn api(app: &TestApp) -> (reqwest::Client, String) {
    (reqwest::Client::new(), app.address.clone())
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let (client, base) = api(app);
    let r = client
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_token_invalidates_urls_and_assets_as_the_page_would() {
    let node = PurgeNode::start(200).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings(
            "server.com",
            "Company/<ID>?$product$\n<ID>",
            &node.base(),
            "",
        )
        .await;
    let user = app.user(&admin, "ursula").await;
    let token = create_token(&user, "nightly publish").await;
    assert!(token.starts_with("cdni_"), "{token}");

    // URLs.
    let (client, base) = api(&app);
    let r = client
        .post(format!("{base}/api/v1/invalidations"))
        .bearer_auth(&token)
        .json(&json!({"urls": ["https://server.com/is/image/a", "https://server.com/is/image/b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_i64().unwrap();
    assert_eq!(location, format!("/api/v1/invalidations/{id}"));
    assert_eq!(created["total"], 2);
    assert_eq!(created["created_by"], "ursula");
    let done = user.wait_finished(id).await;
    assert_eq!(done["status"], "succeeded");
    let (status, shown) = {
        let r = client
            .get(format!("{base}{location}?limit=1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["counts"]["succeeded"], 2);
    assert_eq!(shown["urls"].as_array().unwrap().len(), 1);
    assert!(shown["urls_next"].as_str().unwrap().contains("after=0"));

    // Asset IDs, expanded by the saved template exactly as Invalidate CDN prefills them.
    let (status, created) = post(
        &app,
        &token,
        "/api/v1/invalidations",
        json!({"assets": ["Backpack_B", "Tent_2P", "Backpack_B"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    let urls: Vec<String> = created["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["url"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        urls,
        [
            "https://server.com/is/image/Company/Backpack_B?$product$",
            "https://server.com/is/image/Backpack_B",
            "https://server.com/is/image/Company/Tent_2P?$product$",
            "https://server.com/is/image/Tent_2P",
        ]
    );
    user.wait_finished(id).await;

    // The page lists the token, with its last use.
    let html = user.page("/tokens").await;
    assert_eq!(
        texts(&html, "#tokens tbody td:first-child"),
        ["nightly publish"]
    );
    assert_ne!(texts(&html, "#tokens .last-used")[0], "never");
    // The token itself is not on the page any more, nor stored.
    assert!(!html.html().contains(&token));
    let stored: Vec<(String,)> =
        raw_rows(&app.database_url, "SELECT token_hash FROM api_tokens").await;
    assert!(stored.iter().all(|(h,)| !h.contains(&token[5..])));
}

#[tokio::test]
async fn bad_lists_get_one_error_per_line_and_nothing_is_queued() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "", "", "").await;
    let token = create_token(&admin, "ci").await;
    let (status, problem) = post(
        &app,
        &token,
        "/api/v1/invalidations",
        json!({"urls": ["https://server.com/ok", "ftp://server.com/x", "https://evil.com/y"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["status"], 422);
    assert_eq!(problem["title"], "Invalid input");
    assert_eq!(
        problem["detail"],
        "2 URLs are not valid; nothing was queued."
    );
    let errors = problem["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["line"], 2);
    assert_eq!(errors[0]["url"], "ftp://server.com/x");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("only http and https")
    );
    assert_eq!(errors[1]["line"], 3);
    assert!(errors[1]["message"].as_str().unwrap().contains("evil.com"));
    // Both forms at once, neither, an empty template, unknown fields: refused.
    for body in [
        json!({"urls": ["https://server.com/a"], "assets": ["A"]}),
        json!({}),
        json!({"assets": ["A"]}),
    ] {
        let (status, problem) = post(&app, &token, "/api/v1/invalidations", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    }
    let (status, problem) =
        post(&app, &token, "/api/v1/invalidations", json!({"url": ["x"]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (status, _) = post(&app, &token, "/api/v1/invalidations", json!({"urls": []})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let count: Vec<(i64,)> =
        raw_rows(&app.database_url, "SELECT COUNT(*) FROM invalidations").await;
    assert_eq!(count[0].0, 0, "nothing was queued");
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_result() {
    let app = spawn_app_with(|c| c.run_worker = false).await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "", "", "").await;
    let token = create_token(&admin, "ci").await;
    let (client, base) = api(&app);
    let send = || {
        client
            .post(format!("{base}/api/v1/invalidations"))
            .bearer_auth(&token)
            .header("Idempotency-Key", "publish-2026-12-03")
            .json(&json!({"urls": ["https://server.com/a"]}))
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    let count: Vec<(i64,)> =
        raw_rows(&app.database_url, "SELECT COUNT(*) FROM invalidations").await;
    assert_eq!(count[0].0, 1);
}

#[tokio::test]
async fn only_a_live_token_of_an_enabled_user_is_accepted_and_never_a_cookie() {
    let app = spawn_app_with(|c| c.run_worker = false).await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "", "", "").await;
    let user = app.user(&admin, "ursula").await;
    let token = create_token(&user, "ci").await;
    let body = json!({"urls": ["https://server.com/a"]});
    let (client, base) = api(&app);
    let url = format!("{base}/api/v1/invalidations");

    // No token; a logged-in browser's cookie without a token; a malformed or unknown token.
    let r = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = user.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not a login cookie"),
        "{problem}"
    );
    for bad in ["nonsense", &format!("cdni_{}", "0".repeat(64))] {
        let (status, _) = post(&app, bad, "/api/v1/invalidations", body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    let (status, _) = post(&app, &token, "/api/v1/invalidations", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);

    // Revoked: refused at once.
    let html = user.page("/tokens").await;
    let id = attr(&html, "#tokens tbody tr", "data-token").unwrap();
    let csrf = user.csrf_from("/tokens").await;
    let r = user
        .post_form(
            "/tokens",
            &[
                ("action", "revoke"),
                ("token_id", &id),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (status, _) = post(&app, &token, "/api/v1/invalidations", body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A disabled owner's token is refused too.
    let other = create_token(&user, "second").await;
    let (status, _) = post(&app, &other, "/api/v1/invalidations", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let html = admin.page("/users").await;
    let uid = attr(&html, "tr[data-user=ursula] input[name=user_id]", "value").unwrap();
    let csrf = admin.csrf_from("/users").await;
    admin
        .post_form(
            "/users",
            &[
                ("action", "disable"),
                ("user_id", &uid),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    let (status, _) = post(&app, &other, "/api/v1/invalidations", body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_with_retry_after() {
    let app = spawn_app_with(|c| c.run_worker = false).await;
    let admin = app.admin().await;
    let token = create_token(&admin, "busy").await;
    let (client, base) = api(&app);
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let r = client
            .get(format!("{base}/api/v1/invalidations/999"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status());
    }
    // The burst passes (404: there is no such invalidation), then the rate holds.
    assert_eq!(statuses[0], StatusCode::NOT_FOUND);
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn retry_through_the_api_queues_the_failed_urls() {
    let node = PurgeNode::start(403).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "", &node.base(), "")
        .await;
    let token = create_token(&admin, "ci").await;
    let (status, created) = post(
        &app,
        &token,
        "/api/v1/invalidations",
        json!({"urls": ["https://server.com/a"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_i64().unwrap();
    assert_eq!(admin.wait_finished(id).await["status"], "failed");
    let (status, retried) = post(
        &app,
        &token,
        &format!("/api/v1/invalidations/{id}/retry"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{retried}");
    assert_eq!(retried["retry_of"], id);
    let (status, problem) = post(&app, &token, "/api/v1/invalidations/999/retry", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
}

#[tokio::test]
async fn the_list_pages_by_key_newest_first_with_filters() {
    let app = spawn_app_with(|c| c.run_worker = false).await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "", "", "").await;
    let user = app.user(&admin, "ursula").await;
    let token = create_token(&admin, "ci").await;
    let mut ids = Vec::new();
    for (who, n) in [(&admin, 1), (&user, 2), (&admin, 3)] {
        ids.push(
            who.invalidate_urls(&format!("https://server.com/{n}"))
                .await,
        );
    }
    let (client, base) = api(&app);
    let get = |path: String| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let r = client.get(path).bearer_auth(&token).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    let first = get(format!("{base}/api/v1/invalidations?limit=2")).await;
    let listed: Vec<i64> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [ids[2], ids[1]]);
    let next = first["next"].as_str().unwrap();
    let second = get(format!("{base}{next}")).await;
    assert_eq!(second["items"][0]["id"], ids[0]);
    assert!(second["next"].is_null());
    let by_user = get(format!("{base}/api/v1/invalidations?user=ursula")).await;
    assert_eq!(by_user["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_user["items"][0]["created_by"], "ursula");
    let r = client
        .get(format!("{base}/api/v1/invalidations?status=nonsense"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_history_exports_as_csv_with_its_filters() {
    let app = spawn_app_with(|c| c.run_worker = false).await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "", "", "").await;
    let user = app.user(&admin, "ursula").await;
    admin
        .invalidate_urls("https://server.com/a\nhttps://server.com/b")
        .await;
    user.invalidate_urls("https://server.com/c, \"quoted\"")
        .await;
    let html = admin.page("/invalidations?user=ursula").await;
    assert_eq!(
        attr(&html, "#export-csv", "href").unwrap(),
        "/invalidations.csv?status=&user=ursula&url="
    );
    let r = admin.get("/invalidations.csv").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let text = r.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(
        &header[..5],
        ["id", "created_at", "created_by", "status", "provider"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!((&rows[0][2], &rows[0][5]), ("ursula", "1"));
    assert_eq!((&rows[1][2], &rows[1][5]), ("admin", "2"));
    let only = admin
        .get("/invalidations.csv?user=ursula")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(only.lines().count(), 2, "{only}");
}

/// The CLI as a pipeline runs it, through the real binary against a real Varnish: URLs on
/// stdin, `--wait`, exit codes, failed URLs printed.
#[tokio::test]
async fn the_cli_invalidates_waits_and_exits_by_the_outcome() {
    let origin = crate::varnish::Origin::start().await;
    let varnish = crate::varnish::Varnish::start(origin.port).await;
    for path in ["/a", "/b"] {
        varnish.fetch(path, "server.com").await;
        assert_eq!(varnish.fetch(path, "server.com").await.1, "HIT");
    }
    let app = spawn_app().await;
    let admin = app.admin().await;
    let node = format!("http://127.0.0.1:{}", varnish.port);
    admin.save_settings("server.com", "<ID>", &node, "").await;
    let token = create_token(&admin, "pipeline").await;
    let run = |args: Vec<String>, stdin: &'static str| {
        let token = token.clone();
        let server = app.address.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cdn-invalidator"))
                    .args(&args)
                    .env("CDN_INVALIDATOR_SERVER", server)
                    .env("CDN_INVALIDATOR_TOKEN", token)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(stdin.as_bytes())
                    .unwrap();
                let out = child.wait_with_output().unwrap();
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).to_string(),
                    String::from_utf8_lossy(&out.stderr).to_string(),
                )
            })
            .await
            .unwrap()
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (code, out, err) = run(
        args(&["invalidate", "--urls-file", "-", "--wait"]),
        "https://server.com/a\nhttps://server.com/b\n",
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let id: i64 = out.lines().next().unwrap().trim().parse().unwrap();
    assert!(
        out.contains("succeeded: 2 URLs, 2 succeeded, 0 failed"),
        "{out}"
    );
    assert!(
        err.contains(&format!("invalidation #{id} queued: 2 URLs")),
        "{err}"
    );
    // The cache really let go of both.
    for path in ["/a", "/b"] {
        assert_eq!(varnish.fetch(path, "server.com").await.1, "MISS", "{path}");
    }

    let (code, out, _) = run(args(&["status", &id.to_string()]), "").await;
    assert_eq!(code, Some(0));
    assert!(out.starts_with(&format!("#{id} succeeded")), "{out}");

    // A refused list: exit 2 with each bad line; nothing queued.
    let (code, _, err) = run(
        args(&["invalidate", "--urls-file", "-"]),
        "https://server.com/ok\nhttps://evil.com/x\n",
    )
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("line 2: https://evil.com/x:"), "{err}");

    // Failed URLs: exit 1, each printed with its reason.
    let refusing = PurgeNode::start(403).await;
    admin
        .save_settings("server.com", "<ID>", &refusing.base(), "")
        .await;
    let (code, out, err) = run(
        args(&["invalidate", "--assets", "Backpack_B", "--wait"]),
        "",
    )
    .await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("FAILED https://server.com/is/image/Backpack_B HTTP 403 Forbidden"),
        "{out}"
    );
    // Every cached variant, as the admin mapped assets: the assets' tags.
    admin.save_settings("server.com", "<ID>", &node, "").await;
    assert_eq!(
        admin.save_variants("tags", "xkey").await.status(),
        reqwest::StatusCode::SEE_OTHER
    );
    let (code, out, err) = run(
        args(&["invalidate", "--assets", "Backpack_B", "--scope", "tags"]),
        "",
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains("queued: 1 cache tag,"), "{err}");
    let (code, _, err) = run(
        args(&["invalidate", "--assets", "Shoe 2", "--scope", "tags"]),
        "",
    )
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("line 1: Shoe 2:"), "{err}");
    // A bad token: exit 1 with the server's words.
    let (code, _, err) = run(
        args(&["status", &id.to_string(), "--token", "cdni_nope"]),
        "",
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(err.contains("Not authenticated (401)"), "{err}");
}

/// The OpenAPI description is generated from the code and covers every `/api/v1` route.
#[tokio::test]
async fn the_openapi_description_lists_every_api_route() {
    let app = spawn_app().await;
    let spec: Value = reqwest::get(format!("{}/api/v1/openapi.json", app.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        spec["openapi"]
    );
    let mut covered = 0;
    for (method, path, _) in cdn_invalidator::routes::ROUTES {
        if !path.starts_with("/api/v1/") || *path == "/api/v1/openapi.json" {
            continue;
        }
        assert!(
            spec["paths"][*path][*method].is_object(),
            "{method} {path} is not in the OpenAPI description"
        );
        covered += 1;
    }
    assert!(covered >= 4);
    assert_eq!(
        spec["components"]["securitySchemes"]["token"]["scheme"],
        "bearer"
    );
    assert!(spec["components"]["schemas"]["Problem"].is_object());
}

/// `/metrics` is served only on the metrics listener, in the Prometheus text format, with
/// purge outcomes by provider, the queue, and request latency by route pattern; every answer
/// carries a request id.
#[tokio::test]
async fn metrics_are_on_their_own_listener_and_requests_carry_an_id() {
    let node = PurgeNode::start(200).await;
    let app = spawn_app_with(|c| c.metrics_listen = Some("127.0.0.1:0".into())).await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "", &node.base(), "")
        .await;
    let id = admin
        .invalidate_urls("https://server.com/m1\nhttps://server.com/m2")
        .await;
    admin.wait_finished(id).await;
    admin.page(&format!("/invalidations/{id}")).await;

    // Not on the app's own address, with or without a login.
    assert_eq!(admin.get("/metrics").await.status(), StatusCode::NOT_FOUND);
    let metrics_base = app.metrics_address.clone().expect("a metrics listener");
    // Valid Prometheus text, and the counters move with a purge.
    let scrape = || async {
        let text = reqwest::get(format!("{metrics_base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text")
    };
    let succeeded = |scrape: &prometheus_parse::Scrape| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == "cdn_urls_total"
                    && s.labels.get("provider") == Some("http_purge")
                    && s.labels.get("outcome") == Some("succeeded")
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let before = succeeded(&scrape().await);
    let moved = admin
        .invalidate_urls("https://server.com/m3\nhttps://server.com/m4\nhttps://server.com/m5")
        .await;
    admin.wait_finished(moved).await;
    let after = succeeded(&scrape().await);
    assert!(after >= before + 3.0, "{before} → {after}");
    let r = reqwest::get(format!("{metrics_base}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // Counters are per process (other tests run beside this one): at least this test's.
    assert!(value(r#"cdn_urls_total{provider="http_purge",outcome="succeeded"}"#) >= 2.0);
    assert!(value(r#"cdn_purge_requests_total{provider="http_purge"}"#) >= 1.0);
    assert!(text.contains("cdn_urls_queued "), "{text}");
    assert!(text.contains("cdn_urls_in_flight "), "{text}");
    assert!(text.contains(r#"cdn_invalidation_duration_seconds_bucket{provider="http_purge""#));
    assert!(text.contains(r#"cdn_provider_request_duration_seconds_bucket{provider="http_purge""#));
    // Latency by route pattern, never by raw path.
    assert!(text.contains(r#"route="/invalidations/{id}""#), "{text}");
    assert!(
        !text.contains(&format!(r#"route="/invalidations/{id}""#).replace("{id}", &id.to_string()))
    );

    // A request id on every answer: the caller's when it is a sane token, else a new one.
    let r = admin.get("/healthz").await;
    let given = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(given.len(), 16);
    let r = admin
        .client
        .get(format!("{}/healthz", app.address))
        .header("X-Request-Id", "pipeline-run-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "pipeline-run-42");
    let r = admin
        .client
        .get(format!("{}/healthz", app.address))
        .header("X-Request-Id", "<script>")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "<script>");
}

/// The catalogue through the API: anyone's token searches it; only an admin's writes it, by
/// the CSV import's rules, all or nothing, and learns which assets changed.
#[tokio::test]
async fn assets_are_searched_by_any_token_and_written_by_an_admins() {
    let app = spawn_app_with(|c| c.run_worker = false).await;
    let admin = app.admin().await;
    let user = app.user(&admin, "ursula").await;
    let admin_token = create_token(&admin, "sync").await;
    let user_token = create_token(&user, "read").await;
    let (client, base) = api(&app);
    let put = |token: &str, body: Value| {
        client
            .put(format!("{base}/api/v1/assets"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let body = json!({"assets": [
        {"id": "Tent_2P", "name": "Tent", "type": "image"},
        {"id": "Lamp_X", "name": "Lamp"}
    ]});
    let r = put(&user_token, body.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = put(&admin_token, body).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report: Value = r.json().await.unwrap();
    assert_eq!(
        (report["new"].as_i64(), report["changed"].as_i64()),
        (Some(2), Some(0))
    );
    let r = put(
        &admin_token,
        json!({"assets": [{"id": "Tent_2P", "name": "Tent for two"}, {"id": "Lamp_X", "name": "Lamp"}]}),
    )
    .await
    .unwrap();
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["changed_ids"], json!(["Tent_2P"]));
    assert_eq!(report["unchanged"], 1);

    // A bad item or a repeated ID: 422 naming each, nothing written.
    let r = put(
        &admin_token,
        json!({"assets": [{"id": "Ok_1", "name": "x"}, {"id": "", "name": "y"}, {"id": "Ok_1", "name": "z"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["errors"][0]["line"], 2);
    assert_eq!(problem["errors"][0]["id"], "");

    let r = client
        .get(format!("{base}/api/v1/assets?q=tent"))
        .bearer_auth(&user_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let found: Value = r.json().await.unwrap();
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["name"], "Tent for two");
    assert_eq!(found["count"], "1");
    let none: Vec<(i64,)> = raw_rows(
        &app.database_url,
        "SELECT COUNT(*) FROM assets WHERE id = 'Ok_1'",
    )
    .await;
    assert_eq!(none[0].0, 0);
}

/// A body over the limit is refused as a problem, before anything is read into memory.
#[tokio::test]
async fn an_oversized_body_gets_413_as_a_problem() {
    let app = spawn_app_with(|c| c.max_form_bytes = 2_000).await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "", "", "").await;
    let token = create_token(&admin, "ci").await;
    let urls: Vec<String> = (0..200)
        .map(|i| format!("https://server.com/{i:04}"))
        .collect();
    let (status, problem) = post(
        &app,
        &token,
        "/api/v1/invalidations",
        json!({ "urls": urls }),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
    assert_eq!(problem["title"], "Request too large");
}

/// `--log-format json`: every log line is one JSON object, for log collectors.
#[test]
fn log_lines_are_json_objects_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdn-invalidator"))
        .args(["--log-format", "json", "--database"])
        .arg(format!("sqlite://{}/x.db", dir.path().display()))
        .arg("migrate")
        .output()
        .unwrap();
    assert!(out.status.success());
    let logs = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "some log line");
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
}
