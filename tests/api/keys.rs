//! Credentials at rest: encrypted on upgrade, a wrong key refused at start, `secret rotate`,
//! and `copy` from the embedded SQLite database to PostgreSQL.

use crate::helpers::*;
use crate::sim_cloudflare::{CloudflareSim, ZONE_ID};
use cdn_invalidator::startup::Application;
use reqwest::StatusCode;
use std::process::Command;

const TOKEN: &str = "cf-token-at-rest-Sn3lZJTBX6kkg7OdcBUAxOO9";

async fn save_cloudflare(admin: &Browser, sim: &CloudflareSim) {
    let r = admin
        .save_provider(
            "https://images.example.com",
            "",
            "cloudflare",
            &[
                ("cloudflare_base_url", &sim.base()),
                ("cloudflare_zone_id", ZONE_ID),
                ("cloudflare_api_token", TOKEN),
                ("cloudflare_batch_size", "30"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

/// Runs one SQL statement on the database directly (as a backup reader or an old version would).
async fn raw(url: &str, sql: &str) -> Vec<(String, String)> {
    raw_rows(url, sql).await
}

async fn stored_token(url: &str) -> String {
    raw(
        url,
        "SELECT key, value FROM settings WHERE key = 'secret:cloudflare_api_token'",
    )
    .await
    .remove(0)
    .1
}

/// Logs in on a restarted app and presses Test connection (Cloudflare checks the token).
async fn token_still_works(app: &TestApp) -> bool {
    let b = app.browser();
    assert_eq!(
        b.login(ADMIN, ADMIN_PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    b.test_connection().await.0
}

fn cli(database: &str, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdn-invalidator"));
    cmd.arg("--database").arg(database).args(args);
    cmd.env_remove("CDN_INVALIDATOR_SECRET");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[tokio::test]
async fn credentials_stored_in_plain_text_are_encrypted_at_start_and_keep_working() {
    let sim = CloudflareSim::start(TOKEN, 30).await;
    let app = spawn_app().await;
    save_cloudflare(&app.admin().await, &sim).await;
    let sealed = stored_token(&app.database_url).await;
    assert!(
        sealed.starts_with("enc:v1:") && !sealed.contains(TOKEN),
        "{sealed}"
    );

    // What an installation from before encryption at rest has in its database.
    raw(
        &app.database_url,
        &format!("UPDATE settings SET value = '{TOKEN}' WHERE key = 'secret:cloudflare_api_token' RETURNING key, value"),
    )
    .await;
    let restarted = start(test_config(&app.database_url), tempfile::tempdir().unwrap()).await;
    let upgraded = stored_token(&app.database_url).await;
    assert!(upgraded.starts_with("enc:v1:") && !upgraded.contains(TOKEN));
    assert!(
        token_still_works(&restarted).await,
        "the decrypted token is the one saved"
    );
}

#[tokio::test]
async fn a_wrong_key_stops_the_start_with_a_clear_error() {
    let sim = CloudflareSim::start(TOKEN, 30).await;
    let app = spawn_app().await;
    save_cloudflare(&app.admin().await, &sim).await;
    let mut config = test_config(&app.database_url);
    config.secret = Some("another-secret-that-is-long-enough-0123456789".into());
    let err = match Application::build(config).await {
        Ok(_) => panic!("started with the wrong key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("cannot be decrypted with this secret"),
        "{err}"
    );
    assert!(sim.purges().is_empty());
}

#[tokio::test]
async fn postgresql_requires_the_shared_secret() {
    let db = PgDatabase::create().await;
    let out = cli(&db.url, &["serve", "--listen", "127.0.0.1:0"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CDN_INVALIDATOR_SECRET (or --secret) is required with PostgreSQL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn secret_rotate_re_encrypts_the_credentials() {
    let sim = CloudflareSim::start(TOKEN, 30).await;
    let app = spawn_app().await;
    save_cloudflare(&app.admin().await, &sim).await;
    let before = stored_token(&app.database_url).await;
    let new_secret = "the-new-secret-after-rotation-0123456789abc";
    let out = if on_postgres() {
        cli(
            &app.database_url,
            &["secret", "rotate"],
            &[
                ("CDN_INVALIDATOR_SECRET", TEST_SECRET),
                ("CDN_INVALIDATOR_NEW_SECRET", new_secret),
            ],
        )
    } else {
        // The embedded database's key file is replaced by a new one.
        cli(&app.database_url, &["secret", "rotate"], &[])
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 credentials re-encrypted"));
    assert_ne!(stored_token(&app.database_url).await, before);

    let mut config = test_config(&app.database_url);
    if on_postgres() {
        // The old secret no longer opens the credentials; the new one does.
        assert!(Application::build(config.clone()).await.is_err());
        config.secret = Some(new_secret.into());
    }
    let restarted = start(config, tempfile::tempdir().unwrap()).await;
    assert!(token_still_works(&restarted).await);
}

#[tokio::test]
async fn copy_moves_an_embedded_installation_to_postgresql() {
    let sim = CloudflareSim::start(TOKEN, 30).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/old.db", dir.path().display());
    let old = start(test_config(&sqlite), tempfile::tempdir().unwrap()).await;
    let admin = old.admin().await;
    save_cloudflare(&admin, &sim).await;
    let id = admin
        .invalidate_urls(
            "https://images.example.com/is/image/a\nhttps://images.example.com/is/image/b",
        )
        .await;
    assert_eq!(admin.wait_finished(id).await["status"], "succeeded");
    let catalogue = "id,name,type\nLamp_ZQ,Desk lamp,image\nTent,Red tent,image\n";
    assert_eq!(
        admin.import_csv(catalogue).await.status(),
        StatusCode::SEE_OTHER
    );

    let pg = PgDatabase::create().await;
    let out = cli(
        &sqlite,
        &["copy", "--to", &pg.url],
        &[("CDN_INVALIDATOR_TARGET_SECRET", TEST_SECRET)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("invalidation_urls: 2 rows"), "{stdout}");
    assert!(
        stdout.contains("1 provider credentials re-encrypted"),
        "{stdout}"
    );

    // A second copy into the same database is refused, and changes nothing.
    let again = cli(
        &sqlite,
        &["copy", "--to", &pg.url],
        &[("CDN_INVALIDATOR_TARGET_SECRET", TEST_SECRET)],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has users"));

    let moved = start(test_config(&pg.url), tempfile::tempdir().unwrap()).await;
    assert!(
        token_still_works(&moved).await,
        "credentials moved, re-encrypted"
    );
    let b = moved.browser();
    b.login(ADMIN, ADMIN_PASSWORD).await;
    let json = b.invalidation(id).await;
    assert_eq!(json["status"], "succeeded");
    assert_eq!(json["urls"].as_array().unwrap().len(), 2);
    // The catalogue came too, and its short searches find it (PostgreSQL looks a rare one up
    // by the characters the catalogue holds).
    for (q, want) in [
        ("zq", vec!["Lamp_ZQ"]),
        ("en", vec!["Tent"]),
        ("xq", vec![]),
    ] {
        assert_eq!(ids(&b.page(&format!("/assets?q={q}")).await), want, "q={q}");
    }
    // New rows continue after the copied ids.
    let next = b
        .invalidate_urls("https://images.example.com/is/image/c")
        .await;
    assert!(next > id, "{next} after {id}");
}
