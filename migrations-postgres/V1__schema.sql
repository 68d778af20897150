-- The PostgreSQL schema (decision 13): the end state of the SQLite migrations migrations/V1..V7,
-- built in one step on a fresh database (there is no older PostgreSQL database to upgrade). It runs
-- in one transaction under the migrating lock: no CONCURRENTLY, no extension, no IF NOT EXISTS
-- (a database that already holds these tables is not fresh, and this fails rather than adopt it).
--
-- Same tables, columns (in the same order), NOT NULLs, defaults, keys, foreign keys and indexes as
-- SQLite after V7, so one SQL text serves both backends wherever the dialects agree. Types:
--   * whole numbers (ids, counts, seq, 0/1 flags, tokens, durations, pids) BIGINT, as SQLite's
--     INTEGER is 64-bit; reals DOUBLE PRECISION;
--   * text TEXT COLLATE "C": comparison and ORDER BY in byte order, as SQLite's BINARY collation
--     does, whatever locale the server was created with;
--   * every timestamp TEXT in the project's stored form 'YYYY-MM-DD HH:MM:SS.SSS' UTC (it sorts as
--     time sorts); defaults write that form from the server's clock. (SQLite's V1 defaults write
--     datetime('now'), without milliseconds; the stores always give the time themselves.)
--   * JSON TEXT, never JSONB: JSONB reorders keys and drops duplicates, and the audit row hash
--     covers the text as written.
-- No CHECK on the data tables, as SQLite has none. Unlike SQLite, a column holds only its type,
-- and TEXT holds no NUL character (U+0000): such a value is refused by the server.
--
-- Ids: state_transitions and agent_invocations (INTEGER PRIMARY KEY AUTOINCREMENT in SQLite) are
-- identity columns. A copy that inserts explicit ids must move the sequence past them afterwards
-- (setval(pg_get_serial_sequence('state_transitions', 'id'), max(id))), or the next insert collides.
-- Generated columns (agent_invocations.total_tokens, as in SQLite, and lessons.search_vector) take
-- no value: a copy names its columns and leaves them out.
--
-- The audit log's ids are not an identity: a sequence hands out ids when rows are inserted, and
-- transactions commit in another order, so id order would stop being chain order. audit_logs.id is
-- a plain BIGINT PRIMARY KEY that the writer assigns while it holds the one row of audit_head:
--   audit_head (id, row_hash) = the id and row_hash of the last row the log appended (a sealed
--   row: the one SQLite's head query "row_hash IS NOT NULL ORDER BY id DESC LIMIT 1" finds), or
--   (0, NULL) for an empty log, which means the genesis hash (64 zeros) comes next. An append:
--     SELECT id, row_hash FROM audit_head FOR UPDATE;   -- READ COMMITTED: the latest head
--     INSERT INTO audit_logs ... id = head.id + 1, prev_hash = COALESCE(head.row_hash, genesis);
--     UPDATE audit_head SET id = <last id>, row_hash = <last hash>;
--   To step over rows written around the log, as SQLite's NEXT_ID does, the next id can be
--   GREATEST(head.id, (SELECT MAX(id) FROM audit_logs)) + 1 (one probe of the primary key).
--   The head only moves forward and always names a row of audit_logs that carries its hash
--   (audit_head_check); it cannot be deleted or truncated, and a second row is refused by its
--   key. It holds no row count: ChainHead.rows is COUNT(*) of the log, rows written around the
--   log included, which a counter kept by the writer would not be.
--
-- Append-only: row triggers refuse UPDATE and DELETE of audit_logs, and a statement trigger
-- refuses TRUNCATE (row triggers do not fire on it). An INSERT ... ON CONFLICT DO UPDATE meets
-- the UPDATE trigger; an INSERT with an id already taken fails on the primary key (SQLite's
-- no_replace trigger is not needed: there is no INSERT OR REPLACE). The errors use SQLSTATE 23001
-- (restrict_violation), an integrity constraint violation like SQLite's RAISE(ABORT). The triggers
-- stop every role but one that may drop them: the tables' owner, or a superuser (who can also set
-- session_replication_role = replica). A deployment that wants the log safe from its own
-- application lets that application connect as a role that does not own the tables.
--
-- Left out, as meaningless on PostgreSQL: sqlite_sequence; the FTS5 table lessons_fts, its shadow
-- tables and the three triggers that keep it in sync (the generated column lessons.search_vector
-- is the index, kept in step with every write; it goes stale only when the 'english' text search
-- configuration changes under it, which `lessons check` finds and `lessons rebuild` mends);
-- audit_logs_no_replace (see above); the TEMP tables of the lessons index check. refinery keeps
-- its own history table.

