-- Decision 8: search "hooks" finds "hook". The index is rebuilt with the porter stemmer over
-- unicode61 (diacritics folded); it is derived data, rebuilt from the lessons rows. The update
-- trigger now fires only when indexed text changes, not on every application count.
DROP TRIGGER IF EXISTS lessons_ai;
DROP TRIGGER IF EXISTS lessons_ad;
DROP TRIGGER IF EXISTS lessons_au;
DROP TABLE IF EXISTS lessons_fts;

CREATE VIRTUAL TABLE lessons_fts USING fts5(
    title,
    summary,
    details,
    content='lessons',
    content_rowid='rowid',
    tokenize='porter unicode61 remove_diacritics 2'
);

CREATE TRIGGER lessons_ai AFTER INSERT ON lessons BEGIN
    INSERT INTO lessons_fts(rowid, title, summary, details)
    VALUES (new.rowid, new.title, new.summary, new.details);
END;

CREATE TRIGGER lessons_ad AFTER DELETE ON lessons BEGIN
    INSERT INTO lessons_fts(lessons_fts, rowid, title, summary, details)
    VALUES ('delete', old.rowid, old.title, old.summary, old.details);
END;

CREATE TRIGGER lessons_au AFTER UPDATE OF title, summary, details ON lessons BEGIN
    INSERT INTO lessons_fts(lessons_fts, rowid, title, summary, details)
    VALUES ('delete', old.rowid, old.title, old.summary, old.details);
    INSERT INTO lessons_fts(rowid, title, summary, details)
    VALUES (new.rowid, new.title, new.summary, new.details);
END;

INSERT INTO lessons_fts(lessons_fts) VALUES ('rebuild');

CREATE INDEX idx_lessons_applied ON lessons(application_count DESC);
