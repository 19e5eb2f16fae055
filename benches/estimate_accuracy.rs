//! How close the estimate shown at Continue comes to the time clearing really took.
//!
//! For each provider (a real Varnish by HTTP PURGE; Akamai, Cloudflare, Fastly and CloudFront
//! through their loopback simulators with realistic round trips) and each size (10, 1,000 and
//! 10,000 URLs): a fresh install (new database, provider saved, *Test connection* run as the
//! settings page asks), its very first invalidation, then two more of the same size: the third
//! has the first two as history. Each is queued by the application's own `queue_with` (the estimate
//! the page shows) and sent by the real worker loop; *actual* is Continue → finished (for
//! Akamai, its promised clearing time; for CloudFront, `Completed` seen by the status poll).
//! Prints the figures and writes them to BENCHMARKS.md ("Estimate accuracy").
//! Run: `cargo bench --bench estimate_accuracy`.

#[allow(dead_code)]
#[path = "common/report.rs"]
mod report;
#[path = "../tests/api/sim_akamai.rs"]
mod sim_akamai;
#[allow(dead_code)]
#[path = "../tests/api/sim_cloudflare.rs"]
mod sim_cloudflare;
#[allow(dead_code, unused_imports)]
#[path = "../tests/api/sim_cloudfront.rs"]
mod sim_cloudfront;
#[allow(dead_code)]
#[path = "../tests/api/sim_fastly.rs"]
mod sim_fastly;
#[allow(dead_code)]
#[path = "../tests/api/varnish.rs"]
mod varnish;

use cdn_invalidator::cdn::{ProviderSnapshot, PurgeConfig, Scope};
use cdn_invalidator::invalidations::{Queued, queue_with, test_connection};
use cdn_invalidator::store::{ProviderChoice, Role, Store};
use cdn_invalidator::worker::Worker;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

const SIZES: [usize; 3] = [10, 1_000, 10_000];
/// Fresh installs per provider and size: the report gives the median and the spread.
const RUNS: usize = 3;

/// Round trips the simulators add, as a data centre sees the real APIs.
const AKAMAI_LATENCY: Duration = Duration::from_millis(250);
const CLOUDFLARE_LATENCY: Duration = Duration::from_millis(150);
const FASTLY_LATENCY: Duration = Duration::from_millis(30);
const CLOUDFRONT_LATENCY: Duration = Duration::from_millis(400);
/// Akamai's buckets refill this much faster than the real ones (bursts unchanged), so that a
/// second 10,000-URL invalidation right after a first waits seconds, not a minute.
const AKAMAI_SCALE: f64 = 10.0;
/// CloudFront's completion and the status poll run this much faster than real time.
const CLOUDFRONT_SCALE: f64 = 30.0;
/// How long the CloudFront simulator takes to complete an invalidation, before scaling: within
/// the 60–300 s commonly quoted, and not the model's own 120 s.
const CLOUDFRONT_COMPLETION: Duration = Duration::from_secs(90);

const TOKEN: &str = "bench-api-token-0123456789";

fn main() {
    report::main("estimate_accuracy", run);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Provider {
    Varnish,
    Akamai,
    Cloudflare,
    Fastly,
    CloudFront,
}

impl Provider {
    const ALL: [Provider; 5] = [
        Provider::Varnish,
        Provider::Akamai,
        Provider::Cloudflare,
        Provider::Fastly,
        Provider::CloudFront,
    ];

    fn label(self) -> &'static str {
        match self {
            Provider::Varnish => "HTTP PURGE to a local Varnish",
            Provider::Akamai => "Akamai (simulator, 250 ms, buckets ×10)",
            Provider::Cloudflare => "Cloudflare (simulator, 150 ms, 800 URLs/s)",
            Provider::Fastly => "Fastly (simulator, 30 ms)",
            Provider::CloudFront => "CloudFront (simulator, 400 ms, completion 90 s, time ×30)",
        }
    }
}

/// One invalidation: the estimate shown at Continue and what it took.
#[derive(Clone, Copy)]
struct Measure {
    estimated_ms: i64,
    actual_ms: i64,
}

impl Measure {
    fn ratio(self) -> f64 {
        self.estimated_ms as f64 / self.actual_ms.max(1) as f64
    }
}

