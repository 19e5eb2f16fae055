//! Accounts kept in memory for the session check of an embedded (SQLite) database.
//!
//! Every logged-in request checks that its user is still enabled and that the session's epoch
//! is still the account's. On SQLite that read is a round trip to the connection's own thread,
//! the largest share of a page served from memory. One process serves an embedded database, and
//! every change of an existing account (role, disabled, password: the epoch) goes through its
//! [`Store`](super::Store), which holds [`UserCache::changing`] until the change is committed:
//! the next request reads the account again, so a disabled user or a new password still ends
//! sessions at once. A read that was under way across such a change is not kept (the
//! generation moved on meanwhile). [`KEEP_FOR`] bounds how long an account is trusted even so.
//!
//! PostgreSQL is not served from here: several instances share it, and a change made through
//! one must end sessions on the others at once.

use super::User;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an account read stays trusted without a change through this process.
pub(super) const KEEP_FOR: Duration = Duration::from_secs(1);

/// Most accounts kept; past that the map starts again (a team has far fewer accounts).
const CAPACITY: usize = 4_096;

#[derive(Debug, Default)]
pub(crate) struct UserCache {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Moves on with every change: a read begun under an older one is not kept.
    generation: u64,
    users: HashMap<i64, (User, Instant)>,
}

impl State {
    /// Nothing kept, or under way, is trusted any more.
    fn forget_all(&mut self) {
        self.generation += 1;
        self.users.clear();
    }
}

impl UserCache {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut state = poisoned.into_inner();
            state.forget_all();
            state
        })
    }

    /// The account with `id` if it was read less than [`KEEP_FOR`] before `now`; otherwise the
    /// generation to hand to [`UserCache::keep`] with the account read from the database.
    pub fn get(&self, id: i64, now: Instant) -> Result<User, u64> {
        let state = self.state();
        match state.users.get(&id) {
            Some((user, read)) if now.saturating_duration_since(*read) < KEEP_FOR => {
                Ok(user.clone())
            }
            _ => Err(state.generation),
        }
    }

    /// Keeps `user`, read at `now` under `generation`, unless an account changed since.
    pub fn keep(&self, generation: u64, user: &User, now: Instant) {
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        if state.users.len() >= CAPACITY {
            state.users.clear();
        }
        state.users.insert(user.id, (user.clone(), now));
    }

    /// An account changed: nothing kept, or under way, is trusted any more.
    fn forget_all(&self) {
        self.state().forget_all();
    }

    /// Held across a change of an account: what was kept is forgotten when the change starts
    /// and again when it ends, whether it ended by returning, failing or being dropped (a
    /// request whose client went away), so no read from before its commit outlives it.
    pub fn changing(&self) -> Changing<'_> {
        self.forget_all();
        Changing(self)
    }
}

/// See [`UserCache::changing`].
pub(crate) struct Changing<'a>(&'a UserCache);

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.0.forget_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;

    fn user(id: i64, epoch: i64) -> User {
        User {
            id,
            username: format!("u{id}"),
            password_hash: String::new(),
            role: Role::User,
            disabled: false,
            session_epoch: epoch,
        }
    }

    #[test]
    fn an_account_is_kept_until_it_changes_or_its_time_is_up() {
        let cache = UserCache::default();
        let now = Instant::now();
        let generation = cache.get(1, now).unwrap_err();
        cache.keep(generation, &user(1, 7), now);
        assert_eq!(cache.get(1, now).unwrap().session_epoch, 7);
        assert!(cache.get(2, now).is_err(), "another account is read");
        assert!(
            cache.get(1, now + KEEP_FOR).is_err(),
            "trusted for KEEP_FOR only"
        );
        drop(cache.changing());
        assert!(cache.get(1, now).is_err(), "a change drops what was kept");
    }

    #[test]
    fn a_read_under_way_across_a_change_is_not_kept() {
        let cache = UserCache::default();
        let now = Instant::now();
        let generation = cache.get(1, now).unwrap_err();
        // The account is disabled while the read of its old row is on its way back.
        let change = cache.changing();
        cache.keep(generation, &user(1, 7), now);
        assert!(cache.get(1, now).is_err());
        // A read made while the change is not yet committed is forgotten when it ends.
        let generation = cache.get(1, now).unwrap_err();
        cache.keep(generation, &user(1, 7), now);
        drop(change);
        assert!(cache.get(1, now).is_err());
    }
}