CREATE TABLE schema_versions (
    version TEXT COLLATE "C" PRIMARY KEY,
    applied_at TEXT COLLATE "C" NOT NULL
        DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'),
    description TEXT COLLATE "C"
);

-- ---- State store --------------------------------------------------------------------------------

CREATE TABLE workflow_states (
    task_id TEXT COLLATE "C" PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    context TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
        DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'),
    updated_at TEXT COLLATE "C" NOT NULL
        DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS')
);
CREATE INDEX idx_workflow_states_project ON workflow_states(project_id);

-- seq: the per-task sequence number (decision 5), nullable as in SQLite, unique per task.
CREATE TABLE state_transitions (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    task_id TEXT COLLATE "C" NOT NULL,
    from_state TEXT COLLATE "C" NOT NULL,
    to_state TEXT COLLATE "C" NOT NULL,
    event TEXT COLLATE "C" NOT NULL,
    metadata TEXT COLLATE "C",
    created_at TEXT COLLATE "C" NOT NULL
        DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'),
    seq BIGINT,
    FOREIGN KEY (task_id) REFERENCES workflow_states(task_id)
);
CREATE UNIQUE INDEX idx_state_transitions_task_seq ON state_transitions(task_id, seq);

CREATE TABLE checkpoints (
    id TEXT COLLATE "C" PRIMARY KEY,
    task_id TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    context TEXT COLLATE "C" NOT NULL,
    artifacts TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
        DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'),
    seq BIGINT,
    FOREIGN KEY (task_id) REFERENCES workflow_states(task_id)
);
CREATE UNIQUE INDEX idx_checkpoints_task_seq ON checkpoints(task_id, seq);

-- Values per (scope, key): a project's value overrides the global one.
CREATE TABLE configurations (
    key TEXT COLLATE "C" NOT NULL,
    value TEXT COLLATE "C" NOT NULL,
    scope TEXT COLLATE "C" NOT NULL DEFAULT 'global',
    updated_at TEXT COLLATE "C" NOT NULL
        DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'),
    PRIMARY KEY (scope, key)
);

-- ---- Audit log ----------------------------------------------------------------------------------

CREATE TABLE audit_logs (
    id BIGINT PRIMARY KEY,
    timestamp TEXT COLLATE "C" NOT NULL
        DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'),
    project_id TEXT COLLATE "C",
    task_id TEXT COLLATE "C",
    agent TEXT COLLATE "C",
    action TEXT COLLATE "C" NOT NULL,
    category TEXT COLLATE "C" NOT NULL,
    details TEXT COLLATE "C",
    user_id TEXT COLLATE "C",
    ip_address TEXT COLLATE "C",
    prev_hash TEXT COLLATE "C",
    row_hash TEXT COLLATE "C"
);
CREATE INDEX idx_audit_logs_project ON audit_logs(project_id);
CREATE INDEX idx_audit_logs_timestamp ON audit_logs(timestamp);
CREATE INDEX idx_audit_logs_unsealed ON audit_logs(id) WHERE row_hash IS NULL;
-- No index on task_id or category: SQLite's V6 dropped them, as each cost every append a write.

