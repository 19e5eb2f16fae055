//! AWS CloudFront through the UI, against the loopback simulator.

use crate::helpers::*;
use crate::sim_cloudfront::{ACCESS_KEY_ID, DISTRIBUTION_ID, SECRET_ACCESS_KEY, SimCloudFront};
use reqwest::StatusCode;
use scraper::Html;
use std::time::{Duration, Instant};

const DOMAINS: &str = "images.example.com\nd111111abcdef8.cloudfront.net";

/// Fast polling so tests see CloudFront's InProgress → Completed quickly.
async fn spawn() -> TestApp {
    spawn_app_with(|c| c.purge.poll_interval = Duration::from_millis(50)).await
}

/// The admin saves CloudFront settings pointing at `sim`; `other.example.com` is an allowed host
/// that is not one of the distribution's domains.
async fn configure(app: &TestApp, sim: &SimCloudFront, secret: &str) -> Browser {
    let admin = app.admin().await;
    save(&admin, sim, secret).await;
    admin
}

async fn save(admin: &Browser, sim: &SimCloudFront, secret: &str) {
    let base = sim.base();
    let r = admin
        .save_provider(
            "images.example.com",
            "other.example.com\nd111111abcdef8.cloudfront.net",
            "cloudfront",
            &[
                ("cloudfront_base_url", base.as_str()),
                ("cloudfront_distribution_id", DISTRIBUTION_ID),
                ("cloudfront_domains", DOMAINS),
                ("cloudfront_access_key_id", ACCESS_KEY_ID),
                ("cloudfront_secret_access_key", secret),
            ],
        )
        .await;
    let status = r.status();
    assert_eq!(status, StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
}

/// The CallerReference of a recorded CreateInvalidation body.
fn caller_reference(body: &str) -> String {
    let start = body.find("<CallerReference>").unwrap() + "<CallerReference>".len();
    let end = body.find("</CallerReference>").unwrap();
    body[start..end].to_string()
}

fn paths_sent(body: &str) -> Vec<String> {
    body.split("<Path>")
        .skip(1)
        .map(|s| s.split("</Path>").next().unwrap().replace("&amp;", "&"))
        .collect()
}

/// The whole flow: secrets stay write-only, Test connection lists invalidations, the URLs stay
/// "submitted" while CloudFront reports InProgress and succeed once it reports Completed.
#[tokio::test]
async fn urls_stay_submitted_until_cloudfront_reports_completed() {
    let sim = SimCloudFront::start(Duration::from_millis(1500)).await;
    let app = spawn().await;
    let admin = configure(&app, &sim, SECRET_ACCESS_KEY).await;

    let settings = admin.get("/settings").await.text().await.unwrap();
    assert!(!settings.contains(SECRET_ACCESS_KEY) && !settings.contains(ACCESS_KEY_ID));
    let html = scraper::Html::parse_document(&settings);
    for field in ["cloudfront_access_key_id", "cloudfront_secret_access_key"] {
        assert_eq!(
            texts(&html, &format!("label[for={field}] .secret-set")).len(),
            1,
            "{field} shown as set"
        );
        assert_eq!(
            attr(&html, &format!("input[name={field}]"), "value").as_deref(),
            Some("")
        );
    }
    assert_eq!(
        texts(&html, "label[for=cloudfront_session_token] .secret-unset").len(),
        1
    );
    assert_eq!(
        attr(&html, "input[name=cloudfront_distribution_id]", "value").as_deref(),
        Some(DISTRIBUTION_ID)
    );

    let (ok, message) = admin.test_connection().await;
    assert!(ok, "{message}");
    assert!(
        message.contains("CloudFront accepted the credentials for distribution E2SIMULATED01"),
        "{message}"
    );
    // The test's call, then the same call timed on the open connection (for estimates).
    let listed = sim.received();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].path_and_query, listed[1].path_and_query);
    assert_eq!(
        (listed[0].method.as_str(), listed[0].path_and_query.as_str()),
        (
            "GET",
            "/2020-05-31/distribution/E2SIMULATED01/invalidation?MaxItems=1"
        )
    );
    assert!(
        listed[0]
            .authorization
            .starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/"))
            && listed[0].authorization.contains(
                "/us-east-1/cloudfront/aws4_request, SignedHeaders=host;x-amz-date, Signature="
            ),
        "{}",
        listed[0].authorization
    );

    let started = Instant::now();
    let id = admin
        .invalidate_urls(
            "https://images.example.com/is/image/Company/a?$product$&wid=10\n\
             https://d111111abcdef8.cloudfront.net/is/image/Company/café\n\
             https://images.example.com/is/image/Company/x%20y",
        )
        .await;
    // Accepted by CloudFront but not completed: every URL is "submitted", the request in progress.
    let mut submitted = serde_json::Value::Null;
    for _ in 0..100 {
        let json: serde_json::Value = admin.invalidation(id).await;
        if json["urls"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["status"] == "submitted")
        {
            submitted = json;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!submitted.is_null(), "URLs never showed as submitted");
    let invalidations = sim.invalidations();
    assert_eq!(invalidations.len(), 1);
    assert_eq!(submitted["batches"][0]["provider_id"], invalidations[0].id);
    assert_eq!(submitted["batches"][0]["status"], "in progress");

    let json = admin.wait_finished(id).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "succeeded only after CloudFront reported Completed"
    );
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["succeeded"], 3);
    assert_eq!(json["batches"][0]["status"], "done");
    assert_eq!(
        invalidations[0].paths,
        [
            "/is/image/Company/a?$product$&wid=10",
            "/is/image/Company/caf%C3%A9",
            "/is/image/Company/x%20y"
        ],
        "paths with query, non-ASCII encoded once, existing escapes kept"
    );
    let creates = sim.creates();
    assert_eq!(creates.len(), 1);
    assert!(creates[0].body.contains("<Quantity>3</Quantity>"));
    assert!(
        creates[0]
            .authorization
            .contains("SignedHeaders=content-type;host;x-amz-date"),
        "{}",
        creates[0].authorization
    );
    let polls: Vec<_> = sim
        .received()
        .into_iter()
        .filter(|r| {
            r.method == "GET"
                && r.path_and_query
                    == format!(
                        "/2020-05-31/distribution/E2SIMULATED01/invalidation/{}",
                        invalidations[0].id
                    )
        })
        .collect();
    assert!(polls.len() >= 2, "polled GetInvalidation until Completed");
    assert!(polls.iter().all(|r| r.status == 200));

    let page = admin.page(&format!("/invalidations/{id}")).await;
    assert_eq!(
        texts(&page, "#batches .provider-id"),
        [invalidations[0].id.clone()]
    );
    assert_eq!(texts(&page, "#status"), ["Succeeded"]);
    let raw = admin
        .get_json(&format!("/invalidations/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!raw.contains(SECRET_ACCESS_KEY) && !raw.contains(ACCESS_KEY_ID));
}

/// 3,500 URLs go out as 3,000 + 500, the second only once the first completed, so CloudFront
/// never has more than 3,000 paths in progress and never answers TooManyInvalidationsInProgress.
#[tokio::test]
async fn more_than_3000_urls_never_exceed_3000_in_progress() {
    let sim = SimCloudFront::start(Duration::from_millis(300)).await;
    let app = spawn().await;
    let admin = configure(&app, &sim, SECRET_ACCESS_KEY).await;
    let urls: Vec<String> = (0..3500)
        .map(|i| format!("https://images.example.com/is/image/p{i}"))
        .collect();
    let id = admin.invalidate_urls(&urls.join("\n")).await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded");
    assert_eq!(json["succeeded"], 3500);

    let creates = sim.creates();
    assert!(
        creates.iter().all(|r| r.status == 201),
        "{:?}",
        creates.iter().map(|r| &r.error_code).collect::<Vec<_>>()
    );
    let sizes: Vec<usize> = creates.iter().map(|r| paths_sent(&r.body).len()).collect();
    assert_eq!(sizes, [3000, 500]);
    assert!(creates[0].body.contains("<Quantity>3000</Quantity>"));
    assert!(sim.peak_in_progress() <= 3000);
    let invalidations = sim.invalidations();
    assert_eq!(invalidations.len(), 2);
    assert_ne!(
        invalidations[0].caller_reference,
        invalidations[1].caller_reference
    );
    let batches = json["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0]["url_count"], 3000);
    assert_eq!(batches[1]["provider_id"], invalidations[1].id);
}

/// The distribution's domains count as allowed hosts without being typed twice, and a URL on a
/// host CloudFront does not serve (even an allowed one) is refused at Continue with the
/// reason: nothing is queued and nothing reaches CloudFront.
#[tokio::test]
async fn hosts_the_distribution_does_not_serve_are_refused_at_continue() {
    let sim = SimCloudFront::start(Duration::from_millis(100)).await;
    let app = spawn().await;
    let admin = app.admin().await;
    let r = admin
        .save_provider(
            "images.example.com",
            "other.example.com",
            "cloudfront",
            &[
                ("cloudfront_base_url", sim.base().as_str()),
                ("cloudfront_distribution_id", DISTRIBUTION_ID),
                ("cloudfront_domains", DOMAINS),
                ("cloudfront_access_key_id", ACCESS_KEY_ID),
                ("cloudfront_secret_access_key", SECRET_ACCESS_KEY),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    let (_, page) = admin.open_invalidate(&[]).await;
    let r = admin
        .continue_with(
            &page,
            "https://images.example.com/a\nhttps://other.example.com/b",
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = Html::parse_document(&r.text().await.unwrap());
    assert_eq!(
        texts(&html, "#url-errors li"),
        [
            "Line 2: host other.example.com is not served by CloudFront distribution E2SIMULATED01 \
             (its domains: images.example.com, d111111abcdef8.cloudfront.net); add it to the \
             distribution's domains in the settings, or remove the line."
        ]
    );
    assert!(sim.creates().is_empty(), "nothing was sent");

    // d111111abcdef8.cloudfront.net was never typed as an allowed host: it is one of the
    // distribution's domains, and that is enough.
    let id = admin
        .invalidate_urls("https://images.example.com/a\nhttps://d111111abcdef8.cloudfront.net/c")
        .await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    let creates = sim.creates();
    assert_eq!(creates.len(), 1);
    assert_eq!(paths_sent(&creates[0].body), ["/a", "/c"]);
}

/// AWS's refusal is shown in AWS's words (code, message, request id) and not retried; a wrong
/// secret makes Test connection report SignatureDoesNotMatch.
#[tokio::test]
async fn aws_errors_are_shown_in_aws_words() {
    let sim = SimCloudFront::start(Duration::from_millis(100)).await;
    let app = spawn().await;
    let admin = configure(&app, &sim, SECRET_ACCESS_KEY).await;
    let denied = "User: arn:aws:iam::123456789012:user/purger is not authorized to perform: \
                  cloudfront:CreateInvalidation on resource: arn:aws:cloudfront::123456789012:distribution/E2SIMULATED01";
    sim.fail_next_create(403, "AccessDenied", denied);
    let id = admin.invalidate_urls("https://images.example.com/a").await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "failed");
    let url = &json["urls"][0];
    assert_eq!(url["attempts"], 1, "a permanent refusal is not retried");
    assert_eq!(url["http_status"], 403);
    let request_id = sim.creates()[0].clone();
    assert_eq!(request_id.error_code.as_deref(), Some("AccessDenied"));
    let error = url["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "CloudFront 403 AccessDenied: {denied} (request id sim-"
        )),
        "{error}"
    );
    let page = admin.page(&format!("/invalidations/{id}")).await;
    assert!(texts(&page, "#urls tbody .detail")[0].contains("AccessDenied"));

    save(&admin, &sim, "not-the-secret").await;
    let (ok, message) = admin.test_connection().await;
    assert!(!ok);
    assert!(
        message.contains("CloudFront 403 SignatureDoesNotMatch: The request signature we calculated does not match"),
        "{message}"
    );
}

/// CloudFront created the invalidation but answered 503: the retry carries the same
/// CallerReference, gets the existing invalidation back, and no second one is created.
#[tokio::test]
async fn a_retried_request_reuses_the_caller_reference() {
    let sim = SimCloudFront::start(Duration::from_millis(200)).await;
    sim.fail_after_create(1);
    let app = spawn().await;
    let admin = configure(&app, &sim, SECRET_ACCESS_KEY).await;
    let id = admin
        .invalidate_urls("https://images.example.com/a\nhttps://images.example.com/b")
        .await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["urls"][0]["attempts"], 2);
    let creates = sim.creates();
    assert_eq!(
        creates.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 201]
    );
    assert_eq!(
        caller_reference(&creates[0].body),
        caller_reference(&creates[1].body)
    );
    let invalidations = sim.invalidations();
    assert_eq!(invalidations.len(), 1, "no second invalidation");
    let batches = json["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0]["provider_id"], invalidations[0].id);
}

/// Throttling and TooManyInvalidationsInProgress are waited out and retried, then succeed.
#[tokio::test]
async fn throttling_and_too_many_in_progress_are_retried() {
    let sim = SimCloudFront::start(Duration::from_millis(100)).await;
    sim.fail_next_create(400, "Throttling", "Rate exceeded");
    sim.fail_next_create(
        400,
        "TooManyInvalidationsInProgress",
        "Processing your request will cause you to exceed the maximum number of in-progress invalidations.",
    );
    let app = spawn().await;
    let admin = configure(&app, &sim, SECRET_ACCESS_KEY).await;
    let id = admin.invalidate_urls("https://images.example.com/a").await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["urls"][0]["attempts"], 3);
    let codes: Vec<Option<String>> = sim.creates().into_iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes,
        [
            Some("Throttling".to_string()),
            Some("TooManyInvalidationsInProgress".to_string()),
            None
        ]
    );
}

