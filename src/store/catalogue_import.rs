//! Importing a catalogue: every row inserted or updated in one transaction, 5,000 rows per
//! statement. The rows reach each database in its own bulk form (SQLite: a JSON text read by
//! `json_each`; PostgreSQL: arrays read by `UNNEST`), so the two upserts are written apart.

use super::{Pool, Result, Store, now_millis};
use crate::domain::catalogue::CatalogueRow;
use sqlx::{Connection, PgPool, SqlitePool};

/// How an import changed the catalogue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Rows in the file.
    pub read: u64,
    /// IDs that were not in the catalogue.
    pub new: u64,
    /// Known IDs whose name or type changed.
    pub changed: u64,
    /// Known IDs left as they were.
    pub unchanged: u64,
    /// The IDs counted in `changed` (the first [`MAX_CHANGED_IDS`]): content replaced under
    /// the same ID is what users invalidate after an import.
    pub changed_ids: Vec<String>,
}

/// Most changed IDs an import reports by name.
pub const MAX_CHANGED_IDS: usize = 10_000;

/// Rows per statement: a fraction of a second each (sqlx warns of statements over 1 s), even
/// with the search indexes. They travel as one JSON text (SQLite) or three arrays
/// (PostgreSQL), not as thousands of bind parameters: the statement is prepared once and
/// stays short (a slow statement is logged with its whole text), and no parameter limit
/// applies.
const ROWS_PER_STATEMENT: usize = 5_000;

/// SQLite's page cache during an import, in KiB: with the default 2 MiB a large import reads
/// its index pages from the OS again and again (1M rows: 13.8 s; with 64 MiB 8.8 s).
const SQLITE_IMPORT_CACHE_KIB: i64 = 64 * 1024;

/// An unchanged asset is left alone, so its `modified_at` stays.
const ON_CONFLICT: &str =
    "ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
       modified_at = excluded.modified_at
     WHERE assets.name <> excluded.name OR assets.kind <> excluded.kind";

const COUNT: &str = "SELECT COUNT(*) FROM assets";

/// SQLite: the trigger that adds each new asset to the search index (migration 0011).
const SQLITE_SEARCH_INSERT_TRIGGER: &str = "assets_search_insert";

/// PostgreSQL: the short searches' alphabet (migration 0012) made from every stored row, for a
/// catalogue written other than by an import (`copy`). An import adds its rows' characters.
pub(super) const FILL_CATALOGUE_CHARACTERS: &str = "INSERT INTO catalogue_characters (ch)
     SELECT DISTINCT c FROM assets, regexp_split_to_table(id || name, '') AS c
     ON CONFLICT DO NOTHING";

/// Raised in every import's transaction, so every instance's cached asset pages are dropped.
pub(super) const BUMP_VERSION: &str =
    "UPDATE catalogue_version SET version = version + 1 WHERE id = 1";

/// PostgreSQL's indexes of the asset list but its key, by name, as the migrations create them
/// (`0001_init.sql`, `0002_asset_search.sql`): the trigram indexes of the search and the two
/// orders of the list. The key stays: the upsert needs it.
const LIST_INDEXES: [(&str, &str); 4] = [
    ("assets_search_id", "USING gin (lower(id) gin_trgm_ops)"),
    ("assets_search_name", "USING gin (lower(name) gin_trgm_ops)"),
    ("assets_name_lower", "(lower(name), id)"),
    ("assets_modified", "(modified_at, id)"),
];

/// Whether an import of `rows` into a catalogue of `existing` assets builds the search
/// indexes afresh (PostgreSQL: the [`LIST_INDEXES`]; SQLite: the FTS5 table) rather than
/// adding every row to them. Adding a million rows to a GIN index one by one takes about
/// three times as long as building it from the table (1M rows: 14.8 s against 3.8 s of rows
/// and 5.1 s of index); but the rebuild reads every row, and on PostgreSQL locks readers out
/// until the commit, so only a large import into a catalogue less than a quarter its size
/// does it.
fn rebuilds_list_indexes(existing: i64, rows: usize) -> bool {
    rows >= 50_000 && existing.saturating_mul(4) < rows as i64
}

impl Store {
    /// Inserts or updates every row in one transaction: all or nothing. An asset's
    /// `modified_at` moves only when its name or type changes. `progress` is told how many
    /// rows have been written after each statement. The rows' IDs must be distinct (as
    /// [`crate::domain::catalogue::parse`] guarantees).
    #[tracing::instrument(skip_all, fields(rows = rows.len()))]
    pub async fn import_catalogue(
        &self,
        rows: &[CatalogueRow],
        progress: impl FnMut(u64),
    ) -> Result<ImportReport> {
        let now = now_millis();
        let (new, changed, changed_ids) = match &self.pool {
            Pool::Sqlite(pool) => import_sqlite(pool, rows, now, progress).await?,
            Pool::Postgres(pool) => import_postgres(pool, rows, now, progress).await?,
        };
        self.asset_pages.forget();
        let read = rows.len() as u64;
        Ok(ImportReport {
            read,
            new,
            changed,
            unchanged: read.saturating_sub(new + changed),
            changed_ids,
        })
    }
}

