use super::{Result, Store, StoreError, is_unique_violation, now_millis};
use sqlx::Row;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Self::Admin),
            "user" => Some(Self::User),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
        }
    }
}

/// An account. (`Debug` leaves out the password hash.)
#[derive(Clone)]
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
const LAST_ADMIN: &str = "role = 'admin' AND disabled = 0
    AND (SELECT COUNT(*) FROM users o WHERE o.role = 'admin' AND o.disabled = 0 AND o.id <> $2) = 0";

const USER_COLUMNS: &str = "id, username, password_hash, role, disabled, session_epoch";

fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        role: Role::parse(row.try_get::<&str, _>("role")?).unwrap_or(Role::User),
        disabled: row.try_get("disabled")?,
        session_epoch: row.try_get("session_epoch")?,
    })
}

impl Store {
    #[tracing::instrument(skip(self))]
    pub async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Creates a user; a taken name is a [`StoreError::Conflict`].
    #[tracing::instrument(skip(self, password_hash))]
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, role, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("A user named \"{username}\" already exists."))
            } else {
                e.into()
            }
        })
    }

    /// Creates the first admin only while there is no user at all (atomically).
    #[tracing::instrument(skip(self, password_hash))]
    pub async fn create_first_admin(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, role, created_at)
             SELECT $1, $2, 'admin', $3 WHERE NOT EXISTS (SELECT 1 FROM users) RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(now_millis())
        .fetch_optional(&self.pool)
        .await?)
    }

    #[tracing::instrument(skip(self))]
    pub async fn find_user_by_name(&self, username: &str) -> Result<Option<User>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    #[tracing::instrument(skip(self))]
    pub async fn get_user(&self, id: i64) -> Result<Option<User>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    #[tracing::instrument(skip(self))]
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY username"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Changes a role, unless that would leave no enabled admin (checked in the same
    /// statement, so two admins demoting each other cannot both succeed). False when refused.
    #[tracing::instrument(skip(self))]
    pub async fn set_role(&self, id: i64, role: Role) -> Result<bool> {
        let done = sqlx::query(&format!(
            "UPDATE users SET role = $1 WHERE id = $2 AND NOT ($1 <> 'admin' AND {LAST_ADMIN})"
        ))
        .bind(role.as_str())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Disables (ending the user's open sessions: the epoch moves on) or enables an account,
    /// unless disabling would leave no enabled admin. False when refused.
    #[tracing::instrument(skip(self))]
    pub async fn set_disabled(&self, id: i64, disabled: bool) -> Result<bool> {
        let done = sqlx::query(&format!(
            "UPDATE users SET disabled = $1, session_epoch = session_epoch + 1
             WHERE id = $2 AND NOT ($1 AND {LAST_ADMIN})"
        ))
        .bind(disabled)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A new password ends the user's open sessions.
    #[tracing::instrument(skip(self, password_hash))]
    pub async fn set_password(&self, id: i64, password_hash: &str) -> Result<()> {
        sqlx::query(
            "UPDATE users SET password_hash = $1, session_epoch = session_epoch + 1 WHERE id = $2",
        )
        .bind(password_hash)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
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
    /// counts, all in one transaction: parallel guesses each see the others, so none slips
    /// past the limit while another is being verified.
    #[tracing::instrument(skip(self))]
    pub async fn begin_login_attempt(
        &self,
        username: &str,
        client_ip: &str,
        since: i64,
    ) -> Result<LoginAttempts> {
        let mut tx = self.pool.begin().await?;
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
        Ok(LoginAttempts {
            id,
            by_user,
            by_client,
            oldest_user,
            oldest_client,
        })
    }

    /// Forgets one attempt (it succeeded, or it was refused without checking the password).
    pub async fn forget_login_attempt(&self, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A successful login clears the failures of this user name from this address only, so a
    /// victim logging in does not reset an attacker's count elsewhere.
    pub async fn clear_login_failures(&self, username: &str, client_ip: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE username = $1 AND client_ip = $2")
            .bind(username)
            .bind(client_ip)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
