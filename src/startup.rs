//! Builds the application: database, keys, worker, HTTP server.

use crate::config::Config;
use crate::crypto::MasterKey;
use crate::routes;
use crate::state::AppState;
use crate::store::{Backend, Store, sqlite_path};
use crate::worker::Worker;
use actix_session::SessionMiddleware;
use actix_session::storage::CookieSessionStore;
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::Server;
use actix_web::middleware::DefaultHeaders;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use std::net::TcpListener;
use std::sync::Arc;
use tokio::sync::Notify;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "cdn_invalidator_session";

/// A built, bound, not yet running application.
pub struct Application {
    address: std::net::SocketAddr,
    server: Server,
    /// The metrics listener's address and server, when `--metrics-listen` was given.
    metrics: Option<(std::net::SocketAddr, Server)>,
}

/// Opens and migrates the configured database.
pub async fn open_store(database_url: &str) -> anyhow::Result<Store> {
    let store = Store::connect(database_url)
        .await
        .with_context(|| format!("opening {}", crate::store::redact_url(database_url)))?;
    store.migrate().await?;
    Ok(store)
}

/// The key file the embedded SQLite database's credentials are encrypted with, beside it.
pub fn key_file_for(database_url: &str) -> Option<std::path::PathBuf> {
    sqlite_path(database_url).map(|db| {
        let mut name = db.as_os_str().to_owned();
        name.push(".key");
        name.into()
    })
}

/// The master key: from the secret when one is given; for SQLite otherwise from the key file
/// beside the database (created on first start, owner-only); PostgreSQL requires the secret,
/// since every instance must hold the same key.
pub fn master_key(database_url: &str, secret: Option<&str>) -> anyhow::Result<MasterKey> {
    if let Some(secret) = secret {
        return MasterKey::from_secret(secret)
            .context("CDN_INVALIDATOR_SECRET (--secret) cannot be used");
    }
    match crate::store::backend_of(database_url)? {
        Backend::Postgres => anyhow::bail!(
            "CDN_INVALIDATOR_SECRET (or --secret) is required with PostgreSQL: every instance \
             must share it (at least 32 bytes, e.g. `openssl rand -hex 32`)"
        ),
        Backend::Sqlite => match key_file_for(database_url) {
            Some(path) => {
                let (key, created) = MasterKey::load_or_create(&path)?;
                if created {
                    tracing::info!(path = %path.display(), "created the key file credentials are encrypted with; back it up with the database");
                }
                Ok(key)
            }
            // An in-memory database lives as long as the process: so may its key.
            None => Ok(MasterKey::generate()),
        },
    }
}

/// Opens the database and unlocks its credentials with the configured key: a wrong key stops
/// the start here with a clear message, and plain-text credentials are encrypted.
pub async fn open_unlocked_store(
    database_url: &str,
    secret: Option<&str>,
) -> anyhow::Result<(Store, MasterKey)> {
    let key = master_key(database_url, secret)?;
    let mut store = open_store(database_url).await?;
    let report = match store.unlock_secrets(key.clone()).await {
        Ok(report) => report,
        Err(e) => match (secret, key_file_for(database_url)) {
            // A key-file rotation stopped between its commit and the file's replacement:
            // the database already holds values encrypted with the new key, beside the old.
            (None, Some(path)) if pending_key_file(&path).exists() => {
                let pending = pending_key_file(&path);
                let (new, _) = MasterKey::load_or_create(&pending)?;
                let report = store.unlock_secrets(new.clone()).await.map_err(|_| e)?;
                std::fs::rename(&pending, &path)?;
                tracing::info!(path = %path.display(), "finished an interrupted key rotation");
                log_upgrade(report);
                return Ok((store, new));
            }
            _ => return Err(e.into()),
        },
    };
    log_upgrade(report);
    Ok((store, key))
}

/// Where `secret rotate` writes a key file's successor before the database is re-encrypted.
pub fn pending_key_file(path: &std::path::Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    name.into()
}

fn log_upgrade(report: crate::store::UnlockReport) {
    if report.encrypted_now > 0 {
        tracing::info!(
            count = report.encrypted_now,
            "encrypted provider credentials stored in plain text"
        );
    }
}

fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "same-origin"))
}

impl Application {
    /// Opens the database, starts the purge worker and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let (store, master) =
            open_unlocked_store(&config.database_url, config.secret.as_deref()).await?;
        let key = Key::from(&master.session_key_material());
        let wake_worker = Arc::new(Notify::new());
        if config.run_worker {
            if store.backend() == Backend::Sqlite {
                // One process serves an embedded database: what a previous run held is free.
                store.release_all_leases().await?;
            }
            let worker = Worker::new(store.clone(), config.purge.clone(), wake_worker.clone())?;
            worker.spawn()?;
        }
        crate::telemetry::handle();
        let metrics = match &config.metrics_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr)?;
                let bound = listener.local_addr()?;
                let store = web::Data::new(store.clone());
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(store.clone())
                        .route("/metrics", web::get().to(crate::telemetry::render))
                })
                .workers(1)
                .listen(listener)?
                .run();
                tracing::info!(address = %bound, "metrics at /metrics");
                Some((bound, server))
            }
            None => None,
        };
        let listener = TcpListener::bind(&config.listen)?;
        let address = listener.local_addr()?;
        let secure = config.secure_cookies;
        let max_form_bytes = config.max_form_bytes;
        let state = web::Data::new(AppState {
            store,
            config,
            wake_worker,
        });
        let server = HttpServer::new(move || {
            let sessions = SessionMiddleware::builder(CookieSessionStore::default(), key.clone())
                .cookie_name(SESSION_COOKIE.into())
                .cookie_http_only(true)
                .cookie_same_site(SameSite::Lax)
                .cookie_secure(secure)
                .build();
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(max_form_bytes))
                .app_data(routes::api::json_config(max_form_bytes))
                .wrap(sessions)
                .wrap(security_headers())
                .wrap(actix_web::middleware::from_fn(crate::telemetry::request_id))
                .configure(routes::configure)
        })
        .listen(listener)?
        .run();
        Ok(Self {
            address,
            server,
            metrics,
        })
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The address actually bound (the port is chosen by the OS when configured as 0).
    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// Where `/metrics` is served, when it is.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(|(a, _)| *a)
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        match self.metrics {
            Some((_, metrics)) => {
                let (app, metrics) = futures_util::future::join(self.server, metrics).await;
                app.and(metrics)
            }
            None => self.server.await,
        }
    }
}
