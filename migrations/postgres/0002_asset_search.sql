-- Substring search over asset IDs and names from trigram indexes, and keyset paging in both orders.

-- pg_trgm ships with PostgreSQL (the contrib modules: in Debian's postgresql package, in
-- postgresql-contrib elsewhere) and is a trusted extension, which the database's owner may
-- create. Without it the catalogue could only be searched by reading all of it: say so, and how.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
            RAISE EXCEPTION 'the PostgreSQL extension pg_trgm is not installed on the database server'
                USING HINT = 'Install the PostgreSQL contrib modules (the postgresql-contrib package on most '
                    'systems), then start cdn-invalidator again: asset search needs its trigram indexes.';
        END IF;
        CREATE EXTENSION pg_trgm;
    END IF;
END
$$;

-- Searches are lower(id) LIKE '%…%' OR lower(name) LIKE '%…%'.
CREATE INDEX assets_search_id ON assets USING gin (lower(id) gin_trgm_ops);
CREATE INDEX assets_search_name ON assets USING gin (lower(name) gin_trgm_ops);

-- The "modified" order is modified_at DESC, id DESC: this index serves it and its keyset.
DROP INDEX assets_modified;
CREATE INDEX assets_modified ON assets (modified_at, id);
