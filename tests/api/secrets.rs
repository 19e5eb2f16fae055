//! Secrets never leave the server: not in pages, JSON, logs or error messages.
//! Runs the real binary so its whole log output can be searched.

use crate::helpers::*;
use crate::purge_node::PurgeNode;
use std::process::{Command, Stdio};

#[tokio::test]
async fn secrets_appear_in_no_page_json_or_log_line() {
    let session_secret = "session-key-material-that-must-stay-secret-0123456789";
    let cf_token = "cf-secret-token-that-must-stay-secret-42";
    let cf = crate::sim_cloudflare::CloudflareSim::start(cf_token, 30).await;
    let user_password = "ursula-very-secret-pw";
    let node = PurgeNode::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/app.db", dir.path().display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdn-invalidator"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &database,
            "--purge-attempts",
            "2",
            "--purge-backoff-ms",
            "10",
        ])
        .env("CDN_INVALIDATOR_SECRET", session_secret)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (log, rx) = capture_output(&mut child);
    let base = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the server says where it listens");
    let app = TestApp {
        address: base,
        metrics_address: None,
        database_url: database,
        dir,
        postgres: None,
    };

    // A full flow: setup, settings, users, import, a failing purge with its error, history, JSON.
    let admin = app.admin().await;
    admin
        .save_settings("server.com", "<ID>", &node.base(), "")
        .await;
    let token = admin.csrf_from("/users").await;
    admin
        .post_form(
            "/users",
            &[
                ("action", "add"),
                ("username", "ursula"),
                ("password", user_password),
                ("role", "user"),
                ("csrf_token", &token),
            ],
        )
        .await;
    let user = app.browser();
    user.login("ursula", user_password).await;
    user.login("ursula", "a-wrong-password").await;
    admin.import_csv("id,name\nBackpack_B,Backpack\n").await;
    let id = user
        .invalidate_urls("https://server.com/is/image/Backpack_B")
        .await;
    let json = user.wait_finished(id).await;
    let mut seen = json.to_string();
    // A provider credential: saved, tested (right and wrong), used for a purge.
    let cf_fields = [
        ("cloudflare_base_url", cf.base()),
        (
            "cloudflare_zone_id",
            crate::sim_cloudflare::ZONE_ID.to_string(),
        ),
        ("cloudflare_api_token", cf_token.to_string()),
    ];
    let fields: Vec<(&str, &str)> = cf_fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = admin
        .save_provider("server.com", "", "cloudflare", &fields)
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
    seen.push_str(&admin.test_connection().await.1);
    let cf_id = user
        .invalidate_urls("https://server.com/is/image/Backpack_B?$p$")
        .await;
    let cf_json = user.wait_finished(cf_id).await;
    assert_eq!(cf_json["status"], "succeeded", "{cf_json}");
    seen.push_str(&cf_json.to_string());
    seen.push_str(
        &admin
            .get(&format!("/invalidations/{cf_id}"))
            .await
            .text()
            .await
            .unwrap(),
    );
    // Every other provider's credentials too: saved, tested, used for a purge.
    let akamai = crate::sim_akamai::AkamaiSim::start(1.0).await;
    let edgerc = crate::sim_akamai::edgerc("akab-sim.luna.akamaiapis.net");
    let fastly_token = "fastly-secret-token-that-must-stay-secret";
    let fastly = crate::sim_fastly::FastlySim::start(fastly_token, "purge_select").await;
    let cloudfront =
        crate::sim_cloudfront::SimCloudFront::start(std::time::Duration::from_millis(100)).await;
    let provider_forms: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "akamai",
            vec![
                ("akamai_edgerc", edgerc.clone()),
                ("akamai_base_url", akamai.base()),
            ],
        ),
        (
            "fastly",
            vec![
                ("fastly_api_token", fastly_token.into()),
                ("fastly_base_url", fastly.base()),
            ],
        ),
        (
            "cloudfront",
            vec![
                ("cloudfront_base_url", cloudfront.base()),
                (
                    "cloudfront_distribution_id",
                    crate::sim_cloudfront::DISTRIBUTION_ID.into(),
                ),
                ("cloudfront_domains", "server.com".into()),
                (
                    "cloudfront_access_key_id",
                    crate::sim_cloudfront::ACCESS_KEY_ID.into(),
                ),
                (
                    "cloudfront_secret_access_key",
                    crate::sim_cloudfront::SECRET_ACCESS_KEY.into(),
                ),
                (
                    "cloudfront_session_token",
                    "session-token-that-must-stay-secret".into(),
                ),
            ],
        ),
    ];
    for (provider, form) in &provider_forms {
        let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = admin
            .save_provider("server.com", "", provider, &fields)
            .await;
        assert_eq!(
            r.status(),
            reqwest::StatusCode::SEE_OTHER,
            "{provider}: {}",
            r.text().await.unwrap()
        );
        seen.push_str(&admin.get("/settings").await.text().await.unwrap());
        seen.push_str(&admin.test_connection().await.1);
        let id = user
            .invalidate_urls(&format!("https://server.com/is/image/{provider}"))
            .await;
        let json = user.wait_finished(id).await;
        assert_eq!(json["status"], "succeeded", "{provider}: {json}");
        seen.push_str(&json.to_string());
        seen.push_str(
            &admin
                .get(&format!("/invalidations/{id}"))
                .await
                .text()
                .await
                .unwrap(),
        );
    }
    // A settings page refused with errors (422) shows no credential either.
    let r = admin
        .save_provider(
            "server.com",
            "",
            "fastly",
            &[
                ("fastly_api_token", fastly_token),
                ("fastly_soft_purge", "maybe"),
            ],
        )
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    seen.push_str(&r.text().await.unwrap());
    let mut wrong = fields.clone();
    wrong[2] = ("cloudflare_api_token", "a-wrong-token-also-secret");
    admin
        .save_provider("server.com", "", "cloudflare", &wrong)
        .await;
    seen.push_str(&admin.test_connection().await.1);
    for path in [
        "/assets",
        "/invalidate",
        "/invalidations",
        &format!("/invalidations/{id}"),
        "/settings",
        "/users",
        "/login",
        "/nope",
    ] {
        seen.push_str(&admin.get(path).await.text().await.unwrap());
        seen.push_str(&user.get(path).await.text().await.unwrap());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("invalidation finished"),
        "the log was captured:\n{log}"
    );
    let authorized = format!("Bearer {cf_token}");
    assert!(
        cf.received()
            .iter()
            .any(|r| r.authorization.as_deref() == Some(authorized.as_str()))
    );
    for secret in [
        session_secret,
        ADMIN_PASSWORD,
        user_password,
        "a-wrong-password",
        cf_token,
        "a-wrong-token-also-secret",
        crate::sim_akamai::CLIENT_SECRET,
        crate::sim_akamai::CLIENT_TOKEN,
        crate::sim_akamai::ACCESS_TOKEN,
        fastly_token,
        crate::sim_cloudfront::SECRET_ACCESS_KEY,
        "session-token-that-must-stay-secret",
    ] {
        assert!(!seen.contains(secret), "a page or JSON shows {secret}");
        assert!(!log.contains(secret), "the log shows {secret}");
    }
}