CREATE FUNCTION audit_logs_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_refuse_change();
CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_refuse_change();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_refuse_change();

-- The chain's head (see the top of this file): one row, locked by every append.
CREATE TABLE audit_head (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    id BIGINT NOT NULL DEFAULT 0,
    row_hash TEXT COLLATE "C",
    CHECK ((id = 0 AND row_hash IS NULL) OR (id > 0 AND row_hash IS NOT NULL))
);
INSERT INTO audit_head (singleton, id, row_hash) VALUES (TRUE, 0, NULL);

CREATE FUNCTION audit_head_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    named BOOLEAN;
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'audit_head is the audit chain''s head: % refused', TG_OP
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.id < OLD.id THEN
        RAISE EXCEPTION 'audit_head only moves forward: % to % refused', OLD.id, NEW.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.id > 0 THEN
        -- The log beside this head, whatever the caller's search_path.
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.audit_logs WHERE id = $1 AND row_hash = $2)',
                       TG_TABLE_SCHEMA)
            INTO named USING NEW.id, NEW.row_hash;
        IF NOT named THEN
            RAISE EXCEPTION 'audit_head must name a row of audit_logs with its hash: row % refused',
                NEW.id USING ERRCODE = 'restrict_violation';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_head_update BEFORE UPDATE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION audit_head_check();
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION audit_head_check();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_head_check();

-- ---- Lessons ------------------------------------------------------------------------------------

-- search_vector replaces SQLite's FTS5 table lessons_fts, over the same columns: title, summary
-- and details (tags are not indexed there, so not here either). Weights follow the store's
-- bm25(lessons_fts, 4.0, 2.0, 1.0): title A, summary B, details C; ranking with
-- ts_rank_cd('{0.1, 0.25, 0.5, 1.0}', search_vector, query) (weights of D, C, B, A) keeps
-- title : summary : details at 4 : 2 : 1. Typed text reaches it only through
-- plainto_tsquery / websearch_to_tsquery('english', ...), never to_tsquery.
-- Where results differ from FTS5 ('porter unicode61 remove_diacritics 2'):
--   * stopwords: 'english' drops words such as "the", "is", "not"; FTS5 indexes every word, so a
--     query of stopwords alone matches nothing here, and a stopword inside a quoted phrase
--     stands for any one word ("react the hooks" matches "React with hooks");
--   * stemmer: Snowball English rather than the original Porter; most stems agree, some do not;
--   * tokens: PostgreSQL's parser keeps hyphenated words whole as well as their parts, and reads
--     URLs, e-mail addresses, file paths and version numbers as single tokens; FTS5 splits every
--     run of letters and digits;
--   * diacritics: not folded ("café" does not match "cafe"; folding needs the unaccent extension),
--     and letters outside ASCII are lower-cased only if the database's LC_CTYPE is a UTF-8 locale;
--   * score scale: bm25() is negative, lower is better; ts_rank_cd() is positive, higher is better
--     and not comparable in size (negate it to order ascending as the SQLite store does);
--   * limits: words past position 16383 of a lesson's text all sit at that position (phrases
--     and proximity there are approximate), and a lesson whose distinct words come to more than
--     1 MB is refused on insert ("string is too long for tsvector"), where FTS5 takes it.
CREATE TABLE lessons (
    id TEXT COLLATE "C" PRIMARY KEY,
    project_id TEXT COLLATE "C",
    category TEXT COLLATE "C" NOT NULL,
    title TEXT COLLATE "C" NOT NULL,
    summary TEXT COLLATE "C" NOT NULL,
    details TEXT COLLATE "C",
    tags TEXT COLLATE "C",
    source_agent TEXT COLLATE "C",
    source_file TEXT COLLATE "C",
    confidence DOUBLE PRECISION DEFAULT 1.0,
    application_count BIGINT DEFAULT 0,
    created_at TEXT COLLATE "C" NOT NULL
        DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'),
    updated_at TEXT COLLATE "C" NOT NULL
        DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'),
    search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english'::regconfig, title), 'A')
        || setweight(to_tsvector('english'::regconfig, summary), 'B')
        || setweight(to_tsvector('english'::regconfig, coalesce(details, '')), 'C')
    ) STORED
);
CREATE INDEX idx_lessons_category ON lessons(category);
CREATE INDEX idx_lessons_project ON lessons(project_id);
CREATE INDEX idx_lessons_applied ON lessons(application_count DESC);
CREATE INDEX idx_lessons_search ON lessons USING GIN (search_vector);

