//! Copies one database into another, empty one: how an embedded SQLite installation moves to
//! PostgreSQL (or back). Rows keep their ids; credentials are re-encrypted under the target's
//! key; everything lands in one transaction on the target, or nothing does.

use super::settings::{KEY_CHECK, SECRET_PREFIX};
use super::{Backend, Result, Store, StoreError};
use crate::crypto::MasterKey;

/// How many rows of each table were copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<(&'static str, u64)>,
    pub credentials: usize,
}

/// Rows read and written per statement: well under both backends' bind-parameter limits.
const PAGE: i64 = 2_000;

#[derive(sqlx::FromRow)]
struct UserRow {
    id: i64,
    username: String,
    password_hash: String,
    role: String,
    disabled: bool,
    session_epoch: i64,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct SettingRow {
    key: String,
    value: String,
}

#[derive(sqlx::FromRow)]
struct AssetRow {
    id: String,
    name: String,
    kind: String,
    modified_at: i64,
}

#[derive(sqlx::FromRow)]
struct InvalidationRow {
    id: i64,
    created_by: i64,
    created_at: i64,
    idempotency_key: String,
    status: String,
    provider: String,
    provider_settings: String,
    total: i64,
    duplicates_dropped: i64,
    estimated_seconds: i64,
    model_ms: Option<i64>,
    estimated_ms: Option<i64>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    retry_of: Option<i64>,
    pacing_key: String,
    scope: String,
}

#[derive(sqlx::FromRow)]
struct BatchRow {
    id: i64,
    invalidation_id: i64,
    reference: String,
    provider_id: Option<String>,
    support_id: Option<String>,
    estimated_seconds: Option<i64>,
    url_count: i64,
    status: String,
    created_at: i64,
    completed_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct UrlRow {
    id: i64,
    invalidation_id: i64,
    position: i64,
    url: String,
    status: String,
    attempts: i64,
    http_status: Option<i64>,
    error: Option<String>,
    finished_at: Option<i64>,
    batch_id: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct CoveredRow {
    id: i64,
    invalidation_id: i64,
    target_position: i64,
    url: String,
}

#[derive(sqlx::FromRow)]
struct ApiTokenRow {
    id: i64,
    user_id: i64,
    name: String,
    token_hash: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

/// Copies one table page by page (keyset on `id`) from `$source` into the open target
/// transaction `$tx`, binding each row's fields in column order. Evaluates to the row count.
macro_rules! copy_table {
    ($source:expr, $tx:expr, $row:ty, $table:literal, $key:ty, $start:expr,
     [$($col:ident),+ $(,)?]) => {{
        let columns = [$(stringify!($col)),+].join(", ");
        let select = format!(
            "SELECT {columns} FROM {} WHERE id > $1 ORDER BY id LIMIT {PAGE}",
            $table
        );
        let mut after: $key = $start;
        let mut copied = 0u64;
        loop {
            let rows: Vec<$row> = with_pool!($source, p => {
                sqlx::query_as(&select).bind(&after).fetch_all(p).await
            })?;
            let Some(last) = rows.last() else { break };
            after = last.id.clone();
            copied += rows.len() as u64;
            let mut qb = sqlx::QueryBuilder::new(format!("INSERT INTO {} ({columns}) ", $table));
            qb.push_values(rows, |mut b, row| {
                $(b.push_bind(row.$col);)+
            });
            qb.build().execute(&mut *$tx).await?;
        }
        copied
    }};
}

impl Store {
    /// Copies every user, setting, asset and invalidation (with its URLs and provider
    /// requests) from `self` into `target`, which must be migrated and empty. Credentials are
    /// decrypted with `self`'s key and encrypted with `target_key`. Leases and login failures
    /// are not copied: they describe running processes.
    pub async fn copy_into(&self, target: &Store, target_key: &MasterKey) -> Result<CopyReport> {
        if target.count_users().await? > 0 {
            return Err(StoreError::Conflict(
                "the target database already has users: copy only into a new, empty database"
                    .into(),
            ));
        }
        let secrets = self.load_secrets().await?;
        let mut report = CopyReport {
            credentials: secrets.len(),
            ..CopyReport::default()
        };
        let mut sealed = vec![(KEY_CHECK.to_string(), target_key.check_value())];
        for (field, value) in &secrets {
            let name = format!("{SECRET_PREFIX}{field}");
            let value = target_key.encrypt(value, &name);
            sealed.push((name, value));
        }
        let settings: Vec<SettingRow> = with_pool!(self, p => {
            sqlx::query_as("SELECT key, value FROM settings WHERE key NOT LIKE 'secret:%' AND key <> $1")
                .bind(KEY_CHECK)
                .fetch_all(p)
                .await
        })?;
        let tables = with_pool!(target, t => {
            let mut tx = t.begin().await?;
            let mut tables = Vec::new();
            tables.push(("users", copy_table!(self, tx, UserRow, "users", i64, 0,
                [id, username, password_hash, role, disabled, session_epoch, created_at])));
            for (key, value) in settings
                .into_iter()
                .map(|r| (r.key, r.value))
                .chain(sealed)
            {
                sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2)")
                    .bind(key)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
            }
            tables.push(("assets", copy_table!(self, tx, AssetRow, "assets", String, String::new(),
                [id, name, kind, modified_at])));
            if target.backend() == Backend::Postgres {
                sqlx::query(super::catalogue_import::FILL_CATALOGUE_CHARACTERS)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(super::catalogue_import::BUMP_VERSION).execute(&mut *tx).await?;
            tables.push(("invalidations", copy_table!(self, tx, InvalidationRow, "invalidations", i64, 0,
                [id, created_by, created_at, idempotency_key, status, provider, provider_settings,
                 total, duplicates_dropped, estimated_seconds, model_ms, estimated_ms, started_at,
                 finished_at, retry_of, pacing_key, scope])));
            tables.push(("purge_batches", copy_table!(self, tx, BatchRow, "purge_batches", i64, 0,
                [id, invalidation_id, reference, provider_id, support_id, estimated_seconds,
                 url_count, status, created_at, completed_at])));
            tables.push(("invalidation_urls", copy_table!(self, tx, UrlRow, "invalidation_urls", i64, 0,
                [id, invalidation_id, position, url, status, attempts, http_status, error,
                 finished_at, batch_id])));
            tables.push(("covered_urls", copy_table!(self, tx, CoveredRow, "covered_urls", i64, 0,
                [id, invalidation_id, target_position, url])));
            tables.push(("api_tokens", copy_table!(self, tx, ApiTokenRow, "api_tokens", i64, 0,
                [id, user_id, name, token_hash, created_at, last_used_at, revoked_at])));
            tx.commit().await?;
            Ok::<_, StoreError>(tables)
        })?;
        report.tables = tables;
        if let super::Pool::Postgres(pool) = &target.pool {
            super::catalogue_import::analyze_assets(pool).await;
            // Rows came with their ids: the identity columns continue after the largest.
            for table in [
                "users",
                "invalidations",
                "purge_batches",
                "invalidation_urls",
                "covered_urls",
                "login_failures",
                "api_tokens",
            ] {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
                );
                sqlx::query(&sql).execute(pool).await?;
            }
        }
        Ok(report)
    }
}
