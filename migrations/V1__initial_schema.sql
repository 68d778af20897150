-- The seed's schema 1.0.0. Written with IF NOT EXISTS so that it also adopts a database made by
-- the TypeScript version (tables present, no refinery history, no lessons_fts): opening such a
-- file builds what is missing and keeps every row.

CREATE TABLE IF NOT EXISTS schema_versions (
    version TEXT PRIMARY KEY,
    applied_at TEXT NOT NULL DEFAULT (datetime('now')),
    description TEXT
);

CREATE TABLE IF NOT EXISTS workflow_states (
    task_id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    state TEXT NOT NULL,
    context TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    updated_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX IF NOT EXISTS idx_workflow_states_project ON workflow_states(project_id);

CREATE TABLE IF NOT EXISTS state_transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    event TEXT NOT NULL,
    metadata TEXT,
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    FOREIGN KEY (task_id) REFERENCES workflow_states(task_id)
);
CREATE INDEX IF NOT EXISTS idx_state_transitions_task ON state_transitions(task_id);

CREATE TABLE IF NOT EXISTS checkpoints (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL,
    context TEXT NOT NULL,
    artifacts TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    FOREIGN KEY (task_id) REFERENCES workflow_states(task_id)
);
CREATE INDEX IF NOT EXISTS idx_checkpoints_task ON checkpoints(task_id);

CREATE TABLE IF NOT EXISTS audit_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT NOT NULL DEFAULT (datetime('now')),
    project_id TEXT,
    task_id TEXT,
    agent TEXT,
    action TEXT NOT NULL,
    category TEXT NOT NULL,
    details TEXT,
    user_id TEXT,
    ip_address TEXT
);
CREATE INDEX IF NOT EXISTS idx_audit_logs_project ON audit_logs(project_id);
CREATE INDEX IF NOT EXISTS idx_audit_logs_timestamp ON audit_logs(timestamp);
CREATE INDEX IF NOT EXISTS idx_audit_logs_category ON audit_logs(category);

CREATE TABLE IF NOT EXISTS lessons (
    id TEXT PRIMARY KEY,
    project_id TEXT,
    category TEXT NOT NULL,
    title TEXT NOT NULL,
    summary TEXT NOT NULL,
    details TEXT,
    tags TEXT,
    source_agent TEXT,
    source_file TEXT,
    confidence REAL DEFAULT 1.0,
    application_count INTEGER DEFAULT 0,
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    updated_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX IF NOT EXISTS idx_lessons_category ON lessons(category);
CREATE INDEX IF NOT EXISTS idx_lessons_project ON lessons(project_id);

CREATE VIRTUAL TABLE IF NOT EXISTS lessons_fts USING fts5(
    title,
    summary,
    details,
    content='lessons',
    content_rowid='rowid'
);

CREATE TRIGGER IF NOT EXISTS lessons_ai AFTER INSERT ON lessons BEGIN
    INSERT INTO lessons_fts(rowid, title, summary, details)
    VALUES (new.rowid, new.title, new.summary, new.details);
END;

CREATE TRIGGER IF NOT EXISTS lessons_ad AFTER DELETE ON lessons BEGIN
    INSERT INTO lessons_fts(lessons_fts, rowid, title, summary, details)
    VALUES ('delete', old.rowid, old.title, old.summary, old.details);
END;

CREATE TRIGGER IF NOT EXISTS lessons_au AFTER UPDATE ON lessons BEGIN
    INSERT INTO lessons_fts(lessons_fts, rowid, title, summary, details)
    VALUES ('delete', old.rowid, old.title, old.summary, old.details);
    INSERT INTO lessons_fts(rowid, title, summary, details)
    VALUES (new.rowid, new.title, new.summary, new.details);
END;

-- A legacy file has lessons but no index: build it from the rows (a no-op on a fresh file).
INSERT INTO lessons_fts(lessons_fts) VALUES ('rebuild');

CREATE TABLE IF NOT EXISTS execution_traces (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    prompt TEXT NOT NULL,
    started_at TEXT NOT NULL DEFAULT (datetime('now')),
    completed_at TEXT,
    success INTEGER,
    duration_ms INTEGER,
    token_usage TEXT,
    metadata TEXT
);
CREATE INDEX IF NOT EXISTS idx_execution_traces_project ON execution_traces(project_id);
CREATE INDEX IF NOT EXISTS idx_execution_traces_started ON execution_traces(started_at);

CREATE TABLE IF NOT EXISTS agent_invocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    task_fragment TEXT,
    started_at TEXT NOT NULL DEFAULT (datetime('now')),
    completed_at TEXT,
    outcome TEXT,
    quality_score REAL,
    token_usage TEXT,
    output_summary TEXT,
    error TEXT,
    FOREIGN KEY (trace_id) REFERENCES execution_traces(id)
);
CREATE INDEX IF NOT EXISTS idx_agent_invocations_trace ON agent_invocations(trace_id);
CREATE INDEX IF NOT EXISTS idx_agent_invocations_agent ON agent_invocations(agent);

CREATE TABLE IF NOT EXISTS configurations (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT 'global',
    updated_at TEXT NOT NULL DEFAULT (datetime('now'))
);

INSERT OR IGNORE INTO schema_versions (version, description) VALUES ('1.0.0', 'Initial schema');
