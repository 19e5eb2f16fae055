-- Substring search over asset IDs and names from a trigram index, and keyset paging in both orders.

-- The search index refers to assets by rowid, and only a rowid declared INTEGER PRIMARY KEY is
-- kept by VACUUM: the table is rebuilt with one (`seq`), the ID stays unique.
CREATE TABLE assets_new (
    seq         INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('image', 'video', 'other')),
    modified_at INTEGER NOT NULL
);
INSERT INTO assets_new (id, name, kind, modified_at)
    SELECT id, name, kind, modified_at FROM assets ORDER BY rowid;
DROP TABLE assets;
ALTER TABLE assets_new RENAME TO assets;

-- The two orders of the list and their keysets: lower(name), id; modified_at DESC, id DESC.
CREATE INDEX assets_name_lower ON assets (lower(name), id);
CREATE INDEX assets_modified ON assets (modified_at, id);

-- Every 3-character sequence of the ID and the name (case-folded), pointing at `seq`. It keeps no
-- copy of the text (external content) nor positions (detail=none): queries AND the rarest
-- trigrams of the search and check the candidates against the real ID and name.
CREATE VIRTUAL TABLE assets_search USING fts5 (
    id, name,
    content = 'assets', content_rowid = 'seq',
    tokenize = 'trigram case_sensitive 0', detail = none, columnsize = 0
);
INSERT INTO assets_search (assets_search) VALUES ('rebuild');

-- Kept in step by triggers. An import upserts (ON CONFLICT DO UPDATE, which fires the update
-- trigger; REPLACE would not fire the delete trigger) and only reindexes a renamed asset.
CREATE TRIGGER assets_search_insert AFTER INSERT ON assets BEGIN
    INSERT INTO assets_search (rowid, id, name) VALUES (new.seq, new.id, new.name);
END;
CREATE TRIGGER assets_search_delete AFTER DELETE ON assets BEGIN
    INSERT INTO assets_search (assets_search, rowid, id, name) VALUES ('delete', old.seq, old.id, old.name);
END;
CREATE TRIGGER assets_search_update AFTER UPDATE OF id, name ON assets
    WHEN old.id IS NOT new.id OR old.name IS NOT new.name
BEGIN
    INSERT INTO assets_search (assets_search, rowid, id, name) VALUES ('delete', old.seq, old.id, old.name);
    INSERT INTO assets_search (rowid, id, name) VALUES (new.seq, new.id, new.name);
END;
