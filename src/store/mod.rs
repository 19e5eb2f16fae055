//! Every SQL statement of the application lives in this module and nowhere else.
//!
//! One [`Store`] serves both backends: embedded SQLite (the default) and PostgreSQL (several
//! instances on one database). The pool is an enum chosen once at connect; each method's SQL is
//! written once and compiled for both pools by [`with_pool!`], so rows keep their real types
//! (`bool`, `i64`, our status enums) on each backend. That is why this is an enum of pools and
//! not `sqlx::Any`: `Any` knows neither custom types nor PostgreSQL's row locking, and the few
//! statements that must differ (row locks, advisory locks) are easy to see here.
//! Handlers and the worker only see [`Store`]'s methods and plain structs.

/// Runs `$body` with `$p` bound to the backend's pool; the body is compiled once per backend.
macro_rules! with_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($p) => $body,
            $crate::store::Pool::Postgres($p) => $body,
        }
    };
}

mod account_reads;
mod api_tokens;
mod asset_cache;
mod assets;
mod cache_checks;
mod catalogue_import;
mod copy;
mod invalidations;
mod settings;
mod user_cache;
mod users;

pub use crate::domain::status::{InvalidationStatus, Role, UrlStatus};
pub use api_tokens::ApiToken;
pub use assets::{Asset, AssetCount, AssetKey, AssetPage, AssetSort, COUNT_LIMIT, PageStart};
pub use cache_checks::{CacheCheck, CacheCheckSummary, StaleUrl};
pub use catalogue_import::ImportReport;
pub use copy::CopyReport;
pub use invalidations::{
    BatchPage, ClaimedInvalidation, HistoryFilter, HistoryPage, Invalidation, InvalidationProgress,
    InvalidationUrl, NewBatch, NewInvalidation, PendingPage, PositionedUrl, PurgeBatch, UrlCounts,
    UrlOutcome, UrlPage,
};
pub use settings::{ProviderChoice, UnlockReport};
pub use users::{LoginAttempts, User};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Postgres, Sqlite, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// A store error: the database failed, or a constraint said no.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The application's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// Encrypts provider credentials at rest; set by [`Store::unlock_secrets`].
    key: Option<std::sync::Arc<crate::crypto::MasterKey>>,
    /// Pages of the asset list read under the current catalogue version.
    asset_pages: std::sync::Arc<asset_cache::AssetPageCache>,
    /// Accounts read for the session check (SQLite only).
    users: std::sync::Arc<user_cache::UserCache>,
    /// The session check's database reads, batched.
    account_reads: std::sync::Arc<account_reads::AccountReads>,
}

/// Milliseconds since the Unix epoch: how every time is stored.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Which backend a database URL names, or why none does.
pub fn backend_of(url: &str) -> Result<Backend> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(StoreError::Config(format!(
            "unsupported database URL {:?}: use sqlite://FILE or postgres://USER@HOST/DATABASE",
            redact_url(url)
        )))
    }
}

/// The URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// The SQLite file a `sqlite:` URL names (`None` for in-memory databases or other backends).
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
}

/// Cross-transaction serialisation points: what SQLite gets from its single writer,
/// PostgreSQL gets from a transaction-scoped advisory lock taken first.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lock {
    /// Claiming queued work (an account's invalidations go to one worker at a time).
    Claim = 1,
    /// Changes that must leave at least one enabled admin, and the first admin.
    Admins = 2,
    /// Counting failed logins before a password is checked.
    Login = 3,
    /// Queueing an invalidation (the count of URLs queued ahead of it).
    Queue = 4,
}

/// Advisory lock keys are app-specific so other users of the database are not blocked.
const LOCK_BASE: i64 = 0x6364_6e69_0000;

/// Takes a [`Lock`] for the rest of a transaction.
pub(crate) trait TxLock {
    async fn lock(&mut self, lock: Lock) -> sqlx::Result<()>;
}

impl TxLock for sqlx::Transaction<'_, Sqlite> {
    /// SQLite has one writer: each of these transactions writes first, which takes the
    /// database's write lock for the rest of the transaction.
    async fn lock(&mut self, _lock: Lock) -> sqlx::Result<()> {
        Ok(())
    }
}

impl TxLock for sqlx::Transaction<'_, Postgres> {
    async fn lock(&mut self, lock: Lock) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_BASE + lock as i64)
            .execute(&mut **self)
            .await?;
        Ok(())
    }
}

impl Store {
    /// Opens the database at `url`: `sqlite://data/cdn-invalidator.db` (created if needed) or
    /// `postgres://user@host/database` (which must exist).
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = match backend_of(url)? {
            Backend::Sqlite => Pool::Sqlite(connect_sqlite(url).await?),
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url)?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?;
                Pool::Postgres(pool)
            }
        };
        Ok(Self {
            pool,
            key: None,
            asset_pages: Default::default(),
            users: Default::default(),
            account_reads: Default::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the backend's migrations (`migrations/sqlite` or `migrations/postgres`).
    pub async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await?,
            Pool::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    /// Liveness check for `/healthz`.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(drop))?;
        Ok(())
    }

    /// Closes every connection (tests and the copy command, before dropping a database).
    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }
}

async fn connect_sqlite(url: &str) -> Result<SqlitePool> {
    if let Some(path) = sqlite_path(url)
        && let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
    }
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    Ok(SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await?)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_name_their_backend() {
        assert_eq!(backend_of("sqlite://data/x.db").unwrap(), Backend::Sqlite);
        assert_eq!(backend_of("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(
            backend_of("postgres://u@localhost/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            backend_of("postgresql://u@localhost/db").unwrap(),
            Backend::Postgres
        );
        let err = backend_of("mysql://u:pw@h/db").unwrap_err().to_string();
        assert!(err.contains("unsupported") && !err.contains("pw"), "{err}");
    }

    #[test]
    fn sqlite_paths_and_redaction() {
        assert_eq!(
            sqlite_path("sqlite://data/a.db?mode=rwc"),
            Some("data/a.db".into())
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
    }
}
