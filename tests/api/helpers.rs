//! Test harness: the real app on a random port with a fresh database, and a cookie-keeping
//! "browser" that scrapes CSRF tokens from forms and checks HTML through CSS selectors.

use cdn_invalidator::config::Config;
use cdn_invalidator::startup::Application;
use reqwest::StatusCode;
use scraper::{Html, Selector};
use std::sync::Once;
use std::time::Duration;

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

static TRACING: Once = Once::new();

/// Logs from the app only when `TEST_LOG` is set.
fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter("info,sqlx=warn")
                .with_test_writer()
                .init();
        }
    });
}

pub struct TestApp {
    pub address: String,
    /// Where `/metrics` is served, when the config asked for it.
    pub metrics_address: Option<String>,
    pub database_url: String,
    /// Keeps the database directory alive as long as the app.
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database of this test, dropped with it.
    pub postgres: Option<std::sync::Arc<PgDatabase>>,
}

/// The secret tests give the app on PostgreSQL (required there; SQLite uses its key file).
pub const TEST_SECRET: &str = "test-secret-for-postgres-0123456789abcdef";

/// True when the suite runs against PostgreSQL (`CDN_TEST_DATABASE=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("CDN_TEST_DATABASE").is_ok_and(|v| v == "postgres")
}

/// A fresh PostgreSQL database for one test, created from `CDN_TEST_POSTGRES_URL` (a server
/// URL whose user may create databases) and dropped, with its connections, when dropped.
pub struct PgDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        Self::create_with("").await
    }

    /// A fresh database made with `options` after `CREATE DATABASE name` (a locale, say).
    pub async fn create_with(options: &str) -> Self {
        let admin_url = std::env::var("CDN_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("cdnt_{}", cdn_invalidator::session::random_token(8));
        let mut admin: sqlx::PgConnection = sqlx::Connection::connect(&admin_url)
            .await
            .expect("CDN_TEST_POSTGRES_URL reachable");
        sqlx::Executor::execute(
            &mut admin,
            format!("CREATE DATABASE {name} {options}").as_str(),
        )
        .await
        .expect("CREATE DATABASE");
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        Self {
            admin_url,
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) =
                    <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url).await
                {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::Executor::execute(&mut admin, sql.as_str()).await;
                }
            });
        })
        .join();
    }
}

/// Starts the app with fast retries, as tests want.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::with_database(database_url);
    if database_url.starts_with("postgres") {
        config.secret = Some(TEST_SECRET.into());
    }
    config.purge.backoff_base = Duration::from_millis(20);
    config.purge.backoff_max = Duration::from_millis(200);
    config.purge.timeout = Duration::from_secs(3);
    config
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let postgres = if on_postgres() {
        Some(std::sync::Arc::new(PgDatabase::create().await))
    } else {
        None
    };
    let database_url = match &postgres {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}/test.db", dir.path().display()),
    };
    let mut config = test_config(&database_url);
    adjust(&mut config);
    let mut app = start(config, dir).await;
    app.postgres = postgres;
    app
}

pub async fn start(config: Config, dir: tempfile::TempDir) -> TestApp {
    let database_url = config.database_url.clone();
    let app = Application::build(config).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = app.metrics_address().map(|a| format!("http://{a}"));
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        metrics_address,
        database_url,
        dir,
        postgres: None,
    }
}

