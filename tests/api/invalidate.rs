use crate::helpers::*;
use crate::purge_node::PurgeNode;
use reqwest::StatusCode;
use scraper::Html;

async fn history_count(b: &Browser) -> usize {
    texts(&b.page("/invalidations").await, "#history tbody tr").len()
}

#[tokio::test]
async fn ticked_assets_prefill_the_list_in_asset_then_template_order() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "https://server.com/is/image/Company/<ID>?$product$\n<ID>\nhttps://server.com/is/image/Company/<ID>?$product$", "", "")
        .await;
    admin.import_csv("id,name\nBackpack_B,B\nShoe 2,S\n").await;
    let user = app.user(&admin, "ursula").await;
    let (status, html) = user
        .open_invalidate(&["Shoe 2", "Backpack_B", "Shoe 2"])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        texts(&html, "textarea[name=urls]")[0]
            .lines()
            .collect::<Vec<_>>(),
        [
            "https://server.com/is/image/Company/Shoe%202?$product$",
            "https://server.com/is/image/Shoe%202",
            "https://server.com/is/image/Company/Backpack_B?$product$",
            "https://server.com/is/image/Backpack_B",
        ]
    );
    assert!(texts(&html, "#url-count")[0].starts_with("4 URLs for 2 selected assets"));
    assert!(
        attr(&html, "input[name=idempotency_key]", "value")
            .unwrap()
            .len()
            >= 16
    );
}

#[tokio::test]
async fn seed_examples_hold_verbatim() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin.import_csv("id,name\nBackpack_B,Backpack\n").await;
    admin
        .save_settings(
            "",
            "https://server.com/is/image/Company/<ID>?$product$",
            "",
            "server.com",
        )
        .await;
    let (_, html) = admin.open_invalidate(&["Backpack_B"]).await;
    assert_eq!(
        texts(&html, "textarea[name=urls]"),
        ["https://server.com/is/image/Company/Backpack_B?$product$"]
    );
    admin.save_settings("server.com", "<ID>", "", "").await;
    let (_, html) = admin.open_invalidate(&["Backpack_B"]).await;
    assert_eq!(
        texts(&html, "textarea[name=urls]"),
        ["https://server.com/is/image/Backpack_B"]
    );
    admin.save_settings("server.com", "", "", "").await;
    let (_, html) = admin.open_invalidate(&["Backpack_B"]).await;
    assert_eq!(texts(&html, "textarea[name=urls]"), [""]);
    assert!(texts(&html, "#template-empty")[0].contains("An admin can set a template"));
}

#[tokio::test]
async fn opened_directly_the_list_is_empty_for_pasting() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "<ID>", "", "").await;
    let html = admin.page("/invalidate").await;
    assert_eq!(texts(&html, "textarea[name=urls]"), [""]);
    assert_eq!(
        attr(&html, "form[action='/invalidations']", "method").unwrap(),
        "post"
    );
}

#[tokio::test]
async fn bad_lines_are_listed_with_numbers_and_nothing_is_stored_or_sent() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let node = PurgeNode::start(200).await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "cdn.example.org")
        .await;
    let page = admin.page("/invalidate").await;
    let text = "https://server.com/is/image/ok\n\nnot a url\nhttps://evil.com/x\nhttps://server.com/a#top\nhttps://cdn.example.org/fine";
    let r = admin.continue_with(&page, text).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = Html::parse_document(&r.text().await.unwrap());
    let errors = texts(&html, "#url-errors li");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].starts_with("Line 3:"));
    assert!(errors[1].starts_with("Line 4:") && errors[1].contains("evil.com"));
    assert!(errors[2].starts_with("Line 5:") && errors[2].contains("fragment"));
    // The user's text is kept, and the same key is carried so a corrected resubmit works.
    assert_eq!(texts(&html, "textarea[name=urls]"), [text]);
    assert_eq!(
        attr(&html, "input[name=idempotency_key]", "value"),
        attr(&page, "input[name=idempotency_key]", "value")
    );

    // Empty list: the Dynamic Media wording.
    let r = admin.continue_with(&page, " \n\n").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = Html::parse_document(&r.text().await.unwrap());
    assert_eq!(
        texts(&html, ".list-error"),
        ["No URLs entered to be invalidated."]
    );

    assert_eq!(history_count(&admin).await, 0);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        node.received().is_empty(),
        "a purge was sent for a refused list"
    );

    // Corrected, the same form goes through.
    let r = admin
        .continue_with(&html, "https://server.com/is/image/ok")
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn more_urls_than_the_limit_are_refused() {
    let app = spawn_app_with(|c| c.max_urls = 3).await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "", "", "").await;
    let page = admin.page("/invalidate").await;
    let urls: String = (0..4)
        .map(|i| format!("https://server.com/{i}\n"))
        .collect();
    let r = admin.continue_with(&page, &urls).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = Html::parse_document(&r.text().await.unwrap());
    assert!(texts(&html, ".list-error")[0].contains("at most 3"));
    assert_eq!(history_count(&admin).await, 0);
}

#[tokio::test]
async fn continue_is_idempotent() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let node = PurgeNode::start(200).await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "")
        .await;
    let page = admin.page("/invalidate").await;
    let urls = "https://server.com/is/image/a\nhttps://server.com/is/image/b\nhttps://server.com/is/image/a";
    let (first, second) = tokio::join!(
        admin.continue_with(&page, urls),
        admin.continue_with(&page, urls)
    );
    let third = admin.continue_with(&page, urls).await;
    let ids = [
        invalidation_id(&first),
        invalidation_id(&second),
        invalidation_id(&third),
    ];
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], ids[2]);
    let json = admin.wait_finished(ids[0]).await;
    assert_eq!(json["total"], 2, "the duplicate line was dropped");
    assert_eq!(history_count(&admin).await, 1);
    assert_eq!(
        node.received().len(),
        2,
        "one PURGE per URL, however often Continue was pressed"
    );
    let html = admin.page(&format!("/invalidations/{}", ids[0])).await;
    assert!(texts(&html, ".notice")[0].contains("1 duplicate"));
    // A fresh form gets a fresh key and so a new invalidation.
    let again = admin.page("/invalidate").await;
    let r = admin.continue_with(&again, urls).await;
    assert_ne!(invalidation_id(&r), ids[0]);
}

/// A pasted file of 20,000 bad lines is refused with the first errors and a count of the rest,
/// the text kept for correcting, and a page not much larger than the text.
#[tokio::test]
async fn many_bad_lines_list_the_first_errors_and_count_the_rest() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "", "", "").await;
    let page = admin.page("/invalidate").await;
    let text: String = (0..20_000)
        .map(|i| format!("server.com/is/image/missing-scheme-{i}\n"))
        .collect();
    let r = admin.continue_with(&page, &text).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(
        body.len() < 2 * text.len(),
        "{} bytes for {} submitted",
        body.len(),
        text.len()
    );
    let html = Html::parse_document(&body);
    let errors = texts(&html, "#url-errors li");
    assert_eq!(errors.len(), 50);
    assert!(errors[0].starts_with("Line 1:"), "{}", errors[0]);
    assert!(errors[49].starts_with("Line 50:"), "{}", errors[49]);
    assert_eq!(
        texts(&html, "#more-errors"),
        ["… and 19950 more lines with errors."]
    );
    assert_eq!(texts(&html, "textarea[name=urls]"), [text.trim_end()]);
    assert_eq!(history_count(&admin).await, 0);
}
