//! The purge worker: takes queued invalidations, drives a provider, records each URL's outcome.

use crate::cdn::{
    self, Attempt, Batch, BoxFuture, Context, Measured, Poll, ProviderSnapshot, PurgeConfig,
    Purger, Scope,
};
use crate::domain::settings::Settings;
use crate::domain::url_list::HostPolicy;
use crate::store::{
    ClaimedInvalidation, InvalidationStatus, InvalidationUrl, NewBatch, PendingPage, Store,
    UrlOutcome, UrlStatus, now_millis,
};
use argon2::password_hash::rand_core::{OsRng, RngCore};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use url::Url;

/// Runs purges in the background of the web process. Tests can drive [`Worker::run_once`].
///
/// Several workers (one per instance) may share one database: each claims an invalidation
/// with a lease it keeps renewing, sends only while it holds it, and gives it up when done.
#[derive(Clone)]
pub struct Worker {
    store: Store,
    config: PurgeConfig,
    /// The HTTP client and settings purgers are built with, made when first needed: an
    /// instance that has not sent anything yet has not loaded TLS (OpenSSL's initialisation
    /// alone is 2.4 MB of the idle process's memory).
    ctx: Arc<std::sync::OnceLock<Context>>,
    wake: Arc<Notify>,
    /// This worker's name in leases: unique per process.
    owner: String,
    lease: Arc<tokio::sync::Mutex<Leases>>,
    /// When providers were last asked about requests in progress.
    last_poll: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// What the last lease renewal found.
#[derive(Default)]
struct Leases {
    renewed_at: i64,
    held: HashSet<i64>,
}

/// Writes URL outcomes in group commits from its own task: many URLs per transaction, a few
/// transactions per second, while requests keep flowing. Crash safety holds: an outcome is
/// only recorded after its request was answered, and a URL sent but not yet recorded is
/// still pending, so it is simply sent again after a crash.
struct Recorder {
    sender: tokio::sync::mpsc::Sender<Record>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// What the recorder's task is sent, in order.
enum Record {
    Outcome(i64, UrlOutcome),
    /// Write everything sent so far now, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Recorder {
    /// Most outcomes per transaction, and the longest an outcome waits for its group.
    const GROUP: usize = 4_000;
    const LINGER: Duration = Duration::from_millis(100);
    /// Outcomes waiting beyond the group being written: sending waits only when the database
    /// falls this far behind, which also bounds what a crash makes the next worker send again.
    const BACKLOG: usize = 2 * Self::GROUP;

    fn start(store: Store) -> Self {
        let (sender, mut receiver) = tokio::sync::mpsc::channel(Self::BACKLOG);
        let task = tokio::spawn(async move {
            let mut group = Vec::with_capacity(Self::GROUP);
            while let Some(first) = receiver.recv().await {
                let mut flushed = Vec::new();
                let mut next = Some(first);
                let deadline = tokio::time::Instant::now() + Self::LINGER;
                while let Some(record) = next.take() {
                    match record {
                        Record::Outcome(id, outcome) => group.push((id, outcome)),
                        Record::Flush(done) => flushed.push(done),
                    }
                    if group.len() >= Self::GROUP || !flushed.is_empty() {
                        break;
                    }
                    if let Ok(Some(record)) =
                        tokio::time::timeout_at(deadline, receiver.recv()).await
                    {
                        next = Some(record);
                    }
                }
                if !group.is_empty() {
                    store.record_urls(&group).await?;
                    group.clear();
                }
                for done in flushed {
                    let _ = done.send(());
                }
            }
            Ok(())
        });
        Self { sender, task }
    }

    async fn send(&self, record: Record) -> anyhow::Result<()> {
        self.sender
            .send(record)
            .await
            .map_err(|_| anyhow::anyhow!("the outcome recorder stopped"))
    }

    async fn record(&self, url_id: i64, outcome: UrlOutcome) -> anyhow::Result<()> {
        self.send(Record::Outcome(url_id, outcome)).await
    }

