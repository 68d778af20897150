-- Decision 7: the rows a legacy database brings are sealed into the audit chain once, by the
-- migration that adds the chain (V3), in its own transaction, before this one runs. From here on
-- the database refuses every UPDATE of audit_logs, sealing included: a row written around the log
-- stays unsealed for good, and `verify` names it. (V3's trigger let anyone with the file set the
-- hashes of an unsealed row.)
DROP TRIGGER IF EXISTS audit_logs_no_update;
CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only: UPDATE refused');
END;