/// A request CloudFront never reports complete does not hold the queue for ever: after the
/// poll deadline its URLs fail with the reason, and the next invalidation runs.
#[tokio::test]
async fn a_request_never_completed_fails_after_the_poll_deadline() {
    let sim = SimCloudFront::start(Duration::from_secs(3600)).await;
    let app = spawn_app_with(|c| {
        c.purge.poll_interval = Duration::from_millis(50);
        c.purge.poll_timeout = Duration::from_millis(400);
    })
    .await;
    let admin = configure(&app, &sim, SECRET_ACCESS_KEY).await;
    let id = admin
        .invalidate_urls("https://images.example.com/stuck")
        .await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "failed", "{json}");
    let error = json["urls"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("did not report") && error.contains("complete"),
        "{error}"
    );
    assert_eq!(json["batches"][0]["status"], "done");
}

/// A CloudFront-compatible service that reports `COMPLETED` in capitals: the URLs succeed once
/// it does, instead of sitting "submitted" until the poll deadline fails them.
#[tokio::test]
async fn completed_is_read_without_regard_to_case() {
    let sim = SimCloudFront::start(Duration::from_millis(300)).await;
    sim.say_completed_as("COMPLETED");
    let app = spawn_app_with(|c| {
        c.purge.poll_interval = Duration::from_millis(50);
        c.purge.poll_timeout = Duration::from_secs(60);
    })
    .await;
    let admin = configure(&app, &sim, SECRET_ACCESS_KEY).await;
    let id = admin
        .invalidate_urls("https://images.example.com/is/image/capitals")
        .await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["urls"][0]["status"], "succeeded");
    let polled = sim
        .received()
        .iter()
        .filter(|r| r.method == "GET" && r.path_and_query.contains("/invalidation/"))
        .count();
    assert!(polled >= 1, "the app polled until COMPLETED");
}

