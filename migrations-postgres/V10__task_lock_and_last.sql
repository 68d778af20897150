-- A state save takes its task's lock, then reads the task's last stored transition and
-- checkpoint: two round trips, as the read must see what a save that held the lock before it
-- committed (at READ COMMITTED a statement's snapshot is taken when it starts, before any wait
-- for the lock inside it). This function does both in one call: each query of a VOLATILE
-- function takes a snapshot of its own, so the read after the lock sees every save committed
-- before the lock was had. The columns are those of the two reads side by side (NULL where the
-- task has none), on the tables of the schema this migration runs in, named when the function
-- is made (a caller's search_path cannot point it elsewhere).
DO $migration$
BEGIN
    EXECUTE format($function$
CREATE FUNCTION aigentflow_lock_task(task TEXT)
RETURNS TABLE (
    t_seq BIGINT, t_from TEXT, t_to TEXT, t_event TEXT, t_metadata TEXT, t_created TEXT,
    t_lowest BIGINT, c_seq BIGINT, c_id TEXT, c_state TEXT, c_created TEXT, c_lowest BIGINT
)
LANGUAGE plpgsql VOLATILE AS $body$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(task, 0));
    RETURN QUERY
    SELECT t.seq, t.from_state::TEXT, t.to_state::TEXT, t.event::TEXT, t.metadata::TEXT,
        t.created_at::TEXT, t.lowest, c.seq, c.id::TEXT, c.state::TEXT, c.created_at::TEXT,
        c.lowest
    FROM (SELECT 1) AS one
    LEFT JOIN (
        SELECT s.seq, s.from_state, s.to_state, s.event, s.metadata, s.created_at,
            (SELECT MIN(seq) FROM %1$I.state_transitions WHERE task_id = task) AS lowest
        FROM %1$I.state_transitions s WHERE s.task_id = task ORDER BY s.seq DESC LIMIT 1) AS t
        ON TRUE
    LEFT JOIN (
        SELECT k.seq, k.id, k.state, k.created_at,
            (SELECT MIN(seq) FROM %1$I.checkpoints WHERE task_id = task) AS lowest
        FROM %1$I.checkpoints k WHERE k.task_id = task ORDER BY k.seq DESC LIMIT 1) AS c
        ON TRUE;
END
$body$
$function$, current_schema());
END
$migration$;