impl TestApp {
    /// A new browser with its own cookie jar.
    pub fn browser(&self) -> Browser {
        Browser {
            base: self.address.clone(),
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Runs first-run setup and returns the admin's browser, logged in.
    pub async fn admin(&self) -> Browser {
        let b = self.browser();
        let token = b.csrf_from("/setup").await;
        let r = b
            .post_form(
                "/setup",
                &[
                    ("username", ADMIN),
                    ("password", ADMIN_PASSWORD),
                    ("csrf_token", &token),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "setup failed");
        b
    }

    /// Adds a plain user through the admin's Users page and returns that user's browser, logged in.
    pub async fn user(&self, admin: &Browser, name: &str) -> Browser {
        let password = format!("{name}-password");
        let token = admin.csrf_from("/users").await;
        let r = admin
            .post_form(
                "/users",
                &[
                    ("action", "add"),
                    ("username", name),
                    ("password", &password),
                    ("role", "user"),
                    ("csrf_token", &token),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "adding user failed");
        let b = self.browser();
        assert_eq!(
            b.login(name, &password).await.status(),
            StatusCode::SEE_OTHER
        );
        b
    }
}

pub struct Browser {
    pub base: String,
    pub client: reqwest::Client,
}

pub fn sel(css: &str) -> Selector {
    Selector::parse(css).unwrap_or_else(|e| panic!("bad selector {css}: {e:?}"))
}

/// Text of every element matching `css`, trimmed.
/// The asset IDs an asset list page shows, in its order (its rows' checkboxes).
pub fn ids(html: &Html) -> Vec<String> {
    html.select(&sel("tbody input[name=asset_id]"))
        .map(|e| e.value().attr("value").unwrap().to_string())
        .collect()
}

pub fn texts(html: &Html, css: &str) -> Vec<String> {
    html.select(&sel(css))
        .map(|e| e.text().collect::<String>().trim().to_string())
        .collect()
}

/// An attribute of the first element matching `css`.
pub fn attr(html: &Html, css: &str, name: &str) -> Option<String> {
    html.select(&sel(css))
        .next()
        .and_then(|e| e.value().attr(name))
        .map(str::to_string)
}

impl Browser {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET")
    }

    pub async fn get_json(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header("Accept", "application/json")
            .send()
            .await
            .expect("GET json")
    }

    /// GETs a page, asserting 200, and parses it.
    pub async fn page(&self, path: &str) -> Html {
        let r = self.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        Html::parse_document(&r.text().await.unwrap())
    }

    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let body = serde_html_form::to_string(fields).unwrap();
        self.client
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("POST")
    }

    /// The CSRF token from the first form on `path`.
    pub async fn csrf_from(&self, path: &str) -> String {
        let html = self.page(path).await;
        attr(&html, "input[name=csrf_token]", "value").expect("page has a csrf_token field")
    }

    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        let token = self.csrf_from("/login").await;
        self.post_form(
            "/login",
            &[
                ("username", username),
                ("password", password),
                ("csrf_token", &token),
            ],
        )
        .await
    }

    /// Saves settings as an admin; returns the response (303 on success, 422 on errors).
    pub async fn save_settings(
        &self,
        publish_server: &str,
        template: &str,
        purge_nodes: &str,
        allowed_hosts: &str,
    ) -> reqwest::Response {
        let token = self.csrf_from("/settings").await;
        self.post_form(
            "/settings",
            &[
                ("publish_server", publish_server),
                ("template", template),
                ("purge_nodes", purge_nodes),
                ("allowed_hosts", allowed_hosts),
                ("csrf_token", &token),
            ],
        )
        .await
    }

    /// Saves settings choosing `provider` with its `fields` (e.g. `[("cloudflare_zone_id", "abc")]`).
    pub async fn save_provider(
        &self,
        publish_server: &str,
        allowed_hosts: &str,
        provider: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let token = self.csrf_from("/settings").await;
        let mut form = vec![
            ("publish_server", publish_server),
            ("template", "<ID>"),
            ("allowed_hosts", allowed_hosts),
            ("provider", provider),
            ("csrf_token", token.as_str()),
        ];
        form.extend_from_slice(fields);
        self.post_form("/settings", &form).await
    }

    /// Presses Test connection on the settings page; returns (ok, message).
    pub async fn test_connection(&self) -> (bool, String) {
        let token = self.csrf_from("/settings").await;
        let r = self
            .post_form("/settings/test", &[("csrf_token", &token)])
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let html = Html::parse_document(&r.text().await.unwrap());
        let ok = attr(&html, "#test-result", "data-ok").expect("a test result") == "true";
        (ok, texts(&html, "#test-result").remove(0))
    }

    /// Uploads a catalogue CSV through the assets page.
    pub async fn import_csv(&self, csv: &str) -> reqwest::Response {
        let token = self.csrf_from("/assets").await;
        let form = reqwest::multipart::Form::new()
            .text("csrf_token", token)
            .part(
                "file",
                reqwest::multipart::Part::text(csv.to_string()).file_name("assets.csv"),
            );
        self.client
            .post(format!("{}/assets/import", self.base))
            .multipart(form)
            .send()
            .await
            .expect("import")
    }

    /// Ticks `asset_ids` on the assets page and presses Invalidate CDN; returns the page shown.
    pub async fn open_invalidate(&self, asset_ids: &[&str]) -> (StatusCode, Html) {
        let token = self.csrf_from("/assets").await;
        let mut fields: Vec<(&str, &str)> = asset_ids.iter().map(|id| ("asset_id", *id)).collect();
        fields.push(("csrf_token", &token));
        let r = self.post_form("/invalidate", &fields).await;
        let status = r.status();
        (status, Html::parse_document(&r.text().await.unwrap()))
    }

    /// Presses Continue on an Invalidate CDN page with `urls` in the textarea.
    pub async fn continue_with(&self, page: &Html, urls: &str) -> reqwest::Response {
        let token = attr(page, "input[name=csrf_token]", "value").unwrap();
        let key =
            attr(page, "input[name=idempotency_key]", "value").expect("idempotency_key field");
        self.post_form(
            "/invalidations",
            &[
                ("urls", urls),
                ("idempotency_key", &key),
                ("csrf_token", &token),
            ],
        )
        .await
    }

    /// As an admin: sets how an asset maps to what the cache knows (`urls`, `tags` or
    /// `prefixes`) and the header the origin labels responses with, keeping other settings.
    pub async fn save_variants(&self, variants: &str, tag_header: &str) -> reqwest::Response {
        let token = self.csrf_from("/settings/variants").await;
        self.post_form(
            "/settings/variants",
            &[
                ("variants", variants),
                ("tag_header", tag_header),
                ("csrf_token", &token),
            ],
        )
        .await
    }

    /// As an admin: the idempotency key of the *Purge everything* form on the variants page
    /// (panics when the form is not offered).
    pub async fn everything_key(&self) -> String {
        let page = self.page("/settings/variants").await;
        attr(
            &page,
            "#purge-everything input[name=idempotency_key]",
            "value",
        )
        .expect("the Purge everything form")
    }

    /// Presses *Purge everything* with the form's `key`, `confirm` typed, and the box ticked
    /// when `understood`.
    pub async fn purge_everything(
        &self,
        key: &str,
        confirm: &str,
        understood: bool,
    ) -> reqwest::Response {
        let token = self.csrf_from("/settings/variants").await;
        self.post_form(
            "/settings/purge-everything",
            &[
                ("confirm", confirm),
                ("understood", if understood { "yes" } else { "" }),
                ("idempotency_key", key),
                ("csrf_token", &token),
            ],
        )
        .await
    }

    /// Ticks `asset_ids`, opens Invalidate CDN and presses Continue choosing `scope`
    /// (`tags` or `prefixes`: every cached variant); returns the response.
    pub async fn continue_variants(&self, asset_ids: &[&str], scope: &str) -> reqwest::Response {
        let (status, page) = self.open_invalidate(asset_ids).await;
        assert_eq!(status, StatusCode::OK);
        let token = attr(&page, "input[name=csrf_token]", "value").unwrap();
        let key =
            attr(&page, "input[name=idempotency_key]", "value").expect("idempotency_key field");
        let mut fields: Vec<(&str, &str)> = asset_ids.iter().map(|id| ("asset_id", *id)).collect();
        fields.extend([
            ("scope", scope),
            ("urls", ""),
            ("idempotency_key", key.as_str()),
            ("csrf_token", token.as_str()),
        ]);
        self.post_form("/invalidations", &fields).await
    }

    /// [`Browser::continue_variants`] that must be accepted; returns the invalidation id.
    pub async fn invalidate_variants(&self, asset_ids: &[&str], scope: &str) -> i64 {
        let r = self.continue_variants(asset_ids, scope).await;
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "Continue refused: {}",
            r.text().await.unwrap()
        );
        invalidation_id(&r)
    }

