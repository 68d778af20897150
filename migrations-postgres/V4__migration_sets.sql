-- Application migration sets: the table of the SQLite migration V10
-- (migrations/V10__migration_sets.sql), with the same columns in the same order, in this
-- schema's types (V1's header).
CREATE TABLE aigentflow_migration_sets (
    set_name TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL CHECK (version > 0),
    name TEXT COLLATE "C" NOT NULL,
    checksum TEXT COLLATE "C" NOT NULL,
    applied_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (set_name, version)
);
