//! The session check's database reads, batched: one query for every check waiting.
//!
//! Every logged-in request checks its account (enabled, session epoch) in the database; on
//! PostgreSQL always, because a change made through another instance must end sessions here at
//! once, on SQLite when [`super::user_cache`] has nothing fresh. Under load each of those was
//! its own query, and on a small machine the database server's share of the CPU bounded the
//! pages served from memory (64 connections on one account: one query per page).
//!
//! A check joins the batch that will be read *next*, never one already sent: one reader sends
//! a query for every account waiting, and the checks that arrive meanwhile wait for it to
//! answer and go in the following query. So every check is answered by a query sent after it
//! began, exactly as if it had sent its own, and a change committed before a request started
//! is always seen. A check waits at most for the query in flight plus its own.
//!
//! The reader is a task of its own, so a request dropped mid-check (a client gone) cannot
//! leave the others waiting. If a batch's query fails, each of its checks reads for itself and
//! gets its own error.

use super::{Pool, User};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The account (`None`: no such account), or `Err(())` when the batch's query failed.
type Answer = std::result::Result<Option<User>, ()>;

#[derive(Debug, Default)]
pub(crate) struct AccountReads {
    waiting: Mutex<Waiting>,
    /// Queries sent, for [`super::Store::session_reads`].
    sent: AtomicU64,
}

#[derive(Debug, Default)]
struct Waiting {
    /// The checks for the next query, by account.
    checks: HashMap<i64, Vec<oneshot::Sender<Answer>>>,
    /// A reader task is running: it takes [`Waiting::checks`] when its query in flight is done.
    reading: bool,
}

impl AccountReads {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // Nothing in the map outlives a panic's harm: a sender dropped is a check that reads
        // for itself.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the next query that reads account `id`; `Err(())` if it failed (or the
    /// reader is gone), and the caller should read for itself.
    pub async fn read(self: &Arc<Self>, pool: &Pool, id: i64) -> Answer {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut waiting = self.waiting();
            waiting.checks.entry(id).or_default().push(tx);
            !std::mem::replace(&mut waiting.reading, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).reader(pool.clone()));
        }
        rx.await.unwrap_or(Err(()))
    }

    /// Queries sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Sends one query for every check waiting, until none is.
    async fn reader(self: Arc<Self>, pool: Pool) {
        let mut stopped = Stopped {
            reads: &self,
            done: false,
        };
        loop {
            let checks = {
                let mut waiting = self.waiting();
                if waiting.checks.is_empty() {
                    waiting.reading = false;
                    stopped.done = true;
                    return;
                }
                std::mem::take(&mut waiting.checks)
            };
            self.sent.fetch_add(1, Ordering::Relaxed);
            let ids: Vec<i64> = checks.keys().copied().collect();
            let users = super::users::read_accounts(&pool, &ids).await;
            let mut users: HashMap<i64, User> = match users {
                Ok(users) => users.into_iter().map(|u| (u.id, u)).collect(),
                Err(error) => {
                    tracing::warn!(%error, accounts = ids.len(), "session check: batch read failed");
                    for tx in checks.into_values().flatten() {
                        let _ = tx.send(Err(()));
                    }
                    continue;
                }
            };
            for (id, txs) in checks {
                let user = users.remove(&id);
                for tx in txs {
                    let _ = tx.send(Ok(user.clone()));
                }
            }
        }
    }
}

/// A reader stopped before it was done (it panicked, or its runtime shut down): its checks
/// read for themselves, and the next check starts another reader.
struct Stopped<'a> {
    reads: &'a AccountReads,
    done: bool,
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut waiting = self.reads.waiting();
            waiting.checks.clear();
            waiting.reading = false;
        }
    }
}
