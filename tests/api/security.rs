//! Who may do what: every route in one table, CSRF, headers, throttling, limits, SSRF, XSS, secrets.

use crate::helpers::*;
use crate::purge_node::PurgeNode;
use reqwest::StatusCode;
use scraper::Html;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone (login page, health, static files).
    Public,
    /// Only before the first user exists.
    Setup,
    /// Any logged-in user.
    User,
    /// Admins only.
    Admin,
    /// The JSON API: a bearer token, never a cookie (see `api_v1.rs`).
    Token,
    /// The JSON API: an admin's bearer token.
    AdminToken,
}
use Access::*;

/// (method, route, a concrete path, who may use it). Must list exactly the app's routes.
const TABLE: &[(&str, &str, &str, Access)] = &[
    ("get", "/healthz", "/healthz", Public),
    ("get", "/static/{file}", "/static/app.css", Public),
    ("get", "/", "/", Public),
    ("get", "/setup", "/setup", Setup),
    ("post", "/setup", "/setup", Setup),
    ("get", "/login", "/login", Public),
    ("post", "/login", "/login", Public),
    ("post", "/logout", "/logout", User),
    ("get", "/settings", "/settings", Admin),
    ("post", "/settings", "/settings", Admin),
    (
        "get",
        "/settings/preview",
        "/settings/preview?template=%3CID%3E",
        Admin,
    ),
    ("post", "/settings/test", "/settings/test", Admin),
    ("get", "/settings/variants", "/settings/variants", Admin),
    ("post", "/settings/variants", "/settings/variants", Admin),
    (
        "post",
        "/settings/purge-everything",
        "/settings/purge-everything",
        Admin,
    ),
    ("get", "/users", "/users", Admin),
    ("post", "/users", "/users", Admin),
    ("get", "/assets", "/assets", User),
    ("post", "/assets/import", "/assets/import", Admin),
    ("get", "/invalidate", "/invalidate", User),
    ("post", "/invalidate", "/invalidate", User),
    ("post", "/invalidations", "/invalidations", User),
    ("get", "/invalidations", "/invalidations", User),
    ("get", "/invalidations/{id}", "/invalidations/1", User),
    (
        "post",
        "/invalidations/{id}/retry",
        "/invalidations/1/retry",
        User,
    ),
    (
        "post",
        "/invalidations/{id}/check",
        "/invalidations/1/check",
        User,
    ),
    (
        "post",
        "/invalidations/{id}/again",
        "/invalidations/1/again",
        User,
    ),
    ("get", "/tokens", "/tokens", User),
    ("get", "/invalidations.csv", "/invalidations.csv", User),
    ("post", "/tokens", "/tokens", User),
    (
        "get",
        "/api/v1/openapi.json",
        "/api/v1/openapi.json",
        Public,
    ),
    ("get", "/api/v1/assets", "/api/v1/assets", Token),
    ("put", "/api/v1/assets", "/api/v1/assets", AdminToken),
    (
        "get",
        "/api/v1/invalidations",
        "/api/v1/invalidations",
        Token,
    ),
    (
        "post",
        "/api/v1/invalidations",
        "/api/v1/invalidations",
        Token,
    ),
    (
        "get",
        "/api/v1/invalidations/{id}",
        "/api/v1/invalidations/1",
        Token,
    ),
    (
        "post",
        "/api/v1/invalidations/{id}/retry",
        "/api/v1/invalidations/1/retry",
        Token,
    ),
];

#[test]
fn the_table_lists_every_route_of_the_app() {
    let app: BTreeSet<(&str, &str)> = cdn_invalidator::routes::ROUTES
        .iter()
        .map(|(m, p, _)| (*m, *p))
        .collect();
    let table: BTreeSet<(&str, &str)> = TABLE.iter().map(|(m, r, _, _)| (*m, *r)).collect();
    let missing: Vec<_> = app.difference(&table).collect();
    let stale: Vec<_> = table.difference(&app).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the security table: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "table rows for routes the app does not have: {stale:?}"
    );
}

