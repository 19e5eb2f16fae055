//! Pages of the asset list kept in memory, until the catalogue changes.
//!
//! A search over a million assets reads thousands of index entries to count its matches, and a
//! rare one sorts all of them; the same page is asked for again and again (paging back and
//! forth, many users searching the same IDs). Every change of the catalogue raises
//! `catalogue_version` in its own transaction, and a page is served from memory only while the
//! version it was read under is the current one. The version is read again at most every
//! [`RECHECK`]: an import by this instance drops its pages at once, one by another process or
//! instance is seen within that time.
//!
//! Beside the pages it keeps what planning a search learnt: on SQLite how many rows hold each
//! trigram (counted up to a bound, under the same version), on PostgreSQL the sample of IDs and
//! names its statistics keep (read again after [`SAMPLES_FOR`]). A search nobody made before
//! then looks up only what it has new: the IDs users paste share most of their trigrams.
//!
//! On SQLite the whole vocabulary of the trigram index (every trigram with its row count) is
//! read once per catalogue version, in the background, at the first page read from the
//! database (see [`AssetPageCache::start_vocabulary`]): a million assets hold a few thousand
//! distinct trigrams. With it, a search nobody made before counts nothing: its trigrams are all
//! known, and an ASCII trigram missing from a whole vocabulary is in no row.

use super::{AssetPage, AssetSort, PageStart};
use lru::LruCache;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a version read stays trusted.
pub(super) const RECHECK: Duration = Duration::from_millis(250);

/// Most pages kept: each is about 8 KB (50 rows), so a few MB at most.
const CAPACITY: usize = 512;

/// Most trigram counts kept: a few dozen bytes each, so well under a MB.
const TRIGRAMS: usize = 16_384;

/// Most vocabulary terms kept: past this the vocabulary is kept in part (and a trigram
/// missing from it is counted as before). About 60 bytes each: 4 MB at most.
pub(super) const VOCABULARY_TERMS: usize = 65_536;

/// The vocabulary is read at most this often, whatever the catalogue's changes: a read costs
/// about a second of one core over a million assets.
pub(super) const VOCABULARY_EVERY: Duration = Duration::from_secs(60);

/// How long PostgreSQL's sample is trusted: ANALYZE renews it in the background.
pub(super) const SAMPLES_FOR: Duration = Duration::from_secs(60);

/// IDs and names sampled by PostgreSQL's statistics.
pub(super) type Samples = std::sync::Arc<(Vec<String>, Vec<String>)>;

/// What one page was asked for with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PageQuery {
    pub q: String,
    pub sort: AssetSort,
    pub start: PageStart,
    pub limit: i64,
}

#[derive(Debug)]
pub(crate) struct AssetPageCache {
    state: Mutex<State>,
    /// Pages being read from the database, by the version they are read under: requests
    /// missing the same page at once (every user's first page after an import) wait for one
    /// read instead of each reading it.
    flights: Mutex<Flights>,
}

/// Page reads under way, by the version they are read under and their query.
type Flights = HashMap<(i64, PageQuery), Arc<tokio::sync::Mutex<()>>>;

/// A turn at reading one page: [`Flight::turn`] waits for the requests before it; dropping it
/// lets the next one go (which finds the page kept by then).
pub(crate) struct Flight<'a> {
    cache: &'a AssetPageCache,
    key: (i64, PageQuery),
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Flight<'_> {
    pub async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut flights = self.cache.flights();
        // Clones are made and dropped only under this lock: two owners are the map and us.
        if Arc::strong_count(&self.lock) == 2 {
            flights.remove(&self.key);
        }
    }
}

#[derive(Debug)]
struct State {
    /// The catalogue version the pages were read under, and when it was last read.
    version: Option<(i64, Instant)>,
    pages: LruCache<PageQuery, Arc<AssetPage>>,
    /// Rows holding each trigram (lower case), counted under `version`.
    trigrams: LruCache<String, i64>,
    /// SQLite: the index's vocabulary read under `version`.
    vocabulary: Option<Vocabulary>,
    /// When the vocabulary was last asked to be read, and under which version.
    vocabulary_started: Option<(i64, Instant)>,
    /// PostgreSQL's sample and when it was read.
    samples: Option<(Samples, Instant)>,
}

