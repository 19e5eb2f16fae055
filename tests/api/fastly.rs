//! Fastly through the UI: settings, Test connection, one purge per URL, soft purge, errors
//! and 429s, surrogate keys and purge-all, against the loopback Fastly API.

use crate::helpers::*;
use crate::sim_fastly::{FastlySim, SERVICE_ID};
use reqwest::StatusCode;
use std::collections::BTreeSet;
use std::time::Duration;

const TOKEN: &str = "fastly-key-YOUR_FASTLY_TOKEN_8f3k2";
const SERVER: &str = "https://images.example.com";

async fn save(admin: &Browser, sim: &FastlySim, token: &str, soft: &str) -> reqwest::Response {
    save_with_service(admin, sim, token, soft, "").await
}

async fn save_with_service(
    admin: &Browser,
    sim: &FastlySim,
    token: &str,
    soft: &str,
    service: &str,
) -> reqwest::Response {
    admin
        .save_provider(
            SERVER,
            "",
            "fastly",
            &[
                ("fastly_base_url", &sim.base()),
                ("fastly_api_token", token),
                ("fastly_soft_purge", soft),
                ("fastly_service_id", service),
            ],
        )
        .await
}

/// An admin with Fastly on the simulator's service, assets mapped to surrogate keys.
async fn setup_keys(app: &TestApp, sim: &FastlySim, soft: &str) -> Browser {
    let admin = app.admin().await;
    let r = save_with_service(&admin, sim, TOKEN, soft, SERVICE_ID).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let r = admin.save_variants("tags", "Surrogate-Key").await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    admin
}

/// Presses *Purge everything* on the variants page, confirmed as the page asks.
async fn purge_everything(admin: &Browser) -> reqwest::Response {
    let key = admin.everything_key().await;
    let host = SERVER.strip_prefix("https://").unwrap();
    admin.purge_everything(&key, host, true).await
}

#[tokio::test]
async fn settings_keep_the_token_secret_and_test_connection_reads_the_token() {
    let sim = FastlySim::start(TOKEN, "purge_select").await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    assert_eq!(
        save(&admin, &sim, TOKEN, "off").await.status(),
        StatusCode::SEE_OTHER
    );

    let body = admin.get("/settings").await.text().await.unwrap();
    assert!(!body.contains(TOKEN), "the token is never rendered back");
    let html = scraper::Html::parse_document(&body);
    assert_eq!(
        texts(&html, "label[for=fastly_api_token] .secret-set").len(),
        1
    );
    assert_eq!(attr(&html, "#fastly_api_token", "value").unwrap(), "");
    assert_eq!(
        attr(&html, "#fastly_soft_purge option[selected]", "value").unwrap(),
        "off"
    );

    let (ok, message) = admin.test_connection().await;
    assert!(ok, "{message}");
    assert!(
        message.contains("\"cdn-invalidator\"") && message.contains("scope: purge_select"),
        "{message}"
    );
    // The test's call, then the same call timed on the open connection (for estimates).
    let got = sim.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].path_and_query, got[1].path_and_query);
    assert_eq!(
        (got[0].method.as_str(), got[0].path_and_query.as_str()),
        ("GET", "/tokens/self")
    );
    assert_eq!(got[0].fastly_key.as_deref(), Some(TOKEN));
    assert!(sim.purges().is_empty(), "the test purges nothing");

    save(&admin, &sim, "wrong-key", "off").await;
    let (ok, message) = admin.test_connection().await;
    assert!(!ok);
    assert!(
        message.contains("Fastly 401 Unauthorized: Provided credentials are missing or invalid"),
        "{message}"
    );

    // A valid token that may not purge by URL.
    let read_only = FastlySim::start(TOKEN, "global:read").await;
    save(&admin, &read_only, TOKEN, "off").await;
    let (ok, message) = admin.test_connection().await;
    assert!(!ok);
    assert!(message.contains("lacks purge_select"), "{message}");
}

