-- Decision 7: the audit log is append-only and hash-chained. Each row carries the hash of the
-- previous row and its own hash over every field. Rows without a hash (brought by a legacy
-- database) are sealed into the chain by the audit crate, once: the only update allowed is
-- setting the hashes of an unsealed row, every other field unchanged.
ALTER TABLE audit_logs ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_logs ADD COLUMN row_hash TEXT;
CREATE INDEX idx_audit_logs_unsealed ON audit_logs(id) WHERE row_hash IS NULL;
CREATE INDEX idx_audit_logs_task ON audit_logs(task_id);

CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only: DELETE refused');
END;

CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs
WHEN old.row_hash IS NOT NULL
    OR new.row_hash IS NULL
    OR new.id IS NOT old.id
    OR new.timestamp IS NOT old.timestamp
    OR new.project_id IS NOT old.project_id
    OR new.task_id IS NOT old.task_id
    OR new.agent IS NOT old.agent
    OR new.action IS NOT old.action
    OR new.category IS NOT old.category
    OR new.details IS NOT old.details
    OR new.user_id IS NOT old.user_id
    OR new.ip_address IS NOT old.ip_address
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only: UPDATE refused');
END;

-- INSERT OR REPLACE deletes the old row without firing DELETE triggers: refuse an insert whose id
-- is already taken, before conflict resolution can run.
CREATE TRIGGER audit_logs_no_replace BEFORE INSERT ON audit_logs
WHEN EXISTS (SELECT 1 FROM audit_logs WHERE id = new.id)
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only: REPLACE of an existing row refused');
END;
