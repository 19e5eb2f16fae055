use crate::helpers::*;
use crate::purge_node::PurgeNode;
use crate::varnish::{Origin, Varnish};
use reqwest::StatusCode;

/// The whole flow against a real Varnish: cached (hit), origin changes, user invalidates the
/// asset through the UI, next fetch is a miss with the new content.
#[tokio::test]
async fn invalidating_an_asset_empties_a_real_varnish_cache() {
    let origin = Origin::start().await;
    let varnish = Varnish::start(origin.port).await;
    let server = format!("http://127.0.0.1:{}", varnish.port);
    let path = "/is/image/Company/Backpack_B?$product$";

    let hits_before = *origin.hits.lock().unwrap();
    // Warm the cache: first a miss, then a hit, both with v1.
    let (body, cache) = varnish
        .fetch(path, &format!("127.0.0.1:{}", varnish.port))
        .await;
    assert_eq!(
        (body.as_str(), cache.as_str()),
        ("v1:/is/image/Company/Backpack_B?$product$", "MISS")
    );
    let (body, cache) = varnish
        .fetch(path, &format!("127.0.0.1:{}", varnish.port))
        .await;
    assert_eq!(
        (body.as_str(), cache.as_str()),
        ("v1:/is/image/Company/Backpack_B?$product$", "HIT")
    );
    origin.set_version("v2");
    let (body, _) = varnish
        .fetch(path, &format!("127.0.0.1:{}", varnish.port))
        .await;
    assert!(body.starts_with("v1:"), "still cached before the purge");

    // Admin: publish server is the Varnish, template per the seed, no purge nodes (PURGE to the URL's host).
    let app = spawn_app().await;
    let admin = app.admin().await;
    assert_eq!(
        admin
            .save_settings(&server, "Company/<ID>?$product$", "", "")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    admin
        .import_csv("id,name,type\nBackpack_B,Backpack blue,image\nTent_2P,Tent,image\n")
        .await;
    let user = app.user(&admin, "ursula").await;

    // User: tick the asset, see the prefilled URL, Continue.
    let (_, page) = user.open_invalidate(&["Backpack_B"]).await;
    let urls = texts(&page, "textarea[name=urls]").remove(0);
    assert_eq!(urls, format!("{server}{path}"));
    let r = user.continue_with(&page, &urls).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let id = invalidation_id(&r);

    let json = user.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["urls"][0]["http_status"], 200);
    assert_eq!(json["urls"][0]["attempts"], 1);

    let (body, cache) = varnish
        .fetch(path, &format!("127.0.0.1:{}", varnish.port))
        .await;
    assert_eq!(
        (body.as_str(), cache.as_str()),
        ("v2:/is/image/Company/Backpack_B?$product$", "MISS")
    );
    assert_eq!(
        *origin.hits.lock().unwrap() - hits_before,
        2,
        "the origin saw the first miss and the miss after the purge only"
    );

    // The result page shows the outcome per URL and the duration beside the estimate.
    let html = user.page(&format!("/invalidations/{id}")).await;
    assert_eq!(texts(&html, "#status"), ["Succeeded"]);
    // One URL to a cache nearby, nothing measured before: well under a second.
    assert_eq!(
        texts(&html, "#estimate"),
        ["Estimated time to clear: under a second."]
    );
    assert_eq!(texts(&html, "#urls tbody .outcome"), ["succeeded"]);
    assert_eq!(texts(&html, "#duration").len(), 1);
    assert_eq!(
        texts(&html, "#clearing"),
        ["Cleared: the cache confirmed each purge."]
    );
}

/// Purge nodes: every node gets `PURGE <path?query>` with the URL's Host; done when all answered.
#[tokio::test]
async fn purge_nodes_each_get_the_path_with_the_urls_host() {
    let (a, b) = (PurgeNode::start(200).await, PurgeNode::start(404).await);
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings(
            "images.example.com",
            "<ID>",
            &format!("{}\n{}", a.base(), b.base()),
            "",
        )
        .await;
    let id = admin
        .invalidate_urls("https://images.example.com/is/image/x%20y?$p$&wid=10")
        .await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded");
    for node in [&a, &b] {
        let got = node.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].method, "PURGE");
        assert_eq!(got[0].path_and_query, "/is/image/x%20y?$p$&wid=10");
        assert_eq!(got[0].host, "images.example.com");
    }
}

