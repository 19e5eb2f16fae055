//! Akamai Fast Purge through the UI, against the loopback simulator.

use crate::helpers::*;
use crate::sim_akamai::{
    ACCESS_TOKEN, AkamaiSim, CLIENT_SECRET, CLIENT_TOKEN, edgerc, purge_rows_through_worker,
    purge_through_worker,
};
use reqwest::StatusCode;
use std::time::Duration;

const SERVER: &str = "https://images.example.com";
const HOST: &str = "akab-sim.luna.akamaiapis.net";

/// Admin pastes the simulator's `.edgerc` section and points the API at the simulator.
async fn configure(app: &TestApp, sim: &AkamaiSim, extra: &[(&str, &str)]) -> Browser {
    let admin = app.admin().await;
    let paste = edgerc(HOST);
    let base = sim.base();
    let mut fields = vec![
        ("akamai_edgerc", paste.as_str()),
        ("akamai_base_url", base.as_str()),
    ];
    fields.extend_from_slice(extra);
    let r = admin
        .save_provider(SERVER, "forbidden.example.com", "akamai", &fields)
        .await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    admin
}

fn assert_no_secret(text: &str) {
    for secret in [CLIENT_SECRET, CLIENT_TOKEN, ACCESS_TOKEN, "client_secret ="] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
}

#[tokio::test]
async fn pasted_edgerc_connects_and_purges_with_ids_on_the_page() {
    let sim = AkamaiSim::start(1.0).await;
    let app = spawn_app().await;
    let admin = configure(&app, &sim, &[("akamai_network", "staging")]).await;

    // The paste filled the host and the three credentials; none is ever shown back.
    let r = admin.get("/settings").await;
    let text = r.text().await.unwrap();
    assert_no_secret(&text);
    let html = scraper::Html::parse_document(&text);
    assert_eq!(
        attr(&html, "input#akamai_host", "value").as_deref(),
        Some(HOST)
    );
    for field in [
        "akamai_client_token",
        "akamai_client_secret",
        "akamai_access_token",
    ] {
        let label = texts(&html, &format!("label[for={field}]")).remove(0);
        assert!(label.contains("(set"), "{field}: {label}");
        assert_eq!(
            attr(&html, &format!("#{field}"), "value").as_deref(),
            Some("")
        );
    }
    // The paste itself is not kept, and the page says what it filled in (once).
    let label = texts(&html, "label[for=akamai_edgerc]").remove(0);
    assert!(
        label.contains("(not kept: what it fills is below)"),
        "{label}"
    );
    assert_eq!(
        texts(&html, ".notice #filled"),
        [format!(
            "Filled in from the paste: API host {HOST}, Client token, Client secret, Access token."
        )]
    );
    let again = admin.page("/settings").await;
    assert!(texts(&again, "#filled").is_empty(), "shown once");

    let (ok, message) = admin.test_connection().await;
    assert!(ok, "{message}");
    assert!(
        message.contains("Akamai accepted the credentials"),
        "{message}"
    );
    let first = &sim.received()[0];
    assert_eq!(
        (first.path.as_str(), first.status),
        ("/ccu/v3/rate-limit-status/url", 201)
    );

    let user = app.user(&admin, "ursula").await;
    let urls = [
        format!("{SERVER}/is/image/Co/a"),
        format!("{SERVER}/is/image/Co/b?$thumb$"),
        format!("{SERVER}/is/content/Co/c.pdf"),
    ];
    let id = user.invalidate_urls(&urls.join("\n")).await;
    let json = user.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_no_secret(&json.to_string());

    let purges: Vec<_> = sim
        .received()
        .into_iter()
        .filter(|r| r.path.starts_with("/ccu/v3/invalidate"))
        .collect();
    assert_eq!(purges.len(), 1, "{purges:?}");
    assert_eq!(purges[0].path, "/ccu/v3/invalidate/url/staging");
    assert_eq!(purges[0].content_type, "application/json");
    assert_eq!(purges[0].objects, urls);
    assert_eq!(purges[0].status, 201);

    // The purge and support ids Akamai gave are on the page and in the JSON.
    let batch = &json["batches"][0];
    let purge_id = batch["provider_id"].as_str().unwrap().to_string();
    let support_id = batch["support_id"].as_str().unwrap().to_string();
    assert!(purge_id.starts_with("edcp-sim"), "{batch}");
    assert!(support_id.starts_with("edsup-sim"), "{batch}");
    let html = user.page(&format!("/invalidations/{id}")).await;
    assert_eq!(texts(&html, "#batches .provider-id"), [purge_id]);
    assert_eq!(texts(&html, "#batches .support-id"), [support_id]);
    let page = html.html();
    assert_no_secret(&page);
}

