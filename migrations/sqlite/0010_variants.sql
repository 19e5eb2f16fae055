-- Every variant of an asset: an invalidation sends listed URLs, cache tags, path prefixes or
-- everything; its rows in invalidation_urls are of that kind.
ALTER TABLE invalidations ADD COLUMN scope TEXT NOT NULL DEFAULT 'urls'
    CHECK (scope IN ('urls', 'tags', 'prefixes', 'everything'));

-- The template's URLs of the assets a tag or prefix invalidation clears: shown beside what was
-- sent, and what *Check the cache* requests, with its latest verdict.
CREATE TABLE covered_urls (
    id              INTEGER PRIMARY KEY,
    invalidation_id INTEGER NOT NULL REFERENCES invalidations (id),
    -- the position of the tag or prefix (in invalidation_urls) that clears this URL
    target_position INTEGER NOT NULL,
    url             TEXT    NOT NULL,
    checked_at      INTEGER,
    freshness       TEXT CHECK (freshness IN ('fresh', 'stale', 'unknown')),
    http_status     INTEGER,
    detail          TEXT
);
CREATE INDEX covered_urls_by_invalidation ON covered_urls (invalidation_id, target_position);

-- What Check the cache found, for listed URLs (cache_checks) and covered URLs alike.
CREATE VIEW cache_check_results AS
    SELECT c.invalidation_id, c.freshness, c.detail, u.url, u.position, u.id AS row_id
    FROM cache_checks c JOIN invalidation_urls u ON u.id = c.url_id
    UNION ALL
    SELECT k.invalidation_id, k.freshness, k.detail, k.url, k.target_position, k.id
    FROM covered_urls k WHERE k.freshness IS NOT NULL;
