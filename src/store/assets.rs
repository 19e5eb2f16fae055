//! The asset catalogue: one page of a search, in name or last-modified order.
//!
//! Pages are keyset pages: a page starts after (or ends before) a row's position in the order,
//! so every page costs the same however deep it is. Matches are counted up to [`COUNT_LIMIT`].
//!
//! A search matches assets whose ID or name contains it, compared after the database's
//! `lower()` (ASCII letters on SQLite; the database's locale on PostgreSQL). Searches of three
//! characters or more are answered from a trigram index (SQLite: the FTS5 table
//! `assets_search`; PostgreSQL: pg_trgm GIN indexes). Shorter ones walk the list's order and
//! stop at a page; a short search that is rare is answered from the index instead: on SQLite
//! (ASCII) from the index's vocabulary, the rows of its terms that start with the search; on
//! PostgreSQL (two ASCII letters or digits) from the trigrams it makes with each character of
//! the catalogue, and one holding a character in no row finds nothing at once.

use super::asset_cache::{PageQuery, VOCABULARY_TERMS};
use super::{Pool, Result, Store};
use base64::Engine;
use std::sync::Arc;

/// The catalogue's version, raised by every change of the catalogue (see
/// [`super::asset_cache`]).
const CATALOGUE_VERSION: &str = "SELECT version FROM catalogue_version WHERE id = 1";

/// Binds a plan's values, then the page's key (its sort value, then its ID) when it has one:
/// the order of [`page_bounds`]' placeholders. A macro: the query's type differs per database.
macro_rules! bind_page {
    ($query:expr, $plan:expr, $key:expr) => {{
        let mut query = $query;
        for b in &$plan.binds {
            query = query.bind(b);
        }
        if let Some(key) = $key {
            query = match &key.value {
                KeyValue::Name(name) => query.bind(name),
                KeyValue::Modified(at) => query.bind(at),
            }
            .bind(&key.id);
        }
        query
    }};
}

/// A catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Asset {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub modified_at: i64,
}

/// How the asset list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AssetSort {
    #[default]
    Name,
    /// Most recently modified first.
    Modified,
}

impl AssetSort {
    pub fn parse(raw: &str) -> Self {
        if raw == "modified" {
            Self::Modified
        } else {
            Self::Name
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Modified => "modified",
        }
    }

    /// ORDER BY and the keyset condition (rows after `$k, $i`) of this order, read forwards
    /// or backwards, each served by an index: `(lower(name), id)` and `(modified_at, id)`.
    fn order(self, backwards: bool, k: usize) -> (&'static str, String) {
        let i = k + 1;
        let (order, keyset) = match (self, backwards) {
            // A range on lower(name), then the ID among equal names: SQLite seeks no row
            // value with an expression in it.
            (Self::Name, false) => (
                "lower(a.name), a.id",
                format!("lower(a.name) >= ${k} AND (lower(a.name) > ${k} OR a.id > ${i})"),
            ),
            (Self::Name, true) => (
                "lower(a.name) DESC, a.id DESC",
                format!("lower(a.name) <= ${k} AND (lower(a.name) < ${k} OR a.id < ${i})"),
            ),
            // Newest first, and equal times (a whole import has one) by ID, also descending:
            // one row value the index seeks to, however many assets share a time.
            (Self::Modified, false) => (
                "a.modified_at DESC, a.id DESC",
                format!("(a.modified_at, a.id) < (${k}, ${i})"),
            ),
            (Self::Modified, true) => (
                "a.modified_at, a.id",
                format!("(a.modified_at, a.id) > (${k}, ${i})"),
            ),
        };
        (order, keyset)
    }
}

/// A row's position in an order: its sort value and its ID (unique, so no two rows tie).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssetKey {
    value: KeyValue,
    id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum KeyValue {
    /// `lower(name)` as the database computed it.
    Name(String),
    Modified(i64),
}

impl AssetKey {
    /// The key as a URL-safe token (for `after=` and `before=`).
    pub fn token(&self) -> String {
        let json = serde_json::to_vec(&(&self.value, &self.id)).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a token made by [`AssetKey::token`] for `sort`; `None` if it is not one.
    pub fn parse(token: &str, sort: AssetSort) -> Option<Self> {
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        let (value, id): (KeyValue, String) = serde_json::from_slice(&json).ok()?;
        match (&value, sort) {
            (KeyValue::Name(_), AssetSort::Name) | (KeyValue::Modified(_), AssetSort::Modified) => {
                Some(Self { value, id })
            }
            _ => None,
        }
    }
}

/// Where a page starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum PageStart {
    #[default]
    First,
    /// The rows after this position.
    After(AssetKey),
    /// The rows before this position (the page ends just before it).
    Before(AssetKey),
}

/// Most matches counted: past it a search has "more than" this many. Counting costs a row
/// read per match, so a bound this low keeps it cheaper than the page itself.
pub const COUNT_LIMIT: i64 = 1_000;

/// How many assets matched, counted up to [`COUNT_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetCount {
    Exactly(i64),
    MoreThan(i64),
}

impl AssetCount {
    /// From a count that stopped at `COUNT_LIMIT + 1`.
    fn bounded(n: i64) -> Self {
        if n > COUNT_LIMIT {
            Self::MoreThan(COUNT_LIMIT)
        } else {
            Self::Exactly(n)
        }
    }
}

/// One page of assets, how many matched, and where the pages beside it start.
#[derive(Debug, Clone)]
pub struct AssetPage {
    pub assets: Vec<Asset>,
    pub count: AssetCount,
    /// The first row's key when rows come before this page.
    pub previous: Option<AssetKey>,
    /// The last row's key when rows come after this page.
    pub next: Option<AssetKey>,
}

/// LIKE pattern for a case-insensitive substring, with the wildcards escaped.
pub(crate) fn like_pattern(q: &str) -> String {
    format!("%{}%", escape_like(q).to_lowercase())
}

