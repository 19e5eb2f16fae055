//! How long clearing will take: a model of how each provider takes purges (how requests go out,
//! the limits that pace them, what follows acceptance), refined by this installation's history
//! with the same provider. Pure functions: the providers describe themselves as a [`Model`],
//! the store supplies the history, and nothing here does I/O.

/// A token bucket holding `burst` tokens now (full, unless something was sent recently),
/// refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub burst: f64,
    pub per_second: f64,
}

impl Bucket {
    /// Seconds until `need` tokens have been taken from a bucket holding `burst` now (less
    /// than zero when requests already wait on it), taking them as fast as it refills.
    fn seconds_for(self, need: f64) -> f64 {
        let have = self.burst;
        if need <= have || self.per_second <= 0.0 {
            0.0
        } else {
            (need - have) / self.per_second
        }
    }
}

/// How a provider's purges go out, in the shapes providers have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sending {
    /// Each of `connections` connections carries its share of the URLs in batches of up to
    /// `batch`, one after another: a batch costs a round trip (`round_trip_ms`) plus
    /// `per_url_ms` for each URL in it (HTTP PURGE pipelined: 128 a batch, the cache's own
    /// time per PURGE; one request at a time, or Fastly's one request per URL: 1 and 0).
    Streams {
        connections: usize,
        batch: usize,
        round_trip_ms: f64,
        per_url_ms: f64,
    },
    /// Requests of up to `per_request` URLs, `in_flight` at once, `request_ms` each, paced by
    /// the provider's buckets of URLs and of requests (Akamai's token buckets; Cloudflare's
    /// documented URL rate as a bucket of one second's worth).
    Paced {
        per_request: usize,
        in_flight: usize,
        request_ms: f64,
        urls: Option<Bucket>,
        requests: Option<Bucket>,
    },
    /// At most `cap` URLs in progress at once, each wave clearing `completion_ms` after its
    /// requests (CloudFront's 3,000 paths in progress), seen by a status poll every `poll_ms`.
    Capped {
        per_request: usize,
        cap: usize,
        request_ms: f64,
        completion_ms: f64,
        poll_ms: f64,
    },
}

/// A provider's model before any history: how it sends, and what follows the last accepted
/// request until every edge serves fresh content.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Model {
    pub sending: Sending,
    /// From the last acceptance to cleared: Akamai's `estimatedSeconds` (5 s documented), 0 for
    /// caches that answer once purged.
    pub clearing_ms: f64,
    /// The app's own work per invalidation: claiming it, reading and recording its URLs.
    pub overhead_ms: f64,
}

/// The app's own bookkeeping per invalidation before the first request and after the last
/// answer (claim, read the URLs, record, finish), measured on a 2-core machine with SQLite.
pub const OVERHEAD_MS: f64 = 5.0;
/// The app's cost per URL (inserting it at Continue, recording its outcome), same machine.
pub const PER_URL_MS: f64 = 0.004;

/// What this installation measured of one provider's requests: the mean time of one request
/// and how many URLs it carried (Test connection measures one request of none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub request_ms: f64,
    pub urls_per_request: f64,
}

impl Model {
    /// Milliseconds until `queued_ahead + own` URLs have been sent and cleared. The provider's
    /// buckets are taken as full: what other senders took from them shows in history.
    pub fn millis(&self, queued_ahead: i64, own: i64) -> f64 {
        let n = (queued_ahead.max(0) + own.max(0)) as f64;
        let sending = match self.sending {
            Sending::Streams {
                connections,
                batch,
                round_trip_ms,
                per_url_ms,
            } => {
                let share = (n / connections.max(1) as f64).ceil();
                (share / batch.max(1) as f64).ceil() * round_trip_ms + share * per_url_ms
            }
            Sending::Paced {
                per_request,
                in_flight,
                request_ms,
                urls,
                requests,
            } => {
                let count = (n / per_request.max(1) as f64).ceil();
                let rounds = (count / in_flight.max(1) as f64).ceil() * request_ms;
                let by_urls = urls.map_or(0.0, |b| b.seconds_for(n));
                let by_requests = requests.map_or(0.0, |b| b.seconds_for(count));
                rounds.max(by_urls.max(by_requests) * 1000.0 + request_ms)
            }
            Sending::Capped {
                per_request,
                cap,
                request_ms,
                completion_ms,
                poll_ms,
            } => {
                let waves = (n / cap.max(1) as f64).ceil().max(1.0);
                let requests = (n.min(cap as f64) / per_request.max(1) as f64).ceil();
                // A wave is seen complete at the first poll after it completes: half a poll
                // interval later on average.
                waves * (requests * request_ms + completion_ms + poll_ms / 2.0)
            }
        };
        self.overhead_ms + n * PER_URL_MS + sending + self.clearing_ms
    }
}

/// One finished invalidation with the same provider: its size, what the model said, what it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Past {
    pub urls: i64,
    pub model_ms: i64,
    pub actual_ms: i64,
}

/// How many past invalidations, nearest in size, refine a new estimate.
const NEAREST: usize = 5;

