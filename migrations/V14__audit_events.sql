-- Issue 16: the audit event of the steps built on CP0 (aigentflow's step 04d). Each column is
-- NULL where the entry does not say it, and on every row written before this migration.
--   severity        debug, info, warning, error or critical
--   outcome         success, failure, partial, denied, blocked or pending
--   actor_type/_id  who acted (user, agent, system, external, or another kind) and which one
--   target_type/_id what was acted on
--   session_id, workflow_id, correlation_id   the ids that tie entries together
--   changes_before, changes_after             JSON text, as details is
--   error           what went wrong, as text
--   hash_version    the canonical row encoding the row's hash covers: NULL for version 1 (the
--                   ten fields, and the provenance of V12 when present), 2 for every row
--                   written from now on (a tag, then every column above and the provenance,
--                   NULL or not). crates/persistence/src/audit_chain.rs has both encodings.
-- No index: like the task and category filters (V6), these filters read the rows of the
-- project or of the time window, which keeps each append as cheap as it was.
-- V7's trigger refuses every UPDATE of audit_logs, these columns included.
ALTER TABLE audit_logs ADD COLUMN severity TEXT;
ALTER TABLE audit_logs ADD COLUMN outcome TEXT;
ALTER TABLE audit_logs ADD COLUMN actor_type TEXT;
ALTER TABLE audit_logs ADD COLUMN actor_id TEXT;
ALTER TABLE audit_logs ADD COLUMN target_type TEXT;
ALTER TABLE audit_logs ADD COLUMN target_id TEXT;
ALTER TABLE audit_logs ADD COLUMN session_id TEXT;
ALTER TABLE audit_logs ADD COLUMN workflow_id TEXT;
ALTER TABLE audit_logs ADD COLUMN correlation_id TEXT;
ALTER TABLE audit_logs ADD COLUMN changes_before TEXT;
ALTER TABLE audit_logs ADD COLUMN changes_after TEXT;
ALTER TABLE audit_logs ADD COLUMN error TEXT;
ALTER TABLE audit_logs ADD COLUMN hash_version INTEGER;
