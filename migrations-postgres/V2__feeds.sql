-- Reading only what is new: the order pollers follow, and the hints that wake them. SQLite's
-- migrations/V8 adds the same trace_feed table and execution_traces.feed_seq column.
--
-- A poller reads by cursor: the rows after the last one it saw, in an order that only grows
-- and in which rows become visible, so that no row ever appears behind a cursor that has
-- passed it. At READ COMMITTED a sequence does not give that: its value is taken at INSERT and
-- becomes visible at COMMIT, so a reader at N can see N+2 committed before N+1 and skip N+1
-- for good.
--   * audit_logs.id has it already: ids are assigned under the locked audit_head row (V1), so
--     the append holding id N commits before the one taking N+1 can read the head.
--   * execution_traces.feed_seq: assigned from the one row of trace_feed, locked until commit,
--     by a constraint trigger deferred to the end of the transaction. Holding that lock from
--     the INSERT on would serialise every transaction that starts a trace for its whole length,
--     and deadlock one that starts a trace and then appends to the audit log against one that
--     does the two the other way round (audit_head and trace_feed taken in opposite orders).
--     Taken last, after everything else the transaction does, it waits for nothing while held:
--     the numbers commit in order, and no cycle of waits can pass through it. Until its
--     transaction ends the row's feed_seq is NULL, which no other transaction sees.
--   A trace inserted with a number of its own (a copy of a database, written in feed order)
--   keeps it only when it follows every number handed out, and moves the counter to it; a
--   number, once given, never changes.
--
-- NOTIFY: an insert into audit_logs or the numbering of a trace signals the channel
-- aigentflow_audit_logs or aigentflow_execution_traces; PostgreSQL delivers it at commit (and
-- not at all on rollback), once per transaction and channel. `Database::watch` LISTENs there. A
-- notification is only a hint to read again by cursor: a follower also reads on a timer, so
-- nothing is lost when one is missed.

-- ---- Trace feed ---------------------------------------------------------------------------------

ALTER TABLE execution_traces ADD COLUMN feed_seq BIGINT;

-- The traces already there, in the order they started (id breaks ties).
UPDATE execution_traces AS t SET feed_seq = o.n
    FROM (SELECT id, row_number() OVER (ORDER BY started_at, id) AS n FROM execution_traces) AS o
    WHERE t.id = o.id;
CREATE UNIQUE INDEX idx_execution_traces_feed ON execution_traces(feed_seq);

CREATE TABLE trace_feed (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    last_seq BIGINT NOT NULL CHECK (last_seq >= 0)
);
INSERT INTO trace_feed (singleton, last_seq)
    VALUES (TRUE, (SELECT COALESCE(MAX(feed_seq), 0) FROM execution_traces));

CREATE FUNCTION trace_feed_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'trace_feed is the trace feed''s counter: % refused', TG_OP
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.last_seq < OLD.last_seq THEN
        RAISE EXCEPTION 'trace_feed only moves forward: % to % refused', OLD.last_seq, NEW.last_seq
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER trace_feed_update BEFORE UPDATE ON trace_feed
    FOR EACH ROW EXECUTE FUNCTION trace_feed_check();
CREATE TRIGGER trace_feed_no_delete BEFORE DELETE ON trace_feed
    FOR EACH ROW EXECUTE FUNCTION trace_feed_check();
CREATE TRIGGER trace_feed_no_truncate BEFORE TRUNCATE ON trace_feed
    FOR EACH STATEMENT EXECUTE FUNCTION trace_feed_check();

-- Numbers a trace at the end of its transaction (see the top of this file).
CREATE FUNCTION execution_traces_feed_next() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    given BIGINT;
    seq BIGINT;
    found_rows BIGINT;
BEGIN
    -- The row as it stands now (the transaction may have changed it since its INSERT), in the
    -- schema of the table that fired, whatever the caller's search_path.
    EXECUTE format('SELECT feed_seq FROM %I.execution_traces WHERE id = $1', TG_TABLE_SCHEMA)
        INTO given USING NEW.id;
    GET DIAGNOSTICS found_rows = ROW_COUNT;
    IF found_rows = 0 THEN
        RETURN NULL; -- deleted in its own transaction
    END IF;
    IF given IS NULL THEN
        EXECUTE format('UPDATE %I.trace_feed SET last_seq = last_seq + 1 RETURNING last_seq',
                       TG_TABLE_SCHEMA)
            INTO seq;
        EXECUTE format('UPDATE %I.execution_traces SET feed_seq = $1 WHERE id = $2',
                       TG_TABLE_SCHEMA)
            USING seq, NEW.id;
    ELSE
        EXECUTE format('UPDATE %I.trace_feed SET last_seq = $1 WHERE last_seq < $1 RETURNING last_seq',
                       TG_TABLE_SCHEMA)
            INTO seq USING given;
        IF seq IS NULL THEN
            RAISE EXCEPTION 'execution_traces.feed_seq only grows: trace % was given %, which does not follow trace_feed.last_seq',
                NEW.id, given USING ERRCODE = 'restrict_violation';
        END IF;
    END IF;
    PERFORM pg_notify('aigentflow_execution_traces', '');
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER execution_traces_feed_next AFTER INSERT ON execution_traces
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION execution_traces_feed_next();

CREATE FUNCTION execution_traces_feed_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.feed_seq IS NOT NULL AND NEW.feed_seq IS DISTINCT FROM OLD.feed_seq THEN
        RAISE EXCEPTION 'execution_traces.feed_seq never changes: UPDATE of trace % refused', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER execution_traces_feed_kept BEFORE UPDATE OF feed_seq ON execution_traces
    FOR EACH ROW EXECUTE FUNCTION execution_traces_feed_kept();

-- ---- Audit log hints ----------------------------------------------------------------------------

CREATE FUNCTION audit_logs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('aigentflow_audit_logs', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_logs_notify AFTER INSERT ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_notify();
