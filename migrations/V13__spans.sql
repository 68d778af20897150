-- Issue 16: spans. A trace holds nested spans (agent, tool, llm, workflow or other text); an LLM
-- span carries model, provider, tokens, an exact cost (INTEGER nano-units of `currency`) and a
-- latency; decisions hang on spans. project_id is the trace's, copied when the span is written,
-- so rollups by project read one table; agent is the agent span's name, inherited by every span
-- below it, so rollups by agent need no walk up the tree. The parent key is checked at commit,
-- so a copy may move spans in id order whatever order they nest in.
CREATE TABLE spans (
    id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    parent_id TEXT REFERENCES spans(id) DEFERRABLE INITIALLY DEFERRED,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'running',
    started_at TEXT NOT NULL,
    ended_at TEXT,
    attributes TEXT,
    project_id TEXT,
    session_id TEXT,
    agent TEXT,
    model TEXT,
    provider TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cost_nanos INTEGER,
    currency TEXT,
    latency_ms INTEGER,
    invocation_id INTEGER UNIQUE
);
CREATE INDEX idx_spans_trace ON spans(trace_id, started_at);
CREATE INDEX idx_spans_project_started ON spans(project_id, started_at);
CREATE INDEX idx_spans_session_started ON spans(session_id, started_at);
CREATE INDEX idx_spans_kind_started ON spans(kind, started_at);

CREATE TABLE span_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    span_id TEXT NOT NULL REFERENCES spans(id),
    agent TEXT NOT NULL,
    kind TEXT NOT NULL,
    options TEXT NOT NULL,
    choice TEXT NOT NULL,
    rationale TEXT,
    decided_at TEXT NOT NULL
);
CREATE INDEX idx_span_decisions_span ON span_decisions(span_id);

-- Every invocation recorded before becomes the agent span it describes, nothing lost: same
-- trace and times, status from its outcome, tokens in the token columns, and its outcome,
-- quality, summary, fragment, error and usage in the attributes. invocation_id ties the two,
-- so the tracker keeps them in step and never writes one twice.
INSERT INTO spans (id, trace_id, parent_id, kind, name, status, started_at, ended_at, attributes,
    project_id, agent, input_tokens, output_tokens, invocation_id)
SELECT 'invocation-' || i.id, i.trace_id, NULL, 'agent', i.agent,
    CASE
        WHEN i.outcome IS NULL AND i.completed_at IS NULL THEN 'running'
        WHEN i.outcome IS NULL OR i.outcome IN ('success', 'partial') THEN 'ok'
        ELSE 'error'
    END,
    i.started_at, i.completed_at,
    json_object('invocationId', i.id, 'outcome', i.outcome, 'qualityScore', i.quality_score,
        'taskFragment', i.task_fragment, 'outputSummary', i.output_summary, 'error', i.error,
        'tokenUsage', CASE WHEN json_valid(i.token_usage) THEN json(i.token_usage) ELSE i.token_usage END),
    t.project_id, i.agent,
    CASE WHEN json_valid(i.token_usage) THEN json_extract(i.token_usage, '$.inputTokens') END,
    CASE WHEN json_valid(i.token_usage) THEN json_extract(i.token_usage, '$.outputTokens') END,
    i.id
FROM agent_invocations i LEFT JOIN execution_traces t ON t.id = i.trace_id
ORDER BY i.id;
