//! Proof of purge: check runs and what the cache answered for each URL.

use super::{Result, Store};
use crate::domain::freshness::Freshness;

/// One URL's check, as recorded.
#[derive(Debug, Clone)]
pub struct CacheCheck {
    pub url_id: i64,
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
                   (SELECT COUNT(*) FROM cache_checks c
                     WHERE c.invalidation_id = r.invalidation_id AND c.freshness = 'fresh') AS fresh,
                   (SELECT COUNT(*) FROM cache_checks c
                     WHERE c.invalidation_id = r.invalidation_id AND c.freshness = 'stale') AS stale,
                   (SELECT COUNT(*) FROM cache_checks c
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
                "SELECT u.url, c.detail FROM cache_checks c
                 JOIN invalidation_urls u ON u.id = c.url_id
                 WHERE c.invalidation_id = $1 AND c.freshness = $2
                 ORDER BY u.position LIMIT $3",
            )
            .bind(invalidation_id)
            .bind(freshness.as_str())
            .bind(limit)
            .fetch_all(p)
            .await
        })?)
    }

    /// Every stale URL of `invalidation_id`, in list order (for *Invalidate again*).
    pub async fn all_stale_urls(&self, invalidation_id: i64) -> Result<Vec<String>> {
        Ok(with_pool!(self, p => {
            sqlx::query_scalar(
                "SELECT u.url FROM cache_checks c
                 JOIN invalidation_urls u ON u.id = c.url_id
                 WHERE c.invalidation_id = $1 AND c.freshness = 'stale'
                 ORDER BY u.position",
            )
            .bind(invalidation_id)
            .fetch_all(p)
            .await
        })?)
    }
}
