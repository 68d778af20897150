-- Issue 15: an execution shared between databases (`aigentflow tasks export` / `tasks import`).
-- An imported audit entry is appended to this database's chain (a new id and new hashes) and
-- keeps where it came from: its id and row_hash in the database it was exported from, and that
-- database's location (without a password). The three are NULL on every other row. The row hash
-- covers them when any is set (crates/persistence/src/audit_chain.rs), so a row without
-- provenance hashes as before. V7's trigger refuses every UPDATE of audit_logs, these columns
-- included. (V11 is left to workflow definitions.)
ALTER TABLE audit_logs ADD COLUMN origin_id INTEGER;
ALTER TABLE audit_logs ADD COLUMN origin_hash TEXT;
ALTER TABLE audit_logs ADD COLUMN origin_source TEXT;