/// A node answering 503 is retried with backoff up to the attempt limit, then the URL fails
/// with its reason on the page; Retry failed URLs makes a new, linked invalidation.
#[tokio::test]
async fn a_failing_node_is_retried_then_failed_with_its_reason() {
    let good = PurgeNode::start(200).await;
    let bad = PurgeNode::start(503).await;
    let app = spawn_app_with(|c| c.purge.max_attempts = 3).await;
    let admin = app.admin().await;
    admin
        .save_settings(
            "server.com",
            "<ID>",
            &format!("{}\n{}", good.base(), bad.base()),
            "",
        )
        .await;
    let id = admin
        .invalidate_urls("https://server.com/is/image/a\nhttps://server.com/is/image/b")
        .await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "failed", "{json}");
    assert_eq!(json["failed"], 2);
    for url in json["urls"].as_array().unwrap() {
        assert_eq!(url["status"], "failed");
        assert_eq!(url["attempts"], 3);
        assert_eq!(url["http_status"], 503);
        let error = url["error"].as_str().unwrap();
        assert!(
            error.contains(&bad.base())
                && error.contains("503")
                && error.contains("gave up after 3 attempts"),
            "{error}"
        );
    }
    assert_eq!(bad.received().len(), 6, "3 attempts for each of 2 URLs");

    let html = admin.page(&format!("/invalidations/{id}")).await;
    assert_eq!(texts(&html, "#status"), ["Failed"]);
    assert!(texts(&html, "#urls tbody .detail")[0].contains("503 Service Unavailable"));
    let token = attr(
        &html,
        "form[action$='/retry'] input[name=csrf_token]",
        "value",
    )
    .expect("retry button");
    let r = admin
        .post_form(
            &format!("/invalidations/{id}/retry"),
            &[("csrf_token", &token)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let retry_id = invalidation_id(&r);
    assert_ne!(retry_id, id);
    let json = admin.wait_finished(retry_id).await;
    assert_eq!(json["total"], 2);
    let html = admin.page(&format!("/invalidations/{retry_id}")).await;
    assert!(
        html.select(&sel(&format!("a[href='/invalidations/{id}']")))
            .next()
            .is_some(),
        "links to the original"
    );
    // Retrying the same invalidation again leads to the same retry.
    let r = admin
        .post_form(
            &format!("/invalidations/{id}/retry"),
            &[("csrf_token", &token)],
        )
        .await;
    assert_eq!(invalidation_id(&r), retry_id);
    assert_url_counts_kept(&app.database_url).await;
}

#[tokio::test]
async fn other_client_errors_fail_at_once_and_partial_failures_are_reported() {
    let node = PurgeNode::start(405).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin.save_settings(&node.base(), "<ID>", "", "").await;
    let id = admin
        .invalidate_urls(&format!("{}/is/image/a", node.base()))
        .await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["urls"][0]["attempts"], 1);
    assert_eq!(json["urls"][0]["error"], "HTTP 405 Method Not Allowed");

    // One URL the cache purges, one it refuses: partially failed.
    let picky = PurgeNode::start_failing("refused", 204, 403).await;
    admin
        .save_settings("server.com", "", &picky.base(), "")
        .await;
    let id = admin
        .invalidate_urls("https://server.com/is/image/a\nhttps://server.com/is/image/refused")
        .await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "partially_failed", "{json}");
    assert_eq!(
        (json["succeeded"].as_i64(), json["failed"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(json["urls"][1]["error"], "HTTP 403 Forbidden");

    // A purge node that cannot be reached: the connection error is the reason.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    admin
        .save_settings("server.com", "", &format!("http://127.0.0.1:{closed}"), "")
        .await;
    let id = admin.invalidate_urls("https://server.com/is/image/c").await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "failed", "{json}");
    assert!(
        json["urls"][0]["error"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{json}"
    );
    assert_url_counts_kept(&app.database_url).await;
}

/// Unfinished work survives a restart: queued with no worker, then a new process finishes it.
#[tokio::test]
async fn queued_invalidations_continue_after_a_restart() {
    let node = PurgeNode::start(200).await;
    let app = spawn_app_with(|c| c.run_worker = false).await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "")
        .await;
    let id = admin
        .invalidate_urls("https://server.com/is/image/a\nhttps://server.com/is/image/b")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let json: serde_json::Value = admin.invalidation(id).await;
    assert_eq!(json["status"], "queued");
    assert!(node.received().is_empty());

    // "Restart": a second process on the same database, this time with its worker.
    let restarted = start(test_config(&app.database_url), tempfile::tempdir().unwrap()).await;
    let b = restarted.browser();
    assert_eq!(
        b.login(ADMIN, ADMIN_PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let json = b.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded");
    assert_eq!(node.received().len(), 2);
}

/// The estimate counts the URLs queued ahead plus this one's, by the provider's model.
#[tokio::test]
async fn the_estimate_counts_the_queue_ahead() {
    let app = spawn_app_with(|c| c.run_worker = false).await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "", "", "").await;
    let hundred: String = (0..100)
        .map(|i| format!("https://server.com/{i}\n"))
        .collect();
    let first = admin.invalidate_urls(&hundred).await;
    let second = admin.invalidate_urls(&hundred).await;
    let a: serde_json::Value = admin.invalidation(first).await;
    let b: serde_json::Value = admin.invalidation(second).await;
    // HTTP PURGE to each URL's own host, nothing measured yet: 20 ms a request, 8 at once.
    // 100 URLs: 13 rounds, 260 ms + 5 ms of bookkeeping + 0.004 ms a URL = 265 ms.
    // 100 ahead + 100: 25 rounds, 500 + 5 + 0.8 = 506 ms.
    assert_eq!(a["estimated_ms"], 265, "{a}");
    assert_eq!(b["estimated_ms"], 506, "{b}");
    assert_eq!(b["estimated_seconds"], 1);
    let html = admin.page(&format!("/invalidations/{second}")).await;
    assert_eq!(
        texts(&html, "#estimate"),
        ["Estimated time to clear: under a second."]
    );
    // Not finished: a progress bar and a no-JavaScript refresh.
    assert_eq!(attr(&html, "progress#progress", "max").unwrap(), "100");
    // (html5ever parses <noscript> as text, as a browser with scripting on does.)
    assert!(texts(&html, "head noscript")[0].contains(r#"http-equiv="refresh""#));
    // The JSON has the documented shape.
    for key in [
        "id",
        "status",
        "total",
        "succeeded",
        "failed",
        "estimated_seconds",
        "estimated_ms",
        "clearing",
        "created_at",
        "finished_at",
        "urls",
    ] {
        assert!(a.get(key).is_some(), "missing {key}");
    }
    for key in ["url", "status", "attempts", "http_status", "error"] {
        assert!(a["urls"][0].get(key).is_some(), "missing urls[].{key}");
    }
}

/// Settings changed after queuing: URLs whose host is no longer allowed are not sent, and
/// Retry refuses them too.
#[tokio::test]
async fn hosts_removed_from_the_settings_are_not_purged_later() {
    let node = PurgeNode::start(503).await;
    let app = spawn_app_with(|c| c.purge.max_attempts = 1).await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "old.example.com")
        .await;
    let id = admin.invalidate_urls("https://old.example.com/a").await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "failed");
    assert_eq!(node.received().len(), 1);

    // The admin drops old.example.com: Retry is refused and queues nothing.
    admin
        .save_settings("server.com", "<ID>", &node.base(), "")
        .await;
    let html = admin.page(&format!("/invalidations/{id}")).await;
    let token = attr(
        &html,
        "form[action$='/retry'] input[name=csrf_token]",
        "value",
    )
    .unwrap();
    let r = admin
        .post_form(
            &format!("/invalidations/{id}/retry"),
            &[("csrf_token", &token)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("old.example.com"));
    assert_eq!(
        texts(&admin.page("/invalidations").await, "#history tbody tr").len(),
        1
    );

    // Queued while allowed, sent after the host was removed: failed without a request.
    let paused = spawn_app_with(|c| c.run_worker = false).await;
    let admin = paused.admin().await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "old.example.com")
        .await;
    let queued = admin.invalidate_urls("https://old.example.com/b").await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "")
        .await;
    let worker = start(
        test_config(&paused.database_url),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let b = worker.browser();
    b.login(ADMIN, ADMIN_PASSWORD).await;
    let json = b.wait_finished(queued).await;
    assert_eq!(json["status"], "failed");
    assert!(
        json["urls"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no longer"),
        "{json}"
    );
    assert_eq!(
        node.received().len(),
        1,
        "nothing was sent for the removed host"
    );
}

/// Two people pressing Retry on the same invalidation get the same retry: one purge.
#[tokio::test]
async fn concurrent_retries_by_two_users_make_one_retry() {
    let node = PurgeNode::start(405).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "")
        .await;
    let user = app.user(&admin, "ursula").await;
    let id = admin.invalidate_urls("https://server.com/is/image/a").await;
    admin.wait_finished(id).await;
    let (a, b) = (
        admin.csrf_from("/assets").await,
        user.csrf_from("/assets").await,
    );
    let path = format!("/invalidations/{id}/retry");
    let (fa, fb) = ([("csrf_token", a.as_str())], [("csrf_token", b.as_str())]);
    let (ra, rb) = tokio::join!(admin.post_form(&path, &fa), user.post_form(&path, &fb));
    assert_eq!(invalidation_id(&ra), invalidation_id(&rb));
    assert_eq!(
        texts(&admin.page("/invalidations").await, "#history tbody tr").len(),
        2
    );
}

/// A process that died mid-run (one URL done, one waiting for a retry) is picked up where it
/// stopped: the done URL is not sent again and the retry continues the attempt count.
#[tokio::test]
async fn an_invalidation_interrupted_mid_run_resumes_where_it_stopped() {
    use cdn_invalidator::store::{Store, UrlOutcome, UrlStatus};
    let node = PurgeNode::start(200).await;
    let paused = spawn_app_with(|c| c.run_worker = false).await;
    let admin = paused.admin().await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "")
        .await;
    let id = admin
        .invalidate_urls("https://server.com/is/image/done\nhttps://server.com/is/image/retrying")
        .await;

    // The state a crash would leave: claimed by a worker that is gone, one URL purged, one
    // after two failed attempts.
    let store = Store::connect(&paused.database_url).await.unwrap();
    let claimed = store
        .claim_invalidation("crashed-worker", std::time::Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(claimed.map(|c| c.id), Some(id));
    let urls = store.invalidation_urls(id).await.unwrap();
    let outcome = |status, attempts, http_status, error: Option<&str>| UrlOutcome {
        status,
        attempts,
        http_status,
        error: error.map(str::to_string),
        batch_id: None,
    };
    store
        .record_url(
            urls[0].id,
            &outcome(UrlStatus::Succeeded, 1, Some(200), None),
        )
        .await
        .unwrap();
    store
        .record_url(
            urls[1].id,
            &outcome(UrlStatus::Retrying, 2, Some(503), Some("HTTP 503")),
        )
        .await
        .unwrap();

    let restarted = start(
        test_config(&paused.database_url),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let b = restarted.browser();
    b.login(ADMIN, ADMIN_PASSWORD).await;
    let json = b.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["urls"][0]["attempts"], 1);
    assert_eq!(
        json["urls"][1]["attempts"], 3,
        "the attempt count carried on"
    );
    let sent: Vec<String> = node
        .received()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(
        sent,
        ["/is/image/retrying"],
        "the purged URL was not sent again"
    );
}

/// The worker records outcomes in groups; a URL retried and answered within one group has two
/// outcomes in it, and the later one must win on both databases (an UPDATE from a VALUES list
/// matching a row twice would keep either).
#[tokio::test]
async fn a_group_with_two_outcomes_of_one_url_keeps_the_last() {
    use cdn_invalidator::store::{Store, UrlOutcome, UrlStatus};
    let app = spawn_app_with(|c| c.run_worker = false).await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "<ID>", "", "").await;
    let urls: Vec<String> = (0..300)
        .map(|i| format!("https://server.com/is/image/u{i}"))
        .collect();
    let id = admin.invalidate_urls(&urls.join("\n")).await;
    let store = Store::connect(&app.database_url).await.unwrap();
    let rows = store.invalidation_urls(id).await.unwrap();
    let outcome = |status, attempts| UrlOutcome {
        status,
        attempts,
        http_status: Some(if status == UrlStatus::Retrying {
            503
        } else {
            200
        }),
        error: None,
        batch_id: None,
    };
    let mut group = Vec::new();
    for row in &rows {
        group.push((row.id, outcome(UrlStatus::Retrying, 1)));
    }
    for row in &rows {
        group.push((row.id, outcome(UrlStatus::Succeeded, 2)));
    }
    store.record_urls(&group).await.unwrap();
    let after = store.invalidation_urls(id).await.unwrap();
    assert!(
        after
            .iter()
            .all(|u| u.status == UrlStatus::Succeeded && u.attempts == 2),
        "every URL kept its last outcome"
    );
}

/// On PostgreSQL an outcome's new row version stays on its row's page, so the update is HOT
/// and writes no index entry (no indexed column changes). A group commit rewrites every row of
/// a page at once, so the table leaves room for all of them (`fillfactor`). SQLite rewrites
/// rows in place and has no such cost.
#[tokio::test]
async fn outcomes_recorded_in_a_group_stay_on_their_rows_pages() {
    use cdn_invalidator::store::{Store, UrlOutcome, UrlStatus};
    if !on_postgres() {
        return;
    }
    let app = spawn_app_with(|c| c.run_worker = false).await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "<ID>", "", "").await;
    // Short and long URLs: the pages hold more or fewer rows.
    let urls: Vec<String> = (0..2_000)
        .map(|i| {
            let tail = if i % 2 == 0 {
                ""
            } else {
                "?$product$&wid=1200&hei=1200&fmt=webp"
            };
            format!("https://server.com/is/image/Company/asset-{i}{tail}")
        })
        .collect();
    let id = admin.invalidate_urls(&urls.join("\n")).await;
    // Each row's id and the heap page its current version is on.
    let where_pages = format!(
        "SELECT id, split_part(trim(both '()' from ctid::text), ',', 1) FROM invalidation_urls
         WHERE invalidation_id = {id} ORDER BY id"
    );
    let before: Vec<(i64, String)> = raw_rows(&app.database_url, &where_pages).await;
    assert_eq!(before.len(), 2_000);
    let store = Store::connect(&app.database_url).await.unwrap();
    let succeeded = UrlOutcome {
        status: UrlStatus::Succeeded,
        attempts: 1,
        http_status: Some(200),
        error: None,
        batch_id: None,
    };
    let group: Vec<_> = before
        .iter()
        .map(|(url_id, _)| (*url_id, succeeded.clone()))
        .collect();
    store.record_urls(&group).await.unwrap();
    let after: Vec<(i64, String)> = raw_rows(&app.database_url, &where_pages).await;
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    assert_eq!(moved, 0, "{moved} of 2000 outcomes left their row's page");
    let rows = store.invalidation_urls(id).await.unwrap();
    assert!(rows.iter().all(|u| u.status == UrlStatus::Succeeded));
}

