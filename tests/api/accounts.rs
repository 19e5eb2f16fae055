use crate::helpers::*;
use reqwest::StatusCode;
use scraper::Html;

#[tokio::test]
async fn healthz_is_public() {
    let app = spawn_app().await;
    let r = app.browser().get("/healthz").await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn first_run_setup_creates_an_admin_once() {
    let app = spawn_app().await;
    let b = app.browser();
    // Before any user: / and /login lead to setup.
    assert_eq!(b.get("/").await.headers()["location"], "/setup");
    assert_eq!(b.get("/login").await.headers()["location"], "/setup");
    let token = b.csrf_from("/setup").await;
    // A too-short password is refused and creates nothing.
    let r = b
        .post_form(
            "/setup",
            &[
                ("username", "admin"),
                ("password", "short"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("at least 8 characters"));
    let r = b
        .post_form(
            "/setup",
            &[
                ("username", ADMIN),
                ("password", ADMIN_PASSWORD),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // Logged in as admin straight away.
    let html = b.page("/settings").await;
    assert_eq!(texts(&html, ".who"), [ADMIN]);
    // Setup is gone for everyone now.
    assert_eq!(
        app.browser().get("/setup").await.status(),
        StatusCode::NOT_FOUND
    );
    let token = b.csrf_from("/assets").await;
    let r = b
        .post_form(
            "/setup",
            &[
                ("username", "x"),
                ("password", "another-password"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_page_but_login_needs_a_session() {
    let app = spawn_app().await;
    app.admin().await;
    let anon = app.browser();
    for path in [
        "/assets",
        "/invalidate",
        "/invalidations",
        "/invalidations/1",
        "/settings",
        "/users",
    ] {
        let r = anon.get(path).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()["location"], "/login", "{path}");
    }
    assert_eq!(
        anon.get_json("/invalidations/1").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(anon.get("/login").await.status(), StatusCode::OK);
    assert_eq!(anon.get("/static/app.css").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn login_checks_the_password_and_sets_a_safe_cookie() {
    let app = spawn_app().await;
    app.admin().await;
    let b = app.browser();
    let r = b.login(ADMIN, "wrong-password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let html = Html::parse_document(&r.text().await.unwrap());
    assert_eq!(
        texts(&html, "[role=alert]"),
        ["Wrong user name or password."]
    );
    assert_eq!(b.get("/assets").await.status(), StatusCode::SEE_OTHER);
    let r = b.login("nobody", "wrong-password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = b.login(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("cdn_invalidator_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain-http install must not mark the cookie Secure: {cookie}"
    );
    assert_eq!(b.get("/assets").await.status(), StatusCode::OK);

    // Logout ends the session.
    let token = b.csrf_from("/assets").await;
    assert_eq!(
        b.post_form("/logout", &[("csrf_token", &token)])
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(b.get("/assets").await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn secure_cookies_when_served_over_https() {
    let app = spawn_app_with(|c| c.secure_cookies = true).await;
    let b = app.browser();
    let r = b.get("/setup").await;
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn posts_without_a_valid_csrf_token_are_forbidden() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for (path, fields) in [
        (
            "/settings",
            vec![("publish_server", "server.com"), ("template", "<ID>")],
        ),
        (
            "/invalidations",
            vec![("urls", "https://server.com/x"), ("idempotency_key", "k1")],
        ),
        ("/invalidate", vec![("asset_id", "a")]),
        (
            "/users",
            vec![
                ("action", "add"),
                ("username", "eve"),
                ("password", "eve-password"),
                ("role", "admin"),
            ],
        ),
        ("/logout", vec![]),
    ] {
        let r = admin.post_form(path, &fields).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path} without token");
        let mut with_bad = fields.clone();
        with_bad.push(("csrf_token", "0123456789abcdef"));
        let r = admin.post_form(path, &with_bad).await;
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "{path} with a wrong token"
        );
    }
    // Nothing happened: no settings, no user, still logged in.
    let html = admin.page("/settings").await;
    assert_eq!(attr(&html, "#publish_server", "value").unwrap(), "");
    let users = admin.page("/users").await;
    assert_eq!(texts(&users, "tbody tr").len(), 1);
    // A login form posted without the token from the login page is refused too.
    let fresh = app.browser();
    let r = fresh
        .post_form(
            "/login",
            &[
                ("username", ADMIN),
                ("password", ADMIN_PASSWORD),
                ("csrf_token", "x"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn users_cannot_open_admin_pages() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.user(&admin, "ursula").await;
    for path in ["/settings", "/users", "/settings/preview?template=x"] {
        let r = user.get(path).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        let html = Html::parse_document(&r.text().await.unwrap());
        assert_eq!(
            texts(&html, "#error-message"),
            ["This page is for admins only."]
        );
    }
    let token = user.csrf_from("/assets").await;
    let r = user
        .post_form(
            "/settings",
            &[
                ("publish_server", "evil.com"),
                ("template", ""),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The user's nav has no admin links.
    let html = user.page("/assets").await;
    assert!(
        texts(&html, "nav a")
            .iter()
            .all(|t| t != "Settings" && t != "Users")
    );
}

#[tokio::test]
async fn admins_manage_roles_and_disabled_users_lose_their_sessions() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.user(&admin, "ursula").await;
    let users = admin.page("/users").await;
    let id = attr(&users, "tr[data-user=ursula] input[name=user_id]", "value").unwrap();
    let token = admin.csrf_from("/users").await;

    // Promote: ursula can now open settings.
    let r = admin
        .post_form(
            "/users",
            &[
                ("action", "role"),
                ("user_id", &id),
                ("role", "admin"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(user.get("/settings").await.status(), StatusCode::OK);

    // Disable: her open session ends and she cannot log in again.
    let r = admin
        .post_form(
            "/users",
            &[
                ("action", "disable"),
                ("user_id", &id),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(user.get("/assets").await.status(), StatusCode::SEE_OTHER);
    let r = user.login("ursula", "ursula-password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("disabled"));

    // Enable and reset the password: the old one stops working, and so does the session
    // opened with it, even one that was checked a moment before.
    admin
        .post_form(
            "/users",
            &[
                ("action", "enable"),
                ("user_id", &id),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(
        user.login("ursula", "ursula-password").await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(user.get("/assets").await.status(), StatusCode::OK);
    let r = admin
        .post_form(
            "/users",
            &[
                ("action", "password"),
                ("user_id", &id),
                ("password", "brand-new-pass"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(user.get("/assets").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        user.login("ursula", "ursula-password").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        user.login("ursula", "brand-new-pass").await.status(),
        StatusCode::SEE_OTHER
    );

    // The admin cannot lock themself out.
    let users = admin.page("/users").await;
    let me = attr(&users, "tr[data-user=admin] input[name=user_id]", "value").unwrap();
    let r = admin
        .post_form(
            "/users",
            &[
                ("action", "disable"),
                ("user_id", &me),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // A taken name is refused with a clear message.
    let r = admin
        .post_form(
            "/users",
            &[
                ("action", "add"),
                ("username", "ursula"),
                ("password", "whatever-pw"),
                ("role", "user"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("already exists"));
}

#[tokio::test]
async fn cli_adds_users_and_imports_assets_into_the_same_database() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let app = spawn_app().await;
    let bin = env!("CARGO_BIN_EXE_cdn-invalidator");
    let mut child = Command::new(bin)
        .args([
            "user",
            "add",
            "carol",
            "--role",
            "admin",
            "--database",
            &app.database_url,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"carol-password\n")
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());

    let csv = app.dir.path().join("cat.csv");
    std::fs::write(&csv, "id,name,type\nCLI_1,From the CLI,image\n").unwrap();
    let out = Command::new(bin)
        .args(["assets", "import"])
        .arg(&csv)
        .args(["--database", &app.database_url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = app.dir.path().join("bad.csv");
    std::fs::write(&bad, "id,name,type\nCLI_2,Fine,image\n,missing id,image\n").unwrap();
    let out = Command::new(bin)
        .args(["assets", "import"])
        .arg(&bad)
        .args(["--database", &app.database_url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Line 3"));

    let b = app.browser();
    assert_eq!(
        b.login("carol", "carol-password").await.status(),
        StatusCode::SEE_OTHER
    );
    let html = b.page("/assets").await;
    assert_eq!(texts(&html, "tbody input[name=asset_id]").len(), 1);
    assert_eq!(
        attr(&html, "tbody input[name=asset_id]", "value").unwrap(),
        "CLI_1"
    );
}

#[tokio::test]
async fn a_session_ends_after_its_maximum_age() {
    let app = spawn_app_with(|c| c.session_max_age = std::time::Duration::from_millis(800)).await;
    let admin = app.admin().await;
    assert_eq!(admin.get("/assets").await.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let r = admin.get("/assets").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login");
}

#[tokio::test]
async fn the_last_enabled_admin_cannot_be_demoted() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let users = admin.page("/users").await;
    let me = attr(&users, "tr[data-user=admin] input[name=user_id]", "value").unwrap();
    let token = admin.csrf_from("/users").await;
    let r = admin
        .post_form(
            "/users",
            &[
                ("action", "role"),
                ("user_id", &me),
                ("role", "user"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("last enabled admin"));
    assert_eq!(
        admin.get("/settings").await.status(),
        StatusCode::OK,
        "still an admin"
    );
}
