-- Workflow definitions: the tables of the SQLite migration V11
-- (migrations/V11__workflow_definitions.sql), with the same columns in the same order, keys,
-- index and refusal of UPDATE, in this schema's types (V1's header).
CREATE TABLE workflow_definitions (
    name TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL CHECK (version > 0),
    content_hash TEXT COLLATE "C" NOT NULL,
    definition TEXT COLLATE "C" NOT NULL,
    loaded_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE FUNCTION workflow_definitions_refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'workflow definitions are immutable: load a new version';
END;
$$;

CREATE TRIGGER workflow_definitions_no_update BEFORE UPDATE ON workflow_definitions
    FOR EACH ROW EXECUTE FUNCTION workflow_definitions_refuse_update();

CREATE TABLE task_workflows (
    task_id TEXT COLLATE "C" PRIMARY KEY,
    workflow_name TEXT COLLATE "C" NOT NULL,
    workflow_version BIGINT NOT NULL,
    FOREIGN KEY (task_id) REFERENCES workflow_states(task_id) ON DELETE CASCADE,
    FOREIGN KEY (workflow_name, workflow_version) REFERENCES workflow_definitions(name, version)
);

CREATE INDEX task_workflows_by_definition ON task_workflows (workflow_name, workflow_version);
