-- Proof of purge: what the cache answered a visitor's request for each purged URL, after the
-- invalidation. One row per URL (a new check replaces it), and one per check run.
CREATE TABLE cache_check_runs (
    invalidation_id INTEGER PRIMARY KEY REFERENCES invalidations (id),
    started_by      INTEGER REFERENCES users (id),
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    urls            INTEGER NOT NULL
);
CREATE TABLE cache_checks (
    url_id          INTEGER PRIMARY KEY REFERENCES invalidation_urls (id),
    invalidation_id INTEGER NOT NULL REFERENCES invalidations (id),
    checked_at      INTEGER NOT NULL,
    freshness       TEXT    NOT NULL CHECK (freshness IN ('fresh', 'stale', 'unknown')),
    http_status     INTEGER,
    detail          TEXT    NOT NULL
);
CREATE INDEX cache_checks_by_invalidation ON cache_checks (invalidation_id, freshness, url_id);