    /// Records `outcomes` after everything sent before them, and returns once all are written.
    async fn record_now(&self, outcomes: Vec<(i64, UrlOutcome)>) -> anyhow::Result<()> {
        for (id, outcome) in outcomes {
            self.record(id, outcome).await?;
        }
        let (done, written) = tokio::sync::oneshot::channel();
        self.send(Record::Flush(done)).await?;
        written
            .await
            .map_err(|_| anyhow::anyhow!("the outcome recorder stopped"))
    }

    /// Writes what is still queued and ends the task.
    async fn finish(self) -> anyhow::Result<()> {
        drop(self.sender);
        self.task.await?
    }
}

/// A row to send and, unless it is a tag, its URL (a URL, a prefix, a site's root).
type Item = (InvalidationUrl, Option<Url>);

/// URLs read from the database at a time while sending (see [`Worker::send_all`]).
const PAGE_OF_URLS: i64 = 2_000;

/// What of a sent batch goes again: URLs to retry after `wait`, and URLs the cache never got
/// to, at once.
struct Resend {
    again: Vec<Item>,
    wait: Duration,
    unanswered: Vec<Item>,
}

/// `urls` split into the provider's batches, in order.
fn batches(purger: &dyn Purger, scope: Scope, urls: Vec<Item>) -> Vec<Vec<Item>> {
    if urls.is_empty() {
        return Vec::new();
    }
    let sizes = if scope == Scope::Urls {
        let parsed: Vec<Url> = urls.iter().filter_map(|(_, u)| u.clone()).collect();
        purger.batch_sizes(&parsed)
    } else {
        let size = purger.batch_size(scope).max(1);
        vec![size; urls.len().div_ceil(size)]
    };
    let mut rest = urls.into_iter();
    let mut out: Vec<Vec<_>> = sizes
        .into_iter()
        .map(|size| rest.by_ref().take(size.max(1)).collect::<Vec<_>>())
        .filter(|batch| !batch.is_empty())
        .collect();
    let leftover: Vec<_> = rest.collect();
    if !leftover.is_empty() {
        out.push(leftover);
    }
    out
}

fn jitter() -> f64 {
    OsRng.next_u32() as f64 / u32::MAX as f64
}

/// What one attempt at a URL leads to: its next state, and whether to send it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub status: UrlStatus,
    pub http_status: Option<i64>,
    pub error: Option<String>,
    /// Send again after at least this long (when the provider said so), after a backoff.
    pub retry_after: Option<Option<Duration>>,
}

/// The pure rule from a provider's answer for a URL to the URL's next state. `attempts` counts
/// this attempt; `recorded_batch` says the accepted request was recorded (and can be polled).
pub fn transition(
    attempt: Attempt,
    attempts: i64,
    max_attempts: u32,
    recorded_batch: bool,
) -> Transition {
    let (status, http_status, error, retry_after) = match attempt {
        Attempt::Done { http_status, note } => (UrlStatus::Succeeded, http_status, note, None),
        Attempt::Pending { http_status } if recorded_batch => {
            (UrlStatus::Submitted, http_status, None, None)
        }
        // Nothing to poll: the provider's acceptance is all there will be.
        Attempt::Pending { http_status } => (UrlStatus::Succeeded, http_status, None, None),
        Attempt::Fail {
            http_status,
            reason,
        } => (UrlStatus::Failed, http_status, Some(reason), None),
        Attempt::Retry {
            http_status,
            reason,
            ..
        } if attempts >= i64::from(max_attempts) => (
            UrlStatus::Failed,
            http_status,
            Some(format!("{reason} (gave up after {attempts} attempts)")),
            None,
        ),
        Attempt::Retry {
            http_status,
            reason,
            retry_after,
        } => (
            UrlStatus::Retrying,
            http_status,
            Some(reason),
            Some(retry_after),
        ),
        Attempt::Unanswered { reason } => (UrlStatus::Retrying, None, Some(reason), Some(None)),
    };
    Transition {
        status,
        http_status: http_status.map(i64::from),
        error,
        retry_after,
    }
}

/// Requests of an invalidation timed for estimates: the first ones, sent while the provider's
/// limits (full buckets) do not hold them back.
const MEASURED_REQUESTS: usize = 8;

/// True when the provider (or cache) answered, whatever it said.
fn answered(attempt: &Attempt) -> bool {
    match attempt {
        Attempt::Done { .. } | Attempt::Pending { .. } => true,
        Attempt::Retry { http_status, .. } | Attempt::Fail { http_status, .. } => {
            http_status.is_some()
        }
        Attempt::Unanswered { .. } => false,
    }
}

/// The median request time and the mean URLs per request of `timings`.
fn measure(timings: &[(f64, usize)]) -> Option<Measured> {
    if timings.is_empty() {
        return None;
    }
    let mut times: Vec<f64> = timings.iter().map(|t| t.0).collect();
    times.sort_by(f64::total_cmp);
    let urls = timings.iter().map(|t| t.1 as f64).sum::<f64>() / timings.len() as f64;
    Some(Measured {
        request_ms: times[times.len() / 2].max(0.001),
        urls_per_request: urls.max(1.0),
    })
}

/// When a provider promised a purge would be cleared: acceptance plus its own estimate.
fn promised_at(batch: &crate::store::PurgeBatch) -> Option<i64> {
    batch
        .estimated_seconds
        .map(|s| batch.created_at + s.max(0) * 1000)
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
    /// The provider's name, for metrics.
    provider: String,
    /// How long the first requests took and how many URLs each carried (for estimates).
    timings: std::sync::Mutex<Vec<(f64, usize)>>,
    purger: &'a dyn Purger,
    policy: &'a HostPolicy,
    /// What the rows are.
    scope: Scope,
}

impl Worker {
    pub fn new(store: Store, config: PurgeConfig, wake: Arc<Notify>) -> anyhow::Result<Self> {
        let owner = format!("worker-{}-{:08x}", std::process::id(), OsRng.next_u32());
        Ok(Self {
            store,
            config,
            ctx: Arc::default(),
            wake,
            owner,
            lease: Arc::default(),
            last_poll: Arc::default(),
        })
    }

