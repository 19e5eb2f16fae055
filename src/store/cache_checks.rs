//! Proof of purge: check runs and what the cache answered for each URL.

use super::{Result, Store};
use crate::domain::freshness::Freshness;

/// One URL's check, as recorded.
#[derive(Debug, Clone)]
pub struct CacheCheck {
    /// The row checked: in `invalidation_urls`, or in `covered_urls` when `covered`.
    pub url_id: i64,
    pub covered: bool,
    pub freshness: Freshness,
    pub http_status: Option<i64>,
    pub detail: String,
}

/// A check run of one invalidation and its counts so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheCheckSummary {
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// URLs the run set out to check.
    pub urls: i64,
    pub fresh: i64,
    pub stale: i64,
    pub unknown: i64,
}

/// A stale URL and why.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StaleUrl {
    pub url: String,
    pub detail: String,
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    started_at: i64,
    finished_at: Option<i64>,
    urls: i64,
    fresh: i64,
    stale: i64,
    unknown: i64,
}

/// A run not finished after this long was abandoned (its process died): another may start.
const ABANDONED_MILLIS: i64 = 10 * 60 * 1000;

impl Store {
    /// Starts a check run of `urls` URLs of `invalidation_id` unless one is under way. Returns
    /// whether this call started it; the URLs' earlier results are cleared.
    pub async fn start_cache_check(
        &self,
        invalidation_id: i64,
        user_id: i64,
        urls: i64,
        now: i64,
    ) -> Result<bool> {
        let started = with_pool!(self, p => {
            let mut tx = p.begin().await?;
            let started = sqlx::query(
                "INSERT INTO cache_check_runs (invalidation_id, started_by, started_at, urls)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (invalidation_id) DO UPDATE
                 SET started_by = excluded.started_by, started_at = excluded.started_at,
                     finished_at = NULL, urls = excluded.urls
                 WHERE cache_check_runs.finished_at IS NOT NULL
                    OR cache_check_runs.started_at < $5",
            )
            .bind(invalidation_id)
            .bind(user_id)
            .bind(now)
            .bind(urls)
            .bind(now - ABANDONED_MILLIS)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if started {
                sqlx::query("DELETE FROM cache_checks WHERE invalidation_id = $1")
                    .bind(invalidation_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE covered_urls SET checked_at = NULL, freshness = NULL, http_status = NULL,
                         detail = NULL
                     WHERE invalidation_id = $1 AND freshness IS NOT NULL",
                )
                .bind(invalidation_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(started)
        })?;
        Ok(started)
    }

    /// Records the results of some URLs of a run.
    pub async fn record_cache_checks(
        &self,
        invalidation_id: i64,
        checks: &[CacheCheck],
        now: i64,
    ) -> Result<()> {
        with_pool!(self, p => {
            let mut tx = p.begin().await?;
            for c in checks {
                if c.covered {
                    sqlx::query(
                        "UPDATE covered_urls SET checked_at = $3, freshness = $4, http_status = $5,
                             detail = $6
                         WHERE id = $1 AND invalidation_id = $2",
                    )
                    .bind(c.url_id)
                    .bind(invalidation_id)
                    .bind(now)
                    .bind(c.freshness.as_str())
                    .bind(c.http_status)
                    .bind(&c.detail)
                    .execute(&mut *tx)
                    .await?;
                    continue;
                }
                sqlx::query(
                    "INSERT INTO cache_checks
                       (url_id, invalidation_id, checked_at, freshness, http_status, detail)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (url_id) DO UPDATE
                     SET checked_at = excluded.checked_at, freshness = excluded.freshness,
                         http_status = excluded.http_status, detail = excluded.detail",
                )
                .bind(c.url_id)
                .bind(invalidation_id)
                .bind(now)
                .bind(c.freshness.as_str())
                .bind(c.http_status)
                .bind(&c.detail)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Marks the run of `invalidation_id` finished.
    pub async fn finish_cache_check(&self, invalidation_id: i64, now: i64) -> Result<()> {
        with_pool!(self, p => {
            sqlx::query("UPDATE cache_check_runs SET finished_at = $2 WHERE invalidation_id = $1")
                .bind(invalidation_id)
                .bind(now)
                .execute(p)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// The last check run of `invalidation_id` and its counts, if it was ever checked.
    pub async fn cache_check_summary(
        &self,
        invalidation_id: i64,
    ) -> Result<Option<CacheCheckSummary>> {
        let row: Option<SummaryRow> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT r.started_at, r.finished_at, r.urls,
                   (SELECT COUNT(*) FROM cache_check_results c
                     WHERE c.invalidation_id = r.invalidation_id AND c.freshness = 'fresh') AS fresh,
                   (SELECT COUNT(*) FROM cache_check_results c
                     WHERE c.invalidation_id = r.invalidation_id AND c.freshness = 'stale') AS stale,
                   (SELECT COUNT(*) FROM cache_check_results c
                     WHERE c.invalidation_id = r.invalidation_id AND c.freshness = 'unknown') AS unknown
                 FROM cache_check_runs r WHERE r.invalidation_id = $1",
            )
            .bind(invalidation_id)
            .fetch_optional(p)
            .await
        })?;
        Ok(row.map(|r| CacheCheckSummary {
            started_at: r.started_at,
            finished_at: r.finished_at,
            urls: r.urls,
            fresh: r.fresh,
            stale: r.stale,
            unknown: r.unknown,
        }))
    }

    /// Up to `limit` of the URLs found stale or unknown, in list order, with the reason.
    pub async fn cache_check_urls(
        &self,
        invalidation_id: i64,
        freshness: Freshness,
        limit: i64,
    ) -> Result<Vec<StaleUrl>> {
        Ok(with_pool!(self, p => {
            sqlx::query_as(
                "SELECT c.url, c.detail FROM cache_check_results c
                 WHERE c.invalidation_id = $1 AND c.freshness = $2
                 ORDER BY c.position, c.row_id LIMIT $3",
            )
            .bind(invalidation_id)
            .bind(freshness.as_str())
            .bind(limit)
            .fetch_all(p)
            .await
        })?)
    }

    /// The template URLs a tag or prefix invalidation cleared, as rows to check: each with its
    /// `covered_urls` id and the outcome of the tag or prefix that cleared it.
    pub async fn covered_to_check(
        &self,
        invalidation_id: i64,
    ) -> Result<Vec<super::InvalidationUrl>> {
        Ok(with_pool!(self, p => {
            sqlx::query_as(
                "SELECT k.id, k.url, u.status, u.attempts, u.http_status, u.error, u.finished_at
                 FROM covered_urls k
                 JOIN invalidation_urls u
                   ON u.invalidation_id = k.invalidation_id AND u.position = k.target_position
                 WHERE k.invalidation_id = $1 AND u.status = 'succeeded'
                 ORDER BY k.target_position, k.id",
            )
            .bind(invalidation_id)
            .fetch_all(p)
            .await
        })?)
    }

    /// Up to `limit` template URLs a tag or prefix invalidation clears, in order, with the
    /// row (tag or prefix) that clears each, and how many there are.
    pub async fn covered_urls(
        &self,
        invalidation_id: i64,
        limit: i64,
    ) -> Result<(Vec<(String, String)>, i64)> {
        let (rows, total) = with_pool!(self, p => {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT k.url, u.url FROM covered_urls k
                 JOIN invalidation_urls u
                   ON u.invalidation_id = k.invalidation_id AND u.position = k.target_position
                 WHERE k.invalidation_id = $1
                 ORDER BY k.target_position, k.id LIMIT $2",
            )
            .bind(invalidation_id)
            .bind(limit)
            .fetch_all(p)
            .await?;
            let total: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM covered_urls WHERE invalidation_id = $1")
                    .bind(invalidation_id)
                    .fetch_one(p)
                    .await?;
            Ok::<_, sqlx::Error>((rows, total))
        })?;
        Ok((rows, total))
    }

    /// Every stale URL of `invalidation_id`, in list order (for *Invalidate again*).
    pub async fn all_stale_urls(&self, invalidation_id: i64) -> Result<Vec<String>> {
        Ok(with_pool!(self, p => {
            sqlx::query_scalar(
                "SELECT c.url FROM cache_check_results c
                 WHERE c.invalidation_id = $1 AND c.freshness = 'stale'
                 ORDER BY c.position, c.row_id",
            )
            .bind(invalidation_id)
            .fetch_all(p)
            .await
        })?)
    }
}