#[tokio::test]
async fn wrong_credentials_and_refused_urls_are_reported_in_akamais_words() {
    let sim = AkamaiSim::start(1.0).await;
    sim.deny_host("forbidden.example.com");
    let app = spawn_app().await;
    let admin = configure(&app, &sim, &[]).await;

    // A purge of a host outside the account: 403 "unauthorized arl", not retried.
    let url = "https://forbidden.example.com/is/image/x";
    let id = admin.invalidate_urls(url).await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "failed", "{json}");
    let error = json["urls"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "Akamai 403 Forbidden: unauthorized arl — {url} (support id edsup-sim"
        )),
        "{error}"
    );
    assert_eq!(json["urls"][0]["attempts"], 1);
    let html = admin.page(&format!("/invalidations/{id}")).await;
    assert!(
        html.html().contains("unauthorized arl"),
        "the page shows Akamai's words"
    );

    // A wrong secret: Test connection says what Akamai said.
    let r = admin
        .save_provider(
            SERVER,
            "",
            "akamai",
            &[("akamai_client_secret", "bm90LXRoZS1zZWNyZXQ=")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (ok, message) = admin.test_connection().await;
    assert!(!ok);
    assert!(
        message.contains("Akamai 401 Unauthorized: Not authorized — The signature does not match"),
        "{message}"
    );
}

#[tokio::test]
async fn a_429_is_retried_after_the_wait_akamais_headers_give() {
    let sim = AkamaiSim::start(1.0).await;
    let app = spawn_app().await;
    let admin = configure(&app, &sim, &[("akamai_action", "delete")]).await;
    // Another client on the account has just used every URL token.
    sim.drain_url_tokens();
    let urls = (0..4)
        .map(|i| format!("{SERVER}/is/image/Co/{i}"))
        .collect::<Vec<_>>();
    let id = admin.invalidate_urls(&urls.join("\n")).await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["urls"][0]["attempts"], 2, "{json}");

    let answers: Vec<(u16, Option<String>)> = sim
        .received()
        .into_iter()
        .filter(|r| r.path == "/ccu/v3/delete/url/production")
        .map(|r| (r.status, r.title))
        .collect();
    assert_eq!(
        answers,
        [
            (429, Some("URL Rate Limit exceeded".to_string())),
            (201, None)
        ]
    );
}