/// `q` with LIKE's wildcards and its escape character escaped by `\`.
fn escape_like(q: &str) -> String {
    q.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The fewest characters a trigram index can answer.
const TRIGRAM: usize = 3;

/// Most trigrams of one search whose frequency is looked up (spread over the search). Counts
/// are kept in memory under the catalogue's version, so a search mostly looks up trigrams
/// searches before it already counted: a pasted ID's rarest trigram is found at little cost.
const MAX_PROBES: usize = 16;

/// SQLite: a search one of whose trigrams is in at most this many rows checks those rows
/// (about a microsecond each); when every trigram is more frequent, matches are likely
/// frequent too and walking the list's order finds a page sooner.
const CANDIDATE_LIMIT: i64 = 5_000;

/// SQLite: trigrams are counted up to this many rows, so that a search whose every trigram
/// is frequent still knows its rarest (in a million IDs, "42_" is in 10,000 rows and "com" in
/// all: both past [`CANDIDATE_LIMIT`]). Counting stops there: a few ms the first time a
/// trigram is met under a catalogue version, nothing after.
const PROBE_LIMIT: i64 = 50_000;

/// PostgreSQL: a trigram found in more than this share of the sampled IDs plus names is
/// left out of the index lookup when the search has rarer ones (see [`rare_part`]).
const FREQUENT_PERCENT: usize = 2;

/// Most trigrams ANDed in one index query: the rarest, which bound the candidates.
const MAX_KEY_TRIGRAMS: usize = 3;

/// The distinct trigrams of `q` to look up, at most [`MAX_PROBES`] spread from its start to
/// its end. Distinct ignoring case, as the index folds case.
fn probe_trigrams(q: &str) -> Vec<String> {
    let chars: Vec<char> = q.chars().collect();
    let mut seen = std::collections::HashSet::new();
    let all: Vec<String> = chars
        .windows(TRIGRAM)
        .map(|w| w.iter().collect::<String>())
        .filter(|t| seen.insert(t.to_lowercase()))
        .collect();
    if all.len() <= MAX_PROBES {
        return all;
    }
    (0..MAX_PROBES)
        .map(|i| all[i * (all.len() - 1) / (MAX_PROBES - 1)].clone())
        .collect()
}

/// PostgreSQL: the part of `q` to look up in the trigram indexes, when only part of it is
/// rare: the longest run of its trigrams that are not frequent in the sampled `ids` and
/// `names`. A GIN lookup reads every trigram's whole list of rows, so frequent ones (the
/// "com" of "Company_0999") cost much and narrow little; the full search is checked anyway.
fn rare_part(q: &str, ids: &[String], names: &[String]) -> Option<String> {
    if ids.is_empty() && names.is_empty() {
        return None;
    }
    let share = |samples: &[String], t: &str| {
        let hits = samples
            .iter()
            .filter(|s| s.to_lowercase().contains(t))
            .count();
        hits * 100 / samples.len().max(1)
    };
    let chars: Vec<char> = q.chars().collect();
    let rare: Vec<bool> = chars
        .windows(TRIGRAM)
        .map(|w| {
            let t = w.iter().collect::<String>().to_lowercase();
            share(ids, &t) + share(names, &t) <= FREQUENT_PERCENT
        })
        .collect();
    // The longest run of rare trigrams: (first window, windows).
    let (mut best, mut run) = ((0, 0), 0);
    for (i, r) in rare.iter().enumerate() {
        run = if *r { run + 1 } else { 0 };
        if run > best.1 {
            best = (i + 1 - run, run);
        }
    }
    let (start, windows) = best;
    (windows > 0 && windows < rare.len())
        .then(|| chars[start..start + windows + TRIGRAM - 1].iter().collect())
}

/// An FTS5 query for rows holding every trigram: each quoted as a string.
fn fts_all_of<'a>(trigrams: impl IntoIterator<Item = &'a str>) -> String {
    fts_join(trigrams, " AND ")
}

/// An FTS5 query for rows holding any of the trigrams.
fn fts_any_of<'a>(trigrams: impl IntoIterator<Item = &'a str>) -> String {
    fts_join(trigrams, " OR ")
}

fn fts_join<'a>(trigrams: impl IntoIterator<Item = &'a str>, operator: &str) -> String {
    trigrams
        .into_iter()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(operator)
}

/// Rows read (in table order) to judge whether a short search is frequent, and the
/// matches among them that make it so (about 0.1 %: over a thousand in a million rows, so the
/// walk of the list's order finds a page within a few thousand rows).
const SAMPLE_ROWS: i64 = 2_000;
const SAMPLE_FREQUENT: i64 = 2;

/// SQLite: most index terms a short search is looked up by (one per character that follows
/// it somewhere); more, and it is frequent.
const MAX_SHORT_TERMS: usize = 200;

/// The first index term after every string that starts with `prefix` (ASCII): its last
/// character moved on by one. Terms compare as bytes, and a term longer than `prefix` that
/// starts with it sorts between the two.
fn after_prefix(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    if let Some(last) = chars.pop() {
        chars.push(char::from_u32(last as u32 + 1).unwrap_or(char::MAX));
    }
    chars.into_iter().collect()
}

/// How one list is found: where its rows come from and what selects them, as SQL.
struct Plan {
    /// FROM clause; the assets table is `a`.
    from: &'static str,
    /// WHERE condition selecting the matches.
    filter: &'static str,
    /// Text bound to `$1`, `$2`… of `from` and `filter`.
    binds: Vec<String>,
    /// The same matches read from the trigram index: they are counted there first, and
    /// when they are few the page is read there too rather than by a long walk.
    candidates: Option<Box<Plan>>,
    /// The page's statement counts the matches too (they are few: one pass over them).
    count_in_page: bool,
    /// Statements are planned for their values (PostgreSQL's LIKE: a frequent string walks
    /// the order, a rare one reads the trigram index).
    one_off: bool,
    /// The search cannot match anything.
    empty: bool,
    /// A common table expression `from` reads (PostgreSQL's materialized candidates).
    with: Option<&'static str>,
}