#[tokio::test]
async fn each_url_is_one_purge_with_its_id_and_soft_purge_follows_the_setting() {
    let sim = FastlySim::start(TOKEN, "purge_select").await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    assert_eq!(
        save(&admin, &sim, TOKEN, "on").await.status(),
        StatusCode::SEE_OTHER
    );
    let user = app.user(&admin, "ursula").await;

    let sent = [
        format!("{SERVER}/is/image/Company/a?$product$&wid=10"),
        format!("{SERVER}/is/image/Company/b%20c"),
        format!("{SERVER}/is/content/Company/doc.pdf"),
    ];
    let id = user.invalidate_urls(&sent.join("\n")).await;
    let json = user.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");

    let purges = sim.purges();
    let cached: BTreeSet<String> = purges.iter().map(|p| p.cached_url.clone()).collect();
    let expected: BTreeSet<String> = sent
        .iter()
        .map(|u| u.strip_prefix("https://").unwrap().to_string())
        .collect();
    assert_eq!(
        cached, expected,
        "one request per URL, scheme dropped, query kept"
    );
    assert!(purges.iter().all(|p| p.soft), "Fastly-Soft-Purge: 1 sent");
    assert!(
        sim.received()
            .iter()
            .all(|r| r.method == "POST" && r.fastly_key.as_deref() == Some(TOKEN))
    );

    let ids: BTreeSet<String> = purges.iter().map(|p| p.id.clone()).collect();
    let batches = json["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 3);
    let json_ids: BTreeSet<String> = batches
        .iter()
        .map(|b| b["provider_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(json_ids, ids);
    let html = user.page(&format!("/invalidations/{id}")).await;
    let page_ids: BTreeSet<String> = texts(&html, "#batches .provider-id").into_iter().collect();
    assert_eq!(page_ids, ids);
    assert!(texts(&html, "#invalidation p")[0].contains("(soft purge)"));
    let page = user
        .get(&format!("/invalidations/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains(TOKEN) && !json.to_string().contains(TOKEN));

    // Soft purge off: the header is not sent.
    save(&admin, &sim, "", "off").await;
    let id = user.invalidate_urls(&sent[0]).await;
    assert_eq!(user.wait_finished(id).await["status"], "succeeded");
    let last = sim.purges().pop().unwrap();
    assert!(!last.soft);
}

#[tokio::test]
async fn a_refused_purge_shows_fastlys_error_on_the_invalidation() {
    let sim = FastlySim::start(TOKEN, "purge_select").await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    save(&admin, &sim, "revoked-key", "off").await;
    let id = admin.invalidate_urls(&format!("{SERVER}/is/image/a")).await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "failed", "{json}");
    let expected = "Fastly 401 Unauthorized: Provided credentials are missing or invalid";
    assert_eq!(json["urls"][0]["error"], expected);
    assert_eq!(json["urls"][0]["attempts"], 1, "a 401 is not retried");
    let html = admin.page(&format!("/invalidations/{id}")).await;
    assert_eq!(texts(&html, "#urls tbody .detail")[0], expected);
    assert!(!html.html().contains("revoked-key"));
}

#[tokio::test]
async fn a_429_waits_until_fastlys_rate_limit_resets() {
    let sim = FastlySim::start(TOKEN, "purge_select").await;
    // Backoff alone would retry after ~20 ms; Fastly-RateLimit-Reset is 1–2 s away.
    let app = spawn_app_with(|c| c.purge.backoff_max = Duration::from_secs(5)).await;
    let admin = app.admin().await;
    save(&admin, &sim, TOKEN, "off").await;
    sim.rate_limit(1, 2);
    let id = admin.invalidate_urls(&format!("{SERVER}/is/image/a")).await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["urls"][0]["attempts"], 2);
    let got = sim.received();
    assert_eq!(got.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    assert_eq!(json["batches"].as_array().unwrap().len(), 1);
}

/// 600 assets mapped to surrogate keys: three batch purges of at most 256 keys to the
/// service, JSON bodies, the token, soft purge as set; every key purged once.
#[tokio::test]
async fn surrogate_keys_go_to_the_service_in_batches_of_at_most_256() {
    let sim = FastlySim::start(TOKEN, "purge_select").await;
    let app = spawn_app().await;
    let admin = setup_keys(&app, &sim, "on").await;
    let user = app.user(&admin, "ursula").await;
    let ids: Vec<String> = (0..600).map(|i| format!("Company/asset-{i:04}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let id = user.invalidate_variants(&refs, "tags").await;
    let json = user.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["scope"], "tags");

    let requests = sim.received();
    assert_eq!(requests.len(), 3, "{requests:?}");
    for r in &requests {
        assert_eq!(
            (r.method.as_str(), r.path_and_query.as_str(), r.status),
            ("POST", format!("/service/{SERVICE_ID}/purge").as_str(), 200)
        );
        assert_eq!(r.fastly_key.as_deref(), Some(TOKEN));
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert!(r.soft, "Fastly-Soft-Purge: 1 with soft purge on");
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert!(body["surrogate_keys"].as_array().unwrap().len() <= 256);
    }
    assert!(
        sim.key_purges()
            .iter()
            .all(|p| p.soft && p.service == SERVICE_ID)
    );
    let mut sizes: Vec<usize> = sim.key_purges().iter().map(|p| p.keys.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [88, 256, 256]);
    let mut sent: Vec<String> = sim.key_purges().into_iter().flat_map(|p| p.keys).collect();
    sent.sort();
    assert_eq!(sent, ids, "every key purged once");
    // Each request's first purge id is kept with it.
    let batches = json["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 3);
    assert!(
        batches
            .iter()
            .all(|b| b["provider_id"].as_str().unwrap().starts_with("108-")),
        "{json}"
    );
    assert!(!json.to_string().contains(TOKEN));

    // Soft purge off: no header.
    let r = save_with_service(&admin, &sim, "", "off", SERVICE_ID).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let id = user
        .invalidate_variants(&["Company/asset-0000"], "tags")
        .await;
    assert_eq!(user.wait_finished(id).await["status"], "succeeded");
    assert!(!sim.received().last().unwrap().soft);
}

/// Fastly's answer maps each key it purged to a purge id: a key left out was not purged, and
/// is sent again by itself.
#[tokio::test]
async fn a_key_missing_from_fastlys_answer_is_sent_again() {
    let sim = FastlySim::start(TOKEN, "purge_select").await;
    let app = spawn_app().await;
    let admin = setup_keys(&app, &sim, "off").await;
    sim.leave_out_key_once("Tent_2P");
    let id = admin
        .invalidate_variants(&["Backpack_B", "Tent_2P"], "tags")
        .await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    let keys: Vec<Vec<String>> = sim.key_purges().into_iter().map(|p| p.keys).collect();
    assert_eq!(keys, [vec!["Backpack_B"], vec!["Tent_2P"]]);
    let attempts: Vec<(String, i64)> = json["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["url"].as_str().unwrap().to_string(),
                u["attempts"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [("Backpack_B".to_string(), 1), ("Tent_2P".to_string(), 2)]
    );
}

/// Surrogate keys are space-separated and at most 1,024 bytes: a longer asset ID is refused
/// at Continue, naming the asset, and nothing is sent. Without a service ID, Fastly offers
/// listed URLs only.
#[tokio::test]
async fn a_key_fastly_cannot_take_is_refused_at_continue() {
    let sim = FastlySim::start(TOKEN, "purge_select").await;
    let app = spawn_app().await;
    let admin = setup_keys(&app, &sim, "off").await;
    let long = "k".repeat(1025);
    let r = admin
        .continue_variants(&["Backpack_B", &long], "tags")
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = scraper::Html::parse_document(&r.text().await.unwrap());
    let errors = texts(&html, "#variant-errors li");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&long) && errors[0].contains("Fastly accepts tags of at most 1024"),
        "{errors:?}"
    );
    assert!(sim.received().is_empty());

    let r = save_with_service(&admin, &sim, "", "off", "").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = admin.save_variants("tags", "Surrogate-Key").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = scraper::Html::parse_document(&r.text().await.unwrap());
    assert!(
        texts(&html, "#variants-error")
            .concat()
            .contains("Fastly cannot purge by cache tag"),
        "{:?}",
        texts(&html, "#variants-error")
    );
}

/// Purge everything is one `purge_all` for the service, never soft (Fastly cannot soft-purge
/// everything), recorded like any invalidation.
#[tokio::test]
async fn purge_everything_is_one_purge_all_never_soft() {
    let sim = FastlySim::start(TOKEN, "purge_select purge_all").await;
    let app = spawn_app().await;
    let admin = setup_keys(&app, &sim, "on").await;
    let r = purge_everything(&admin).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let json = admin.wait_finished(invalidation_id(&r)).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["scope"], "everything");
    assert_eq!(sim.purged_all(), [SERVICE_ID]);
    let got = sim.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].method.as_str(), got[0].path_and_query.as_str()),
        ("POST", format!("/service/{SERVICE_ID}/purge_all").as_str())
    );
    assert!(!got[0].soft, "purge_all is never soft");
    assert_eq!(got[0].fastly_key.as_deref(), Some(TOKEN));
}

/// A token without the purge_all scope: Fastly answers 403, and the invalidation says what
/// the token lacks.
#[tokio::test]
async fn purge_everything_without_the_purge_all_scope_says_so() {
    let sim = FastlySim::start(TOKEN, "purge_select").await;
    let app = spawn_app().await;
    let admin = setup_keys(&app, &sim, "off").await;
    let (ok, message) = admin.test_connection().await;
    assert!(ok, "{message}");
    assert!(message.contains("lacks the purge_all scope"), "{message}");
    let r = purge_everything(&admin).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let json = admin.wait_finished(invalidation_id(&r)).await;
    assert_eq!(json["status"], "failed", "{json}");
    assert_eq!(
        json["urls"][0]["error"],
        "Fastly 403 Forbidden: Forbidden (purging everything needs an API token with the purge_all scope)"
    );
    assert_eq!(json["urls"][0]["attempts"], 1, "a 403 is not retried");
    assert!(sim.purged_all().is_empty());
}

/// The simulator refuses what Fastly refuses: more than 256 keys in one request.
#[tokio::test]
async fn the_simulator_refuses_more_than_256_keys_like_fastly() {
    let sim = FastlySim::start(TOKEN, "purge_select").await;
    let keys: Vec<String> = (0..257).map(|i| format!("k{i}")).collect();
    let r = reqwest::Client::new()
        .post(format!("{}/service/{SERVICE_ID}/purge", sim.base()))
        .header("Fastly-Key", TOKEN)
        .json(&serde_json::json!({ "surrogate_keys": keys }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["msg"], "Bad request");
    assert!(sim.key_purges().is_empty());
}
