//! Cloudflare through the UI: settings, Test connection, batched purges, errors and 429s,
//! against the loopback Cloudflare API.

use crate::helpers::*;
use crate::sim_cloudflare::{CloudflareSim, ZONE_ID, ZONE_NAME};
use reqwest::StatusCode;
use std::collections::BTreeSet;
use std::time::Duration;

const TOKEN: &str = "cf-token-Sn3lZJTBX6kkg7OdcBUAxOO963GEIyGQ";
const SERVER: &str = "https://images.example.com";

async fn save(
    admin: &Browser,
    sim: &CloudflareSim,
    zone: &str,
    token: &str,
    batch: &str,
) -> reqwest::Response {
    admin
        .save_provider(
            SERVER,
            "",
            "cloudflare",
            &[
                ("cloudflare_base_url", &sim.base()),
                ("cloudflare_zone_id", zone),
                ("cloudflare_api_token", token),
                ("cloudflare_batch_size", batch),
            ],
        )
        .await
}

fn urls(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("{SERVER}/is/image/Company/asset-{i}?$product$"))
        .collect()
}

/// A new admin gets Cloudflare's documented 100 URLs per request, with a link to where
/// Cloudflare says so.
#[tokio::test]
async fn urls_per_request_default_to_the_documented_100_with_a_link() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let html = admin.page("/settings").await;
    assert_eq!(
        attr(&html, "#cloudflare_batch_size", "value").as_deref(),
        Some("100")
    );
    assert_eq!(
        attr(&html, "#cloudflare_batch_size_help a", "href").as_deref(),
        Some("https://developers.cloudflare.com/cache/how-to/purge-cache/")
    );
    assert!(texts(&html, "#cloudflare_batch_size_help")[0].contains("at most 100 URLs"));
}

#[tokio::test]
async fn settings_keep_the_token_secret_and_test_connection_checks_token_and_zone() {
    let sim = CloudflareSim::start(TOKEN, 30).await;
    let app = spawn_app().await;
    let admin = app.admin().await;

    // A domain name is not a zone ID: refused, naming the field.
    let r = save(&admin, &sim, "example.com", TOKEN, "30").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = scraper::Html::parse_document(&r.text().await.unwrap());
    assert!(
        texts(&html, ".field-error[data-field=cloudflare_zone_id]")[0].contains("32 hexadecimal")
    );
    let r = save(&admin, &sim, ZONE_ID, TOKEN, "501").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let r = save(&admin, &sim, ZONE_ID, TOKEN, "30").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = admin.get("/settings").await;
    let body = r.text().await.unwrap();
    assert!(!body.contains(TOKEN), "the token is never rendered back");
    let html = scraper::Html::parse_document(&body);
    assert_eq!(
        texts(&html, "label[for=cloudflare_api_token] .secret-set").len(),
        1
    );
    assert_eq!(attr(&html, "#cloudflare_api_token", "value").unwrap(), "");
    assert_eq!(
        attr(&html, "#cloudflare_zone_id", "value").unwrap(),
        ZONE_ID
    );
    assert_eq!(
        texts(&html, "#active-provider")[0],
        format!("Cloudflare zone {ZONE_ID} (30 URLs per request, 800 URLs/s)")
    );

    let (ok, message) = admin.test_connection().await;
    assert!(ok, "{message}");
    assert!(
        message.contains(ZONE_NAME) && message.contains(ZONE_ID),
        "{message}"
    );
    let got = sim.received();
    let calls: Vec<(&str, &str)> = got
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("GET", "/client/v4/user/tokens/verify"),
            ("GET", &*format!("/client/v4/zones/{ZONE_ID}")),
            // Timed once more on the open connection, for estimates.
            ("GET", "/client/v4/user/tokens/verify"),
        ],
        "harmless reads only, no purge"
    );
    assert!(
        got.iter()
            .all(|r| r.authorization.as_deref() == Some(&*format!("Bearer {TOKEN}")))
    );

    // Saving again with the token left empty keeps it.
    let r = save(&admin, &sim, ZONE_ID, "", "30").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(admin.test_connection().await.0);

    // A wrong token: Cloudflare's words.
    save(&admin, &sim, ZONE_ID, "not-the-token", "30").await;
    let (ok, message) = admin.test_connection().await;
    assert!(!ok);
    assert!(
        message.contains("Cloudflare 401 Unauthorized: Invalid API Token (code 1000)"),
        "{message}"
    );

    // The right token but another zone: the zone check catches it.
    save(&admin, &sim, &"a".repeat(32), TOKEN, "30").await;
    let (ok, message) = admin.test_connection().await;
    assert!(!ok);
    assert!(
        message.contains("code 7003") && message.contains("Check the zone ID"),
        "{message}"
    );
}