/// The (new, changed) counts: nothing is deleted, so the growth of the table is the new
/// rows, and the other rows written were changed.
fn new_and_changed(before: i64, after: i64, written: u64) -> (u64, u64) {
    let new = u64::try_from(after - before).unwrap_or_default();
    (new, written.saturating_sub(new))
}

/// SQLite: each chunk as a JSON array of `[id, name, kind]`, with a larger page cache while
/// the transaction runs.
async fn import_sqlite(
    pool: &SqlitePool,
    rows: &[CatalogueRow],
    now: i64,
    mut progress: impl FnMut(u64),
) -> sqlx::Result<(u64, u64, Vec<String>)> {
    let mut conn = pool.acquire().await?;
    let cache_size: i64 = sqlx::query_scalar("PRAGMA cache_size")
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query(&format!("PRAGMA cache_size = -{SQLITE_IMPORT_CACHE_KIB}"))
        .execute(&mut *conn)
        .await?;
    let upsert = format!(
        "INSERT INTO assets (id, name, kind, modified_at)
         SELECT value ->> 0, value ->> 1, value ->> 2, $2 FROM json_each($1)
         WHERE true {ON_CONFLICT}"
    );
    // Existing rows of the chunk whose name or type the upsert is about to change.
    let changing = "SELECT a.id FROM json_each($1) j JOIN assets a ON a.id = j.value ->> 0
         WHERE a.name <> j.value ->> 1 OR a.kind <> j.value ->> 2 LIMIT $2";
    let imported = async {
        // Takes the write lock now, so no other writer comes between the two counts.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let before: i64 = sqlx::query_scalar(COUNT).fetch_one(&mut *tx).await?;
        // A large import into a small catalogue builds the indexes from the table once
        // instead of adding each row to them: the list's indexes (1M rows: 5.6 s instead of
        // 10.2 s with Debian's SQLite) and the search index, which each row went into through
        // the insert trigger (300,000 rows: 7 s instead of 46 s). They are made again from the
        // SQL SQLite stored for them, in the same transaction, so a failed import leaves them
        // as they were.
        let rebuilt: Vec<(String, String, String)> = if rebuilds_list_indexes(before, rows.len()) {
            let dropped: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT type, name, sql FROM sqlite_master
                 WHERE tbl_name = 'assets' AND sql IS NOT NULL
                   AND (type = 'index' OR (type = 'trigger' AND name = $1))
                 ORDER BY type, name",
            )
            .bind(SQLITE_SEARCH_INSERT_TRIGGER)
            .fetch_all(&mut *tx)
            .await?;
            // `type` is "index" or "trigger": the DROP statement's own word.
            for (kind, name, _) in &dropped {
                sqlx::query(&format!("DROP {kind} \"{name}\""))
                    .execute(&mut *tx)
                    .await?;
            }
            dropped
        } else {
            Vec::new()
        };
        let (mut written, mut done) = (0, 0);
        let mut changed_ids: Vec<String> = Vec::new();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let json = serde_json::to_string(
                &chunk
                    .iter()
                    .map(|(id, name, kind)| [id.as_str(), name, kind.as_str()])
                    .collect::<Vec<_>>(),
            )
            .map_err(|e| sqlx::Error::Encode(e.into()))?;
            // Nothing can change in an empty catalogue (a first import skips the lookups).
            if before > 0 && changed_ids.len() < MAX_CHANGED_IDS {
                let ids: Vec<String> = sqlx::query_scalar(changing)
                    .bind(&json)
                    .bind((MAX_CHANGED_IDS - changed_ids.len()) as i64)
                    .fetch_all(&mut *tx)
                    .await?;
                changed_ids.extend(ids);
            }
            let result = sqlx::query(&upsert)
                .bind(json)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            written += result.rows_affected();
            done += chunk.len() as u64;
            progress(done);
        }
        if !rebuilt.is_empty() {
            sqlx::query("INSERT INTO assets_search (assets_search) VALUES ('rebuild')")
                .execute(&mut *tx)
                .await?;
            for (_, _, sql) in &rebuilt {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
        }
        let after: i64 = sqlx::query_scalar(COUNT).fetch_one(&mut *tx).await?;
        sqlx::query(BUMP_VERSION).execute(&mut *tx).await?;
        tx.commit().await?;
        let (new, changed) = new_and_changed(before, after, written);
        Ok::<_, sqlx::Error>((new, changed, changed_ids))
    }
    .await;
    // The connection goes back to the pool with its usual cache (also after an error).
    sqlx::query(&format!("PRAGMA cache_size = {cache_size}"))
        .execute(&mut *conn)
        .await?;
    imported
}

