//! Every variant of an asset through a real Varnish, end to end through the app: the origin
//! labels image responses with their asset ID (`xkey`), Varnish caches many variants of each
//! asset, and an invalidation by cache tag (xkey purge) or by path prefix (BAN) makes Varnish
//! fetch every variant of that asset from the origin again and no other.

use crate::helpers::*;
use crate::varnish::{Origin, Varnish};
use reqwest::StatusCode;

/// The template users see; prefixes are its lines cut after `<ID>`.
const TEMPLATE: &str = "Company/<ID>?wid=640\n<ID>?fmt=png";

/// Five variants of Backpack_A as pages request them: presets, modifiers, another path.
const VARIANTS_OF_A: [&str; 5] = [
    "/is/image/Company/Backpack_A?wid=640",
    "/is/image/Company/Backpack_A?$product$&fmt=webp",
    "/is/image/Company/Backpack_A?$thumb$",
    "/is/image/Company/Backpack_A?wid=1200&hei=800&fit=crop",
    "/is/image/Backpack_A?fmt=png",
];
/// A variant of another asset, which must stay cached.
const VARIANT_OF_B: &str = "/is/image/Company/Tent_B?wid=640";

/// The site the publish server names, as the `Host` pages are served with.
const SITE: &str = "server.com";

/// Fetches `path` from `varnish` for `SITE` and says whether Varnish had it cached.
async fn cached(varnish: &Varnish, path: &str) -> bool {
    let (_, cache) = varnish.fetch(path, SITE).await;
    cache == "HIT"
}

/// Fetches every variant through each cache twice, so each holds them all (one origin fetch
/// per variant and cache).
async fn warm(caches: &[&Varnish], origin: &Origin) {
    for varnish in caches {
        for path in VARIANTS_OF_A.iter().chain([&VARIANT_OF_B]) {
            varnish.fetch(path, SITE).await;
            assert!(cached(varnish, path).await, "{path} is cached");
        }
    }
    for path in VARIANTS_OF_A.iter().chain([&VARIANT_OF_B]) {
        assert_eq!(origin.hits_of(path), caches.len() as u32, "{path}");
    }
}

/// An admin with HTTP PURGE to `nodes`, the template, the mapping `variants`, two assets.
async fn setup(app: &TestApp, nodes: &[&Varnish], variants: &str) -> Browser {
    let admin = app.admin().await;
    let nodes: Vec<String> = nodes
        .iter()
        .map(|v| format!("http://127.0.0.1:{}", v.port))
        .collect();
    let r = admin
        .save_settings(SITE, TEMPLATE, &nodes.join("\n"), "")
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = admin.save_variants(variants, "xkey").await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let r = admin
        .import_csv("id,name\nBackpack_A,Backpack\nTent_B,Tent\n")
        .await;
    assert!(r.status().is_redirection() || r.status().is_success());
    admin
}

/// Every variant of Backpack_A comes from the origin again through `varnish`; Tent_B's stays
/// cached.
async fn assert_only_a_was_cleared(varnish: &Varnish, origin: &Origin) {
    for path in VARIANTS_OF_A {
        let before = origin.hits_of(path);
        assert!(!cached(varnish, path).await, "{path} was cleared");
        assert_eq!(origin.hits_of(path), before + 1, "{path} fetched again");
    }
    let before = origin.hits_of(VARIANT_OF_B);
    assert!(
        cached(varnish, VARIANT_OF_B).await,
        "another asset stays cached"
    );
    assert_eq!(origin.hits_of(VARIANT_OF_B), before);
}

#[tokio::test]
async fn a_tag_purge_clears_every_cached_variant_of_the_asset_on_every_varnish() {
    let app = spawn_app().await;
    let origin = Origin::start().await;
    let first = Varnish::start_with_vcl(origin.port, "xkey.vcl").await;
    let second = Varnish::start_with_vcl(origin.port, "xkey.vcl").await;
    warm(&[&first, &second], &origin).await;
    let admin = setup(&app, &[&first, &second], "tags").await;
    let user = app.user(&admin, "ursula").await;

    let id = user.invalidate_variants(&["Backpack_A"], "tags").await;
    let json = user.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["urls"][0]["url"], "Backpack_A");
    // Each Varnish says how many objects carried the tag: the five variants.
    let note = json["urls"][0]["error"].as_str().unwrap_or_default();
    assert_eq!(
        note.matches("Invalidated 5 objects").count(),
        2,
        "one count per node: {note}"
    );

    assert_only_a_was_cleared(&first, &origin).await;
    assert_only_a_was_cleared(&second, &origin).await;
}