/// The trigram index's terms (lower case) with their row counts, as probing counts them.
#[derive(Debug)]
struct Vocabulary {
    terms: HashMap<String, i64>,
    /// Every term of the index is here: an ASCII trigram that is not is in no row. (The
    /// index folds ASCII case as `to_lowercase` does; other characters are not relied on.)
    whole: bool,
}

impl Vocabulary {
    fn count(&self, trigram: &str) -> Option<i64> {
        match self.terms.get(trigram) {
            Some(n) => Some(*n),
            None if self.whole && trigram.is_ascii() => Some(0),
            None => None,
        }
    }
}

impl State {
    /// Whether what is kept was read under `version`.
    fn is_at(&self, version: i64) -> bool {
        self.version.map(|(v, _)| v) == Some(version)
    }

    /// Drops what was read under the version: pages and trigram counts.
    fn drop_kept(&mut self) {
        self.pages.clear();
        self.trigrams.clear();
        self.vocabulary = None;
    }
}

impl Default for AssetPageCache {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                version: None,
                pages: LruCache::new(NonZeroUsize::new(CAPACITY).expect("non-zero")),
                trigrams: LruCache::new(NonZeroUsize::new(TRIGRAMS).expect("non-zero")),
                vocabulary: None,
                vocabulary_started: None,
                samples: None,
            }),
            flights: Mutex::default(),
        }
    }
}

