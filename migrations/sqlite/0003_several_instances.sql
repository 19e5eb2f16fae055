-- Several workers may share one queue: an invalidation is sent by the worker holding its lease,
-- and a provider account with rate limits (pacing_key) is sent to by one worker at a time.
ALTER TABLE invalidations ADD COLUMN lease_owner TEXT;
ALTER TABLE invalidations ADD COLUMN lease_until INTEGER;
ALTER TABLE invalidations ADD COLUMN pacing_key TEXT NOT NULL DEFAULT '';

CREATE TABLE sender_leases (
    pacing_key  TEXT    PRIMARY KEY,
    owner       TEXT    NOT NULL,
    lease_until INTEGER NOT NULL
);

CREATE INDEX invalidation_urls_batch ON invalidation_urls (batch_id);

-- Name order is case-insensitive on both backends: lower(name), served by this index.
CREATE INDEX assets_name_lower ON assets (lower(name), id);

-- The session key is now derived from the master key (secret or key file), never stored.
DELETE FROM settings WHERE key = 'session_secret';
