use crate::helpers::*;
use reqwest::StatusCode;
use scraper::Html;

#[tokio::test]
async fn admin_saves_normalised_settings() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let r = admin
        .save_settings(
            "Server.com:8443",
            "  Company/<ID>?$product$ \n\nhttps://cdn.example.org/<ID>",
            "http://127.0.0.1:6081/",
            "CDN.example.org",
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/settings");
    let html = admin.page("/settings").await;
    assert_eq!(texts(&html, "[role=status]"), ["Settings saved."]);
    // Shown once.
    assert!(texts(&admin.page("/settings").await, "[role=status]").is_empty());
    assert_eq!(
        attr(&html, "#publish_server", "value").unwrap(),
        "https://server.com:8443"
    );
    assert_eq!(
        texts(&html, "#template"),
        ["Company/<ID>?$product$\nhttps://cdn.example.org/<ID>"]
    );
    assert_eq!(texts(&html, "#purge_nodes"), ["http://127.0.0.1:6081"]);
    assert_eq!(texts(&html, "#allowed_hosts"), ["cdn.example.org"]);
    // The preview expands the template for a sample asset.
    assert_eq!(
        texts(&html, "#preview li"),
        [
            "https://server.com:8443/is/image/Company/Backpack_B?$product$",
            "https://cdn.example.org/Backpack_B",
        ]
    );
}

#[tokio::test]
async fn publish_server_accepts_the_documented_forms() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for (input, stored) in [
        ("server.com", "https://server.com"),
        ("server.com:8443", "https://server.com:8443"),
        ("https://server.com/", "https://server.com"),
        ("http://127.0.0.1:6081", "http://127.0.0.1:6081"),
    ] {
        assert_eq!(
            admin.save_settings(input, "<ID>", "", "").await.status(),
            StatusCode::SEE_OTHER,
            "{input}"
        );
        let html = admin.page("/settings").await;
        assert_eq!(attr(&html, "#publish_server", "value").unwrap(), stored);
    }
}