/// The rows of invalidation `id`, read from the database (the JSON view pages its URLs).
async fn url_rows(app: &TestApp, id: i64) -> Vec<cdn_invalidator::store::InvalidationUrl> {
    let store = cdn_invalidator::store::Store::connect(&app.database_url)
        .await
        .unwrap();
    store.invalidation_urls(id).await.unwrap()
}

/// 300 URLs through one real Varnish node: sent as pipelined batches over a few kept-alive
/// connections, and each cached object is gone afterwards (fetched anew from the origin).
#[tokio::test]
async fn a_batch_of_300_urls_pipelined_to_a_real_varnish_empties_each_cached_object() {
    use cdn_invalidator::store::UrlStatus;
    let origin = Origin::start().await;
    let varnish = Varnish::start(origin.port).await;
    let paths: Vec<String> = (0..300)
        .map(|i| format!("/is/image/Company/asset-{i}?$product$&wid={i}"))
        .collect();
    for path in &paths {
        varnish.fetch(path, "server.com").await;
        let (body, cache) = varnish.fetch(path, "server.com").await;
        assert_eq!((body, cache), (format!("v1:{path}"), "HIT".to_string()));
    }
    origin.set_version("v2");

    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings(
            "server.com",
            "<ID>",
            &format!("http://127.0.0.1:{}", varnish.port),
            "",
        )
        .await;
    let (connections, requests, read_ahead) = (
        varnish.counter("MAIN.sess_conn"),
        varnish.counter("MAIN.client_req"),
        varnish.counter("MAIN.sess_readahead"),
    );
    let id = invalidate_paths(&admin, &paths).await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["succeeded"], 300);
    for row in url_rows(&app, id).await {
        assert_eq!(
            (row.status, row.attempts, row.http_status),
            (UrlStatus::Succeeded, 1, Some(200)),
            "{}",
            row.url
        );
    }
    assert_eq!(
        varnish.counter("MAIN.client_req") - requests,
        300,
        "one PURGE per URL"
    );
    let used = varnish.counter("MAIN.sess_conn") - connections;
    assert!(
        (1..=8).contains(&used),
        "300 PURGEs over at most --purge-concurrency (8) connections, not one each: {used}"
    );
    // Varnish counts a request it found already read behind the one before: pipelined.
    let pipelined = varnish.counter("MAIN.sess_readahead") - read_ahead;
    assert!(
        pipelined > 150,
        "most requests arrived pipelined behind another: {pipelined} of 300"
    );

    for path in &paths {
        let (body, cache) = varnish.fetch(path, "server.com").await;
        assert_eq!((body, cache), (format!("v2:{path}"), "MISS".to_string()));
    }
}

