use crate::helpers::*;
use reqwest::StatusCode;
use scraper::Html;

fn ids(html: &Html) -> Vec<String> {
    html.select(&sel("tbody input[name=asset_id]"))
        .map(|e| e.value().attr("value").unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn import_lists_searches_and_updates_assets() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let csv = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/example-assets.csv"))
        .unwrap();
    let r = admin.import_csv(&csv).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = admin.page(r.headers()["location"].to_str().unwrap()).await;
    assert_eq!(texts(&html, "[role=status]"), ["Imported 6 assets."]);
    assert_eq!(
        ids(&html),
        [
            "Backpack_B",
            "Backpack_R",
            "Hiking_Boot_01",
            "Size_Guide",
            "Trail_Video",
            "Tent_2P"
        ]
    );

    // Search by ID or name, case-insensitively.
    let html = admin.page("/assets?q=BACKPACK").await;
    assert_eq!(ids(&html), ["Backpack_B", "Backpack_R"]);
    let html = admin.page("/assets?q=tent").await;
    assert_eq!(ids(&html), ["Tent_2P"]);
    let html = admin.page("/assets?q=100%25").await;
    assert!(ids(&html).is_empty(), "% is a literal, not a wildcard");

    // Re-importing an ID updates it; sorting by modified puts it first.
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(
        admin
            .import_csv("id,name,type\nTent_2P,Tent for two,image\n")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    let html = admin.page("/assets?sort=modified").await;
    assert_eq!(ids(&html)[0], "Tent_2P");
    assert!(texts(&html, "tbody td").contains(&"Tent for two".to_string()));
    assert_eq!(ids(&html).len(), 6);
}

#[tokio::test]
async fn fifty_per_page_with_total_and_page_links() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let csv: String = std::iter::once("id,name,type\n".to_string())
        .chain((0..120).map(|i| format!("A{i:03},Asset {i:03},image\n")))
        .collect();
    assert_eq!(admin.import_csv(&csv).await.status(), StatusCode::SEE_OTHER);
    let html = admin.page("/assets").await;
    assert_eq!(ids(&html).len(), 50);
    assert!(texts(&html, "#asset-count")[0].starts_with("120 assets"));
    assert_eq!(texts(&html, ".pager a, .pager span"), ["1", "2", "3"]);
    let html = admin.page("/assets?page=3").await;
    assert_eq!(
        ids(&html),
        (100..120).map(|i| format!("A{i:03}")).collect::<Vec<_>>()
    );
    // A page past the end shows the last page.
    let html = admin.page("/assets?page=99").await;
    assert_eq!(ids(&html).len(), 20);
    // The select-all box and the Invalidate CDN button are there.
    assert!(html.select(&sel("#select-all")).next().is_some());
    assert_eq!(
        attr(&html, "form#selection", "action").unwrap(),
        "/invalidate"
    );
}

#[tokio::test]
async fn a_bad_row_rejects_the_whole_file() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    assert_eq!(
        admin.import_csv("id,name\nkeep,Kept\n").await.status(),
        StatusCode::SEE_OTHER
    );
    let long_id = "x".repeat(513);
    let csv = format!(
        "id,name,type\nnew_1,New,image\nkeep,Renamed,image\n{long_id},Too long,image\nnew_2,Bad,gif\n"
    );
    let r = admin.import_csv(&csv).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = Html::parse_document(&r.text().await.unwrap());
    let errors = texts(&html, "#import-errors li");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("Line 4:") && errors[0].contains("512"));
    assert!(errors[1].starts_with("Line 5:") && errors[1].contains("gif"));
    // Nothing half imported: no new rows, the existing one not renamed.
    let html = admin.page("/assets").await;
    assert_eq!(ids(&html), ["keep"]);
    assert!(texts(&html, "tbody td").contains(&"Kept".to_string()));
    // A wrong header is named.
    let r = admin.import_csv("sku,title\n1,2\n").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("the header must be"));
}

#[tokio::test]
async fn users_see_assets_but_cannot_import() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin.import_csv("id,name\na,A\n").await;
    let user = app.user(&admin, "ursula").await;
    let html = user.page("/assets").await;
    assert_eq!(ids(&html), ["a"]);
    assert!(
        html.select(&sel("form[action='/assets/import']"))
            .next()
            .is_none()
    );
    assert_eq!(
        user.import_csv("id,name\nb,B\n").await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(ids(&user.page("/assets").await), ["a"]);
}
