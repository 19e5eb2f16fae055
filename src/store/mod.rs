//! Every SQL statement of the application lives in this module and nowhere else.
//!
//! Handlers and the worker only see [`Store`]'s methods and plain structs, so a PostgreSQL
//! backend can be added here without touching them.

mod assets;
mod invalidations;
mod settings;
mod users;

pub use assets::{Asset, AssetPage, AssetSort};
pub use invalidations::{
    HistoryFilter, HistoryPage, Invalidation, InvalidationStatus, InvalidationUrl, NewBatch,
    NewInvalidation, PurgeBatch, UrlOutcome, UrlStatus,
};
pub use settings::ProviderChoice;
pub use users::{LoginAttempts, Role, User};

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
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
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The application's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

/// Milliseconds since the Unix epoch: how every time is stored.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Store {
    /// Opens (creating if needed) the database at `url`, e.g. `sqlite://data/cdn-invalidator.db`.
    pub async fn connect(url: &str) -> Result<Self> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|p| p.split('?').next().unwrap_or(p))
            && let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
            && path != ":memory:"
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// Applies the migrations in `migrations/sqlite`.
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// Liveness check for `/healthz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
