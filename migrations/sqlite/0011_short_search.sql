-- Searches of one or two characters from the trigram index.
--
-- The index is rebuilt over each ID and name followed by two unit separators (char 31), which no
-- ID or name is matched on: then every character of an ID or a name starts a trigram, and the
-- rows holding a one- or two-character search are the rows of the index's terms that start with
-- it (found in the index's vocabulary, `assets_search_terms`). Before, such a search read the
-- whole table when it had few matches. Matches are still checked against the real ID and name.
DROP TRIGGER assets_search_insert;
DROP TRIGGER assets_search_delete;
DROP TRIGGER assets_search_update;
DROP TABLE assets_search;

CREATE VIEW assets_search_text (seq, id, name) AS
    SELECT seq, id || char(31, 31), name || char(31, 31) FROM assets;

CREATE VIRTUAL TABLE assets_search USING fts5 (
    id, name,
    content = 'assets_search_text', content_rowid = 'seq',
    tokenize = 'trigram case_sensitive 0', detail = none, columnsize = 0
);
INSERT INTO assets_search (assets_search) VALUES ('rebuild');

CREATE VIRTUAL TABLE assets_search_terms USING fts5vocab (assets_search, 'row');

CREATE TRIGGER assets_search_insert AFTER INSERT ON assets BEGIN
    INSERT INTO assets_search (rowid, id, name)
        VALUES (new.seq, new.id || char(31, 31), new.name || char(31, 31));
END;
CREATE TRIGGER assets_search_delete AFTER DELETE ON assets BEGIN
    INSERT INTO assets_search (assets_search, rowid, id, name)
        VALUES ('delete', old.seq, old.id || char(31, 31), old.name || char(31, 31));
END;
CREATE TRIGGER assets_search_update AFTER UPDATE OF id, name ON assets
    WHEN old.id IS NOT new.id OR old.name IS NOT new.name
BEGIN
    INSERT INTO assets_search (assets_search, rowid, id, name)
        VALUES ('delete', old.seq, old.id || char(31, 31), old.name || char(31, 31));
    INSERT INTO assets_search (rowid, id, name)
        VALUES (new.seq, new.id || char(31, 31), new.name || char(31, 31));
END;
