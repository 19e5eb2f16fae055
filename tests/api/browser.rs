//! Real-browser tests: headless Chromium (Debian's `chromium` + `chromium-driver`) driven over
//! WebDriver. They save screenshots of the main pages to `docs/screenshots/`.

use crate::helpers::*;
use crate::varnish::{Origin, Varnish};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A chromedriver process and a headless Chromium session; both end when dropped/closed.
pub struct Chrome {
    pub c: Client,
    /// Only one flow writes `docs/screenshots/`, so parallel tests never race on the files.
    pub save_screenshots: bool,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Chrome {
    pub async fn start(javascript: bool) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (scripts/test installs chromium-driver)");
        let profile = tempfile::tempdir().unwrap();
        let mut options = serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        if !javascript {
            options["prefs"] =
                serde_json::json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        let mut last_error = None;
        for _ in 0..100 {
            match ClientBuilder::native()
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => {
                    return Self {
                        c,
                        save_screenshots: false,
                        driver,
                        _profile: profile,
                    };
                }
                Err(e) => last_error = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("could not start a Chromium session: {last_error:?}");
    }

    pub async fn find(&self, css: &str) -> Element {
        self.c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    /// The text of `css`. Pages that refresh themselves (meta refresh) can replace the element
    /// between finding and reading it, so a stale element is looked up again.
    pub async fn text(&self, css: &str) -> String {
        for _ in 0..20 {
            if let Ok(text) = self.find(css).await.text().await {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} kept going stale");
    }

    pub async fn texts(&self, css: &str) -> Vec<String> {
        'again: for _ in 0..20 {
            let mut out = Vec::new();
            for e in self.c.find_all(Locator::Css(css)).await.unwrap() {
                match e.text().await {
                    Ok(t) => out.push(t),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue 'again;
                    }
                }
            }
            return out;
        }
        panic!("{css} kept going stale");
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    pub async fn goto(&self, url: &str) {
        self.c.goto(url).await.unwrap();
    }

    pub async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_string()
    }

    /// Waits until `css`'s text satisfies `ok` (pages that update themselves).
    pub async fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool, seconds: u64) -> String {
        let mut last = String::new();
        for _ in 0..seconds * 10 {
            if let Ok(e) = self.c.find(Locator::Css(css)).await
                && let Ok(t) = e.text().await
            {
                if ok(&t) {
                    return t;
                }
                last = t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never got there; last text {last:?}");
    }

    /// Presses Tab until the focused element matches `css` (at most 60 times); proves it is
    /// reachable by keyboard.
    pub async fn tab_to(&self, css: &str) -> Element {
        let target = self.find(css).await;
        let target_id = target.element_id();
        for _ in 0..60 {
            let active = self.c.active_element().await.unwrap();
            if active.element_id() == target_id {
                return active;
            }
            active
                .send_keys(&char::from(Key::Tab).to_string())
                .await
                .unwrap();
        }
        panic!("{css} cannot be reached with the Tab key");
    }

    pub async fn screenshot(&self, name: &str) {
        if !self.save_screenshots {
            return;
        }
        let png = self.c.screenshot().await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Every visible form control has a label (label[for], a wrapping label, or aria-label).
    pub async fn unlabelled_controls(&self) -> Vec<String> {
        let script = r#"
            return [...document.querySelectorAll('input, select, textarea')]
              .filter(e => e.type !== 'hidden')
              .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
              .map(e => e.outerHTML);"#;
        let v = self.c.execute(script, vec![]).await.unwrap();
        serde_json::from_value(v).unwrap()
    }

    pub async fn close(self) {
        let _ = self.c.clone().close().await;
    }
}

const USER_PASSWORD: &str = "ursula-password";

/// Admin sets up, configures, imports and adds a user; everything in the browser.
async fn admin_prepares(ch: &Chrome, base: &str, server: &str, javascript: bool) {
    ch.goto(&format!("{base}/")).await;
    assert_eq!(ch.path().await, "/setup");
    ch.screenshot("setup").await;
    ch.fill("#username", ADMIN).await;
    ch.fill("#password", ADMIN_PASSWORD).await;
    ch.click("form button[type=submit]").await;
    ch.find("#publish_server").await;
    assert_eq!(ch.path().await, "/settings");

    ch.fill("#publish_server", server).await;
    ch.fill("#template", "Company/<ID>?$product$").await;
    if javascript {
        // The live preview follows the typing without a reload.
        let expected = format!("{server}/is/image/Company/Backpack_B?$product$");
        ch.wait_text("#preview", |t| t.contains(&expected), 10)
            .await;
    } else {
        ch.click("button[value=preview]").await;
        assert!(
            ch.text("#preview")
                .await
                .contains("/is/image/Company/Backpack_B?$product$")
        );
    }
    ch.screenshot("settings").await;
    if javascript {
        ch.c.execute(
            "document.getElementById('where-purges-go').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
        ch.screenshot("settings-providers").await;
    }
    ch.click("button[value=save]").await;
    assert_eq!(ch.text("[role=status]").await, "Settings saved.");

    ch.goto(&format!("{base}/assets")).await;
    let csv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("example-assets.csv");
    ch.find("#file")
        .await
        .send_keys(&csv.display().to_string())
        .await
        .unwrap();
    ch.click("form[action='/assets/import'] button").await;
    assert_eq!(ch.text("[role=status]").await, "Imported 6 assets.");

    ch.goto(&format!("{base}/users")).await;
    ch.fill("#new-username", "ursula").await;
    ch.fill("#new-password", USER_PASSWORD).await;
    ch.click("form button[type=submit][class=''], form.stack button")
        .await;
    ch.wait_text("[role=status]", |t| t == "User added.", 5)
        .await;
    ch.screenshot("users").await;
    ch.click(".logout button").await;
    ch.find("#username").await;
    assert_eq!(ch.path().await, "/login");
}

/// The user's whole flow against a real Varnish; returns the invalidation page's path.
async fn user_invalidates(ch: &Chrome, base: &str, javascript: bool) -> String {
    ch.fill("#username", "ursula").await;
    ch.fill("#password", USER_PASSWORD).await;
    ch.click("form button[type=submit]").await;
    ch.find("#q").await;
    assert_eq!(ch.path().await, "/assets");
    ch.screenshot("assets").await;

    // Search, then tick one asset with the mouse and one with the keyboard.
    ch.fill("#q", "backpack").await;
    ch.find("#q")
        .await
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    ch.wait_text("#asset-count", |t| t.starts_with("2 assets"), 5)
        .await;
    if !javascript {
        // Proof that scripts are really off: the select-all box ticks nothing.
        ch.click("#select-all").await;
        assert!(
            !ch.find("input[name=asset_id][value=Backpack_R]")
                .await
                .is_selected()
                .await
                .unwrap()
        );
        ch.click("#select-all").await;
    }
    ch.click("input[name=asset_id][value=Backpack_B]").await;
    let by_keyboard = ch.tab_to("input[name=asset_id][value=Backpack_R]").await;
    by_keyboard.send_keys(" ").await.unwrap();
    let ticked = ch.c.execute("return [...document.querySelectorAll('input[name=asset_id]:checked')].map(e => e.value)", vec![]).await.unwrap();
    assert_eq!(ticked, serde_json::json!(["Backpack_B", "Backpack_R"]));
    ch.click("#selection button[type=submit]").await;

    // The prefilled list: one line per asset; delete one line, add another, Continue.
    let area = ch.find("textarea[name=urls]").await;
    let prefilled = area.prop("value").await.unwrap().unwrap();
    let lines: Vec<&str> = prefilled.lines().collect();
    assert_eq!(lines.len(), 2, "{prefilled}");
    assert!(lines[0].ends_with("/is/image/Company/Backpack_B?$product$"));
    assert!(lines[1].ends_with("/is/image/Company/Backpack_R?$product$"));
    ch.screenshot("invalidate").await;
    let edited = format!(
        "{}\n{}",
        lines[0],
        lines[0].replace("Backpack_B", "Tent_2P")
    );
    area.clear().await.unwrap();
    area.send_keys(&edited).await.unwrap();
    ch.click("form[action='/invalidations'] button").await;

    // Estimate, then progress to done: by script with JavaScript, by meta refresh without.
    let estimate = ch.text("#estimate").await;
    assert!(
        estimate.starts_with("Estimated time to clear: about")
            || estimate == "Estimated time to clear: under a second.",
        "{estimate}"
    );
    let page = ch.path().await;
    assert!(page.starts_with("/invalidations/"), "{page}");
    ch.wait_text("#status", |t| t == "Succeeded", 20).await;
    let progress = ch.find("progress#progress").await;
    assert_eq!(
        progress.attr("value").await.unwrap(),
        progress.attr("max").await.unwrap()
    );
    assert_eq!(
        ch.texts("#urls tbody .outcome").await,
        ["succeeded", "succeeded"]
    );
    ch.screenshot("invalidation").await;

    // Found in history.
    ch.goto(&format!("{base}/invalidations")).await;
    let id = page.trim_start_matches("/invalidations/");
    assert!(
        !ch.c
            .find_all(Locator::Css(&format!("#history tr[data-id='{id}']")))
            .await
            .unwrap()
            .is_empty()
    );
    ch.screenshot("history").await;
    page
}

async fn full_flow(javascript: bool) {
    let origin = Origin::start().await;
    let varnish = Varnish::start(origin.port).await;
    let server = format!("http://127.0.0.1:{}", varnish.port);
    let host = format!("127.0.0.1:{}", varnish.port);
    let path = "/is/image/Company/Backpack_B?$product$";
    varnish.fetch(path, &host).await;
    assert_eq!(varnish.fetch(path, &host).await.1, "HIT");
    origin.set_version("v2");

    let app = spawn_app().await;
    let mut ch = Chrome::start(javascript).await;
    ch.save_screenshots = javascript;
    admin_prepares(&ch, &app.address, &server, javascript).await;
    user_invalidates(&ch, &app.address, javascript).await;
    let (body, cache) = varnish.fetch(path, &host).await;
    assert_eq!(
        (body.starts_with("v2:"), cache.as_str()),
        (true, "MISS"),
        "{body}"
    );
    ch.close().await;
}

#[tokio::test]
async fn the_whole_flow_in_a_real_browser() {
    full_flow(true).await;
}

#[tokio::test]
async fn the_whole_flow_without_javascript() {
    full_flow(false).await;
}

#[tokio::test]
async fn every_form_control_has_a_label() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "<ID>", "", "").await;
    admin.import_csv("id,name\na,A\n").await;
    let id = admin.invalidate_urls("https://server.com/is/image/a").await;
    let ch = Chrome::start(true).await;
    ch.goto(&format!("{}/login", app.address)).await;
    ch.fill("#username", ADMIN).await;
    ch.fill("#password", ADMIN_PASSWORD).await;
    ch.find("#password")
        .await
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    ch.find("#q").await;
    for page in [
        "/assets",
        "/invalidate",
        "/invalidations",
        &format!("/invalidations/{id}"),
        "/settings",
        "/settings/variants",
        "/users",
        "/tokens",
    ] {
        ch.goto(&format!("{}{page}", app.address)).await;
        ch.find("main").await;
        let unlabelled = ch.unlabelled_controls().await;
        assert!(
            unlabelled.is_empty(),
            "{page}: controls without a label: {unlabelled:?}"
        );
    }
    ch.close().await;
}

/// A CDN API that answers every request with an error whose text is a script payload.
async fn hostile_cdn(payload: &str) -> String {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let body = serde_json::json!({"success": false, "errors": [{"code": 1, "message": payload}], "messages": [], "result": null});
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let body = body.clone();
        App::new().default_service(web::to(move || {
            let body = body.clone();
            async move { HttpResponse::BadRequest().json(body) }
        }))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    format!("http://127.0.0.1:{port}/client/v4")
}

/// Script payloads in asset IDs and names, usernames, URLs and CDN error texts are shown
/// inert: no dialog, no injected element, no script ran.
#[tokio::test]
async fn script_payloads_stay_inert_in_the_browser() {
    let payload = r#"<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2</script>"#;
    let node = crate::purge_node::PurgeNode::start(200).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "")
        .await;
    admin
        .import_csv(&format!(
            "id,name\n\"{0}\",\"{0}\"\n",
            payload.replace('"', "\"\"")
        ))
        .await;
    let token = admin.csrf_from("/users").await;
    admin
        .post_form(
            "/users",
            &[
                ("action", "add"),
                ("username", "<img/src/onerror=alert(3)>"),
                ("password", "long-enough-pw"),
                ("role", "user"),
                ("csrf_token", &token),
            ],
        )
        .await;
    let (_, page) = admin.open_invalidate(&[payload]).await;
    let id = admin
        .invalidate_urls(&texts(&page, "textarea[name=urls]")[0])
        .await;
    admin.wait_finished(id).await;
    // A CDN whose error message carries the payload.
    let cdn = hostile_cdn(payload).await;
    let zone = "0123456789abcdef0123456789abcdef";
    admin
        .save_provider(
            "server.com",
            "",
            "cloudflare",
            &[
                ("cloudflare_base_url", &cdn),
                ("cloudflare_zone_id", zone),
                ("cloudflare_api_token", "t"),
            ],
        )
        .await;
    let failed = admin.invalidate_urls("https://server.com/is/image/x").await;
    let json = admin.wait_finished(failed).await;
    assert!(
        json["urls"][0]["error"]
            .as_str()
            .unwrap()
            .contains("<script>"),
        "{json}"
    );

    let ch = Chrome::start(true).await;
    ch.goto(&format!("{}/login", app.address)).await;
    ch.fill("#username", ADMIN).await;
    ch.fill("#password", ADMIN_PASSWORD).await;
    ch.click("form button[type=submit]").await;
    ch.find("#q").await;
    for path in [
        "/assets",
        "/users",
        &format!("/invalidations/{id}"),
        &format!("/invalidations/{failed}"),
        "/invalidations",
    ] {
        ch.goto(&format!("{}{path}", app.address)).await;
        ch.find("main").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            ch.c.get_alert_text().await.is_err(),
            "{path}: a dialog opened"
        );
        let ran = ch.c.execute("return window.__xss === undefined && document.querySelectorAll('main img').length === 0", vec![]).await.unwrap();
        assert_eq!(
            ran,
            serde_json::json!(true),
            "{path}: a payload ran or injected an element"
        );
    }
    // The payload is visible as text.
    ch.goto(&format!("{}/assets", app.address)).await;
    assert!(
        ch.text("tbody")
            .await
            .contains("<script>window.__xss=2</script>")
    );
    ch.close().await;
}

/// Log in, tick an asset, open Invalidate CDN and press Continue with the keyboard alone.
#[tokio::test]
async fn the_flow_works_with_the_keyboard_alone() {
    let node = crate::purge_node::PurgeNode::start(200).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "")
        .await;
    admin.import_csv("id,name\nalpha,Alpha\nbeta,Beta\n").await;
    let ch = Chrome::start(true).await;
    let key = |k: Key| char::from(k).to_string();

