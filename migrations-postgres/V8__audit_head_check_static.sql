-- The audit head's trigger checks that the head names a row of audit_logs with its hash. V1's
-- function found the table through a dynamic EXECUTE (so that the caller's search_path could not
-- point it at another audit_logs), which PostgreSQL plans again on every append: about half of a
-- single append's statement time. This version is the same check as a static query, planned
-- once per session, on the table of the schema this migration runs in, named when the function
-- is made (a caller's search_path still cannot point it elsewhere).
DO $migration$
BEGIN
    EXECUTE format($function$
CREATE OR REPLACE FUNCTION audit_head_check() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'audit_head is the audit chain''s head: %% refused', TG_OP
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.id < OLD.id THEN
        RAISE EXCEPTION 'audit_head only moves forward: %% to %% refused', OLD.id, NEW.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.id > 0 AND NOT EXISTS (
        SELECT 1 FROM %1$I.audit_logs WHERE id = NEW.id AND row_hash = NEW.row_hash
    ) THEN
        RAISE EXCEPTION 'audit_head must name a row of audit_logs with its hash: row %% refused',
            NEW.id USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$body$
$function$, current_schema());
END
$migration$;
