use super::assets::like_pattern;
use super::{Result, Store, is_unique_violation, now_millis};
use crate::domain::estimate::Throughput;
use sqlx::Row;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
            pub fn parse(raw: &str) -> Option<Self> {
                match raw { $($text => Some(Self::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Where an invalidation is in its life.
    InvalidationStatus {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        PartiallyFailed => "partially_failed",
        Failed => "failed",
    }
);

string_enum!(
    /// Where one URL of an invalidation is.
    UrlStatus {
        Queued => "queued",
        Retrying => "retrying",
        Submitted => "submitted",
        Succeeded => "succeeded",
        Failed => "failed",
    }
);

impl InvalidationStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::PartiallyFailed | Self::Failed)
    }
}

/// What Continue stores, before anything is sent.
#[derive(Debug, Clone)]
pub struct NewInvalidation {
    pub created_by: i64,
    pub idempotency_key: String,
    pub provider: String,
    pub provider_settings: String,
    pub urls: Vec<String>,
    pub duplicates_dropped: usize,
    pub retry_of: Option<i64>,
}

/// An invalidation with its counts.
#[derive(Debug, Clone)]
pub struct Invalidation {
    pub id: i64,
    pub created_by: i64,
    pub created_by_name: String,
    pub created_at: i64,
    pub status: InvalidationStatus,
    pub provider: String,
    pub provider_settings: String,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub duplicates_dropped: i64,
    pub estimated_seconds: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub retry_of: Option<i64>,
    pub retried_as: Option<i64>,
}

/// One URL of an invalidation and its outcome so far.
#[derive(Debug, Clone)]
pub struct InvalidationUrl {
    pub id: i64,
    pub url: String,
    pub status: UrlStatus,
    pub attempts: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
    pub finished_at: Option<i64>,
}

/// The worker's record of one attempt (or final result) for a URL.
#[derive(Debug, Clone)]
pub struct UrlOutcome {
    pub status: UrlStatus,
    pub attempts: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
    /// The provider request that carried the URL, when it was accepted.
    pub batch_id: Option<i64>,
}

/// One request a provider accepted, with the ids it answered.
#[derive(Debug, Clone)]
pub struct PurgeBatch {
    pub id: i64,
    pub reference: String,
    pub provider_id: Option<String>,
    pub support_id: Option<String>,
    pub estimated_seconds: Option<i64>,
    pub url_count: i64,
    /// Accepted but not yet complete at the provider (polled).
    pub pending: bool,
    pub created_at: i64,
    pub completed_at: Option<i64>,
}

/// What the worker records for an accepted request.
#[derive(Debug, Clone)]
pub struct NewBatch<'a> {
    pub invalidation_id: i64,
    pub reference: &'a str,
    pub provider_id: Option<&'a str>,
    pub support_id: Option<&'a str>,
    pub estimated_seconds: Option<i64>,
    pub url_count: i64,
    pub pending: bool,
}

/// History filters; empty strings mean "any".
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub status: Option<InvalidationStatus>,
    pub username: String,
    pub url: String,
}

/// One page of history and the total that matched.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub items: Vec<Invalidation>,
    pub total: i64,
}

const INVALIDATION_SELECT: &str = "
    SELECT i.id, i.created_by, u.username, i.created_at, i.status, i.provider, i.provider_settings, i.total,
           i.duplicates_dropped, i.estimated_seconds, i.started_at, i.finished_at, i.retry_of,
           (SELECT COUNT(*) FROM invalidation_urls x WHERE x.invalidation_id = i.id AND x.status = 'succeeded') AS succeeded,
           (SELECT COUNT(*) FROM invalidation_urls x WHERE x.invalidation_id = i.id AND x.status = 'failed') AS failed,
           (SELECT MIN(r.id) FROM invalidations r WHERE r.retry_of = i.id) AS retried_as
    FROM invalidations i JOIN users u ON u.id = i.created_by";

fn invalidation_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Invalidation> {
    Ok(Invalidation {
        id: row.try_get("id")?,
        created_by: row.try_get("created_by")?,
        created_by_name: row.try_get("username")?,
        created_at: row.try_get("created_at")?,
        status: InvalidationStatus::parse(row.try_get("status")?)
            .unwrap_or(InvalidationStatus::Queued),
        provider: row.try_get("provider")?,
        provider_settings: row.try_get("provider_settings")?,
        total: row.try_get("total")?,
        succeeded: row.try_get("succeeded")?,
        failed: row.try_get("failed")?,
        duplicates_dropped: row.try_get("duplicates_dropped")?,
        estimated_seconds: row.try_get("estimated_seconds")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        retry_of: row.try_get("retry_of")?,
        retried_as: row.try_get("retried_as")?,
    })
}

