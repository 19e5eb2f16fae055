//! How long clearing will take: the queue ahead plus this invalidation, over measured throughput.

/// Throughput assumed before this installation has measured any (URLs per second).
pub const DEFAULT_URLS_PER_SECOND: f64 = 10.0;

/// Work this installation has finished recently: URLs purged and the time it took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Throughput {
    pub urls: i64,
    pub millis: i64,
}

impl Throughput {
    /// Measured URLs per second, or the stated default when there is no usable history.
    pub fn urls_per_second(self) -> f64 {
        if self.urls <= 0 || self.millis <= 0 {
            DEFAULT_URLS_PER_SECOND
        } else {
            (self.urls as f64 * 1000.0 / self.millis as f64).max(0.01)
        }
    }
}

/// Estimated seconds until `queued_ahead + own` URLs are cleared, plus propagation. At least 1.
pub fn estimate_seconds(
    queued_ahead: i64,
    own: i64,
    throughput: Throughput,
    propagation_seconds: u64,
) -> i64 {
    let urls = (queued_ahead.max(0) + own.max(0)) as f64;
    let sending = (urls / throughput.urls_per_second()).ceil() as i64;
    (sending + propagation_seconds as i64).max(1)
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

    #[test]
    fn uses_default_throughput_without_history() {
        assert_eq!(estimate_seconds(0, 100, Throughput::default(), 0), 10);
        assert_eq!(estimate_seconds(0, 1, Throughput::default(), 0), 1);
    }

    #[test]
    fn counts_the_queue_ahead_and_measured_throughput_and_propagation() {
        let t = Throughput {
            urls: 500,
            millis: 10_000,
        }; // 50 URLs/s
        assert_eq!(estimate_seconds(400, 100, t, 0), 10);
        assert_eq!(estimate_seconds(400, 100, t, 5), 15);
    }

    #[test]
    fn describes_in_words_users_read() {
        assert_eq!(describe(1), "about 1 second");
        assert_eq!(describe(45), "about 45 seconds");
        assert_eq!(describe(180), "about 3 minutes");
        assert_eq!(describe(7200), "about 2 hours");
        assert_eq!(describe_duration(850), "850 ms");
        assert_eq!(describe_duration(12_300), "12.3 s");
        assert_eq!(describe_duration(185_000), "3 min 5 s");
    }
}