    /// This worker's name in the database's leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Renews every lease this worker holds and notes which invalidations it still holds.
    async fn renew(&self, leases: &mut Leases) -> anyhow::Result<()> {
        let now = now_millis();
        let held = self
            .store
            .renew_leases(&self.owner, self.config().lease)
            .await?;
        leases.renewed_at = now;
        leases.held = held.into_iter().collect();
        Ok(())
    }

    /// True while this worker may send for invalidation `id`: it held the lease at the last
    /// renewal and that renewal has not run out. Renews first when a renewal is due (a worker
    /// driven by tests has no heartbeat task).
    async fn holds(&self, id: i64) -> anyhow::Result<bool> {
        let lease = self.config().lease.as_millis() as i64;
        let mut leases = self.lease.lock().await;
        if now_millis() - leases.renewed_at >= lease / 3 {
            self.renew(&mut leases).await?;
        }
        // The lease must outlast a request sent now, even one that runs into its timeout.
        let in_flight = self.config().timeout.as_millis() as i64;
        Ok(leases.held.contains(&id) && now_millis() + in_flight < leases.renewed_at + lease)
    }

    /// Renews this worker's leases every third of the lease, while the process lives.
    async fn heartbeat(self) {
        let every = self.config().lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let mut leases = self.lease.lock().await;
            if let Err(e) = self.renew(&mut leases).await {
                tracing::warn!(error = ?e, "lease renewal failed; sending stops until it succeeds");
            }
        }
    }

    fn config(&self) -> &PurgeConfig {
        &self.config
    }

