-- The audit event: the columns of the SQLite migration migrations/V14__audit_events.sql, in the
-- same order, in this schema's types (V1's header: text in the "C" collation, JSON as TEXT).
-- V1's row triggers refuse every UPDATE of audit_logs, these columns included.
ALTER TABLE audit_logs ADD COLUMN severity TEXT COLLATE "C";
ALTER TABLE audit_logs ADD COLUMN outcome TEXT COLLATE "C";
ALTER TABLE audit_logs ADD COLUMN actor_type TEXT COLLATE "C";
ALTER TABLE audit_logs ADD COLUMN actor_id TEXT COLLATE "C";
ALTER TABLE audit_logs ADD COLUMN target_type TEXT COLLATE "C";
ALTER TABLE audit_logs ADD COLUMN target_id TEXT COLLATE "C";
ALTER TABLE audit_logs ADD COLUMN session_id TEXT COLLATE "C";
ALTER TABLE audit_logs ADD COLUMN workflow_id TEXT COLLATE "C";
ALTER TABLE audit_logs ADD COLUMN correlation_id TEXT COLLATE "C";
ALTER TABLE audit_logs ADD COLUMN changes_before TEXT COLLATE "C";
ALTER TABLE audit_logs ADD COLUMN changes_after TEXT COLLATE "C";
ALTER TABLE audit_logs ADD COLUMN error TEXT COLLATE "C";
ALTER TABLE audit_logs ADD COLUMN hash_version SMALLINT;
