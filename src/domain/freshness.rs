//! Proof of purge: what a cache's answer to a visitor's request says about a purged URL.
//!
//! After an invalidation the app requests each URL once, as a visitor would, and reads what
//! the cache told about its copy. A URL is *fresh* when the answer came from the origin or the
//! copy is younger than the purge, *stale* when the copy is older than the purge, *unknown*
//! when the answer does not tell.

/// What one probe learnt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeAnswer {
    pub http_status: Option<u16>,
    /// `Age`, in seconds: how long the answering cache has held its copy.
    pub age: Option<u64>,
    /// The provider's cache-status header, as `name: value` (`X-Cache: HIT`,
    /// `CF-Cache-Status: MISS`, Akamai's `X-Cache: TCP_MISS from …`).
    pub cache_status: Option<String>,
    /// Varnish's `X-Varnish`: one transaction id on a miss, two on a hit.
    pub x_varnish: Option<String>,
    /// Why there was no answer (timed out, refused…).
    pub error: Option<String>,
}

/// The verdict on one URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    Stale,
    Unknown,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Stale => "stale",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "fresh" => Some(Self::Fresh),
            "stale" => Some(Self::Stale),
            "unknown" => Some(Self::Unknown),
            _ => None,
        }
    }
}

/// Cache-status words that mean the answer was fetched from the origin for this request.
const FROM_ORIGIN: &[&str] = &["miss", "expired", "bypass", "dynamic", "pass", "refresh"];
/// Words that mean the answer came from the cache's copy.
const FROM_COPY: &[&str] = &["hit", "stale", "updating", "revalidated"];

/// The cache-status header's verdict: `Some(true)` from the origin, `Some(false)` from a copy.
fn from_origin(cache_status: &str) -> Option<bool> {
    let value = cache_status
        .split_once(':')
        .map_or(cache_status, |(_, v)| v)
        .to_ascii_lowercase();
    // Akamai: "TCP_MISS from a23-…", "TCP_MEM_HIT from …"; Fastly: "MISS, HIT" (shield, edge):
    // the last word is the cache the visitor talked to.
    let last = value
        .rsplit(',')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let has = |words: &[&str]| words.iter().any(|w| last.contains(w));
    if has(FROM_ORIGIN) {
        Some(true)
    } else if has(FROM_COPY) {
        Some(false)
    } else {
        None
    }
}

/// Classifies `answer`, received `seconds_since_purge` after the URL's purge completed.
/// Returns the verdict and the reason shown beside it.
///
/// `Age` counts whole seconds, so a copy with `Age: a` was stored between `a` and `a + 1`
/// seconds before the answer: it is surely younger than the purge when `a + 1 ≤` the time
/// since the purge, surely older when `a ≥` it, and in between it cannot be told.
pub fn classify(answer: &ProbeAnswer, seconds_since_purge: f64) -> (Freshness, String) {
    if let Some(error) = &answer.error {
        return (Freshness::Unknown, format!("no answer: {error}"));
    }
    let Some(status) = answer.http_status else {
        return (Freshness::Unknown, "no answer".into());
    };
    if status >= 500 {
        return (
            Freshness::Unknown,
            format!("HTTP {status}: the cache answered with an error"),
        );
    }
    if let Some(header) = &answer.cache_status
        && from_origin(header) == Some(true)
    {
        return (
            Freshness::Fresh,
            format!("fetched from the origin ({header})"),
        );
    }
    if let Some(ids) = &answer.x_varnish
        && ids.split_whitespace().count() == 1
        && answer.cache_status.is_none()
    {
        return (
            Freshness::Fresh,
            format!("fetched from the origin (X-Varnish: {ids})"),
        );
    }
    match answer.age {
        Some(age) if (age + 1) as f64 <= seconds_since_purge => (
            Freshness::Fresh,
            format!("the cache's copy is {age} s old, younger than the purge"),
        ),
        Some(age) if age as f64 >= seconds_since_purge => (
            Freshness::Stale,
            format!(
                "the cache's copy is {age} s old: it was stored before the purge ({:.0} s ago)",
                seconds_since_purge.floor()
            ),
        ),
        Some(age) => (
            Freshness::Unknown,
            format!("the cache's copy is {age} s old, too close to the purge to tell"),
        ),
        None => (
            Freshness::Unknown,
            "the answer names neither its age nor whether it came from the origin".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> ProbeAnswer {
        ProbeAnswer {
            http_status: Some(status),
            ..ProbeAnswer::default()
        }
    }

    #[test]
    fn a_miss_of_any_provider_is_fresh() {
        for header in [
            "X-Cache: MISS",
            "CF-Cache-Status: EXPIRED",
            "CF-Cache-Status: DYNAMIC",
            "X-Cache: Miss from cloudfront",
            "X-Cache: TCP_MISS from a23-1-2-3.deploy.akamaitechnologies.com (AkamaiGHost/22)",
            "X-Cache: HIT, MISS",
        ] {
            let a = ProbeAnswer {
                cache_status: Some(header.into()),
                age: Some(500),
                ..answer(200)
            };
            assert_eq!(classify(&a, 10.0).0, Freshness::Fresh, "{header}");
        }
    }

    #[test]
    fn a_hit_older_than_the_purge_is_stale_and_younger_is_fresh() {
        let hit = |age| ProbeAnswer {
            cache_status: Some("X-Cache: TCP_MEM_HIT from a23".into()),
            age: Some(age),
            ..answer(200)
        };
        assert_eq!(classify(&hit(120), 30.0).0, Freshness::Stale);
        assert_eq!(classify(&hit(30), 30.0).0, Freshness::Stale);
        assert_eq!(classify(&hit(29), 30.0).0, Freshness::Fresh);
        // Stored between 29.5 and 30.5 s ago, purged 30 s ago: cannot tell.
        assert_eq!(classify(&hit(29), 29.5).0, Freshness::Unknown);
    }

    #[test]
    fn varnish_tells_a_miss_by_one_transaction_id() {
        let miss = ProbeAnswer {
            x_varnish: Some("32770".into()),
            age: Some(0),
            ..answer(200)
        };
        assert_eq!(classify(&miss, 0.2).0, Freshness::Fresh);
        let hit = ProbeAnswer {
            x_varnish: Some("32773 32771".into()),
            age: Some(4),
            ..answer(200)
        };
        assert_eq!(classify(&hit, 2.0).0, Freshness::Stale);
    }

    #[test]
    fn errors_and_silent_answers_are_unknown() {
        let failed = ProbeAnswer {
            error: Some("timed out".into()),
            ..ProbeAnswer::default()
        };
        assert_eq!(classify(&failed, 5.0).0, Freshness::Unknown);
        assert_eq!(classify(&answer(503), 5.0).0, Freshness::Unknown);
        assert_eq!(classify(&answer(200), 5.0).0, Freshness::Unknown);
        let hit_without_age = ProbeAnswer {
            cache_status: Some("CF-Cache-Status: HIT".into()),
            ..answer(200)
        };
        assert_eq!(classify(&hit_without_age, 5.0).0, Freshness::Unknown);
    }

    #[test]
    fn freshness_names_round_trip() {
        for f in [Freshness::Fresh, Freshness::Stale, Freshness::Unknown] {
            assert_eq!(Freshness::parse(f.as_str()), Some(f));
        }
        assert_eq!(Freshness::parse("maybe"), None);
    }
}
