//! Fastly through the UI: settings, Test connection, one purge per URL, soft purge, errors
//! and 429s, against the loopback Fastly API.

use crate::helpers::*;
use crate::sim_fastly::FastlySim;
use reqwest::StatusCode;
use std::collections::BTreeSet;
use std::time::Duration;

const TOKEN: &str = "fastly-key-YOUR_FASTLY_TOKEN_8f3k2";
const SERVER: &str = "https://images.example.com";

async fn save(admin: &Browser, sim: &FastlySim, token: &str, soft: &str) -> reqwest::Response {
    admin
        .save_provider(
            SERVER,
            "",
            "fastly",
            &[
                ("fastly_base_url", &sim.base()),
                ("fastly_api_token", token),
                ("fastly_soft_purge", soft),
            ],
        )
        .await
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
