use super::{Result, Store};
use crate::domain::settings::SettingsInput;

impl Store {
    /// The stored (already normalised) settings; missing keys are empty.
    #[tracing::instrument(skip(self))]
    pub async fn load_settings(&self) -> Result<SettingsInput> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT key, value FROM settings WHERE key IN ('publish_server', 'template', 'purge_nodes', 'allowed_hosts')",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut input = SettingsInput::default();
        for (key, value) in rows {
            match key.as_str() {
                "publish_server" => input.publish_server = value,
                "template" => input.template = value,
                "purge_nodes" => input.purge_nodes = value,
                "allowed_hosts" => input.allowed_hosts = value,
                _ => {}
            }
        }
        Ok(input)
    }

    /// Saves all settings in one transaction.
    #[tracing::instrument(skip(self))]
    pub async fn save_settings(&self, input: &SettingsInput) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (key, value) in [
            ("publish_server", &input.publish_server),
            ("template", &input.template),
            ("purge_nodes", &input.purge_nodes),
            ("allowed_hosts", &input.allowed_hosts),
        ] {
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The session key kept in the database, created from `generate` on first use.
    #[tracing::instrument(skip_all)]
    pub async fn session_secret(&self, generate: impl FnOnce() -> String) -> Result<String> {
        sqlx::query("INSERT INTO settings (key, value) VALUES ('session_secret', $1) ON CONFLICT (key) DO NOTHING")
            .bind(generate())
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'session_secret'")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
