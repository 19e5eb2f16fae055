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
}
