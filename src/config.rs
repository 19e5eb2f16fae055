//! One `Config` for the whole app: command-line flags, then environment, then defaults.

use crate::cdn::PurgeConfig;
use std::time::Duration;

/// Default database: an embedded SQLite file under `data/`, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/cdn-invalidator.db";

/// Options of `cdn-invalidator serve`. (`Debug` is written by hand: it must not print the secret.)
#[derive(Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CDN_INVALIDATOR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Secret (at least 32 bytes) that provider credentials are encrypted with and the session
    /// cookie key is derived from. Required with PostgreSQL: every instance needs the same one.
    /// With SQLite, a key file beside the database is generated and used when unset.
    #[arg(long, env = "CDN_INVALIDATOR_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Most URLs one invalidation may hold.
    #[arg(long, env = "CDN_INVALIDATOR_MAX_URLS", default_value_t = 10_000)]
    pub max_urls: usize,
    /// Mark the session cookie `Secure` (set when users reach the app over https).
    #[arg(long, env = "CDN_INVALIDATOR_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// Hours a login lasts.
    #[arg(long, env = "CDN_INVALIDATOR_SESSION_HOURS", default_value_t = 12)]
    pub session_hours: u64,
    /// Attempts per URL before it is reported failed.
    #[arg(long, env = "CDN_INVALIDATOR_PURGE_ATTEMPTS", default_value_t = 5)]
    pub purge_attempts: u32,
    /// Requests in flight at once per purge node. To `http://` purge nodes: connections per
    /// node, each carrying one pipelined batch of up to 128 PURGE requests.
    #[arg(long, env = "CDN_INVALIDATOR_PURGE_CONCURRENCY", default_value_t = 8)]
    pub purge_concurrency: usize,
    /// Time limit of one purge request, in seconds (pipelined to a purge node: for each answer
    /// after the one before).
    #[arg(long, env = "CDN_INVALIDATOR_PURGE_TIMEOUT", default_value_t = 10)]
    pub purge_timeout: u64,
    /// First retry delay in milliseconds (doubles with each retry, with jitter).
    #[arg(long, env = "CDN_INVALIDATOR_PURGE_BACKOFF_MS", default_value_t = 500)]
    pub purge_backoff_ms: u64,
    /// Seconds a worker's claim on queued work lasts unrenewed: when an instance dies,
    /// another takes its work over this long after its last renewal.
    #[arg(long, env = "CDN_INVALIDATOR_LEASE_SECONDS", default_value_t = 30)]
    pub lease_seconds: u64,
    /// Check the cache by itself after every invalidation of at most this many URLs (each
    /// purged URL requested once, as a visitor would); 0 turns it off.
    #[arg(long, env = "CDN_INVALIDATOR_CHECK_CACHE_UP_TO", default_value_t = 0)]
    pub check_cache_up_to: usize,
    /// Serve Prometheus metrics at `/metrics` on this address (e.g. 127.0.0.1:9090), without
    /// login; off unless given, so they are never public by accident.
    #[arg(long, env = "CDN_INVALIDATOR_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

/// Everything the application needs to start. (`Debug` hides the secret.)
#[derive(Clone)]
pub struct Config {
    pub listen: String,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_listen: Option<String>,
    pub database_url: String,
    pub secret: Option<String>,
    pub max_urls: usize,
    pub secure_cookies: bool,
    pub purge: PurgeConfig,
    /// Start the background purge worker (tests may drive it themselves instead).
    pub run_worker: bool,
    /// Largest urlencoded form body accepted (bytes).
    pub max_form_bytes: usize,
    /// Largest catalogue upload accepted (bytes).
    pub max_upload_bytes: usize,
    /// Failed logins per user name or client address in 15 minutes before logins wait.
    pub login_max_failures: i64,
    /// How long a login lasts before the user must log in again.
    pub session_max_age: Duration,
}

/// Default session lifetime: a working day.
pub const DEFAULT_SESSION_MAX_AGE: Duration = Duration::from_secs(12 * 60 * 60);

/// Default form limit: 10,000 URLs of up to 4 KiB, plus room.
pub const DEFAULT_MAX_FORM_BYTES: usize = 48 * 1024 * 1024;
/// Default catalogue upload limit.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 32 * 1024 * 1024;

impl Config {
    /// The configuration the flags describe, or why they cannot work together.
    pub fn from_args(args: ServeArgs, database_url: String) -> Result<Self, String> {
        let timeout = args.purge_timeout.max(1);
        if args.lease_seconds < 2 * timeout {
            return Err(format!(
                "--lease-seconds ({}) must be at least twice --purge-timeout ({timeout}): a worker \
                 sends only while its lease outlasts a request that runs into its timeout",
                args.lease_seconds
            ));
        }
        Ok(Self {
            listen: args.listen,
            metrics_listen: args.metrics_listen,
            database_url,
            secret: args.secret,
            max_urls: args.max_urls.max(1),
            secure_cookies: args.secure_cookies,
            purge: PurgeConfig {
                max_attempts: args.purge_attempts.max(1),
                backoff_base: Duration::from_millis(args.purge_backoff_ms),
                concurrency: args.purge_concurrency.max(1),
                timeout: Duration::from_secs(args.purge_timeout.max(1)),
                lease: Duration::from_secs(args.lease_seconds.max(1)),
                check_cache_up_to: args.check_cache_up_to,
                ..PurgeConfig::default()
            },
            run_worker: true,
            max_form_bytes: DEFAULT_MAX_FORM_BYTES,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            login_max_failures: crate::domain::throttle::MAX_FAILURES,
            session_max_age: Duration::from_secs(args.session_hours.max(1) * 3600),
        })
    }

    /// Defaults for a given database: what tests start from.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            metrics_listen: None,
            database_url: database_url.into(),
            secret: None,
            max_urls: 10_000,
            secure_cookies: false,
            purge: PurgeConfig::default(),
            run_worker: true,
            max_form_bytes: DEFAULT_MAX_FORM_BYTES,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            login_max_failures: crate::domain::throttle::MAX_FAILURES,
            session_max_age: DEFAULT_SESSION_MAX_AGE,
        }
    }
}

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("listen", &self.listen)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("max_urls", &self.max_urls)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &self.database_url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("max_urls", &self.max_urls)
            .field("secure_cookies", &self.secure_cookies)
            .field("purge", &self.purge)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_secret() {
        let mut config = Config::with_database("sqlite::memory:");
        config.secret = Some("very-secret-session-key-material-123456".into());
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("very-secret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
