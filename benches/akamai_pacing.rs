//! How close Akamai purging gets to the rate Akamai's token buckets allow.
//!
//! Purges 50,000 URLs through the real worker (SQLite store, batching, retries, pacer) against
//! the loopback simulator, whose buckets refill `SCALES` times faster than Akamai's so the run
//! takes seconds. Prints the figures and writes them to BENCHMARKS.md ("Akamai pacing").
//! Run: `cargo bench --bench akamai_pacing`.

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
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary unoptimised
    // without it, where the figures would mean nothing and BENCHMARKS.md must not be rewritten.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "akamai_pacing: skipped (a benchmark: run it with `cargo bench --bench akamai_pacing`)"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let mut report = String::new();
    let _ = writeln!(report, "## Akamai pacing\n");
    for scale in SCALES {
        report.push_str(&run_at(scale).await);
    }
    report.push_str(
        "Reading: each figure above is measured in this run; the goal is elapsed / minimum ≤ 1.10 \
         with no URL lost and at most 1 % of requests answered 429. Time-scaling the buckets \
         also scales how fast the worker must record outcomes: at ×50 it must keep up with \
         10,000 URLs/s (it records each batch in one transaction), at Akamai's real \
         200 URLs/s the buckets are always the limit.\n",
    );
    print!("{report}");
    write_section(&report);
}

async fn run_at(scale: f64) -> String {
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

    let url_minimum = (URLS as f64 - URL_BURST).max(0.0) / (URLS_PER_SECOND * scale);
    let request_minimum =
        (accepted as f64 - REQUEST_BURST).max(0.0) / (REQUESTS_PER_SECOND * scale);
    let minimum = url_minimum.max(request_minimum);
    let elapsed = run.elapsed.as_secs_f64();
    let ratio = elapsed / minimum;
    let last_request = purges
        .iter()
        .map(|r| r.at.saturating_duration_since(run.started).as_secs_f64())
        .fold(0.0, f64::max);
    let refused_share = refused as f64 / purges.len().max(1) as f64;

    let mut report = String::new();
    let _ = writeln!(
        report,
        "### ×{scale}\n\n`cargo bench --bench akamai_pacing`: {URLS} URLs purged through the worker (production purge \
         settings: 8 batches in flight) against the loopback simulator, whose token buckets refill \
         {scale}× faster than Akamai's (URLs: 10,000 burst, {} /s; requests: 100 burst, {} /s).\n",
        URLS_PER_SECOND * scale,
        REQUESTS_PER_SECOND * scale
    );
    let _ = writeln!(report, "| figure | value | goal |");
    let _ = writeln!(report, "|---|---|---|");
    let _ = writeln!(report, "| elapsed | {elapsed:.2} s | |");
    let _ = writeln!(
        report,
        "| minimum the URL bucket allows ((50,000 − 10,000) / {} per s) | {url_minimum:.2} s | |",
        URLS_PER_SECOND * scale
    );
    let _ = writeln!(
        report,
        "| minimum the request bucket allows (({accepted} requests − 100) / {} per s) | {request_minimum:.2} s | |",
        REQUESTS_PER_SECOND * scale
    );
    let _ = writeln!(report, "| elapsed / minimum | {ratio:.3} | ≤ 1.10 |");
    let _ = writeln!(
        report,
        "| last purge request arrived after | {last_request:.2} s ({:.3} × minimum; the rest is recording outcomes) | |",
        last_request / minimum
    );
    let _ = writeln!(
        report,
        "| URLs lost | {lost} (succeeded {}, failed {}, status {}) | 0 |",
        run.succeeded, run.failed, run.status
    );
    let _ = writeln!(
        report,
        "| requests answered 429 | {refused} of {} ({:.2} %) | ≤ 1 % |",
        purges.len(),
        refused_share * 100.0
    );
    report.push('\n');
    report
}

/// Replaces (or appends) the "Akamai pacing" section of BENCHMARKS.md.
fn write_section(section: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let start = old.find("## Akamai pacing");
    let new = match start {
        Some(start) => {
            let end = old[start + 3..]
                .find("\n## ")
                .map_or(old.len(), |e| start + 3 + e + 1);
            format!("{}{section}\n{}", &old[..start], &old[end..])
        }
        None => format!(
            "{}{}{section}",
            old,
            if old.ends_with("\n\n") { "" } else { "\n" }
        ),
    };
    std::fs::write(path, new.trim_end().to_string() + "\n").expect("write BENCHMARKS.md");
}
