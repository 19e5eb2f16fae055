use super::assets::like_pattern;
use super::{Backend, Lock, Pool, Result, Store, TxLock, is_unique_violation, now_millis};
use crate::domain::estimate::{Estimate, Past};
use crate::domain::status::{InvalidationStatus, UrlStatus};
use crate::domain::variants::Scope;
use std::time::Duration;

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
    /// The provider account whose rate limits this invalidation's sending must share
    /// (empty: none); one worker at a time sends to an account.
    pub pacing_key: String,
    /// What `urls` are: URLs, tags, prefixes or sites.
    pub scope: Scope,
    /// For tags and prefixes: the template URLs each row clears, by the row's position.
    pub covered: Vec<(i64, String)>,
}

/// An invalidation with its counts.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Invalidation {
    pub id: i64,
    pub created_by: i64,
    #[sqlx(rename = "username")]
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
    /// The estimate shown at Continue, in milliseconds (`None` before provider models).
    pub estimated_ms: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub retry_of: Option<i64>,
    pub retried_as: Option<i64>,
    /// What the rows are (`urls`, `tags`, `prefixes`, `everything`).
    pub scope: Scope,
}

/// One URL of an invalidation and its outcome so far.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvalidationUrl {
    pub id: i64,
    pub url: String,
    pub status: UrlStatus,
    pub attempts: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
    pub finished_at: Option<i64>,
}

/// A page of an invalidation's URLs in list order, and the position of its last one (where
/// the next page starts after; `None`: the page is empty).
#[derive(Debug, Default)]
pub struct PendingPage {
    pub urls: Vec<InvalidationUrl>,
    pub last: Option<i64>,
}

/// The worker's record of one attempt (or final result) for a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlOutcome {
    pub status: UrlStatus,
    pub attempts: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
    /// The provider request that carried the URL, when it was accepted.
    pub batch_id: Option<i64>,
}

/// One request a provider accepted, with the ids it answered.
#[derive(Debug, Clone, sqlx::FromRow)]
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

/// How many of an invalidation's URLs are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct UrlCounts {
    pub queued: i64,
    pub retrying: i64,
    pub submitted: i64,
    pub succeeded: i64,
    pub failed: i64,
}

impl UrlCounts {
    /// The count for one state.
    pub fn of(&self, status: UrlStatus) -> i64 {
        match status {
            UrlStatus::Queued => self.queued,
            UrlStatus::Retrying => self.retrying,
            UrlStatus::Submitted => self.submitted,
            UrlStatus::Succeeded => self.succeeded,
            UrlStatus::Failed => self.failed,
        }
    }
}

/// An invalidation and its URL counts, read together in one statement: all a progress poll
/// reads, however many URLs there are.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvalidationProgress {
    #[sqlx(flatten)]
    pub invalidation: Invalidation,
    #[sqlx(flatten)]
    pub counts: UrlCounts,
    /// When the provider promised the last accepted request cleared (ms), if it gave
    /// estimates.
    pub clearing_promise: Option<i64>,
    /// Whether *Check the cache* was ever run on it.
    pub cache_checked: bool,
}

/// A URL with its place in the list the user gave (0-based), the key its pages are cut on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PositionedUrl {
    pub position: i64,
    #[sqlx(flatten)]
    pub url: InvalidationUrl,
}

/// One page of an invalidation's URLs, in the order given.
#[derive(Debug, Clone, Default)]
pub struct UrlPage {
    pub urls: Vec<PositionedUrl>,
    /// The position the next page starts after; `None` on the last page.
    pub next_after: Option<i64>,
}

/// A provider request and how many its invalidation has in all.
#[derive(Debug, sqlx::FromRow)]
struct CountedBatch {
    #[sqlx(flatten)]
    batch: PurgeBatch,
    total: i64,
}

/// One page of an invalidation's provider requests, oldest first, and how many there are.
#[derive(Debug, Clone, Default)]
pub struct BatchPage {
    pub batches: Vec<PurgeBatch>,
    /// The batch id the next page starts after; `None` on the last page.
    pub next_after: Option<i64>,
    pub total: i64,
}

/// Invalidation `i`'s count of URLs in `status`, as the column `status`. PostgreSQL keeps the
/// counts on the invalidation (migration 0010: counting a running invalidation's URLs visited
/// every row); SQLite counts them from the (invalidation, status) index, which holds the
/// status itself.
fn url_count(backend: Backend, status: &str) -> String {
    match backend {
        Backend::Postgres => format!("i.{status}_urls AS {status}"),
        Backend::Sqlite => format!(
            "(SELECT COUNT(*) FROM invalidation_urls x
              WHERE x.invalidation_id = i.id AND x.status = '{status}') AS {status}"
        ),
    }
}

/// Whether invalidation `i` has URLs still to send (queued or to retry).
fn has_urls_to_send(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "i.queued_urls + i.retrying_urls > 0",
        Backend::Sqlite => {
            "EXISTS (SELECT 1 FROM invalidation_urls x
                     WHERE x.invalidation_id = i.id AND x.status IN ('queued', 'retrying'))"
        }
    }
}

