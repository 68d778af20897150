-- The table of migrations/sqlite/V1__model_usage.sql in PostgreSQL's types: BIGINT, DOUBLE
-- PRECISION, BYTEA, text with the "C" collation as the core tables have it.
CREATE TABLE model_usage (
    request_id TEXT COLLATE "C" PRIMARY KEY,
    task_id TEXT COLLATE "C" NOT NULL REFERENCES workflow_states (task_id) ON DELETE CASCADE,
    model TEXT COLLATE "C" NOT NULL,
    input_tokens BIGINT NOT NULL CHECK (input_tokens >= 0),
    output_tokens BIGINT NOT NULL CHECK (output_tokens >= 0),
    cost_usd DOUBLE PRECISION NOT NULL CHECK (cost_usd >= 0),
    prompt_sha256 BYTEA NOT NULL,
    details TEXT COLLATE "C" NOT NULL,
    note TEXT COLLATE "C",
    recorded_at TEXT COLLATE "C" NOT NULL
);
