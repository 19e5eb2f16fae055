-- Times are Unix milliseconds (INTEGER) so the same schema maps onto PostgreSQL BIGINT.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'user')),
    disabled      INTEGER NOT NULL DEFAULT 0,
    -- bumped on disable / password reset: sessions carrying an older epoch are dropped
    session_epoch INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE assets (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('image', 'video', 'other')),
    modified_at INTEGER NOT NULL
);
CREATE INDEX assets_name ON assets (name);
CREATE INDEX assets_modified ON assets (modified_at);

CREATE TABLE invalidations (
    id                 INTEGER PRIMARY KEY,
    created_by         INTEGER NOT NULL REFERENCES users (id),
    created_at         INTEGER NOT NULL,
    idempotency_key    TEXT    NOT NULL,
    status             TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'partially_failed', 'failed')),
    provider           TEXT    NOT NULL,
    -- the provider's settings when it was queued (JSON, never credentials)
    provider_settings  TEXT    NOT NULL,
    total              INTEGER NOT NULL,
    duplicates_dropped INTEGER NOT NULL DEFAULT 0,
    estimated_seconds  INTEGER NOT NULL,
    started_at         INTEGER,
    finished_at        INTEGER,
    retry_of           INTEGER REFERENCES invalidations (id),
    UNIQUE (created_by, idempotency_key)
);
CREATE INDEX invalidations_status ON invalidations (status, id);
-- one retry per invalidation, whoever presses the button
CREATE UNIQUE INDEX invalidations_retry_of ON invalidations (retry_of);

-- One request to a provider: what it answered, so pages can show purge and support ids.
CREATE TABLE purge_batches (
    id                INTEGER PRIMARY KEY,
    invalidation_id   INTEGER NOT NULL REFERENCES invalidations (id),
    reference         TEXT    NOT NULL,
    provider_id       TEXT,
    support_id        TEXT,
    estimated_seconds INTEGER,
    url_count         INTEGER NOT NULL,
    -- pending: accepted, the provider finishes later (polled); done: nothing left to wait for
    status            TEXT    NOT NULL CHECK (status IN ('pending', 'done')),
    created_at        INTEGER NOT NULL,
    completed_at      INTEGER
);
CREATE INDEX purge_batches_invalidation ON purge_batches (invalidation_id, status);

CREATE TABLE invalidation_urls (
    id              INTEGER PRIMARY KEY,
    invalidation_id INTEGER NOT NULL REFERENCES invalidations (id),
    position        INTEGER NOT NULL,
    url             TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'retrying', 'submitted', 'succeeded', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    http_status     INTEGER,
    error           TEXT,
    finished_at     INTEGER,
    batch_id        INTEGER REFERENCES purge_batches (id),
    UNIQUE (invalidation_id, position)
);
CREATE INDEX invalidation_urls_status ON invalidation_urls (invalidation_id, status);
