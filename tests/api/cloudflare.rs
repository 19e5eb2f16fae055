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

/// Invalidate CDN's template, so a prefix is `images.example.com/is/image/Company/<ID>`.
const TEMPLATE: &str = "Company/<ID>?$product$\nCompany/<ID>?wid=640";

/// An admin with Cloudflare pointed at `sim` on `plan`, the template above, every variant
/// mapped to `variants` (`tags` or `prefixes`, tagged by `Cache-Tag`), and `assets` imported.
async fn variants_admin(
    app: &TestApp,
    sim: &CloudflareSim,
    plan: &str,
    batch: &str,
    variants: &str,
    assets: &[String],
) -> Browser {
    let admin = app.admin().await;
    let r = admin
        .save_provider(
            SERVER,
            "",
            "cloudflare",
            &[
                ("cloudflare_base_url", &sim.base()),
                ("cloudflare_zone_id", ZONE_ID),
                ("cloudflare_api_token", TOKEN),
                ("cloudflare_batch_size", batch),
                ("cloudflare_plan", plan),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = admin.save_settings(SERVER, TEMPLATE, "", "").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = admin.save_variants(variants, "Cache-Tag").await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    if !assets.is_empty() {
        let csv: String = assets.iter().map(|id| format!("{id},{id}\n")).collect();
        let r = admin.import_csv(&format!("id,name\n{csv}")).await;
        assert!(r.status().is_success() || r.status().is_redirection());
    }
    admin
}

fn asset_ids(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("Backpack_{i:03}")).collect()
}

/// 250 assets by cache tag: three `{"tags":[…]}` requests of 100, 100 and 50, each tag once.
#[tokio::test]
async fn every_variant_by_cache_tag_goes_100_tags_a_request() {
    let sim = CloudflareSim::start(TOKEN, 100).await;
    let app = spawn_app().await;
    let ids = asset_ids(250);
    let admin = variants_admin(&app, &sim, "enterprise", "100", "tags", &ids).await;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let id = admin.invalidate_variants(&refs, "tags").await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["scope"], "tags");
    assert_eq!(json["succeeded"], 250);

    let purges = sim.purges();
    let mut sizes: Vec<usize> = purges.iter().map(|p| p.tags.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [50, 100, 100]);
    assert!(
        purges
            .iter()
            .all(|p| p.files.is_empty() && p.prefixes.is_empty() && !p.everything)
    );
    let tags: BTreeSet<String> = purges.iter().flat_map(|p| p.tags.clone()).collect();
    assert_eq!(tags, ids.iter().cloned().collect::<BTreeSet<_>>());
    assert!(sim.received().iter().all(|r| r.status == 200));
    assert_eq!(json["batches"].as_array().unwrap().len(), 3);
}

/// Prefixes go as `host/path`, without scheme or query, in one `{"prefixes":[…]}` request.
#[tokio::test]
async fn every_variant_by_prefix_is_sent_as_host_and_path_without_scheme() {
    let sim = CloudflareSim::start(TOKEN, 100).await;
    let app = spawn_app().await;
    let ids = vec!["Backpack_B".to_string(), "Tent 2P".to_string()];
    let admin = variants_admin(&app, &sim, "enterprise", "100", "prefixes", &ids).await;
    let id = admin
        .invalidate_variants(&["Backpack_B", "Tent 2P"], "prefixes")
        .await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    let purges = sim.purges();
    assert_eq!(purges.len(), 1);
    assert_eq!(
        purges[0].prefixes,
        [
            "images.example.com/is/image/Company/Backpack_B",
            "images.example.com/is/image/Company/Tent%202P"
        ]
    );
    assert!(purges[0].files.is_empty() && purges[0].tags.is_empty());
}

/// An admin's purge of everything is one `{"purge_everything":true}` for the zone, whatever
/// the sites, and each site is recorded as cleared.
#[tokio::test]
async fn purge_everything_is_one_purge_everything_request_for_the_zone() {
    let sim = CloudflareSim::start(TOKEN, 100).await;
    let app = spawn_app().await;
    let admin = variants_admin(&app, &sim, "enterprise", "100", "urls", &[]).await;
    let r = admin
        .save_settings(SERVER, TEMPLATE, "", "cdn.example.com")
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let key = admin.everything_key().await;
    let r = admin
        .purge_everything(&key, "images.example.com", true)
        .await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let json = admin.wait_finished(invalidation_id(&r)).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["scope"], "everything");
    // One row, the publish server's site: the allowed host may be in another zone, so it
    // is not recorded cleared on the word of this zone's purge.
    assert_eq!(json["total"], 1, "{json}");
    assert_eq!(json["urls"][0]["url"], "https://images.example.com/");
    let purges = sim.purges();
    assert_eq!(purges.len(), 1, "one request clears the zone");
    assert!(purges[0].everything);
    assert!(purges[0].files.is_empty() && purges[0].prefixes.is_empty());
}