/// The factor by which the model was off for invalidations like this one: the median of
/// actual ÷ model over the [`NEAREST`] past ones nearest in size (on a log scale, since
/// fixed costs dominate small invalidations and rates large ones). 1 without history.
pub fn correction(history: &[Past], urls: i64) -> f64 {
    let size = |n: i64| (n.max(1) as f64).ln();
    let mut usable: Vec<&Past> = history
        .iter()
        .filter(|p| p.model_ms > 0 && p.actual_ms > 0)
        .collect();
    usable.sort_by(|a, b| {
        let da = (size(a.urls) - size(urls)).abs();
        let db = (size(b.urls) - size(urls)).abs();
        da.total_cmp(&db)
    });
    let mut ratios: Vec<f64> = usable
        .iter()
        .take(NEAREST)
        .map(|p| p.actual_ms as f64 / p.model_ms as f64)
        .collect();
    if ratios.is_empty() {
        return 1.0;
    }
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    let median = if ratios.len() % 2 == 1 {
        ratios[mid]
    } else {
        (ratios[mid - 1] + ratios[mid]) / 2.0
    };
    median.clamp(0.05, 20.0)
}

/// What a new invalidation is told: the model's figure (kept, so later ones can learn how far
/// off it was) and the estimate shown, the model corrected by history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub model_ms: i64,
    pub estimated_ms: i64,
}

/// The estimate for `own` URLs behind `queued_ahead`, by `model`, refined by `history`.
pub fn estimate(model: &Model, queued_ahead: i64, own: i64, history: &[Past]) -> Estimate {
    let model_ms = model.millis(queued_ahead, own).max(1.0);
    let factor = correction(history, queued_ahead.max(0) + own.max(0));
    Estimate {
        model_ms: model_ms.round() as i64,
        estimated_ms: (model_ms * factor).round().max(1.0) as i64,
    }
}

/// "under a second", "about 40 seconds", "about 3 minutes", "about 2 hours".
pub fn describe_millis(millis: i64) -> String {
    if millis < 950 {
        return "under a second".into();
    }
    describe((millis + 500) / 1000)
}

/// "about 40 seconds", "about 3 minutes", "about 2 hours".
pub fn describe(seconds: i64) -> String {
    fn plural(n: i64, unit: &str) -> String {
        if n == 1 {
            format!("about 1 {unit}")
        } else {
            format!("about {n} {unit}s")
        }
    }
    match seconds {
        s if s < 90 => plural(s.max(1), "second"),
        s if s < 90 * 60 => plural((s + 30) / 60, "minute"),
        s => plural((s + 1800) / 3600, "hour"),
    }
}