/// URLs still to send (queued or to retry) of the unfinished invalidations `i` that
/// `condition` keeps, and URLs accepted but not cleared: `(to send, submitted)`.
fn unfinished_urls(backend: Backend, condition: &str) -> String {
    match backend {
        Backend::Postgres => format!(
            "SELECT CAST(COALESCE(SUM(i.queued_urls + i.retrying_urls), 0) AS BIGINT),
                    CAST(COALESCE(SUM(i.submitted_urls), 0) AS BIGINT)
             FROM invalidations i
             WHERE i.status IN ('queued', 'running') AND {condition}"
        ),
        Backend::Sqlite => format!(
            "SELECT CAST(COALESCE(SUM(CASE WHEN x.status IN ('queued', 'retrying') THEN 1 ELSE 0 END), 0) AS BIGINT),
                    CAST(COALESCE(SUM(CASE WHEN x.status = 'submitted' THEN 1 ELSE 0 END), 0) AS BIGINT)
             FROM invalidation_urls x JOIN invalidations i ON i.id = x.invalidation_id
             WHERE i.status IN ('queued', 'running') AND {condition}
               AND x.status IN ('queued', 'retrying', 'submitted')"
        ),
    }
}

/// An invalidation row with its user's name, its succeeded and failed counts and its retry.
fn invalidation_select(backend: Backend) -> String {
    format!(
        "SELECT i.id, i.created_by, u.username, i.created_at, i.status, i.provider, i.provider_settings, i.total,
                i.duplicates_dropped, i.estimated_seconds, i.estimated_ms, i.started_at, i.finished_at, i.retry_of, i.scope,
                {}, {},
                (SELECT MIN(r.id) FROM invalidations r WHERE r.retry_of = i.id) AS retried_as
         FROM invalidations i JOIN users u ON u.id = i.created_by",
        url_count(backend, "succeeded"),
        url_count(backend, "failed"),
    )
}

/// A row of history and how many rows matched in all.
#[derive(Debug, sqlx::FromRow)]
struct HistoryRow {
    #[sqlx(flatten)]
    invalidation: Invalidation,
    matched: i64,
}

/// An invalidation a worker has claimed: it holds the lease until it releases it or stops
/// renewing it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedInvalidation {
    pub id: i64,
    pub provider_settings: String,
    pub created_at: i64,
    pub pacing_key: String,
    pub scope: Scope,
}

const URL_COLUMNS: &str = "id, url, status, attempts, http_status, error, finished_at";

/// Oldest first: an invalidation with URLs to send (queued, or interrupted), whose lease is
/// free or expired, and whose provider account no other live worker is sending to.
fn claimable(backend: Backend) -> String {
    format!(
        "SELECT i.id FROM invalidations i
         WHERE (i.status = 'queued' OR (i.status = 'running' AND {}))
           AND (i.lease_owner IS NULL OR i.lease_until < $3 OR i.lease_owner = $1)
           AND (i.pacing_key = '' OR NOT EXISTS (
                 SELECT 1 FROM sender_leases s
                 WHERE s.pacing_key = i.pacing_key AND s.owner <> $1 AND s.lease_until >= $3))
         ORDER BY i.id LIMIT 1",
        has_urls_to_send(backend)
    )
}

impl Store {
    /// The invalidation a user already created with this idempotency key, if any.
    #[tracing::instrument(skip(self))]
    pub async fn find_invalidation_by_key(&self, user_id: i64, key: &str) -> Result<Option<i64>> {
        Ok(with_pool!(self, p => {
            sqlx::query_scalar(
                "SELECT id FROM invalidations WHERE created_by = $1 AND idempotency_key = $2",
            )
            .bind(user_id)
            .bind(key)
            .fetch_optional(p)
            .await
        })?)
    }