    /// Runs [`Worker::run`] on a thread of its own with a single-threaded runtime, until the
    /// runtime that called this shuts down. Sending is a stream of small requests: on one
    /// thread, the HTTP client's connection tasks and the sends that wait on them wake each
    /// other without crossing threads (cross-thread wake-ups were most of the cost), and the
    /// web server's threads stay free for pages.
    pub fn spawn(self) -> std::io::Result<()> {
        let (keep, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("purge-worker".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(error = ?e, "the purge worker cannot start");
                        return;
                    }
                };
                runtime.block_on(async {
                    tokio::select! {
                        () = self.run() => {}
                        _ = stopped => {}
                    }
                });
            })?;
        // Dropped with the calling runtime (a test's, or the process's at exit): stops the worker.
        tokio::spawn(async move {
            let _keep = keep;
            std::future::pending::<()>().await
        });
        Ok(())
    }

    /// Loops until the process ends: sends queued invalidations one after the other, asks
    /// providers about requests in progress every poll interval, and sleeps until woken.
    pub async fn run(self) {
        tokio::spawn(self.clone().heartbeat());
        loop {
            match self.run_once().await {
                // Sent one: look for the next at once (one waiting on its provider is not picked again).
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => tracing::error!(error = ?e, "purge worker step failed"),
            }
            let mut nap = self.config().poll_interval.min(Duration::from_secs(2));
            // A provider's promised clearing time is honoured on time, not at the next poll.
            if let Ok(Some(due)) = self.store.next_promise().await {
                nap = nap.min(Duration::from_millis((due - now_millis()).max(0) as u64));
            }
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
        let Some(claimed) = self
            .store
            .claim_invalidation(&self.owner, self.config().lease)
            .await?
        else {
            return Ok(None);
        };
        let id = claimed.id;
        self.lease.lock().await.held.insert(id);
        let sent = self.send(&claimed).await;
        // Sending is over (or failed): what the provider still finishes is polled by any worker.
        self.store.release_invalidation(id, &self.owner).await?;
        sent?;
        let status = self.finish(id).await?;
        Ok(Some((id, status)))
    }

    /// Sends the URLs still to send of a claimed invalidation.
    async fn send(&self, claimed: &ClaimedInvalidation) -> anyhow::Result<()> {
        let id = claimed.id;
        // Settings may have changed since this was queued: purge only what is still allowed.
        let mut policy = Settings::parse(&self.store.load_settings().await?)
            .map(|s| s.host_policy())
            .map_err(|e| anyhow::anyhow!("stored settings do not parse: {e:?}"))?;
        // A provider that serves only some hosts (CloudFront) allows them as the page did.
        if let Some((hosts, who)) =
            serde_json::from_str::<ProviderSnapshot>(&claimed.provider_settings)
                .ok()
                .and_then(|s| s.kind().and_then(|k| k.served_hosts(&s.values)))
        {
            policy = policy.served_only(hosts, who);
        }
        let ctx = self.ctx()?;
        match self.purger(ctx, &claimed.provider_settings).await {
            Ok(purger) => {
                let provider = serde_json::from_str::<ProviderSnapshot>(&claimed.provider_settings)
                    .map(|s| s.provider)
                    .unwrap_or_default();
                let run = Run {
                    id,
                    provider,
                    timings: std::sync::Mutex::default(),
                    purger: purger.as_ref(),
                    policy: &policy,
                    scope: claimed.scope,
                };
                let sent = self.purge_all(&run).await;
                let timings = std::mem::take(&mut *run.timings.lock().expect("timings"));
                // The first requests measure the provider when Test connection never did; later
                // ones leave the measure alone, so history keeps correcting the same model.
                if let (Some(measured), Ok(snapshot)) = (
                    measure(&timings),
                    serde_json::from_str::<ProviderSnapshot>(&claimed.provider_settings),
                ) && self
                    .store
                    .load_measured(&snapshot.provider)
                    .await?
                    .is_none()
                {
                    self.store
                        .save_measured(&snapshot.provider, measured)
                        .await?;
                }
                sent
            }
            Err(e) => {
                let reason = format!("provider settings unusable: {e}");
                Ok(self.store.fail_unfinished_urls(id, &reason).await?)
            }
        }
    }

    /// The HTTP client and settings to build purgers with (see [`Worker::ctx`]'s field). A
    /// client that cannot be made is this worker's error, never the URLs' failure.
    fn ctx(&self) -> anyhow::Result<&Context> {
        if let Some(ctx) = self.ctx.get() {
            return Ok(ctx);
        }
        let client = cdn::http_client(&self.config)?;
        Ok(self.ctx.get_or_init(|| Context {
            client,
            config: self.config.clone(),
        }))
    }

    /// The purger for an invalidation's provider snapshot, with the current credentials.
    async fn purger(&self, ctx: &Context, snapshot_json: &str) -> anyhow::Result<Box<dyn Purger>> {
        let secrets = self.store.load_secrets().await?;
        serde_json::from_str::<ProviderSnapshot>(snapshot_json)
            .map_err(anyhow::Error::from)
            .and_then(|s| s.build(&secrets, ctx))
    }

    /// Closes the invalidation if nothing is left to send or wait for.
    async fn finish(&self, id: i64) -> anyhow::Result<InvalidationStatus> {
        let status = self.store.finish_invalidation(id).await?;
        if status.is_finished() {
            tracing::info!(id, status = %status, "invalidation finished");
            if let Some(inv) = self.store.get_invalidation(id).await?
                && let Some(finished) = inv.finished_at
            {
                metrics::histogram!(
                    "cdn_invalidation_duration_seconds",
                    "provider" => inv.provider.clone()
                )
                .record((finished - inv.created_at).max(0) as f64 / 1000.0);
            }
            self.check_cache_if_small(id).await?;
        }
        Ok(status)
    }

    /// Starts *Check the cache* for a finished invalidation of at most
    /// `check_cache_up_to` URLs with some purged.
    async fn check_cache_if_small(&self, id: i64) -> anyhow::Result<()> {
        let limit = self.config().check_cache_up_to;
        if limit == 0 {
            return Ok(());
        }
        let Some(inv) = self.store.get_invalidation(id).await? else {
            return Ok(());
        };
        // A tag or prefix is checked by the template URLs it clears: those are what count.
        let urls = match inv.scope {
            Scope::Urls => inv.total,
            Scope::Tags | Scope::Prefixes => self.store.covered_urls(id, 0).await?.1,
            Scope::Everything => 0,
        };
        if urls as usize <= limit
            && urls > 0
            && inv.succeeded > 0
            && let Err(e) = crate::cache_check::start(&self.store, inv.created_by, id).await
        {
            tracing::warn!(id, error = %e, "cache check not started");
        }
        Ok(())
    }

    /// Asks the providers about every request still in progress, for every running
    /// invalidation (the one being sent included), and closes those with nothing left. At most once per poll interval
    /// unless `now` (a full cap on work in progress needs the answer before sending more).
    async fn poll_all(&self, now: bool) -> anyhow::Result<()> {
        let poll_due = {
            let mut last = self.last_poll.lock().expect("poll clock");
            let due = now || last.is_none_or(|t| t.elapsed() >= self.config().poll_interval);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        // Between polls, only a provider's promise that has come due needs a look.
        if !poll_due {
            let promise = self.store.next_promise().await?;
            if promise.is_none_or(|due| due > now_millis()) {
                return Ok(());
            }
        }
        for (id, snapshot_json) in self.store.running_invalidations().await? {
            match self.purger(self.ctx()?, &snapshot_json).await {
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

    /// Sends every URL still to send of a run. Up to `concurrency` requests are in flight; a
    /// request waiting out its backoff or `Retry-After` holds no slot, so waiting URLs never
    /// stop others from being sent. Outcomes of requests without a provider receipt (HTTP
    /// PURGE) go to a [`Recorder`] that commits them in groups, so sending never waits for the
    /// database.
    async fn purge_all(&self, run: &Run<'_>) -> anyhow::Result<()> {
        let recorder = Recorder::start(self.store.clone());
        let sent = self.send_all(run, &recorder).await;
        // Whatever happened, what was learnt is written before the run ends.
        let recorded = recorder.finish().await;
        sent.and(recorded)
    }

    /// The URLs of `rows` that can be sent, parsed; the others are recorded failed with the
    /// reason.
    async fn sendable(
        &self,
        run: &Run<'_>,
        rows: Vec<InvalidationUrl>,
        recorder: &Recorder,
    ) -> anyhow::Result<Vec<Item>> {
        let mut ready = Vec::with_capacity(rows.len());
        for url in rows {
            // A tag is sent as it is; every other row is a URL (a prefix, a site's root).
            let parsed = if run.scope == Scope::Tags {
                Ok(None)
            } else {
                Url::parse(&url.url).map(Some)
            };
            let refused = match parsed {
                Ok(Some(parsed)) if !run.policy.allows(&parsed) => Some((
                    None,
                    "not sent: its host is no longer the publish server or an allowed host".into(),
                )),
                Ok(parsed) if url.attempts < i64::from(self.config().max_attempts) => {
                    ready.push((url, parsed));
                    continue;
                }
                Ok(_) => Some((
                    url.http_status,
                    url.error
                        .clone()
                        .unwrap_or_else(|| "no attempts left".into()),
                )),
                Err(e) => Some((None, format!("not a URL: {e}"))),
            };
            if let Some((http_status, reason)) = refused {
                let outcome = UrlOutcome {
                    status: UrlStatus::Failed,
                    attempts: url.attempts,
                    http_status,
                    error: Some(reason),
                    batch_id: None,
                };
                recorder.record(url.id, outcome).await?;
            }
        }
        Ok(ready)
    }

    async fn send_all(&self, run: &Run<'_>, recorder: &Recorder) -> anyhow::Result<()> {
        let mut queue: VecDeque<Vec<Item>> = VecDeque::new();
        // The URLs are read a page at a time while requests are in flight: the first purge
        // leaves once one page is read, not all 50,000 URLs (which took longer than two
        // seconds' worth of Akamai's sped-up buckets). The last batch of a page waits for the
        // next page, so pages do not cut batches short.
        let mut carried: Vec<Item> = Vec::new();
        let read = |after| self.store.pending_urls_page(run.id, after, PAGE_OF_URLS);
        let mut reading: Option<BoxFuture<'_, crate::store::Result<PendingPage>>> =
            Some(Box::pin(read(None)));
        // A provider with a cap on work in progress is fed one batch at a time.
        let concurrency = if run.purger.max_pending_for(run.scope).is_some() {
            1
        } else {
            self.config().concurrency.max(1)
        };
        // Requests waiting to be sent again, earliest first.
        let mut waiting: BTreeMap<(tokio::time::Instant, u64), Vec<Item>> = BTreeMap::new();
        let mut sequence = 0u64;
        let mut in_flight = FuturesUnordered::new();
        loop {
            let now = tokio::time::Instant::now();
            while let Some(entry) = waiting.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                queue.push_back(entry.remove());
            }
            while in_flight.len() < concurrency
                && let Some(batch) = queue.pop_front()
            {
                in_flight.push(self.send_batch(run, batch, recorder));
            }
            let next_due = waiting.keys().next().map(|(at, _)| *at);
            if in_flight.is_empty() && reading.is_none() {
                match next_due {
                    None => return Ok(()),
                    Some(at) => {
                        tokio::time::sleep_until(at).await;
                        continue;
                    }
                }
            }
            tokio::select! {
                Some(result) = in_flight.next() => {
                    let resend = result?;
                    // Batched anew: the provider may want smaller batches now (a purge node
                    // that hangs is sent one URL per request).
                    let now = tokio::time::Instant::now();
                    for (due, urls) in [(now, resend.unanswered), (now + resend.wait, resend.again)] {
                        for batch in batches(run.purger, run.scope, urls) {
                            sequence += 1;
                            waiting.insert((due, sequence), batch);
                        }
                    }
                }
                page = async { reading.as_mut().expect("a page is being read").await },
                    if reading.is_some() && queue.len() < concurrency =>
                {
                    let page = page?;
                    let more = page.urls.len() as i64 == PAGE_OF_URLS;
                    reading = more.then(|| Box::pin(read(page.last)) as BoxFuture<'_, _>);
                    carried.extend(self.sendable(run, page.urls, recorder).await?);
                    let mut made = batches(run.purger, run.scope, std::mem::take(&mut carried));
                    if more && let Some(last) = made.pop() {
                        carried = last;
                    }
                    queue.extend(made);
                }
                _ = tokio::time::sleep_until(next_due.unwrap_or(now)), if next_due.is_some() => {}
            }
        }
    }

    /// Waits until `count` more URLs fit under the provider's cap on work in progress.
    async fn wait_for_room(&self, run: &Run<'_>, count: usize) -> anyhow::Result<()> {
        let Some((cap, counted)) = run.purger.max_pending_for(run.scope) else {
            return Ok(());
        };
        loop {
            let in_progress = self.store.count_submitted(&counted).await? as usize;
            if in_progress == 0 || in_progress + count <= cap {
                return Ok(());
            }
            self.poll_all(true).await?;
            tokio::time::sleep(self.config().poll_interval).await;
        }
    }

    /// Sends one batch once and records what became of each URL. Returns the URLs to send
    /// again and how long to wait first.
    async fn send_batch(
        &self,
        run: &Run<'_>,
        pending: Vec<Item>,
        recorder: &Recorder,
    ) -> anyhow::Result<Resend> {
        self.wait_for_room(run, pending.len()).await?;
        // Another worker may have taken this invalidation over (this one stalled past its
        // lease): stop, never send the same URLs from two workers at once.
        if !self.holds(run.id).await? {
            anyhow::bail!("lost the lease on invalidation {}", run.id);
        }
        let (rows, parsed): (Vec<InvalidationUrl>, Vec<Option<Url>>) = pending.into_iter().unzip();
        let batch = Batch {
            scope: run.scope,
            reference: batch_reference(run.id, &rows),
            urls: parsed.iter().flatten().cloned().collect(),
            tags: if run.scope == Scope::Tags {
                rows.iter().map(|r| r.url.clone()).collect()
            } else {
                Vec::new()
            },
        };
        let started = std::time::Instant::now();
        let mut result = run.purger.purge(&batch).await;
        metrics::counter!("cdn_purge_requests_total", "provider" => run.provider.clone())
            .increment(1);
        metrics::histogram!(
            "cdn_provider_request_duration_seconds",
            "provider" => run.provider.clone()
        )
        .record(started.elapsed().as_secs_f64());
        // A request the provider answered tells how long its requests take.
        if result.attempts.iter().any(answered) {
            let mut timings = run.timings.lock().expect("timings");
            if timings.len() < MEASURED_REQUESTS {
                timings.push((started.elapsed().as_secs_f64() * 1000.0, rows.len()));
            }
        }
        if result.attempts.len() != rows.len() {
            let reason = format!(
                "the provider answered for {} of {} URLs",
                result.attempts.len(),
                rows.len()
            );
            result.attempts = vec![
                Attempt::Fail {
                    http_status: None,
                    reason
                };
                rows.len()
            ];
        }
        let batch_id = match &result.receipt {
            Some(receipt) => {
                // Waiting needs something to wait on: a status to poll, or a promised time.
                let waits = result
                    .attempts
                    .iter()
                    .any(|a| matches!(a, Attempt::Pending { .. }))
                    && (receipt.provider_id.is_some() || receipt.estimated_seconds.is_some());
                let new = NewBatch {
                    invalidation_id: run.id,
                    reference: &batch.reference,
                    provider_id: receipt.provider_id.as_deref(),
                    support_id: receipt.support_id.as_deref(),
                    estimated_seconds: receipt.estimated_seconds.map(|s| s as i64),
                    url_count: rows.len() as i64,
                    pending: waits,
                };
                Some((self.store.record_batch(&new).await?, waits))
            }
            None => None,
        };
        let (batch_id, waits) = match batch_id {
            Some((id, waits)) => (Some(id), waits),
            None => (None, false),
        };
        let mut again = Vec::new();
        let mut unanswered = Vec::new();
        let mut outcomes = Vec::with_capacity(rows.len());
        let mut wait = Duration::ZERO;
        for ((mut url, parsed), attempt) in rows.into_iter().zip(parsed).zip(result.attempts) {
            // A request the cache never got to is not one of the URL's attempts: it goes again
            // at once, without the backoff of the request that held it up.
            let counts = !matches!(attempt, Attempt::Unanswered { .. });
            if counts {
                url.attempts += 1;
            }
            let next = transition(attempt, url.attempts, self.config().max_attempts, waits);
            if let Some(retry_after) = next.retry_after
                && counts
            {
                wait = wait.max(
                    self.config()
                        .backoff(url.attempts as u32, retry_after, jitter()),
                );
            }
            metrics::counter!(
                "cdn_urls_total",
                "provider" => run.provider.clone(),
                "outcome" => next.status.as_str()
            )
            .increment(1);
            let outcome = UrlOutcome {
                status: next.status,
                attempts: url.attempts,
                http_status: next.http_status,
                error: next.error,
                batch_id,
            };
            let id = url.id;
            if !counts {
                unanswered.push((url, parsed));
            } else if next.retry_after.is_some() {
                again.push((url, parsed));
            }
            outcomes.push((id, outcome));
        }
        if batch_id.is_some() {
            // URLs that now wait on a provider request are counted against its cap (and
            // polled) at once: written before the next request, after what came before them
            // (an earlier attempt's outcome must never land after this one).
            recorder.record_now(outcomes).await?;
        } else {
            for (id, outcome) in outcomes {
                recorder.record(id, outcome).await?;
            }
        }
        if !again.is_empty() || !unanswered.is_empty() {
            metrics::counter!("cdn_purge_retries_total", "provider" => run.provider.clone())
                .increment((again.len() + unanswered.len()) as u64);
        }
        Ok(Resend {
            again,
            wait,
            unanswered,
        })
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
            // A provider's own promise (Akamai's `estimatedSeconds`): not cleared before it.
            if let Some(due) = promised_at(&batch)
                && now_millis() < due
            {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(after: Option<Duration>) -> Attempt {
        Attempt::Retry {
            http_status: Some(503),
            reason: "HTTP 503".into(),
            retry_after: after,
        }
    }

    #[test]
    fn a_done_purge_succeeds_with_its_note() {
        let t = transition(
            Attempt::Done {
                http_status: Some(404),
                note: Some("was not cached".into()),
            },
            1,
            5,
            false,
        );
        assert_eq!(t.status, UrlStatus::Succeeded);
        assert_eq!(t.http_status, Some(404));
        assert_eq!(t.error.as_deref(), Some("was not cached"));
        assert_eq!(t.retry_after, None);
    }

    #[test]
    fn an_accepted_purge_waits_only_when_its_request_can_be_polled() {
        let pending = || Attempt::Pending {
            http_status: Some(201),
        };
        assert_eq!(
            transition(pending(), 1, 5, true).status,
            UrlStatus::Submitted
        );
        assert_eq!(
            transition(pending(), 1, 5, false).status,
            UrlStatus::Succeeded
        );
    }

    #[test]
    fn a_transient_failure_is_retried_until_the_attempts_run_out() {
        let after = Some(Duration::from_secs(2));
        let t = transition(retry(after), 4, 5, false);
        assert_eq!(t.status, UrlStatus::Retrying);
        assert_eq!(t.retry_after, Some(after));
        assert_eq!(t.error.as_deref(), Some("HTTP 503"));
        let last = transition(retry(after), 5, 5, false);
        assert_eq!(last.status, UrlStatus::Failed);
        assert_eq!(last.retry_after, None);
        assert_eq!(
            last.error.as_deref(),
            Some("HTTP 503 (gave up after 5 attempts)")
        );
    }

    #[test]
    fn a_permanent_failure_fails_at_once() {
        let t = transition(
            Attempt::Fail {
                http_status: Some(403),
                reason: "forbidden".into(),
            },
            1,
            5,
            true,
        );
        assert_eq!(t.status, UrlStatus::Failed);
        assert_eq!(t.retry_after, None);
        assert_eq!(t.http_status, Some(403));
    }
}