/// A node that closes its connection after a few answers (with `Connection: close`, chunked
/// bodies): the pipelined requests it left unanswered are sent again on new connections, each
/// URL is answered exactly once, and all succeed at their first attempt.
#[tokio::test]
async fn requests_a_node_left_unanswered_when_it_closed_are_sent_again() {
    use crate::purge_node::{Behaviour, RawNode};
    use cdn_invalidator::store::UrlStatus;
    let node = RawNode::start(Behaviour::CloseAfter(5)).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "")
        .await;
    // 300 URLs: batches of 38 over 8 connections, each closed after 5 answers.
    let paths: Vec<String> = (0..300).map(|i| format!("/is/image/closing-{i}")).collect();
    let id = invalidate_paths(&admin, &paths).await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    for row in url_rows(&app, id).await {
        assert_eq!(
            (row.status, row.attempts, row.http_status),
            (UrlStatus::Succeeded, 1, Some(200)),
            "{}",
            row.url
        );
    }
    let mut answered = node.answered();
    answered.sort();
    let mut expected = paths.clone();
    expected.sort();
    assert_eq!(answered, expected, "every URL answered exactly once");
    assert!(
        node.connections() >= 300 / 5,
        "the node closed connections mid-batch: {} connections",
        node.connections()
    );
}

