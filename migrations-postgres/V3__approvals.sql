-- Durable approvals: the table of the SQLite migration V9 (migrations/V9__approvals.sql), with
-- the same columns in the same order, checks, keys and indexes, in this schema's types (V1's
-- header): text TEXT COLLATE "C", timestamps TEXT in the stored form, JSON as TEXT.
--
-- status: 'pending' until decided; 'approved' or 'rejected' by a reviewer (APPROVE / REJECT);
-- 'expired' when its deadline passed with no decision (APPROVAL_TIMEOUT). decided_at is set
-- exactly when the status is no longer pending. deadline NULL: the request waits for ever.
-- A task has at most one pending request (the partial unique index); deleting the task deletes
-- its requests. Two reviewers deciding at once take turns on the request's row (SELECT … FOR
-- UPDATE), and the second finds it decided.
CREATE TABLE approval_requests (
    id TEXT COLLATE "C" PRIMARY KEY,
    task_id TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    payload TEXT COLLATE "C" NOT NULL,
    requested_by TEXT COLLATE "C" NOT NULL,
    requested_at TEXT COLLATE "C" NOT NULL,
    deadline TEXT COLLATE "C",
    status TEXT COLLATE "C" NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    reviewer TEXT COLLATE "C",
    comment TEXT COLLATE "C",
    decided_at TEXT COLLATE "C",
    CHECK ((status = 'pending') = (decided_at IS NULL)),
    FOREIGN KEY (task_id) REFERENCES workflow_states(task_id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX idx_approval_requests_one_pending
    ON approval_requests(task_id) WHERE status = 'pending';
CREATE INDEX idx_approval_requests_task ON approval_requests(task_id, requested_at);
CREATE INDEX idx_approval_requests_due
    ON approval_requests(deadline) WHERE status = 'pending';