const ALL_ROWS: Plan = Plan {
    from: "assets a",
    filter: "1 = 1",
    binds: Vec::new(),
    candidates: None,
    count_in_page: false,
    one_off: false,
    empty: false,
    with: None,
};

/// SQLite: rows from the trigram index, checked against the real ID and name.
const FTS_FROM: &str = "assets_search CROSS JOIN assets a ON a.seq = assets_search.rowid";
const FTS_FILTER: &str = "assets_search MATCH $1
    AND (instr(lower(a.id), $2) > 0 OR instr(lower(a.name), $2) > 0)";
/// SQLite: the substring check alone (SQLite's lower() folds ASCII letters only).
const SQLITE_CONTAINS: &str = "(instr(lower(a.id), $1) > 0 OR instr(lower(a.name), $1) > 0)";
/// PostgreSQL: the trigram indexes serve LIKE on these expressions.
const POSTGRES_LIKE: &str = "(lower(a.id) LIKE lower($1) OR lower(a.name) LIKE lower($1))";
/// PostgreSQL: the indexes look up a rare part of the search ($2), the rows are checked
/// against all of it ($1).
const POSTGRES_LIKE_PART: &str = "(lower(a.id) LIKE lower($2) OR lower(a.name) LIKE lower($2))
    AND (strpos(lower(a.id), lower($1)) > 0 OR strpos(lower(a.name), lower($1)) > 0)";
/// PostgreSQL: the rows the trigram indexes find for `$1` (or the rare part `$2`), read whole
/// before anything else (a MATERIALIZED CTE is planned for all its rows). Asked for a page, the
/// planner would otherwise walk the list's order and test each row, which it expects to stop
/// soon; for a search with few matches it read the whole table (a 4-digit number: 0.9 s).
const POSTGRES_CANDIDATES: &str = "m AS MATERIALIZED (
        SELECT * FROM assets WHERE lower(id) LIKE lower($1) OR lower(name) LIKE lower($1))";
const POSTGRES_CANDIDATES_PART: &str = "m AS MATERIALIZED (
        SELECT * FROM assets WHERE lower(id) LIKE lower($2) OR lower(name) LIKE lower($2))";
/// PostgreSQL: the whole search checked on rows found for its rare part.
const POSTGRES_CONTAINS_ALL: &str =
    "(strpos(lower(a.id), lower($1)) > 0 OR strpos(lower(a.name), lower($1)) > 0)";
/// PostgreSQL: the same check that no trigram index serves (for 1–2 characters).
const POSTGRES_CONTAINS: &str =
    "(strpos(lower(a.id), lower($1)) > 0 OR strpos(lower(a.name), lower($1)) > 0)";
/// PostgreSQL: the rows of a rare two-character search, found by the trigram indexes from
/// the patterns `$2` (a JSON array, see [`short_patterns`]), read whole first as in
/// [`POSTGRES_CANDIDATES`]. The patterns are an array so that each index is read once for
/// all of them (a bitmap scan per index), and folded by the database's own lower().
const POSTGRES_CANDIDATES_SHORT: &str = "m AS MATERIALIZED (
        SELECT * FROM assets
        WHERE lower(id) LIKE ANY (ARRAY(SELECT lower(x) FROM jsonb_array_elements_text($2::jsonb) AS x))
           OR lower(name) LIKE ANY (ARRAY(SELECT lower(x) FROM jsonb_array_elements_text($2::jsonb) AS x)))";

/// What a page's statement counts besides reading the page.
#[derive(Debug, Clone, Copy)]
enum PageCount {
    No,
    /// Every match.
    All,
    /// The first matches found, up to this many: the page is right only when they are all
    /// of them (fewer than the bound); otherwise it was read among those found first.
    UpTo(i64),
}

#[derive(sqlx::FromRow)]
struct ListedAsset {
    #[sqlx(flatten)]
    asset: Asset,
    name_key: String,
    /// All the matches, when the page's statement counts them.
    #[sqlx(default)]
    matches: Option<i64>,
}

impl ListedAsset {
    fn key(&self, sort: AssetSort) -> AssetKey {
        AssetKey {
            value: match sort {
                AssetSort::Name => KeyValue::Name(self.name_key.clone()),
                AssetSort::Modified => KeyValue::Modified(self.asset.modified_at),
            },
            id: self.asset.id.clone(),
        }
    }
}

impl Store {
    /// Assets whose ID or name contains `q` (case-insensitive), `limit` of them from `start`:
    /// from memory when the same page was read under the current catalogue version (see
    /// [`super::asset_cache`]).
    pub async fn list_assets(
        &self,
        q: &str,
        sort: AssetSort,
        start: &PageStart,
        limit: i64,
    ) -> Result<Arc<AssetPage>> {
        let version = self.catalogue_version().await?;
        let query = PageQuery {
            q: q.to_string(),
            sort,
            start: start.clone(),
            limit,
        };
        if let Some(page) = self.asset_pages.get(version, &query) {
            return Ok(page);
        }
        let flight = self.asset_pages.flight(version, &query);
        let _turn = flight.turn().await;
        // Read by the request before this one meanwhile.
        if let Some(page) = self.asset_pages.get(version, &query) {
            return Ok(page);
        }
        self.learn_vocabulary(version);
        let page = Arc::new(self.search_assets(version, q, sort, start, limit).await?);
        self.asset_pages.put(version, query, page.clone());
        Ok(page)
    }

    /// SQLite: reads the trigram index's vocabulary in the background, when
    /// [`super::asset_cache::AssetPageCache::start_vocabulary`] says it is due, and keeps it
    /// under the version it was read with (both in one read transaction).
    fn learn_vocabulary(&self, version: i64) {
        let Pool::Sqlite(p) = &self.pool else {
            return;
        };
        if !self
            .asset_pages
            .start_vocabulary(version, std::time::Instant::now())
        {
            return;
        }
        let (p, pages) = (p.clone(), self.asset_pages.clone());
        tokio::spawn(async move {
            match sqlite_vocabulary(&p).await {
                Ok((version, mut terms)) => {
                    let whole = terms.len() <= VOCABULARY_TERMS;
                    terms.truncate(VOCABULARY_TERMS);
                    tracing::debug!(version, terms = terms.len(), whole, "vocabulary read");
                    pages.put_vocabulary(version, terms, whole);
                }
                Err(e) => tracing::warn!(error = %e, "reading the search index's vocabulary"),
            }
        });
    }