/// Continues with the URLs of `paths` on server.com; returns the invalidation's id.
async fn invalidate_paths(admin: &Browser, paths: &[String]) -> i64 {
    let urls: Vec<String> = paths
        .iter()
        .map(|p| format!("https://server.com{p}"))
        .collect();
    admin.invalidate_urls(&urls.join("\n")).await
}

/// An app purging through `node` with a 1 s request timeout and 2 attempts per URL.
async fn purging_to_with_short_timeouts(node: &crate::purge_node::RawNode) -> (TestApp, Browser) {
    let app = spawn_app_with(|c| {
        c.purge.timeout = std::time::Duration::from_secs(1);
        c.purge.max_attempts = 2;
    })
    .await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "")
        .await;
    (app, admin)
}

/// A node that reads the requests and never answers: each attempt times out after the
/// request timeout, and the URLs fail after their attempts with the reason.
#[tokio::test]
async fn a_node_that_never_answers_times_out_and_its_urls_fail_after_their_attempts() {
    use crate::purge_node::{Behaviour, RawNode};
    use cdn_invalidator::store::UrlStatus;
    let node = RawNode::start(Behaviour::Hang).await;
    let (app, admin) = purging_to_with_short_timeouts(&node).await;
    let paths: Vec<String> = (0..20).map(|i| format!("/is/image/hang-{i}")).collect();
    let started = std::time::Instant::now();
    let id = invalidate_paths(&admin, &paths).await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "failed", "{json}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "each attempt waited for the timeout"
    );
    for row in url_rows(&app, id).await {
        assert_eq!(
            (row.status, row.attempts, row.http_status),
            (UrlStatus::Failed, 2, None),
            "{}",
            row.url
        );
        assert_eq!(
            row.error.as_deref(),
            Some("timed out (gave up after 2 attempts)")
        );
    }
    // Both attempts were sent; a URL pipelined behind another in the first batches was also
    // sent once before them, unanswered, which is not an attempt.
    let received = node.received();
    for path in &paths {
        let sent = received.iter().filter(|p| *p == path).count();
        assert!((2..=3).contains(&sent), "{path} was sent {sent} times");
    }
    // The first batches: 20 URLs in 7 pipelined batches of 3 (the last of 2), each held up
    // by its first request: the 13 behind them went once more.
    assert_eq!(received.len() - 2 * paths.len(), 20 - 7);
}

