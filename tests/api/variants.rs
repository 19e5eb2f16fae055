//! Every variant of an asset: the admin's mapping, the choice on Invalidate CDN, what is
//! queued, checked and retried, and purge everything. What each provider sends for tags and
//! prefixes is tested with its own simulator or a real Varnish.

use crate::helpers::*;
use crate::purge_node::PurgeNode;
use reqwest::StatusCode;
use serde_json::json;

const TEMPLATE: &str =
    "Company/<ID>?$product$\nCompany/<ID>?wid=640\nhttps://server.com/is/image/<ID>";

/// An admin with the HTTP PURGE provider pointed at `node`, the template above, the mapping
/// `variants`, and three assets.
async fn setup(app: &TestApp, node: &PurgeNode, variants: &str) -> Browser {
    let admin = app.admin().await;
    let r = admin
        .save_settings("server.com", TEMPLATE, &node.base(), "")
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = admin.save_variants(variants, "xkey").await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    admin
        .import_csv("id,name\nBackpack_B,Backpack\nTent_2P,Tent\nLamp_X,Lamp\nShoe 2,Shoe\n")
        .await;
    admin
}

async fn history_count(b: &Browser) -> usize {
    texts(&b.page("/invalidations").await, "#history tbody tr").len()
}

#[tokio::test]
async fn a_mapping_the_provider_cannot_send_is_refused_and_not_saved() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let r = admin
        .save_provider(
            "server.com",
            "",
            "akamai",
            &[
                ("akamai_host", "akab-x.luna.akamaiapis.net"),
                ("akamai_client_token", "akab-c"),
                ("akamai_client_secret", "s"),
                ("akamai_access_token", "akab-a"),
            ],
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let r = admin.save_variants("prefixes", "Edge-Cache-Tag").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = scraper::Html::parse_document(&r.text().await.unwrap());
    let error = texts(&html, "#variants-error").concat();
    assert!(
        error.contains("Akamai cannot purge by path prefix"),
        "{error}"
    );
    let page = admin.page("/settings/variants").await;
    assert_eq!(
        attr(&page, "input[name=variants][checked]", "value").as_deref(),
        Some("urls")
    );
    // An unknown header is refused too.
    let r = admin.save_variants("urls", "X-Whatever").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_page_offers_every_variant_beside_the_template_urls_and_listed_urls_stay_the_default() {
    let app = spawn_app().await;
    let node = PurgeNode::start(200).await;
    let admin = setup(&app, &node, "tags").await;
    let user = app.user(&admin, "ursula").await;
    let (status, html) = user
        .open_invalidate(&["Backpack_B", "Tent_2P", "Lamp_X"])
        .await;
    assert_eq!(status, StatusCode::OK);
    // Listed URLs are the default; every variant is offered beside them.
    assert_eq!(
        attr(&html, "input[name=scope][checked]", "value").as_deref(),
        Some("urls")
    );
    assert_eq!(
        attr(&html, "#scope-variants", "value").as_deref(),
        Some("tags")
    );
    assert_eq!(
        texts(&html, "#variant-summary").concat(),
        "3 assets: 3 cache tags"
    );
    assert_eq!(
        texts(&html, "#variant-targets code"),
        ["Backpack_B", "Tent_2P", "Lamp_X"]
    );
    assert_eq!(texts(&html, "textarea[name=urls]")[0].lines().count(), 9);
    // Continue as it comes sends the listed URLs.
    let urls = texts(&html, "textarea[name=urls]")[0].clone();
    let r = user.continue_with(&html, &urls).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let json = user.wait_finished(invalidation_id(&r)).await;
    assert_eq!(json["scope"], "urls");
    assert_eq!(json["total"], 9);
}

#[tokio::test]
async fn continue_by_tag_queues_one_tag_per_asset_with_the_template_urls_it_clears() {
    let app = spawn_app().await;
    let node = PurgeNode::start(200).await;
    let admin = setup(&app, &node, "tags").await;
    let user = app.user(&admin, "ursula").await;
    let id = user
        .invalidate_variants(&["Backpack_B", "Tent_2P", "Backpack_B"], "tags")
        .await;
    let json = user.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["scope"], "tags");
    assert_eq!(json["total"], 2);
    let rows: Vec<&str> = json["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["url"].as_str().unwrap())
        .collect();
    assert_eq!(rows, ["Backpack_B", "Tent_2P"]);
    assert_eq!(json["covered"]["total"], 6);
    assert_eq!(
        json["covered"]["urls"][0],
        json!({"url": "https://server.com/is/image/Company/Backpack_B?$product$", "cleared_by": "Backpack_B"})
    );
    assert_eq!(json["covered"]["urls"][5]["cleared_by"], "Tent_2P");
    let page = user.page(&format!("/invalidations/{id}")).await;
    assert_eq!(texts(&page, "#row-count").concat(), "2 cache tags");
    assert!(
        texts(&page, "#scope-text")
            .concat()
            .contains("by cache tag")
    );
    assert_eq!(texts(&page, "#covered-urls tbody tr").len(), 6);
    assert_eq!(texts(&page, "#urls thead th")[1], "Cache tag");
    // The node got the tags, not the URLs.
    assert!(
        node.received()
            .iter()
            .all(|r| !r.path_and_query.contains("wid=640")),
        "{:?}",
        node.received()
    );
}

#[tokio::test]
async fn refused_tags_and_prefixes_name_the_asset_and_queue_nothing() {
    let app = spawn_app().await;
    let node = PurgeNode::start(200).await;
    let admin = setup(&app, &node, "tags").await;
    let user = app.user(&admin, "ursula").await;
    // A space separates tags in a header list: "Shoe 2" cannot be one.
    let (_, html) = user.open_invalidate(&["Backpack_B", "Shoe 2"]).await;
    let errors = texts(&html, "#variant-errors li").concat();
    assert!(
        errors.contains("Shoe 2") && errors.contains("' '"),
        "{errors}"
    );
    assert!(
        html.select(&sel("#scope-variants[disabled]"))
            .next()
            .is_some()
    );
    let r = user
        .continue_variants(&["Backpack_B", "Shoe 2"], "tags")
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(history_count(&user).await, 0);

    // A prefix must stay inside the image path.
    let r = admin
        .save_settings(
            "server.com",
            "https://server.com/images/<ID>",
            &node.base(),
            "",
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        admin.save_variants("prefixes", "xkey").await.status(),
        StatusCode::SEE_OTHER
    );
    let r = user.continue_variants(&["Backpack_B"], "prefixes").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = scraper::Html::parse_document(&r.text().await.unwrap());
    let errors = texts(&html, "#variant-errors li").concat();
    assert!(
        errors.contains("outside the image path /is/image/"),
        "{errors}"
    );
    // A scope the admin did not choose is refused as well.
    let r = user.continue_variants(&["Backpack_B"], "tags").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(history_count(&user).await, 0);
    assert!(node.received().is_empty(), "{:?}", node.received());
}

#[tokio::test]
async fn prefixes_are_each_template_line_cut_after_the_id() {
    let app = spawn_app().await;
    let node = PurgeNode::start(200).await;
    let admin = setup(&app, &node, "prefixes").await;
    let user = app.user(&admin, "ursula").await;
    let (_, html) = user.open_invalidate(&["Lamp_X"]).await;
    assert_eq!(
        texts(&html, "#variant-targets code"),
        [
            "https://server.com/is/image/Company/Lamp_X",
            "https://server.com/is/image/Lamp_X"
        ]
    );
    let id = user.invalidate_variants(&["Lamp_X"], "prefixes").await;
    let json = user.wait_finished(id).await;
    assert_eq!(json["scope"], "prefixes");
    assert_eq!(json["total"], 2);
    // Each template URL is cleared by the prefix it starts with.
    let by: Vec<&str> = json["covered"]["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["cleared_by"].as_str().unwrap())
        .collect();
    assert_eq!(
        by,
        [
            "https://server.com/is/image/Company/Lamp_X",
            "https://server.com/is/image/Company/Lamp_X",
            "https://server.com/is/image/Lamp_X"
        ]
    );
}

#[tokio::test]
async fn a_failed_tag_invalidation_is_retried_by_tag() {
    let app = spawn_app().await;
    let node = PurgeNode::start(403).await;
    let admin = setup(&app, &node, "tags").await;
    let user = app.user(&admin, "ursula").await;
    let id = user.invalidate_variants(&["Tent_2P"], "tags").await;
    let json = user.wait_finished(id).await;
    assert_eq!(json["status"], "failed");
    let token = user.csrf_from(&format!("/invalidations/{id}")).await;
    let r = user
        .post_form(
            &format!("/invalidations/{id}/retry"),
            &[("csrf_token", &token)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let retry = user.invalidation(invalidation_id(&r)).await;
    assert_eq!(retry["scope"], "tags");
    assert_eq!(retry["urls"][0]["url"], "Tent_2P");
    assert_eq!(retry["covered"]["total"], 3);
}

#[tokio::test]
async fn purge_everything_needs_the_typed_name_and_the_box_and_is_recorded() {
    let app = spawn_app().await;
    let node = PurgeNode::start(200).await;
    let admin = setup(&app, &node, "urls").await;
    let key = admin.everything_key().await;
    let r = admin.purge_everything(&key, "server", true).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = scraper::Html::parse_document(&r.text().await.unwrap());
    assert!(
        texts(&html, "#everything-error")
            .concat()
            .contains("type the publish server's name, server.com")
    );
    let r = admin.purge_everything(&key, "server.com", false).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(history_count(&admin).await, 0);
    assert!(node.received().is_empty());

    let r = admin.purge_everything(&key, "server.com", true).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let id = invalidation_id(&r);
    let json = admin.wait_finished(id).await;
    assert_eq!(json["scope"], "everything");
    assert_eq!(json["urls"][0]["url"], "https://server.com/");
    assert_eq!(json["status"], "succeeded");
    // Recorded in history like any invalidation; pressing again leads to the same one.
    assert_eq!(history_count(&admin).await, 1);
    let r = admin.purge_everything(&key, "server.com", true).await;
    assert_eq!(invalidation_id(&r), id);
    let page = admin.page(&format!("/invalidations/{id}")).await;
    assert!(
        texts(&page, "#scope-text")
            .concat()
            .contains("Purge everything")
    );
}

#[tokio::test]
async fn the_api_clears_every_variant_by_tag_and_names_refused_assets() {
    let app = spawn_app().await;
    let node = PurgeNode::start(200).await;
    let admin = setup(&app, &node, "tags").await;
    let token = crate::api_v1::create_token(&admin, "ci").await;
    let client = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        client
            .post(format!("{}/api/v1/invalidations", app.address))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let r = post(json!({"assets": ["Lamp_X", "Shoe 2"], "scope": "tags"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(problem["errors"][0]["id"], "Shoe 2");
    assert_eq!(problem["errors"][0]["line"], 2);
    let r = post(json!({"assets": ["Lamp_X"], "scope": "prefixes"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = post(json!({"assets": ["Lamp_X"], "scope": "everything"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = post(json!({"assets": ["Lamp_X"], "scope": "tags"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(created["scope"], "tags");
    assert_eq!(created["urls"][0]["url"], "Lamp_X");
}

/// A tag's proof is the template's URLs of its asset: *Check the cache* requests each.
#[tokio::test]
async fn checking_a_tag_invalidation_requests_the_template_urls_of_each_asset() {
    let app = spawn_app().await;
    let origin = crate::varnish::Origin::start().await;
    let node = PurgeNode::start(200).await;
    let admin = app.admin().await;
    let server = format!("http://127.0.0.1:{}", origin.port);
    let r = admin
        .save_settings(
            &server,
            "Company/<ID>?$product$\n<ID>?wid=640",
            &node.base(),
            "",
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        admin.save_variants("tags", "xkey").await.status(),
        StatusCode::SEE_OTHER
    );
    admin
        .import_csv("id,name\nBackpack_B,Backpack\nTent_2P,Tent\n")
        .await;
    let id = admin
        .invalidate_variants(&["Backpack_B", "Tent_2P"], "tags")
        .await;
    admin.wait_finished(id).await;
    let before = *origin.hits.lock().unwrap();
    let html = crate::cache_check::check_cache(&admin, id).await;
    let status = texts(&html, "#check-status").concat();
    assert!(status.starts_with("Checked 4 URLs"), "{status}");
    assert_eq!(*origin.hits.lock().unwrap() - before, 4);
}

/// A purge of everything that failed is not retried by a button any user can press: an
/// admin purges everything again, with its confirmation. Without a publish server there is
/// nothing to type, so there is no purge of everything.
#[tokio::test]
async fn purge_everything_cannot_be_retried_or_confirmed_without_a_publish_server() {
    let app = spawn_app().await;
    let node = PurgeNode::start(403).await;
    let admin = setup(&app, &node, "urls").await;
    let key = admin.everything_key().await;
    let r = admin.purge_everything(&key, "server.com", true).await;
    let id = invalidation_id(&r);
    assert_eq!(admin.wait_finished(id).await["status"], "failed");
    let user = app.user(&admin, "ursula").await;
    let html = user.page(&format!("/invalidations/{id}")).await;
    assert!(html.select(&sel("#retry")).next().is_none());
    let token = user.csrf_from(&format!("/invalidations/{id}")).await;
    let r = user
        .post_form(
            &format!("/invalidations/{id}/retry"),
            &[("csrf_token", &token)],
        )
        .await;
    assert_ne!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(history_count(&admin).await, 1);

    // No publish server: no site to name, no form, and an empty confirmation is refused.
    let r = admin
        .save_settings(
            "",
            "https://server.com/is/image/<ID>",
            &node.base(),
            "server.com",
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = admin.page("/settings/variants").await;
    assert!(page.select(&sel("#purge-everything form")).next().is_none());
    assert!(
        texts(&page, "#everything-refused")
            .concat()
            .contains("Publish Server Name")
    );
    let r = admin
        .purge_everything("0123456789abcdef0123", "", true)
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(history_count(&admin).await, 1);
}

/// Dot segments cannot widen a prefix to its folder, and a retry passes today's checks.
#[tokio::test]
async fn a_dot_asset_cannot_clear_a_folder_and_retries_pass_todays_checks() {
    let app = spawn_app().await;
    let node = PurgeNode::start(403).await;
    let admin = setup(&app, &node, "prefixes").await;
    let token = crate::api_v1::create_token(&admin, "ci").await;
    for id in [".", ".."] {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1/invalidations", app.address))
            .bearer_auth(&token)
            .json(&json!({"assets": [id], "scope": "prefixes"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{id}");
    }
    assert!(node.received().is_empty());
    // A failed prefix invalidation is not retried once the admin maps assets otherwise.
    let id = admin.invalidate_variants(&["Lamp_X"], "prefixes").await;
    assert_eq!(admin.wait_finished(id).await["status"], "failed");
    assert_eq!(
        admin.save_variants("urls", "xkey").await.status(),
        StatusCode::SEE_OTHER
    );
    let csrf = admin.csrf_from(&format!("/invalidations/{id}")).await;
    let r = admin
        .post_form(
            &format!("/invalidations/{id}/retry"),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_ne!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.text().await.unwrap().contains("no longer offered"));
}
