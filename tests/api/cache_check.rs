//! *Check the cache* (proof of purge) against a real Varnish.

use crate::helpers::*;
use crate::varnish::{Origin, Varnish};
use reqwest::StatusCode;
use scraper::Html;
use std::time::Duration;

/// Presses *Check the cache* on invalidation `id` and waits for the check's result.
pub async fn check_cache(user: &Browser, id: i64) -> Html {
    let token = user.csrf_from(&format!("/invalidations/{id}")).await;
    let r = user
        .post_form(
            &format!("/invalidations/{id}/check"),
            &[("csrf_token", &token)],
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    for _ in 0..200 {
        let html = user.page(&format!("/invalidations/{id}")).await;
        if texts(&html, "#check-status")
            .first()
            .is_some_and(|s| s.starts_with("Checked"))
        {
            return html;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cache check of #{id} did not finish");
}

fn counts(html: &Html) -> (String, String, String) {
    let one = |css| texts(html, css).concat();
    (
        one("#fresh-count"),
        one("#stale-count"),
        one("#unknown-count"),
    )
}

/// Purged URLs come back fresh; a URL whose PURGE went to the wrong node (another Varnish:
/// "was not cached" there) is found stale, and *Invalidate again* with the settings fixed
/// clears it. A host the settings no longer allow is not requested at all.
#[tokio::test]
async fn checking_the_cache_tells_fresh_from_stale_urls_on_a_real_varnish() {
    let origin = Origin::start().await;
    let (varnish, other) = (
        Varnish::start(origin.port).await,
        Varnish::start(origin.port).await,
    );
    let host = format!("127.0.0.1:{}", varnish.port);
    let server = format!("http://{host}");
    let paths = [
        "/is/image/a?wid=1",
        "/is/image/b?wid=2",
        "/is/image/c?wid=3",
    ];
    for p in paths {
        assert_eq!(varnish.fetch(p, &host).await.1, "MISS");
        assert_eq!(varnish.fetch(p, &host).await.1, "HIT");
    }
    // Old enough that a copy from before the purge is surely older than the purge.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let app = spawn_app().await;
    let admin = app.admin().await;
    let save = |nodes: String| {
        let (admin, server) = (&admin, &server);
        async move {
            let r = admin.save_settings(server, "<ID>", &nodes, "").await;
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
        }
    };
    save(String::new()).await;
    let user = app.user(&admin, "ursula").await;

    // PURGE to the URLs' own host: the cache lets go of both.
    let urls = format!("{server}{}\n{server}{}", paths[0], paths[1]);
    let id = user.invalidate_urls(&urls).await;
    assert_eq!(user.wait_finished(id).await["status"], "succeeded");
    let html = check_cache(&user, id).await;
    assert_eq!(counts(&html), ("2".into(), "0".into(), "0".into()));
    assert!(texts(&html, "#invalidate-again").is_empty());

    // PURGE sent to another Varnish: it answers "not cached", the real cache keeps its copy.
    save(format!("http://127.0.0.1:{}", other.port)).await;
    let id = user.invalidate_urls(&format!("{server}{}", paths[2])).await;
    assert_eq!(user.wait_finished(id).await["status"], "succeeded");
    let html = check_cache(&user, id).await;
    assert_eq!(counts(&html), ("0".into(), "1".into(), "0".into()));
    assert_eq!(
        texts(&html, "#stale-urls td.url"),
        [format!("{server}{}", paths[2])]
    );
    assert!(texts(&html, "#stale-urls td")[1].contains("stored before the purge"));
    assert_eq!(
        varnish.fetch(paths[2], &host).await.1,
        "HIT",
        "still cached"
    );

    // Fix the settings, then Invalidate again: a new invalidation of the stale URL only.
    save(String::new()).await;
    let token = user.csrf_from(&format!("/invalidations/{id}")).await;
    let r = user
        .post_form(
            &format!("/invalidations/{id}/again"),
            &[("csrf_token", &token)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let again = invalidation_id(&r);
    assert_ne!(again, id);
    let json = user.wait_finished(again).await;
    assert_eq!(json["total"], 1);
    assert_eq!(json["urls"][0]["url"], format!("{server}{}", paths[2]));
    let html = check_cache(&user, again).await;
    assert_eq!(counts(&html), ("1".into(), "0".into(), "0".into()));

    // The publish server moves elsewhere: the old host is not requested.
    let r = admin
        .save_settings("https://images.example.com", "<ID>", "", "")
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let hits = *origin.hits.lock().unwrap();
    let html = check_cache(&user, again).await;
    assert_eq!(counts(&html), ("0".into(), "0".into(), "1".into()));
    assert!(texts(&html, "#unknown-urls li")[0].contains("not checked"));
    assert_eq!(
        *origin.hits.lock().unwrap(),
        hits,
        "no request reached the cache"
    );
}

/// The check is offered only once an invalidation has finished, and a user who may not see
/// the page cannot start one (not logged in: sent to log in).
#[tokio::test]
async fn checking_needs_a_login_and_a_finished_invalidation() {
    let app = spawn_app().await;
    let r = app
        .browser()
        .post_form("/invalidations/1/check", &[("csrf_token", "x")])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );
    let admin = app.admin().await;
    let token = admin.csrf_from("/invalidations").await;
    let r = admin
        .post_form("/invalidations/999/check", &[("csrf_token", &token)])
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// With `--check-cache-up-to N`, an invalidation of at most N URLs is checked by itself when
/// it finishes; a larger one only offers the button.
#[tokio::test]
async fn small_invalidations_are_checked_by_themselves_when_set() {
    let origin = Origin::start().await;
    let varnish = Varnish::start(origin.port).await;
    let host = format!("127.0.0.1:{}", varnish.port);
    let server = format!("http://{host}");
    let app = spawn_app_with(|c| c.purge.check_cache_up_to = 2).await;
    let admin = app.admin().await;
    let r = admin.save_settings(&server, "<ID>", "", "").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    varnish.fetch("/is/image/x", &host).await;

    let small = admin.invalidate_urls(&format!("{server}/is/image/x")).await;
    admin.wait_finished(small).await;
    let mut checked = None;
    for _ in 0..200 {
        let html = admin.page(&format!("/invalidations/{small}")).await;
        if texts(&html, "#check-status")
            .first()
            .is_some_and(|s| s.starts_with("Checked"))
        {
            checked = Some(html);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let html = checked.expect("the small invalidation was checked by itself");
    assert_eq!(counts(&html), ("1".into(), "0".into(), "0".into()));

    let urls: Vec<String> = (0..3).map(|i| format!("{server}/is/image/y{i}")).collect();
    let large = admin.invalidate_urls(&urls.join("\n")).await;
    admin.wait_finished(large).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let html = admin.page(&format!("/invalidations/{large}")).await;
    assert!(texts(&html, "#check-status").is_empty(), "not checked");
    assert_eq!(texts(&html, "#check-cache"), ["Check the cache"]);
}