    /// The catalogue's version: remembered, or read again when older than
    /// [`super::asset_cache::RECHECK`].
    async fn catalogue_version(&self) -> Result<i64> {
        let now = std::time::Instant::now();
        if let Some(version) = self.asset_pages.fresh_version(now) {
            return Ok(version);
        }
        let version: i64 = with_pool!(self, p => {
            sqlx::query_scalar(CATALOGUE_VERSION)
                .fetch_one(p)
                .await
        })?;
        self.asset_pages.set_version(version, now);
        Ok(version)
    }

    /// [`Store::list_assets`] read from the database.
    #[tracing::instrument(skip(self))]
    async fn search_assets(
        &self,
        version: i64,
        q: &str,
        sort: AssetSort,
        start: &PageStart,
        limit: i64,
    ) -> Result<AssetPage> {
        let mut plan = self.plan_search(version, q).await?;
        if plan.empty {
            return Ok(AssetPage {
                assets: Vec::new(),
                count: AssetCount::Exactly(0),
                previous: None,
                next: None,
            });
        }
        let mut counted = None;
        let mut read = None;
        if let Some(candidates) = plan.candidates.take() {
            let count = if candidates.with.is_some() {
                // Counted and, when few, paged in one statement: one read of the index.
                let (count, page) = self.page_if_few(&candidates, sort, start, limit).await?;
                read = page;
                count
            } else {
                // SQLite: the first COUNT_LIMIT + 1 candidates that match are counted and,
                // when that is all of them, the page is read among them, in one statement:
                // one read of the index instead of a count and then a page.
                let (rows, more) = self
                    .fetch_page_counted(
                        &candidates,
                        sort,
                        start,
                        limit,
                        PageCount::UpTo(COUNT_LIMIT + 1),
                    )
                    .await?;
                let count = match rows.first().and_then(|r| r.matches) {
                    Some(n) => AssetCount::bounded(n),
                    // No row on this page: counted apart.
                    None => self.count_matches(&candidates).await?,
                };
                if let AssetCount::Exactly(_) = count {
                    read = Some((rows, more));
                }
                count
            };
            if let AssetCount::Exactly(_) = count {
                plan = *candidates;
            }
            counted = Some(count);
        }
        let (rows, more) = match read {
            Some(page) => page,
            None => self.fetch_page(&plan, sort, start, limit).await?,
        };
        let count = match (counted, rows.first().and_then(|r| r.matches)) {
            (Some(count), _) => count,
            (None, Some(n)) => AssetCount::bounded(n),
            // The first page holds them all (and a rare search read the list only once).
            (None, None) if *start == PageStart::First && !more => {
                AssetCount::Exactly(rows.len() as i64)
            }
            (None, None) => self.count_matches(&plan).await?,
        };
        let (previous, next) = match start {
            PageStart::First => (false, more),
            PageStart::After(_) => (true, more),
            PageStart::Before(_) if more => (true, true),
            PageStart::Before(_) => {
                // Back at the start: show the first page whole.
                let (rows, more) = self
                    .fetch_page(&plan, sort, &PageStart::First, limit)
                    .await?;
                return Ok(page_of(rows, sort, count, false, more));
            }
        };
        Ok(page_of(rows, sort, count, previous, next))
    }