    ch.goto(&format!("{}/login", app.address)).await;
    ch.tab_to("#username").await.send_keys(ADMIN).await.unwrap();
    ch.tab_to("#password")
        .await
        .send_keys(&format!("{ADMIN_PASSWORD}{}", key(Key::Enter)))
        .await
        .unwrap();
    ch.find("#q").await;

    ch.tab_to("input[name=asset_id][value=beta]")
        .await
        .send_keys(" ")
        .await
        .unwrap();
    ch.tab_to("#selection button[type=submit]")
        .await
        .send_keys(&key(Key::Enter))
        .await
        .unwrap();
    let area = ch.find("textarea[name=urls]").await;
    assert_eq!(
        area.prop("value").await.unwrap().unwrap(),
        "https://server.com/is/image/beta"
    );
    ch.tab_to("form[action='/invalidations'] button")
        .await
        .send_keys(&key(Key::Enter))
        .await
        .unwrap();
    ch.wait_text("#status", |t| t == "Succeeded", 20).await;
    assert_eq!(node.received().len(), 1);
    ch.close().await;
}

/// An Akamai `.edgerc` file chosen in the browser fills the credentials; none is shown back.
#[tokio::test]
async fn an_edgerc_file_can_be_uploaded_in_the_settings() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let edgerc = dir.path().join(".edgerc");
    let host = "akab-upload.luna.akamaiapis.net";
    std::fs::write(&edgerc, crate::sim_akamai::edgerc(host)).unwrap();
    let ch = Chrome::start(true).await;
    ch.goto(&format!("{}/setup", app.address)).await;
    ch.fill("#username", ADMIN).await;
    ch.fill("#password", ADMIN_PASSWORD).await;
    ch.click("form button[type=submit]").await;
    ch.find("#publish_server").await;
    ch.fill("#publish_server", "images.example.com").await;
    ch.click("#provider-akamai").await;
    ch.find("#akamai_edgerc_file")
        .await
        .send_keys(&edgerc.display().to_string())
        .await
        .unwrap();
    let area = ch.find("#akamai_edgerc").await;
    for _ in 0..50 {
        if area
            .prop("value")
            .await
            .unwrap()
            .is_some_and(|v| v.contains("client_secret"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ch.click("button[value=save]").await;
    assert_eq!(
        ch.text("[role=status]").await,
        "Settings saved. Filled in from the paste: API host akab-upload.luna.akamaiapis.net, \
         Client token, Client secret, Access token."
    );
    assert_eq!(
        ch.find("#akamai_host")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some(host)
    );
    for field in [
        "akamai_client_token",
        "akamai_client_secret",
        "akamai_access_token",
    ] {
        assert!(
            ch.text(&format!("label[for={field}]"))
                .await
                .contains("(set"),
            "{field}"
        );
    }
    let source = ch.c.source().await.unwrap();
    assert!(
        !source.contains(crate::sim_akamai::CLIENT_SECRET),
        "a credential was rendered back"
    );
    ch.close().await;
}

/// At a phone's width (390 px) no page is wider than the screen: tables scroll inside
/// themselves, and long URLs wrap at their slashes instead of in the middle of a word.
#[tokio::test]
async fn pages_fit_a_phone_width_screen() {
    let node = crate::purge_node::PurgeNode::start(200).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "")
        .await;
    let long = "https://server.com/is/image/Company/Backpack_Blue_Alpine_Trail_Edition_2026?wid=1200&hei=900&fmt=webp&qlt=85";
    let urls: Vec<String> = (0..5).map(|i| format!("{long}&v={i}")).collect();
    let id = admin.invalidate_urls(&urls.join("\n")).await;
    admin.wait_finished(id).await;

    let mut ch = Chrome::start(true).await;
    ch.goto(&format!("{}/login", app.address)).await;
    ch.fill("#username", ADMIN).await;
    ch.fill("#password", ADMIN_PASSWORD).await;
    ch.click("form button[type=submit]").await;
    ch.find("#q").await;
    ch.c.set_window_size(390, 844).await.unwrap();
    ch.save_screenshots = true;
    for path in [
        "/assets".to_string(),
        "/invalidations".to_string(),
        format!("/invalidations/{id}"),
        "/settings".to_string(),
        "/settings/variants".to_string(),
        "/tokens".to_string(),
    ] {
        ch.goto(&format!("{}{path}", app.address)).await;
        ch.find("main").await;
        let widths = ch
            .c
            .execute(
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]",
                vec![],
            )
            .await
            .unwrap();
        let (scroll, client) = (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap());
        assert!(
            client <= 390,
            "{path}: the window is phone-sized ({client})"
        );
        assert!(
            scroll <= client,
            "{path}: the page is {scroll} px wide on a {client} px screen"
        );
        if path == "/invalidations" {
            ch.screenshot("history-phone").await;
        } else if path.starts_with("/invalidations/") {
            ch.screenshot("invalidation-phone").await;
        }
    }
    // A URL's cell breaks only where the URL has a slash.
    ch.goto(&format!("{}/invalidations/{id}", app.address))
        .await;
    let breaks =
        ch.c.execute(
            "return document.querySelectorAll('#urls tbody tr:first-child code wbr').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(breaks.as_i64(), Some(long.matches('/').count() as i64));
    ch.close().await;
}

/// The result of the cache check, once the page's own refresh brings it (the page was opened
/// at `#cache-check`: a refresh to that same address would be a jump within the page).
async fn check_result(ch: &Chrome) -> String {
    ch.wait_text("#check-status", |t| t.starts_with("Checked"), 20)
        .await
}

/// Proof of purge in the browser, against a real Varnish: *Check the cache* after an
/// invalidation shows every URL fresh; when one URL's PURGE went to another cache (which
/// answered "not cached"), the check lists it stale with *Invalidate again*, and once the
/// settings are fixed that clears it.
#[tokio::test]
async fn checking_the_cache_in_the_browser_shows_fresh_then_stale_with_invalidate_again() {
    let origin = Origin::start().await;
    let (varnish, other) = (
        Varnish::start(origin.port).await,
        Varnish::start(origin.port).await,
    );
    let host = format!("127.0.0.1:{}", varnish.port);
    let server = format!("http://{host}");
    let paths = [
        "/is/image/Company/Backpack_B?wid=640",
        "/is/image/Company/Tent_2P?wid=640",
    ];
    for p in paths {
        varnish.fetch(p, &host).await;
        assert_eq!(varnish.fetch(p, &host).await.1, "HIT");
    }
    // A copy from before the purge is then surely older than the purge.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin.save_settings(&server, "<ID>", "", "").await;

    let mut ch = Chrome::start(true).await;
    ch.save_screenshots = true;
    ch.goto(&format!("{}/login", app.address)).await;
    ch.fill("#username", ADMIN).await;
    ch.fill("#password", ADMIN_PASSWORD).await;
    ch.click("form button[type=submit]").await;
    ch.find("#q").await;

    // Both URLs purged from the cache itself: the check finds both fresh.
    let both = format!("{server}{}\n{server}{}", paths[0], paths[1]);
    let id = admin.invalidate_urls(&both).await;
    admin.wait_finished(id).await;
    ch.goto(&format!("{}/invalidations/{id}", app.address))
        .await;
    ch.click("#check-cache").await;
    let status = check_result(&ch).await;
    assert!(status.contains("2 fresh, 0 stale, 0 unknown"), "{status}");
    assert!(ch.texts("#invalidate-again").await.is_empty());
    ch.screenshot("cache-check").await;

    // The check's own requests cached both again. The first then leaves the cache (as an
    // expired copy would); the second stays, and this time the PURGEs go to another Varnish.
    let purge = reqwest::Client::new()
        .request(
            reqwest::Method::from_bytes(b"PURGE").unwrap(),
            format!("{server}{}", paths[0]),
        )
        .send()
        .await
        .unwrap();
    assert!(purge.status().is_success());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    admin
        .save_settings(
            &server,
            "<ID>",
            &format!("http://127.0.0.1:{}", other.port),
            "",
        )
        .await;
    let id = admin.invalidate_urls(&both).await;
    admin.wait_finished(id).await;
    ch.goto(&format!("{}/invalidations/{id}", app.address))
        .await;
    ch.click("#check-cache").await;
    let status = check_result(&ch).await;
    assert!(status.contains("1 fresh, 1 stale, 0 unknown"), "{status}");
    assert_eq!(
        ch.texts("#stale-urls td.url").await,
        [format!("{server}{}", paths[1])]
    );
    assert_eq!(
        ch.text("#invalidate-again").await,
        "Invalidate again (1 stale URL)"
    );
    ch.screenshot("cache-check-stale").await;

    // Settings fixed: Invalidate again purges the stale URL from the real cache.
    admin.save_settings(&server, "<ID>", "", "").await;
    ch.click("#invalidate-again").await;
    ch.wait_text("#status", |t| t == "Succeeded", 20).await;
    assert_eq!(varnish.fetch(paths[1], &host).await.1, "MISS");
    ch.close().await;
}

/// Every cached variant, chosen with the radio button on Invalidate CDN: Continue sends the
/// assets' tags instead of the listed URLs.
#[tokio::test]
async fn every_variant_is_chosen_on_the_invalidate_page_in_a_real_browser() {
    let node = crate::purge_node::PurgeNode::start(200).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings(
            "server.com",
            "Company/<ID>?$product$\nCompany/<ID>?wid=640",
            &node.base(),
            "",
        )
        .await;
    let r = admin.save_variants("tags", "xkey").await;
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
    admin
        .import_csv("id,name\nBackpack_B,Backpack\nTent_2P,Tent\n")
        .await;
    let mut ch = Chrome::start(true).await;
    ch.goto(&format!("{}/login", app.address)).await;
    ch.fill("#username", ADMIN).await;
    ch.fill("#password", ADMIN_PASSWORD).await;
    ch.click("form button[type=submit]").await;
    ch.find("#q").await;
    ch.click("input[name=asset_id][value=Backpack_B]").await;
    ch.click("input[name=asset_id][value=Tent_2P]").await;
    ch.click("#selection button[type=submit]").await;
    assert_eq!(ch.text("#variant-summary").await, "2 assets: 2 cache tags");
    assert!(ch.find("#scope-urls").await.is_selected().await.unwrap());
    ch.click("#scope-variants").await;
    ch.save_screenshots = true;
    ch.screenshot("invalidate-variants").await;
    ch.save_screenshots = false;
    ch.click("form[action='/invalidations'] button").await;
    ch.wait_text("#status", |t| t == "Succeeded", 20).await;
    assert_eq!(ch.text("#row-count").await, "2 cache tags");
    assert_eq!(
        ch.texts("#urls tbody td:nth-child(2)").await,
        ["Backpack_B", "Tent_2P"]
    );
    assert_eq!(ch.texts("#covered-urls tbody tr").await.len(), 4);
    let unlabelled = ch.unlabelled_controls().await;
    assert!(unlabelled.is_empty(), "{unlabelled:?}");
    ch.close().await;
}