/// A measured duration for display: "850 ms", "12 s", "3 min 5 s".
pub fn describe_duration(millis: i64) -> String {
    match millis {
        m if m < 1000 => format!("{m} ms"),
        m if m < 60_000 => format!("{:.1} s", m as f64 / 1000.0),
        m => format!("{} min {} s", m / 60_000, (m % 60_000) / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bare(sending: Sending) -> Model {
        Model {
            sending,
            clearing_ms: 0.0,
            overhead_ms: 0.0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6 * b.abs().max(1.0) + 1e-9
    }

    #[test]
    fn streams_share_the_urls_among_connections() {
        // HTTP PURGE pipelined: 8 connections, batches of 128, 0.2 ms a round trip and 0.1 ms
        // a URL: 10,000 URLs are 1,250 a connection, in 10 batches.
        let m = bare(Sending::Streams {
            connections: 8,
            batch: 128,
            round_trip_ms: 0.2,
            per_url_ms: 0.1,
        });
        let base = 10_000.0 * PER_URL_MS;
        assert!(close(m.millis(0, 10_000), 10.0 * 0.2 + 125.0 + base));
        // The queue ahead is sent first, at the same speed.
        assert!(close(
            m.millis(10_000, 10_000),
            20.0 * 0.2 + 250.0 + 2.0 * base
        ));
        // Fewer URLs than connections still take one round trip and one URL.
        assert!(close(m.millis(0, 3), 0.2 + 0.1 + 3.0 * PER_URL_MS));
        // One request per URL (Fastly, https nodes): a round trip each, 8 at a time.
        let one_by_one = bare(Sending::Streams {
            connections: 8,
            batch: 1,
            round_trip_ms: 30.0,
            per_url_ms: 0.0,
        });
        assert!(close(
            one_by_one.millis(0, 100),
            13.0 * 30.0 + 100.0 * PER_URL_MS
        ));
    }

    #[test]
    fn token_buckets_let_the_burst_through_then_pace_at_the_refill_rate() {
        // Akamai: 10,000 URLs burst at 200/s, 100 requests burst at 50/s, 300 ms a request.
        let akamai = |clearing_ms| Model {
            sending: Sending::Paced {
                per_request: 500,
                in_flight: 8,
                request_ms: 300.0,
                urls: Some(Bucket {
                    burst: 10_000.0,
                    per_second: 200.0,
                }),
                requests: Some(Bucket {
                    burst: 100.0,
                    per_second: 50.0,
                }),
            },
            clearing_ms,
            overhead_ms: 0.0,
        };
        let m = akamai(0.0);
        let per_url = |n: f64| n * PER_URL_MS;
        // 1,500 URLs fit the burst: three requests in one round.
        assert!(close(m.millis(0, 1_500), 300.0 + per_url(1_500.0)));
        // 10,000 URLs: 20 requests, 3 rounds of 8, all within the burst.
        assert!(close(m.millis(0, 10_000), 900.0 + per_url(10_000.0)));
        // 50,000 URLs: 40,000 beyond the burst at 200/s is 200 s, then the last request.
        assert!(close(
            m.millis(0, 50_000),
            200_000.0 + 300.0 + per_url(50_000.0)
        ));
        // Akamai's own promise comes after the last acceptance.
        assert!(close(
            akamai(5_000.0).millis(0, 1_500),
            5_300.0 + per_url(1_500.0)
        ));
    }

    #[test]
    fn a_documented_rate_paces_what_exceeds_one_seconds_worth() {
        // Cloudflare Free: 800 URLs/s, 100 URLs a request, 4 in flight, 150 ms each.
        let m = bare(Sending::Paced {
            per_request: 100,
            in_flight: 4,
            request_ms: 150.0,
            urls: Some(Bucket {
                burst: 800.0,
                per_second: 800.0,
            }),
            requests: None,
        });
        assert!(close(m.millis(0, 100), 150.0 + 100.0 * PER_URL_MS));
        // 10,000 URLs: 9,200 beyond the first second's 800 at 800/s.
        assert!(close(
            m.millis(0, 10_000),
            11_500.0 + 150.0 + 10_000.0 * PER_URL_MS
        ));
    }

    #[test]
    fn a_cap_on_work_in_progress_sends_in_waves() {
        // CloudFront: 3,000 paths in progress, 3,000 a request, 70 s to complete, polled every 10 s.
        let m = bare(Sending::Capped {
            per_request: 3_000,
            cap: 3_000,
            request_ms: 400.0,
            completion_ms: 70_000.0,
            poll_ms: 10_000.0,
        });
        let wave = 400.0 + 70_000.0 + 5_000.0;
        assert!(close(m.millis(0, 10), wave + 10.0 * PER_URL_MS));
        assert!(close(m.millis(0, 3_000), wave + 3_000.0 * PER_URL_MS));
        // 10,000 paths: four waves, one after another.
        assert!(close(
            m.millis(0, 10_000),
            4.0 * wave + 10_000.0 * PER_URL_MS
        ));
    }

    #[test]
    fn overhead_and_clearing_are_added_once() {
        let m = Model {
            sending: Sending::Streams {
                connections: 1,
                batch: 1,
                round_trip_ms: 1.0,
                per_url_ms: 0.0,
            },
            clearing_ms: 100.0,
            overhead_ms: 5.0,
        };
        assert!(close(
            m.millis(0, 10),
            5.0 + 10.0 * PER_URL_MS + 10.0 + 100.0
        ));
    }

    #[test]
    fn history_corrects_by_the_invalidations_nearest_in_size() {
        let past = |urls, model_ms, actual_ms| Past {
            urls,
            model_ms,
            actual_ms,
        };
        assert_eq!(correction(&[], 10), 1.0);
        // Small ones took twice the model, large ones half: each size learns from its own.
        let history = [
            past(10, 10, 20),
            past(12, 10, 20),
            past(9, 10, 20),
            past(10_000, 1_000, 500),
            past(9_000, 1_000, 500),
            past(11_000, 1_000, 500),
        ];
        assert!(close(correction(&history, 10), 2.0));
        assert!(close(correction(&history, 10_000), 0.5));
        // A wild outlier among them does not move the median.
        let mut noisy = history.to_vec();
        noisy.push(past(10, 10, 10_000));
        assert!(close(correction(&noisy, 10), 2.0));
        // Rows without a model figure (from before models) are ignored.
        assert_eq!(correction(&[past(10, 0, 50)], 10), 1.0);
        // The estimate applies the correction to the model's figure and keeps both.
        let m = Model {
            sending: Sending::Streams {
                connections: 1,
                batch: 1,
                round_trip_ms: 1.0,
                per_url_ms: 0.0,
            },
            clearing_ms: 0.0,
            overhead_ms: 0.0,
        };
        let e = estimate(&m, 0, 10, &history);
        assert_eq!(e.model_ms, 10);
        assert_eq!(e.estimated_ms, 20);
    }

    #[test]
    fn describes_in_words_users_read() {
        assert_eq!(describe(1), "about 1 second");
        assert_eq!(describe(45), "about 45 seconds");
        assert_eq!(describe(180), "about 3 minutes");
        assert_eq!(describe(7200), "about 2 hours");
        assert_eq!(describe_millis(120), "under a second");
        assert_eq!(describe_millis(5_300), "about 5 seconds");
        assert_eq!(describe_duration(850), "850 ms");
        assert_eq!(describe_duration(12_300), "12.3 s");
        assert_eq!(describe_duration(185_000), "3 min 5 s");
    }
}
