-- The extension's one table: what each model call of a task cost. Timestamps in the project's
-- stored form, JSON as text, the prompt's digest as bytes.
CREATE TABLE model_usage (
    request_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES workflow_states (task_id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL CHECK (input_tokens >= 0),
    output_tokens INTEGER NOT NULL CHECK (output_tokens >= 0),
    cost_usd REAL NOT NULL CHECK (cost_usd >= 0),
    prompt_sha256 BLOB NOT NULL,
    details TEXT NOT NULL,
    note TEXT,
    recorded_at TEXT NOT NULL
);
