use super::{Result, Store};
use crate::domain::settings::SettingsInput;
use std::collections::BTreeMap;

/// The stored provider choice: its name and every provider's non-secret values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderChoice {
    /// Empty when no admin has chosen yet (the default provider applies).
    pub provider: String,
    pub values: BTreeMap<String, String>,
}

const SECRET_PREFIX: &str = "secret:";

impl Store {
    /// The stored (already normalised) URL settings; missing keys are empty.
    #[tracing::instrument(skip(self))]
    pub async fn load_settings(&self) -> Result<SettingsInput> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT key, value FROM settings WHERE key IN ('publish_server', 'template', 'allowed_hosts')",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut input = SettingsInput::default();
        for (key, value) in rows {
            match key.as_str() {
                "publish_server" => input.publish_server = value,
                "template" => input.template = value,
                "allowed_hosts" => input.allowed_hosts = value,
                _ => {}
            }
        }
        Ok(input)
    }

    /// The chosen provider and the non-secret values of every provider's fields.
    #[tracing::instrument(skip(self))]
    pub async fn load_provider(&self) -> Result<ProviderChoice> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT key, value FROM settings WHERE key IN ('provider', 'provider_values')",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut choice = ProviderChoice::default();
        for (key, value) in rows {
            match key.as_str() {
                "provider" => choice.provider = value,
                _ => choice.values = serde_json::from_str(&value).unwrap_or_default(),
            }
        }
        Ok(choice)
    }

    /// Provider credentials by field name. Kept apart so they never reach a snapshot or a page.
    #[tracing::instrument(skip(self))]
    pub async fn load_secrets(&self) -> Result<BTreeMap<String, String>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT key, value FROM settings WHERE key LIKE 'secret:%'")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(SECRET_PREFIX).map(|k| (k.to_string(), v)))
            .collect())
    }

    /// Saves URL settings, provider choice and the secrets given (others are kept) in one transaction.
    #[tracing::instrument(skip(self, secrets))]
    pub async fn save_settings(
        &self,
        input: &SettingsInput,
        provider: &ProviderChoice,
        secrets: &BTreeMap<String, String>,
    ) -> Result<()> {
        let values = serde_json::to_string(&provider.values).unwrap_or_else(|_| "{}".into());
        let mut pairs = vec![
            ("publish_server".to_string(), input.publish_server.clone()),
            ("template".to_string(), input.template.clone()),
            ("allowed_hosts".to_string(), input.allowed_hosts.clone()),
            ("provider".to_string(), provider.provider.clone()),
            ("provider_values".to_string(), values),
        ];
        pairs.extend(
            secrets
                .iter()
                .map(|(k, v)| (format!("{SECRET_PREFIX}{k}"), v.clone())),
        );
        let mut tx = self.pool.begin().await?;
        for (key, value) in pairs {
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