async fn send(
    b: &Browser,
    method: &str,
    path: &str,
    json: bool,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let url = format!("{}{path}", b.base);
    let mut req = if method == "get" {
        b.client.get(url)
    } else {
        let body = serde_html_form::to_string(fields).unwrap();
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        b.client
            .request(method, url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
    };
    if json {
        req = req.header("Accept", "application/json");
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn anonymous_visitors_are_sent_to_login_or_get_401_as_json() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "<ID>", "", "").await;
    admin.invalidate_urls("https://server.com/is/image/a").await;
    let anon = app.browser();
    anon.get("/login").await; // a session with a CSRF token, as a real visitor would have
    let token = anon.csrf_from("/login").await;
    for (method, route, path, access) in TABLE {
        if matches!(access, Token | AdminToken) {
            // The API answers 401 to a visitor with a session but no token, HTML or JSON.
            for json in [false, true] {
                let r = send(&anon, method, path, json, &[]).await;
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {route}");
            }
            continue;
        }
        if !matches!(access, User | Admin) {
            continue;
        }
        let r = send(&anon, method, path, false, &[("csrf_token", &token)]).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{method} {route}");
        assert_eq!(r.headers()["location"], "/login", "{method} {route}");
        let r = send(&anon, method, path, true, &[("csrf_token", &token)]).await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {route} as JSON"
        );
    }
    for (method, route, path, access) in TABLE {
        if *access == Public && *method == "get" {
            let r = send(&anon, method, path, false, &[]).await;
            assert!(
                r.status() == StatusCode::OK || r.status() == StatusCode::SEE_OTHER,
                "{method} {route}"
            );
        }
    }
}