#[tokio::test]
async fn more_urls_than_one_batch_go_in_several_requests_each_with_its_purge_id() {
    let sim = CloudflareSim::start(TOKEN, 30).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    assert_eq!(
        save(&admin, &sim, ZONE_ID, TOKEN, "30").await.status(),
        StatusCode::SEE_OTHER
    );
    let user = app.user(&admin, "ursula").await;

    let sent = urls(65);
    let id = user.invalidate_urls(&sent.join("\n")).await;
    let json = user.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["succeeded"], 65);

    let purges = sim.purges();
    let mut sizes: Vec<usize> = purges.iter().map(|p| p.files.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [5, 30, 30]);
    let purged: BTreeSet<String> = purges.iter().flat_map(|p| p.files.clone()).collect();
    assert_eq!(
        purged,
        sent.iter().cloned().collect::<BTreeSet<_>>(),
        "full URLs, each once"
    );
    assert!(
        sim.received()
            .iter()
            .all(|r| r.method == "POST" && r.status == 200)
    );

    let ids: BTreeSet<String> = purges.iter().map(|p| p.id.clone()).collect();
    let json_ids: BTreeSet<String> = json["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["provider_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(json_ids, ids);
    let html = user.page(&format!("/invalidations/{id}")).await;
    let page_ids: BTreeSet<String> = texts(&html, "#batches .provider-id").into_iter().collect();
    assert_eq!(page_ids, ids);
    assert!(texts(&html, "#invalidation p")[0].contains("Cloudflare zone"));

    let page = user
        .get(&format!("/invalidations/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains(TOKEN) && !json.to_string().contains(TOKEN));
}

#[tokio::test]
async fn a_refused_request_shows_cloudflares_error_on_the_invalidation() {
    // The admin asked for 40 URLs per request on a zone that accepts 30.
    let sim = CloudflareSim::start(TOKEN, 30).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    save(&admin, &sim, ZONE_ID, TOKEN, "40").await;
    let id = admin.invalidate_urls(&urls(35).join("\n")).await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "failed", "{json}");
    let expected =
        "Cloudflare 400 Bad Request: You may only purge up to 30 files per API call (code 1015)";
    for url in json["urls"].as_array().unwrap() {
        assert_eq!(url["error"], expected);
        assert_eq!(url["attempts"], 1, "a 400 is not retried");
        assert_eq!(url["http_status"], 400);
    }
    assert_eq!(sim.received().len(), 1);
    assert!(json["batches"].as_array().unwrap().is_empty());
    let html = admin.page(&format!("/invalidations/{id}")).await;
    assert_eq!(texts(&html, "#urls tbody .detail")[0], expected);
}

#[tokio::test]
async fn a_429_is_retried_after_the_wait_cloudflare_asks_for() {
    let sim = CloudflareSim::start(TOKEN, 30).await;
    // Backoff alone would retry after ~20 ms; Retry-After asks for a second.
    let app = spawn_app_with(|c| c.purge.backoff_max = Duration::from_secs(5)).await;
    let admin = app.admin().await;
    save(&admin, &sim, ZONE_ID, TOKEN, "30").await;
    sim.rate_limit(1, 1);
    let id = admin.invalidate_urls(&urls(2).join("\n")).await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    for url in json["urls"].as_array().unwrap() {
        assert_eq!(url["attempts"], 2);
    }
    let got = sim.received();
    assert_eq!(got.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    assert_eq!(sim.purges()[0].files.len(), 2);
    assert_eq!(json["batches"].as_array().unwrap().len(), 1);
}