    /// Opens a blank Invalidate CDN page, pastes `urls`, presses Continue; returns the invalidation id.
    pub async fn invalidate_urls(&self, urls: &str) -> i64 {
        let page = self.page("/invalidate").await;
        let r = self.continue_with(&page, urls).await;
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "Continue refused: {}",
            r.text().await.unwrap()
        );
        invalidation_id(&r)
    }

    /// The JSON view of invalidation `id`.
    pub async fn invalidation(&self, id: i64) -> serde_json::Value {
        self.get_json(&format!("/invalidations/{id}"))
            .await
            .json()
            .await
            .unwrap()
    }

    /// Polls the JSON view until the invalidation is finished (at most 30 s).
    pub async fn wait_finished(&self, id: i64) -> serde_json::Value {
        for _ in 0..600 {
            let json: serde_json::Value = self.invalidation(id).await;
            if ["succeeded", "partially_failed", "failed"]
                .contains(&json["status"].as_str().unwrap())
            {
                return json;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("invalidation {id} did not finish");
    }
}

/// The id in a `Location: /invalidations/{id}` redirect.
pub fn invalidation_id(r: &reqwest::Response) -> i64 {
    let location = r
        .headers()
        .get("location")
        .expect("redirect")
        .to_str()
        .unwrap();
    location
        .strip_prefix("/invalidations/")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected redirect {location}"))
}

/// Runs one query on the database directly, bypassing the app (as a backup reader, an older
/// version or a check of what is stored would), on whichever backend `url` names.
pub async fn raw_rows<T>(url: &str, sql: &str) -> Vec<T>
where
    T: Send + Unpin,
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
{
    use sqlx::Connection;
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
    }
}

