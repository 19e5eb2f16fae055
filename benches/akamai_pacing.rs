//! How close Akamai purging gets to the rate Akamai's token buckets allow.
//!
//! Purges 50,000 URLs through the real worker (SQLite store, batching, retries, pacer) against
//! the loopback simulator, whose buckets refill `SCALES` times faster than Akamai's so the run
//! takes seconds. Prints the figures and writes them to BENCHMARKS.md ("Akamai pacing").
//! Run: `cargo bench --bench akamai_pacing`.

#[path = "common/report.rs"]
mod report;
#[path = "../tests/api/sim_akamai.rs"]
mod sim_akamai;

use sim_akamai::{AkamaiSim, purge_through_worker};
use std::fmt::Write as _;

const URLS: usize = 50_000;
/// Time scales to run: ×50 as asked (a few seconds), and ×20, where the simulated Akamai rate
/// (4,000 URLs/s) stays below what the worker records per second, so pacing alone is measured.
const SCALES: [f64; 2] = [50.0, 20.0];
const URL_BURST: f64 = 10_000.0;
const URLS_PER_SECOND: f64 = 200.0;
const REQUEST_BURST: f64 = 100.0;
const REQUESTS_PER_SECOND: f64 = 50.0;

fn main() {
    report::main("akamai_pacing", run);
}

/// Runs per scale: the report gives the median and the spread.
const RUNS: usize = 3;

async fn run() {
    let mut report = String::new();
    let _ = writeln!(report, "## Akamai pacing\n");
    let _ = writeln!(
        report,
        "`cargo bench --bench akamai_pacing` (also run by `scripts/bench`): {URLS} URLs purged \
         through the worker (production purge settings: 8 batches in flight) against the loopback \
         simulator, whose token buckets refill faster than Akamai's by the time scale (bursts \
         unchanged: 10,000 URLs, 100 requests). *Minimum* is what the buckets allow: \
         (50,000 − 10,000 burst) ÷ the scaled URL rate. {RUNS} runs per scale: median (min–max).\n"
    );
    let _ = writeln!(
        report,
        "| scale | minimum s | elapsed s | elapsed ÷ minimum (goal ≤ 1.05) | last request ÷ minimum | URLs lost (goal 0) | answered 429 (goal ≤ 1 %) |"
    );
    let _ = writeln!(report, "|---|---|---|---|---|---|---|");
    for scale in SCALES {
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            let run = run_at(scale).await;
            println!(
                "×{scale}: elapsed {:.2} s, ratio {:.3}, first request {:.3} s, last {:.3} s, lost {}, 429 {} of {}",
                run.elapsed,
                run.ratio,
                run.first_request,
                run.last_request,
                run.lost,
                run.refused,
                run.requests
            );
            runs.push(run);
        }
        let spread = |f: fn(&Figures) -> f64, digits: usize| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            format!(
                "{:.digits$} ({:.digits$}–{:.digits$})",
                v[v.len() / 2],
                v[0],
                v[v.len() - 1]
            )
        };
        let lost: usize = runs.iter().map(|r| r.lost).sum();
        let refused: usize = runs.iter().map(|r| r.refused).sum();
        let requests: usize = runs.iter().map(|r| r.requests).sum();
        let _ = writeln!(
            report,
            "| ×{scale} | {:.2} | {} | {} | {} | {lost} of {} | {refused} of {requests} ({:.2} %) |",
            runs[0].minimum,
            spread(|r| r.elapsed, 2),
            spread(|r| r.ratio, 3),
            spread(|r| r.last_request / r.minimum, 3),
            URLS * RUNS,
            refused as f64 * 100.0 / requests.max(1) as f64
        );
    }
    report.push_str(
        "\nReading: the buckets start full, so every millisecond before the first request is \
         lost for good; the worker reads the invalidation's URLs as one JSON text (50,000 rows \
         one by one took 280 ms, 7 % of the ×50 minimum). Time-scaling the buckets also scales \
         how fast the worker must record outcomes: at ×50 it must keep up with 10,000 URLs/s, at \
         Akamai's real 200 URLs/s the buckets are always the limit. Akamai takes a request's \
         tokens when it arrives, and a full bucket does not refill: the pacer counts them as \
         taken when the answer comes, the latest they can be, so it is never ahead of Akamai's \
         buckets however long a request is in transit.\n",
    );
    print!("{report}");
    report::write_section("## Akamai pacing", &report);
}

/// One run's figures.
struct Figures {
    elapsed: f64,
    minimum: f64,
    ratio: f64,
    last_request: f64,
    /// Seconds from the start of the run to the first purge request's arrival.
    first_request: f64,
    lost: usize,
    refused: usize,
    requests: usize,
}

async fn run_at(scale: f64) -> Figures {
    let sim = AkamaiSim::start(scale).await;
    let urls: Vec<String> = (0..URLS)
        .map(|i| format!("https://images.example.com/is/image/Company/asset-{i:06}?$product$"))
        .collect();
    let run = purge_through_worker(&sim, urls, scale).await;

    let received = sim.received();
    let purges: Vec<_> = received
        .iter()
        .filter(|r| r.path.starts_with("/ccu/v3/"))
        .collect();
    let accepted = purges.iter().filter(|r| r.status == 201).count();
    let refused = purges.iter().filter(|r| r.status == 429).count();
    let mut purged: Vec<&str> = purges
        .iter()
        .filter(|r| r.status == 201)
        .flat_map(|r| r.objects.iter().map(String::as_str))
        .collect();
    purged.sort_unstable();
    purged.dedup();
    let lost = URLS - purged.len().min(URLS);
    assert_eq!(
        run.accepted, URLS,
        "every URL accepted (status {})",
        run.status
    );

    let url_minimum = (URLS as f64 - URL_BURST).max(0.0) / (URLS_PER_SECOND * scale);
    let request_minimum =
        (accepted as f64 - REQUEST_BURST).max(0.0) / (REQUESTS_PER_SECOND * scale);
    let minimum = url_minimum.max(request_minimum);
    let elapsed = run.elapsed.as_secs_f64();
    let last_request = purges
        .iter()
        .map(|r| r.at.saturating_duration_since(run.started).as_secs_f64())
        .fold(0.0, f64::max);
    let first_request = purges
        .iter()
        .map(|r| r.at.saturating_duration_since(run.started).as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    Figures {
        elapsed,
        minimum,
        ratio: elapsed / minimum,
        last_request,
        first_request,
        lost,
        refused,
        requests: purges.len(),
    }
}
