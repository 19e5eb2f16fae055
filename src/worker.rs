//! The purge worker: takes queued invalidations, drives a provider, records each URL's outcome.

use crate::cdn::{self, Attempt, Batch, Context, Poll, ProviderSnapshot, PurgeConfig, Purger};
use crate::domain::settings::Settings;
use crate::domain::url_list::HostPolicy;
use crate::store::{
    InvalidationStatus, InvalidationUrl, NewBatch, Store, UrlOutcome, UrlStatus, now_millis,
};
use argon2::password_hash::rand_core::{OsRng, RngCore};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use url::Url;

/// Runs purges in the background of the web process. Tests can drive [`Worker::run_once`].
#[derive(Clone)]
pub struct Worker {
    store: Store,
    ctx: Context,
    wake: Arc<Notify>,
    /// When providers were last asked about requests in progress.
    last_poll: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

fn jitter() -> f64 {
    OsRng.next_u32() as f64 / u32::MAX as f64
}

/// A reference that is the same whenever the same URLs of the same invalidation are sent again.
fn batch_reference(invalidation_id: i64, urls: &[InvalidationUrl]) -> String {
    let mut hash = Sha256::new();
    for u in urls {
        hash.update(u.id.to_le_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("cdn-invalidator-{invalidation_id}-{hex}")
}

/// One invalidation being worked on.
struct Run<'a> {
    id: i64,
    created_at: i64,
    purger: &'a dyn Purger,
    policy: &'a HostPolicy,
}

impl Worker {
    pub fn new(store: Store, config: PurgeConfig, wake: Arc<Notify>) -> anyhow::Result<Self> {
        let client = cdn::http_client(&config)?;
        Ok(Self {
            store,
            ctx: Context { client, config },
            wake,
            last_poll: Arc::default(),
        })
    }

    fn config(&self) -> &PurgeConfig {
        &self.ctx.config
    }

    /// Loops until the process ends: sends queued invalidations one after the other, asks
    /// providers about requests in progress every poll interval, and sleeps until woken.
    pub async fn run(self) {
        loop {
            match self.run_once().await {
                // Sent one: look for the next at once (one waiting on its provider is not picked again).
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => tracing::error!(error = ?e, "purge worker step failed"),
            }
            let nap = self.config().poll_interval.min(Duration::from_secs(2));
            let _ = tokio::time::timeout(nap, self.wake.notified()).await;
        }
    }

    /// One step: asks providers about requests still in progress (when a poll is due), then
    /// sends the oldest invalidation with URLs to send (queued, or interrupted by a restart).
    /// Returns its id and status — `running` while its provider is still finishing, which no
    /// longer holds up the invalidations behind it — or `None` when there was nothing to send.
    #[tracing::instrument(skip(self))]
    pub async fn run_once(&self) -> anyhow::Result<Option<(i64, InvalidationStatus)>> {
        self.poll_all(false).await?;
        let Some((id, snapshot_json)) = self.store.next_invalidation_to_send().await? else {
            return Ok(None);
        };
        self.store.mark_running(id).await?;
        let created_at = self
            .store
            .get_invalidation(id)
            .await?
            .map_or_else(now_millis, |i| i.created_at);
        let pending = self.store.pending_urls(id).await?;
        // Settings may have changed since this was queued: purge only what is still allowed.
        let policy = Settings::parse(&self.store.load_settings().await?)
            .map(|s| s.host_policy())
            .map_err(|e| anyhow::anyhow!("stored settings do not parse: {e:?}"))?;
        match self.purger(&snapshot_json).await {
            Ok(purger) => {
                let run = Run {
                    id,
                    created_at,
                    purger: purger.as_ref(),
                    policy: &policy,
                };
                self.purge_all(&run, pending).await?;
            }
            Err(e) => {
                let reason = format!("provider settings unusable: {e}");
                self.store.fail_unfinished_urls(id, &reason).await?;
            }
        }
        let status = self.finish(id).await?;
        Ok(Some((id, status)))
    }

    /// The purger for an invalidation's provider snapshot, with the current credentials.
    async fn purger(&self, snapshot_json: &str) -> anyhow::Result<Box<dyn Purger>> {
        let secrets = self.store.load_secrets().await?;
        serde_json::from_str::<ProviderSnapshot>(snapshot_json)
            .map_err(anyhow::Error::from)
            .and_then(|s| s.build(&secrets, &self.ctx))
    }

    /// Closes the invalidation if nothing is left to send or wait for.
    async fn finish(&self, id: i64) -> anyhow::Result<InvalidationStatus> {
        let status = self.store.finish_invalidation(id).await?;
        if status.is_finished() {
            tracing::info!(id, status = %status, "invalidation finished");
        }
        Ok(status)
    }

    /// Asks the providers about every request still in progress, for every running
    /// invalidation (the one being sent included), and closes those with nothing left. At most once per poll interval
    /// unless `now` (a full cap on work in progress needs the answer before sending more).
    async fn poll_all(&self, now: bool) -> anyhow::Result<()> {
        {
            let mut last = self.last_poll.lock().expect("poll clock");
            if !now && last.is_some_and(|t| t.elapsed() < self.config().poll_interval) {
                return Ok(());
            }
            *last = Some(std::time::Instant::now());
        }
        for (id, snapshot_json) in self.store.running_invalidations().await? {
            match self.purger(&snapshot_json).await {
                Ok(purger) => self.poll_pending(id, purger.as_ref()).await?,
                Err(e) => {
                    let reason = format!("provider settings unusable: {e}");
                    self.store.fail_unfinished_urls(id, &reason).await?;
                }
            }
            self.finish(id).await?;
        }
        Ok(())
    }

    async fn purge_all(&self, run: &Run<'_>, pending: Vec<InvalidationUrl>) -> anyhow::Result<()> {
        let mut ready = Vec::new();
        for url in pending {
            match Url::parse(&url.url) {
                Ok(parsed) if !run.policy.allows(&parsed) => {
                    let reason =
                        "not sent: its host is no longer the publish server or an allowed host"
                            .to_string();
                    self.record(
                        &url,
                        UrlStatus::Failed,
                        url.attempts,
                        None,
                        Some(reason),
                        None,
                    )
                    .await?;
                }
                Ok(parsed) if url.attempts < i64::from(self.config().max_attempts) => {
                    ready.push((url, parsed))
                }
                Ok(_) => {
                    let reason = url
                        .error
                        .clone()
                        .unwrap_or_else(|| "no attempts left".into());
                    self.record(
                        &url,
                        UrlStatus::Failed,
                        url.attempts,
                        url.http_status,
                        Some(reason),
                        None,
                    )
                    .await?;
                }
                Err(e) => {
                    self.record(
                        &url,
                        UrlStatus::Failed,
                        url.attempts,
                        None,
                        Some(format!("not a URL: {e}")),
                        None,
                    )
                    .await?;
                }
            }
        }
        let parsed: Vec<Url> = ready.iter().map(|(_, u)| u.clone()).collect();
        let mut batches = Vec::new();
        let mut rest = ready.into_iter();
        for size in run.purger.batch_sizes(&parsed) {
            batches.push(rest.by_ref().take(size.max(1)).collect::<Vec<_>>());
        }
        let leftover: Vec<_> = rest.collect();
        if !leftover.is_empty() {
            batches.push(leftover);
        }
        // A provider with a cap on work in progress is fed one batch at a time.
        let concurrency = if run.purger.max_pending().is_some() {
            1
        } else {
            self.config().concurrency.max(1)
        };
        let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(batches)
            .map(|batch| self.purge_batch(run, batch))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn record(
        &self,
        url: &InvalidationUrl,
        status: UrlStatus,
        attempts: i64,
        http_status: Option<i64>,
        error: Option<String>,
        batch_id: Option<i64>,
    ) -> anyhow::Result<()> {
        let outcome = UrlOutcome {
            status,
            attempts,
            http_status,
            error,
            batch_id,
        };
        Ok(self.store.record_url(url.id, &outcome).await?)
    }

    /// Waits until `count` more URLs fit under the provider's cap on work in progress.
    async fn wait_for_room(&self, run: &Run<'_>, count: usize) -> anyhow::Result<()> {
        let Some(cap) = run.purger.max_pending() else {
            return Ok(());
        };
        loop {
            let in_progress = self.store.count_submitted_urls().await? as usize;
            if in_progress == 0 || in_progress + count <= cap {
                return Ok(());
            }
            self.poll_all(true).await?;
            tokio::time::sleep(self.config().poll_interval).await;
        }
    }

    /// Sends one batch, retrying the URLs that failed transiently until they succeed or run out of attempts.
    async fn purge_batch(
        &self,
        run: &Run<'_>,
        mut pending: Vec<(InvalidationUrl, Url)>,
    ) -> anyhow::Result<()> {
        while !pending.is_empty() {
            self.wait_for_room(run, pending.len()).await?;
            let rows: Vec<InvalidationUrl> = pending.iter().map(|(u, _)| u.clone()).collect();
            let batch = Batch {
                urls: pending.iter().map(|(_, u)| u.clone()).collect(),
                reference: batch_reference(run.id, &rows),
            };
            let mut result = run.purger.purge(&batch).await;
            if result.attempts.len() != pending.len() {
                let reason = format!(
                    "the provider answered for {} of {} URLs",
                    result.attempts.len(),
                    pending.len()
                );
                result.attempts = vec![
                    Attempt::Fail {
                        http_status: None,
                        reason
                    };
                    pending.len()
                ];
            }
            let batch_id = match &result.receipt {
                Some(receipt) => {
                    let waits = result
                        .attempts
                        .iter()
                        .any(|a| matches!(a, Attempt::Pending { .. }));
                    if let Some(seconds) = receipt.estimated_seconds {
                        let elapsed = (now_millis() - run.created_at).max(0) / 1000;
                        self.store
                            .raise_estimate(run.id, elapsed + seconds as i64)
                            .await?;
                    }
                    let new = NewBatch {
                        invalidation_id: run.id,
                        reference: &batch.reference,
                        provider_id: receipt.provider_id.as_deref(),
                        support_id: receipt.support_id.as_deref(),
                        estimated_seconds: receipt.estimated_seconds.map(|s| s as i64),
                        url_count: pending.len() as i64,
                        pending: waits && receipt.provider_id.is_some(),
                    };
                    Some(self.store.record_batch(&new).await?)
                }
                None => None,
            };
            let mut again = Vec::new();
            let mut outcomes = Vec::with_capacity(pending.len());
            let mut wait = Duration::ZERO;
            for ((mut url, parsed), attempt) in pending.into_iter().zip(result.attempts) {
                url.attempts += 1;
                let (status, http_status, error) = match attempt {
                    Attempt::Done { http_status, note } => {
                        (UrlStatus::Succeeded, http_status, note)
                    }
                    Attempt::Pending { http_status } if batch_id.is_some() => {
                        (UrlStatus::Submitted, http_status, None)
                    }
                    Attempt::Pending { http_status } => (UrlStatus::Succeeded, http_status, None),
                    Attempt::Fail {
                        http_status,
                        reason,
                    } => (UrlStatus::Failed, http_status, Some(reason)),
                    Attempt::Retry {
                        http_status,
                        reason,
                        retry_after,
                    } => {
                        if url.attempts >= i64::from(self.config().max_attempts) {
                            let reason =
                                format!("{reason} (gave up after {} attempts)", url.attempts);
                            (UrlStatus::Failed, http_status, Some(reason))
                        } else {
                            wait = wait.max(self.config().backoff(
                                url.attempts as u32,
                                retry_after,
                                jitter(),
                            ));
                            (UrlStatus::Retrying, http_status, Some(reason))
                        }
                    }
                };
                let http_status = http_status.map(i64::from);
                let outcome = UrlOutcome {
                    status,
                    attempts: url.attempts,
                    http_status,
                    error,
                    batch_id,
                };
                outcomes.push((url.id, outcome));
                if status == UrlStatus::Retrying {
                    again.push((url, parsed));
                }
            }
            self.store.record_urls(&outcomes).await?;
            if !again.is_empty() {
                tokio::time::sleep(wait).await;
            }
            pending = again;
        }
        Ok(())
    }

    /// Asks `purger` once about every pending request of invalidation `id`; a request past the
    /// poll deadline fails its URLs.
    async fn poll_pending(&self, id: i64, purger: &dyn Purger) -> anyhow::Result<()> {
        for batch in self.store.pending_batches(id).await? {
            let waited = Duration::from_millis((now_millis() - batch.created_at).max(0) as u64);
            if waited > self.config().poll_timeout {
                let reason = format!(
                    "the provider did not report {} complete within {} minutes; check it in the provider's console",
                    batch.provider_id.as_deref().unwrap_or("the request"),
                    self.config().poll_timeout.as_secs() / 60
                );
                self.store.fail_batch(batch.id, &reason).await?;
                continue;
            }
            let Some(provider_id) = batch.provider_id.as_deref() else {
                self.store.complete_batch(batch.id).await?;
                continue;
            };
            match purger.poll(provider_id).await {
                Poll::Completed => self.store.complete_batch(batch.id).await?,
                Poll::InProgress => {}
                Poll::Unknown(reason) => {
                    tracing::warn!(provider_id, %reason, "status poll failed; will ask again")
                }
            }
        }
        Ok(())
    }
}