impl Store {
    /// The invalidation a user already created with this idempotency key, if any.
    #[tracing::instrument(skip(self))]
    pub async fn find_invalidation_by_key(&self, user_id: i64, key: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM invalidations WHERE created_by = $1 AND idempotency_key = $2",
        )
        .bind(user_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Stores an invalidation and all its URLs in one transaction and returns its id.
    ///
    /// `estimate` gets the number of URLs still queued ahead of this one. A repeated
    /// idempotency key returns the existing invalidation instead of creating a second.
    #[tracing::instrument(skip(self, new, estimate), fields(urls = new.urls.len()))]
    pub async fn create_invalidation(
        &self,
        new: &NewInvalidation,
        estimate: impl FnOnce(i64) -> i64,
    ) -> Result<i64> {
        // Writing first takes SQLite's write lock at once, so two racing submits queue up
        // instead of failing to upgrade a read transaction.
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query_scalar::<_, i64>(
            "INSERT INTO invalidations (created_by, created_at, idempotency_key, status, provider,
                 provider_settings, total, duplicates_dropped, estimated_seconds, retry_of)
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, 0, $8) RETURNING id",
        )
        .bind(new.created_by)
        .bind(now_millis())
        .bind(&new.idempotency_key)
        .bind(&new.provider)
        .bind(&new.provider_settings)
        .bind(new.urls.len() as i64)
        .bind(new.duplicates_dropped as i64)
        .bind(new.retry_of)
        .fetch_one(&mut *tx)
        .await;
        let id = match inserted {
            Ok(id) => id,
            Err(e) if is_unique_violation(&e) => {
                // Someone submitted the same form (or retried the same invalidation) first.
                drop(tx);
                let existing = match new.retry_of {
                    Some(original) => self.find_retry_of(original).await?,
                    None => None,
                };
                let existing = match existing {
                    Some(id) => Some(id),
                    None => {
                        self.find_invalidation_by_key(new.created_by, &new.idempotency_key)
                            .await?
                    }
                };
                return existing.ok_or(super::StoreError::Database(e));
            }
            Err(e) => return Err(e.into()),
        };
        let ahead: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM invalidation_urls x JOIN invalidations i ON i.id = x.invalidation_id
             WHERE i.id < $1 AND i.status IN ('queued', 'running') AND x.status IN ('queued', 'retrying')",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE invalidations SET estimated_seconds = $2 WHERE id = $1")
            .bind(id)
            .bind(estimate(ahead))
            .execute(&mut *tx)
            .await?;
        // Multi-row inserts keep 10,000 URLs to a handful of statements.
        for (chunk_index, chunk) in new.urls.chunks(300).enumerate() {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO invalidation_urls (invalidation_id, position, url) ",
            );
            qb.push_values(chunk.iter().enumerate(), |mut b, (i, url)| {
                b.push_bind(id)
                    .push_bind((chunk_index * 300 + i) as i64)
                    .push_bind(url);
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// The retry of `original`, if one was already created.
    pub async fn find_retry_of(&self, original: i64) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT MIN(id) FROM invalidations WHERE retry_of = $1")
                .bind(original)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Throughput measured on the most recent finished invalidations.
    #[tracing::instrument(skip(self))]
    pub async fn recent_throughput(&self) -> Result<Throughput> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(total), 0) AS urls, COALESCE(SUM(finished_at - started_at), 0) AS millis FROM (
                 SELECT total, started_at, finished_at FROM invalidations
                 WHERE finished_at IS NOT NULL AND started_at IS NOT NULL
                 ORDER BY id DESC LIMIT 20)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Throughput {
            urls: row.try_get("urls")?,
            millis: row.try_get("millis")?,
        })
    }

    #[tracing::instrument(skip(self))]
    pub async fn get_invalidation(&self, id: i64) -> Result<Option<Invalidation>> {
        let row = sqlx::query(&format!("{INVALIDATION_SELECT} WHERE i.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(invalidation_from_row).transpose()
    }

    /// The URLs of an invalidation in the order the user gave them.
    #[tracing::instrument(skip(self))]
    pub async fn invalidation_urls(&self, id: i64) -> Result<Vec<InvalidationUrl>> {
        self.urls_where(id, "1 = 1").await
    }

    /// URLs of an invalidation with the given status, in order.
    pub async fn invalidation_urls_with_status(
        &self,
        id: i64,
        status: UrlStatus,
    ) -> Result<Vec<InvalidationUrl>> {
        self.urls_where(id, &format!("status = '{}'", status.as_str()))
            .await
    }

    /// URLs the worker still has to send (queued, or waiting for a retry).
    pub async fn pending_urls(&self, id: i64) -> Result<Vec<InvalidationUrl>> {
        self.urls_where(id, "status IN ('queued', 'retrying')")
            .await
    }

    async fn urls_where(&self, id: i64, condition: &str) -> Result<Vec<InvalidationUrl>> {
        let rows = sqlx::query(&format!(
            "SELECT id, url, status, attempts, http_status, error, finished_at FROM invalidation_urls
             WHERE invalidation_id = $1 AND {condition} ORDER BY position"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(InvalidationUrl {
                    id: row.try_get("id")?,
                    url: row.try_get("url")?,
                    status: UrlStatus::parse(row.try_get("status")?).unwrap_or(UrlStatus::Queued),
                    attempts: row.try_get("attempts")?,
                    http_status: row.try_get("http_status")?,
                    error: row.try_get("error")?,
                    finished_at: row.try_get("finished_at")?,
                })
            })
            .collect()
    }

    /// History, newest first.
    #[tracing::instrument(skip(self))]
    pub async fn list_invalidations(
        &self,
        filter: &HistoryFilter,
        offset: i64,
        limit: i64,
    ) -> Result<HistoryPage> {
        let condition = "($1 = '' OR i.status = $1)
            AND ($2 = '' OR u.username = $2)
            AND ($3 = '%%' OR EXISTS (SELECT 1 FROM invalidation_urls x
                 WHERE x.invalidation_id = i.id AND lower(x.url) LIKE $3 ESCAPE '\\'))";
        let status = filter.status.map(InvalidationStatus::as_str).unwrap_or("");
        let pattern = like_pattern(&filter.url);
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM invalidations i JOIN users u ON u.id = i.created_by WHERE {condition}"
        ))
        .bind(status)
        .bind(&filter.username)
        .bind(&pattern)
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query(&format!(
            "{INVALIDATION_SELECT} WHERE {condition} ORDER BY i.id DESC LIMIT $4 OFFSET $5"
        ))
        .bind(status)
        .bind(&filter.username)
        .bind(&pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .iter()
            .map(invalidation_from_row)
            .collect::<Result<_>>()?;
        Ok(HistoryPage { items, total })
    }

    /// The oldest invalidation with URLs still to send: queued, or interrupted while running.
    #[tracing::instrument(skip(self))]
    pub async fn next_invalidation_to_send(&self) -> Result<Option<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT id, provider_settings FROM invalidations i
             WHERE status = 'queued' OR (status = 'running' AND EXISTS (
                 SELECT 1 FROM invalidation_urls x WHERE x.invalidation_id = i.id AND x.status IN ('queued', 'retrying')))
             ORDER BY id LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Running invalidations: their pending provider requests are polled, and those with
    /// nothing left to send or wait for are closed.
    #[tracing::instrument(skip(self))]
    pub async fn running_invalidations(&self) -> Result<Vec<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT id, provider_settings FROM invalidations WHERE status = 'running' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks an invalidation as running; the first start time is kept across restarts.
    pub async fn mark_running(&self, id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE invalidations SET status = 'running', started_at = COALESCE(started_at, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a URL's attempt or final outcome.
    #[tracing::instrument(skip(self))]
    pub async fn record_url(&self, url_id: i64, outcome: &UrlOutcome) -> Result<()> {
        self.record_urls(&[(url_id, outcome.clone())]).await
    }

    /// Records the outcomes of a whole batch in one transaction: one commit for thousands of
    /// URLs instead of one each (the worker's bottleneck at high purge rates).
    #[tracing::instrument(skip(self, outcomes), fields(count = outcomes.len()))]
    pub async fn record_urls(&self, outcomes: &[(i64, UrlOutcome)]) -> Result<()> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        for (url_id, outcome) in outcomes {
            let finished =
                matches!(outcome.status, UrlStatus::Succeeded | UrlStatus::Failed).then_some(now);
            sqlx::query(
                "UPDATE invalidation_urls SET status = $2, attempts = $3, http_status = $4, error = $5, finished_at = $6,
                     batch_id = COALESCE($7, batch_id)
                 WHERE id = $1",
            )
            .bind(url_id)
            .bind(outcome.status.as_str())
            .bind(outcome.attempts)
            .bind(outcome.http_status)
            .bind(&outcome.error)
            .bind(finished)
            .bind(outcome.batch_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Closes an invalidation whose URLs are all finished; the status follows from their outcomes.
    #[tracing::instrument(skip(self))]
    pub async fn finish_invalidation(&self, id: i64) -> Result<InvalidationStatus> {
        let (succeeded, failed, pending): (i64, i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(status = 'succeeded'), 0), COALESCE(SUM(status = 'failed'), 0),
                    COALESCE(SUM(status IN ('queued', 'retrying', 'submitted')), 0)
             FROM invalidation_urls WHERE invalidation_id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        let status = if pending > 0 {
            InvalidationStatus::Running
        } else if failed == 0 {
            InvalidationStatus::Succeeded
        } else if succeeded == 0 {
            InvalidationStatus::Failed
        } else {
            InvalidationStatus::PartiallyFailed
        };
        if status.is_finished() {
            sqlx::query("UPDATE invalidations SET status = $2, finished_at = $3 WHERE id = $1")
                .bind(id)
                .bind(status.as_str())
                .bind(now_millis())
                .execute(&self.pool)
                .await?;
        }
        Ok(status)
    }

    /// Records a request the provider accepted; returns its id.
    #[tracing::instrument(skip(self))]
    pub async fn record_batch(&self, batch: &NewBatch<'_>) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO purge_batches (invalidation_id, reference, provider_id, support_id, estimated_seconds,
                 url_count, status, created_at, completed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(batch.invalidation_id)
        .bind(batch.reference)
        .bind(batch.provider_id)
        .bind(batch.support_id)
        .bind(batch.estimated_seconds)
        .bind(batch.url_count)
        .bind(if batch.pending { "pending" } else { "done" })
        .bind(now_millis())
        .bind((!batch.pending).then(now_millis))
        .fetch_one(&self.pool)
        .await?)
    }

    /// The provider requests of an invalidation, oldest first.
    pub async fn invalidation_batches(&self, id: i64) -> Result<Vec<PurgeBatch>> {
        self.batches_where(id, "1 = 1").await
    }

    /// Accepted requests the provider has not completed yet.
    pub async fn pending_batches(&self, id: i64) -> Result<Vec<PurgeBatch>> {
        self.batches_where(id, "status = 'pending'").await
    }

    async fn batches_where(&self, id: i64, condition: &str) -> Result<Vec<PurgeBatch>> {
        let rows = sqlx::query(&format!(
            "SELECT id, reference, provider_id, support_id, estimated_seconds, url_count, status, created_at, completed_at
             FROM purge_batches WHERE invalidation_id = $1 AND {condition} ORDER BY id"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PurgeBatch {
                    id: row.try_get("id")?,
                    reference: row.try_get("reference")?,
                    provider_id: row.try_get("provider_id")?,
                    support_id: row.try_get("support_id")?,
                    estimated_seconds: row.try_get("estimated_seconds")?,
                    url_count: row.try_get("url_count")?,
                    pending: row.try_get::<&str, _>("status")? == "pending",
                    created_at: row.try_get("created_at")?,
                    completed_at: row.try_get("completed_at")?,
                })
            })
            .collect()
    }

    /// The provider finished a pending request: it and its submitted URLs are done.
    #[tracing::instrument(skip(self))]
    pub async fn complete_batch(&self, batch_id: i64) -> Result<()> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE purge_batches SET status = 'done', completed_at = $2 WHERE id = $1")
            .bind(batch_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE invalidation_urls SET status = 'succeeded', finished_at = $2 WHERE batch_id = $1 AND status = 'submitted'",
        )
        .bind(batch_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Raises the stored estimate when the provider's own figure says clearing takes longer.
    pub async fn raise_estimate(&self, id: i64, seconds: i64) -> Result<()> {
        sqlx::query(
            "UPDATE invalidations SET estimated_seconds = MAX(estimated_seconds, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(seconds)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// URLs accepted by providers and not completed yet, over every unfinished invalidation
    /// (CloudFront allows a fixed number in progress).
    pub async fn count_submitted_urls(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM invalidation_urls WHERE status = 'submitted'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The provider never reported a pending request complete: its URLs fail with `reason`.
    #[tracing::instrument(skip(self))]
    pub async fn fail_batch(&self, batch_id: i64, reason: &str) -> Result<()> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE purge_batches SET status = 'done', completed_at = $2 WHERE id = $1")
            .bind(batch_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE invalidation_urls SET status = 'failed', error = $2, finished_at = $3
             WHERE batch_id = $1 AND status = 'submitted'",
        )
        .bind(batch_id)
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Fails every URL of an invalidation that is not finished (the provider cannot be used).
    #[tracing::instrument(skip(self))]
    pub async fn fail_unfinished_urls(&self, id: i64, reason: &str) -> Result<()> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE invalidation_urls SET status = 'failed', error = $2, finished_at = $3
             WHERE invalidation_id = $1 AND status IN ('queued', 'retrying', 'submitted')",
        )
        .bind(id)
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE purge_batches SET status = 'done', completed_at = $2 WHERE invalidation_id = $1 AND status = 'pending'")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
