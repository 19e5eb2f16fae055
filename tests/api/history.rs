use crate::helpers::*;
use crate::purge_node::PurgeNode;

#[tokio::test]
async fn history_lists_newest_first_and_filters() {
    let node = PurgeNode::start_failing("beta", 200, 405).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "", &node.base(), "")
        .await;
    let user = app.user(&admin, "ursula").await;
    let first = admin
        .invalidate_urls("https://server.com/is/image/alpha")
        .await;
    admin.wait_finished(first).await;
    let second = user
        .invalidate_urls("https://server.com/is/image/beta")
        .await;
    user.wait_finished(second).await;

    let html = user.page("/invalidations").await;
    let rows: Vec<String> = html
        .select(&sel("#history tbody tr"))
        .map(|r| r.value().attr("data-id").unwrap().to_string())
        .collect();
    assert_eq!(rows, [second.to_string(), first.to_string()]);
    assert_eq!(texts(&html, "#history-count"), ["2 invalidations."]);
    assert_eq!(
        texts(
            &user.page("/invalidations?status=failed").await,
            "#history-count"
        ),
        ["1 invalidation."]
    );
    assert_eq!(
        texts(&html, "#history tbody tr:first-child td:nth-child(3)"),
        ["ursula"]
    );
    assert!(
        html.select(&sel(&format!("a[href='/invalidations/{first}']")))
            .next()
            .is_some()
    );

    let only = |html: &scraper::Html| -> Vec<String> {
        html.select(&sel("#history tbody tr"))
            .map(|r| r.value().attr("data-id").unwrap().to_string())
            .collect()
    };
    assert_eq!(
        only(&user.page("/invalidations?status=succeeded").await),
        [first.to_string()]
    );
    assert_eq!(
        only(&user.page("/invalidations?status=failed").await),
        [second.to_string()]
    );
    assert_eq!(
        only(&user.page("/invalidations?user=admin").await),
        [first.to_string()]
    );
    assert_eq!(
        only(&user.page("/invalidations?url=BETA").await),
        [second.to_string()]
    );
    assert!(only(&user.page("/invalidations?url=gamma").await).is_empty());
    // A page past the end shows the last page.
    assert_eq!(
        only(&user.page("/invalidations?url=server&page=9").await),
        [second.to_string(), first.to_string()]
    );
}

/// A 10,000-URL invalidation part way through: URL `p` failed when p % 10 == 3, is waiting for
/// a retry when p % 10 == 5, succeeded when p % 10 < 2 and p < 8,000; the rest are queued.
async fn large_invalidation(app: &TestApp, admin: &Browser) -> i64 {
    use cdn_invalidator::store::{Store, UrlOutcome, UrlStatus};
    admin.save_settings("server.com", "", "", "").await;
    let urls: Vec<String> = (0..10_000)
        .map(|p| format!("https://server.com/is/image/p{p}"))
        .collect();
    let id = admin.invalidate_urls(&urls.join("\n")).await;
    let store = Store::connect(&app.database_url).await.unwrap();
    let outcome = |status, error: Option<&str>| UrlOutcome {
        status,
        attempts: 1,
        http_status: Some(if status == UrlStatus::Succeeded {
            200
        } else {
            503
        }),
        error: error.map(str::to_string),
        batch_id: None,
    };
    let outcomes: Vec<_> = store
        .invalidation_urls(id)
        .await
        .unwrap()
        .into_iter()
        .enumerate()
        .filter_map(|(p, u)| {
            let status = match p % 10 {
                3 => UrlStatus::Failed,
                5 => UrlStatus::Retrying,
                0 | 1 if p < 8000 => UrlStatus::Succeeded,
                _ => return None,
            };
            let error = (status != UrlStatus::Succeeded).then_some("HTTP 503");
            Some((u.id, outcome(status, error)))
        })
        .collect();
    store.record_urls(&outcomes).await.unwrap();
    store.close().await;
    id
}

/// Follows an invalidation page's "Next URLs" links from `path`; returns every row's
/// (line, URL, outcome).
async fn url_table(b: &Browser, path: &str) -> Vec<(usize, String, String)> {
    let mut rows = Vec::new();
    let mut next = Some(path.to_string());
    while let Some(path) = next {
        let html = b.page(&path).await;
        for row in html.select(&sel("#urls tbody tr")) {
            let cell = |css: &str| {
                row.select(&sel(css))
                    .next()
                    .map(|e| e.text().collect::<String>())
                    .unwrap_or_default()
            };
            rows.push((
                cell(".line").parse().unwrap(),
                cell("code"),
                cell(".outcome"),
            ));
        }
        next = attr(&html, "#urls-pager a[rel=next]", "href");
    }
    rows
}

