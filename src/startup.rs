//! Builds the application: database, session key, worker, HTTP server.

use crate::config::Config;
use crate::routes;
use crate::session::random_token;
use crate::store::Store;
use crate::worker::Worker;
use actix_session::SessionMiddleware;
use actix_session::storage::CookieSessionStore;
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::Server;
use actix_web::middleware::DefaultHeaders;
use actix_web::{App, HttpServer, web};
use std::net::TcpListener;
use std::sync::Arc;
use tokio::sync::Notify;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "cdn_invalidator_session";

/// Shared by every handler.
pub struct AppState {
    pub store: Store,
    pub config: Config,
    /// Wakes the purge worker when an invalidation is queued.
    pub wake_worker: Arc<Notify>,
}

/// A built, bound, not yet running application.
pub struct Application {
    address: std::net::SocketAddr,
    server: Server,
}

/// Opens and migrates the configured database.
pub async fn open_store(database_url: &str) -> anyhow::Result<Store> {
    let store = Store::connect(database_url).await?;
    store.migrate().await?;
    Ok(store)
}

async fn session_key(config: &Config, store: &Store) -> anyhow::Result<Key> {
    let secret = match &config.secret {
        Some(secret) => secret.clone(),
        None => store.session_secret(|| random_token(64)).await?,
    };
    anyhow::ensure!(
        secret.len() >= 32,
        "CDN_INVALIDATOR_SECRET must be at least 32 bytes long"
    );
    Ok(Key::derive_from(secret.as_bytes()))
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
        let store = open_store(&config.database_url).await?;
        let key = session_key(&config, &store).await?;
        let wake_worker = Arc::new(Notify::new());
        if config.run_worker {
            let worker = Worker::new(store.clone(), config.purge.clone(), wake_worker.clone())?;
            tokio::spawn(worker.run());
        }
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
                .wrap(sessions)
                .wrap(security_headers())
                .configure(routes::configure)
        })
        .listen(listener)?
        .run();
        Ok(Self { address, server })
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The address actually bound (the port is chosen by the OS when configured as 0).
    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
