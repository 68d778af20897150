-- Workflow definitions (crate aigentflow-workflows): the definitions loaded from the
-- repository's workflow files, each (name, version) once with the digest of its canonical JSON,
-- and the definition each task started under. The files are the source: deleting the database
-- and loading them again gives the same rows. A stored definition never changes (a changed file
-- needs a new version), so UPDATE is refused; a definition a task ran under cannot be deleted
-- (the foreign key). Deleting a task deletes its binding.
CREATE TABLE workflow_definitions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version > 0),
    content_hash TEXT NOT NULL,
    definition TEXT NOT NULL,
    loaded_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TRIGGER workflow_definitions_no_update BEFORE UPDATE ON workflow_definitions
BEGIN
    SELECT RAISE(ABORT, 'workflow definitions are immutable: load a new version');
END;

CREATE TABLE task_workflows (
    task_id TEXT PRIMARY KEY,
    workflow_name TEXT NOT NULL,
    workflow_version INTEGER NOT NULL,
    FOREIGN KEY (task_id) REFERENCES workflow_states(task_id) ON DELETE CASCADE,
    FOREIGN KEY (workflow_name, workflow_version) REFERENCES workflow_definitions(name, version)
);

CREATE INDEX task_workflows_by_definition ON task_workflows (workflow_name, workflow_version);