#[tokio::test]
async fn a_wrong_line_saves_nothing_and_names_the_line() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    assert_eq!(
        admin
            .save_settings("server.com", "<ID>", "", "")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    let r = admin
        .save_settings(
            "other.com",
            "<ID>\n\nhttps://server.com/no-placeholder\nhttps://bad host/<ID>",
            "ftp://node",
            "",
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = Html::parse_document(&r.text().await.unwrap());
    let template_errors = texts(&html, ".field-error[data-field=template]");
    assert_eq!(template_errors.len(), 2, "{template_errors:?}");
    assert!(template_errors[0].starts_with("Line 3:") && template_errors[0].contains("<ID>"));
    assert!(template_errors[1].starts_with("Line 4:"));
    assert_eq!(
        texts(&html, ".field-error[data-field=purge_nodes]").len(),
        1
    );
    // What the admin typed is kept in the form.
    assert_eq!(
        attr(&html, "#publish_server", "value").unwrap(),
        "other.com"
    );
    // Nothing was saved.
    let html = admin.page("/settings").await;
    assert_eq!(
        attr(&html, "#publish_server", "value").unwrap(),
        "https://server.com"
    );
    assert_eq!(texts(&html, "#template"), ["<ID>"]);
}

#[tokio::test]
async fn relative_lines_need_a_publish_server() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let r = admin.save_settings("", "<ID>", "", "").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("no Publish Server Name is set")
    );
    // An absolute template needs none (the seed's first example).
    let r = admin
        .save_settings(
            "",
            "https://server.com/is/image/Company/<ID>?$product$",
            "",
            "server.com",
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn live_preview_follows_the_text_being_typed_without_saving() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin
        .import_csv("id,name\nAardvark 1,First by name\n")
        .await;
    let r = admin.get("/settings/preview?publish_server=server.com&template=%3CID%3E%0AX%2F%3CID%3E%3F%24p%24").await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = Html::parse_fragment(&r.text().await.unwrap());
    assert_eq!(
        texts(&html, "li"),
        [
            "https://server.com/is/image/Aardvark%201",
            "https://server.com/is/image/X/Aardvark%201?$p$"
        ]
    );
    let r = admin
        .get("/settings/preview?publish_server=&template=nothing")
        .await;
    let html = Html::parse_fragment(&r.text().await.unwrap());
    assert!(texts(&html, ".errors li")[0].starts_with("Line 1:"));
    // The no-JavaScript preview button re-renders without saving.
    let token = admin.csrf_from("/settings").await;
    let r = admin
        .post_form(
            "/settings",
            &[
                ("publish_server", "p.com"),
                ("template", "<ID>"),
                ("action", "preview"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = Html::parse_document(&r.text().await.unwrap());
    assert_eq!(
        texts(&html, "#preview li"),
        ["https://p.com/is/image/Aardvark%201"]
    );
    let html = admin.page("/settings").await;
    assert_eq!(attr(&html, "#publish_server", "value").unwrap(), "");
}

#[tokio::test]
async fn test_connection_reaches_the_purge_nodes() {
    let node = crate::purge_node::PurgeNode::start(200).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (ok, message) = admin.test_connection().await;
    assert!(ok && message.contains("no API to call"), "{message}");
    let r = admin
        .save_provider(
            "server.com",
            "",
            "http_purge",
            &[("purge_nodes", &format!("{}/", node.base()))],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (ok, message) = admin.test_connection().await;
    assert!(ok, "{message}");
    assert!(
        message.contains(&format!("{} answered HTTP 200", node.base())),
        "{message}"
    );
    // The probe changes nothing: it is not a PURGE.
    assert!(node.received().iter().all(|r| r.method == "OPTIONS"));

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    admin
        .save_provider(
            "server.com",
            "",
            "http_purge",
            &[("purge_nodes", &format!("http://127.0.0.1:{closed}"))],
        )
        .await;
    let (ok, message) = admin.test_connection().await;
    assert!(!ok && message.contains("could not connect"), "{message}");
}

/// *Test these values* checks what is in the form, saves none of it, says what it checked,
/// and refuses to test values that do not validate.
#[tokio::test]
async fn test_connection_runs_on_the_values_in_the_form_without_saving_them() {
    let node = crate::purge_node::PurgeNode::start(200).await;
    let app = spawn_app().await;
    let admin = app.admin().await;
    admin.save_settings("server.com", "<ID>", "", "").await;
    let token = admin.csrf_from("/settings").await;
    let form = |nodes: String| {
        vec![
            ("publish_server".to_string(), "server.com".to_string()),
            ("template".into(), "<ID>".into()),
            ("allowed_hosts".into(), String::new()),
            ("provider".into(), "http_purge".into()),
            ("purge_nodes".into(), nodes),
            ("action".into(), "test".into()),
            ("csrf_token".into(), token.clone()),
        ]
    };
    let post = |fields: Vec<(String, String)>| {
        let admin = &admin;
        async move {
            let borrowed: Vec<(&str, &str)> = fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let r = admin.post_form("/settings", &borrowed).await;
            assert_eq!(r.status(), StatusCode::OK);
            Html::parse_document(&r.text().await.unwrap())
        }
    };
    let html = post(form(node.base())).await;
    let result = texts(&html, "#test-result").remove(0);
    assert!(
        result.starts_with("Checked the values in the form (not saved) (HTTP PURGE")
            && result.contains(&format!("{} answered HTTP 200", node.base())),
        "{result}"
    );
    assert_eq!(attr(&html, "#test-result", "data-ok").unwrap(), "true");
    // The test's OPTIONS, then four more timing a round trip: all to the node in the form.
    let received = node.received();
    assert_eq!(received.len(), 5);
    assert!(received.iter().all(|r| r.method == "OPTIONS"));
    // The form comes back as typed; nothing was saved.
    assert_eq!(
        attr(&html, "#purge_nodes", "value")
            .or_else(|| Some(texts(&html, "#purge_nodes").concat())),
        Some(node.base())
    );
    let saved = admin.page("/settings").await;
    assert_eq!(texts(&saved, "#purge_nodes").concat(), "");
    assert_eq!(
        texts(&saved, "#active-provider"),
        ["HTTP PURGE to each URL's own host"]
    );

    // A value that does not validate is not tested.
    let html = post(form("ftp://cache.example".into())).await;
    let result = texts(&html, "#test-result").remove(0);
    assert!(result.starts_with("Not tested:"), "{result}");
    assert_eq!(node.received().len(), 5, "nothing more was sent");

    // The saved settings' test says so.
    let (ok, message) = admin.test_connection().await;
    assert!(
        ok && message.starts_with("Checked the saved settings"),
        "{message}"
    );
}