    /// Stores an invalidation and all its URLs in one transaction and returns its id.
    ///
    /// `estimate` gets the number of URLs still queued ahead of this one, counted under the
    /// queue lock so concurrent submits on several instances each see those before them. A
    /// repeated idempotency key returns the existing invalidation instead of creating a second.
    #[tracing::instrument(skip(self, new, estimate), fields(urls = new.urls.len()))]
    pub async fn create_invalidation(
        &self,
        new: &NewInvalidation,
        estimate: impl FnOnce(i64) -> Estimate,
    ) -> Result<i64> {
        let urls_json =
            serde_json::to_string(&new.urls).map_err(|e| sqlx::Error::Encode(e.into()))?;
        // URLs queued before this one, for its estimate.
        let ahead_sql = unfinished_urls(self.backend(), "i.id < $1");
        // Each URL's position is its index in the list, from 0.
        let insert_urls = match self.pool {
            Pool::Sqlite(_) => {
                "INSERT INTO invalidation_urls (invalidation_id, position, url)
                 SELECT $1, key, value FROM json_each($2)"
            }
            Pool::Postgres(_) => {
                "INSERT INTO invalidation_urls (invalidation_id, position, url)
                 SELECT $1, e.ord - 1, e.url FROM jsonb_array_elements_text($2::jsonb)
                     WITH ORDINALITY AS e (url, ord)"
            }
        };
        let covered_json =
            serde_json::to_string(&new.covered).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let insert_covered = match self.pool {
            Pool::Sqlite(_) => {
                "INSERT INTO covered_urls (invalidation_id, target_position, url)
                 SELECT $1, json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each($2)"
            }
            Pool::Postgres(_) => {
                "INSERT INTO covered_urls (invalidation_id, target_position, url)
                 SELECT $1, (e ->> 0)::bigint, e ->> 1 FROM jsonb_array_elements($2::jsonb) AS e"
            }
        };
        let created = with_pool!(self, p => {
            let mut tx = p.begin().await?;
            tx.lock(Lock::Queue).await?;
            // Writing first takes SQLite's write lock at once, so two racing submits queue up
            // instead of failing to upgrade a read transaction.
            let inserted = sqlx::query_scalar::<_, i64>(
                "INSERT INTO invalidations (created_by, created_at, idempotency_key, status, provider,
                     provider_settings, total, duplicates_dropped, estimated_seconds, retry_of, pacing_key, scope)
                 VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, 0, $8, $9, $10) RETURNING id",
            )
            .bind(new.created_by)
            .bind(now_millis())
            .bind(&new.idempotency_key)
            .bind(&new.provider)
            .bind(&new.provider_settings)
            .bind(new.urls.len() as i64)
            .bind(new.duplicates_dropped as i64)
            .bind(new.retry_of)
            .bind(&new.pacing_key)
            .bind(new.scope.as_str())
            .fetch_one(&mut *tx)
            .await;
            match inserted {
                Err(e) => Err(e),
                Ok(id) => {
                    let (ahead, _): (i64, i64) = sqlx::query_as(&ahead_sql)
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?;
                    let e = estimate(ahead);
                    sqlx::query(
                        "UPDATE invalidations SET estimated_seconds = $2, estimated_ms = $3, model_ms = $4
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind((e.estimated_ms + 999) / 1000)
                    .bind(e.estimated_ms)
                    .bind(e.model_ms)
                    .execute(&mut *tx)
                    .await?;
                    // One statement for every URL, as one JSON text: no thousands of binds.
                    sqlx::query(insert_urls)
                        .bind(id)
                        .bind(&urls_json)
                        .execute(&mut *tx)
                        .await?;
                    if !new.covered.is_empty() {
                        sqlx::query(insert_covered)
                            .bind(id)
                            .bind(&covered_json)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(id)
                }
            }
        });
        match created {
            Ok(id) => Ok(id),
            Err(e) if is_unique_violation(&e) => {
                // Someone submitted the same form (or retried the same invalidation) first.
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
                existing.ok_or(super::StoreError::Database(e))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The retry of `original`, if one was already created.
    pub async fn find_retry_of(&self, original: i64) -> Result<Option<i64>> {
        Ok(with_pool!(self, p => {
            sqlx::query_scalar("SELECT MIN(id) FROM invalidations WHERE retry_of = $1")
                .bind(original)
                .fetch_one(p)
                .await
        })?)
    }

    /// The most recent finished invalidations with `provider` that had a model estimate:
    /// their size, the model's figure and what they took (Continue to finished).
    #[tracing::instrument(skip(self))]
    pub async fn estimate_history(&self, provider: &str, scope: Scope) -> Result<Vec<Past>> {
        let rows: Vec<(i64, i64, i64)> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT total, model_ms, finished_at - created_at FROM invalidations
                 WHERE provider = $1 AND finished_at IS NOT NULL AND model_ms IS NOT NULL
                   AND status <> 'failed' AND scope = $2
                 ORDER BY id DESC LIMIT 20",
            )
            .bind(provider)
            .bind(scope.as_str())
            .fetch_all(p)
            .await
        })?;
        Ok(rows
            .into_iter()
            .map(|(urls, model_ms, actual_ms)| Past {
                urls,
                model_ms,
                actual_ms,
            })
            .collect())
    }

    #[tracing::instrument(skip(self))]
    pub async fn get_invalidation(&self, id: i64) -> Result<Option<Invalidation>> {
        Ok(self
            .invalidation_progress(id)
            .await?
            .map(|p| p.invalidation))
    }

    /// The URLs of an invalidation in the order the user gave them.
    #[tracing::instrument(skip(self))]
    pub async fn invalidation_urls(&self, id: i64) -> Result<Vec<InvalidationUrl>> {
        let sql = format!(
            "SELECT {URL_COLUMNS} FROM invalidation_urls WHERE invalidation_id = $1 ORDER BY position"
        );
        Ok(with_pool!(self, p => sqlx::query_as(&sql).bind(id).fetch_all(p).await)?)
    }

    /// URLs of an invalidation with one of the given statuses, in order.
    pub async fn invalidation_urls_with_status(
        &self,
        id: i64,
        status: UrlStatus,
    ) -> Result<Vec<InvalidationUrl>> {
        Ok(self.urls_in(id, &[status], None, i64::MAX).await?.urls)
    }

    /// At most `limit` of the URLs the worker still has to send, in list order, after
    /// `after` (a [`PendingPage::last`]; `None`: from the first). The worker reads a big
    /// invalidation a page at a time, so its first purge leaves before the last URL is read.
    pub async fn pending_urls_page(
        &self,
        id: i64,
        after: Option<i64>,
        limit: i64,
    ) -> Result<PendingPage> {
        self.urls_in(id, &[UrlStatus::Queued, UrlStatus::Retrying], after, limit)
            .await
    }

