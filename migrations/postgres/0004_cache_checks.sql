-- Proof of purge: what the cache answered a visitor's request for each purged URL, after the
-- invalidation. One row per URL (a new check replaces it), and one per check run.
CREATE TABLE cache_check_runs (
    invalidation_id BIGINT PRIMARY KEY REFERENCES invalidations (id),
    started_by      BIGINT REFERENCES users (id),
    started_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    urls            BIGINT NOT NULL
);
CREATE TABLE cache_checks (
    url_id          BIGINT PRIMARY KEY REFERENCES invalidation_urls (id),
    invalidation_id BIGINT  NOT NULL REFERENCES invalidations (id),
    checked_at      BIGINT  NOT NULL,
    freshness       TEXT    NOT NULL CHECK (freshness IN ('fresh', 'stale', 'unknown')),
    http_status     BIGINT,
    detail          TEXT    NOT NULL
);
CREATE INDEX cache_checks_by_invalidation ON cache_checks (invalidation_id, freshness, url_id);
