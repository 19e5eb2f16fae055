//! Rules that held only because SQLite has one writer, raced from two stores (two connection
//! pools, as two instances have) on the suite's backend: each must hold on PostgreSQL too.

use crate::helpers::*;
use cdn_invalidator::store::{NewInvalidation, Role, Store};
use futures_util::future::join_all;

/// Two stores on one fresh database of the suite's backend, migrated.
struct Shared {
    a: Store,
    b: Store,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

impl Shared {
    async fn open() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pg = if on_postgres() {
            Some(PgDatabase::create().await)
        } else {
            None
        };
        let url = match &pg {
            Some(db) => db.url.clone(),
            None => format!("sqlite://{}/race.db", dir.path().display()),
        };
        let a = Store::connect(&url).await.unwrap();
        a.migrate().await.unwrap();
        let b = Store::connect(&url).await.unwrap();
        Self {
            a,
            b,
            _dir: dir,
            _pg: pg,
        }
    }

    /// Store `a` for even `i`, `b` for odd: every race is between two pools.
    fn pick(&self, i: usize) -> &Store {
        if i.is_multiple_of(2) {
            &self.a
        } else {
            &self.b
        }
    }
}

#[tokio::test]
async fn racing_first_run_setups_create_exactly_one_admin() {
    let db = Shared::open().await;
    let names: Vec<String> = (0..12).map(|i| format!("first{i}")).collect();
    let created = join_all(
        names
            .iter()
            .enumerate()
            .map(|(i, name)| db.pick(i).create_first_admin(name, "hash")),
    )
    .await;
    let winners = created
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_some())
        .count();
    assert_eq!(winners, 1, "exactly one first admin");
    assert_eq!(db.a.count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    let db = Shared::open().await;
    let x = db.a.create_user("x", "hash", Role::Admin).await.unwrap();
    let y = db.a.create_user("y", "hash", Role::Admin).await.unwrap();
    for round in 0..15 {
        let (dx, dy) = if round % 3 == 2 {
            // Disabling races too: each would leave the other the last admin.
            tokio::join!(db.a.set_disabled(x, true), db.b.set_disabled(y, true))
        } else {
            tokio::join!(db.a.set_role(x, Role::User), db.b.set_role(y, Role::User))
        };
        let (dx, dy) = (dx.unwrap(), dy.unwrap());
        assert!(!(dx && dy), "round {round}: both changes went through");
        assert!(dx || dy, "round {round}: one of them must succeed");
        let admins =
            db.a.list_users()
                .await
                .unwrap()
                .into_iter()
                .filter(|u| u.role == Role::Admin && !u.disabled)
                .count();
        assert_eq!(admins, 1, "round {round}: exactly one enabled admin left");
        // Back to two enabled admins for the next round.
        for id in [x, y] {
            db.a.set_disabled(id, false).await.unwrap();
            assert!(db.a.set_role(id, Role::Admin).await.unwrap());
        }
    }
}

#[tokio::test]
async fn parallel_login_attempts_each_see_the_others() {
    let db = Shared::open().await;
    let attempts =
        join_all((0..20).map(|i| db.pick(i).begin_login_attempt("victim", "198.51.100.7", 0)))
            .await;
    let mut by_user: Vec<i64> = attempts
        .iter()
        .map(|a| a.as_ref().unwrap().by_user)
        .collect();
    by_user.sort_unstable();
    // Counted one after the other: the n-th attempt sees n failures, whichever instance.
    assert_eq!(by_user, (1..=20).collect::<Vec<i64>>());
    let mut by_client: Vec<i64> = attempts
        .iter()
        .map(|a| a.as_ref().unwrap().by_client)
        .collect();
    by_client.sort_unstable();
    assert_eq!(by_client, (1..=20).collect::<Vec<i64>>());
}

#[tokio::test]
async fn concurrent_submits_each_count_the_urls_queued_before_them() {
    let db = Shared::open().await;
    let user = db.a.create_user("u", "hash", Role::User).await.unwrap();
    let aheads = std::sync::Mutex::new(Vec::new());
    let news: Vec<NewInvalidation> = (0..10)
        .map(|i| NewInvalidation {
            created_by: user,
            idempotency_key: format!("{i:032x}"),
            provider: "http_purge".into(),
            provider_settings: "{}".into(),
            urls: (0..100)
                .map(|n| format!("https://server.com/is/image/{i}-{n}"))
                .collect(),
            duplicates_dropped: 0,
            retry_of: None,
            pacing_key: String::new(),
            scope: cdn_invalidator::cdn::Scope::Urls,
            covered: Vec::new(),
        })
        .collect();
    let ids = join_all(news.iter().enumerate().map(|(i, new)| {
        let aheads = &aheads;
        db.pick(i).create_invalidation(new, move |ahead| {
            aheads.lock().unwrap().push(ahead);
            Default::default()
        })
    }))
    .await;
    assert!(ids.iter().all(Result::is_ok));
    let mut seen = aheads.into_inner().unwrap();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..10).map(|i| i * 100).collect::<Vec<i64>>(),
        "each submit saw every URL queued before it"
    );
}

