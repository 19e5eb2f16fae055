//! Login throttling: how many failures are allowed and how long to wait after that.

/// Failures allowed per user name or per client address within the window (the default).
pub const MAX_FAILURES: i64 = 5;
/// The window, in milliseconds (15 minutes).
pub const WINDOW_MILLIS: i64 = 15 * 60 * 1000;

/// Seconds to wait before another attempt, or `None` when one is allowed now.
///
/// `oldest_*` is the oldest failure inside the window for that key: the window frees a slot
/// when it leaves.
pub fn wait_seconds(
    max_failures: i64,
    now: i64,
    by_user: i64,
    oldest_user: Option<i64>,
    by_client: i64,
    oldest_client: Option<i64>,
) -> Option<i64> {
    let wait = |count: i64, oldest: Option<i64>| {
        (count >= max_failures).then(|| oldest.map_or(WINDOW_MILLIS, |o| o + WINDOW_MILLIS - now))
    };
    let millis = [wait(by_user, oldest_user), wait(by_client, oldest_client)]
        .into_iter()
        .flatten()
        .max()?;
    Some((millis.max(1000) + 999) / 1000)
}

/// "14 minutes", "1 minute", "40 seconds".
pub fn describe_wait(seconds: i64) -> String {
    if seconds >= 90 {
        let minutes = (seconds + 59) / 60;
        format!("{minutes} minutes")
    } else if seconds == 1 {
        "1 second".into()
    } else {
        format!("{seconds} seconds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_by_user_or_client_block_until_the_oldest_leaves_the_window() {
        let now = 1_000_000_000;
        assert_eq!(
            wait_seconds(MAX_FAILURES, now, 4, Some(now - 1000), 4, Some(now - 1000)),
            None
        );
        assert_eq!(
            wait_seconds(MAX_FAILURES, now, 5, Some(now - 60_000), 0, None),
            Some(14 * 60)
        );
        assert_eq!(
            wait_seconds(
                MAX_FAILURES,
                now,
                1,
                Some(now),
                5,
                Some(now - WINDOW_MILLIS + 30_000)
            ),
            Some(30)
        );
        assert_eq!(describe_wait(14 * 60), "14 minutes");
        assert_eq!(describe_wait(30), "30 seconds");
    }
}