/// What a provider needs to run: its settings, and the services kept alive while it runs.
struct Install {
    provider: &'static str,
    values: Vec<(&'static str, String)>,
    secrets: Vec<(&'static str, String)>,
    /// Provider values no form has (sped-up limits), added to the invalidation's snapshot.
    hidden: Vec<(&'static str, String)>,
    config: PurgeConfig,
    _keep: Box<dyn std::any::Any + Send>,
}

async fn install(provider: Provider) -> Install {
    let config = PurgeConfig::default();
    match provider {
        Provider::Varnish => {
            let origin = varnish::Origin::start().await;
            // The xkey VCL purges URLs as the plain one does, and tags (Step 8's rows).
            let cache = varnish::Varnish::start_with_vcl(origin.port, "xkey.vcl").await;
            Install {
                provider: "http_purge",
                values: vec![("purge_nodes", format!("http://127.0.0.1:{}", cache.port))],
                secrets: vec![],
                hidden: vec![],
                config,
                _keep: Box::new((origin, cache)),
            }
        }
        Provider::Akamai => {
            let sim = sim_akamai::AkamaiSim::start(AKAMAI_SCALE).await;
            sim.set_latency(AKAMAI_LATENCY);
            Install {
                provider: "akamai",
                values: vec![
                    ("akamai_host", "akab-sim.luna.akamaiapis.net".into()),
                    ("akamai_base_url", sim.base()),
                    ("akamai_action", "invalidate".into()),
                    ("akamai_network", "production".into()),
                ],
                secrets: vec![
                    ("akamai_client_token", sim_akamai::CLIENT_TOKEN.into()),
                    ("akamai_client_secret", sim_akamai::CLIENT_SECRET.into()),
                    ("akamai_access_token", sim_akamai::ACCESS_TOKEN.into()),
                ],
                hidden: vec![("akamai_rate_scale", AKAMAI_SCALE.to_string())],
                config,
                _keep: Box::new(sim),
            }
        }
        Provider::Cloudflare => {
            let sim = sim_cloudflare::CloudflareSim::start(TOKEN, 100).await;
            sim.set_latency(CLOUDFLARE_LATENCY);
            Install {
                provider: "cloudflare",
                values: vec![
                    ("cloudflare_base_url", sim.base()),
                    ("cloudflare_zone_id", sim_cloudflare::ZONE_ID.into()),
                    ("cloudflare_batch_size", "100".into()),
                    ("cloudflare_urls_per_second", "800".into()),
                    // Tag and prefix requests: Pro's 5 a second, bursts of 25.
                    ("cloudflare_plan", "pro".into()),
                ],
                secrets: vec![("cloudflare_api_token", TOKEN.into())],
                hidden: vec![],
                config,
                _keep: Box::new(sim),
            }
        }
        Provider::Fastly => {
            let sim = sim_fastly::FastlySim::start(TOKEN, "purge_select").await;
            sim.set_latency(FASTLY_LATENCY);
            Install {
                provider: "fastly",
                values: vec![
                    ("fastly_base_url", sim.base()),
                    ("fastly_soft_purge", "off".into()),
                    ("fastly_service_id", sim_fastly::SERVICE_ID.into()),
                ],
                secrets: vec![("fastly_api_token", TOKEN.into())],
                hidden: vec![],
                config,
                _keep: Box::new(sim),
            }
        }
        Provider::CloudFront => {
            let sim = sim_cloudfront::SimCloudFront::start(
                CLOUDFRONT_COMPLETION.div_f64(CLOUDFRONT_SCALE),
            )
            .await;
            sim.set_latency(CLOUDFRONT_LATENCY);
            Install {
                provider: "cloudfront",
                values: vec![
                    ("cloudfront_base_url", sim.base()),
                    (
                        "cloudfront_distribution_id",
                        sim_cloudfront::DISTRIBUTION_ID.into(),
                    ),
                    ("cloudfront_domains", "images.example.com".into()),
                ],
                // The access key ID is kept with the credentials, as the settings page keeps it.
                secrets: vec![
                    (
                        "cloudfront_access_key_id",
                        sim_cloudfront::ACCESS_KEY_ID.into(),
                    ),
                    (
                        "cloudfront_secret_access_key",
                        sim_cloudfront::SECRET_ACCESS_KEY.into(),
                    ),
                ],
                hidden: vec![("cloudfront_time_scale", CLOUDFRONT_SCALE.to_string())],
                config: PurgeConfig {
                    poll_interval: config.poll_interval.div_f64(CLOUDFRONT_SCALE),
                    ..config
                },
                _keep: Box::new(sim),
            }
        }
    }
}

/// A fresh install of `provider`: the first invalidation of `size` URLs, then two more; the
/// third has the first two as history.
async fn fresh_install(
    provider: Provider,
    scope: Scope,
    size: usize,
    run: usize,
) -> (Measure, Measure) {
    let setup = install(provider).await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::connect(&format!("sqlite://{}/bench.db", dir.path().display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
        .unlock_secrets(cdn_invalidator::crypto::MasterKey::generate())
        .await
        .unwrap();
    let user_id = store
        .create_user("bench", "not-a-password-hash", Role::User)
        .await
        .unwrap();
    let user = store.get_user(user_id).await.unwrap().unwrap();
    let values: BTreeMap<String, String> = setup
        .values
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let secrets: BTreeMap<String, String> = setup
        .secrets
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let settings = cdn_invalidator::domain::settings::SettingsInput {
        publish_server: "images.example.com".into(),
        ..Default::default()
    };
    let choice = ProviderChoice {
        provider: setup.provider.into(),
        values: values.clone(),
    };
    store
        .save_settings(&settings, &choice, &secrets)
        .await
        .unwrap();
    let kind = cdn_invalidator::cdn::kind(setup.provider).unwrap();
    let mut snapshot = ProviderSnapshot::new(kind, &values);
    for (k, v) in &setup.hidden {
        snapshot.values.insert(k.to_string(), v.clone());
    }
    let mut all = secrets.clone();
    all.extend(values.clone());
    let tested = test_connection(&store, &setup.config, &snapshot, &all, "the bench")
        .await
        .unwrap();
    assert!(tested.is_ok(), "{tested:?}");

    let wake = Arc::new(tokio::sync::Notify::new());
    let worker = Worker::new(store.clone(), setup.config.clone(), wake.clone()).unwrap();
    let running = tokio::spawn(worker.run());
    let mut measures = Vec::new();
    for attempt in 0..3 {
        let urls: Vec<String> = (0..size)
            .map(|i| match scope {
                Scope::Tags => format!("r{run}a{attempt}-{i:06}"),
                Scope::Prefixes => {
                    format!("https://images.example.com/is/image/Company/r{run}a{attempt}-{i:06}")
                }
                _ => format!(
                    "https://images.example.com/is/image/Company/r{run}a{attempt}-{i:06}?$product$"
                ),
            })
            .collect();
        let id = queue_with(
            &store,
            &setup.config,
            &snapshot,
            Queued {
                user: &user,
                idempotency_key: format!("bench-{attempt}"),
                urls,
                duplicates_dropped: 0,
                retry_of: None,
                scope,
                covered: Vec::new(),
            },
        )
        .await
        .unwrap();
        wake.notify_one();
        let inv = loop {
            let inv = store.get_invalidation(id).await.unwrap().unwrap();
            if inv.finished_at.is_some() {
                break inv;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if (inv.succeeded, inv.failed) != (size as i64, 0) {
            let urls = store.invalidation_urls(id).await.unwrap();
            let reason = urls
                .iter()
                .find_map(|u| u.error.clone())
                .unwrap_or_default();
            panic!(
                "{} {size}: {} of {size} URLs failed: {reason}",
                provider.label(),
                inv.failed
            );
        }
        measures.push(Measure {
            estimated_ms: inv.estimated_ms.unwrap(),
            actual_ms: inv.finished_at.unwrap() - inv.created_at,
        });
    }
    running.abort();
    drop(setup);
    (measures[0], measures[2])
}

/// Whether `ESTIMATE_PROVIDERS` (`only`, comma-separated, empty: all) names `provider`.
fn wanted(provider: Provider, only: &str) -> bool {
    only.is_empty()
        || only
            .split(',')
            .any(|p| provider.label().to_lowercase().contains(p))
}

/// [`RUNS`] fresh installs of `provider` with invalidations of `size` rows of `scope`: the
/// table cells "actual s | estimate ÷ actual, first | with history", median (min–max).
async fn measure(provider: Provider, scope: Scope, size: usize) -> String {
    let mut first = Vec::new();
    let mut second = Vec::new();
    let mut actual = Vec::new();
    let by = if scope == Scope::Urls {
        String::new()
    } else {
        format!(" {scope}")
    };
    for run in 0..RUNS {
        let (a, b) = fresh_install(provider, scope, size, run).await;
        println!(
            "{}{by} {size}: first {} ms est / {} ms actual ({:.2}); with history {} / {} ({:.2})",
            provider.label(),
            a.estimated_ms,
            a.actual_ms,
            a.ratio(),
            b.estimated_ms,
            b.actual_ms,
            b.ratio()
        );
        first.push(a.ratio());
        second.push(b.ratio());
        actual.push(a.actual_ms as f64 / 1000.0);
    }
    let (f, f_lo, f_hi) = median_spread(first);
    let (s, s_lo, s_hi) = median_spread(second);
    let (a, a_lo, a_hi) = median_spread(actual);
    format!(
        "{a:.3} ({a_lo:.3}–{a_hi:.3}) | {f:.2} ({f_lo:.2}–{f_hi:.2}) | {s:.2} ({s_lo:.2}–{s_hi:.2})"
    )
}

fn median_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

async fn run() {
    // `ESTIMATE_SCOPES_ONLY=1` measures only tags and prefixes (the URL rows take minutes).
    let only = std::env::var("ESTIMATE_PROVIDERS").unwrap_or_default();
    if std::env::var("ESTIMATE_SCOPES_ONLY").is_ok_and(|v| v == "1") {
        run_scopes(&only).await;
        return;
    }
    let mut report = String::new();
    let _ = writeln!(report, "## Estimate accuracy\n");
    let _ = writeln!(
        report,
        "`cargo bench --bench estimate_accuracy` (also run by `scripts/bench`): for each provider \
         and size, {RUNS} fresh installs (new database, provider saved, *Test connection* run), \
         each with its very first invalidation and then two more of the same size: the third \
         has the first two as history. The estimate is the one the page shows at Continue (the \
         provider's model, corrected by history); *actual* is Continue → finished: for Akamai \
         its promised clearing time (acceptance + `estimatedSeconds`, 5 s), for CloudFront \
         `Completed` as the status poll saw it. Goal: estimate ÷ actual within 0.67–1.5 on the \
         first invalidation, 0.8–1.25 with history. Median (min–max) of {RUNS} installs.\n"
    );
    let _ = writeln!(
        report,
        "| provider | URLs | actual s | estimate ÷ actual, first | estimate ÷ actual, with history |"
    );
    let _ = writeln!(report, "|---|---|---|---|---|");
    // `ESTIMATE_PROVIDERS=cloudfront,varnish` runs some of them (to look into one).
    for provider in Provider::ALL {
        if !wanted(provider, &only) {
            continue;
        }
        for size in SIZES {
            let cells = measure(provider, Scope::Urls, size).await;
            let _ = writeln!(report, "| {} | {size} | {cells} |", provider.label());
        }
    }
    println!("\n{report}");
    report::write_section("## Estimate accuracy", &report);
    run_scopes(&only).await;
}

/// Every variant of an asset (Step 8): the same measure for invalidations by cache tag or
/// path prefix, each provider by the mechanism it has. Sizes are assets; CloudFront's prefixes
/// go in waves of 15 wildcards, so it is measured at 10 and 45.
const SCOPED: [(Provider, Scope, &[usize]); 5] = [
    (Provider::Varnish, Scope::Tags, &[10, 1_000]),
    (Provider::Akamai, Scope::Tags, &[10, 1_000]),
    (Provider::Cloudflare, Scope::Tags, &[10, 1_000]),
    (Provider::Fastly, Scope::Tags, &[10, 1_000]),
    (Provider::CloudFront, Scope::Prefixes, &[10, 45]),
];

async fn run_scopes(only: &str) {
    let mut report = String::new();
    let _ = writeln!(
        report,
        "## Estimate accuracy: cache tags and path prefixes\n"
    );
    let _ = writeln!(
        report,
        "The same measure as *Estimate accuracy* for Step 8's invalidations of every variant: \
         tags (Varnish xkey, Akamai's tag endpoint with its own bucket ×10, Cloudflare on the \
         Pro plan's 5 requests a second, Fastly's surrogate keys) and CloudFront's wildcard \
         prefixes (15 in progress). Sizes are assets (one tag or prefix each). Same goals; \
         median (min–max) of {RUNS} installs.\n"
    );
    let _ = writeln!(
        report,
        "| provider | by | assets | actual s | estimate ÷ actual, first | estimate ÷ actual, with history |"
    );
    let _ = writeln!(report, "|---|---|---|---|---|---|");
    for (provider, scope, sizes) in SCOPED {
        if !wanted(provider, only) {
            continue;
        }
        for &size in sizes {
            let cells = measure(provider, scope, size).await;
            let _ = writeln!(
                report,
                "| {} | {} | {size} | {cells} |",
                provider.label(),
                scope.label()
            );
        }
    }
    println!("\n{report}");
    report::write_section(
        "## Estimate accuracy: cache tags and path prefixes",
        &report,
    );
}