/// A node stuck on one object: the request for it times out, the pipelined requests behind
/// it on that connection are not waited for there but go back to the worker (without using up
/// an attempt: the node never got to them), and while the node is known to hang they are sent
/// one per request (not pipelined), so a hang holds up one request in flight. Every other URL
/// is purged; the stuck one fails with the reason.
#[tokio::test]
async fn requests_behind_a_hang_are_sent_again_one_per_request() {
    use crate::purge_node::{Behaviour, RawNode};
    use cdn_invalidator::store::UrlStatus;
    let node = RawNode::start(Behaviour::HangOn("stuck")).await;
    let (app, admin) = purging_to_with_short_timeouts(&node).await;
    // 64 URLs: 8 pipelined batches of 8; the first batch's third URL is the stuck one.
    let paths: Vec<String> = (0..64)
        .map(|i| match i {
            2 => "/is/image/stuck".to_string(),
            i => format!("/is/image/fine-{i:02}"),
        })
        .collect();
    let id = invalidate_paths(&admin, &paths).await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "partially_failed", "{json}");
    assert_eq!(
        (json["succeeded"].as_i64(), json["failed"].as_i64()),
        (Some(63), Some(1))
    );
    let behind: Vec<&str> = paths[3..8].iter().map(String::as_str).collect();
    for row in url_rows(&app, id).await {
        let path = row.url.trim_start_matches("https://server.com");
        let expected = if path == "/is/image/stuck" {
            (UrlStatus::Failed, 2, None)
        } else if behind.contains(&path) {
            // Sent twice, but the first request was never answered: one attempt.
            (UrlStatus::Succeeded, 1, Some(200))
        } else {
            (UrlStatus::Succeeded, 1, Some(200))
        };
        assert_eq!(
            (row.status, row.attempts, row.http_status),
            expected,
            "{path}"
        );
        if path == "/is/image/stuck" {
            assert_eq!(
                row.error.as_deref(),
                Some("timed out (gave up after 2 attempts)")
            );
        }
    }
    let received = node.received_pipelined();
    for path in &behind {
        let sends: Vec<bool> = received
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, pipelined)| *pipelined)
            .collect();
        assert_eq!(sends.len(), 2, "{path} was sent twice: {sends:?}");
        assert!(
            sends[0],
            "{path} first went pipelined behind the stuck request"
        );
        assert!(
            !sends[1],
            "{path} went again on its own, not pipelined: {received:?}"
        );
    }
}