    /// How the rows matching `q` are found on this backend.
    async fn plan_search(&self, version: i64, q: &str) -> Result<Plan> {
        if q.is_empty() {
            return Ok(ALL_ROWS);
        }
        let short = q.chars().count() < TRIGRAM;
        Ok(match &self.pool {
            Pool::Postgres(p) if short => plan_short_postgres(p, q).await?,
            Pool::Postgres(p) => {
                // One trigram has no part to leave out.
                let part = if q.chars().count() > TRIGRAM {
                    let now = std::time::Instant::now();
                    let samples = match self.asset_pages.samples(now) {
                        Some(samples) => samples,
                        None => {
                            let samples = std::sync::Arc::new(postgres_samples(p).await?);
                            self.asset_pages.put_samples(samples.clone(), now);
                            samples
                        }
                    };
                    rare_part(q, &samples.0, &samples.1)
                } else {
                    None
                };
                // Counted among the index's candidates first: when they are few the page is
                // read from them; when many, matches are frequent and walking the order finds
                // a page soon.
                match part {
                    Some(part) => {
                        let binds = vec![q.to_string(), format!("%{}%", escape_like(&part))];
                        Plan {
                            filter: POSTGRES_LIKE_PART,
                            binds: binds.clone(),
                            one_off: true,
                            candidates: Some(Box::new(Plan {
                                from: "m a",
                                with: Some(POSTGRES_CANDIDATES_PART),
                                filter: POSTGRES_CONTAINS_ALL,
                                binds,
                                one_off: true,
                                ..ALL_ROWS
                            })),
                            ..ALL_ROWS
                        }
                    }
                    None => {
                        let binds = vec![format!("%{}%", escape_like(q))];
                        Plan {
                            filter: POSTGRES_LIKE,
                            binds: binds.clone(),
                            one_off: true,
                            candidates: Some(Box::new(Plan {
                                from: "m a",
                                with: Some(POSTGRES_CANDIDATES),
                                binds,
                                one_off: true,
                                ..ALL_ROWS
                            })),
                            ..ALL_ROWS
                        }
                    }
                }
            }
            Pool::Sqlite(p) if short => {
                let needle = q.to_ascii_lowercase();
                let walk = Plan {
                    filter: SQLITE_CONTAINS,
                    binds: vec![needle.clone()],
                    ..ALL_ROWS
                };
                // Frequent: the walk meets a page soon. Rare: the walk would read the whole
                // table, the index's terms starting with the search name its rows.
                if !q.is_ascii() || sqlite_sample_hits(p, &needle).await? >= SAMPLE_FREQUENT {
                    walk
                } else {
                    let terms = sqlite_terms_starting_with(p, &needle).await?;
                    let rows: i64 = terms.iter().map(|(_, n)| n).sum();
                    if terms.is_empty() {
                        Plan {
                            empty: true,
                            ..ALL_ROWS
                        }
                    } else if rows <= CANDIDATE_LIMIT && terms.len() <= MAX_SHORT_TERMS {
                        Plan {
                            from: FTS_FROM,
                            filter: FTS_FILTER,
                            binds: vec![fts_any_of(terms.iter().map(|(t, _)| t.as_str())), needle],
                            count_in_page: true,
                            ..ALL_ROWS
                        }
                    } else {
                        walk
                    }
                }
            }
            Pool::Sqlite(p) => {
                let needle = q.to_ascii_lowercase();
                let mut probed = self.probe_cached(p, version, &probe_trigrams(q)).await?;
                probed.sort_by_key(|(_, n)| *n);
                let rare: Vec<&str> = probed
                    .iter()
                    .take_while(|(_, n)| *n <= CANDIDATE_LIMIT)
                    .take(MAX_KEY_TRIGRAMS)
                    .map(|(t, _)| t.as_str())
                    .collect();
                if probed.first().is_some_and(|(_, n)| *n == 0) {
                    Plan {
                        empty: true,
                        ..ALL_ROWS
                    }
                } else if rare.is_empty() {
                    // Every trigram is frequent, but rows holding all of the rarest few can
                    // still be few (a whole ID: 1 row of "Company_0042_SKU0000042", whose
                    // rarest trigram is in 10,000). They are counted: when few, the page is
                    // read among them; when many, matches are frequent and the order's walk
                    // meets them soon.
                    // When even the rarest is past PROBE_LIMIT their counts cannot tell them
                    // apart, and only all of them together narrow the rows.
                    let keys = if probed.first().is_some_and(|(_, n)| *n > PROBE_LIMIT) {
                        probed.len()
                    } else {
                        MAX_KEY_TRIGRAMS
                    };
                    let all = fts_all_of(probed.iter().take(keys).map(|(t, _)| t.as_str()));
                    Plan {
                        filter: SQLITE_CONTAINS,
                        binds: vec![needle.clone()],
                        candidates: Some(Box::new(Plan {
                            from: FTS_FROM,
                            filter: FTS_FILTER,
                            binds: vec![all, needle],
                            ..ALL_ROWS
                        })),
                        ..ALL_ROWS
                    }
                } else {
                    // At most CANDIDATE_LIMIT candidates: check, count and sort them all.
                    Plan {
                        from: FTS_FROM,
                        filter: FTS_FILTER,
                        binds: vec![fts_all_of(rare), needle],
                        count_in_page: true,
                        ..ALL_ROWS
                    }
                }
            }
        })
    }

    /// SQLite: how many rows hold each trigram (up to `PROBE_LIMIT + 1`), those counted
    /// before under `version` from memory, the others from the index. Kept by their lower
    /// case (the index folds case); looked up as given (each still exactly one trigram).
    async fn probe_cached(
        &self,
        p: &sqlx::SqlitePool,
        version: i64,
        trigrams: &[String],
    ) -> Result<Vec<(String, i64)>> {
        let keys: Vec<String> = trigrams.iter().map(|t| t.to_lowercase()).collect();
        let known = self.asset_pages.trigram_counts(version, &keys);
        let unknown: Vec<String> = trigrams
            .iter()
            .zip(&known)
            .filter(|(_, n)| n.is_none())
            .map(|(t, _)| t.clone())
            .collect();
        let counted = if unknown.is_empty() {
            Vec::new()
        } else {
            probe_sqlite(p, &unknown).await?
        };
        let mut counted = counted.into_iter();
        let mut learnt = Vec::new();
        let probed = trigrams
            .iter()
            .zip(keys)
            .zip(known)
            .map(|((t, key), n)| {
                let n = n.unwrap_or_else(|| {
                    // In the order asked: the next counted one is this one.
                    let n = counted.next().map_or(0, |(_, n)| n);
                    learnt.push((key, n));
                    n
                });
                (t.clone(), n)
            })
            .collect();
        self.asset_pages.put_trigram_counts(version, &learnt);
        Ok(probed)
    }

    /// Counts the matches up to `COUNT_LIMIT + 1`: `plan`'s, not its candidates'.
    async fn count_matches(&self, plan: &Plan) -> Result<AssetCount> {
        let (from, filter, with) = (plan.from, plan.filter, with_clause(plan));
        let sql = format!(
            "{with}SELECT count(*) FROM (SELECT 1 FROM {from} WHERE {filter} LIMIT {}) AS matches",
            COUNT_LIMIT + 1
        );
        let n: i64 = with_pool!(self, p => {
            let mut query = sqlx::query_scalar(&sql).persistent(!plan.one_off);
            for b in &plan.binds {
                query = query.bind(b);
            }
            query.fetch_one(p).await
        })?;
        Ok(AssetCount::bounded(n))
    }

    /// Up to `limit` rows from `start` in `sort` order, and whether more follow in that
    /// direction. Rows come in the list's order whichever the direction.
    async fn fetch_page(
        &self,
        plan: &Plan,
        sort: AssetSort,
        start: &PageStart,
        limit: i64,
    ) -> Result<(Vec<ListedAsset>, bool)> {
        let count = if plan.count_in_page {
            PageCount::All
        } else {
            PageCount::No
        };
        self.fetch_page_counted(plan, sort, start, limit, count)
            .await
    }