/// Tag requests are paced by the plan's bucket (Pro: 25 at once, then 5 a second), apart
/// from the URL rate: 30 requests take at least a second instead of being refused.
#[tokio::test]
async fn tag_requests_are_paced_by_the_plans_own_bucket() {
    let sim = CloudflareSim::start(TOKEN, 100).await;
    let app = spawn_app().await;
    let ids = asset_ids(300);
    // 10 tags a request: 30 requests.
    let admin = variants_admin(&app, &sim, "pro", "10", "tags", &ids).await;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let id = admin.invalidate_variants(&refs, "tags").await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    let got: Vec<_> = sim
        .received()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|r| r.status == 200));
    let mut at: Vec<_> = got.iter().map(|r| r.at).collect();
    at.sort();
    // 25 go at once; the other 5 one every 200 ms.
    let span = at[29] - at[0];
    assert!(span >= Duration::from_millis(950), "all 30 within {span:?}");
    assert!(
        at[24] - at[0] < Duration::from_millis(800),
        "the bucket's 25 went at once: {:?}",
        at[24] - at[0]
    );
}

/// The simulator refuses what Cloudflare refuses: more than 100 tags, a prefix with a scheme
/// or a query, two kinds at once.
#[tokio::test]
async fn the_simulator_refuses_what_cloudflare_refuses() {
    let sim = CloudflareSim::start(TOKEN, 100).await;
    let client = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        let client = client.clone();
        let url = format!("{}/zones/{ZONE_ID}/purge_cache", sim.base());
        async move {
            let r = client
                .post(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let tags: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    let (status, json) = post(serde_json::json!({ "tags": tags })).await;
    assert_eq!(status, 400);
    assert_eq!(json["success"], false);
    assert!(
        json["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("up to 100 tags"),
        "{json}"
    );
    for bad in ["https://h.example.com/a", "h.example.com/a?x=1"] {
        let (status, json) = post(serde_json::json!({ "prefixes": [bad] })).await;
        assert_eq!(status, 400, "{bad}: {json}");
    }
    let (status, _) = post(serde_json::json!({ "tags": ["a"], "prefixes": ["h/a"] })).await;
    assert_eq!(status, 400);
    let (status, _) = post(serde_json::json!({ "purge_everything": true })).await;
    assert_eq!(status, 200);
    assert_eq!(sim.purges().len(), 1);
}

/// At the purger: a prefix Cloudflare would refuse (32 path separators) fails with the reason
/// and is not sent; the others go.
#[tokio::test]
async fn a_prefix_with_too_many_separators_fails_unsent_with_the_reason() {
    use cdn_invalidator::cdn::{Attempt, Batch, Context, PurgeConfig, Scope, Values, kind};
    let sim = CloudflareSim::start(TOKEN, 100).await;
    let values: Values = [
        ("cloudflare_base_url", sim.base()),
        ("cloudflare_zone_id", ZONE_ID.to_string()),
        ("cloudflare_api_token", TOKEN.to_string()),
        ("cloudflare_plan", "enterprise".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = PurgeConfig::default();
    let ctx = Context {
        client: cdn_invalidator::cdn::http_client(&config).unwrap(),
        config,
    };
    let purger = kind("cloudflare").unwrap().build(&values, &ctx).unwrap();
    let deep = format!("{SERVER}{}", "/a".repeat(32));
    let batch = Batch {
        scope: Scope::Prefixes,
        urls: [format!("{SERVER}/is/image/ok"), deep]
            .iter()
            .map(|u| url::Url::parse(u).unwrap())
            .collect(),
        tags: Vec::new(),
        reference: "r".into(),
    };
    let result = purger.purge(&batch).await;
    assert!(matches!(result.attempts[0], Attempt::Done { .. }));
    assert!(
        matches!(&result.attempts[1], Attempt::Fail { reason, .. } if reason.contains("at most 31")),
        "{:?}",
        result.attempts[1]
    );
    let purges = sim.purges();
    assert_eq!(purges.len(), 1);
    assert_eq!(purges[0].prefixes, ["images.example.com/is/image/ok"]);
}

/// A prefix Cloudflare would refuse (more than 31 separators) is refused at Continue, naming
/// the asset: nothing is queued or sent.
#[tokio::test]
async fn a_prefix_cloudflare_would_refuse_is_refused_at_continue() {
    let sim = CloudflareSim::start(TOKEN, 100).await;
    let app = spawn_app().await;
    let ids = vec!["Deep".to_string()];
    let admin = variants_admin(&app, &sim, "enterprise", "100", "prefixes", &ids).await;
    let deep = format!("{}<ID>", "d/".repeat(31));
    let r = admin.save_settings(SERVER, &deep, "", "").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = admin.continue_variants(&["Deep"], "prefixes").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = scraper::Html::parse_document(&r.text().await.unwrap());
    let errors = texts(&html, "#variant-errors li").concat();
    assert!(
        errors.starts_with("Deep:") && errors.contains("at most 31"),
        "{errors}"
    );
    assert!(sim.purges().is_empty());
    assert!(texts(&admin.page("/invalidations").await, "#history tbody tr").is_empty());
}
