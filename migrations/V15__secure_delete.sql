-- A row deleted from the search index leaves no trace of its words: FTS5's secure-delete
-- option removes a deleted lesson's entries from the index's segments at once, instead of
-- recording a deletion beside them until the segments are next merged. (The connection's
-- `PRAGMA secure_delete`, set by every writer, zeroes the freed space of the rows themselves.)
-- An operator who deletes a lesson that held a secret the redaction policy did not know has
-- the words gone from the file, not only from the results.
INSERT INTO lessons_fts(lessons_fts, rank) VALUES ('secure-delete', 1);