    /// [`Store::fetch_page`], the page's statement counting the matches as `count` says.
    async fn fetch_page_counted(
        &self,
        plan: &Plan,
        sort: AssetSort,
        start: &PageStart,
        limit: i64,
        count: PageCount,
    ) -> Result<(Vec<ListedAsset>, bool)> {
        let (key, backwards, order, keyset) = page_bounds(sort, start, plan.binds.len() + 1);
        let (from, filter, with) = (plan.from, plan.filter, with_clause(plan));
        let matches = match count {
            PageCount::No => None,
            PageCount::All => Some(format!("{from} WHERE {filter}")),
            PageCount::UpTo(bound) => Some(format!(
                "(SELECT a.* FROM {from} WHERE {filter} LIMIT {bound}) AS a"
            )),
        };
        let sql = if let Some(matches) = matches {
            // The count is taken over every match (up to the bound), before the page's start
            // and size.
            format!(
                "{with}SELECT {COLUMNS}, a.matches FROM (
                   SELECT a.*, count(*) OVER () AS matches FROM {matches}
                 ) AS a WHERE {keyset} ORDER BY {order} LIMIT {}",
                limit + 1
            )
        } else {
            format!(
                "{with}SELECT {COLUMNS} FROM {from} WHERE {filter} AND {keyset} ORDER BY {order} LIMIT {}",
                limit + 1
            )
        };
        let mut rows: Vec<ListedAsset> = with_pool!(self, p => {
            bind_page!(sqlx::query_as(&sql).persistent(!plan.one_off), plan, key)
                .fetch_all(p)
                .await
        })?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        if backwards {
            rows.reverse();
        }
        Ok((rows, more))
    }

    /// PostgreSQL: counts `plan`'s matches up to `COUNT_LIMIT + 1` and, when there are no more
    /// than `COUNT_LIMIT`, reads the page among them, in one statement over one read of its
    /// materialized candidates (a second statement would look them up in the index again).
    async fn page_if_few(
        &self,
        plan: &Plan,
        sort: AssetSort,
        start: &PageStart,
        limit: i64,
    ) -> Result<(AssetCount, Option<(Vec<ListedAsset>, bool)>)> {
        let (key, backwards, order, keyset) = page_bounds(sort, start, plan.binds.len() + 1);
        let (from, filter, with) = (plan.from, plan.filter, with_clause(plan));
        let sql = format!(
            "{with}, n AS (SELECT count(*) AS total FROM (
                 SELECT 1 FROM {from} WHERE {filter} LIMIT {limit_count}) AS matches)
             SELECT p.id, p.name, p.kind, p.modified_at, p.name_key, n.total FROM n
             LEFT JOIN LATERAL (
                 SELECT {COLUMNS} FROM {from}
                 WHERE n.total <= {COUNT_LIMIT} AND {filter} AND {keyset}
                 ORDER BY {order} LIMIT {limit_page}
             ) p ON true",
            limit_count = COUNT_LIMIT + 1,
            limit_page = limit + 1
        );
        type Row = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<String>,
            i64,
        );
        let found: Vec<Row> = with_pool!(self, p => {
            bind_page!(sqlx::query_as(&sql).persistent(false), plan, key)
                .fetch_all(p)
                .await
        })?;
        let count = AssetCount::bounded(found.first().map_or(0, |r| r.5));
        if let AssetCount::MoreThan(_) = count {
            return Ok((count, None));
        }
        let mut rows: Vec<ListedAsset> = found
            .into_iter()
            .filter_map(|(id, name, kind, modified_at, name_key, _)| {
                Some(ListedAsset {
                    asset: Asset {
                        id: id?,
                        name: name?,
                        kind: kind?,
                        modified_at: modified_at?,
                    },
                    name_key: name_key?,
                    matches: None,
                })
            })
            .collect();
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        if backwards {
            rows.reverse();
        }
        Ok((count, Some((rows, more))))
    }

    /// The first asset in name order, used for the template preview.
    pub async fn sample_asset_id(&self) -> Result<Option<String>> {
        Ok(with_pool!(self, p => {
            sqlx::query_scalar("SELECT id FROM assets ORDER BY lower(name), id LIMIT 1")
                .fetch_optional(p)
                .await
        })?)
    }
}

/// The columns of a listed row; the assets table is `a`.
const COLUMNS: &str = "a.id, a.name, a.kind, a.modified_at, lower(a.name) AS name_key";

/// `WITH …` before a statement reading `plan`, or nothing.
fn with_clause(plan: &Plan) -> String {
    plan.with.map(|w| format!("WITH {w} ")).unwrap_or_default()
}

/// Where a page starts: the key (bound after `first_bind - 1` other values), whether the page
/// is read backwards, and the ORDER BY and keyset condition that read it.
fn page_bounds(
    sort: AssetSort,
    start: &PageStart,
    first_bind: usize,
) -> (Option<&AssetKey>, bool, &'static str, String) {
    let (key, backwards) = match start {
        PageStart::First => (None, false),
        PageStart::After(key) => (Some(key), false),
        PageStart::Before(key) => (Some(key), true),
    };
    let (order, keyset) = sort.order(backwards, first_bind);
    let keyset = if key.is_some() {
        keyset
    } else {
        "1 = 1".into()
    };
    (key, backwards, order, keyset)
}

fn page_of(
    rows: Vec<ListedAsset>,
    sort: AssetSort,
    count: AssetCount,
    previous: bool,
    next: bool,
) -> AssetPage {
    let previous = previous
        .then(|| rows.first().map(|r| r.key(sort)))
        .flatten();
    let next = next.then(|| rows.last().map(|r| r.key(sort))).flatten();
    AssetPage {
        assets: rows.into_iter().map(|r| r.asset).collect(),
        count,
        previous,
        next,
    }
}