/// PostgreSQL: a first import by `COPY`, any other as an upsert of chunks.
async fn import_postgres(
    pool: &PgPool,
    rows: &[CatalogueRow],
    now: i64,
    mut progress: impl FnMut(u64),
) -> sqlx::Result<(u64, u64, Vec<String>)> {
    let mut tx = pool.begin().await?;
    // One import at a time (readers go on): exact counts, and two imports cannot deadlock on
    // each other's rows. Plain inserts and updates wait for this mode too.
    sqlx::query("LOCK TABLE assets IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let before: i64 = sqlx::query_scalar(COUNT).fetch_one(&mut *tx).await?;
    let rebuild = rebuilds_list_indexes(before, rows.len());
    if rebuild {
        // Readers of the catalogue now wait for the commit: only a catalogue mostly new to
        // the database (a first import) is loaded this way, when there is little to read.
        sqlx::query("LOCK TABLE assets IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let names: Vec<&str> = LIST_INDEXES.iter().map(|(name, _)| *name).collect();
        sqlx::query(&format!("DROP INDEX {}", names.join(", ")))
            .execute(&mut *tx)
            .await?;
    }
    let (written, changed_ids) = if before == 0 {
        // Nothing can change in an empty catalogue.
        (
            copy_postgres(&mut tx, rows, now, &mut progress).await?,
            Vec::new(),
        )
    } else {
        upsert_postgres(&mut tx, rows, now, &mut progress).await?
    };
    if rebuild {
        sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
            .execute(&mut *tx)
            .await?;
        for (name, definition) in LIST_INDEXES {
            sqlx::query(&format!("CREATE INDEX {name} ON assets {definition}"))
                .execute(&mut *tx)
                .await?;
        }
    }
    // The short searches' alphabet (migration 0012) gains the characters of these rows.
    sqlx::query(
        "INSERT INTO catalogue_characters (ch) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(characters(rows))
    .execute(&mut *tx)
    .await?;
    let after: i64 = sqlx::query_scalar(COUNT).fetch_one(&mut *tx).await?;
    sqlx::query(BUMP_VERSION).execute(&mut *tx).await?;
    tx.commit().await?;
    if refreshes_statistics(written, after) {
        analyze_assets(pool).await;
    }
    let (new, changed) = new_and_changed(before, after, written);
    Ok((new, changed, changed_ids))
}

/// PostgreSQL: whether writing `written` rows leaving `after` in the catalogue calls for new
/// statistics: a tenth of it or more, where autovacuum's default would (it may be off, and
/// waits up to a minute when on).
fn refreshes_statistics(written: u64, after: i64) -> bool {
    written > 0 && written.saturating_mul(10) >= u64::try_from(after).unwrap_or(0)
}

/// PostgreSQL: new statistics of the catalogue. The search plans by them (its sample of IDs
/// and names, and the planner's estimates): with none after a first import of a million rows,
/// a new ID searched under `wrk -c64` took 52 requests/s, p99 1.6 s; after ANALYZE 1,249/s,
/// p99 93 ms. ANALYZE reads a sample (1M rows: 0.2–0.3 s). The rows are committed already, so a
/// failure is only logged.
pub(super) async fn analyze_assets(pool: &PgPool) {
    if let Err(e) = sqlx::query("ANALYZE assets").execute(pool).await {
        tracing::warn!(error = %e, "ANALYZE assets after writing the catalogue");
    }
}

/// Every character of the rows' IDs and names once, as written: one pass, no allocation per row.
fn characters(rows: &[CatalogueRow]) -> Vec<String> {
    let mut ascii = [false; 128];
    let mut other = std::collections::BTreeSet::new();
    for (id, name, _) in rows {
        for c in id.as_str().chars().chain(name.chars()) {
            if c.is_ascii() {
                ascii[c as usize] = true;
            } else {
                other.insert(c);
            }
        }
    }
    (0u8..128)
        .filter(|&b| ascii[usize::from(b)])
        .map(char::from)
        .chain(other)
        .map(String::from)
        .collect()
}

/// PostgreSQL, an empty catalogue: nothing can conflict or change, so the rows stream in by
/// `COPY`, about twice as fast as the upsert (1M rows: 3.6 s against about 7 s). Returns the
/// rows written. A COPY dropped unfinished (an error) is aborted, and so is the transaction.
async fn copy_postgres(
    tx: &mut sqlx::PgConnection,
    rows: &[CatalogueRow],
    now: i64,
    progress: &mut impl FnMut(u64),
) -> sqlx::Result<u64> {
    let mut copy = tx
        .copy_in_raw("COPY assets (id, name, kind, modified_at) FROM STDIN (FORMAT csv)")
        .await?;
    let now = now.to_string();
    let mut done = 0;
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        // Every field quoted: an empty quoted field is an empty text, never NULL.
        let mut csv = csv::WriterBuilder::new()
            .quote_style(csv::QuoteStyle::Always)
            .from_writer(Vec::with_capacity(chunk.len() * 64));
        for (id, name, kind) in chunk {
            csv.write_record([id.as_str(), name, kind.as_str(), &now])
                .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        }
        let data = csv
            .into_inner()
            .map_err(|e| sqlx::Error::Encode(Box::new(e.into_error())))?;
        copy.send(data).await?;
        done += chunk.len() as u64;
        progress(done);
    }
    copy.finish().await
}

/// PostgreSQL, a catalogue with rows: each chunk upserted as three arrays (IDs, names, types),
/// after collecting the IDs whose name or type it changes. Returns the rows written and those
/// IDs (up to [`MAX_CHANGED_IDS`]).
async fn upsert_postgres(
    tx: &mut sqlx::PgConnection,
    rows: &[CatalogueRow],
    now: i64,
    progress: &mut impl FnMut(u64),
) -> sqlx::Result<(u64, Vec<String>)> {
    let upsert = format!(
        "INSERT INTO assets (id, name, kind, modified_at)
         SELECT r.id, r.name, r.kind, $4 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS r (id, name, kind)
         {ON_CONFLICT}"
    );
    // Existing rows of the chunk whose name or type the upsert is about to change.
    let changing =
        "SELECT a.id FROM UNNEST($1::text[], $2::text[], $3::text[]) AS r (id, name, kind)
         JOIN assets a ON a.id = r.id WHERE a.name <> r.name OR a.kind <> r.kind LIMIT $4";
    let (mut written, mut done) = (0, 0);
    let mut changed_ids: Vec<String> = Vec::new();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let ids: Vec<&str> = chunk.iter().map(|(id, _, _)| id.as_str()).collect();
        let names: Vec<&str> = chunk.iter().map(|(_, name, _)| name.as_str()).collect();
        let kinds: Vec<&str> = chunk.iter().map(|(_, _, kind)| kind.as_str()).collect();
        if changed_ids.len() < MAX_CHANGED_IDS {
            let found: Vec<String> = sqlx::query_scalar(changing)
                .bind(&ids)
                .bind(&names)
                .bind(&kinds)
                .bind((MAX_CHANGED_IDS - changed_ids.len()) as i64)
                .fetch_all(&mut *tx)
                .await?;
            changed_ids.extend(found);
        }
        let result = sqlx::query(&upsert)
            .bind(ids)
            .bind(names)
            .bind(kinds)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        written += result.rows_affected();
        done += chunk.len() as u64;
        progress(done);
    }
    Ok((written, changed_ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_large_import_into_a_small_catalogue_rebuilds_the_list_indexes() {
        assert!(rebuilds_list_indexes(0, 1_000_000));
        assert!(rebuilds_list_indexes(20_000, 100_000));
        assert!(!rebuilds_list_indexes(25_000, 100_000), "a quarter or more");
        assert!(!rebuilds_list_indexes(0, 49_999), "small imports add rows");
        assert!(!rebuilds_list_indexes(1_000_000, 1_000_000), "a re-import");
    }

    #[test]
    fn characters_are_each_character_of_ids_and_names_once_as_written() {
        use crate::domain::asset::{AssetId, AssetKind};
        let row = |id: &str, name: &str| {
            (
                AssetId::parse(id).unwrap(),
                name.to_string(),
                AssetKind::Image,
            )
        };
        let rows = [row("ab_1", "Bä é"), row("b", ""), row("Ä", "ab")];
        assert_eq!(
            characters(&rows),
            [" ", "1", "B", "_", "a", "b", "Ä", "ä", "é"]
        );
        assert!(characters(&[]).is_empty());
    }

    #[test]
    fn a_tenth_of_the_catalogue_written_or_more_refreshes_its_statistics() {
        assert!(refreshes_statistics(1_000_000, 1_000_000), "a first import");
        assert!(refreshes_statistics(3, 3));
        assert!(refreshes_statistics(100_000, 1_000_000));
        assert!(!refreshes_statistics(99_999, 1_000_000));
        assert!(
            !refreshes_statistics(0, 10),
            "a re-import that changed nothing"
        );
    }

    #[test]
    fn new_rows_are_the_growth_and_the_rest_written_changed() {
        assert_eq!(new_and_changed(10, 13, 5), (3, 2));
        assert_eq!(new_and_changed(10, 10, 0), (0, 0));
    }
}