-- ---- Tracker ------------------------------------------------------------------------------------

-- status, owner_* and heartbeat_at: a run's owner (process id, that process's start time, host)
-- and its last heartbeat (decision 10), judged against the database's clock on recovery.
CREATE TABLE execution_traces (
    id TEXT COLLATE "C" PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL,
    task_id TEXT COLLATE "C" NOT NULL,
    prompt TEXT COLLATE "C" NOT NULL,
    started_at TEXT COLLATE "C" NOT NULL
        DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'),
    completed_at TEXT COLLATE "C",
    success BIGINT,
    duration_ms BIGINT,
    token_usage TEXT COLLATE "C",
    metadata TEXT COLLATE "C",
    status TEXT COLLATE "C" NOT NULL DEFAULT 'running',
    owner_pid BIGINT,
    owner_started_at TEXT COLLATE "C",
    owner_host TEXT COLLATE "C",
    heartbeat_at TEXT COLLATE "C",
    recovery_attempts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX idx_execution_traces_project ON execution_traces(project_id);
CREATE INDEX idx_execution_traces_started ON execution_traces(started_at);
CREATE INDEX idx_execution_traces_status ON execution_traces(status);
CREATE INDEX idx_execution_traces_project_started ON execution_traces(project_id, started_at);

-- totalTokens of a token_usage text, as SQLite's
-- CASE WHEN json_valid(token_usage) THEN json_extract(token_usage, '$.totalTokens') END
-- gives it to a column of INTEGER affinity: NULL for text that is not JSON or has no number
-- there (PostgreSQL 15 has no error-free JSON test, hence the exception block); a fraction is
-- rounded, where SQLite would keep it. Never fails, so no token_usage text can refuse a row.
CREATE FUNCTION agent_invocations_total_tokens(token_usage TEXT) RETURNS BIGINT
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN round((token_usage::jsonb ->> 'totalTokens')::numeric)::bigint;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$$;

CREATE TABLE agent_invocations (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    trace_id TEXT COLLATE "C" NOT NULL,
    agent TEXT COLLATE "C" NOT NULL,
    task_fragment TEXT COLLATE "C",
    started_at TEXT COLLATE "C" NOT NULL
        DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'),
    completed_at TEXT COLLATE "C",
    outcome TEXT COLLATE "C",
    quality_score DOUBLE PRECISION,
    token_usage TEXT COLLATE "C",
    output_summary TEXT COLLATE "C",
    error TEXT COLLATE "C",
    total_tokens BIGINT GENERATED ALWAYS AS (agent_invocations_total_tokens(token_usage)) STORED,
    FOREIGN KEY (trace_id) REFERENCES execution_traces(id)
);
CREATE INDEX idx_agent_invocations_trace ON agent_invocations(trace_id);
CREATE INDEX idx_agent_invocations_agent ON agent_invocations(agent);
-- Metrics of an agent over a window read one range of this index, which covers every column
-- they read (an index-only scan once the visibility map is set).
CREATE INDEX idx_agent_invocations_metrics
    ON agent_invocations(agent, started_at, outcome, quality_score, total_tokens);

INSERT INTO schema_versions (version, description) VALUES ('1.0.0', 'Initial schema');