/// How many rows hold each trigram, counted up to `PROBE_LIMIT + 1`, in one statement.
async fn probe_sqlite(p: &sqlx::SqlitePool, trigrams: &[String]) -> Result<Vec<(String, i64)>> {
    let columns: Vec<String> = (1..=trigrams.len())
        .map(|i| {
            format!(
                "(SELECT count(*) FROM (SELECT 1 FROM assets_search WHERE assets_search MATCH ${i} LIMIT {}))",
                PROBE_LIMIT + 1
            )
        })
        .collect();
    let sql = format!("SELECT {}", columns.join(", "));
    let mut query = sqlx::query(&sql);
    for t in trigrams {
        query = query.bind(fts_all_of([t.as_str()]));
    }
    let row = query.fetch_one(p).await?;
    (0..trigrams.len())
        .map(|i| Ok((trigrams[i].clone(), sqlx::Row::try_get(&row, i)?)))
        .collect()
}

/// SQLite: the catalogue version and, read under it, the trigram index's terms with how many
/// rows hold each, counted as [`probe_sqlite`] counts (up to `PROBE_LIMIT + 1`); at most
/// `VOCABULARY_TERMS + 1` of them, so that the caller knows whether that was all.
async fn sqlite_vocabulary(p: &sqlx::SqlitePool) -> Result<(i64, Vec<(String, i64)>)> {
    let mut tx = p.begin().await?;
    let version: i64 = sqlx::query_scalar(CATALOGUE_VERSION)
        .fetch_one(&mut *tx)
        .await?;
    let terms = sqlx::query_as(&format!(
        "SELECT term, min(doc, {}) FROM assets_search_terms LIMIT {}",
        PROBE_LIMIT + 1,
        VOCABULARY_TERMS + 1
    ))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((version, terms))
}

/// SQLite: how many of the first [`SAMPLE_ROWS`] rows hold `needle` (ASCII, lower case).
async fn sqlite_sample_hits(p: &sqlx::SqlitePool, needle: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT count(*) FROM (SELECT id, name FROM assets LIMIT {SAMPLE_ROWS}) AS a
         WHERE {SQLITE_CONTAINS}"
    ))
    .bind(needle)
    .fetch_one(p)
    .await?)
}

/// SQLite: the index's terms (trigrams, case-folded) that start with `prefix` (one or two
/// ASCII characters, lower case), with how many rows hold each. Every character of an ID or
/// name starts a term (they are indexed followed by two unit separators), so these terms'
/// rows are every row holding `prefix`, ignoring ASCII case, and more that the check drops.
async fn sqlite_terms_starting_with(
    p: &sqlx::SqlitePool,
    prefix: &str,
) -> Result<Vec<(String, i64)>> {
    Ok(
        sqlx::query_as("SELECT term, doc FROM assets_search_terms WHERE term >= $1 AND term < $2")
            .bind(prefix)
            .bind(after_prefix(prefix))
            .fetch_all(p)
            .await?,
    )
}

/// PostgreSQL: most characters in the catalogue for which a rare two-character search is
/// looked up by its trigrams (two patterns each); a larger alphabet walks the list's order.
const MAX_SHORT_ALPHABET: usize = 256;

/// PostgreSQL: how a search of one or two characters is found (see migration 0012).
///
/// - A database whose default collation is not libc's: the walk of the list's order.
/// - A character of it in no ID or name: nothing matches.
/// - Frequent (in the first [`SAMPLE_ROWS`] rows, at least [`SAMPLE_FREQUENT`] times): the
///   walk of the list's order meets a page soon.
/// - Two ASCII letters or digits otherwise: the indexes look up the trigrams holding it, for
///   every character of the catalogue, and the rows equal to it. pg_trgm splits words at
///   other characters, so only such a search is sure to make trigrams of its own.
/// - Anything else walks the list's order, as before.
async fn plan_short_postgres(p: &sqlx::PgPool, q: &str) -> Result<Plan> {
    let walk = Plan {
        filter: POSTGRES_CONTAINS,
        binds: vec![q.to_string()],
        ..ALL_ROWS
    };
    // Both shortcuts compare characters folded one at a time, which is how libc's lower()
    // folds. ICU's (and PostgreSQL 18's PG_UNICODE_FAST) look at the neighbours (a final Σ
    // folds to ς) or make two characters of one (İ): there, the walk. A database without
    // the column (before PostgreSQL 15) is libc's.
    let (per_character, absent): (bool, bool) = sqlx::query_as(
        "SELECT COALESCE((SELECT to_jsonb(d) ->> 'datlocprovider' FROM pg_database d
                          WHERE d.datname = current_database()), 'c') = 'c',
                EXISTS (SELECT 1 FROM regexp_split_to_table($1, '') AS c
                        WHERE NOT EXISTS (SELECT 1 FROM catalogue_characters WHERE lower(ch) = lower(c)))",
    )
    .bind(q)
    .fetch_one(p)
    .await?;
    if !per_character {
        return Ok(walk);
    }
    if absent {
        return Ok(Plan {
            empty: true,
            ..ALL_ROWS
        });
    }
    if q.chars().count() != 2 || !q.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Ok(walk);
    }
    let hits: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT id, name FROM assets LIMIT $2) AS s
         WHERE strpos(lower(s.id), lower($1)) > 0 OR strpos(lower(s.name), lower($1)) > 0",
    )
    .bind(q)
    .bind(SAMPLE_ROWS)
    .fetch_one(p)
    .await?;
    if hits >= SAMPLE_FREQUENT {
        return Ok(walk);
    }
    let alphabet: Vec<String> =
        sqlx::query_scalar("SELECT ch FROM catalogue_characters ORDER BY ch")
            .fetch_all(p)
            .await?;
    if alphabet.len() > MAX_SHORT_ALPHABET {
        return Ok(walk);
    }
    let patterns = serde_json::to_string(&short_patterns(q, &alphabet))
        .map_err(|e| sqlx::Error::Encode(e.into()))?;
    Ok(Plan {
        one_off: true,
        candidates: Some(Box::new(Plan {
            from: "m a",
            with: Some(POSTGRES_CANDIDATES_SHORT),
            filter: POSTGRES_CONTAINS,
            binds: vec![q.to_string(), patterns],
            one_off: true,
            ..ALL_ROWS
        })),
        ..walk
    })
}

