-- The provenance of imported audit entries: the columns of the SQLite migration
-- migrations/V12__audit_origin.sql, in the same order, in this schema's types (V1's header).
-- V1's row triggers refuse every UPDATE of audit_logs, these columns included. (V5 is left to
-- workflow definitions.)
ALTER TABLE audit_logs ADD COLUMN origin_id BIGINT;
ALTER TABLE audit_logs ADD COLUMN origin_hash TEXT COLLATE "C";
ALTER TABLE audit_logs ADD COLUMN origin_source TEXT COLLATE "C";
