use super::{Lock, Pool, Result, Store, StoreError, TxLock, is_unique_violation, now_millis};
use crate::domain::status::Role;

/// An account. (`Debug` leaves out the password hash.)
#[derive(Clone, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    pub session_epoch: i64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// The row being updated ($2) is the only enabled admin.
const LAST_ADMIN: &str = "role = 'admin' AND disabled = FALSE
    AND (SELECT COUNT(*) FROM users o WHERE o.role = 'admin' AND o.disabled = FALSE AND o.id <> $2) = 0";

const USER_COLUMNS: &str = "id, username, password_hash, role, disabled, session_epoch";

impl Store {
    #[tracing::instrument(skip(self))]
    pub async fn count_users(&self) -> Result<i64> {
        Ok(with_pool!(self, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(p).await
        })?)
    }

    /// Creates a user; a taken name is a [`StoreError::Conflict`].
    #[tracing::instrument(skip(self, password_hash))]
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<i64> {
        with_pool!(self, p => {
            sqlx::query_scalar(
                "INSERT INTO users (username, password_hash, role, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(username)
            .bind(password_hash)
            .bind(role)
            .bind(now_millis())
            .fetch_one(p)
            .await
        })
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("A user named \"{username}\" already exists."))
            } else {
                e.into()
            }
        })
    }

    /// Creates the first admin only while there is no user at all. Two first-run setups racing
    /// on two instances serialise on the admins lock, so exactly one wins.
    #[tracing::instrument(skip(self, password_hash))]
    pub async fn create_first_admin(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<Option<i64>> {
        Ok(with_pool!(self, p => {
            let mut tx = p.begin().await?;
            tx.lock(Lock::Admins).await?;
            let id = sqlx::query_scalar(
                "INSERT INTO users (username, password_hash, role, created_at)
                 SELECT $1, $2, 'admin', $3 WHERE NOT EXISTS (SELECT 1 FROM users) RETURNING id",
            )
            .bind(username)
            .bind(password_hash)
            .bind(now_millis())
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(id)
        })?)
    }

    #[tracing::instrument(skip(self))]
    pub async fn find_user_by_name(&self, username: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
        Ok(with_pool!(self, p => {
            sqlx::query_as(&sql).bind(username).fetch_optional(p).await
        })?)
    }

    /// The account a session names, for the check every logged-in request makes: on SQLite
    /// from memory while no change of an account went through this process (see
    /// [`super::user_cache`]), on PostgreSQL always from the database. Database reads are
    /// batched (see [`super::account_reads`]): each is still sent after the check began.
    pub async fn session_user(&self, id: i64) -> Result<Option<User>> {
        if self.backend() == super::Backend::Postgres {
            return self.read_account(id).await;
        }
        let now = std::time::Instant::now();
        let generation = match self.users.get(id, now) {
            Ok(user) => return Ok(Some(user)),
            Err(generation) => generation,
        };
        let user = self.read_account(id).await?;
        if let Some(user) = &user {
            self.users.keep(generation, user, now);
        }
        Ok(user)
    }

    /// Account `id` from a query sent after this call began: the next batch, or on its
    /// own when that batch failed.
    async fn read_account(&self, id: i64) -> Result<Option<User>> {
        match self.account_reads.read(&self.pool, id).await {
            Ok(user) => Ok(user),
            Err(()) => self.get_user(id).await,
        }
    }

    /// Database queries the session check has sent (one per batch), since this store opened.
    pub fn session_reads(&self) -> u64 {
        self.account_reads.sent()
    }

    #[tracing::instrument(skip(self))]
    pub async fn get_user(&self, id: i64) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        Ok(with_pool!(self, p => sqlx::query_as(&sql).bind(id).fetch_optional(p).await)?)
    }

    #[tracing::instrument(skip(self))]
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username");
        Ok(with_pool!(self, p => sqlx::query_as(&sql).fetch_all(p).await)?)
    }

    /// Runs one conditional UPDATE of a user under the admins lock: the condition's count of
    /// other enabled admins then sees every change committed before it (PostgreSQL), or
    /// cannot interleave with one (SQLite). Returns whether a row changed.
    async fn update_user_guarded(&self, sql: &str, arg: GuardArg, id: i64) -> Result<bool> {
        let _changing = self.users.changing();
        Ok(with_pool!(self, p => {
            let mut tx = p.begin().await?;
            tx.lock(Lock::Admins).await?;
            let query = sqlx::query(sql);
            let query = match &arg {
                GuardArg::Role(role) => query.bind(*role),
                GuardArg::Flag(flag) => query.bind(*flag),
            };
            let done = query.bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done.rows_affected() == 1)
        })?)
    }

    /// Changes a role, unless that would leave no enabled admin (two admins demoting each
    /// other at once cannot both succeed). False when refused.
    #[tracing::instrument(skip(self))]
    pub async fn set_role(&self, id: i64, role: Role) -> Result<bool> {
        let sql = format!(
            "UPDATE users SET role = $1 WHERE id = $2 AND NOT ($1 <> 'admin' AND {LAST_ADMIN})"
        );
        self.update_user_guarded(&sql, GuardArg::Role(role), id)
            .await
    }

    /// Disables (ending the user's open sessions: the epoch moves on) or enables an account,
    /// unless disabling would leave no enabled admin. False when refused.
    #[tracing::instrument(skip(self))]
    pub async fn set_disabled(&self, id: i64, disabled: bool) -> Result<bool> {
        let sql = format!(
            "UPDATE users SET disabled = $1, session_epoch = session_epoch + 1
             WHERE id = $2 AND NOT ($1 AND {LAST_ADMIN})"
        );
        self.update_user_guarded(&sql, GuardArg::Flag(disabled), id)
            .await
    }

    /// A new password ends the user's open sessions.
    #[tracing::instrument(skip(self, password_hash))]
    pub async fn set_password(&self, id: i64, password_hash: &str) -> Result<()> {
        let _changing = self.users.changing();
        with_pool!(self, p => {
            sqlx::query(
                "UPDATE users SET password_hash = $1, session_epoch = session_epoch + 1 WHERE id = $2",
            )
            .bind(password_hash)
            .bind(id)
            .execute(p)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }
}

/// The first parameter of a guarded user update.
enum GuardArg {
    Role(Role),
    Flag(bool),
}

/// Failed-login counts inside the throttling window, the current attempt included.
#[derive(Debug, Clone, Copy)]
pub struct LoginAttempts {
    /// The row that counts this attempt; forget it when the attempt succeeds or is refused.
    pub id: i64,
    pub by_user: i64,
    pub by_client: i64,
    pub oldest_user: Option<i64>,
    pub oldest_client: Option<i64>,
}

impl Store {
    /// Counts this login attempt as a failure *before* the password is checked, and returns the
    /// counts, in one transaction under the login lock: parallel guesses, on one instance or
    /// several, each see the others, so none slips past the limit while another is checked.
    #[tracing::instrument(skip(self))]
    pub async fn begin_login_attempt(
        &self,
        username: &str,
        client_ip: &str,
        since: i64,
    ) -> Result<LoginAttempts> {
        Ok(with_pool!(self, p => {
            let mut tx = p.begin().await?;
            tx.lock(Lock::Login).await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO login_failures (username, client_ip, at) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(username)
            .bind(client_ip)
            .bind(now_millis())
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM login_failures WHERE at < $1")
                .bind(since)
                .execute(&mut *tx)
                .await?;
            let (by_user, oldest_user): (i64, Option<i64>) =
                sqlx::query_as("SELECT COUNT(*), MIN(at) FROM login_failures WHERE username = $1")
                    .bind(username)
                    .fetch_one(&mut *tx)
                    .await?;
            let (by_client, oldest_client): (i64, Option<i64>) =
                sqlx::query_as("SELECT COUNT(*), MIN(at) FROM login_failures WHERE client_ip = $1")
                    .bind(client_ip)
                    .fetch_one(&mut *tx)
                    .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(LoginAttempts {
                id,
                by_user,
                by_client,
                oldest_user,
                oldest_client,
            })
        })?)
    }

    /// Forgets one attempt (it succeeded, or it was refused without checking the password).
    pub async fn forget_login_attempt(&self, id: i64) -> Result<()> {
        with_pool!(self, p => {
            sqlx::query("DELETE FROM login_failures WHERE id = $1").bind(id).execute(p).await.map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// A successful login clears the failures of this user name from this address only, so a
    /// victim logging in does not reset an attacker's count elsewhere.
    pub async fn clear_login_failures(&self, username: &str, client_ip: &str) -> Result<()> {
        with_pool!(self, p => {
            sqlx::query("DELETE FROM login_failures WHERE username = $1 AND client_ip = $2")
                .bind(username)
                .bind(client_ip)
                .execute(p)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(())
    }
}

/// The accounts among `ids` (one query: a batch of session checks, [`super::account_reads`]).
pub(super) async fn read_accounts(pool: &Pool, ids: &[i64]) -> sqlx::Result<Vec<User>> {
    match pool {
        Pool::Sqlite(p) => {
            // A failure is the batch's: each of its checks then reads on its own.
            let ids = serde_json::to_string(ids).map_err(|e| sqlx::Error::Encode(e.into()))?;
            sqlx::query_as(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE id IN (SELECT value FROM json_each($1))"
            ))
            .bind(ids)
            .fetch_all(p)
            .await
        }
        Pool::Postgres(p) => {
            sqlx::query_as(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE id = ANY($1)"
            ))
            .bind(ids)
            .fetch_all(p)
            .await
        }
    }
}