/// Collects a child app process's stdout and stderr into one log, and sends the address of
/// every "listening on ADDRESS" line it prints.
pub fn capture_output(
    child: &mut std::process::Child,
) -> (
    std::sync::Arc<std::sync::Mutex<String>>,
    std::sync::mpsc::Receiver<String>,
) {
    use std::io::BufRead;
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let (log, tx) = (log.clone(), tx.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(address) = line.split("listening on ").nth(1) {
                    let _ = tx.send(address.trim().to_string());
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
    }
    (log, rx)
}

/// PostgreSQL keeps each invalidation's count of URLs in each state on its row, changed by
/// triggers with every write of URL rows (migration 0010): the counts must equal its URLs'.
/// SQLite counts the URLs on every read: nothing is kept to compare.
pub async fn assert_url_counts_kept(database_url: &str) {
    if !database_url.starts_with("postgres") {
        return;
    }
    type Row = (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);
    let rows: Vec<Row> = raw_rows(
        database_url,
        "SELECT i.id, i.queued_urls, i.retrying_urls, i.submitted_urls, i.succeeded_urls,
                i.failed_urls,
                COUNT(x.id) FILTER (WHERE x.status = 'queued'),
                COUNT(x.id) FILTER (WHERE x.status = 'retrying'),
                COUNT(x.id) FILTER (WHERE x.status = 'submitted'),
                COUNT(x.id) FILTER (WHERE x.status = 'succeeded'),
                COUNT(x.id) FILTER (WHERE x.status = 'failed')
         FROM invalidations i LEFT JOIN invalidation_urls x ON x.invalidation_id = i.id
         GROUP BY i.id ORDER BY i.id",
    )
    .await;
    assert!(!rows.is_empty(), "no invalidation to compare");
    for r in rows {
        assert_eq!(
            (r.1, r.2, r.3, r.4, r.5),
            (r.6, r.7, r.8, r.9, r.10),
            "invalidation {}: kept (queued, retrying, submitted, succeeded, failed) against counted",
            r.0
        );
    }
}
