//! Several app processes on one database: shared logins and settings, work claimed with leases
//! (never sent from two instances at once, taken over after a crash), one sender per provider
//! account, and kill -9 in the middle of a 20,000-URL purge (SQLite restart, PostgreSQL take-over).
//!
//! Every test runs the real binary (`serve`), killed (SIGKILL) when its guard is dropped.
//! The multi-instance tests need PostgreSQL whatever `CDN_TEST_DATABASE` says; the second
//! (PostgreSQL) run of the suite skips them, as they already ran in the first.

use crate::helpers::*;
use crate::sim_akamai::{AkamaiSim, edgerc};
use crate::varnish::{Origin, Varnish};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use reqwest::StatusCode;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SERVER: &str = "server.com";

/// True (and says why) in the suite's second, PostgreSQL run: these tests choose their own
/// databases whatever `CDN_TEST_DATABASE` says, so they already ran in the first run.
fn skip_second_run(test: &str) -> bool {
    if on_postgres() {
        println!(
            "{test}: skipped in the CDN_TEST_DATABASE=postgres run (it picks its own databases \
             and ran in the first run)"
        );
        return true;
    }
    false
}

/// One `cdn-invalidator serve` process; SIGKILLed and reaped when dropped.
struct Instance {
    name: &'static str,
    child: Child,
    address: String,
    log: Arc<Mutex<String>>,
}