impl AssetPageCache {
    fn flights(&self) -> std::sync::MutexGuard<'_, Flights> {
        // The map holds no invariant a panic could break.
        self.flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The turn to read `query`'s page under `version` from the database: every request
    /// for the same page shares one.
    pub fn flight(&self, version: i64, query: &PageQuery) -> Flight<'_> {
        let key = (version, query.clone());
        let lock = self.flights().entry(key.clone()).or_default().clone();
        Flight {
            cache: self,
            key,
            lock,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing half-done worth keeping.
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut state = poisoned.into_inner();
            state.drop_kept();
            state
        })
    }

    /// The version to trust now, if it was read less than [`RECHECK`] ago.
    pub fn fresh_version(&self, now: Instant) -> Option<i64> {
        self.state()
            .version
            .filter(|(_, read)| now.saturating_duration_since(*read) < RECHECK)
            .map(|(v, _)| v)
    }

    /// Records the version just read at `now`; a new one drops every page.
    pub fn set_version(&self, version: i64, now: Instant) {
        let mut state = self.state();
        if !state.is_at(version) {
            state.drop_kept();
        }
        state.version = Some((version, now));
    }

    /// The page for `query` read under `version`.
    pub fn get(&self, version: i64, query: &PageQuery) -> Option<Arc<AssetPage>> {
        let mut state = self.state();
        if !state.is_at(version) {
            return None;
        }
        state.pages.get(query).cloned()
    }

    /// Keeps `page`, read under `version`, unless the version has moved on since.
    pub fn put(&self, version: i64, query: PageQuery, page: Arc<AssetPage>) {
        let mut state = self.state();
        if state.is_at(version) {
            state.pages.put(query, page);
        }
    }

    /// This instance changed the catalogue: drop every page and read the version again.
    pub fn forget(&self) {
        let mut state = self.state();
        state.drop_kept();
        state.version = None;
    }

    /// The counts known under `version` of these trigrams (lower case), in their order.
    pub fn trigram_counts(&self, version: i64, trigrams: &[String]) -> Vec<Option<i64>> {
        let mut state = self.state();
        if !state.is_at(version) {
            return vec![None; trigrams.len()];
        }
        trigrams
            .iter()
            .map(|t| {
                let known = state.vocabulary.as_ref().and_then(|v| v.count(t));
                known.or_else(|| state.trigrams.get(t).copied())
            })
            .collect()
    }

    /// Whether the index's vocabulary should be read now, under `version`: once per version,
    /// and not again within [`VOCABULARY_EVERY`] of the last read. Answers yes once; the
    /// caller reads it and hands it to [`AssetPageCache::put_vocabulary`].
    pub fn start_vocabulary(&self, version: i64, now: Instant) -> bool {
        let mut state = self.state();
        let due = match state.vocabulary_started {
            None => true,
            Some((v, at)) => v != version && now.saturating_duration_since(at) >= VOCABULARY_EVERY,
        };
        if due && state.is_at(version) {
            state.vocabulary_started = Some((version, now));
            true
        } else {
            false
        }
    }

    /// Keeps the vocabulary read under `version` (terms lower case, counted as probing counts
    /// them; `whole` when nothing was left out), unless the version has moved on since.
    pub fn put_vocabulary(&self, version: i64, terms: Vec<(String, i64)>, whole: bool) {
        let mut state = self.state();
        if state.is_at(version) {
            state.vocabulary = Some(Vocabulary {
                terms: terms.into_iter().collect(),
                whole,
            });
        }
    }

    /// Keeps trigram counts made under `version`, unless the version has moved on since.
    pub fn put_trigram_counts(&self, version: i64, counts: &[(String, i64)]) {
        let mut state = self.state();
        if state.is_at(version) {
            for (t, n) in counts {
                state.trigrams.put(t.clone(), *n);
            }
        }
    }

    /// PostgreSQL's sample, if read less than [`SAMPLES_FOR`] before `now`.
    pub fn samples(&self, now: Instant) -> Option<Samples> {
        self.state()
            .samples
            .as_ref()
            .filter(|(_, read)| now.saturating_duration_since(*read) < SAMPLES_FOR)
            .map(|(s, _)| s.clone())
    }

    pub fn put_samples(&self, samples: Samples, now: Instant) {
        self.state().samples = Some((samples, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AssetCount;

    fn page(n: i64) -> Arc<AssetPage> {
        Arc::new(AssetPage {
            assets: Vec::new(),
            count: AssetCount::Exactly(n),
            previous: None,
            next: None,
        })
    }

    fn query(q: &str) -> PageQuery {
        PageQuery {
            q: q.into(),
            sort: AssetSort::Name,
            start: PageStart::First,
            limit: 50,
        }
    }

    /// Trigrams as `trigram_counts` takes them.
    fn ts(trigrams: &[&str]) -> Vec<String> {
        trigrams.iter().map(|t| t.to_string()).collect()
    }

    fn count(p: Option<Arc<AssetPage>>) -> Option<AssetCount> {
        p.map(|p| p.count)
    }

    #[test]
    fn pages_are_served_only_under_the_version_they_were_read_with() {
        let cache = AssetPageCache::default();
        let now = Instant::now();
        cache.set_version(1, now);
        cache.put(1, query("red"), page(7));
        assert_eq!(
            count(cache.get(1, &query("red"))),
            Some(AssetCount::Exactly(7))
        );
        assert!(cache.get(1, &query("blue")).is_none());
        // The catalogue changed: every page goes.
        cache.set_version(2, now);
        assert!(cache.get(2, &query("red")).is_none());
        assert!(cache.get(1, &query("red")).is_none());
        // A page read under the old version, arriving late, is not kept.
        cache.put(1, query("red"), page(7));
        assert!(cache.get(2, &query("red")).is_none());
    }

    #[test]
    fn the_version_is_read_again_after_the_recheck_time() {
        let cache = AssetPageCache::default();
        let now = Instant::now();
        assert_eq!(cache.fresh_version(now), None);
        cache.set_version(3, now);
        assert_eq!(cache.fresh_version(now + RECHECK / 2), Some(3));
        assert_eq!(cache.fresh_version(now + RECHECK), None);
    }

    #[test]
    fn a_change_made_here_drops_pages_at_once() {
        let cache = AssetPageCache::default();
        let now = Instant::now();
        cache.set_version(1, now);
        cache.put(1, query("red"), page(7));
        cache.forget();
        assert_eq!(cache.fresh_version(now), None);
        assert!(cache.get(1, &query("red")).is_none());
    }

    #[test]
    fn trigram_counts_are_kept_only_under_their_version() {
        let cache = AssetPageCache::default();
        let now = Instant::now();
        cache.set_version(1, now);
        cache.put_trigram_counts(1, &[("com".into(), 5_001), ("456".into(), 12)]);
        assert_eq!(
            cache.trigram_counts(1, &ts(&["456", "abc", "com"])),
            [Some(12), None, Some(5_001)]
        );
        // Counts made under an older version are not kept; a new version drops them all.
        cache.put_trigram_counts(0, &[("abc".into(), 1)]);
        assert_eq!(cache.trigram_counts(1, &ts(&["abc"])), [None]);
        cache.set_version(2, now);
        assert_eq!(cache.trigram_counts(2, &ts(&["456"])), [None]);
        cache.put_trigram_counts(2, &[("456".into(), 13)]);
        cache.forget();
        assert_eq!(cache.trigram_counts(2, &ts(&["456"])), [None]);
    }

    #[test]
    fn a_whole_vocabulary_answers_every_ascii_trigram() {
        let cache = AssetPageCache::default();
        let now = Instant::now();
        cache.set_version(1, now);
        cache.put_trigram_counts(1, &[("日本語".into(), 4)]);
        cache.put_vocabulary(1, vec![("red".into(), 7), ("com".into(), 50_001)], true);
        assert_eq!(
            cache.trigram_counts(1, &ts(&["red", "zzq", "com", "日本語", "本語だ"])),
            [Some(7), Some(0), Some(50_001), Some(4), None],
            "missing ASCII: in no row; missing other: unknown, counted as before"
        );
        // A vocabulary read in part tells only what it holds.
        cache.put_vocabulary(1, vec![("red".into(), 7)], false);
        assert_eq!(
            cache.trigram_counts(1, &ts(&["red", "zzq"])),
            [Some(7), None]
        );
        // One read under an older version is not kept; a new version drops it.
        cache.set_version(2, now);
        cache.put_vocabulary(1, vec![("red".into(), 7)], true);
        assert_eq!(cache.trigram_counts(2, &ts(&["red", "zzq"])), [None, None]);
        cache.put_vocabulary(2, vec![("red".into(), 8)], true);
        cache.forget();
        assert_eq!(cache.trigram_counts(2, &ts(&["red"])), [None]);
    }

    #[test]
    fn the_vocabulary_is_read_once_per_version_and_not_too_often() {
        let cache = AssetPageCache::default();
        let now = Instant::now();
        assert!(
            !cache.start_vocabulary(1, now),
            "not before the version is read"
        );
        cache.set_version(1, now);
        assert!(cache.start_vocabulary(1, now));
        assert!(!cache.start_vocabulary(1, now), "once per version");
        assert!(!cache.start_vocabulary(1, now + 2 * VOCABULARY_EVERY));
        cache.set_version(2, now);
        assert!(
            !cache.start_vocabulary(2, now + VOCABULARY_EVERY / 2),
            "a new version soon after waits"
        );
        assert!(cache.start_vocabulary(2, now + VOCABULARY_EVERY));
        assert!(!cache.start_vocabulary(2, now + VOCABULARY_EVERY));
    }

    #[tokio::test]
    async fn requests_for_one_page_take_turns_and_leave_nothing_behind() {
        let cache = AssetPageCache::default();
        let first = cache.flight(1, &query("red"));
        let turn = first.turn().await;
        let second = cache.flight(1, &query("red"));
        assert!(
            second.lock.try_lock().is_err(),
            "the same page waits for the read under way"
        );
        let other = cache.flight(1, &query("blue"));
        assert!(other.lock.try_lock().is_ok(), "another page does not");
        let newer = cache.flight(2, &query("red"));
        assert!(
            newer.lock.try_lock().is_ok(),
            "nor the page under a new version"
        );
        drop((other, newer));
        drop(turn);
        drop(first);
        assert!(
            second.lock.try_lock().is_ok(),
            "its turn once the first is done"
        );
        assert_eq!(cache.flights().len(), 1);
        drop(second);
        assert!(cache.flights().is_empty());
    }

    #[test]
    fn samples_are_read_again_after_a_while() {
        let cache = AssetPageCache::default();
        let now = Instant::now();
        assert!(cache.samples(now).is_none());
        cache.put_samples(std::sync::Arc::new((vec!["a".into()], vec![])), now);
        assert_eq!(cache.samples(now + SAMPLES_FOR / 2).unwrap().0, ["a"]);
        assert!(cache.samples(now + SAMPLES_FOR).is_none());
    }

    #[test]
    fn the_least_recently_used_page_goes_first_when_full() {
        let cache = AssetPageCache::default();
        let now = Instant::now();
        cache.set_version(1, now);
        for i in 0..CAPACITY {
            cache.put(1, query(&i.to_string()), page(i as i64));
        }
        assert!(cache.get(1, &query("0")).is_some(), "used just now");
        cache.put(1, query("new"), page(0));
        assert!(cache.get(1, &query("0")).is_some());
        assert!(
            cache.get(1, &query("1")).is_none(),
            "the oldest unused page went"
        );
    }
}