/// The progress poll of a 10,000-URL invalidation carries counts and no URLs; its page shows
/// the counts per state and 100 URLs at a time, and its pages visit every URL once.
#[tokio::test]
async fn a_large_invalidation_polls_counts_and_pages_its_urls() {
    let app = spawn_app_with(|c| c.run_worker = false).await;
    let admin = app.admin().await;
    let id = large_invalidation(&app, &admin).await;

    let progress: serde_json::Value = admin
        .get_json(&format!("/invalidations/{id}?urls=none"))
        .await
        .json()
        .await
        .unwrap();
    assert!(progress.get("urls").is_none(), "{progress}");
    assert!(progress.get("batches").is_none(), "{progress}");
    assert_eq!(
        progress["counts"],
        serde_json::json!({"queued": 6400, "retrying": 1000, "submitted": 0, "succeeded": 1600, "failed": 1000})
    );
    assert_eq!(progress["total"], 10_000);
    assert_eq!(progress["succeeded"], 1600);
    assert_eq!(progress["failed"], 1000);
    assert_eq!(progress["status"], "queued");

    // The JSON's default page: the first 100 URLs and the address of the next 100.
    let first = admin.invalidation(id).await;
    let urls = first["urls"].as_array().unwrap();
    assert_eq!(urls.len(), 100);
    assert_eq!(urls[3]["status"], "failed");
    assert_eq!(urls[99]["position"], 99);
    assert_eq!(
        first["urls_next"],
        format!("/invalidations/{id}?urls_after=99")
    );
    assert_eq!(first["counts"], progress["counts"]);
    // Pages of up to 1,000 by the JSON's own next links visit every URL once, in order.
    let mut positions = Vec::new();
    let mut next = format!("/invalidations/{id}?urls_limit=1000");
    loop {
        let page: serde_json::Value = admin.get_json(&next).await.json().await.unwrap();
        for u in page["urls"].as_array().unwrap() {
            let p = u["position"].as_u64().unwrap();
            assert_eq!(u["url"], format!("https://server.com/is/image/p{p}"));
            positions.push(p);
        }
        match page["urls_next"].as_str() {
            Some(link) => next = link.to_string(),
            None => break,
        }
    }
    assert_eq!(positions, (0..10_000).collect::<Vec<u64>>());

    // The page: counts per state link to the table filtered to it.
    let html = admin.page(&format!("/invalidations/{id}")).await;
    assert_eq!(texts(&html, "#count-all"), ["10000"]);
    assert_eq!(texts(&html, "#count-failed"), ["1000"]);
    assert_eq!(texts(&html, "#count-queued"), ["6400"]);
    assert_eq!(
        attr(&html, "#url-filters a.count-failed", "href").unwrap(),
        format!("/invalidations/{id}?status=failed")
    );
    assert_eq!(texts(&html, "#urls tbody tr").len(), 100);
    // Its pages visit every URL once, in the order given.
    let rows = url_table(&admin, &format!("/invalidations/{id}")).await;
    assert_eq!(rows.len(), 10_000);
    for (i, (line, url, _)) in rows.iter().enumerate() {
        assert_eq!(*line, i + 1);
        assert_eq!(*url, format!("https://server.com/is/image/p{i}"));
    }

    // Only the failed ones, every one of them, still in order.
    let failed = url_table(&admin, &format!("/invalidations/{id}?status=failed")).await;
    assert_eq!(failed.len(), 1000);
    assert!(failed.iter().all(|(_, _, outcome)| outcome == "failed"));
    assert!(failed.iter().all(|(line, _, _)| (line - 1) % 10 == 3));
    assert!(failed.windows(2).all(|w| w[0].0 < w[1].0));
    let json: serde_json::Value = admin
        .get_json(&format!(
            "/invalidations/{id}?status=failed&urls_limit=1000"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json["urls"].as_array().unwrap().len(), 1000);
    assert!(json["urls_next"].is_null());

    // A state that is not one is refused, not ignored.
    let r = admin.get(&format!("/invalidations/{id}?status=done")).await;
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let r = admin
        .get(&format!("/invalidations/{id}?urls_limit=100000"))
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
}

/// Provider requests (one per URL for some providers) come 100 at a time too, oldest first.
#[tokio::test]
async fn provider_requests_are_paged() {
    use cdn_invalidator::store::{NewBatch, Store};
    let app = spawn_app_with(|c| c.run_worker = false).await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "", "", "").await;
    let id = admin.invalidate_urls("https://server.com/is/image/a").await;
    let store = Store::connect(&app.database_url).await.unwrap();
    for i in 0..150 {
        let provider_id = format!("purge-{i}");
        store
            .record_batch(&NewBatch {
                invalidation_id: id,
                reference: "ref",
                provider_id: Some(&provider_id),
                support_id: None,
                estimated_seconds: None,
                url_count: 1,
                pending: false,
            })
            .await
            .unwrap();
    }
    store.close().await;

    let first = admin.invalidation(id).await;
    let batches = first["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 100);
    assert_eq!(batches[0]["provider_id"], "purge-0");
    assert_eq!(first["batches_total"], 150);
    let next = first["batches_next"].as_str().unwrap();
    let second: serde_json::Value = admin.get_json(next).await.json().await.unwrap();
    let rest: Vec<&str> = second["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["provider_id"].as_str().unwrap())
        .collect();
    assert_eq!(rest.len(), 50);
    assert_eq!(rest[0], "purge-100");
    assert!(second["batches_next"].is_null());
    // The page: the first 100, the count, and a link to the rest.
    let html = admin.page(&format!("/invalidations/{id}")).await;
    assert_eq!(texts(&html, "#batches .provider-id").len(), 100);
    assert!(texts(&html, "#batches caption")[0].contains("100 shown of 150"));
    assert_eq!(
        attr(&html, "#batches-pager a[rel=next]", "href").as_deref(),
        Some(next)
    );
}
