//! API tokens: created with their hash, listed without it, revoked, and looked up by hash.

use super::users::User;
use super::{Result, Store, now_millis};

/// A token as its owner's page lists it (never the secret or its hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// How often `last_used_at` is written for the same token: a busy pipeline must not turn
/// every API call into a write.
const TOUCH_EVERY_MILLIS: i64 = 60_000;

impl Store {
    /// Stores a new token of `user_id` by its hash; returns its id.
    #[tracing::instrument(skip(self, token_hash))]
    pub async fn create_api_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
    ) -> Result<i64> {
        Ok(with_pool!(self, p => {
            sqlx::query_scalar(
                "INSERT INTO api_tokens (user_id, name, token_hash, created_at)
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(user_id)
            .bind(name)
            .bind(token_hash)
            .bind(now_millis())
            .fetch_one(p)
            .await
        })?)
    }

    /// `user_id`'s tokens, newest first, revoked ones included.
    #[tracing::instrument(skip(self))]
    pub async fn api_tokens_of(&self, user_id: i64) -> Result<Vec<ApiToken>> {
        Ok(with_pool!(self, p => {
            sqlx::query_as(
                "SELECT id, name, created_at, last_used_at, revoked_at FROM api_tokens
                 WHERE user_id = $1 ORDER BY id DESC",
            )
            .bind(user_id)
            .fetch_all(p)
            .await
        })?)
    }

    /// Revokes token `id` of `user_id`; false when it is not theirs or already revoked.
    #[tracing::instrument(skip(self))]
    pub async fn revoke_api_token(&self, user_id: i64, id: i64) -> Result<bool> {
        let done = with_pool!(self, p => {
            sqlx::query(
                "UPDATE api_tokens SET revoked_at = $3
                 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(user_id)
            .bind(now_millis())
            .execute(p)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(done == 1)
    }

    /// The enabled owner of the unrevoked token with `token_hash`, and the token's id; notes
    /// the use (at most once a minute per token).
    #[tracing::instrument(skip(self, token_hash))]
    pub async fn user_of_api_token(&self, token_hash: &str) -> Result<Option<(User, i64)>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            user: User,
            token_id: i64,
            last_used_at: Option<i64>,
        }
        let row: Option<Row> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT u.id, u.username, u.password_hash, u.role, u.disabled, u.session_epoch,
                        t.id AS token_id, t.last_used_at
                 FROM api_tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.disabled = FALSE",
            )
            .bind(token_hash)
            .fetch_optional(p)
            .await
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let now = now_millis();
        if row
            .last_used_at
            .is_none_or(|t| now - t >= TOUCH_EVERY_MILLIS)
        {
            with_pool!(self, p => {
                sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
                    .bind(row.token_id)
                    .bind(now)
                    .execute(p)
                    .await
                    .map(drop)
            })?;
        }
        Ok(Some((row.user, row.token_id)))
    }
}