#[tokio::test]
async fn a_tag_purge_to_a_varnish_whose_vcl_ignores_the_tag_header_fails_and_says_why() {
    let app = spawn_app().await;
    let origin = Origin::start().await;
    // Plain PURGE of URLs only: `PURGE /` with the tags would purge the URL `/` and answer 200.
    let varnish = Varnish::start(origin.port).await;
    warm(&[&varnish], &origin).await;
    let admin = setup(&app, &[&varnish], "tags").await;

    let id = admin.invalidate_variants(&["Backpack_A"], "tags").await;
    let json = admin.wait_finished(id).await;
    assert_eq!(json["status"], "failed", "{json}");
    let reason = json["urls"][0]["error"].as_str().unwrap();
    assert!(
        reason.contains("does not hand the xkey-purge header to xkey.purge()"),
        "{reason}"
    );
    assert!(
        cached(&varnish, VARIANTS_OF_A[0]).await,
        "nothing was purged"
    );
}

#[tokio::test]
async fn a_prefix_ban_clears_every_cached_variant_under_the_assets_paths_on_its_site_only() {
    let app = spawn_app().await;
    let origin = Origin::start().await;
    // Plain Varnish: no xkey module, bans on the URL and host stored on each object.
    let varnish = Varnish::start_with_vcl(origin.port, "ban.vcl").await;
    warm(&[&varnish], &origin).await;
    // A smart-crop variant of A (before the `?`) and the same path on another site.
    let smart_crop = "/is/image/Company/Backpack_A:Square?wid=100";
    varnish.fetch(smart_crop, SITE).await;
    assert!(cached(&varnish, smart_crop).await);
    let elsewhere = "/is/image/Company/Backpack_A?wid=320";
    varnish.fetch(elsewhere, "other.example").await;
    assert_eq!(varnish.fetch(elsewhere, "other.example").await.1, "HIT");
    let admin = setup(&app, &[&varnish], "prefixes").await;
    let user = app.user(&admin, "ursula").await;

    let id = user.invalidate_variants(&["Backpack_A"], "prefixes").await;
    let json = user.wait_finished(id).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    let rows: Vec<&str> = json["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            "https://server.com/is/image/Company/Backpack_A",
            "https://server.com/is/image/Backpack_A"
        ]
    );

    assert_only_a_was_cleared(&varnish, &origin).await;
    assert!(!cached(&varnish, smart_crop).await, "smart crops too");
    assert_eq!(
        varnish.fetch(elsewhere, "other.example").await.1,
        "HIT",
        "a ban names its site"
    );
}

#[tokio::test]
async fn purge_everything_bans_the_whole_site_and_no_other() {
    let app = spawn_app().await;
    let origin = Origin::start().await;
    let varnish = Varnish::start_with_vcl(origin.port, "ban.vcl").await;
    warm(&[&varnish], &origin).await;
    let elsewhere = "/is/image/Company/Backpack_A?wid=320";
    varnish.fetch(elsewhere, "other.example").await;
    let admin = setup(&app, &[&varnish], "prefixes").await;

    let key = admin.everything_key().await;
    let r = admin.purge_everything(&key, SITE, true).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let json = admin.wait_finished(invalidation_id(&r)).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    assert_eq!(json["urls"][0]["url"], "https://server.com/");

    for path in VARIANTS_OF_A.iter().chain([&VARIANT_OF_B]) {
        assert!(!cached(&varnish, path).await, "{path} was cleared");
        assert_eq!(origin.hits_of(path), 2, "{path} fetched again");
    }
    assert_eq!(varnish.fetch(elsewhere, "other.example").await.1, "HIT");
}
