use super::{Result, Store, StoreError};
use crate::crypto::{self, MasterKey};
use crate::domain::estimate::Measured;
use crate::domain::settings::SettingsInput;
use std::collections::BTreeMap;

/// The stored provider choice: its name and every provider's non-secret values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderChoice {
    /// Empty when no admin has chosen yet (the default provider applies).
    pub provider: String,
    pub values: BTreeMap<String, String>,
}

pub(super) const SECRET_PREFIX: &str = "secret:";
/// The settings row holding the last import's changed asset IDs.
const IMPORT_CHANGES: &str = "import_changes";
/// Settings rows holding what was measured of a provider's requests, by provider name.
const MEASURED_PREFIX: &str = "measured:";
/// An encrypted constant: proves at start that the key is the one the credentials were
/// encrypted with, even before any credential is stored.
pub(super) const KEY_CHECK: &str = "key_check";

/// What [`Store::unlock_secrets`] found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnlockReport {
    /// Plain-text credentials (from before encryption at rest) encrypted now.
    pub encrypted_now: usize,
    /// This database had no key check yet: the key given is now the database's key.
    pub first_use: bool,
}

impl Store {
    /// The stored (already normalised) URL settings; missing keys are empty.
    #[tracing::instrument(skip(self))]
    pub async fn load_settings(&self) -> Result<SettingsInput> {
        let rows: Vec<(String, String)> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT key, value FROM settings WHERE key IN ('publish_server', 'template', 'allowed_hosts')",
            )
            .fetch_all(p)
            .await
        })?;
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
        let rows: Vec<(String, String)> = with_pool!(self, p => {
            sqlx::query_as("SELECT key, value FROM settings WHERE key IN ('provider', 'provider_values')")
                .fetch_all(p)
                .await
        })?;
        let mut choice = ProviderChoice::default();
        for (key, value) in rows {
            match key.as_str() {
                "provider" => choice.provider = value,
                _ => {
                    choice.values = serde_json::from_str(&value).map_err(|e| {
                        StoreError::Config(format!("stored provider values do not parse: {e}"))
                    })?
                }
            }
        }
        Ok(choice)
    }

    async fn secret_rows(&self) -> Result<Vec<(String, String)>> {
        Ok(with_pool!(self, p => {
            sqlx::query_as("SELECT key, value FROM settings WHERE key LIKE 'secret:%' ORDER BY key")
                .fetch_all(p)
                .await
        })?)
    }

    fn key(&self) -> Result<&MasterKey> {
        self.key.as_deref().ok_or_else(|| {
            StoreError::Config("provider credentials are encrypted and no key was given".into())
        })
    }

    /// Provider credentials by field name, decrypted. Kept apart so they never reach a
    /// snapshot or a page. A value that does not decrypt is an error, never sent to a CDN.
    #[tracing::instrument(skip(self))]
    pub async fn load_secrets(&self) -> Result<BTreeMap<String, String>> {
        let key = self.key()?;
        let mut secrets = BTreeMap::new();
        for (name, stored) in self.secret_rows().await? {
            let plain = key
                .decrypt(&stored, &name)
                .map_err(|e| StoreError::Config(format!("setting {name}: {e}")))?;
            if let Some(field) = name.strip_prefix(SECRET_PREFIX) {
                secrets.insert(field.to_string(), plain);
            }
        }
        Ok(secrets)
    }

    /// Saves URL settings, provider choice and the secrets given (encrypted; others are
    /// kept) in one transaction.
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
        if !secrets.is_empty() {
            let key = self.key()?;
            for (field, value) in secrets {
                let name = format!("{SECRET_PREFIX}{field}");
                let sealed = key.encrypt(value, &name);
                pairs.push((name, sealed));
            }
        }
        self.put_settings(&pairs).await
    }

    /// What this installation last measured of `provider`'s requests (see [`Measured`]).
    #[tracing::instrument(skip(self))]
    pub async fn load_measured(&self, provider: &str) -> Result<Option<Measured>> {
        let text: Option<String> = with_pool!(self, p => {
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(format!("{MEASURED_PREFIX}{provider}"))
                .fetch_optional(p)
                .await
        })?;
        Ok(text.and_then(|t| {
            let (ms, urls) = t.split_once(' ')?;
            Some(Measured {
                request_ms: ms
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite() && *v > 0.0)?,
                urls_per_request: urls
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite() && *v > 0.0)?,
            })
        }))
    }

    /// Keeps a measurement of `provider`'s requests for the next estimates.
    #[tracing::instrument(skip(self))]
    pub async fn save_measured(&self, provider: &str, measured: Measured) -> Result<()> {
        self.put_settings(&[(
            format!("{MEASURED_PREFIX}{provider}"),
            format!("{} {}", measured.request_ms, measured.urls_per_request),
        )])
        .await
    }

    /// Keeps the last import's changed asset IDs under `token`, for the page that shows the
    /// import's result (it offers Invalidate CDN for them). Only the last import is kept.
    #[tracing::instrument(skip(self, ids), fields(ids = ids.len()))]
    pub async fn save_import_changes(&self, token: &str, ids: &[String]) -> Result<()> {
        let value = serde_json::json!({ "token": token, "ids": ids }).to_string();
        self.put_settings(&[(IMPORT_CHANGES.to_string(), value)])
            .await
    }

    /// The changed IDs kept by [`Store::save_import_changes`] under `token`, if they are still
    /// the last import's.
    #[tracing::instrument(skip(self))]
    pub async fn import_changes(&self, token: &str) -> Result<Option<Vec<String>>> {
        let text: Option<String> = with_pool!(self, p => {
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(IMPORT_CHANGES)
                .fetch_optional(p)
                .await
        })?;
        #[derive(serde::Deserialize)]
        struct Kept {
            token: String,
            ids: Vec<String>,
        }
        Ok(text
            .and_then(|t| serde_json::from_str::<Kept>(&t).ok())
            .filter(|k| k.token == token)
            .map(|k| k.ids))
    }

    /// How an asset maps to what the cache knows (`urls`, `tags`, `prefixes`) and the header
    /// the origin labels responses with; empty strings when never set.
    #[tracing::instrument(skip(self))]
    pub async fn load_variants(&self) -> Result<(String, String)> {
        let rows: Vec<(String, String)> = with_pool!(self, p => {
            sqlx::query_as("SELECT key, value FROM settings WHERE key IN ('variants', 'tag_header')")
                .fetch_all(p)
                .await
        })?;
        let mut out = (String::new(), String::new());
        for (key, value) in rows {
            match key.as_str() {
                "variants" => out.0 = value,
                _ => out.1 = value,
            }
        }
        Ok(out)
    }

    /// Saves what [`Store::load_variants`] reads.
    #[tracing::instrument(skip(self))]
    pub async fn save_variants(&self, variants: &str, tag_header: &str) -> Result<()> {
        self.put_settings(&[
            ("variants".to_string(), variants.to_string()),
            ("tag_header".to_string(), tag_header.to_string()),
        ])
        .await
    }

    /// Upserts settings rows in one transaction.
    async fn put_settings(&self, pairs: &[(String, String)]) -> Result<()> {
        with_pool!(self, p => {
            let mut tx = p.begin().await?;
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
            tx.commit().await
        })?;
        Ok(())
    }

    /// Takes the key credentials are encrypted with: checks it against the database's key
    /// check (a wrong key is a clear error here, at start), records it on first use, and
    /// encrypts credentials still stored in plain text (from before encryption at rest).
    pub async fn unlock_secrets(&mut self, key: MasterKey) -> Result<UnlockReport> {
        let check: Option<String> = with_pool!(self, p => {
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(KEY_CHECK)
                .fetch_optional(p)
                .await
        })?;
        let mut report = UnlockReport::default();
        let mut pairs = Vec::new();
        match check {
            Some(stored) => key
                .verify_check_value(&stored)
                .map_err(|e| StoreError::Config(e.to_string()))?,
            None => {
                report.first_use = true;
                pairs.push((KEY_CHECK.to_string(), key.check_value()));
            }
        }
        for (name, stored) in self.secret_rows().await? {
            if crypto::is_encrypted(&stored) {
                key.decrypt(&stored, &name)
                    .map_err(|e| StoreError::Config(format!("setting {name}: {e}")))?;
            } else {
                pairs.push((name.clone(), key.encrypt(&stored, &name)));
                report.encrypted_now += 1;
            }
        }
        // A new key check and the upgraded values land together or not at all.
        self.put_settings(&pairs).await?;
        self.key = Some(std::sync::Arc::new(key));
        Ok(report)
    }

    /// Re-encrypts every credential and the key check under `new` (the store must be
    /// unlocked with the current key), in one transaction. Returns how many were re-encrypted.
    pub async fn rotate_key(&mut self, new: MasterKey) -> Result<usize> {
        let secrets = self.load_secrets().await?;
        let mut pairs = vec![(KEY_CHECK.to_string(), new.check_value())];
        for (field, value) in &secrets {
            let name = format!("{SECRET_PREFIX}{field}");
            let sealed = new.encrypt(value, &name);
            pairs.push((name, sealed));
        }
        self.put_settings(&pairs).await?;
        self.key = Some(std::sync::Arc::new(new));
        Ok(secrets.len())
    }
}
