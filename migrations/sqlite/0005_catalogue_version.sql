-- A counter every change of the catalogue raises in its own transaction: instances keep pages of
-- the asset list in memory and drop them when it moves.
CREATE TABLE catalogue_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO catalogue_version (id, version) VALUES (1, 0);
