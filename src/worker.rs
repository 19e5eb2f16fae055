//! The purge worker: takes queued invalidations, drives a provider, records each URL's outcome.

use crate::cdn::{self, Attempt, ProviderSettings, PurgeConfig, Purger};
use crate::store::{InvalidationStatus, InvalidationUrl, Store, UrlOutcome, UrlStatus};
use argon2::password_hash::rand_core::{OsRng, RngCore};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use url::Url;

/// Runs purges in the background of the web process. Tests can drive [`Worker::run_once`].
#[derive(Clone)]
pub struct Worker {
    store: Store,
    client: reqwest::Client,
    config: PurgeConfig,
    wake: Arc<Notify>,
}

fn jitter() -> f64 {
    OsRng.next_u32() as f64 / u32::MAX as f64
}

impl Worker {
    pub fn new(store: Store, config: PurgeConfig, wake: Arc<Notify>) -> anyhow::Result<Self> {
        let client = cdn::http_client(&config)?;
        Ok(Self {
            store,
            client,
            config,
            wake,
        })
    }

    /// Loops until the process ends: works off the queue, then sleeps until woken (or a poll interval).
    pub async fn run(self) {
        loop {
            match self.run_once().await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => tracing::error!(error = ?e, "purge worker step failed"),
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), self.wake.notified()).await;
        }
    }

    /// Takes the oldest unfinished invalidation (queued, or interrupted by a restart) and drives
    /// it to completion. Returns its id and final status, or `None` when nothing is queued.
    #[tracing::instrument(skip(self))]
    pub async fn run_once(&self) -> anyhow::Result<Option<(i64, InvalidationStatus)>> {
        let Some((id, settings_json)) = self.store.next_unfinished_invalidation().await? else {
            return Ok(None);
        };
        self.store.mark_running(id).await?;
        let pending = self.store.pending_urls(id).await?;
        match serde_json::from_str::<ProviderSettings>(&settings_json)
            .map_err(anyhow::Error::from)
            .and_then(|s| cdn::build(&s, self.client.clone()))
        {
            Ok(purger) => self.purge_all(purger.as_ref(), pending).await?,
            Err(e) => {
                let reason = format!("provider settings unusable: {e}");
                for url in pending {
                    self.fail(&url, url.attempts, None, reason.clone()).await?;
                }
            }
        }
        let status = self.store.finish_invalidation(id).await?;
        tracing::info!(id, status = %status, "invalidation finished");
        Ok(Some((id, status)))
    }

    async fn purge_all(
        &self,
        purger: &dyn Purger,
        pending: Vec<InvalidationUrl>,
    ) -> anyhow::Result<()> {
        let batch_size = purger.batch_size().max(1);
        let batches: Vec<Vec<InvalidationUrl>> =
            pending.chunks(batch_size).map(<[_]>::to_vec).collect();
        let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(batches)
            .map(|batch| self.purge_batch(purger, batch))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn fail(
        &self,
        url: &InvalidationUrl,
        attempts: i64,
        http_status: Option<u16>,
        reason: String,
    ) -> anyhow::Result<()> {
        let outcome = UrlOutcome {
            status: UrlStatus::Failed,
            attempts,
            http_status: http_status.map(i64::from),
            error: Some(reason),
        };
        Ok(self.store.record_url(url.id, &outcome).await?)
    }

    /// Sends one batch, retrying the URLs that failed transiently until they succeed or run out of attempts.
    async fn purge_batch(
        &self,
        purger: &dyn Purger,
        batch: Vec<InvalidationUrl>,
    ) -> anyhow::Result<()> {
        let mut pending = Vec::new();
        for url in batch {
            match Url::parse(&url.url) {
                Ok(parsed) if url.attempts < i64::from(self.config.max_attempts) => {
                    pending.push((url, parsed))
                }
                Ok(_) => {
                    let reason = url
                        .error
                        .clone()
                        .unwrap_or_else(|| "no attempts left".into());
                    self.fail(
                        &url,
                        url.attempts,
                        url.http_status.map(|s| s as u16),
                        reason,
                    )
                    .await?;
                }
                Err(e) => {
                    self.fail(&url, url.attempts, None, format!("not a URL: {e}"))
                        .await?
                }
            }
        }
        while !pending.is_empty() {
            let urls: Vec<Url> = pending.iter().map(|(_, u)| u.clone()).collect();
            let attempts = purger.purge(&urls).await;
            let mut again = Vec::new();
            let mut wait = Duration::ZERO;
            for ((mut url, parsed), attempt) in pending.into_iter().zip(attempts) {
                url.attempts += 1;
                let outcome = match attempt {
                    Attempt::Done { http_status, note } => UrlOutcome {
                        status: UrlStatus::Succeeded,
                        attempts: url.attempts,
                        http_status: http_status.map(i64::from),
                        error: note,
                    },
                    Attempt::Fail {
                        http_status,
                        reason,
                    } => UrlOutcome {
                        status: UrlStatus::Failed,
                        attempts: url.attempts,
                        http_status: http_status.map(i64::from),
                        error: Some(reason),
                    },
                    Attempt::Retry {
                        http_status,
                        reason,
                        retry_after,
                    } => {
                        let exhausted = url.attempts >= i64::from(self.config.max_attempts);
                        if !exhausted {
                            wait = wait.max(self.config.backoff(
                                url.attempts as u32,
                                retry_after,
                                jitter(),
                            ));
                        }
                        UrlOutcome {
                            status: if exhausted {
                                UrlStatus::Failed
                            } else {
                                UrlStatus::Retrying
                            },
                            attempts: url.attempts,
                            http_status: http_status.map(i64::from),
                            error: Some(if exhausted {
                                format!("{reason} (gave up after {} attempts)", url.attempts)
                            } else {
                                reason
                            }),
                        }
                    }
                };
                self.store.record_url(url.id, &outcome).await?;
                if outcome.status == UrlStatus::Retrying {
                    again.push((url, parsed));
                }
            }
            if !again.is_empty() {
                tokio::time::sleep(wait).await;
            }
            pending = again;
        }
        Ok(())
    }
}