#[tokio::test]
async fn users_get_403_on_admin_routes() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.user(&admin, "ursula").await;
    let token = user.csrf_from("/assets").await;
    for (method, route, path, access) in TABLE {
        if *access != Admin {
            continue;
        }
        let r = send(&user, method, path, false, &[("csrf_token", &token)]).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {route}");
    }
    // And the multipart import with a valid token.
    assert_eq!(
        user.import_csv("id,name\nx,X\n").await.status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn every_post_needs_the_sessions_csrf_token() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "<ID>", "", "").await;
    admin.invalidate_urls("https://server.com/is/image/a").await;
    for (method, route, path, access) in TABLE {
        if *method != "post" || matches!(access, Setup | Token | AdminToken) {
            continue;
        }
        let r = send(&admin, method, path, false, &[]).await;
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "{method} {route} without a token"
        );
        let r = send(&admin, method, path, false, &[("csrf_token", "forged")]).await;
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "{method} {route} with a forged token"
        );
    }
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::text("id,name\nx,X\n").file_name("a.csv"),
    );
    let r = admin
        .client
        .post(format!("{}/assets/import", admin.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A token from another session is no good either.
    let other = app.browser();
    let foreign = other.csrf_from("/login").await;
    let r = admin
        .post_form(
            "/settings",
            &[("publish_server", "evil.com"), ("csrf_token", &foreign)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let html = admin.page("/settings").await;
    assert_eq!(
        attr(&html, "#publish_server", "value").unwrap(),
        "https://server.com"
    );
}

#[tokio::test]
async fn pages_carry_security_headers_and_no_inline_script() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for path in [
        "/login",
        "/assets",
        "/settings",
        "/invalidate",
        "/invalidations",
        "/users",
    ] {
        let r = admin.get(path).await;
        let h = r.headers().clone();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "same-origin", "{path}");
        let html = Html::parse_document(&r.text().await.unwrap());
        for script in html.select(&sel("script")) {
            assert!(
                script.value().attr("src").is_some(),
                "{path} has an inline script"
            );
            assert!(script.text().collect::<String>().trim().is_empty());
        }
        assert!(
            html.select(&sel(
                "[onclick], [onload], [onerror], [onchange], [onsubmit]"
            ))
            .next()
            .is_none(),
            "{path}"
        );
    }
}

#[tokio::test]
async fn five_failed_logins_are_throttled_per_user_and_per_address() {
    let app = spawn_app().await;
    app.admin().await;
    let b = app.browser();
    for i in 0..5 {
        assert_eq!(
            b.login(ADMIN, "wrong-password").await.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {i}"
        );
    }
    let r = b.login(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    let wait: i64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((14 * 60..=15 * 60).contains(&wait), "{wait}");
    let html = Html::parse_document(&r.text().await.unwrap());
    assert!(
        texts(&html, "[role=alert]")[0].contains("Try again in 15 minutes"),
        "{:?}",
        texts(&html, "[role=alert]")
    );
    // The same address trying other (even unknown) user names is throttled too.
    let r = b.login("nobody", "whatever").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn an_unknown_user_name_costs_the_same_time_as_a_wrong_password() {
    use std::time::Instant;
    // Room for the eight failures this test makes from one address.
    let app = spawn_app_with(|c| c.login_max_failures = 100).await;
    app.admin().await;
    // Alternate the two kinds and compare medians, so machine noise hits both alike.
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..4 {
        let b = app.browser();
        let token = b.csrf_from("/login").await;
        let started = Instant::now();
        let r = b
            .post_form(
                "/login",
                &[
                    ("username", ADMIN),
                    ("password", "wrong-password"),
                    ("csrf_token", &token),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        known.push(started.elapsed());
        let name = format!("ghost{i}");
        let started = Instant::now();
        let r = b
            .post_form(
                "/login",
                &[
                    ("username", &name),
                    ("password", "wrong-password"),
                    ("csrf_token", &token),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        unknown.push(started.elapsed());
    }
    known.sort();
    unknown.sort();
    let ratio = unknown[2].as_secs_f64() / known[2].as_secs_f64();
    // Without the dummy hash an unknown name answers in well under a tenth of the time.
    assert!(
        (0.33..3.0).contains(&ratio),
        "unknown/known median time ratio {ratio:.2}: {unknown:?} vs {known:?}"
    );
}

#[tokio::test]
async fn oversized_forms_and_uploads_get_413_and_write_nothing() {
    let app = spawn_app_with(|c| {
        c.max_form_bytes = 4 * 1024;
        c.max_upload_bytes = 2 * 1024;
    })
    .await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "", "", "").await;
    let page = admin.page("/invalidate").await;
    let urls: String = (0..200)
        .map(|i| format!("https://server.com/is/image/{i}\n"))
        .collect();
    let r = admin.continue_with(&page, &urls).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let html = Html::parse_document(&r.text().await.unwrap());
    assert!(texts(&html, "#error-message")[0].contains("larger than this server accepts"));

    let csv: String = std::iter::once("id,name\n".to_string())
        .chain((0..200).map(|i| format!("a{i},Asset {i}\n")))
        .collect();
    let r = admin.import_csv(&csv).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().await.unwrap().contains("Split the catalogue"));

    assert!(texts(&admin.page("/invalidations").await, "#history tbody tr").is_empty());
    assert!(texts(&admin.page("/assets").await, "tbody tr").is_empty());
}

/// Purges go only where the URL list and settings allow, and redirects are never followed.
#[tokio::test]
async fn purges_never_follow_redirects_or_leave_the_allowed_hosts() {
    let elsewhere = PurgeNode::start(200).await;
    // A "node" that redirects every PURGE elsewhere.
    let redirector = crate::purge_node::PurgeNode::start_redirecting(&elsewhere.base()).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "<ID>", &redirector.base(), "")
        .await;
    let id = admin.invalidate_urls("https://server.com/is/image/a").await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "failed");
    assert_eq!(json["urls"][0]["http_status"], 307);
    assert_eq!(redirector.received().len(), 1);
    assert!(elsewhere.received().is_empty(), "a redirect was followed");

    // Hosts that are not the publish server or allowed are refused before anything is stored.
    let page = admin.page("/invalidate").await;
    let target = format!("{}/is/image/a", elsewhere.base());
    let r = admin.continue_with(&page, &target).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(elsewhere.received().is_empty());
}

/// Script payloads in every user-supplied text come back as text, never as markup.
#[tokio::test]
async fn payloads_are_escaped_everywhere() {
    let payload = r#"<script>alert(1)</script><img src=x onerror=alert(2)>"#;
    let node = PurgeNode::start(200).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "")
        .await;
    let csv = format!("id,name\n\"{payload}\",\"{payload}\"\n");
    assert_eq!(admin.import_csv(&csv).await.status(), StatusCode::SEE_OTHER);
    let token = admin.csrf_from("/users").await;
    let r = admin
        .post_form(
            "/users",
            &[
                ("action", "add"),
                ("username", "<b>x</b>"),
                ("password", "long-enough-pw"),
                ("role", "user"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, page) = admin.open_invalidate(&[payload]).await;
    let id = admin
        .invalidate_urls(&texts(&page, "textarea[name=urls]")[0])
        .await;
    admin.wait_finished(id).await;
    // A refused URL list echoes the payload back in the error and the textarea.
    let r = admin
        .continue_with(&page, &format!("https://server.com/{payload}\n{payload}"))
        .await;
    let refused = r.text().await.unwrap();
    for body in [
        admin.get("/assets").await.text().await.unwrap(),
        admin.get("/users").await.text().await.unwrap(),
        admin
            .get(&format!("/invalidations/{id}"))
            .await
            .text()
            .await
            .unwrap(),
        refused,
    ] {
        let html = Html::parse_document(&body);
        assert_eq!(
            html.select(&sel("script")).count(),
            1,
            "only the app's own script"
        );
        assert!(
            html.select(&sel("img, b")).next().is_none(),
            "markup was injected"
        );
        assert!(!body.contains("<script>alert"), "raw payload in the page");
    }
    // Still readable as text.
    assert!(
        texts(&admin.page("/assets").await, "tbody td")
            .iter()
            .any(|t| t == payload)
    );
}

/// Guesses sent in parallel are counted before any password is checked: no more than the
/// limit get through, however many arrive at once.
#[tokio::test]
async fn parallel_guesses_cannot_outrun_the_throttle() {
    let app = spawn_app().await;
    app.admin().await;
    let b = app.browser();
    let token = b.csrf_from("/login").await;
    let guesses = (0..20).map(|i| {
        let password = format!("guess-{i}");
        let (b, token) = (&b, token.clone());
        async move {
            b.post_form(
                "/login",
                &[
                    ("username", ADMIN),
                    ("password", &password),
                    ("csrf_token", &token),
                ],
            )
            .await
            .status()
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(checked + refused, 20, "{statuses:?}");
    assert!(checked <= 5, "{checked} guesses were checked: {statuses:?}");
}

/// The API's rows of the table: without a token 401 (a cookie is not one), a user's token on
/// an admin call 403, an admin's token gets past the guard.
#[tokio::test]
async fn api_routes_need_a_token_and_admin_calls_an_admins() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.user(&admin, "ursula").await;
    let user_token = crate::api_v1::create_token(&user, "u").await;
    let admin_token = crate::api_v1::create_token(&admin, "a").await;
    let client = reqwest::Client::new();
    for (method, route, path, access) in TABLE {
        if !matches!(access, Token | AdminToken) {
            continue;
        }
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let url = format!("{}{path}", app.address);
        let send = |token: Option<&str>| {
            let mut req = client
                .request(method.clone(), &url)
                .header("Content-Type", "application/json")
                .body("{}");
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            req.send()
        };
        let r = send(None).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {route}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let as_user = send(Some(&user_token)).await.unwrap().status();
        let as_admin = send(Some(&admin_token)).await.unwrap().status();
        if *access == AdminToken {
            assert_eq!(as_user, StatusCode::FORBIDDEN, "{method} {route} as a user");
        } else {
            assert!(
                ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&as_user),
                "{method} {route} as a user: {as_user}"
            );
        }
        assert!(
            ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&as_admin),
            "{method} {route} as an admin: {as_admin}"
        );
    }
}