/// The LIKE patterns whose rows are those holding `q` (two characters): `%cq%` and `%qc%`
/// for every character `c` of the catalogue, since in an ID or name longer than `q` an
/// occurrence has a character beside it, and `q` itself for one equal to it. Not folded:
/// the database folds them as it folds what it compares them with.
fn short_patterns(q: &str, alphabet: &[String]) -> Vec<String> {
    let mut patterns = vec![escape_like(q)];
    for c in alphabet {
        patterns.push(format!("%{}%", escape_like(&format!("{c}{q}"))));
        patterns.push(format!("%{}%", escape_like(&format!("{q}{c}"))));
    }
    patterns
}

/// PostgreSQL: the IDs and names its statistics keep as a sample of the table (the
/// histogram ANALYZE makes, about a hundred of each); none before the first ANALYZE.
async fn postgres_samples(p: &sqlx::PgPool) -> Result<(Vec<String>, Vec<String>)> {
    let rows: Vec<(String, Option<Vec<String>>)> = sqlx::query_as(
        "SELECT attname::text, histogram_bounds::text::text[] FROM pg_stats
         WHERE schemaname = current_schema() AND tablename = 'assets' AND attname IN ('id', 'name')",
    )
    .fetch_all(p)
    .await?;
    let (mut ids, mut names) = (Vec::new(), Vec::new());
    for (column, values) in rows {
        let values = values.unwrap_or_default();
        if column == "id" {
            ids = values;
        } else {
            names = values;
        }
    }
    Ok((ids, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_distinct_trigrams_spread_over_the_search() {
        assert_eq!(probe_trigrams("red"), ["red"]);
        assert_eq!(probe_trigrams("abcABC"), ["abc", "bcA", "cAB"]);
        assert_eq!(probe_trigrams("日本語だ"), ["日本語", "本語だ"]);
        let long = probe_trigrams("Company_0999_SKU0000999");
        assert_eq!(long.len(), MAX_PROBES);
        assert_eq!(long.first().unwrap(), "Com");
        assert_eq!(long.last().unwrap(), "009", "the last distinct one");
        assert!(probe_trigrams("ab").is_empty());
    }

    #[test]
    fn postgres_looks_up_the_longest_rare_run_of_a_search() {
        let ids: Vec<String> = (0..100)
            .map(|i| format!("Company_{i:04}_SKU{i:07}"))
            .collect();
        let names: Vec<String> = (0..100).map(|i| format!("Red Tent {i}")).collect();
        // "com", "omp", … "y_0" are in every sampled ID; "_09", "099" and "999" in none.
        assert_eq!(
            rare_part("Company_0999", &ids, &names).as_deref(),
            Some("_0999")
        );
        assert_eq!(
            rare_part("red Kayak", &ids, &names).as_deref(),
            Some("d Kayak")
        );
        // All rare, all frequent, or no statistics: nothing to leave out.
        assert_eq!(rare_part("Kayak", &ids, &names), None);
        assert_eq!(rare_part("red tent", &ids, &names), None);
        assert_eq!(rare_part("Company_0999", &[], &[]), None);
    }

    #[test]
    fn a_short_search_is_looked_up_beside_every_character_and_alone() {
        let alphabet = ["_".to_string(), "a".to_string(), "%".to_string()];
        assert_eq!(
            short_patterns("zq", &alphabet),
            [
                "zq", "%\\_zq%", "%zq\\_%", "%azq%", "%zqa%", "%\\%zq%", "%zq\\%%"
            ]
        );
    }

    #[test]
    fn fts_queries_quote_every_trigram() {
        assert_eq!(fts_all_of(["a\"b", "x y"]), "\"a\"\"b\" AND \"x y\"");
    }

    #[test]
    fn keys_round_trip_through_tokens_for_their_order_only() {
        let name = AssetKey {
            value: KeyValue::Name("tent \"2p\" ü".into()),
            id: "Tent_2P".into(),
        };
        assert_eq!(
            AssetKey::parse(&name.token(), AssetSort::Name),
            Some(name.clone())
        );
        assert_eq!(AssetKey::parse(&name.token(), AssetSort::Modified), None);
        let modified = AssetKey {
            value: KeyValue::Modified(1_700_000_000_000),
            id: "a".into(),
        };
        assert_eq!(
            AssetKey::parse(&modified.token(), AssetSort::Modified),
            Some(modified)
        );
        assert_eq!(AssetKey::parse("not a token", AssetSort::Name), None);
    }

    #[tokio::test]
    async fn sqlite_learns_every_trigram_count_at_the_first_page_read() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("vocabulary.db").display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let Pool::Sqlite(p) = &store.pool else {
            unreachable!("a SQLite URL")
        };
        for (id, name) in [("Red_Tent", "Red tent"), ("Red_Kayak", "Kayak")] {
            sqlx::query(
                "INSERT INTO assets (id, name, kind, modified_at) VALUES ($1, $2, 'image', 0)",
            )
            .bind(id)
            .bind(name)
            .execute(p)
            .await
            .unwrap();
        }
        // A list page with no search probes nothing; the vocabulary is read beside it.
        store
            .list_assets("", AssetSort::Name, &PageStart::First, 50)
            .await
            .unwrap();
        let version = store.catalogue_version().await.unwrap();
        let trigrams: Vec<String> = ["red", "kay", "zzq"].map(String::from).to_vec();
        let started = std::time::Instant::now();
        loop {
            let counts = store.asset_pages.trigram_counts(version, &trigrams);
            if counts == [Some(2), Some(1), Some(0)] {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "counts never learnt: {counts:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn counts_stop_at_the_limit() {
        assert_eq!(AssetCount::bounded(7), AssetCount::Exactly(7));
        assert_eq!(
            AssetCount::bounded(COUNT_LIMIT),
            AssetCount::Exactly(COUNT_LIMIT)
        );
        assert_eq!(
            AssetCount::bounded(COUNT_LIMIT + 1),
            AssetCount::MoreThan(COUNT_LIMIT)
        );
    }
}