/// `count` invalidations of 3 URLs each, with `pacing_key`.
async fn queue_some(store: &Store, count: usize, pacing_key: &str) -> Vec<i64> {
    let user = match store.find_user_by_name("queuer").await.unwrap() {
        Some(u) => u.id,
        None => store
            .create_user("queuer", "hash", Role::User)
            .await
            .unwrap(),
    };
    let mut ids = Vec::new();
    for i in 0..count {
        let new = NewInvalidation {
            created_by: user,
            idempotency_key: format!("{pacing_key}{i:030x}"),
            provider: "http_purge".into(),
            provider_settings: "{}".into(),
            urls: (0..3)
                .map(|n| format!("https://server.com/is/image/{i}-{n}"))
                .collect(),
            duplicates_dropped: 0,
            retry_of: None,
            pacing_key: pacing_key.into(),
            scope: cdn_invalidator::cdn::Scope::Urls,
            covered: Vec::new(),
        };
        ids.push(
            store
                .create_invalidation(&new, |_| Default::default())
                .await
                .unwrap(),
        );
    }
    ids
}

#[tokio::test]
async fn racing_claims_never_give_one_invalidation_to_two_workers() {
    let db = Shared::open().await;
    let ids = queue_some(&db.a, 8, "").await;
    let lease = std::time::Duration::from_secs(60);
    let owners: Vec<String> = (0..16).map(|i| format!("worker-{i}")).collect();
    let claims = join_all(
        owners
            .iter()
            .enumerate()
            .map(|(i, owner)| db.pick(i).claim_invalidation(owner, lease)),
    )
    .await;
    let mut claimed: Vec<i64> = claims
        .into_iter()
        .filter_map(|c| c.unwrap().map(|c| c.id))
        .collect();
    claimed.sort_unstable();
    assert_eq!(claimed, ids, "each invalidation claimed exactly once");
}

#[tokio::test]
async fn one_worker_at_a_time_sends_to_a_rate_limited_account_until_its_lease_expires() {
    let db = Shared::open().await;
    let ids = queue_some(&db.a, 2, "akamai:akab-one.luna.akamaiapis.net").await;
    let short = std::time::Duration::from_millis(600);
    let first = db.a.claim_invalidation("a", short).await.unwrap().unwrap();
    assert_eq!(first.id, ids[0]);
    assert!(
        db.b.claim_invalidation("b", short).await.unwrap().is_none(),
        "the account is taken while a's lease lives, even for another invalidation"
    );
    // a finished sending the first; it keeps the account while it renews its leases.
    db.a.release_invalidation(first.id, "a").await.unwrap();
    db.a.renew_leases("a", short).await.unwrap();
    assert!(db.b.claim_invalidation("b", short).await.unwrap().is_none());
    // a stops renewing (it died): once the lease has run out, b takes the account over.
    tokio::time::sleep(short + std::time::Duration::from_millis(100)).await;
    let taken = db.b.claim_invalidation("b", short).await.unwrap().unwrap();
    assert_eq!(
        taken.id, ids[0],
        "the oldest with URLs still to send comes first"
    );
    assert!(db.a.claim_invalidation("a", short).await.unwrap().is_none());
}

/// The session check batches its database reads (one query for every check waiting), but a
/// check is never answered by a query sent before it began: an account disabled through
/// another instance (on PostgreSQL; on SQLite one process serves the database, so through the
/// same store) is seen by the next check, even while other checks keep a query in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_check_after_a_change_sees_it_while_other_checks_are_reading() {
    let db = Shared::open().await;
    let changer = if on_postgres() { &db.b } else { &db.a };
    let user = db.a.create_user("u", "hash", Role::User).await.unwrap();
    let _admin =
        db.a.create_user("admin", "hash", Role::Admin)
            .await
            .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (store, stop) = (db.a.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    store.session_user(user).await.unwrap().unwrap();
                }
            })
        })
        .collect();
    let mut epoch = db.a.get_user(user).await.unwrap().unwrap().session_epoch;
    for round in 0..40 {
        let disabled = round % 2 == 0;
        assert!(changer.set_disabled(user, disabled).await.unwrap());
        epoch += 1;
        let seen = db.a.session_user(user).await.unwrap().unwrap();
        assert_eq!(
            (seen.disabled, seen.session_epoch),
            (disabled, epoch),
            "round {round}: the check after the change answered from before it"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    assert!(db.a.session_reads() > 0);
}

/// Many session checks at once share a few queries, and each gets its own account (or none).
#[tokio::test]
async fn session_checks_at_once_share_queries_and_each_gets_its_account() {
    let db = Shared::open().await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            db.a.create_user(&format!("u{i}"), "hash", Role::User)
                .await
                .unwrap(),
        );
    }
    let missing = ids.iter().max().unwrap() + 1_000;
    let asked: Vec<i64> = ids
        .iter()
        .cycle()
        .take(120)
        .copied()
        .chain([missing])
        .collect();
    let before = db.b.session_reads();
    let answers = join_all(asked.iter().map(|&id| db.b.session_user(id))).await;
    for (&id, answer) in asked.iter().zip(answers) {
        let answer = answer.unwrap();
        if id == missing {
            assert!(answer.is_none(), "no account {id}");
        } else {
            let user = answer.unwrap();
            let i = ids.iter().position(|&x| x == id).unwrap();
            assert_eq!((user.id, user.username), (id, format!("u{i}")));
        }
    }
    let sent = db.b.session_reads() - before;
    assert!(
        (1..=3).contains(&sent),
        "{sent} queries for 121 checks at once"
    );
}
