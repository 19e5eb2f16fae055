-- How many of an invalidation's URLs are in each state, kept on the invalidation.
--
-- Counting them on every progress poll visited every URL row of a running invalidation (rows
-- just updated are not all-visible, so the (invalidation, status) index cannot answer alone):
-- 5–22 ms a poll for 10,000 URLs while they were being purged. And that index made every
-- outcome a non-HOT update (its status column is indexed), writing three index entries per URL.
--
-- The counts change with every statement that writes URL rows, in that statement's
-- transaction, by statement-level triggers over the rows it wrote: a group commit of 4,000
-- outcomes updates its invalidation's counts once. The index is dropped: no query needs it now
-- (an invalidation's URLs are read by the (invalidation_id, position) key, with their status
-- read from the row), so outcome updates can be HOT, given room on the page for the new version.
ALTER TABLE invalidations
    ADD COLUMN queued_urls    BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN retrying_urls  BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN submitted_urls BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN succeeded_urls BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN failed_urls    BIGINT NOT NULL DEFAULT 0;

UPDATE invalidations i SET
    queued_urls    = c.queued,
    retrying_urls  = c.retrying,
    submitted_urls = c.submitted,
    succeeded_urls = c.succeeded,
    failed_urls    = c.failed
FROM (
    SELECT invalidation_id,
           COUNT(*) FILTER (WHERE status = 'queued') AS queued,
           COUNT(*) FILTER (WHERE status = 'retrying') AS retrying,
           COUNT(*) FILTER (WHERE status = 'submitted') AS submitted,
           COUNT(*) FILTER (WHERE status = 'succeeded') AS succeeded,
           COUNT(*) FILTER (WHERE status = 'failed') AS failed
    FROM invalidation_urls GROUP BY invalidation_id
) c
WHERE c.invalidation_id = i.id;

-- One function for the three triggers: inserted rows add to their state's count, deleted rows
-- take from it, an update does both (a row whose state did not change adds nothing).
CREATE FUNCTION invalidation_url_counts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE invalidations i SET
            queued_urls    = i.queued_urls    + d.queued,
            retrying_urls  = i.retrying_urls  + d.retrying,
            submitted_urls = i.submitted_urls + d.submitted,
            succeeded_urls = i.succeeded_urls + d.succeeded,
            failed_urls    = i.failed_urls    + d.failed
        FROM (
            SELECT invalidation_id,
                   COUNT(*) FILTER (WHERE status = 'queued') AS queued,
                   COUNT(*) FILTER (WHERE status = 'retrying') AS retrying,
                   COUNT(*) FILTER (WHERE status = 'submitted') AS submitted,
                   COUNT(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                   COUNT(*) FILTER (WHERE status = 'failed') AS failed
            FROM new_rows GROUP BY invalidation_id
        ) d
        WHERE i.id = d.invalidation_id;
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE invalidations i SET
            queued_urls    = i.queued_urls    + d.queued,
            retrying_urls  = i.retrying_urls  + d.retrying,
            submitted_urls = i.submitted_urls + d.submitted,
            succeeded_urls = i.succeeded_urls + d.succeeded,
            failed_urls    = i.failed_urls    + d.failed
        FROM (
            SELECT invalidation_id,
                   COALESCE(SUM(n) FILTER (WHERE status = 'queued'), 0) AS queued,
                   COALESCE(SUM(n) FILTER (WHERE status = 'retrying'), 0) AS retrying,
                   COALESCE(SUM(n) FILTER (WHERE status = 'submitted'), 0) AS submitted,
                   COALESCE(SUM(n) FILTER (WHERE status = 'succeeded'), 0) AS succeeded,
                   COALESCE(SUM(n) FILTER (WHERE status = 'failed'), 0) AS failed
            FROM (
                SELECT invalidation_id, status, 1 AS n FROM new_rows
                UNION ALL
                SELECT invalidation_id, status, -1 AS n FROM old_rows
            ) x
            GROUP BY invalidation_id
        ) d
        WHERE i.id = d.invalidation_id
          AND (d.queued, d.retrying, d.submitted, d.succeeded, d.failed)
              IS DISTINCT FROM (0, 0, 0, 0, 0);
    ELSE
        UPDATE invalidations i SET
            queued_urls    = i.queued_urls    - d.queued,
            retrying_urls  = i.retrying_urls  - d.retrying,
            submitted_urls = i.submitted_urls - d.submitted,
            succeeded_urls = i.succeeded_urls - d.succeeded,
            failed_urls    = i.failed_urls    - d.failed
        FROM (
            SELECT invalidation_id,
                   COUNT(*) FILTER (WHERE status = 'queued') AS queued,
                   COUNT(*) FILTER (WHERE status = 'retrying') AS retrying,
                   COUNT(*) FILTER (WHERE status = 'submitted') AS submitted,
                   COUNT(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                   COUNT(*) FILTER (WHERE status = 'failed') AS failed
            FROM old_rows GROUP BY invalidation_id
        ) d
        WHERE i.id = d.invalidation_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER invalidation_url_counts_insert AFTER INSERT ON invalidation_urls
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION invalidation_url_counts();
CREATE TRIGGER invalidation_url_counts_update AFTER UPDATE ON invalidation_urls
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION invalidation_url_counts();
CREATE TRIGGER invalidation_url_counts_delete AFTER DELETE ON invalidation_urls
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION invalidation_url_counts();

DROP INDEX invalidation_urls_status;
ALTER TABLE invalidation_urls SET (fillfactor = 70);