    /// Up to `limit` URLs of invalidation `id` in one of `statuses`, in list order, after
    /// position `after`. They come as one JSON text, not a row each: sqlx hands SQLite's rows
    /// over one at a time, and 50,000 of them took 280 ms before the worker could send its
    /// first purge (as JSON: about 60 ms).
    async fn urls_in(
        &self,
        id: i64,
        statuses: &[UrlStatus],
        after: Option<i64>,
        limit: i64,
    ) -> Result<PendingPage> {
        let first = statuses.first().copied().unwrap_or(UrlStatus::Queued);
        let second = statuses.get(1).copied().unwrap_or(first);
        // The subquery picks the page; the aggregate keeps it in list order.
        let sql = match self.pool {
            Pool::Sqlite(_) => {
                "SELECT COALESCE(json_group_array(json_array(id, url, status, attempts, http_status,
                     error, finished_at, position) ORDER BY position), '[]')
                 FROM (SELECT * FROM invalidation_urls
                       WHERE invalidation_id = $1 AND position > $4 AND status IN ($2, $3)
                       ORDER BY position LIMIT $5)"
            }
            Pool::Postgres(_) => {
                "SELECT COALESCE(json_agg(json_build_array(id, url, status, attempts, http_status,
                     error, finished_at, position) ORDER BY position)::text, '[]')
                 FROM (SELECT * FROM invalidation_urls
                       WHERE invalidation_id = $1 AND position > $4 AND status IN ($2, $3)
                       ORDER BY position LIMIT $5) AS page"
            }
        };
        let json: String = with_pool!(self, p => {
            sqlx::query_scalar(sql)
                .bind(id)
                .bind(first)
                .bind(second)
                .bind(after.unwrap_or(i64::MIN))
                .bind(limit)
                .fetch_one(p)
                .await
        })?;
        type Row = (
            i64,
            String,
            String,
            i64,
            Option<i64>,
            Option<String>,
            Option<i64>,
            i64,
        );
        let rows: Vec<Row> =
            serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(e.into()))?;
        let last = rows.last().map(|row| row.7);
        let urls = rows
            .into_iter()
            .map(
                |(id, url, status, attempts, http_status, error, finished_at, _)| {
                    let status = UrlStatus::parse(&status).ok_or_else(|| {
                        sqlx::Error::Decode(
                            format!("URL {id} has an unknown status {status:?}").into(),
                        )
                    })?;
                    Ok(InvalidationUrl {
                        id,
                        url,
                        status,
                        attempts,
                        http_status,
                        error,
                        finished_at,
                    })
                },
            )
            .collect::<Result<Vec<_>>>()?;
        Ok(PendingPage { urls, last })
    }

    /// History, newest first, and how many invalidations match the filter.
    ///
    /// One statement finds the page and counts every match (a window count before the
    /// limit), so a URL filter reads the URLs once. It reads them in table order into a set
    /// of invalidations: a correlated EXISTS per invalidation probed each one's URLs through an
    /// index, one random read per URL (~20x slower on SQLite for a URL few invalidations hold).
    /// The per-row counts are then taken for the page's rows only.
    #[tracing::instrument(skip(self))]
    /// Up to `limit` invalidations matching `filter` with ids below `before` (all when
    /// `None`), newest first: keyset pages for the API and the CSV export.
    #[tracing::instrument(skip(self))]
    pub async fn invalidations_before(
        &self,
        filter: &HistoryFilter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Invalidation>> {
        let select = invalidation_select(self.backend());
        let sql = format!(
            "{select}
             WHERE ($1 = '' OR i.status = $1)
               AND ($2 = '' OR u.username = $2)
               AND ($3 = '%%' OR i.id IN (SELECT x.invalidation_id FROM invalidation_urls x
                    WHERE lower(x.url) LIKE $3 ESCAPE '\\'))
               AND i.id < $4
             ORDER BY i.id DESC LIMIT $5"
        );
        let status = filter.status.map(InvalidationStatus::as_str).unwrap_or("");
        let pattern = like_pattern(&filter.url);
        Ok(with_pool!(self, p => {
            sqlx::query_as(&sql)
                .bind(status)
                .bind(&filter.username)
                .bind(&pattern)
                .bind(before.unwrap_or(i64::MAX))
                .bind(limit)
                .fetch_all(p)
                .await
        })?)
    }

    pub async fn list_invalidations(
        &self,
        filter: &HistoryFilter,
        offset: i64,
        limit: i64,
    ) -> Result<HistoryPage> {
        let condition = "($1 = '' OR i.status = $1)
            AND ($2 = '' OR u.username = $2)
            AND ($3 = '%%' OR i.id IN (SELECT x.invalidation_id FROM invalidation_urls x
                 WHERE lower(x.url) LIKE $3 ESCAPE '\\'))";
        let status = filter.status.map(InvalidationStatus::as_str).unwrap_or("");
        let pattern = like_pattern(&filter.url);
        let select = invalidation_select(self.backend());
        let page_sql = format!(
            "WITH page AS (
                 SELECT i.id, COUNT(*) OVER () AS matched
                 FROM invalidations i JOIN users u ON u.id = i.created_by
                 WHERE {condition} ORDER BY i.id DESC LIMIT $4 OFFSET $5)
             SELECT h.*, page.matched
             FROM ({select} WHERE i.id IN (SELECT id FROM page)) AS h
             JOIN page ON page.id = h.id
             ORDER BY h.id DESC"
        );
        let count_sql = format!(
            "SELECT COUNT(*) FROM invalidations i JOIN users u ON u.id = i.created_by WHERE {condition}"
        );
        let (total, items) = with_pool!(self, p => {
            let rows: Vec<HistoryRow> = sqlx::query_as(&page_sql)
                .bind(status)
                .bind(&filter.username)
                .bind(&pattern)
                .bind(limit)
                .bind(offset)
                .fetch_all(p)
                .await?;
            let total = match rows.first() {
                Some(row) => row.matched,
                None if offset == 0 => 0,
                // A page past the end has no row to carry the count.
                None => {
                    sqlx::query_scalar(&count_sql)
                        .bind(status)
                        .bind(&filter.username)
                        .bind(&pattern)
                        .fetch_one(p)
                        .await?
                }
            };
            let items: Vec<Invalidation> = rows.into_iter().map(|r| r.invalidation).collect();
            Ok::<_, sqlx::Error>((total, items))
        })?;
        Ok(HistoryPage { items, total })
    }

    /// Claims the oldest invalidation with URLs to send for worker `owner`, in one statement,
    /// with a lease until now + `lease`: no other worker takes it while the lease is renewed,
    /// and any worker may once it has expired (its owner died). Claims serialise on the claim
    /// lock (PostgreSQL) so two workers never both take the same provider account; the claimed
    /// row is also locked with `SKIP LOCKED` so a claim never waits on a row another holds.
    #[tracing::instrument(skip(self))]
    pub async fn claim_invalidation(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedInvalidation>> {
        let now = now_millis();
        let until = now + lease.as_millis() as i64;
        let row_lock = match self.backend() {
            super::Backend::Sqlite => "",
            super::Backend::Postgres => " FOR UPDATE OF i SKIP LOCKED",
        };
        let claimable = claimable(self.backend());
        let sql = format!(
            "UPDATE invalidations SET status = 'running', started_at = COALESCE(started_at, $3),
                 lease_owner = $1, lease_until = $2
             WHERE id = ({claimable}{row_lock})
             RETURNING id, provider_settings, created_at, pacing_key, scope"
        );
        Ok(with_pool!(self, p => {
            let mut tx = p.begin().await?;
            tx.lock(Lock::Claim).await?;
            let claimed: Option<ClaimedInvalidation> = sqlx::query_as(&sql)
                .bind(owner)
                .bind(until)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(c) = claimed.as_ref().filter(|c| !c.pacing_key.is_empty()) {
                sqlx::query(
                    "INSERT INTO sender_leases (pacing_key, owner, lease_until) VALUES ($1, $2, $3)
                     ON CONFLICT (pacing_key) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until",
                )
                .bind(&c.pacing_key)
                .bind(owner)
                .bind(until)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(claimed)
        })?)
    }

    /// Extends every lease `owner` holds (invalidations being sent, provider accounts it sends
    /// to) to now + `lease`. Returns the invalidations it still holds.
    #[tracing::instrument(skip(self))]
    pub async fn renew_leases(&self, owner: &str, lease: Duration) -> Result<Vec<i64>> {
        let until = now_millis() + lease.as_millis() as i64;
        Ok(with_pool!(self, p => {
            let mut tx = p.begin().await?;
            let held: Vec<i64> = sqlx::query_scalar(
                "UPDATE invalidations SET lease_until = $2 WHERE lease_owner = $1 RETURNING id",
            )
            .bind(owner)
            .bind(until)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("UPDATE sender_leases SET lease_until = $2 WHERE owner = $1")
                .bind(owner)
                .bind(until)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(held)
        })?)
    }

    /// Gives up the lease on one invalidation (its sending is done; what the provider still
    /// finishes is polled by any worker). The provider-account lease is kept while renewed.
    pub async fn release_invalidation(&self, id: i64, owner: &str) -> Result<()> {
        with_pool!(self, p => {
            sqlx::query(
                "UPDATE invalidations SET lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(id)
            .bind(owner)
            .execute(p)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Forgets every lease: for an embedded SQLite database, which only one process serves,
    /// so whatever a previous run held is free at start (no wait for a lease to expire).
    pub async fn release_all_leases(&self) -> Result<()> {
        with_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query("UPDATE invalidations SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL")
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM sender_leases").execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// Running invalidations: their pending provider requests are polled, and those with
    /// nothing left to send or wait for are closed.
    #[tracing::instrument(skip(self))]
    pub async fn running_invalidations(&self) -> Result<Vec<(i64, String)>> {
        Ok(with_pool!(self, p => {
            sqlx::query_as(
                "SELECT id, provider_settings FROM invalidations WHERE status = 'running' ORDER BY id",
            )
            .fetch_all(p)
            .await
        })?)
    }

    /// Records a URL's attempt or final outcome.
    #[tracing::instrument(skip(self))]
    pub async fn record_url(&self, url_id: i64, outcome: &UrlOutcome) -> Result<()> {
        self.record_urls(&[(url_id, outcome.clone())]).await
    }

    /// Records the outcomes of many URLs in one transaction: the worker's group commits.
    ///
    /// URLs come in runs of consecutive ids with one outcome (a batch that all succeeded), so
    /// each run is one row of a VALUES list (`id BETWEEN first AND last`), up to 1,000 per
    /// statement: 20,000 purged URLs cost a few short statements instead of 140,000 binds.
    #[tracing::instrument(skip(self, outcomes), fields(count = outcomes.len()))]
    pub async fn record_urls(&self, outcomes: &[(i64, UrlOutcome)]) -> Result<()> {
        const ROWS: usize = 1_000;
        let now = now_millis();
        let runs = outcome_runs(outcomes);
        with_pool!(self, p => {
            let mut tx = p.begin().await?;
            for chunk in runs.chunks(ROWS) {
                let mut qb = sqlx::QueryBuilder::new(
                    "WITH v (first, last, status, attempts, http_status, error, finished_at, batch_id) AS (",
                );
                qb.push_values(chunk, |mut b, &(first, last, outcome)| {
                    b.push_bind(first)
                        .push_bind(last)
                        .push_bind(outcome.status)
                        .push_bind(outcome.attempts)
                        .push_bind(outcome.http_status)
                        .push_bind(outcome.error.as_deref())
                        .push_bind(outcome.status.is_final().then_some(now))
                        .push_bind(outcome.batch_id);
                });
                qb.push(
                    ") UPDATE invalidation_urls SET status = v.status, attempts = v.attempts,
                         http_status = v.http_status, error = v.error, finished_at = v.finished_at,
                         batch_id = COALESCE(v.batch_id, invalidation_urls.batch_id)
                     FROM v WHERE invalidation_urls.id BETWEEN v.first AND v.last",
                );
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Closes an invalidation whose URLs are all finished; the status follows from their
    /// outcomes. Closing twice (two workers polling) keeps the first close.
    #[tracing::instrument(skip(self))]
    pub async fn finish_invalidation(&self, id: i64) -> Result<InvalidationStatus> {
        // PostgreSQL keeps the counts on the invalidation; counting its rows there visited
        // every URL just updated (not all-visible yet), 10,000 heap reads at the end of a purge.
        let counts = match self.backend() {
            Backend::Postgres => {
                "SELECT succeeded_urls, failed_urls, queued_urls + retrying_urls + submitted_urls
                 FROM invalidations WHERE id = $1"
            }
            Backend::Sqlite => {
                "SELECT COUNT(*) FILTER (WHERE status = 'succeeded'),
                        COUNT(*) FILTER (WHERE status = 'failed'),
                        COUNT(*) FILTER (WHERE status IN ('queued', 'retrying', 'submitted'))
                 FROM invalidation_urls WHERE invalidation_id = $1"
            }
        };
        let (succeeded, failed, unfinished): (i64, i64, i64) = with_pool!(self, p => {
            sqlx::query_as(counts)
            .bind(id)
            .fetch_one(p)
            .await
        })?;
        let status = InvalidationStatus::from_counts(succeeded, failed, unfinished);
        if status.is_finished() {
            with_pool!(self, p => {
                sqlx::query(
                    "UPDATE invalidations SET status = $2, finished_at = $3, lease_owner = NULL, lease_until = NULL
                     WHERE id = $1 AND status IN ('queued', 'running')",
                )
                .bind(id)
                .bind(status)
                .bind(now_millis())
                .execute(p)
                .await
                .map(|done| done.rows_affected())
            })?;
        }
        Ok(status)
    }

    /// Records a request the provider accepted; returns its id.
    #[tracing::instrument(skip(self))]
    pub async fn record_batch(&self, batch: &NewBatch<'_>) -> Result<i64> {
        let now = now_millis();
        Ok(with_pool!(self, p => {
            sqlx::query_scalar(
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
            .bind(now)
            .bind((!batch.pending).then_some(now))
            .fetch_one(p)
            .await
        })?)
    }

    /// The provider requests of an invalidation, oldest first.
    pub async fn invalidation_batches(&self, id: i64) -> Result<Vec<PurgeBatch>> {
        self.batches_where(id, "1 = 1").await
    }

    /// The earliest time a provider promised an accepted request would be cleared (acceptance
    /// plus its own estimate), over every request still pending.
    #[tracing::instrument(skip(self))]
    pub async fn next_promise(&self) -> Result<Option<i64>> {
        Ok(with_pool!(self, p => {
            sqlx::query_scalar(
                "SELECT MIN(created_at + estimated_seconds * 1000) FROM purge_batches
                 WHERE status = 'pending' AND estimated_seconds IS NOT NULL",
            )
            .fetch_one(p)
            .await
        })?)
    }

    /// URLs waiting to be sent (queued or to retry) and URLs a provider has accepted but not
    /// cleared, over the invalidations not finished.
    #[tracing::instrument(skip(self))]
    pub async fn queue_depth(&self) -> Result<(i64, i64)> {
        let sql = unfinished_urls(self.backend(), "true");
        Ok(with_pool!(self, p => sqlx::query_as(&sql).fetch_one(p).await)?)
    }

    /// Accepted requests the provider has not completed yet.
    pub async fn pending_batches(&self, id: i64) -> Result<Vec<PurgeBatch>> {
        self.batches_where(id, "status = 'pending'").await
    }

    async fn batches_where(&self, id: i64, condition: &str) -> Result<Vec<PurgeBatch>> {
        let sql = format!(
            "SELECT id, reference, provider_id, support_id, estimated_seconds, url_count,
                    status = 'pending' AS pending, created_at, completed_at
             FROM purge_batches WHERE invalidation_id = $1 AND {condition} ORDER BY id"
        );
        Ok(with_pool!(self, p => sqlx::query_as(&sql).bind(id).fetch_all(p).await)?)
    }

    /// The provider finished a pending request: it and its submitted URLs are done.
    #[tracing::instrument(skip(self))]
    pub async fn complete_batch(&self, batch_id: i64) -> Result<()> {
        self.close_batch(batch_id, UrlStatus::Succeeded, None).await
    }

    /// The provider never reported a pending request complete: its URLs fail with `reason`.
    #[tracing::instrument(skip(self))]
    pub async fn fail_batch(&self, batch_id: i64, reason: &str) -> Result<()> {
        self.close_batch(batch_id, UrlStatus::Failed, Some(reason))
            .await
    }

    async fn close_batch(&self, batch_id: i64, to: UrlStatus, reason: Option<&str>) -> Result<()> {
        let now = now_millis();
        with_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query("UPDATE purge_batches SET status = 'done', completed_at = $2 WHERE id = $1")
                .bind(batch_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE invalidation_urls SET status = $2, error = COALESCE($3, error), finished_at = $4
                 WHERE batch_id = $1 AND status = 'submitted'",
            )
            .bind(batch_id)
            .bind(to)
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// Rows accepted by providers and not completed yet, over every unfinished invalidation
    /// whose scope is one of `scopes` (CloudFront allows a fixed number of paths in progress,
    /// and separately of wildcard paths).
    pub async fn count_submitted(&self, scopes: &[Scope]) -> Result<i64> {
        let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        let names = serde_json::to_string(&names).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let sql = match self.pool {
            Pool::Sqlite(_) => {
                "SELECT COUNT(*) FROM invalidation_urls x JOIN invalidations i ON i.id = x.invalidation_id
                 WHERE x.status = 'submitted' AND i.scope IN (SELECT value FROM json_each($1))"
            }
            Pool::Postgres(_) => {
                "SELECT CAST(COALESCE(SUM(i.submitted_urls), 0) AS BIGINT) FROM invalidations i
                 WHERE i.status IN ('queued', 'running')
                   AND i.scope IN (SELECT jsonb_array_elements_text($1::jsonb))"
            }
        };
        Ok(with_pool!(self, p => {
            sqlx::query_scalar(sql).bind(&names).fetch_one(p).await
        })?)
    }

    /// Fails every URL of an invalidation that is not finished (the provider cannot be used).
    #[tracing::instrument(skip(self))]
    pub async fn fail_unfinished_urls(&self, id: i64, reason: &str) -> Result<()> {
        let now = now_millis();
        with_pool!(self, p => {
            let mut tx = p.begin().await?;
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
            tx.commit().await
        })?;
        Ok(())
    }

    /// An invalidation, how many of its URLs are in each state, its provider's clearing
    /// promise and whether the cache was checked, in one statement (one round trip for what
    /// a progress poll or the top of its page reads). Each count reads only the
    /// (invalidation, status) index entries of its state, never a URL row: on SQLite five
    /// such counts take a third of the time of one pass with five `COUNT(*) FILTER` over the
    /// invalidation's entries.
    #[tracing::instrument(skip(self))]
    pub async fn invalidation_progress(&self, id: i64) -> Result<Option<InvalidationProgress>> {
        let count = |status: &str| url_count(self.backend(), status);
        let sql = format!(
            "SELECT i.id, i.created_by, u.username, i.created_at, i.status, i.provider, i.provider_settings,
                    i.total, i.duplicates_dropped, i.estimated_seconds, i.estimated_ms, i.started_at, i.finished_at, i.retry_of, i.scope,
                    {}, {}, {}, {}, {},
                    (SELECT MIN(r.id) FROM invalidations r WHERE r.retry_of = i.id) AS retried_as,
                    (SELECT MAX(b.created_at + b.estimated_seconds * 1000) FROM purge_batches b
                      WHERE b.invalidation_id = i.id AND b.estimated_seconds IS NOT NULL) AS clearing_promise,
                    EXISTS (SELECT 1 FROM cache_check_runs c WHERE c.invalidation_id = i.id) AS cache_checked
             FROM invalidations i JOIN users u ON u.id = i.created_by
             WHERE i.id = $1",
            count("queued"),
            count("retrying"),
            count("submitted"),
            count("succeeded"),
            count("failed"),
        );
        Ok(with_pool!(self, p => sqlx::query_as(&sql).bind(id).fetch_optional(p).await)?)
    }

    /// At most `limit` URLs of an invalidation after position `after` (`None`: from the first),
    /// in the order given, only those with `status` when one is named. Keyset paging: each page
    /// costs the same however deep it is.
    #[tracing::instrument(skip(self))]
    pub async fn invalidation_url_page(
        &self,
        id: i64,
        status: Option<UrlStatus>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<UrlPage> {
        let limit = limit.max(1);
        // Two statements rather than `($3 IS NULL OR status = $3)`, so each gets its own plan:
        // the (invalidation, position) key for all URLs, the status index for one state.
        let filter = if status.is_some() {
            "AND status = $4"
        } else {
            ""
        };
        let sql = format!(
            "SELECT position, {URL_COLUMNS} FROM invalidation_urls
             WHERE invalidation_id = $1 AND position > $2 {filter}
             ORDER BY position LIMIT $3"
        );
        let after = after.unwrap_or(-1);
        let mut urls: Vec<PositionedUrl> = with_pool!(self, p => {
            let query = sqlx::query_as(&sql).bind(id).bind(after).bind(limit + 1);
            match status {
                Some(status) => query.bind(status).fetch_all(p).await,
                None => query.fetch_all(p).await,
            }
        })?;
        let next_after = if urls.len() as i64 > limit {
            urls.truncate(limit as usize);
            urls.last().map(|u| u.position)
        } else {
            None
        };
        Ok(UrlPage { urls, next_after })
    }

    /// At most `limit` provider requests of an invalidation after batch `after` (`None`: from
    /// the first), oldest first, and how many it has (one per URL for some providers).
    #[tracing::instrument(skip(self))]
    pub async fn invalidation_batch_page(
        &self,
        id: i64,
        after: Option<i64>,
        limit: i64,
    ) -> Result<BatchPage> {
        let limit = limit.max(1);
        // The count rides on the page's rows (one round trip); only a page past the end, with
        // no row to carry it, asks for it alone.
        const COUNT: &str = "SELECT COUNT(*) FROM purge_batches WHERE invalidation_id = $1";
        let (total, mut batches): (i64, Vec<PurgeBatch>) = with_pool!(self, p => {
            let rows: Vec<CountedBatch> = sqlx::query_as(&format!(
                "SELECT id, reference, provider_id, support_id, estimated_seconds, url_count,
                        status = 'pending' AS pending, created_at, completed_at,
                        ({COUNT}) AS total
                 FROM purge_batches WHERE invalidation_id = $1 AND id > $2 ORDER BY id LIMIT $3"
            ))
            .bind(id)
            .bind(after.unwrap_or(0))
            .bind(limit + 1)
            .fetch_all(p)
            .await?;
            let total = match rows.first() {
                Some(row) => row.total,
                None if after.is_none() => 0,
                None => sqlx::query_scalar(COUNT).bind(id).fetch_one(p).await?,
            };
            Ok::<_, sqlx::Error>((total, rows.into_iter().map(|r| r.batch).collect()))
        })?;
        let next_after = if batches.len() as i64 > limit {
            batches.truncate(limit as usize);
            batches.last().map(|b| b.id)
        } else {
            None
        };
        Ok(BatchPage {
            batches,
            next_after,
            total,
        })
    }
}

/// The last outcome of each URL in `outcomes`, as runs `(first id, last id, outcome)` of
/// consecutive ids with equal outcomes, in id order. A group may hold several outcomes of one
/// URL (a retry answered within the group): the last is the truth, and an UPDATE matching a
/// row twice would keep either, so each id is in exactly one run.
fn outcome_runs(outcomes: &[(i64, UrlOutcome)]) -> Vec<(i64, i64, &UrlOutcome)> {
    let mut latest: std::collections::BTreeMap<i64, &UrlOutcome> = Default::default();
    for (id, outcome) in outcomes {
        latest.insert(*id, outcome);
    }
    let mut runs: Vec<(i64, i64, &UrlOutcome)> = Vec::new();
    for (id, outcome) in latest {
        match runs.last_mut() {
            Some((_, last, same)) if *last + 1 == id && *same == outcome => *last = id,
            _ => runs.push((id, id, outcome)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: UrlStatus, attempts: i64) -> UrlOutcome {
        UrlOutcome {
            status,
            attempts,
            http_status: Some(200),
            error: None,
            batch_id: None,
        }
    }

    #[test]
    fn outcomes_become_runs_of_consecutive_ids_with_the_last_outcome_of_each() {
        let ok = outcome(UrlStatus::Succeeded, 1);
        let retry = outcome(UrlStatus::Retrying, 1);
        let ok2 = outcome(UrlStatus::Succeeded, 2);
        // Batches answered out of order, a gap (id 6), and URL 3 retried then purged.
        let outcomes = vec![
            (4, ok.clone()),
            (5, ok.clone()),
            (1, ok.clone()),
            (2, ok.clone()),
            (3, retry.clone()),
            (7, ok.clone()),
            (9, retry.clone()),
            (3, ok2.clone()),
        ];
        let runs: Vec<(i64, i64, UrlOutcome)> = outcome_runs(&outcomes)
            .into_iter()
            .map(|(a, b, o)| (a, b, o.clone()))
            .collect();
        assert_eq!(
            runs,
            vec![
                (1, 2, ok.clone()),
                (3, 3, ok2),
                (4, 5, ok.clone()),
                (7, 7, ok),
                (9, 9, retry),
            ]
        );
        assert!(outcome_runs(&[]).is_empty());
    }
}
