-- Decision 2: one stored timestamp form, 'YYYY-MM-DD HH:MM:SS.SSS' UTC, which sorts against
-- SQLite's datetime('now'). Legacy values (SQLite defaults without milliseconds, JavaScript ISO
-- strings with 'T' and 'Z') are rewritten; a value SQLite cannot read is left as it was.
UPDATE schema_versions SET applied_at = COALESCE(strftime('%Y-%m-%d %H:%M:%f', applied_at), applied_at);
UPDATE workflow_states SET
    created_at = COALESCE(strftime('%Y-%m-%d %H:%M:%f', created_at), created_at),
    updated_at = COALESCE(strftime('%Y-%m-%d %H:%M:%f', updated_at), updated_at);
UPDATE state_transitions SET created_at = COALESCE(strftime('%Y-%m-%d %H:%M:%f', created_at), created_at);
UPDATE checkpoints SET created_at = COALESCE(strftime('%Y-%m-%d %H:%M:%f', created_at), created_at);
UPDATE audit_logs SET timestamp = COALESCE(strftime('%Y-%m-%d %H:%M:%f', timestamp), timestamp);
UPDATE lessons SET
    created_at = COALESCE(strftime('%Y-%m-%d %H:%M:%f', created_at), created_at),
    updated_at = COALESCE(strftime('%Y-%m-%d %H:%M:%f', updated_at), updated_at);
UPDATE execution_traces SET
    started_at = COALESCE(strftime('%Y-%m-%d %H:%M:%f', started_at), started_at),
    completed_at = COALESCE(strftime('%Y-%m-%d %H:%M:%f', completed_at), completed_at);
UPDATE agent_invocations SET
    started_at = COALESCE(strftime('%Y-%m-%d %H:%M:%f', started_at), started_at),
    completed_at = COALESCE(strftime('%Y-%m-%d %H:%M:%f', completed_at), completed_at);

-- Decision 5: a per-task sequence number on transitions and checkpoints, unique per task, so a
-- save appends only what is new (O(new), found through the index) and a repeated or concurrent
-- save can neither duplicate nor silently drop history. Legacy rows are numbered in id order.
ALTER TABLE state_transitions ADD COLUMN seq INTEGER;
WITH numbered AS (
    SELECT id, ROW_NUMBER() OVER (PARTITION BY task_id ORDER BY id) AS n FROM state_transitions
)
UPDATE state_transitions SET seq = numbered.n FROM numbered WHERE numbered.id = state_transitions.id;
CREATE UNIQUE INDEX idx_state_transitions_task_seq ON state_transitions(task_id, seq);
-- The (task_id, seq) index serves every lookup by task; the task-only index would only cost a
-- page write per saved transition.
DROP INDEX IF EXISTS idx_state_transitions_task;

ALTER TABLE checkpoints ADD COLUMN seq INTEGER;
WITH numbered AS (
    SELECT rowid AS rid, ROW_NUMBER() OVER (PARTITION BY task_id ORDER BY created_at, rowid) AS n
    FROM checkpoints
)
UPDATE checkpoints SET seq = numbered.n FROM numbered WHERE numbered.rid = checkpoints.rowid;
CREATE UNIQUE INDEX idx_checkpoints_task_seq ON checkpoints(task_id, seq);
DROP INDEX IF EXISTS idx_checkpoints_task;

-- Configuration values are per (scope, key): a project's value overrides the global one, which
-- the seed's table (key alone as primary key) could not hold. Rebuilt keeping every row.
CREATE TABLE configurations_by_scope (
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT 'global',
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    PRIMARY KEY (scope, key)
);
INSERT INTO configurations_by_scope (key, value, scope, updated_at)
    SELECT key, value, scope, COALESCE(strftime('%Y-%m-%d %H:%M:%f', updated_at), updated_at)
    FROM configurations;
DROP TABLE configurations;
ALTER TABLE configurations_by_scope RENAME TO configurations;