impl Instance {
    /// Starts the binary on `database_url` with the test secret and `extra` flags, and waits
    /// for its "listening on" line.
    async fn start(name: &'static str, database_url: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cdn-invalidator"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database",
                database_url,
            ])
            .args(extra)
            .env("CDN_INVALIDATOR_SECRET", TEST_SECRET)
            .env("RUST_LOG", "info,sqlx=warn,actix_server=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the app binary starts");
        let (log, rx) = capture_output(&mut child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let address = loop {
            if let Ok(address) = rx.try_recv() {
                break address;
            }
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                panic!(
                    "instance {name} did not start:\n{}",
                    log.lock().unwrap().clone()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Self {
            name,
            child,
            address,
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9, and reap: when this returns the process is gone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A `TestApp` facade, for the helpers that take one (setup, adding users).
    fn app(&self) -> TestApp {
        TestApp {
            address: self.address.clone(),
            metrics_address: None,
            database_url: String::new(),
            dir: tempfile::tempdir().unwrap(),
            postgres: None,
        }
    }

    /// `browser` (its cookie jar) talking to this instance.
    fn with(&self, browser: &Browser) -> Browser {
        Browser {
            base: self.address.clone(),
            client: browser.client.clone(),
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- last log lines of instance {} ---\n{}",
                self.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// What a [`CountingNode`] saw of one URL.
#[derive(Debug, Default, Clone)]
struct Tally {
    count: u32,
    in_flight: u32,
    max_in_flight: u32,
}

#[derive(Default)]
struct NodeState {
    per_url: HashMap<String, Tally>,
    in_flight: u32,
    /// Most requests (any URLs) in flight at once.
    max_in_flight: u32,
    /// Every request's arrival, in order.
    arrivals: Vec<(Instant, String)>,
}

/// A purge node that holds each request for a while (`delay_ms`, varying within the range) and
/// records per URL how often it came and how many requests for it were in flight at once.
#[derive(Clone)]
struct CountingNode {
    port: u16,
    state: Arc<Mutex<NodeState>>,
}

impl CountingNode {
    fn start(delay_ms: (u64, u64)) -> Self {
        let state = Arc::new(Mutex::new(NodeState::default()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = state.clone();
        let sequence = Arc::new(AtomicU64::new(0));
        let server = HttpServer::new(move || {
            let (state, sequence) = (shared.clone(), sequence.clone());
            App::new().default_service(web::to(move |req: HttpRequest| {
                let (state, sequence) = (state.clone(), sequence.clone());
                async move {
                    let key = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    {
                        let mut s = state.lock().unwrap();
                        s.arrivals.push((Instant::now(), key.clone()));
                        let t = s.per_url.entry(key.clone()).or_default();
                        t.count += 1;
                        t.in_flight += 1;
                        t.max_in_flight = t.max_in_flight.max(t.in_flight);
                        s.in_flight += 1;
                        s.max_in_flight = s.max_in_flight.max(s.in_flight);
                    }
                    let (lo, hi) = delay_ms;
                    if hi > 0 {
                        let n = sequence.fetch_add(1, Ordering::Relaxed);
                        let ms = lo + (n.wrapping_mul(7919) % (hi - lo + 1));
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    {
                        let mut s = state.lock().unwrap();
                        s.in_flight -= 1;
                        s.per_url.get_mut(&key).unwrap().in_flight -= 1;
                    }
                    HttpResponse::Ok().body("purged")
                }
            }))
        })
        .workers(2)
        .backlog(1024)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self { port, state }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn received(&self) -> usize {
        self.state.lock().unwrap().arrivals.len()
    }

    fn tallies(&self) -> HashMap<String, Tally> {
        self.state.lock().unwrap().per_url.clone()
    }

    fn arrivals(&self) -> Vec<(Instant, String)> {
        self.state.lock().unwrap().arrivals.clone()
    }

    /// How long after `since` the first request arrived that came at or after it.
    fn first_arrival_after(&self, since: Instant) -> Option<Duration> {
        self.arrivals()
            .iter()
            .find(|(at, _)| *at >= since)
            .map(|(at, _)| at.duration_since(since))
    }

    fn max_in_flight(&self) -> u32 {
        self.state.lock().unwrap().max_in_flight
    }

    /// How many of `paths` have arrived at least once.
    fn distinct_received(&self, paths: &BTreeSet<String>) -> usize {
        let s = self.state.lock().unwrap();
        paths.iter().filter(|p| s.per_url.contains_key(*p)).count()
    }
}

/// The path and query a purge node receives for `url`.
fn path_of(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    u[url::Position::BeforePath..url::Position::AfterQuery].to_string()
}

/// `count` distinct URLs on the publish server, tagged with `tag`.
fn urls(tag: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("https://{SERVER}/is/image/Co/{tag}-{i:05}"))
        .collect()
}

/// Polls `check` every `every` until it returns `Some`, or panics with `what` after `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

/// Polls the JSON view of `id` (its counts: `?urls=none`) until it is finished, then returns
/// it with every URL (`urls` gathered over all pages, following `urls_next`).
async fn wait_finished(b: &Browser, id: i64, limit: Duration) -> serde_json::Value {
    let every = Duration::from_millis(100);
    wait_for(
        &format!("invalidation {id} to finish"),
        limit,
        every,
        || async {
            let json: serde_json::Value = b
                .get_json(&format!("/invalidations/{id}?urls=none"))
                .await
                .json()
                .await
                .unwrap();
            ["succeeded", "partially_failed", "failed"]
                .contains(&json["status"].as_str().unwrap_or_default())
                .then_some(())
        },
    )
    .await;
    let mut json: serde_json::Value = b
        .get_json(&format!("/invalidations/{id}?urls_limit=1000"))
        .await
        .json()
        .await
        .unwrap();
    let mut urls = json["urls"].as_array().cloned().unwrap_or_default();
    let mut next = json["urls_next"].as_str().map(str::to_string);
    while let Some(path) = next {
        let page: serde_json::Value = b.get_json(&path).await.json().await.unwrap();
        urls.extend(page["urls"].as_array().cloned().unwrap_or_default());
        next = page["urls_next"].as_str().map(str::to_string);
    }
    json["urls"] = urls.into();
    json
}

/// What the leases in a PostgreSQL database showed while they were watched.
#[derive(Debug, Default, Clone)]
struct LeaseSamples {
    /// Invalidation id → every worker seen holding its lease.
    invalidation_owners: BTreeMap<i64, BTreeSet<String>>,
    /// Provider account (pacing key) → every worker seen holding its live sender lease.
    sender_owners: BTreeMap<String, BTreeSet<String>>,
    samples: usize,
}

/// Samples the lease columns of a PostgreSQL database every 10 ms until dropped.
struct LeaseWatch {
    samples: Arc<Mutex<LeaseSamples>>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LeaseWatch {
    async fn start(database_url: &str) -> Self {
        let mut conn: sqlx::PgConnection = sqlx::Connection::connect(database_url)
            .await
            .expect("the test database");
        let samples = Arc::new(Mutex::new(LeaseSamples::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, stopped) = (samples.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !stopped.load(Ordering::Relaxed) {
                let now = cdn_invalidator::store::now_millis();
                let held: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT id, lease_owner FROM invalidations
                     WHERE lease_owner IS NOT NULL AND lease_until >= $1",
                )
                .bind(now)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default();
                let senders: Vec<(String, String)> = sqlx::query_as(
                    "SELECT pacing_key, owner FROM sender_leases WHERE lease_until >= $1",
                )
                .bind(now)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default();
                {
                    let mut s = out.lock().unwrap();
                    s.samples += 1;
                    for (id, owner) in held {
                        s.invalidation_owners.entry(id).or_default().insert(owner);
                    }
                    for (key, owner) in senders {
                        s.sender_owners.entry(key).or_default().insert(owner);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Self {
            samples,
            stop,
            task: Some(task),
        }
    }

    async fn finish(mut self) -> LeaseSamples {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.samples.lock().unwrap().clone()
    }
}

impl Drop for LeaseWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Which instance a lease owner (`worker-{pid}-{random}`) is.
fn instance_of<'a>(owner: &str, instances: &[(&'a str, u32)]) -> &'a str {
    let pid: u32 = owner
        .split('-')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected lease owner {owner}"));
    instances
        .iter()
        .find(|(_, p)| *p == pid)
        .map(|(name, _)| *name)
        .unwrap_or_else(|| panic!("lease owner {owner} is no instance of this test"))
}

/// Figures of a purge interrupted by kill -9, counted at the purge node and in the JSON.
#[derive(Debug)]
struct CrashFigures {
    urls: usize,
    /// Requests the killed process sent (before it died).
    by_killed: usize,
    /// Requests the process that went on sent.
    by_survivor: usize,
    /// URLs that reached the node more than once, and the requests beyond the first.
    resent: usize,
    extra_requests: usize,
    /// How long before the kill the earliest first request of a re-sent URL arrived (the
    /// killed process had sent it but not yet recorded its outcome).
    resent_window: Duration,
    /// URLs the survivor sent more than once itself (none should be: every target answers 200).
    survivor_duplicates: usize,
    failed: usize,
    /// URLs not final in the JSON, or never received by the node.
    lost: usize,
}

/// Counts the figures for the URLs of `jsons` (finished invalidations) from the node's
/// arrivals; `by_killed(at, path)` says whether a request was the killed process's, killed at
/// `killed_at`.
fn crash_figures(
    node: &CountingNode,
    jsons: &[serde_json::Value],
    killed_at: Instant,
    by_killed: impl Fn(Instant, &str) -> bool,
) -> CrashFigures {
    let tallies = node.tallies();
    let wanted: BTreeSet<String> = jsons
        .iter()
        .flat_map(|j| j["urls"].as_array().unwrap().iter())
        .map(|u| path_of(u["url"].as_str().unwrap()))
        .collect();
    let (mut by_dead, mut by_survivor) = (0, 0);
    let mut first_arrival: HashMap<String, Instant> = HashMap::new();
    let mut survivor_sends: HashMap<String, u32> = HashMap::new();
    for (at, path) in node.arrivals() {
        first_arrival.entry(path.clone()).or_insert(at);
        if wanted.contains(&path) {
            if by_killed(at, &path) {
                by_dead += 1;
            } else {
                by_survivor += 1;
                *survivor_sends.entry(path).or_default() += 1;
            }
        }
    }
    let survivor_duplicates = survivor_sends.values().filter(|n| **n > 1).count();
    let (mut resent, mut extra_requests, mut never_received) = (0, 0, 0);
    let mut resent_window = Duration::ZERO;
    for path in &wanted {
        match tallies.get(path).map_or(0, |t| t.count) {
            0 => never_received += 1,
            1 => {}
            n => {
                resent += 1;
                extra_requests += n as usize - 1;
                resent_window =
                    resent_window.max(killed_at.saturating_duration_since(first_arrival[path]));
            }
        }
    }
    let (mut failed, mut unfinished) = (0, 0);
    for j in jsons {
        for u in j["urls"].as_array().unwrap() {
            match u["status"].as_str().unwrap() {
                "succeeded" => {}
                "failed" => failed += 1,
                _ => unfinished += 1,
            }
        }
    }
    CrashFigures {
        urls: wanted.len(),
        by_killed: by_dead,
        by_survivor,
        resent,
        extra_requests,
        resent_window,
        survivor_duplicates,
        failed,
        lost: unfinished + never_received,
    }
}

const POLL: Duration = Duration::from_millis(50);

/// The PostgreSQL advisory lock workers take to claim work (`store::Lock::Claim`).
const CLAIM_LOCK: i64 = 0x6364_6e69_0000 + 1;

/// Two instances with the same secret on one PostgreSQL database; `extra` flags for both.
async fn two_instances(db: &PgDatabase, extra: &[&str]) -> (Instance, Instance) {
    let a = Instance::start("A", &db.url, extra).await;
    let b = Instance::start("B", &db.url, extra).await;
    (a, b)
}

#[tokio::test]
async fn a_login_through_one_instance_is_valid_on_another() {
    if skip_second_run("a_login_through_one_instance_is_valid_on_another") {
        return;
    }
    let db = PgDatabase::create().await;
    let (a, b) = two_instances(&db, &[]).await;

    // First-run setup through A: B knows at once that it is done.
    let setup = a.app().admin().await;
    assert_eq!(
        b.app().browser().get("/setup").await.status(),
        StatusCode::NOT_FOUND
    );
    let ursula = a.app().user(&setup, "ursula").await;

    // Log in through A; the same cookie jar is logged in on B (not sent to /login).
    let on_a = a.app().browser();
    assert_eq!(
        on_a.login(ADMIN, ADMIN_PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let on_b = b.with(&on_a);
    for path in ["/invalidations", "/assets", "/settings", "/users"] {
        let r = on_b.get(path).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "GET {path} on B with A's session: {:?}",
            r.headers().get("location")
        );
    }
    assert_eq!(texts(&on_b.page("/settings").await, ".who"), [ADMIN]);
    // Without that cookie B sends the visitor to log in: the 200s above are the session's.
    let r = b.app().browser().get("/invalidations").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login");

    // A form served by A can be posted to B (a load balancer may send the POST anywhere).
    let token = on_a.csrf_from("/settings").await;
    let r = on_b
        .post_form(
            "/settings",
            &[
                ("publish_server", SERVER),
                ("template", "<ID>"),
                ("purge_nodes", ""),
                ("allowed_hosts", ""),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "A's form posted to B");

    // A session ended on A (the user disabled there) is ended on B at once.
    let ursula_on_b = b.with(&ursula);
    assert_eq!(ursula_on_b.get("/assets").await.status(), StatusCode::OK);
    let users = on_a.page("/users").await;
    let id = attr(&users, "tr[data-user=ursula] input[name=user_id]", "value").unwrap();
    let token = on_a.csrf_from("/users").await;
    let r = on_a
        .post_form(
            "/users",
            &[
                ("action", "disable"),
                ("user_id", &id),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = ursula_on_b.get("/assets").await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "disabled on A, still in on B"
    );
    assert_eq!(r.headers()["location"], "/login");
}

#[tokio::test]
async fn settings_saved_on_one_instance_are_used_by_another_at_once() {
    if skip_second_run("settings_saved_on_one_instance_are_used_by_another_at_once") {
        return;
    }
    let db = PgDatabase::create().await;
    let first_node = crate::purge_node::PurgeNode::start(200).await;
    let second_node = crate::purge_node::PurgeNode::start(200).await;
    let (mut a, b) = two_instances(&db, &[]).await;

    // The admin saves everything through A.
    let admin = a.app().admin().await;
    let template = "https://server.com/is/image/Co/<ID>?$product$\n<ID>";
    let r = admin
        .save_settings(SERVER, template, &first_node.base(), "")
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        admin
            .import_csv("id,name\nBackpack_B,Backpack\n")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    let user = b.with(&a.app().user(&admin, "ursula").await);

    // On B: Invalidate CDN is prefilled from A's template; Continue checks A's publish server.
    let (status, page) = user.open_invalidate(&["Backpack_B"]).await;
    assert_eq!(status, StatusCode::OK);
    let list = texts(&page, "textarea[name=urls]").remove(0);
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        [
            "https://server.com/is/image/Co/Backpack_B?$product$",
            "https://server.com/is/image/Backpack_B",
        ]
    );
    let r = user
        .continue_with(&page, "https://elsewhere.com/is/image/Backpack_B")
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let errors = texts(
        &scraper::Html::parse_document(&r.text().await.unwrap()),
        "#url-errors li",
    );
    assert!(
        errors.len() == 1 && errors[0].contains("elsewhere.com"),
        "{errors:?}"
    );
    let r = user.continue_with(&page, &list).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let json = wait_finished(&user, invalidation_id(&r), Duration::from_secs(20)).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    let got: BTreeSet<(String, String)> = first_node
        .received()
        .into_iter()
        .map(|r| (r.method, r.path_and_query))
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([
            ("PURGE".into(), "/is/image/Co/Backpack_B?$product$".into()),
            ("PURGE".into(), "/is/image/Backpack_B".into()),
        ])
    );

    // A new publish server and purge node saved on A hold on B from its next request: only
    // B is left to purge (A is killed), and it purges on the node saved on A.
    let r = admin
        .save_settings("other.com", "<ID>", &second_node.base(), "")
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    a.kill();
    let page = user.page("/invalidate").await;
    let r = user
        .continue_with(&page, "https://server.com/is/image/Backpack_B")
        .await;
    assert_eq!(
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "B still accepts the old publish server"
    );
    let id = user
        .invalidate_urls("https://other.com/is/image/Backpack_B")
        .await;
    let json = wait_finished(&user, id, Duration::from_secs(20)).await;
    assert_eq!(json["status"], "succeeded", "{json}");
    let second: Vec<_> = second_node.received();
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(
        (second[0].path_and_query.as_str(), second[0].host.as_str()),
        ("/is/image/Backpack_B", "other.com")
    );
    assert_eq!(
        first_node.received().len(),
        2,
        "nothing more on the old node"
    );
}

/// The worker (`worker-{pid}-…`) holding invalidation `id`'s lease, once one does.
async fn lease_owner(db: &PgDatabase, id: i64) -> String {
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let what = format!("a worker to claim invalidation {id}");
    let owner = wait_for(&what, Duration::from_secs(20), POLL, || async {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT lease_owner FROM invalidations WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap()
    })
    .await;
    pool.close().await;
    owner
}

#[tokio::test]
async fn two_workers_share_the_queue_and_never_send_a_url_from_both() {
    if skip_second_run("two_workers_share_the_queue_and_never_send_a_url_from_both") {
        return;
    }
    let db = PgDatabase::create().await;
    // Each request is held 20–40 ms, so many are in flight from both instances at once.
    let node = CountingNode::start((20, 40));
    let (a, b) = two_instances(&db, &[]).await;
    let admin = a.app().admin().await;
    let r = admin.save_settings(SERVER, "<ID>", &node.base(), "").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let watch = LeaseWatch::start(&db.url).await;

    // Six invalidations of 500 distinct URLs, queued alternately through A and B.
    let lists: Vec<Vec<String>> = (0..6).map(|n| urls(&format!("q{n}"), 500)).collect();
    let mut ids = Vec::new();
    for (n, list) in lists.iter().enumerate() {
        let through = if n % 2 == 0 { &a } else { &b };
        ids.push(through.with(&admin).invalidate_urls(&list.join("\n")).await);
    }
    let started = Instant::now();
    for &id in &ids {
        let json = wait_finished(&admin, id, Duration::from_secs(45)).await;
        assert_eq!(
            (&json["status"], &json["succeeded"], &json["failed"]),
            (&"succeeded".into(), &500.into(), &0.into()),
            "invalidation {id}"
        );
    }
    let elapsed = started.elapsed();
    let samples = watch.finish().await;

    // Every URL reached the node exactly once, never twice at the same time.
    let tallies = node.tallies();
    for url in lists.iter().flatten() {
        let t = tallies
            .get(&path_of(url))
            .unwrap_or_else(|| panic!("{url} never reached the node"));
        assert_eq!(t.max_in_flight, 1, "{url} was in flight twice at once");
        assert_eq!(t.count, 1, "{url} was sent {} times", t.count);
    }
    // Both sent at the same time (more in flight than one instance's 8), each its own
    // invalidations: every invalidation was held by one worker only.
    let pids = [("A", a.pid()), ("B", b.pid())];
    let mut split: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for &id in &ids {
        let owners = samples
            .invalidation_owners
            .get(&id)
            .unwrap_or_else(|| panic!("invalidation {id} was never seen leased"));
        assert_eq!(owners.len(), 1, "invalidation {id} held by {owners:?}");
        let owner = owners.iter().next().unwrap();
        split.entry(instance_of(owner, &pids)).or_default().push(id);
    }
    println!(
        "two workers, 6 x 500 URLs: {elapsed:.1?}; split {split:?}; most in flight at the node {} (8 per instance); {} lease samples",
        node.max_in_flight(),
        samples.samples
    );
    assert_eq!(split.len(), 2, "both instances sent: {split:?}");
    assert!(node.max_in_flight() > 8, "both sent at the same time");
}

#[tokio::test]
async fn a_killed_instances_invalidation_is_taken_over_when_its_lease_expires() {
    if skip_second_run("a_killed_instances_invalidation_is_taken_over_when_its_lease_expires") {
        return;
    }
    const LEASE: Duration = Duration::from_secs(3);
    const URLS: usize = 3_000;
    let db = PgDatabase::create().await;
    let node = CountingNode::start((10, 20));
    // Both instances run their worker from the start.
    let flags = [
        "--lease-seconds",
        "3",
        "--purge-timeout",
        "1",
        "--purge-concurrency",
        "8",
    ];
    let (a, b) = two_instances(&db, &flags).await;
    let admin = a.app().admin().await;
    let r = admin.save_settings(SERVER, "<ID>", &node.base(), "").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let list = urls("t", URLS);
    let id = admin.invalidate_urls(&list.join("\n")).await;

    // Whichever instance claimed it is killed mid-run; the other must take it over.
    let owner = lease_owner(&db, id).await;
    let pids = [("A", a.pid()), ("B", b.pid())];
    let (mut killed, survivor) = if instance_of(&owner, &pids) == "A" {
        (a, b)
    } else {
        (b, a)
    };
    wait_for(
        "some hundreds of URLs sent",
        Duration::from_secs(30),
        POLL,
        || async { (node.received() >= 600).then_some(()) },
    )
    .await;
    killed.kill();
    let killed_at = Instant::now();
    let on_survivor = survivor.with(&admin);
    let json = wait_finished(&on_survivor, id, Duration::from_secs(40)).await;
    let done_after = killed_at.elapsed();

    assert_eq!(
        (
            &json["status"],
            &json["total"],
            &json["succeeded"],
            &json["failed"]
        ),
        (&"succeeded".into(), &URLS.into(), &URLS.into(), &0.into()),
        "counts after the take-over"
    );
    // Requests that reach the node just after the kill are the dead process's last bytes;
    // the survivor cannot claim before the lease (renewed every second) has run out.
    let cutoff = killed_at + Duration::from_millis(200);
    let figures = crash_figures(&node, std::slice::from_ref(&json), killed_at, |at, _| {
        at < cutoff
    });
    let first_by_survivor = node
        .first_arrival_after(cutoff)
        .map(|after| after + (cutoff - killed_at))
        .expect("the survivor sent");
    println!(
        "take-over after kill -9 ({URLS} URLs, lease {LEASE:?}, {} killed): sent by the killed instance {}, \
         by the survivor {} (first {first_by_survivor:.2?} after the kill, finished {done_after:.1?} after it), \
         re-sent {} URLs ({} extra requests; first sent at most {:.0?} before the kill), failed {}, lost {}",
        killed.name,
        figures.by_killed,
        figures.by_survivor,
        figures.resent,
        figures.extra_requests,
        figures.resent_window,
        figures.failed,
        figures.lost
    );
    assert_eq!(figures.urls, URLS);
    assert_eq!((figures.failed, figures.lost), (0, 0), "{figures:?}");
    assert!(
        figures.by_killed >= 600 && figures.by_survivor > 0,
        "{figures:?}"
    );
    // Only what the dead process had sent but not yet recorded is sent again.
    assert_eq!(figures.survivor_duplicates, 0, "{figures:?}");
    // Not before the lease could have run out (it was renewed every third of it, so it ran
    // at least that long after the kill), and with no manual step soon after (the lease, plus
    // the survivor's 2 s nap, plus slack).
    assert!(
        first_by_survivor >= LEASE / 3,
        "taken over {first_by_survivor:?} after the kill, before the lease ran out"
    );
    assert!(
        first_by_survivor <= LEASE + Duration::from_secs(5),
        "taken over only {first_by_survivor:?} after the kill"
    );
}

#[tokio::test]
async fn one_instance_at_a_time_sends_to_an_akamai_account_and_stays_within_its_budget() {
    if skip_second_run(
        "one_instance_at_a_time_sends_to_an_akamai_account_and_stays_within_its_budget",
    ) {
        return;
    }
    const AKAMAI_HOST: &str = "akab-sim.luna.akamaiapis.net";
    const PUBLISH: &str = "https://images.example.com";
    const PER_INVALIDATION: usize = 720;
    // The simulator keeps Akamai's real buckets (no time scaling, as the app paces at
    // Akamai's documented rates when configured through the settings page).
    let sim = AkamaiSim::start(1.0).await;
    let db = PgDatabase::create().await;
    let (a, b) = two_instances(&db, &[]).await;
    let admin = a.app().admin().await;
    let paste = edgerc(AKAMAI_HOST);
    let base = sim.base();
    let r = admin
        .save_provider(
            PUBLISH,
            "",
            "akamai",
            &[
                ("akamai_edgerc", paste.as_str()),
                ("akamai_base_url", base.as_str()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let watch = LeaseWatch::start(&db.url).await;

    // URLs near the 4 KiB limit: 12 fit in one 50,000-byte request, so 6 invalidations of
    // 720 URLs need 360 requests, against a request bucket of 100 refilled at 50/s. One
    // sender paces them (about 5 s); two senders, each trusting its own full bucket, send as
    // fast as they can (each about 50 requests/s here) and are refused dozens of times.
    let pad = "x".repeat(3_850);
    let lists: Vec<Vec<String>> = (0..6)
        .map(|n| {
            (0..PER_INVALIDATION)
                .map(|i| format!("{PUBLISH}/is/image/Co/k{n}-{i:03}-{pad}"))
                .collect()
        })
        .collect();
    // Everything is queued before either worker may claim: the test holds the claim lock
    // (as a worker does while claiming), so both compete with all 360 requests' worth queued.
    let mut holder: sqlx::PgConnection = sqlx::Connection::connect(&db.url).await.unwrap();
    let mut hold = sqlx::Connection::begin(&mut holder).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CLAIM_LOCK)
        .execute(&mut *hold)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (n, list) in lists.iter().enumerate() {
        let through = if n % 2 == 0 { &a } else { &b };
        ids.push(through.with(&admin).invalidate_urls(&list.join("\n")).await);
    }
    assert!(
        sim.received()
            .iter()
            .all(|r| r.path.contains("rate-limit-status"))
            && watch.samples.lock().unwrap().invalidation_owners.is_empty(),
        "nothing is claimed or sent while the test holds the claim lock (has its key changed?)"
    );
    hold.commit().await.unwrap();
    let started = Instant::now();
    for &id in &ids {
        let json = wait_finished(&admin, id, Duration::from_secs(45)).await;
        assert_eq!(
            (&json["status"], &json["succeeded"], &json["failed"]),
            (&"succeeded".into(), &PER_INVALIDATION.into(), &0.into()),
            "invalidation {id}"
        );
    }
    let elapsed = started.elapsed();
    let samples = watch.finish().await;

    let purges: Vec<_> = sim
        .received()
        .into_iter()
        .filter(|r| r.path == "/ccu/v3/invalidate/url/production")
        .collect();
    let refused = purges.iter().filter(|r| r.status == 429).count();
    let accepted: Vec<&String> = purges
        .iter()
        .filter(|r| r.status == 201)
        .flat_map(|r| r.objects.iter())
        .collect();
    let distinct: BTreeSet<&String> = accepted.iter().copied().collect();
    let pids = [("A", a.pid()), ("B", b.pid())];
    // The account's key names its API host (e.g. `akamai:akab-….akamaiapis.net`).
    let accounts: Vec<&String> = samples.sender_owners.keys().collect();
    let senders: Vec<&str> = samples
        .sender_owners
        .values()
        .flatten()
        .map(|o| instance_of(o, &pids))
        .collect();
    let holders: BTreeSet<&str> = samples
        .invalidation_owners
        .values()
        .flatten()
        .map(|o| instance_of(o, &pids))
        .collect();
    println!(
        "Akamai across two instances: {} purge requests ({refused} answered 429) for {} URLs in {elapsed:.1?}; \
         sender lease held by {senders:?}, invalidations held by {holders:?} ({} lease samples)",
        purges.len(),
        accepted.len(),
        samples.samples
    );
    assert!(purges.len() >= 360, "the requests exceed the bucket");
    assert!(
        accounts.len() == 1 && accounts[0].contains(AKAMAI_HOST),
        "sender leases seen: {accounts:?}"
    );
    // At most the first re-sync (none expected: the sender's pacer knows the whole budget).
    assert!(refused <= 1, "{refused} requests answered 429");
    assert_eq!(
        accepted.len(),
        6 * PER_INVALIDATION,
        "every URL accepted exactly once"
    );
    assert_eq!(distinct.len(), 6 * PER_INVALIDATION);
    // One live sender for the account the whole time, and it sent every invalidation.
    assert_eq!(senders.len(), 1, "sender lease owners {senders:?}");
    assert_eq!(holders.iter().copied().collect::<Vec<_>>(), senders);
}

/// Where the crash tests purge: a real Varnish in front of an origin, and a counting node
/// (every URL is purged on both; the node gives exact per-URL figures).
struct Targets {
    node: CountingNode,
    origin: Origin,
    varnish: Varnish,
}

impl Targets {
    async fn start() -> Self {
        let origin = Origin::start().await;
        let varnish = Varnish::start(origin.port).await;
        Self {
            node: CountingNode::start((0, 0)),
            origin,
            varnish,
        }
    }

    fn purge_nodes(&self) -> String {
        format!(
            "{}\nhttp://127.0.0.1:{}",
            self.node.base(),
            self.varnish.port
        )
    }

    /// Caches `probes` in Varnish as the origin's v1, then moves the origin to v2.
    async fn cache_v1(&self, probes: &[&String]) {
        for url in probes {
            let path = path_of(url);
            self.varnish.fetch(&path, SERVER).await;
            let (body, cache) = self.varnish.fetch(&path, SERVER).await;
            assert!(
                body.starts_with("v1:") && cache == "HIT",
                "{url}: {body} {cache}"
            );
        }
        self.origin.set_version("v2");
    }

    /// Every probe was purged from Varnish: it is fetched anew (v2).
    async fn assert_purged(&self, probes: &[&String]) {
        for url in probes {
            let (body, _) = self.varnish.fetch(&path_of(url), SERVER).await;
            assert!(body.starts_with("v2:"), "{url} still cached: {body}");
        }
    }
}

const CRASH_URLS: usize = 10_000;

/// Waits until the node has had every URL of `lists`, then until every invalidation is finished.
async fn wait_all_done(
    node: &CountingNode,
    lists: &[Vec<String>],
    ids: &[i64],
    b: &Browser,
) -> Vec<serde_json::Value> {
    let paths: BTreeSet<String> = lists.iter().flatten().map(|u| path_of(u)).collect();
    let every = Duration::from_millis(100);
    wait_for(
        "every URL to reach the node",
        Duration::from_secs(60),
        every,
        || async { (node.distinct_received(&paths) == paths.len()).then_some(()) },
    )
    .await;
    let mut jsons = Vec::new();
    for &id in ids {
        jsons.push(wait_finished(b, id, Duration::from_secs(20)).await);
    }
    jsons
}

/// Each invalidation finished with all its URLs succeeded, and none lost or failed.
fn assert_complete(jsons: &[serde_json::Value], figures: &CrashFigures) {
    for json in jsons {
        assert_eq!(
            (
                &json["status"],
                &json["total"],
                &json["succeeded"],
                &json["failed"]
            ),
            (
                &"succeeded".into(),
                &CRASH_URLS.into(),
                &CRASH_URLS.into(),
                &0.into()
            ),
            "invalidation {}",
            json["id"]
        );
        let unfinished: Vec<_> = json["urls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["status"] != "succeeded")
            .collect();
        assert!(unfinished.is_empty(), "{unfinished:?}");
    }
    assert_eq!(figures.urls, 2 * CRASH_URLS);
    assert_eq!((figures.failed, figures.lost), (0, 0), "{figures:?}");
    // Only what the dead process had sent but not yet recorded is sent again.
    assert_eq!(figures.survivor_duplicates, 0, "{figures:?}");
}

#[tokio::test]
async fn kill_9_mid_20000_urls_then_a_restart_on_sqlite_finishes_every_url() {
    if skip_second_run("kill_9_mid_20000_urls_then_a_restart_on_sqlite_finishes_every_url") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/app.db", dir.path().display());
    let targets = Targets::start().await;
    // The default lease (30 s): a restart must not wait for it.
    let mut first = Instance::start("first", &database, &[]).await;
    let admin = first.app().admin().await;
    let r = admin
        .save_settings(SERVER, "<ID>", &targets.purge_nodes(), "")
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let lists = [urls("s0", CRASH_URLS), urls("s1", CRASH_URLS)];
    let probes = [&lists[0][0], &lists[0][CRASH_URLS - 1], &lists[1][5_000]];
    targets.cache_v1(&probes).await;
    let started = Instant::now();
    let mut ids = Vec::new();
    for list in &lists {
        ids.push(admin.invalidate_urls(&list.join("\n")).await);
    }

    let node = &targets.node;
    wait_for("6,000 URLs sent", Duration::from_secs(40), POLL, || async {
        (node.received() >= 6_000).then_some(())
    })
    .await;
    first.kill();
    let killed_at = Instant::now();
    let at_kill = node.received();
    // Not an assertion: lets requests the dead process had written reach the node, so
    // arrivals before the restart are exactly the first process's.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let restarted_at = Instant::now();
    let second = Instance::start("restarted", &database, &[]).await;
    let on_second = second.with(&admin);
    let jsons = wait_all_done(node, &lists, &ids, &on_second).await;
    let elapsed = started.elapsed();

    let figures = crash_figures(node, &jsons, killed_at, |at, _| at < restarted_at);
    let resumed_after = node
        .first_arrival_after(restarted_at)
        .expect("the restarted process sent");
    println!(
        "SQLite, kill -9 at {at_kill} of 20,000 URLs, restart: sent before the kill {}, after the restart {} \
         (first {resumed_after:.2?} after it), re-sent {} URLs ({} extra requests; first sent at most {:.0?} \
         before the kill), failed {}, lost {}; {elapsed:.1?} in all",
        figures.by_killed,
        figures.by_survivor,
        figures.resent,
        figures.extra_requests,
        figures.resent_window,
        figures.failed,
        figures.lost
    );
    assert_complete(&jsons, &figures);
    assert!(
        resumed_after < Duration::from_secs(10),
        "the restart waited {resumed_after:?} (for the old lease?)"
    );
    targets.assert_purged(&probes).await;
}

#[tokio::test]
async fn kill_9_mid_20000_urls_and_the_other_postgres_instance_takes_over() {
    if skip_second_run("kill_9_mid_20000_urls_and_the_other_postgres_instance_takes_over") {
        return;
    }
    let db = PgDatabase::create().await;
    let targets = Targets::start().await;
    let (a, b) = two_instances(&db, &["--lease-seconds", "3", "--purge-timeout", "1"]).await;
    let admin = a.app().admin().await;
    let r = admin
        .save_settings(SERVER, "<ID>", &targets.purge_nodes(), "")
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let lists = [urls("p0", CRASH_URLS), urls("p1", CRASH_URLS)];
    let probes = [
        &lists[0][0],
        &lists[0][CRASH_URLS - 1],
        &lists[1][CRASH_URLS - 1],
    ];
    targets.cache_v1(&probes).await;
    let started = Instant::now();
    let ids = [
        admin.invalidate_urls(&lists[0].join("\n")).await,
        b.with(&admin).invalidate_urls(&lists[1].join("\n")).await,
    ];

    // Each instance sends one of the two; the one A sends is interrupted by kill -9.
    let owners = [
        lease_owner(&db, ids[0]).await,
        lease_owner(&db, ids[1]).await,
    ];
    let pids = [("A", a.pid()), ("B", b.pid())];
    let held: Vec<&str> = owners.iter().map(|o| instance_of(o, &pids)).collect();
    let node = &targets.node;
    wait_for("6,000 URLs sent", Duration::from_secs(40), POLL, || async {
        (node.received() >= 6_000).then_some(())
    })
    .await;
    let (mut a, b) = (a, b);
    a.kill();
    let killed_at = Instant::now();
    let at_kill = node.received();
    let jsons = wait_all_done(node, &lists, &ids, &b.with(&admin)).await;
    let elapsed = started.elapsed();

    let killed_paths: BTreeSet<String> = held
        .iter()
        .zip(&lists)
        .filter(|(holder, _)| **holder == "A")
        .flat_map(|(_, list)| list.iter().map(|u| path_of(u)))
        .collect();
    // B cannot take A's invalidation before its lease (3 s, renewed every second) runs out.
    let cutoff = killed_at + Duration::from_millis(200);
    let figures = crash_figures(node, &jsons, killed_at, |at, path| {
        at < cutoff && killed_paths.contains(path)
    });
    println!(
        "PostgreSQL, kill -9 of A at {at_kill} of 20,000 URLs (invalidations held by {held:?}), B takes over: \
         sent by A {}, by B {}, re-sent {} URLs ({} extra requests; first sent at most {:.0?} before the kill), \
         failed {}, lost {}; {elapsed:.1?} in all",
        figures.by_killed,
        figures.by_survivor,
        figures.resent,
        figures.extra_requests,
        figures.resent_window,
        figures.failed,
        figures.lost
    );
    assert_eq!(
        held.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["A", "B"]),
        "each instance sent one invalidation"
    );
    assert!(figures.by_killed > 0, "A was killed mid-run: {figures:?}");
    assert_complete(&jsons, &figures);
    targets.assert_purged(&probes).await;
    assert_url_counts_kept(&db.url).await;
}