/// An invalidation waiting for CloudFront to finish does not hold up the ones behind it.
#[tokio::test]
async fn a_cloudfront_invalidation_in_progress_does_not_block_the_queue() {
    let sim = SimCloudFront::start(Duration::from_secs(3)).await;
    let node = crate::purge_node::PurgeNode::start(200).await;
    let app = spawn().await;
    let admin = configure(&app, &sim, SECRET_ACCESS_KEY).await;
    let slow = admin
        .invalidate_urls("https://images.example.com/slow")
        .await;
    // The admin switches to HTTP PURGE; the next invalidation goes straight through.
    let r = admin
        .save_provider(
            "images.example.com",
            "",
            "http_purge",
            &[("purge_nodes", &node.base())],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let fast = admin
        .invalidate_urls("https://images.example.com/fast")
        .await;
    let json = admin.wait_finished(fast).await;
    assert_eq!(json["status"], "succeeded");
    let waiting: serde_json::Value = admin.invalidation(slow).await;
    assert_eq!(
        waiting["status"], "running",
        "CloudFront is still working: {waiting}"
    );
    assert_eq!(waiting["urls"][0]["status"], "submitted");
    let json = admin.wait_finished(slow).await;
    assert_eq!(json["status"], "succeeded", "{json}");
}

/// The admin saves CloudFront for `sim` (the distribution's domains only), a template under
/// `Company/`, every variant mapped to path prefixes, and `assets`.
async fn prefixes_admin(app: &TestApp, sim: &SimCloudFront, assets: &[String]) -> Browser {
    let admin = app.admin().await;
    let r = admin
        .save_provider(
            "images.example.com",
            "d111111abcdef8.cloudfront.net",
            "cloudfront",
            &[
                ("cloudfront_base_url", sim.base().as_str()),
                ("cloudfront_distribution_id", DISTRIBUTION_ID),
                ("cloudfront_domains", DOMAINS),
                ("cloudfront_access_key_id", ACCESS_KEY_ID),
                ("cloudfront_secret_access_key", SECRET_ACCESS_KEY),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = admin
        .save_settings(
            "images.example.com",
            "Company/<ID>?$product$\nCompany/<ID>?wid=640",
            "",
            "d111111abcdef8.cloudfront.net",
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = admin.save_variants("prefixes", "Cache-Tag").await;
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

/// 40 prefixes go as wildcard paths at most 15 in progress at a time (CloudFront's limit,
/// counted apart from file paths): requests of 15, 15 and 10, each sent once the one before
/// completed, and CloudFront never answers TooManyInvalidationsInProgress.
#[tokio::test]
async fn forty_prefixes_never_exceed_15_wildcards_in_progress() {
    let sim = SimCloudFront::start(Duration::from_millis(300)).await;
    let app = spawn().await;
    let ids: Vec<String> = (0..40).map(|i| format!("Backpack_{i:02}")).collect();
    let admin = prefixes_admin(&app, &sim, &ids).await;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let id = admin.invalidate_variants(&refs, "prefixes").await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["scope"], "prefixes");
    assert_eq!(json["succeeded"], 40);

    let creates = sim.creates();
    assert!(
        creates.iter().all(|r| r.status == 201),
        "{:?}",
        creates.iter().map(|r| &r.error_code).collect::<Vec<_>>()
    );
    let sizes: Vec<usize> = creates.iter().map(|r| paths_sent(&r.body).len()).collect();
    assert_eq!(sizes, [15, 15, 10]);
    assert!(sim.peak_wildcards_in_progress() <= 15);
    assert_eq!(sim.peak_wildcards_in_progress(), 15);
    let paths: Vec<String> = creates.iter().flat_map(|r| paths_sent(&r.body)).collect();
    let expected: Vec<String> = ids
        .iter()
        .map(|id| format!("/is/image/Company/{id}*"))
        .collect();
    assert_eq!(paths, expected);
    assert_eq!(json["batches"].as_array().unwrap().len(), 3);
}

/// A prefix is the URL-encoded path with `*` last: non-ASCII and spaces encoded once.
#[tokio::test]
async fn a_prefix_is_its_encoded_path_with_a_star_at_the_end() {
    let sim = SimCloudFront::start(Duration::from_millis(100)).await;
    let app = spawn().await;
    let ids = vec!["Café 1".to_string(), "Backpack_B".to_string()];
    let admin = prefixes_admin(&app, &sim, &ids).await;
    let id = admin
        .invalidate_variants(&["Café 1", "Backpack_B"], "prefixes")
        .await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    let invalidations = sim.invalidations();
    assert_eq!(invalidations.len(), 1);
    assert_eq!(
        invalidations[0].paths,
        [
            "/is/image/Company/Caf%C3%A9%201*",
            "/is/image/Company/Backpack_B*"
        ]
    );
}

/// An admin's purge of everything is one invalidation of `/*`, whatever the sites.
#[tokio::test]
async fn purge_everything_is_one_slash_star() {
    let sim = SimCloudFront::start(Duration::from_millis(100)).await;
    let app = spawn().await;
    let admin = prefixes_admin(&app, &sim, &[]).await;
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
    // One row, the publish server's site: `/*` clears the whole distribution.
    assert_eq!(json["total"], 1, "{json}");
    assert_eq!(json["urls"][0]["url"], "https://images.example.com/");
    let creates = sim.creates();
    assert_eq!(creates.len(), 1);
    assert_eq!(paths_sent(&creates[0].body), ["/*"]);
    assert!(creates[0].body.contains("<Quantity>1</Quantity>"));
}
