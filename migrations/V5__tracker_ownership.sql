-- Decision 10: a run records its owner (process id, that process's start time, host) and a
-- heartbeat, so that runs whose owner died are found on the next start. Legacy traces get a
-- status from their completion; their owner is unknown.
ALTER TABLE execution_traces ADD COLUMN status TEXT NOT NULL DEFAULT 'running';
ALTER TABLE execution_traces ADD COLUMN owner_pid INTEGER;
ALTER TABLE execution_traces ADD COLUMN owner_started_at TEXT;
ALTER TABLE execution_traces ADD COLUMN owner_host TEXT;
ALTER TABLE execution_traces ADD COLUMN heartbeat_at TEXT;
ALTER TABLE execution_traces ADD COLUMN recovery_attempts INTEGER NOT NULL DEFAULT 0;
UPDATE execution_traces SET status = CASE WHEN completed_at IS NULL THEN 'running' ELSE 'completed' END;
CREATE INDEX idx_execution_traces_status ON execution_traces(status);
CREATE INDEX idx_execution_traces_project_started ON execution_traces(project_id, started_at);

-- Metrics of an agent over a window read one index range that covers every field they need.
ALTER TABLE agent_invocations ADD COLUMN total_tokens INTEGER
    GENERATED ALWAYS AS (CASE WHEN json_valid(token_usage) THEN json_extract(token_usage, '$.totalTokens') END) VIRTUAL;
CREATE INDEX idx_agent_invocations_metrics
    ON agent_invocations(agent, started_at, outcome, quality_score, total_tokens);