#[tokio::test]
async fn an_unparsable_edgerc_paste_is_refused_and_not_kept() {
    let sim = AkamaiSim::start(1.0).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    let r = admin
        .save_provider(
            SERVER,
            "",
            "akamai",
            &[
                (
                    "akamai_edgerc",
                    "[default]\nhost = h\nclient_secret = leaked-if-kept\n",
                ),
                ("akamai_base_url", &sim.base()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = scraper::Html::parse_document(&r.text().await.unwrap());
    let errors = texts(&html, ".field-error[data-field=akamai_edgerc]");
    assert_eq!(
        errors,
        ["The .edgerc section has no client_token, no access_token."]
    );
    assert!(!html.html().contains("leaked-if-kept"));
}

/// More URLs than the URL bucket's burst, through the worker with the buckets sped up (×2:
/// 400 URLs/s, slow enough that the buckets, not the store, limit the worker): the pacer
/// waits for tokens, so nothing is refused and nothing is lost.
#[tokio::test]
async fn bulk_purges_are_paced_within_the_token_buckets() {
    let scale = 2.0;
    let sim = AkamaiSim::start(scale).await;
    let urls: Vec<String> = (0..10_800)
        .map(|i| format!("https://images.example.com/is/image/Company/asset-{i:06}?$product$"))
        .collect();
    let run = purge_through_worker(&sim, urls.clone(), scale).await;
    assert_eq!((run.accepted, run.failed), (10_800, 0), "{run:?}");
    let received = sim.received();
    let refused = received.iter().filter(|r| r.status == 429).count();
    assert_eq!(refused, 0, "the pacer kept within the buckets");
    // The worker reads the URLs a page at a time while sending; a page never cuts a request
    // short: every body but the smallest (the list's end) is as full as 50,000 bytes allow
    // (a URL takes 69).
    let mut bodies: Vec<usize> = received.iter().map(|r| r.body_len).collect();
    bodies.sort_unstable();
    assert!(
        bodies[1..].iter().all(|&b| b > 50_000 - 80 && b <= 50_000),
        "body sizes: {bodies:?}"
    );
    let sent: Vec<String> = received
        .into_iter()
        .flat_map(|r| r.objects)
        .collect::<Vec<_>>();
    let mut sorted = sent.clone();
    sorted.sort();
    let mut expected = urls;
    expected.sort();
    assert_eq!(sorted, expected, "every URL sent exactly once");
    // (10,800 − 10,000 burst) URLs at 400/s cannot take less than 2 s.
    assert!(
        run.elapsed.as_secs_f64() >= 2.0,
        "faster than the buckets allow: {:?}",
        run.elapsed
    );
}

/// Akamai takes a request's tokens when it arrives, and a full bucket does not refill. On a
/// busy machine the first requests of a burst (opening connections) are the slow ones: here
/// the first 64 take 300 ms on the way there, the rest none. A client counting its tokens
/// from the moment it sent (with a margin for an average transit) believes the 300 ms of
/// refill Akamai's full bucket never had, and its next requests, arriving at once, are
/// refused. Counting tokens as taken at the answer, the latest moment Akamai can take them,
/// the pacer is never ahead: 300 requests of 12 long URLs (request bucket: 100 burst,
/// 50/s), none refused.
#[tokio::test]
async fn requests_slow_to_arrive_never_outrun_akamais_request_bucket() {
    let sim = AkamaiSim::start(1.0).await;
    sim.set_slow_start(64, Duration::from_millis(300));
    let pad = "x".repeat(3_850);
    let urls: Vec<String> = (0..3_600)
        .map(|i| format!("{SERVER}/is/image/Co/slow-{i:04}-{pad}"))
        .collect();
    let config = cdn_invalidator::cdn::PurgeConfig {
        concurrency: 64,
        ..Default::default()
    };
    let run = purge_rows_through_worker(
        &sim,
        cdn_invalidator::cdn::Scope::Urls,
        urls,
        "images.example.com",
        1.0,
        config,
    )
    .await;
    assert_eq!((run.accepted, run.failed), (3_600, 0), "{run:?}");
    let statuses: Vec<u16> = sim
        .received()
        .iter()
        .filter(|r| r.path == "/ccu/v3/invalidate/url/production")
        .map(|r| r.status)
        .collect();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(refused, 0, "requests answered 429 of {}", statuses.len());
    assert_eq!(
        statuses.len(),
        300,
        "12 URLs a request, all accepted: {statuses:?}"
    );
    // 200 requests beyond the burst at 50/s, plus the refill the burst lost.
    assert!(
        run.elapsed >= Duration::from_millis(4_300),
        "faster than the bucket allows: {:?}",
        run.elapsed
    );
}

/// Accepted is not cleared: Akamai's URLs stay *submitted* until its own `estimatedSeconds`
/// have passed since acceptance, the page says when that is, and the invalidation's time is
/// to that moment.
#[tokio::test]
async fn accepted_urls_count_as_cleared_only_once_akamais_estimate_has_passed() {
    let sim = AkamaiSim::start(1.0).await;
    sim.set_estimated_seconds(2);
    let app = spawn_app().await;
    let admin = configure(&app, &sim, &[]).await;
    let urls = [
        format!("{SERVER}/is/image/Co/a"),
        format!("{SERVER}/is/image/Co/b"),
    ];
    let id = admin.invalidate_urls(&urls.join("\n")).await;
    // Accepted at once, then submitted, with the promised time on the page.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let accepted = loop {
        let json = admin.invalidation(id).await;
        if json["counts"]["submitted"] == 2 {
            break json;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never accepted: {json}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(accepted["status"], "running", "{accepted}");
    assert_eq!(accepted["succeeded"], 0, "{accepted}");
    let promised = accepted["clearing_promised_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        accepted["clearing"]
            .as_str()
            .unwrap()
            .starts_with("Accepted by Akamai"),
        "{accepted}"
    );
    let html = admin.page(&format!("/invalidations/{id}")).await;
    assert!(
        texts(&html, "#clearing")[0].contains("estimates clearing by"),
        "{:?}",
        texts(&html, "#clearing")
    );

    let done = admin.wait_finished(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let at = |v: &serde_json::Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let promised = at(&serde_json::Value::String(promised));
    let finished = at(&done["finished_at"]);
    // Not before the promise, and not long after it (the worker wakes for it, not at a poll).
    assert!(finished >= promised, "{finished} before {promised}");
    assert!(
        finished - promised < time::Duration::milliseconds(1500),
        "{finished} long after {promised}"
    );
    let html = admin.page(&format!("/invalidations/{id}")).await;
    assert!(
        texts(&html, "#clearing")[0].starts_with("Cleared: accepted by Akamai"),
        "{:?}",
        texts(&html, "#clearing")
    );
    assert_url_counts_kept(&app.database_url).await;
}

/// The admin maps assets to cache tags (Akamai's `Edge-Cache-Tag`), and the user clears
/// every variant of two assets: one request to the tag endpoint of the chosen action and
/// network, `{"objects":[…tags]}`, EdgeGrid-signed (the simulator checks the signature and
/// answers 401 otherwise), accepted like URLs and cleared after Akamai's estimate.
#[tokio::test]
async fn cache_tags_go_to_the_tag_endpoint_signed_like_urls() {
    let sim = AkamaiSim::start(1.0).await;
    sim.set_estimated_seconds(1);
    let app = spawn_app().await;
    let admin = configure(&app, &sim, &[("akamai_action", "delete")]).await;
    let r = admin.save_variants("tags", "Edge-Cache-Tag").await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let user = app.user(&admin, "ursula").await;
    let id = user
        .invalidate_variants(&["Backpack_B", "Tent-2P.v1", "Backpack_B"], "tags")
        .await;
    let json = user.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["scope"], "tags", "{json}");

    let purges: Vec<_> = sim
        .received()
        .into_iter()
        .filter(|r| r.path.starts_with("/ccu/v3/"))
        .collect();
    assert_eq!(purges.len(), 1, "{purges:?}");
    let tag = &purges[0];
    assert_eq!(
        (tag.method.as_str(), tag.path.as_str(), tag.status),
        ("POST", "/ccu/v3/delete/tag/production", 201),
        "{tag:?}"
    );
    assert_eq!(tag.content_type, "application/json");
    assert_eq!(tag.objects, ["Backpack_B", "Tent-2P.v1"]);
    assert_eq!(
        tag.body_len,
        r#"{"objects":["Backpack_B","Tent-2P.v1"]}"#.len()
    );
    let purge_id = json["batches"][0]["provider_id"].as_str().unwrap();
    assert!(purge_id.starts_with("edcp-sim"), "{json}");
    assert_no_secret(&json.to_string());
}

/// Akamai's tag rules are checked before anything is queued: a tag with a `/` or longer
/// than 128 characters is refused at Continue, naming the asset.
#[tokio::test]
async fn a_tag_akamai_would_refuse_is_refused_at_continue_naming_the_asset() {
    let sim = AkamaiSim::start(1.0).await;
    let app = spawn_app().await;
    let admin = configure(&app, &sim, &[]).await;
    assert_eq!(
        admin.save_variants("tags", "Edge-Cache-Tag").await.status(),
        StatusCode::SEE_OTHER
    );
    let user = app.user(&admin, "ursula").await;
    let long = "L".repeat(129);
    let ids = ["Company/Backpack", long.as_str(), "Tent_2P"];
    let r = user.continue_variants(&ids, "tags").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = scraper::Html::parse_document(&r.text().await.unwrap());
    let errors = texts(&html, "#variant-errors li");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("Company/Backpack")
            && errors[0].contains("\"/\", which Akamai does not accept in a tag"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains(&long) && errors[1].contains("Akamai accepts tags of at most 128"),
        "{errors:?}"
    );
    assert!(
        texts(&html, ".list-error")
            .concat()
            .starts_with("Nothing was invalidated"),
        "{:?}",
        texts(&html, ".list-error")
    );
    let history = user.page("/invalidations").await;
    assert!(
        texts(&history, "#history tbody tr").is_empty(),
        "nothing queued"
    );
    assert!(
        sim.received().iter().all(|r| !r.path.contains("/tag/")),
        "nothing sent"
    );
}

/// Another client on the account has just used every tag token: the 429 ("Tag Rate Limit
/// exceeded") is retried after the wait Akamai's headers give, and then accepted.
#[tokio::test]
async fn a_tag_429_is_retried_after_the_wait_akamais_headers_give() {
    let sim = AkamaiSim::start(1.0).await;
    sim.set_estimated_seconds(1);
    let app = spawn_app().await;
    let admin = configure(&app, &sim, &[]).await;
    assert_eq!(
        admin.save_variants("tags", "Edge-Cache-Tag").await.status(),
        StatusCode::SEE_OTHER
    );
    sim.drain_tag_tokens();
    let id = admin.invalidate_variants(&["Backpack_B"], "tags").await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["urls"][0]["attempts"], 2, "{json}");
    let answers: Vec<(u16, Option<String>)> = sim
        .received()
        .into_iter()
        .filter(|r| r.path == "/ccu/v3/invalidate/tag/production")
        .map(|r| (r.status, r.title))
        .collect();
    assert_eq!(
        answers,
        [
            (429, Some("Tag Rate Limit exceeded".to_string())),
            (201, None)
        ]
    );
}

/// 12,000 tags of the longest kind Akamai takes (128 characters) through the worker, with
/// the buckets sped up 300 times (tags refill at 2,500/s instead of 500/min): each request
/// stays within 50,000 bytes, the tag bucket covers every request (none answered 429), every
/// tag is sent once, and the 7,000 tags beyond the burst take the time the bucket allows.
#[tokio::test]
async fn twelve_thousand_tags_are_split_within_the_body_limit_and_paced_by_the_tag_bucket() {
    let scale = 300.0;
    let sim = AkamaiSim::start(scale).await;
    let tags: Vec<String> = (0..12_000)
        .map(|i| format!("{:~<128}", format!("asset-{i:06}-")))
        .collect();
    let run = purge_rows_through_worker(
        &sim,
        cdn_invalidator::cdn::Scope::Tags,
        tags.clone(),
        "images.example.com",
        scale,
        cdn_invalidator::cdn::PurgeConfig::default(),
    )
    .await;
    assert_eq!((run.accepted, run.failed), (12_000, 0), "{run:?}");
    let received = sim.received();
    assert!(
        received
            .iter()
            .all(|r| r.path == "/ccu/v3/invalidate/tag/production"),
        "{:?}",
        received.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    let answers: Vec<(u16, usize, u128)> = received
        .iter()
        .map(|r| {
            let at = r.at.duration_since(run.started).as_millis();
            (r.status, r.objects.len(), at)
        })
        .collect();
    assert!(
        answers.iter().all(|(status, ..)| *status == 201),
        "(status, tags, ms): {answers:?}"
    );
    // 381 of the longest tags is the most a 50,000-byte body holds.
    assert_eq!(received.len(), 12_000usize.div_ceil(381));
    assert!(received.iter().all(|r| r.objects.len() <= 381));
    let largest = received.iter().map(|r| r.body_len).max().unwrap();
    assert!(
        (49_000..=50_000).contains(&largest),
        "full requests, within the limit: {largest}"
    );
    let mut sent: Vec<String> = received.into_iter().flat_map(|r| r.objects).collect();
    sent.sort();
    let mut expected = tags;
    expected.sort();
    assert_eq!(sent, expected, "every tag sent exactly once");
    // (12,000 − 5,000 burst) tags at 2,500/s cannot take less than 2.8 s.
    assert!(
        run.elapsed.as_secs_f64() >= 2.8,
        "faster than the tag bucket allows: {:?}",
        run.elapsed
    );
}
