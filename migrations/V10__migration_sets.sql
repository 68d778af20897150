-- Application migration sets: a program that builds on the stores keeps its own tables in this
-- database, migrated at open beside the core schema (persistence's `MigrationSet`). Each set's
-- applied migrations are recorded here, by set and version, with a checksum of the migration's
-- name and SQL so that an applied migration edited since is refused. The core schema's own
-- history stays in refinery_schema_history.
CREATE TABLE aigentflow_migration_sets (
    set_name TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version > 0),
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (set_name, version)
);
